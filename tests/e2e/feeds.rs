//! Served ICS feeds (`[[sinks]] kind = "feed"`): the real daemon against
//! the Feishu emulator, read by real subscribers (Python icalendar +
//! recurring-ical-events with conditional GETs, Mozilla's ical.js under
//! Node, vdirsyncer into khal) that must expand exactly the Feishu instance
//! set of every golden mapping case; a change pushed by webhook, 304s,
//! rotation, privacy, restarts without Feishu, and no token in any log line.
//!
//! The subscribers are installed by `scripts/test.sh` (pip into
//! `target/pyenv`, npm into `target/node`). A test skips a missing tool only
//! when `CI` is unset; in CI a missing tool fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bridge_core::feishu::{Event, Location};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};

use crate::daemon::Daemon;
use crate::feishu::{bin, event, temp_dir, write_config};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo(p: &str) -> PathBuf {
    Path::new(REPO).join(p)
}

/// Whether a client can run; panics in CI when it cannot.
fn available(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed (scripts/test.sh installs it); CI runs every feed client"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("skipping {what}: not installed (run scripts/test.sh); CI never skips it");
    }
    false
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\u{1b}') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = rest.find('m').map_or("", |j| &rest[j + 1..]);
    }
    out.push_str(rest);
    out
}

