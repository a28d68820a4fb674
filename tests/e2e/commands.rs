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

    // malformed id
    let r = run(&["explain", "not-an-event-id"], &fx.config).await;
    assert_eq!(r.code, 2, "{r}");
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
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout
            .contains("FAIL  feishu: cannot reach http://127.0.0.1:9"),
        "{r}"
    );

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
