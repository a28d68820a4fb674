//! `feishu-bridge run` against the emulator: a change in Feishu reaches the
//! ICS file by webhook (signed, encrypted), by the long connection and by
//! polling; /healthz, /metrics; SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget, WsClientConfig};

use crate::feishu::{bin, event, temp_dir, write_config};

pub(crate) struct Daemon {
    child: Child,
    pub(crate) addr: String,
    pub(crate) admin: String,
}

impl Daemon {
    pub(crate) fn start(config: &Path) -> Daemon {
        Self::spawn(
            bin()
                .args(["run", "--config"])
                .arg(config)
                .stderr(Stdio::inherit()),
        )
    }

    /// The daemon at `RUST_LOG=trace`, its stderr appended to `log`.
    pub(crate) fn start_logged(config: &Path, log: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Self::spawn(
            bin()
                .args(["run", "--config"])
                .arg(config)
                .env("RUST_LOG", "trace")
                .stderr(log),
        )
    }

    /// Starts `run` and reads the addresses from its start-up line.
    fn spawn(cmd: &mut std::process::Command) -> Daemon {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("a startup line").unwrap();
        // Keep draining stdout so that the daemon never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let grab = |marker: &str| {
            let rest = &line[line
                .find(marker)
                .unwrap_or_else(|| panic!("{marker} in {line:?}"))
                + marker.len()..];
            rest.split([' ', ',', ')']).next().unwrap().to_owned()
        };
        Daemon {
            addr: grab("http://"),
            admin: grab("admin http://"),
            child,
        }
    }

    pub(crate) fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the daemon exits cleanly on SIGTERM: {status}"
        );
    }
}

impl Daemon {
    /// The Feishu emulator pushes its events to this daemon's webhook
    /// (signed and encrypted with the keys of the tests' configs).
    pub(crate) fn push_from(&self, emu: &FeishuEmulator) {
        emu.set_webhook(Some(WebhookTarget {
            url: format!("http://{}/webhook/event", self.addr),
            encrypt_key: Some("enc-key".into()),
            verification_token: "verify-token".into(),
        }));
    }

    /// Kills the daemon with SIGKILL (no cleanup at all) and reaps it.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub(crate) fn daemon_config(
    dir: &Path,
    emu: &FeishuEmulator,
    cal: &str,
    delivery: &str,
) -> (PathBuf, PathBuf) {
    let ics = dir.join("ics");
    let extra = format!(
        "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 20\npoll_seconds = 1\n\n\
         [[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        ics.display()
    );
    let path = write_config(dir, emu, &format!("[\"{cal}\"]"), &extra);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("delivery = \"poll\"", &format!("delivery = \"{delivery}\""));
    std::fs::write(&path, text).unwrap();
    (path, ics)
}

