//! Issue #10 (hardening) through the real binary: `demo --dir` never clears
//! a directory it did not create; broken pipes end a command quietly.

use std::path::Path;
use std::process::Output;

use crate::feishu::{bin, temp_dir};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_refused(out: &Output, dir_shown: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit 2: {stderr}");
    assert!(stderr.contains(dir_shown), "{stderr}");
    assert!(
        stderr.contains("not created by `feishu-bridge demo`"),
        "{stderr}"
    );
    assert!(stderr.contains("Nothing was deleted"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn assert_untouched(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("thesis.tex")).unwrap(),
        "precious"
    );
    assert!(dir.join("chapters/one.tex").is_file());
    assert!(!dir.join(".feishu-bridge-demo").exists());
    assert!(!dir.join("ics").exists());
}

#[test]
fn demo_refuses_a_directory_it_did_not_create() {
    let dir = temp_dir("demo-precious");
    let precious = dir.join("precious");
    std::fs::create_dir_all(precious.join("chapters")).unwrap();
    std::fs::write(precious.join("thesis.tex"), "precious").unwrap();
    std::fs::write(precious.join("chapters/one.tex"), "1").unwrap();

    let out = bin()
        .args(["demo", "--events", "5", "--dir"])
        .arg(&precious)
        .output()
        .unwrap();
    assert_refused(&out, &precious.display().to_string());
    assert_untouched(&precious);

    // `--dir .` in that directory: the same.
    let out = bin()
        .args(["demo", "--events", "5", "--dir", "."])
        .current_dir(&precious)
        .output()
        .unwrap();
    assert_refused(&out, ".");
    assert_untouched(&precious);
}

/// Runs `cmd` with its stdout on a pipe whose reading end is already
/// closed, as `cmd | head -1` is once `head` has exited: every write fails
/// with EPIPE.
fn run_into_closed_pipe(cmd: &mut std::process::Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = cmd
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

fn assert_quiet_exit(out: &Output, allowed: &[i32]) {
    let stderr = text(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| allowed.contains(&c)),
        "{:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_pipes_end_commands_quietly() {
    let emu = crate::feishu::emulator().await;
    let cal = emu.create_calendar("Team");
    let at = chrono::Utc::now().timestamp() + 86_400;
    for i in 0..5 {
        emu.create_event(
            &cal,
            crate::feishu::event(&format!("Meeting {i}"), at + i * 3600),
        );
    }
    let dir = temp_dir("epipe");
    let extra = format!(
        "\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        dir.join("ics").display()
    );
    let config = crate::feishu::write_config(&dir, &emu, &format!("[\"{cal}\"]"), &extra);

    // `status` before anything was synced, then `reconcile --json`, then `status`.
    let out = run_into_closed_pipe(bin().arg("status").arg("--config").arg(&config));
    assert_quiet_exit(&out, &[0]);
    let out = run_into_closed_pipe(bin().args(["reconcile", "--json", "--config"]).arg(&config));
    assert_quiet_exit(&out, &[0]);
    // The work was done even though nobody read the report.
    assert!(
        std::fs::read_dir(dir.join("ics"))
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "ics"))
    );
    let out = run_into_closed_pipe(bin().arg("status").arg("--config").arg(&config));
    assert_quiet_exit(&out, &[0]);
    let out = run_into_closed_pipe(bin().args(["reconcile", "--config"]).arg(&config));
    assert_quiet_exit(&out, &[0]);
    emu.shutdown().await;
}

// ----- the daemon: retries on a timer, waiting items, dedupe purge, odd calendar ids -----

/// A webhook daemon (nobody pushes: only its own timers make it sync) that
/// mirrors `calendars` into `<dir>/ics`.
fn webhook_config(
    dir: &Path,
    emu: &bridge_emulators::feishu::FeishuEmulator,
    calendars: &str,
    sync: &str,
) -> std::path::PathBuf {
    let extra = format!(
        "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 20\n{sync}\n\n\
         [[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        dir.join("ics").display()
    );
    let path = crate::feishu::write_config(dir, emu, calendars, &extra);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("delivery = \"poll\"", "delivery = \"webhook\"");
    std::fs::write(&path, text).unwrap();
    path
}

