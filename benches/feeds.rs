//! Served feeds through the real daemon (`run`, its public listener):
//!
//! 1. conditional GETs answered 304 per second, 10 feeds, from
//!    `FEEDS_CONNECTIONS` (default 32) keep-alive connections;
//! 2. full GETs per second of a 10,000-event feed, without and with gzip,
//!    and its size plain, gzip and brotli;
//! 3. the delay from a change in Feishu (pushed by webhook) to the new body
//!    being served (the client polls with `If-None-Match` every 2 ms);
//! 4. the daemon's memory with 100 feeds of 1,000 events each (VmRSS and
//!    VmHWM of the daemon once every feed is served).
//!
//! The load generator (reqwest) runs in this process on the same cores as
//! the daemon. `cargo bench --bench feeds` (`FEEDS_SECONDS`, default 5).

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bridge_core::feishu::{Event, TimeInfo, UnixSeconds};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget};

const BIN: &str = env!("CARGO_BIN_EXE_feishu-bridge");

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Daemon {
    child: Child,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The daemon's config. Attendees are not read (`attendees = "none"`): Feishu
/// lists them per event, so a first mirror of the 100,000 events below would
/// spend most of an hour on attendee calls at Feishu's rate limit, and this
/// bench measures serving, not reading.
fn config(dir: &Path, emu: &FeishuEmulator, calendars: &[String]) -> PathBuf {
    let c = emu.config();
    let ids: Vec<String> = calendars.iter().map(|c| format!("{c:?}")).collect();
    let text = format!(
        "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
         app_secret = \"{secret}\"\ncalendars = [{ids}]\ndelivery = \"webhook\"\n\
         encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 0\ndebounce_max_ms = 0\nattendees = \"none\"\n\n\
         [[sinks]]\nkind = \"feed\"\nname = \"bench\"\n",
        store = dir.join("state/bridge.redb").display(),
        base = emu.base_url(),
        app = c.app_id,
        secret = c.app_secret,
        ids = ids.join(", "),
    );
    let path = dir.join("feishu-bridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &Path) -> Daemon {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines {});
    let rest = &line[line.find("http://").unwrap() + 7..];
    let addr = rest.split([' ', ',', ')']).next().unwrap().to_owned();
    Daemon { child, addr }
}

/// The feed URLs (calendar id -> URL on the daemon's address), once `n`
/// are served.
async fn served(config: &Path, n: usize) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let out = Command::new(BIN)
            .args(["feeds", "list", "--json", "--config"])
            .arg(config)
            .output()
            .unwrap();
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if list.len() == n {
            let mut urls = Vec::new();
            for f in &list {
                let url = f["url"].as_str().unwrap().to_owned();
                if http.head(&url).send().await.unwrap().status() == 200 {
                    urls.push((f["calendar_id"].as_str().unwrap().to_owned(), url));
                }
            }
            if urls.len() == n {
                return urls;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "feeds not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn event(summary: &str, at: i64) -> Event {
    let t = |at| TimeInfo {
        timestamp: Some(UnixSeconds(at)),
        timezone: Some("Asia/Shanghai".into()),
        date: None,
    };
    Event {
        summary: Some(summary.into()),
        start_time: Some(t(at)),
        end_time: Some(t(at + 3600)),
        ..Event::default()
    }
}

async fn rate(
    seconds: u64,
    tasks: usize,
    request: impl Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
    expect: u16,
) -> (f64, u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(tasks)
        .build()
        .unwrap();
    let request = Arc::new(request);
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (http, request, count, bytes) =
            (http.clone(), request.clone(), count.clone(), bytes.clone());
        set.spawn(async move {
            let mut i = t;
            while Instant::now() < until {
                let r = request(&http, i).send().await.unwrap();
                assert_eq!(r.status().as_u16(), expect);
                let b = r.bytes().await.unwrap();
                bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
                i += tasks;
            }
        });
    }
    while set.join_next().await.is_some() {}
    let n = count.load(Ordering::Relaxed);
    (
        n as f64 / start.elapsed().as_secs_f64(),
        bytes.load(Ordering::Relaxed) / n.max(1),
    )
}

#[tokio::main]
async fn main() {
    let seconds = env_or("FEEDS_SECONDS", 5);
    let connections = env_or("FEEDS_CONNECTIONS", 32) as usize;
    let root = std::env::temp_dir().join(format!("fb-bench-feeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    // ----- 10 small feeds, one of 10,000 events, webhook pushes.
    let emu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(0),
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = emu.add_user("Bench");
    let base = now() - 30 * 86_400;
    let mut calendars = Vec::new();
    for i in 0..10 {
        let cal = emu.create_calendar(&format!("Small {i}"));
        emu.bulk_load(&cal, bridge_core::sample::events(100, i, base));
        calendars.push(cal);
    }
    let big = emu.create_calendar("Big");
    emu.bulk_load(&big, bridge_core::sample::events(10_000, 99, base));
    calendars.push(big.clone());
    emu.subscribe_events(&user, &calendars[0]);
    let dir = root.join("a");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&dir, &emu, &calendars);
    let daemon = start(&cfg);
    emu.set_webhook(Some(WebhookTarget {
        url: format!("http://{}/webhook/event", daemon.addr),
        encrypt_key: Some("enc-key".into()),
        verification_token: "verify-token".into(),
    }));
    let urls = served(&cfg, calendars.len()).await;
    let http = reqwest::Client::new();
    let mut small = Vec::new();
    let mut big_url = String::new();
    for (cal, url) in &urls {
        if *cal == big {
            big_url = url.clone();
        } else {
            let etag = http.head(url).send().await.unwrap().headers()["etag"]
                .to_str()
                .unwrap()
                .to_owned();
            small.push((url.clone(), etag));
        }
    }
    println!(
        "feeds bench: daemon at {}, {connections} connections, {seconds} s per figure",
        daemon.addr
    );

    let targets = Arc::new(small.clone());
    let (per_s, _) = rate(
        seconds,
        connections,
        move |h, i| {
            let (url, etag) = &targets[i % targets.len()];
            h.get(url).header("if-none-match", etag)
        },
        304,
    )
    .await;
    println!("conditional GETs answered 304, 10 feeds:       {per_s:>9.0} /s");

    let plain = http
        .get(&big_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let gz = http
        .get(&big_url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let br = http
        .get(&big_url)
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    for (label, encoding) in [
        ("identity", None),
        ("gzip", Some("gzip")),
        ("br", Some("br")),
    ] {
        let u = big_url.clone();
        let (per_s, size) = rate(
            seconds,
            4,
            move |h, _| {
                let r = h.get(&u);
                match encoding {
                    Some(e) => r.header("accept-encoding", e),
                    None => r,
                }
            },
            200,
        )
        .await;
        println!(
            "full GETs of the 10,000-event feed, {label:<8}   {per_s:>9.1} /s  ({:.2} MB each)",
            size as f64 / 1e6
        );
    }
    println!(
        "10,000-event feed size: {:.2} MB plain, {:.2} MB gzip, {:.2} MB br",
        plain as f64 / 1e6,
        gz as f64 / 1e6,
        br as f64 / 1e6
    );

    // Change -> new body, pushed by webhook.
    let url0 = urls
        .iter()
        .find(|(c, _)| *c == calendars[0])
        .map(|(_, u)| u.clone())
        .unwrap();
    let mut delays = Vec::new();
    for i in 0..10 {
        let etag = http.head(&url0).send().await.unwrap().headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned();
        let t0 = Instant::now();
        emu.create_event(
            &calendars[0],
            event(&format!("Change {i}"), now() + 86_400 * (i + 1)),
        );
        loop {
            let r = http
                .get(&url0)
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no new body");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(t0.elapsed());
    }
    delays.sort();
    println!(
        "change in Feishu -> new feed body (webhook):  median {} ms, max {} ms (10 changes)",
        delays[delays.len() / 2].as_millis(),
        delays[delays.len() - 1].as_millis()
    );
    drop(daemon);
    emu.shutdown().await;

    // ----- Memory: 100 feeds of 1,000 events.
    let emu = FeishuEmulator::start(FeishuConfig::default())
        .await
        .unwrap();
    let mut calendars = Vec::new();
    for i in 0..100 {
        let cal = emu.create_calendar(&format!("Team {i}"));
        emu.bulk_load(&cal, bridge_core::sample::events(1_000, 1_000 + i, base));
        calendars.push(cal);
    }
    let dir = root.join("b");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&dir, &emu, &calendars);
    let daemon = start(&cfg);
    let t = Instant::now();
    let urls = served(&cfg, 100).await;
    let one = http
        .get(&urls[0].1)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let pid = daemon.child.id();
    println!(
        "100 feeds of 1,000 events ({:.2} MB each) served after {:.1} s: daemon VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        one as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        rss_kib(pid, "VmRSS:") as f64 / 1024.0,
        rss_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    drop(daemon);
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&root);
}