async fn wait_for_file_containing(dir: &Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path())
                    && text.contains(needle)
                {
                    return text;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no ICS file with {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario(delivery: &str) {
    let emu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        long_connection: delivery == "long_connection",
        webhook_retry_schedule: vec![Duration::from_millis(200); 4],
        ws_client_config: WsClientConfig {
            reconnect_count: -1,
            reconnect_interval: 1,
            reconnect_nonce: 1,
            ping_interval: 5,
        },
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = emu.add_user("Li Lei");
    let cal = emu.primary_calendar(&user);
    emu.create_event(&cal, event("Existing meeting", 1_760_000_000));
    emu.subscribe_events(&user, &cal);
    let dir = temp_dir(&format!("daemon-{delivery}"));
    let (config, ics) = daemon_config(&dir, &emu, &cal, delivery);
    let daemon = Daemon::start(&config);
    if delivery == "webhook" {
        daemon.push_from(&emu);
    }
    wait_for_file_containing(&ics, "SUMMARY:Existing meeting").await;
    let health = reqwest::get(format!("http://{}/healthz", daemon.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    emu.create_event(
        &cal,
        event(&format!("Added, pushed by {delivery}"), 1_760_086_400),
    );
    let text =
        wait_for_file_containing(&ics, &format!("SUMMARY:Added\\, pushed by {delivery}")).await;
    assert!(text.contains("SUMMARY:Existing meeting"));

    let metrics = reqwest::get(format!("http://{}/metrics", daemon.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("feishu_bridge_passes_total"), "{metrics}");
    // Per sink, per calendar and the build, for alerting (prometheus-client).
    let sink = format!("ics:{}", ics.display());
    for needle in [
        format!("feishu_bridge_sink_events_written_total{{sink=\"{sink}\"}} "),
        format!("feishu_bridge_sink_write_failures_total{{sink=\"{sink}\"}} 0"),
        format!("feishu_bridge_sink_items_waiting_retry{{sink=\"{sink}\"}} 0"),
        format!("feishu_bridge_sink_paused{{sink=\"{sink}\"}} 0"),
        format!("feishu_bridge_last_sync_timestamp_seconds{{calendar=\"{cal}\"}} "),
        format!(
            "feishu_bridge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "# TYPE feishu_bridge_queue_depth gauge".to_owned(),
    ] {
        assert!(metrics.contains(&needle), "{needle} in\n{metrics}");
    }
    // The example alert rules name only metrics that exist.
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/feishu-bridge-alerts.yml"),
    )
    .unwrap();
    for (i, _) in rules.match_indices("feishu_bridge_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            metrics.contains(&format!("\n{name}{{")) || metrics.contains(&format!("\n{name} ")),
            "the alert rules name {name}, which /metrics does not have"
        );
    }
    assert!(
        metrics.contains("feishu_bridge_token_expiry_seconds{token=\"tenant_access\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("feishu_bridge_feishu_api_calls_total{endpoint=\"GET /open-apis/calendar/v4/calendars/:calendar_id/events\",status=\"200\"}"), "{metrics}");
    if delivery != "poll" {
        let hints: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("feishu_bridge_hints_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(hints >= 2, "start-up hint and the pushed change: {metrics}");
        let d = emu.deliveries();
        assert!(d.iter().any(|d| d.delivered_ok), "{d:?}");
    }
    // The admin endpoint needs the token the daemon keeps next to the store.
    let token = std::fs::read_to_string(dir.join("state/daemon-admin.token")).unwrap();
    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/admin/status", daemon.admin))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["ready"], true);
    if delivery == "webhook" {
        // The daemon holds the store: the CLI asks it to reconcile.
        let out = bin()
            .args(["reconcile", "--config"])
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
            stdout.contains(" created 0, updated 0, deleted 0, unchanged 2, failed 0"),
            "{stdout}"
        );
        // A dry run works too (see tests/e2e/inspect.rs for the rest).
        let out = bin()
            .args(["reconcile", "--dry-run", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("would be created 0"));
    }
    daemon.stop();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_arrives_by_webhook() {
    scenario("webhook").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_arrives_by_long_connection() {
    scenario("long_connection").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_picked_up_by_polling() {
    scenario("poll").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_calendar_is_picked_up_when_mirroring_all() {
    use bridge_feishu::auth::{FileTokenStore, OauthApp, Secret, TokenStore, UserAuth, UserTokens};
    use bridge_feishu::client::{ClientConfig, FeishuClient};
    use std::sync::Arc;

    let emu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        webhook_retry_schedule: vec![Duration::from_millis(200); 4],
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = emu.add_user("Li Lei");
    let first = emu.create_calendar("First");
    emu.create_event(&first, event("In the first calendar", 1_760_000_000));
    // The user subscribes to calendar-list changes through the API.
    let dir = temp_dir("daemon-all");
    let (access, refresh) = emu.issue_user_token(&user, "calendar:calendar offline_access");
    let store = Arc::new(FileTokenStore::new(dir.join("user.json")));
    store
        .save(&UserTokens {
            access_token: Secret::new(access),
            access_expires_at: i64::MAX / 2,
            refresh_token: Secret::new(refresh.unwrap()),
            refresh_expires_at: 0,
            scope: String::new(),
        })
        .await
        .unwrap();
    let c = emu.config();
    let app = OauthApp {
        base_url: emu.base_url(),
        accounts_url: emu.base_url(),
        app_id: c.app_id.clone(),
        app_secret: Secret::new(c.app_secret.clone()),
    };
    let client = FeishuClient::new(ClientConfig::new(
        &emu.base_url(),
        &c.app_id,
        Secret::new(c.app_secret.clone()),
    ))
    .unwrap()
    .with_user(Arc::new(UserAuth::new(app, store)));
    client.subscribe_calendar_list().await.unwrap();

    let (config, ics) = daemon_config(&dir, &emu, "x", "webhook");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("calendars = [\"x\"]", "calendars = \"all\"");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config);
    daemon.push_from(&emu);
    wait_for_file_containing(&ics, "SUMMARY:In the first calendar").await;

    // A new calendar with an event: calendar.calendar.changed_v4 makes the
    // daemon re-read the list and mirror it.
    let second = emu.create_calendar("Second");
    emu.create_event(&second, event("In the second calendar", 1_760_000_000));
    let text = wait_for_file_containing(&ics, "SUMMARY:In the second calendar").await;
    assert!(text.contains("X-WR-CALNAME:Second"));
    daemon.stop();
    emu.shutdown().await;
}