async fn metrics(daemon: &crate::daemon::Daemon) -> String {
    reqwest::get(format!("http://{}/metrics", daemon.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Waits until /metrics shows `name` at least `min`.
async fn wait_metric(daemon: &crate::daemon::Daemon, name: &str, min: u64) -> String {
    let start = std::time::Instant::now();
    loop {
        let m = metrics(daemon).await;
        if metric(&m, name).is_some_and(|v| v >= min) {
            return m;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{name} never reached {min}:\n{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn ics_file_with(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle)))
    })
}

/// Calendar with three events, a daemon whose ICS directory cannot be
/// written (a file stands where the directory should be; a read-only
/// directory would not stop root).
async fn blocked_daemon(
    name: &str,
    sync: &str,
) -> (
    bridge_emulators::feishu::FeishuEmulator,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let emu = crate::feishu::emulator().await;
    let cal = emu.create_calendar("Team");
    let at = chrono::Utc::now().timestamp() + 86_400;
    for i in 0..3 {
        emu.create_event(
            &cal,
            crate::feishu::event(&format!("Meeting {i}"), at + i * 3600),
        );
    }
    let dir = temp_dir(name);
    std::fs::write(dir.join("ics"), "in the way").unwrap();
    let config = webhook_config(&dir, &emu, &format!("[\"{cal}\"]"), sync);
    (emu, dir, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_is_retried_on_a_timer_without_any_hint() {
    let (emu, dir, config) = blocked_daemon("retry-timer", "retry_base_seconds = 1").await;
    let daemon = crate::daemon::Daemon::start(&config);
    // The start-up pass fails to write the file (one failure per file).
    wait_metric(&daemon, "feishu_bridge_item_failures_total", 1).await;
    assert!(!ics_file_with(&dir.join("ics"), "Meeting"));
    // The directory becomes writable; nothing is pushed, nothing polled.
    let hints = metric(&metrics(&daemon).await, "feishu_bridge_hints_total");
    std::fs::remove_file(dir.join("ics")).unwrap();
    let start = std::time::Instant::now();
    while !ics_file_with(&dir.join("ics"), "SUMMARY:Meeting 2") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the failed write was never retried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let m = wait_metric(&daemon, "feishu_bridge_passes_total", 2).await;
    assert_eq!(
        metric(&m, "feishu_bridge_hints_total"),
        hints,
        "no new hint: {m}"
    );
    // Once written, nothing waits any more.
    let start = std::time::Instant::now();
    while metric(&metrics(&daemon).await, "feishu_bridge_items_waiting_retry") != Some(0) {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    daemon.stop();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_count_items_waiting_to_retry_and_metrics_the_dedupe_table() {
    let (emu, dir, config) = blocked_daemon("waiting", "").await;
    // Delivery ids left from long ago, and one of the last hour.
    {
        let store = bridge_store::Store::open(dir.join("state/bridge.redb"))
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp();
        for i in 0..40 {
            store
                .seen_or_insert(
                    &format!("old-{i}"),
                    now - 9 * 3600,
                    bridge_store::DEFAULT_DEDUPE_TTL,
                )
                .await
                .unwrap();
        }
        store
            .seen_or_insert("recent", now - 600, bridge_store::DEFAULT_DEDUPE_TTL)
            .await
            .unwrap();
    }
    let daemon = crate::daemon::Daemon::start(&config);
    // The first pass failed: one failure for the one file (#10.13), while
    // each of its three events waits for its retry.
    let m = wait_metric(&daemon, "feishu_bridge_item_failures_total", 1).await;
    // Expired delivery ids are purged at start; the table's size is shown.
    let start = std::time::Instant::now();
    let mut m = m;
    while metric(&m, "feishu_bridge_dedupe_entries") != Some(1) {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        m = metrics(&daemon).await;
    }
    assert_eq!(
        metric(&m, "feishu_bridge_items_waiting_retry"),
        Some(3),
        "{m}"
    );

    // `reconcile` goes through the daemon: the three events are not
    // "failed 0" and forgotten, they wait for their retry (in a minute).
    let out = bin()
        .args(["reconcile", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    // The daemon ran it: the store stays held, and the report is the usual one.
    assert!(stdout.contains("calendar "), "{stdout}");
    // (The projection itself is published again by a reconcile and fails
    // again, one failure for the file; its three events still wait.)
    assert!(stdout.contains(", waiting to retry 3"), "{stdout}");
    let out = bin()
        .args(["reconcile", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["calendars"][0]["sinks"][0]["deferred"], 3, "{json}");
    daemon.stop();
    emu.shutdown().await;
}

/// A proxy in front of the Feishu emulator that gives two calendars of the
/// calendar list unusable ids (one with a control character, one empty),
/// as a tenant could have; everything else passes through unchanged.
async fn odd_ids_proxy(upstream: String) -> String {
    use axum::response::IntoResponse;
    async fn forward(
        axum::extract::State(upstream): axum::extract::State<String>,
        req: axum::extract::Request,
    ) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut rb = reqwest::Client::new()
            .request(parts.method.clone(), format!("{upstream}{path}"))
            .body(body);
        for (k, v) in &parts.headers {
            if k != "host" && k != "content-length" {
                rb = rb.header(k, v);
            }
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let mut bytes = resp.bytes().await.unwrap().to_vec();
        if parts.uri.path() == "/open-apis/calendar/v4/calendars" {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for c in v["data"]["calendar_list"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                match c["summary"].as_str() {
                    Some("Odd: control") => c["calendar_id"] = "odd\u{1f}id\u{7}".into(),
                    Some("Odd: empty") => c["calendar_id"] = "".into(),
                    _ => {}
                }
            }
            bytes = serde_json::to_vec(&v).unwrap();
        }
        (status, bytes).into_response()
    }
    let app = axum::Router::new().fallback(forward).with_state(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn calendars_with_unusable_ids_are_skipped_and_the_rest_mirrored() {
    let emu = crate::feishu::emulator().await;
    let good = emu.create_calendar("Good");
    let at = chrono::Utc::now().timestamp() + 86_400;
    emu.create_event(&good, crate::feishu::event("In the good calendar", at));
    for name in ["Odd: control", "Odd: empty"] {
        let odd = emu.create_calendar(name);
        emu.create_event(&odd, crate::feishu::event("Never seen", at));
    }
    let proxy = odd_ids_proxy(emu.base_url()).await;
    let dir = temp_dir("odd-ids");
    let config = webhook_config(&dir, &emu, "\"all\"", "");
    let toml = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&emu.base_url(), &proxy);
    std::fs::write(&config, toml).unwrap();

    // One-shot: the good calendar is mirrored, the odd ones are named.
    let out = bin()
        .args(["reconcile", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(ics_file_with(
        &dir.join("ics"),
        "SUMMARY:In the good calendar"
    ));
    assert!(!ics_file_with(&dir.join("ics"), "Never seen"));
    assert!(
        stdout.contains(
            "calendar \"odd\\u{1f}id\\u{7}\" (Odd: control) skipped: its id contains control characters"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("calendar \"\" (Odd: empty) skipped: its id is empty"),
        "{stdout}"
    );
    assert!(stderr.contains("calendar skipped"), "a warning: {stderr}");
    let out = bin()
        .args(["reconcile", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["skipped_calendars"].as_array().unwrap().len(),
        2,
        "{json}"
    );
    assert_eq!(json["calendars"].as_array().unwrap().len(), 1, "{json}");

    // The daemon starts and mirrors the rest.
    std::fs::remove_dir_all(dir.join("ics")).unwrap();
    let daemon = crate::daemon::Daemon::start(&config);
    let start = std::time::Instant::now();
    while !ics_file_with(&dir.join("ics"), "SUMMARY:In the good calendar") {
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", daemon.addr))
            .await
            .unwrap()
            .status(),
        200
    );
    daemon.stop();
    emu.shutdown().await;
}
