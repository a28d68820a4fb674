//! Webhook ingest: signed, encrypted deliveries per second through the real
//! daemon's HTTP listener, each acknowledged only after its dirty mark is
//! durable, from 16 keep-alive connections; p50 / p99 latency per delivery.
//!
//! `cargo bench --bench ingest` (`INGEST_SECONDS`, default 10; `INGEST_CONNECTIONS`,
//! default 16; `INGEST_BINARY`, another `feishu-bridge` to measure instead). The calendars come from the Feishu emulator; deliveries
//! name one of them, so each one is a dedupe insert plus a dirty mark.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};
use bridge_feishu::webhook::{encrypt, signature};

const KEY: &str = "enc-key";
const TOKEN: &str = "verify-token";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn delivery(event_id: &str, calendar_id: &str) -> (String, [(&'static str, String); 3]) {
    let plain = serde_json::json!({
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "calendar.calendar.event.changed_v4",
                   "create_time": now_ms().to_string(), "token": TOKEN},
        "event": {"calendar_id": calendar_id},
    })
    .to_string();
    let body = serde_json::json!({"encrypt": encrypt(KEY, plain.as_bytes())}).to_string();
    let ts = (now_ms() / 1000).to_string();
    let nonce = format!("n{event_id}");
    let sig = signature(&ts, &nonce, KEY, body.as_bytes());
    (
        body,
        [
            ("x-lark-request-timestamp", ts),
            ("x-lark-request-nonce", nonce),
            ("x-lark-signature", sig),
        ],
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("INGEST_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let connections: usize = std::env::var("INGEST_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let emu = FeishuEmulator::start(FeishuConfig {
        rate_limit: None,
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let cal = emu.create_calendar("Ingest");
    let dir = std::env::temp_dir().join(format!("fb-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let c = emu.config();
    let config = dir.join("feishu-bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
             app_secret = \"{secret}\"\ncalendars = [\"{cal}\"]\ndelivery = \"webhook\"\n\
             user_token_file = \"{dir}/user.json\"\nencrypt_key = \"{KEY}\"\nverification_token = \"{TOKEN}\"\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
             [sync]\ndebounce_ms = 1000\n\n[[sinks]]\nkind = \"ics\"\ndir = \"{dir}/ics\"\n",
            store = dir.join("state/bridge.redb").display(),
            base = emu.base_url(),
            app = c.app_id,
            secret = c.app_secret,
            dir = dir.display(),
        ),
    )
    .unwrap();
    // `INGEST_BINARY` drives another build (an older release, to compare).
    let binary = std::env::var("INGEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_feishu-bridge").to_owned());
    println!("binary: {binary}");
    let mut child = Command::new(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines {});
    let addr = line[line.find("http://").unwrap() + 7..]
        .split([' ', ','])
        .next()
        .unwrap()
        .to_owned();
    let url = format!("http://{addr}/webhook/event");
    let start = Instant::now();
    while reqwest::get(format!("http://{addr}/healthz"))
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "daemon not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cal = Arc::new(cal);
    let tasks: Vec<_> = (0..connections)
        .map(|t| {
            let (url, cal) = (url.clone(), cal.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut times = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let (body, headers) = delivery(&format!("ingest-{t}-{i}"), &cal);
                    i += 1;
                    let mut req = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body);
                    for (k, v) in headers {
                        req = req.header(k, v);
                    }
                    let sent = Instant::now();
                    let status = req.send().await.unwrap().status();
                    assert_eq!(status, 200);
                    times.push(sent.elapsed());
                }
                times
            })
        })
        .collect();
    let began = Instant::now();
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    let elapsed = began.elapsed();
    times.sort();
    println!(
        "webhook ingest: {} deliveries in {:.1} s from {connections} connections = {:.0}/s; \
         latency p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        elapsed.as_secs_f64(),
        times.len() as f64 / elapsed.as_secs_f64(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap(),
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
