//! `status`, `check` and `explain` against the Feishu emulator: a store
//! filled by a real `reconcile`, then the commands as a user runs them.

use std::path::{Path, PathBuf};

use bridge_core::feishu::Event;
use bridge_emulators::feishu::FeishuEmulator;
use bridge_store::{Batch, Failure, SinkItemKey, Store};

use crate::feishu::{bin, emulator, event, temp_dir, write_config};

/// The single event's start, and the daily series' first start.
const SINGLE_AT: i64 = 1_760_000_000;
const SERIES_AT: i64 = 1_760_086_800;

struct Fixture {
    emu: FeishuEmulator,
    cal: String,
    dir: PathBuf,
    config: PathBuf,
    single: String,
    master: String,
    exception: String,
}

/// A calendar with a single event and a daily series with one moved
/// occurrence, and a config mirroring it into `ics_dir` (relative to the
/// test directory).
async fn fixture(name: &str, ics_dir: &str) -> Fixture {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let single = emu.create_event(&cal, event("Planning", SINGLE_AT));
    let master = emu.create_event(
        &cal,
        Event {
            recurrence: Some("FREQ=DAILY;COUNT=5".into()),
            ..event("Daily standup", SERIES_AT)
        },
    );
    let moved_from = SERIES_AT + 86_400;
    let exception = emu.move_occurrence(
        &cal,
        &master,
        moved_from,
        moved_from + 7200,
        moved_from + 9000,
        Some("Standup (moved)"),
    );
    let dir = temp_dir(name);
    let config = write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        &format!(
            "\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
            dir.join(ics_dir).display()
        ),
    );
    Fixture {
        emu,
        cal,
        dir,
        config,
        single,
        master,
        exception,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary in a blocking thread (the emulator runs on this runtime).
async fn run(args: &[&str], config: &Path) -> Run {
    let mut cmd = bin();
    cmd.args(args).arg("--config").arg(config);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn status_check_and_explain_after_a_reconcile() {
    let fx = fixture("cmds-ok", "ics").await;
    // A dry run names each planned write by title, kind and first start.
    let r = run(&["reconcile", "--dry-run"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    for want in [
        format!(
            "create \"Planning\" (single, 2025-10-09 16:53 Asia/Shanghai) {}",
            fx.single
        ),
        format!(
            "create \"Daily standup\" (series, 2025-10-10 17:00 Asia/Shanghai) {}",
            fx.master
        ),
        "create \"Standup (moved)\" (occurrence, ".to_owned(),
    ] {
        assert!(r.stdout.contains(&want), "{want} in\n{r}");
    }
    let r = run(&["reconcile"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");

    // status, human
    let r = run(&["status"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    for want in [
        format!("calendar {}", fx.cal),
        "last sync:".to_owned(),
        "(lag ".to_owned(),
        "sync token held".to_owned(),
        "full listing:".to_owned(),
        "snapshot:      3 items".to_owned(),
        "pending:       none".to_owned(),
        format!(
            "sink ics:{}: 3 written, no failures",
            fx.dir.join("ics").display()
        ),
    ] {
        assert!(r.stdout.contains(&want), "{want:?} missing:\n{r}");
    }

    // status, JSON
    let r = run(&["status", "--json"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    let j = r.json();
    assert_eq!(j["store"]["exists"], true);
    assert_eq!(j["store"]["snapshots"], 3);
    assert_eq!(j["stuck"], 0);
    let c = &j["calendars"][0];
    assert_eq!(c["calendar"], fx.cal.as_str());
    assert_eq!(c["configured"], true);
    assert_eq!(c["snapshots"], 3);
    assert_eq!(c["cursor"]["has_sync_token"], true);
    let last = c["last_sync"].as_i64().expect("last_sync");
    assert!((now() - last).abs() < 120, "{c}");
    assert_eq!(c["last_full_sync"].as_i64(), Some(last));
    assert!(c["lag_seconds"].as_i64().unwrap() >= 0);
    assert!(c["pending"].is_null());
    assert_eq!(c["sinks"][0]["records"], 3);
    assert_eq!(c["sinks"][0]["failures"], 0);

    // check: everything fine
    let r = run(&["check"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(!r.stdout.contains("FAIL"), "{r}");
    for want in [
        "ok    config:".to_owned(),
        "ok    store:".to_owned(),
        "ok    sinks[0] ics:".to_owned(),
        "ok    feishu:".to_owned(),
        "ok    credentials:".to_owned(),
        "ok    user token: not needed".to_owned(),
        format!("ok    calendar {}: readable by the app (\"Team\"", fx.cal),
    ] {
        assert!(r.stdout.contains(&want), "{want:?} missing:\n{r}");
    }

    // explain a single event
    let r = run(&["explain", &fx.single], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    for want in [
        format!("event {} in calendar {}", fx.single, fx.cal),
        "\"summary\": \"Planning\"".to_owned(),
        "mapping: event (a single event: one VEVENT)".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{}", fx.single.trim_end_matches("_0")),
        "SUMMARY:Planning".to_owned(),
        "DTSTART;TZID=Asia/Shanghai:20251009T165320".to_owned(),
        "warnings: none".to_owned(),
        "content hash: v1:".to_owned(),
        "(in sync)".to_owned(),
        "failure:  none".to_owned(),
        "decision: up to date".to_owned(),
    ] {
        assert!(r.stdout.contains(&want), "{want:?} missing:\n{r}");
    }
    assert!(!r.stdout.contains("RECURRENCE-ID"), "{r}");

    // The same event by the plain UID a calendar app shows, and by its title.
    let uid = fx.single.trim_end_matches("_0");
    for by in [uid, "planning"] {
        let r = run(&["explain", by], &fx.config).await;
        assert_eq!(r.code, 0, "{by}: {r}");
        assert!(
            r.stdout
                .contains(&format!("event {} in calendar {}", fx.single, fx.cal)),
            "{by}: {r}"
        );
    }
    // Several title matches are listed, to be named by id.
    let r = run(&["explain", "standup"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout
            .contains("2 events have \"standup\" in their title; name one by its id:"),
        "{r}"
    );
    assert!(
        r.stdout.contains(&fx.master) && r.stdout.contains(&fx.exception),
        "{r}"
    );
    let r = run(&["explain", "no such meeting"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("no stored event has the id, UID or title"),
        "{r}"
    );

    // ... as JSON
    let r = run(&["explain", "--json", &fx.single], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    let j = r.json();
    assert_eq!(j["found"], true);
    assert_eq!(j["in_store"], true);
    let m = &j["matches"][0];
    assert_eq!(m["calendar"], fx.cal.as_str());
    assert_eq!(m["source"]["summary"], "Planning");
    assert_eq!(m["mapping"]["content_hash"], m["snapshot"]["content_hash"]);
    let s = &m["sinks"][0];
    assert_eq!(s["in_sync"], true);
    assert_eq!(s["decision"], "up to date");
    assert_eq!(s["record"]["applied_hash"], m["snapshot"]["content_hash"]);
    assert_eq!(s["record"]["sequence"], 0);
    assert!(s["failure"].is_null());

    // explain a moved occurrence: rendered with its master, so RECURRENCE-ID shows
    let r = run(&["explain", &fx.exception], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    let moved_from = SERIES_AT + 86_400;
    assert_eq!(
        fx.exception,
        format!("{}_{moved_from}", fx.master.trim_end_matches("_0"))
    );
    for want in [
        "mapping: exception (a modified occurrence of series".to_owned(),
        "RECURRENCE-ID;TZID=Asia/Shanghai:20251011T170000".to_owned(),
        "SUMMARY:Standup (moved)".to_owned(),
        "DTSTART;TZID=Asia/Shanghai:20251011T190000".to_owned(),
        "decision: up to date".to_owned(),
    ] {
        assert!(r.stdout.contains(&want), "{want:?} missing:\n{r}");
    }
    assert!(
        !r.stdout.contains("RRULE"),
        "only the exception's VEVENT:\n{r}"
    );

    // explain the master: its RRULE
    let r = run(&["explain", &fx.master], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("RRULE:FREQ=DAILY;COUNT=5"), "{r}");

    // an event created after the pass: fetched live, never mirrored
    let fresh = fx
        .emu
        .create_event(&fx.cal, event("Added later", SINGLE_AT + 600));
    let r = run(&["explain", &fresh], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("never mirrored"), "{r}");
    assert!(
        r.stdout.contains("source: the Feishu event, fetched now"),
        "{r}"
    );
    assert!(r.stdout.contains("SUMMARY:Added later"), "{r}");

    // unknown id: nowhere
    let r = run(&["explain", "no-such-event_0"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("never seen: not in the store"), "{r}");
    assert!(
        r.stdout.contains("193001"),
        "Feishu's answer is shown:\n{r}"
    );
    let r = run(
        &["explain", "--offline", "--json", "no-such-event_0"],
        &fx.config,
    )
    .await;
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(r.json()["found"], false);

    // Not an id, a known UID or a title: not found (exit 1), with the form
    // of an id.
    let r = run(&["explain", "not-an-event-id"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("has no `_<original_time>` suffix"), "{r}");

    // The store held by another process (as the daemon would): status says
    // so and fails, check warns only.
    let store = Store::open(fx.dir.join("state/bridge.redb")).await.unwrap();
    let r = run(&["status"], &fx.config).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("is in use by another feishu-bridge process"),
        "{r}"
    );
    let r = run(&["check"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("warn  store: the store"), "{r}");
    drop(store);
    fx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_bad_credentials_unreachable_feishu_and_config_problems() {
    let fx = fixture("cmds-check", "ics").await;
    let good = std::fs::read_to_string(&fx.config).unwrap();

    let secret = fx.emu.config().app_secret;
    std::fs::write(
        &fx.config,
        good.replace(&format!("\"{secret}\""), "\"wrong-secret\""),
    )
    .unwrap();
    let r = run(&["check"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("ok    feishu:"), "{r}");
    assert!(
        r.stdout
            .contains("FAIL  credentials: Feishu refused app cli_test_app: code 99991543"),
        "{r}"
    );
    assert!(
        !r.stdout.contains("wrong-secret"),
        "secrets are never printed:\n{r}"
    );

    std::fs::write(
        &fx.config,
        good.replace(&fx.emu.base_url(), "http://127.0.0.1:9"),
    )
    .unwrap();
    let r = run(&["check"], &fx.config).await;
    // The same exit code as `reconcile` when Feishu cannot be reached.
    assert_eq!(r.code, 3, "{r}");
    assert!(
        r.stdout
            .contains("FAIL  feishu: cannot reach http://127.0.0.1:9"),
        "{r}"
    );
    let r = run(&["reconcile"], &fx.config).await;
    assert_eq!(r.code, 3, "{r}");

    std::fs::write(
        &fx.config,
        format!("{good}\n[sync]\nmax_delete_percent = 250\nwindow_past_days = 3\n"),
    )
    .unwrap();
    let r = run(&["check"], &fx.config).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stdout.contains("FAIL  config:"), "{r}");
    assert!(r.stdout.contains("- sync.max_delete_percent: 250"), "{r}");
    assert!(
        r.stdout
            .contains("- sync.window_past_days and sync.window_future_days"),
        "{r}"
    );
    fx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_cannot_be_written_shows_in_status_explain_and_check() {
    // The ICS directory lies under a regular file: every write fails.
    let fx = fixture("cmds-fail", "blocker/ics").await;
    std::fs::write(fx.dir.join("blocker"), b"a file, not a directory").unwrap();
    let sink = format!("ics:{}", fx.dir.join("blocker/ics").display());

    let before = now();
    let r = run(&["reconcile"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");

    let r = run(&["status"], &fx.config).await;
    assert_eq!(r.code, 0, "one attempt is not stuck yet:\n{r}");
    assert!(
        r.stdout
            .contains(&format!("sink {sink}: 0 written, 3 failing, next retry")),
        "{r}"
    );
    assert!(r.stdout.contains("1 attempt, retry in "), "{r}");
    assert!(r.stdout.contains("cannot write"), "{r}");
    let j = run(&["status", "--json"], &fx.config).await.json();
    let s = &j["calendars"][0]["sinks"][0];
    assert_eq!(s["sink"], sink.as_str());
    assert_eq!(s["failures"], 3);
    assert_eq!(s["stuck"], 0);
    let retry = s["next_retry_at"].as_i64().unwrap();
    assert!(retry >= before + 60, "backoff of a minute: {s}");
    assert_eq!(s["errors"][0]["attempts"], 1);

    let r = run(&["explain", &fx.single], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    for want in [
        "record:   none (never written to this sink)",
        "failure:  1 attempt since",
        "decision: writing it failed 1 time; waiting to retry at",
        "cannot write",
        "SUMMARY:Planning",
    ] {
        assert!(r.stdout.contains(want), "{want:?} missing:\n{r}");
    }
    let j = run(&["explain", "--json", &fx.single], &fx.config)
        .await
        .json();
    let f = &j["matches"][0]["sinks"][0]["failure"];
    assert_eq!(f["attempts"], 1);
    assert!(f["next_retry_at"].as_i64().unwrap() >= before + 60, "{f}");
    assert!(
        f["last_error"].as_str().unwrap().contains("cannot write"),
        "{f}"
    );

    let r = run(&["check"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("FAIL  sinks[0] ics:"), "{r}");
    assert!(r.stdout.contains("is not writable"), "{r}");

    // After five attempts an item is stuck: status exits 1.
    {
        let store = Store::open(fx.dir.join("state/bridge.redb")).await.unwrap();
        let mut b = Batch::new();
        b.put_failure(
            SinkItemKey::new(sink.as_str(), fx.cal.as_str(), fx.single.as_str()),
            Failure {
                attempts: 5,
                next_retry_at: now() + 3600,
                last_error: "cannot write: still broken".into(),
                first_failed_at: before,
            },
        );
        store.apply_batch(b).await.unwrap();
    }
    let r = run(&["status"], &fx.config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("(1 STUCK after 5+ attempts)"), "{r}");
    assert_eq!(
        run(&["status", "--json"], &fx.config).await.json()["stuck"],
        1
    );
    fx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_with_the_user_identity_needs_a_user_token() {
    let emu = emulator().await;
    let user = emu.add_user("Han Meimei");
    let cal = emu.primary_calendar(&user);
    let dir = temp_dir("cmds-user");
    let config = write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        &format!(
            "identity = \"user\"\n\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
            dir.join("ics").display()
        ),
    );

    // No token yet: a warning for the token, and the calendar cannot be read.
    let r = run(&["check"], &config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains("warn  user token: none at")
            && r.stdout.contains("run `feishu-bridge auth feishu`"),
        "{r}"
    );
    assert!(
        r.stdout.contains(&format!(
            "FAIL  calendar {cal}: no Feishu user token is stored"
        )),
        "{r}"
    );

    // A token as `auth feishu` stores it: accepted, the calendar is readable.
    let (access, refresh) =
        emu.issue_user_token(&user, "calendar:calendar:readonly offline_access");
    let tokens = serde_json::json!({
        "access_token": access,
        "access_expires_at": now() + 7200,
        "refresh_token": refresh.unwrap_or_default(),
        "refresh_expires_at": now() + 86_400,
        "scope": "calendar:calendar:readonly offline_access",
    });
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/feishu-user.json"), tokens.to_string()).unwrap();
    let r = run(&["check"], &config).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains("ok    user token: accepted by Feishu (access token valid for "),
        "{r}"
    );
    assert!(
        r.stdout
            .contains(&format!("ok    calendar {cal}: readable by the user")),
        "{r}"
    );
    assert!(
        !r.stdout.contains(&access),
        "tokens are never printed:\n{r}"
    );
    emu.shutdown().await;
}

/// A config with one Google sink described by `google` (its keys after
/// `kind`); nothing is contacted, the configuration is refused first.
fn google_config(dir: &Path, google: &str) -> PathBuf {
    let text = format!(
        "[store]\npath = \"{}\"\n\n[feishu]\nbase_url = \"http://127.0.0.1:9\"\napp_id = \"cli_a\"\n\
         app_secret = \"s\"\ncalendars = [\"c1\"]\ndelivery = \"poll\"\n\n\
         [[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n\n[[sinks]]\nkind = \"google\"\n{google}\n",
        dir.join("state/bridge.redb").display(),
        dir.join("ics").display(),
    );
    let path = dir.join("feishu-bridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_google_sink_configs_name_their_keys() {
    let dir = temp_dir("google-config");
    let installed = "client_id = \"c.apps.googleusercontent.com\"\nclient_secret = \"gsecret\"\n";
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "both targets",
            format!("calendar_id = \"primary\"\ncreate_calendars = true\n{installed}"),
            &["sinks[1].calendar_id and sinks[1].create_calendars: set one of them, not both"],
        ),
        (
            "subject with an installed app",
            format!("calendar_id = \"primary\"\n{installed}subject = \"u@example.com\"\n"),
            &["sinks[1].subject: only with sinks[1].service_account_key_file"],
        ),
        (
            "no client secret",
            "calendar_id = \"primary\"\nclient_id = \"c.apps.googleusercontent.com\"\n".to_owned(),
            &["sinks[1].client_secret: missing"],
        ),
        (
            "unknown key",
            format!("calendar_id = \"primary\"\n{installed}refresh_token = \"r\"\n"),
            &["sinks[1]", "refresh_token"],
        ),
    ];
    for (what, google, expected) in cases {
        let config = google_config(&dir, &google);
        let r = run(&["reconcile"], &config).await;
        assert_eq!(r.code, 2, "{what}: {r}");
        for e in expected {
            assert!(r.stderr.contains(e), "{what}: {e:?} missing in\n{r}");
        }
        assert!(!r.stderr.contains("gsecret"), "{what}: secret printed\n{r}");
        // `check` lists the same problems on stdout.
        let r = run(&["check"], &config).await;
        assert_eq!(r.code, 2, "{what}: {r}");
        assert!(r.stdout.contains("FAIL  config:"), "{what}: {r}");
        for e in expected {
            assert!(r.stdout.contains(e), "{what}: {e:?} missing in\n{r}");
        }
    }
    // Every problem at once.
    let config = google_config(
        &dir,
        "calendar_id = \"primary\"\ncreate_calendars = true\nclient_id = \"c\"\n\
         subject = \"u@example.com\"\non_target_delete = \"keep\"\n",
    );
    let r = run(&["reconcile"], &config).await;
    assert_eq!(r.code, 2, "{r}");
    for e in [
        "sinks[1].calendar_id and sinks[1].create_calendars",
        "sinks[1].subject",
        "sinks[1].client_secret: missing",
        "sinks[1].on_target_delete: \"keep\"",
    ] {
        assert!(r.stderr.contains(e), "{e:?} missing in\n{r}");
    }
}

/// A Google sink that was never authorized is paused: the ICS sink is
/// written, the reason is printed, the exit code is 1 (not 3).
#[tokio::test(flavor = "multi_thread")]
async fn an_unauthorized_google_sink_is_paused_and_reconcile_exits_1() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(&cal, event("Planning", SINGLE_AT));
    let dir = temp_dir("google-paused");
    let config = write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        &format!(
            "\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n\n[[sinks]]\nkind = \"google\"\n\
             name = \"work\"\ncalendar_id = \"primary\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             token_url = \"http://127.0.0.1:9/token\"\nbase_url = \"http://127.0.0.1:9\"\n",
            dir.join("ics").display()
        ),
    );
    let r = run(&["reconcile"], &config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("google:work"), "{r}");
    assert!(
        r.stdout.contains("run `feishu-bridge auth google`"),
        "the reason is printed:\n{r}"
    );
    assert!(
        dir.join("ics")
            .read_dir()
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".ics")),
        "the ICS sink went on:\n{r}"
    );
    let j = run(&["reconcile", "--json"], &config).await;
    assert_eq!(j.code, 1, "{j}");
    let j = j.json();
    assert_eq!(j["paused_sinks"][0]["sink"], "google:work", "{j}");
    let r = run(&["check"], &config).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains(
            "FAIL  sinks[1] google:work: not authorized: run `feishu-bridge auth google --sink work`"
        ),
        "{r}"
    );
    emu.shutdown().await;
}

/// Runs `auth google`, plays the browser against the Google emulator
/// (which approves for its consent user), returns exit code and stdout.
async fn authorize_google(config: &Path) -> (i32, String) {
    let (mut child, url, reader) = crate::feishu::start_auth(
        &["auth", "google", "--timeout", "20"],
        config,
        std::process::Stdio::inherit(),
    )
    .await;
    let page = reqwest::get(&url).await.unwrap();
    assert!(page.status().is_success(), "{:?}", page.text().await);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

/// `auth google` stores the refresh token; `check` then gets an access token
/// and reaches the calendar; `reconcile` writes the event to Google.
#[tokio::test(flavor = "multi_thread")]
async fn auth_google_then_check_and_reconcile() {
    use bridge_emulators::google::{GoogleConfig, GoogleEmulator};
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(&cal, event("Planning", SINGLE_AT));
    let google = GoogleEmulator::start(GoogleConfig {
        consent_user: Some("owner@example.com".into()),
        rate_limit: None,
        ..GoogleConfig::default()
    })
    .await
    .unwrap();
    let target = google.add_user("owner@example.com");
    let gc = google.config();
    let dir = temp_dir("google-auth");
    let config = write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        &format!(
            "\n[[sinks]]\nkind = \"google\"\nname = \"work\"\ncalendar_id = \"{target}\"\n\
             client_id = \"{}\"\nclient_secret = \"{}\"\ntoken_url = \"{}\"\nauth_url = \"{}\"\n\
             base_url = \"{}\"\n",
            gc.client_id,
            gc.client_secret,
            google.token_url(),
            google.auth_url(),
            google.base_url(),
        ),
    );
    let (code, out) = authorize_google(&config).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("Open this URL in a browser and approve access:\n\n  http://"),
        "{out}"
    );
    assert!(
        out.contains("Waiting for the redirect to http://127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.ends_with("Google authorization stored for sink google:work\n"),
        "{out}"
    );

    let r = run(&["check"], &config).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains("ok    sinks[0] google:work: access token obtained from"),
        "{r}"
    );
    assert!(
        r.stdout.contains(&format!(
            "ok    sinks[0] google:work: calendar {target} reachable"
        )),
        "{r}"
    );

    let r = run(&["reconcile"], &config).await;
    assert_eq!(r.code, 0, "{r}");
    let written: Vec<_> = google
        .events(&target)
        .into_iter()
        .filter(|e| e.status != "cancelled")
        .collect();
    assert_eq!(written.len(), 1, "{r}\n{written:?}");
    assert_eq!(written[0].summary.as_deref(), Some("Planning"));
    google.shutdown().await;
    emu.shutdown().await;
}

/// While the daemon holds the store, `auth google` hands the token to its
/// admin endpoint; the paused sink resumes and catches up without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn auth_google_resumes_a_paused_sink_in_the_running_daemon() {
    use bridge_emulators::google::{GoogleConfig, GoogleEmulator};
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(&cal, event("Planning", SINGLE_AT));
    let google = GoogleEmulator::start(GoogleConfig {
        consent_user: Some("owner@example.com".into()),
        rate_limit: None,
        ..GoogleConfig::default()
    })
    .await
    .unwrap();
    let target = google.add_user("owner@example.com");
    let gc = google.config();
    let dir = temp_dir("google-daemon");
    let config = write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        &format!(
            "\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [sync]\ndebounce_ms = 20\npoll_seconds = 1\n\
             [[sinks]]\nkind = \"google\"\ncalendar_id = \"{target}\"\n\
             client_id = \"{}\"\nclient_secret = \"{}\"\ntoken_url = \"{}\"\nauth_url = \"{}\"\n\
             base_url = \"{}\"\n",
            gc.client_id,
            gc.client_secret,
            google.token_url(),
            google.auth_url(),
            google.base_url(),
        ),
    );
    /// Kills the daemon if the test fails before stopping it.
    struct Guard(Option<std::process::Child>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut guard = Guard(Some(
        bin()
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("a startup line").unwrap();
        std::thread::spawn(move || for _ in lines {});
        line
    })
    .await
    .unwrap();
    assert!(first.starts_with("feishu-bridge running"), "{first}");
    // Paused: nothing reaches Google.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(google.events(&target).is_empty());

    let (code, out) = authorize_google(&config).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Google authorization stored for sink google:google\n"),
        "{out}"
    );
    assert!(out.contains("handed to the running daemon"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while google.events(&target).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sink did not resume"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut daemon = guard.0.take().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    // The token was stored by the daemon: the next run starts authorized.
    let r = run(&["check"], &config).await;
    assert!(
        r.stdout
            .contains("ok    sinks[0] google:google: access token obtained"),
        "{r}"
    );
    google.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_remembers_deleted_events_with_when_and_why() {
    let fx = fixture("cmds-departed", "ics").await;
    let r = run(&["reconcile"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");
    fx.emu.delete_event(&fx.cal, &fx.single);
    fx.emu.delete_event(&fx.cal, &fx.master);
    let r = run(&["reconcile"], &fx.config).await;
    assert_eq!(r.code, 0, "{r}");

    let uid = fx.single.trim_end_matches("_0");
    for by in [fx.single.as_str(), uid] {
        let r = run(&["explain", "--offline", by], &fx.config).await;
        assert_eq!(r.code, 0, "{by}: {r}");
        for want in [
            format!("event {} in calendar {}: gone", fx.single, fx.cal),
            "title:    \"Planning\"".to_owned(),
            "deleted in Feishu (no longer in its calendar)".to_owned(),
        ] {
            assert!(r.stdout.contains(&want), "{want} in\n{r}");
        }
    }
    // The moved occurrence went with its series.
    let r = run(
        &["explain", "--offline", "--json", &fx.exception],
        &fx.config,
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    let j = r.json();
    assert_eq!(j["departed"]["title"], "Standup (moved)", "{j}");
    assert!(
        j["departed"]["why"]
            .as_str()
            .unwrap()
            .contains("series was deleted"),
        "{j}"
    );
    fx.emu.shutdown().await;
}