/// `feeds list --json`.
fn feeds_list(config: &Path) -> Vec<serde_json::Value> {
    let out = bin()
        .args(["feeds", "list", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cli(args: &[&str], config: &Path) -> String {
    let out = bin()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `config`'s feeds list `n` addresses, each answering 200.
async fn wait_for_feeds(
    config: &Path,
    n: usize,
    rewrite: &dyn Fn(&str) -> String,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let list = feeds_list(config);
        if list.len() == n {
            let mut all = true;
            for f in &list {
                let url = rewrite(f["url"].as_str().unwrap());
                if reqwest::get(&url).await.unwrap().status() != 200 {
                    all = false;
                    break;
                }
            }
            if all {
                return list;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} feed addresses of {n}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn url_of<'a>(list: &'a [serde_json::Value], name: &str, calendar: &str) -> &'a str {
    list.iter()
        .find(|f| f["name"] == name && f["calendar_id"] == calendar)
        .and_then(|f| f["url"].as_str())
        .unwrap_or_else(|| panic!("no {name} feed of {calendar} in {list:?}"))
}

/// Every golden mapping case in a calendar of its own; feeds of the
/// privacy each case was written for, and a busy feed of all of them.
#[tokio::test(flavor = "multi_thread")]
async fn real_subscribers_expand_the_feishu_instances_of_every_golden_case() {
    let emu = crate::feishu::emulator().await;
    let golden = repo("crates/bridge-core/tests/golden");
    let mut cases: Vec<(String, String, String)> = Vec::new(); // (case, calendar, privacy)
    let mut names: Vec<String> = std::fs::read_dir(&golden)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("expected.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for case in names {
        let input = bridge_core::input::parse_events(
            &std::fs::read_to_string(golden.join(&case).join("input.json")).unwrap(),
        )
        .unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(golden.join(&case).join("expected.json")).unwrap(),
        )
        .unwrap();
        let cal = emu.create_calendar(&case);
        emu.bulk_load(&cal, input.events);
        let privacy = expected["privacy"].as_str().unwrap().to_owned();
        cases.push((case, cal, privacy));
    }
    let quoted = |privacy: Option<&str>| {
        let ids: Vec<String> = cases
            .iter()
            .filter(|c| privacy.is_none_or(|p| c.2 == p))
            .map(|c| format!("{:?}", c.1))
            .collect();
        format!("[{}]", ids.join(", "))
    };
    let dir = temp_dir("feeds-golden");
    let extra = format!(
        "\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [[sinks]]\nkind = \"feed\"\nname = \"golden-full\"\ncalendars = {}\n\n\
         [[sinks]]\nkind = \"feed\"\nname = \"golden-redacted\"\nprivacy = \"redacted\"\ncalendars = {}\n\n\
         [[sinks]]\nkind = \"feed\"\nname = \"busy\"\nprivacy = \"busy\"\nrefresh_interval_minutes = 15\n",
        quoted(Some("full")),
        quoted(Some("redacted")),
    );
    let config = write_config(&dir, &emu, &quoted(None), &extra);
    let daemon = Daemon::start_logged(&config, &dir.join("daemon.log"));
    let addresses = cases.len() + cases.iter().filter(|c| c.2 != "busy").count();
    let list = wait_for_feeds(&config, addresses, &|u| u.to_owned()).await;

    // The busy feeds show no summary, description, location or attendee.
    for (case, cal, _) in &cases {
        let body = reqwest::get(url_of(&list, "busy", cal))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("REFRESH-INTERVAL;VALUE=DURATION:PT15M\r\n"));
        assert!(body.contains("X-PUBLISHED-TTL:PT15M\r\n"));
        let unfolded = body.replace("\r\n ", "");
        for line in unfolded.lines() {
            let name = line.split([':', ';']).next().unwrap_or("");
            assert!(
                !matches!(
                    name,
                    "DESCRIPTION" | "LOCATION" | "ATTENDEE" | "ORGANIZER" | "CONFERENCE" | "URL"
                ),
                "{case}: {line}"
            );
            if name == "SUMMARY" {
                assert_eq!(line, "SUMMARY:Busy", "{case}");
            }
        }
    }

    // Each case through the feed of its privacy.
    let manifest: Vec<serde_json::Value> = cases
        .iter()
        .map(|(case, cal, privacy)| {
            let feed = match privacy.as_str() {
                "full" => "golden-full",
                "redacted" => "golden-redacted",
                _ => "busy",
            };
            serde_json::json!({
                "case": case,
                "url": url_of(&list, feed, cal),
                "expected": golden.join(case).join("expected.json"),
            })
        })
        .collect();
    let manifest_path = dir.join("manifest.json");
    std::fs::write(
        &manifest_path,
        serde_json::to_string(&serde_json::json!({ "cases": manifest })).unwrap(),
    )
    .unwrap();
    let python = repo("target/pyenv/bin/python");
    let node_dir = repo("target/node");
    let has_python_libs = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import icalendar, recurring_ical_events"])
            .status()
            .is_ok_and(|s| s.success());
    let clients = [
        (
            "python",
            has_python_libs,
            "Python icalendar + recurring-ical-events",
        ),
        (
            "icaljs",
            node_dir.join("node_modules/ical.js").exists()
                && std::process::Command::new("node")
                    .arg("--version")
                    .output()
                    .is_ok(),
            "ical.js under Node",
        ),
        (
            "khal",
            repo("target/pyenv/bin/khal").exists() && repo("target/pyenv/bin/vdirsyncer").exists(),
            "vdirsyncer and khal",
        ),
    ];
    if node_dir.exists() {
        std::fs::copy(
            repo("tests/feed-clients/icaljs-expand.mjs"),
            node_dir.join("icaljs-expand.mjs"),
        )
        .unwrap();
    }
    let mut failures = Vec::new();
    for (client, ok, what) in clients {
        if !available(what, ok && python.exists()) {
            continue;
        }
        let work = dir.join(format!("work-{client}"));
        std::fs::create_dir_all(&work).unwrap();
        let out = std::process::Command::new(&python)
            .arg(repo("tests/feed-clients/check_feed.py"))
            .args(["--client", client, "--manifest"])
            .arg(&manifest_path)
            .arg("--work")
            .arg(&work)
            .arg("--node-dir")
            .arg(&node_dir)
            .arg("--bin-dir")
            .arg(repo("target/pyenv/bin"))
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failures.push(format!("{client}:\n{report}"));
        }
    }
    daemon.stop();
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    for f in &list {
        let url = f["url"].as_str().unwrap();
        let token = url.rsplit('/').next().unwrap().trim_end_matches(".ics");
        assert!(!log.contains(token), "a token in the daemon's log");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    emu.shutdown().await;
}

/// A change pushed by webhook, 304s, gzip, rotation while running, the
/// same list with and without the daemon, a restart with Feishu gone, and
/// no token in any log line at trace level.
#[tokio::test(flavor = "multi_thread")]
async fn changes_conditional_gets_rotation_and_restarts() {
    let emu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        webhook_retry_schedule: vec![Duration::from_millis(200); 4],
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = emu.add_user("Li Lei");
    let cal = emu.primary_calendar(&user);
    emu.create_event(
        &cal,
        Event {
            description: Some("Quarterly numbers".into()),
            location: Some(Location {
                name: Some("Room 42".into()),
                ..Location::default()
            }),
            ..event("Existing meeting", 1_760_000_000)
        },
    );
    emu.subscribe_events(&user, &cal);
    let dir = temp_dir("feeds-change");
    let extra = "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         public_url = \"https://cal.example.test/\"\n\n\
         [sync]\ndebounce_ms = 20\n\n\
         [[sinks]]\nkind = \"feed\"\nname = \"team\"\n\n\
         [[sinks]]\nkind = \"feed\"\nname = \"free-busy\"\nprivacy = \"busy\"\n\n\
         [[sinks]]\nkind = \"feed\"\nname = \"everything\"\ncombine = true\n";
    let config = write_config(&dir, &emu, &format!("[\"{cal}\"]"), extra);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("delivery = \"poll\"", "delivery = \"webhook\"");
    std::fs::write(&config, text).unwrap();
    let log_path = dir.join("daemon.log");
    let daemon = Daemon::start_logged(&config, &log_path);
    daemon.push_from(&emu);
    let base = format!("http://{}", daemon.addr);
    let local = |u: &str| u.replace("https://cal.example.test", &base);
    let list = wait_for_feeds(&config, 3, &local).await;
    let mut tokens: Vec<String> = Vec::new();
    let token_of = |u: &str| {
        u.rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".ics")
            .to_owned()
    };
    for f in &list {
        let u = f["url"].as_str().unwrap();
        assert!(u.starts_with("https://cal.example.test/feeds/"), "{u}");
        tokens.push(token_of(u));
    }
    let team = local(url_of(&list, "team", &cal));
    let http = reqwest::Client::new();

    let first = http.get(&team).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag1 = first.headers()["etag"].to_str().unwrap().to_owned();
    let body1 = first.text().await.unwrap();
    assert!(body1.contains("SUMMARY:Existing meeting"));
    assert!(body1.contains("LOCATION:Room 42"));
    let not_modified = http
        .get(&team)
        .header("if-none-match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], etag1.as_str());
    let busy = http
        .get(local(url_of(&list, "free-busy", &cal)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(busy.contains("SUMMARY:Busy"));
    for hidden in [
        "Existing meeting",
        "Quarterly",
        "Room 42",
        "LOCATION",
        "DESCRIPTION",
    ] {
        assert!(!busy.contains(hidden), "{hidden} in the busy feed");
    }

    // A change by webhook: a new body and ETag.
    emu.create_event(&cal, event("Added by webhook", 1_760_086_400));
    let start = Instant::now();
    let (etag2, body2) = loop {
        let r = http
            .get(&team)
            .header("if-none-match", &etag1)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let etag = r.headers()["etag"].to_str().unwrap().to_owned();
            break (etag, r.text().await.unwrap());
        }
        assert_eq!(r.status(), 304);
        assert!(start.elapsed() < Duration::from_secs(20), "no new body");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(etag1, etag2);
    assert!(body2.contains("SUMMARY:Added by webhook"));
    assert!(body2.contains("SUMMARY:Existing meeting"));
    // The combined feed (one address for every calendar) follows too.
    let combined = local(url_of(&list, "everything", "*"));
    let start = Instant::now();
    loop {
        let text = http
            .get(&combined)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("SUMMARY:Added by webhook") {
            assert!(text.contains("SUMMARY:Existing meeting"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "combined feed not updated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // gzip: its own ETag, which revalidates.
    let gz = http
        .get(&team)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let gz_etag = gz.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(gz_etag, format!("{}-gzip\"", etag2.trim_end_matches('"')));
    let r = http
        .get(&team)
        .header("accept-encoding", "gzip")
        .header("if-none-match", &gz_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // show, rotate through the running daemon.
    let shown = cli(&["feeds", "show", "team", "--qr"], &config);
    assert!(
        shown.contains(&format!(
            "webcal://cal.example.test/feeds/{}.ics",
            token_of(&team)
        )),
        "{shown}"
    );
    assert!(shown.contains('█') || shown.contains('▀'), "{shown}");
    let rotated = cli(&["feeds", "rotate", "team", "--calendar", &cal], &config);
    assert!(rotated.contains("new addresses"), "{rotated}");
    assert_eq!(http.get(&team).send().await.unwrap().status(), 404);
    let running = feeds_list(&config);
    let team2 = local(url_of(&running, "team", &cal));
    assert_ne!(team, team2);
    tokens.push(token_of(&team2));
    let r = http.get(&team2).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], etag2.as_str());
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for t in &tokens {
        assert!(!metrics.contains(t.as_str()), "a token in /metrics");
    }
    daemon.stop();

    // The same list without the daemon.
    assert_eq!(feeds_list(&config), running);

    // Feishu gone: a restarted daemon serves the last good body.
    emu.shutdown().await;
    let daemon = Daemon::start_logged(&config, &log_path);
    let base = format!("http://{}", daemon.addr);
    let again = team2.replace(team2.split("/feeds/").next().unwrap(), &base);
    let r = reqwest::get(&again).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], etag2.as_str());
    assert_eq!(
        reqwest::get(again.replace(&token_of(&team2), &token_of(&team)))
            .await
            .unwrap()
            .status(),
        404
    );
    daemon.stop();

    // Offline rotation: the next daemon serves only the new address.
    let out = cli(&["feeds", "rotate", "free-busy"], &config);
    assert!(out.contains("new addresses"), "{out}");
    let offline = feeds_list(&config);
    tokens.push(token_of(url_of(&offline, "free-busy", &cal)));

    let log = plain(&std::fs::read_to_string(&log_path).unwrap());
    assert!(log.contains("TRACE"), "the daemon logged at trace level");
    assert!(log.contains("feed=team"), "logs name the feed");
    for t in &tokens {
        assert!(!log.contains(t.as_str()), "a token in the daemon's log");
    }
}
