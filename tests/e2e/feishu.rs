//! `auth feishu`, `subscribe` and `reconcile` against the Feishu emulator,
//! driven as a user would: a config file, the real binary, its output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bridge_core::feishu::{Event, TimeInfo, UnixSeconds};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};

pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_feishu-bridge"))
}

/// A fresh directory for one test. The directories of earlier runs whose
/// process is gone are removed the first time (a failed run's directory
/// stays until then, for a look at its state).
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_leftovers);
    let dir = std::env::temp_dir().join(format!("fb-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("fb-e2e-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // A tmpfs left mounted by a killed run would refuse removal.
            let path = entry.path();
            if mounts.iter().any(|m| Path::new(m).starts_with(&path)) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(path.join("state"))
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

pub(crate) async fn emulator() -> FeishuEmulator {
    FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        ..FeishuConfig::default()
    })
    .await
    .unwrap()
}

pub(crate) fn write_config(
    dir: &Path,
    emu: &FeishuEmulator,
    calendars: &str,
    extra: &str,
) -> PathBuf {
    let c = emu.config();
    let text = format!(
        "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
         app_secret = \"{secret}\"\ncalendars = {calendars}\ndelivery = \"poll\"\n\
         user_token_file = \"{tokens}\"\n{extra}\n",
        store = dir.join("state/bridge.redb").display(),
        base = emu.base_url(),
        app = c.app_id,
        secret = c.app_secret,
        tokens = dir.join("state/feishu-user.json").display(),
    );
    let path = dir.join("feishu-bridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn timed(at: i64, tz: &str) -> TimeInfo {
    TimeInfo {
        timestamp: Some(UnixSeconds(at)),
        timezone: Some(tz.into()),
        date: None,
    }
}

pub(crate) fn event(summary: &str, at: i64) -> Event {
    Event {
        summary: Some(summary.into()),
        start_time: Some(timed(at, "Asia/Shanghai")),
        end_time: Some(timed(at + 3600, "Asia/Shanghai")),
        ..Event::default()
    }
}

/// Starts `feishu-bridge <args> --config <config>` (an `auth` command) and
/// waits for the authorize URL it prints. Returns the child, that URL and a
/// reader that gives the command's whole stdout once it exits.
pub(crate) async fn start_auth(
    args: &[&str],
    config: &Path,
    stderr: Stdio,
) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    let mut child = bin()
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.trim_start().starts_with("http://") {
                let _ = tx.send(line.trim().to_owned());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .unwrap_or_else(|_| panic!("{} printed an authorize URL", args.join(" ")));
    (child, url, reader)
}

/// Runs `auth feishu`, plays the browser, returns the command's stdout.
async fn authorize(config: &Path) -> String {
    let (mut child, url, reader) = start_auth(
        &["auth", "feishu", "--port", "0", "--timeout", "20"],
        config,
        Stdio::piped(),
    )
    .await;
    // The browser follows the redirect to the command's loopback listener.
    let page = reqwest::get(&url).await.unwrap();
    assert!(page.status().is_success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let out = reader.join().unwrap();
    assert!(status.success(), "auth failed: {out}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_then_subscribe_then_pushes_arrive() {
    let emu = emulator().await;
    let user = emu.add_user("Li Lei");
    emu.set_auto_login_user(&user);
    let cal = emu.primary_calendar(&user);
    let dir = temp_dir("auth");
    let config = write_config(&dir, &emu, &format!("[\"{cal}\"]"), "");

    let out = authorize(&config).await;
    assert!(out.contains("Authorized. Tokens saved to"), "{out}");
    let token_file = dir.join("state/feishu-user.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = bin()
        .args(["subscribe", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("subscribed: event changes of {cal}")),
        "{stdout}"
    );
    // Subscribed: a change now produces a push (no webhook configured, so
    // the emulator records an undeliverable attempt; that it exists is the point).
    let before = emu.deliveries().len();
    emu.set_webhook(Some(bridge_emulators::feishu::WebhookTarget {
        url: "http://127.0.0.1:9/webhook/event".into(),
        encrypt_key: None,
        verification_token: "t".into(),
    }));
    emu.create_event(&cal, event("pushed", 1_760_000_000));
    let d = emu
        .wait_for_deliveries(before + 1, Duration::from_secs(5))
        .await;
    assert!(d.len() > before, "a subscribed calendar produces pushes");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_without_auth_says_what_to_do() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let dir = temp_dir("noauth");
    let config = write_config(&dir, &emu, &format!("[\"{cal}\"]"), "");
    let out = bin()
        .args(["subscribe", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run `feishu-bridge auth feishu` first"),
        "{err}"
    );
    emu.shutdown().await;
}

fn ics_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ics"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn reconcile(config: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = bin()
        .args(["reconcile", "--json", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn sink_counts(report: &serde_json::Value) -> (u64, u64, u64, u64, u64) {
    let s = &report["calendars"][0]["sinks"][0];
    let n = |k: &str| s[k].as_u64().unwrap();
    (
        n("created"),
        n("updated"),
        n("deleted"),
        n("unchanged"),
        n("failed"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_mirrors_to_ics_and_a_second_run_writes_nothing() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team calendar");
    emu.bulk_load(&cal, bridge_core::sample::events(300, 9, 1_760_000_000));
    let dir = temp_dir("reconcile");
    let ics = dir.join("ics");
    let config = write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        &format!("\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n", ics.display()),
    );

    let (code, report, err) = reconcile(&config, &[]);
    assert_eq!(code, 0, "{err}\n{report}");
    let (created, updated, deleted, _, failed) = sink_counts(&report);
    assert_eq!((updated, deleted, failed), (0, 0, 0));
    assert_eq!(created, 300, "every listed item is recorded once");
    let files = ics_files(&ics);
    assert_eq!(files.len(), 1);
    let text = String::from_utf8(files[0].1.clone()).unwrap();
    assert!(text.contains("X-WR-CALNAME:Team calendar"));
    assert!(text.contains("RECURRENCE-ID;TZID="));
    assert!(text.contains("EXDATE;TZID="));

    // Second run: listing calls only, no writes, byte-identical file.
    emu.reset_calls();
    let (code, report, err) = reconcile(&config, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sink_counts(&report), (0, 0, 0, 300, 0));
    assert_eq!(ics_files(&ics), files);
    let listing = emu
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/events"))
        .count();
    assert_eq!(listing, 1, "300 events fit in one page of 1000");

    // A change in Feishu is picked up; its SEQUENCE goes up.
    let first = emu
        .events(&cal)
        .into_iter()
        .find(|e| {
            e.recurrence.as_deref().unwrap_or("").is_empty()
                && e.event_id.as_deref().is_some_and(|id| id.ends_with("_0"))
                && e.status != Some(bridge_core::feishu::EventStatus::Cancelled)
        })
        .expect("a single event");
    let id = first.event_id.clone().unwrap();
    emu.update_event(&cal, &id, |e| e.summary = Some("Renamed in Feishu".into()));
    let (code, report, _) = reconcile(&config, &[]);
    assert_eq!(code, 0);
    assert_eq!(sink_counts(&report).1, 1);
    let text = String::from_utf8(ics_files(&ics)[0].1.clone()).unwrap();
    assert!(text.contains("SUMMARY:Renamed in Feishu"));
    assert!(text.contains("SEQUENCE:1"));
    emu.shutdown().await;
}

#[test]
fn the_demo_runs_and_leaves_valid_files() {
    let dir = temp_dir("demo");
    let out = bin()
        .args(["demo", "--events", "60", "--dir"])
        .arg(dir.join("demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "Initial mirror",
        "created",
        "renamed",
        "moved",
        "cancelled",
        "deleted",
        "0 writes",
        "Served feeds",
        "a conditional GET answers 304",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in:\n{stdout}");
    }
    let files = ics_files(&dir.join("demo/ics"));
    assert_eq!(files.len(), 2);
    for (_, bytes) in files {
        let text = String::from_utf8(bytes).unwrap();
        icalendar::parser::read_calendar(&icalendar::parser::unfold(&text)).unwrap();
        assert!(
            text.contains("SUMMARY:Demo: weekly sync (moved)")
                || text.contains("X-WR-CALNAME:Team calendar")
        );
    }
}
