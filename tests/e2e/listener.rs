//! Issue #10 (hardening), the daemon under hostile input, faults and load:
//! slow and idle clients on the public listener (item 2), the admin
//! endpoint as a second Unix user (3), a store that cannot write (5), a
//! start while Feishu is unreachable (10), control characters in a signed
//! delivery (12).
//!
//! Measured figures (slowloris, memory) are printed to stderr.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bridge_emulators::feishu::FeishuEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::feishu::{bin, emulator, temp_dir};

const ENCRYPT_KEY: &str = "enc-key";
const VERIFY_TOKEN: &str = "verify-token";

pub(crate) struct Daemon {
    child: Child,
    pub(crate) addr: String,
    pub(crate) admin: String,
}

impl Daemon {
    /// Starts `run` and waits (at most 30 s) for its start-up line.
    pub(crate) fn start(config: &Path) -> Daemon {
        let mut child = bin()
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("the daemon printed no start-up line within 30 s (not serving?)");
            }
        };
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status (within 30 s).
    pub(crate) fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook-mode configuration against `base_url` mirroring `calendars`.
pub(crate) fn webhook_config(
    dir: &Path,
    base_url: &str,
    app_id: &str,
    secret: &str,
    calendars: &str,
) -> PathBuf {
    let text = format!(
        "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base_url}\"\napp_id = \"{app_id}\"\n\
         app_secret = \"{secret}\"\ncalendars = {calendars}\ndelivery = \"webhook\"\n\
         user_token_file = \"{tokens}\"\nencrypt_key = \"{ENCRYPT_KEY}\"\n\
         verification_token = \"{VERIFY_TOKEN}\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 20\n\n[[sinks]]\nkind = \"ics\"\ndir = \"{ics}\"\n",
        store = dir.join("state/bridge.redb").display(),
        tokens = dir.join("state/feishu-user.json").display(),
        ics = dir.join("ics").display(),
    );
    let path = dir.join("feishu-bridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn emulator_config(dir: &Path, emu: &FeishuEmulator, calendars: &str) -> PathBuf {
    let c = emu.config();
    webhook_config(dir, &emu.base_url(), &c.app_id, &c.app_secret, calendars)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A signed, encrypted `calendar.calendar.event.changed_v4` delivery, as
/// Feishu posts it: the body and its headers.
pub(crate) fn signed_delivery(
    event_id: &str,
    calendar_id: &str,
) -> (String, Vec<(String, String)>) {
    use bridge_feishu::webhook::{encrypt, signature};
    let plain = serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": "calendar.calendar.event.changed_v4",
            "create_time": now_ms().to_string(),
            "token": VERIFY_TOKEN,
            "app_id": "cli_x",
            "tenant_key": "t",
        },
        "event": {"calendar_id": calendar_id},
    })
    .to_string();
    let body = serde_json::json!({"encrypt": encrypt(ENCRYPT_KEY, plain.as_bytes())}).to_string();
    let ts = (now_ms() / 1000).to_string();
    let nonce = format!("n-{event_id:?}").replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let sig = signature(&ts, &nonce, ENCRYPT_KEY, body.as_bytes());
    let headers = vec![
        ("x-lark-request-timestamp".to_owned(), ts),
        ("x-lark-request-nonce".to_owned(), nonce),
        ("x-lark-signature".to_owned(), sig),
    ];
    (body, headers)
}

pub(crate) async fn post_delivery(addr: &str, event_id: &str, calendar_id: &str) -> u16 {
    let (body, headers) = signed_delivery(event_id, calendar_id);
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/webhook/event"))
        .timeout(Duration::from_secs(20))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn wait_ready(addr: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/healthz")).await
            && r.status() == 200
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the daemon is not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Item 12

#[tokio::test(flavor = "multi_thread")]
async fn a_control_character_in_a_signed_delivery_gets_400() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let dir = temp_dir("hard-ctl");
    let config = emulator_config(&dir, &emu, &format!("[\"{cal}\"]"));
    let daemon = Daemon::start(&config);
    wait_ready(&daemon.addr).await;

    assert_eq!(post_delivery(&daemon.addr, "ev\u{1f}1", &cal).await, 400);
    assert_eq!(post_delivery(&daemon.addr, "ev\u{7}2", &cal).await, 400);
    assert_eq!(post_delivery(&daemon.addr, "ev-3", "cal\u{1f}x").await, 400);
    assert_eq!(post_delivery(&daemon.addr, "ev-4", &cal).await, 200);
    assert!(daemon.terminate().success());
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------
// Item 10

#[tokio::test(flavor = "multi_thread")]
async fn with_feishu_unreachable_the_daemon_serves_and_keeps_hints() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = temp_dir("hard-unreachable");
    let config = webhook_config(&dir, &base, "cli_x", "secret", "[\"cal_1\"]");
    let daemon = Daemon::start(&config);

    let health = reqwest::Client::new()
        .get(format!("http://{}/healthz", daemon.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/healthz answers while Feishu is unreachable");
    assert_eq!(health.status(), 503);
    let body = health.text().await.unwrap();
    assert!(body.contains("starting"), "{body}");

    assert_eq!(post_delivery(&daemon.addr, "ev-down-1", "cal_1").await, 200);

    // `reconcile` is delegated to the daemon, which says it is starting.
    let mut cmd = bin();
    cmd.args(["reconcile", "--config"]).arg(&config);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || cmd.output().unwrap()),
    )
    .await
    .expect("reconcile ends within 60 s")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("starting"), "{stderr}");

    let addr_file = dir.join("state/daemon-admin.addr");
    let token_file = dir.join("state/daemon-admin.token");
    assert!(addr_file.exists() && token_file.exists());
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(
        !addr_file.exists(),
        "the admin address file is removed on exit"
    );
    assert!(
        !token_file.exists(),
        "the admin token file is removed on exit"
    );

    // The hint was made durable before the 200.
    let store = bridge_store::Store::open(dir.join("state/bridge.redb"))
        .await
        .unwrap();
    let dirty = store.dirty().await.unwrap();
    assert!(dirty.iter().any(|d| d.calendar_id == "cal_1"), "{dirty:?}");
}

// ---------------------------------------------------------------------------
// Item 3

/// Runs `script` with bash as the user `nobody` (we run as root); `None`
/// when that is impossible here (not root, no setpriv).
fn as_nobody(script: &str) -> Option<std::process::Output> {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "bash",
            "-c",
            script,
        ])
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("setpriv:") {
        return None;
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_endpoint_refuses_another_local_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let dir = temp_dir("hard-admin");
    let config = emulator_config(&dir, &emu, &format!("[\"{cal}\"]"));
    let daemon = Daemon::start(&config);
    wait_ready(&daemon.addr).await;
    let addr_file = dir.join("state/daemon-admin.addr");
    let token_file = dir.join("state/daemon-admin.token");
    // Let the other user reach the address file (as on a shared host).
    for p in [dir.as_path(), &dir.join("state")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&addr_file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let hints = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("feishu_bridge_hints_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let metrics = || async {
        reqwest::get(format!("http://{}/metrics", daemon.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = hints(&metrics().await);
    let listings = emu.call_count("/events");

    let script = format!(
        r#"addr=$(cat {addr}) || exit 10
cat {token} >/dev/null 2>&1 && exit 11
host=${{addr%:*}}; port=${{addr##*:}}
for req in "POST /admin/sync?calendar={cal}" "POST /admin/reconcile" "GET /admin/status" "POST /admin/google-token"; do
  exec 3<>/dev/tcp/$host/$port || exit 12
  printf '%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}' "$req" >&3
  head -n1 <&3
  exec 3<&-
done"#,
        addr = addr_file.display(),
        token = token_file.display(),
    );
    let lines: Vec<String> = match tokio::task::spawn_blocking(move || as_nobody(&script))
        .await
        .unwrap()
    {
        Some(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(
                out.status.code(),
                Some(0),
                "as nobody: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout.lines().map(str::to_owned).collect()
        }
        None => {
            eprintln!("cannot switch to nobody here; sending the requests without the token");
            let admin = daemon.admin.clone();
            let mut out = Vec::new();
            for (m, p) in [
                (reqwest::Method::POST, format!("/admin/sync?calendar={cal}")),
                (reqwest::Method::POST, "/admin/reconcile".to_owned()),
                (reqwest::Method::GET, "/admin/status".to_owned()),
                (reqwest::Method::POST, "/admin/google-token".to_owned()),
            ] {
                let r = reqwest::Client::new()
                    .request(m, format!("http://{admin}{p}"))
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                out.push(format!("HTTP/1.1 {}", r.status().as_u16()));
            }
            out
        }
    };
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with("HTTP/1.1 401"), "{lines:?}");
    }
    // Nothing changed: no hint, no listing.
    assert_eq!(hints(&metrics().await), before);
    assert_eq!(emu.call_count("/events"), listings);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");

    // The owner's token opens it.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/sync?calendar={cal}", daemon.admin))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(hints(&metrics().await), before + 1);
    let wrong = reqwest::Client::new()
        .post(format!("http://{}/admin/sync?calendar={cal}", daemon.admin))
        .bearer_auth("0".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(daemon.terminate().success());
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------
// Item 2

/// One slowloris client for `for_`: a connection sends a request head one
/// header line per second; when the server closes it, the client opens the
/// next one. Returns how long each connection the server closed had lived,
/// how many were still open at the end, and how many closed connections
/// were told `408` first.
async fn slowloris(addr: String, for_: Duration) -> (Vec<Duration>, usize, usize) {
    let attack = Instant::now();
    let mut lifetimes = Vec::new();
    let mut told_408 = 0;
    while attack.elapsed() < for_ {
        let opened = Instant::now();
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut closed = s
            .write_all(b"POST /webhook/event HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err();
        let mut buf = [0u8; 1024];
        let mut answer = Vec::new();
        let mut n = 0u32;
        while !closed && attack.elapsed() < for_ {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => closed = true,
                    Ok(k) => answer.extend_from_slice(&buf[..k]),
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    n += 1;
                    closed = s.write_all(format!("X-Slow-{n}: 1\r\n").as_bytes()).await.is_err();
                }
            }
        }
        if !closed {
            return (lifetimes, 1, told_408);
        }
        if answer.starts_with(b"HTTP/1.1 408 ") {
            told_408 += 1;
        }
        lifetimes.push(opened.elapsed());
    }
    (lifetimes, 0, told_408)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_closed_and_healthz_still_answers() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let dir = temp_dir("hard-slowloris");
    let config = emulator_config(&dir, &emu, &format!("[\"{cal}\"]"));
    let daemon = Daemon::start(&config);
    wait_ready(&daemon.addr).await;
    let pid = daemon.pid();
    let base_kib = peak_rss_kib(pid);

    // 200 slowloris clients for 30 s.
    let attack = Duration::from_secs(30);
    let clients: Vec<_> = (0..200)
        .map(|_| tokio::spawn(slowloris(daemon.addr.clone(), attack)))
        .collect();
    // An idle keep-alive connection, and a body that never completes.
    let mut idle = TcpStream::connect(&daemon.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut slow_body = TcpStream::connect(&daemon.addr).await.unwrap();
    slow_body
        .write_all(b"POST /webhook/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"encrypt\":")
        .await
        .unwrap();
    // /healthz in the middle of the attack.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let start = Instant::now();
    let during = reqwest::Client::new()
        .get(format!("http://{}/healthz", daemon.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/healthz answers during the attack");
    let during_took = start.elapsed();
    assert_eq!(during.status(), 200);

    let mut lifetimes = Vec::new();
    let mut still_open = 0;
    let mut told_408 = 0;
    for c in clients {
        let (l, open, t) = c.await.unwrap();
        lifetimes.extend(l);
        still_open += open;
        told_408 += t;
    }
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "slowloris: 200 clients for {attack:?}: {} connections closed by the server ({told_408} after a 408), \
         the longest after {longest:?}; {still_open} open at the end; /healthz during the attack: {during_took:?}",
        lifetimes.len()
    );
    assert!(
        lifetimes.len() >= 400,
        "each client's connection is closed and reopened at least twice in 30 s: {} closes",
        lifetimes.len()
    );
    assert!(
        longest < Duration::from_secs(25),
        "a slowloris connection lived {longest:?}"
    );
    assert_eq!(
        told_408,
        lifetimes.len(),
        "every slow request head is answered 408 before its connection is closed"
    );

    // The slow body got 408 and was closed.
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), slow_body.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the slow-body connection is closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // The idle keep-alive connection was closed too (after its answer).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle keep-alive connection is closed");
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));

    // /healthz answers fast on a fresh connection.
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let r = reqwest::Client::new()
            .get(format!("http://{}/healthz", daemon.addr))
            .send()
            .await
            .unwrap();
        times.push(start.elapsed());
        assert_eq!(r.status(), 200);
    }
    let fastest = times.iter().min().copied().unwrap();
    eprintln!("/healthz after the slowloris: {times:?}");
    assert!(
        fastest < Duration::from_millis(100),
        "/healthz took {times:?}"
    );
    let peak_kib = peak_rss_kib(pid);
    eprintln!("peak RSS: {base_kib} KiB before, {peak_kib} KiB after the slowloris");
    assert!(
        peak_kib < base_kib + 64 * 1024,
        "peak RSS grew from {base_kib} KiB to {peak_kib} KiB"
    );
    assert!(daemon.terminate().success());
    emu.shutdown().await;
}

/// Sends a request head announcing a 1 MiB body and all of it but the last
/// byte; keeps the connection open for `hold`.
async fn unfinished_body(addr: String, hold: Duration) {
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return;
    };
    let len = 1024 * 1024;
    let head = format!(
        "POST /webhook/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent + chunk.len() < len {
        let write = tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await;
        if !matches!(write, Ok(Ok(()))) {
            return;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(&chunk[..len - sent - 1]).await;
    tokio::time::sleep(hold).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unfinished_bodies_do_not_grow_memory() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let dir = temp_dir("hard-bodies");
    let config = emulator_config(&dir, &emu, &format!("[\"{cal}\"]"));
    let daemon = Daemon::start(&config);
    wait_ready(&daemon.addr).await;
    let pid = daemon.pid();
    let base_kib = peak_rss_kib(pid);

    let clients: Vec<_> = (0..200)
        .map(|_| tokio::spawn(unfinished_body(daemon.addr.clone(), Duration::from_secs(3))))
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let peak_kib = peak_rss_kib(pid);
    eprintln!("200 unfinished 1 MiB bodies: peak RSS {base_kib} KiB before, {peak_kib} KiB after");
    assert!(
        peak_kib < base_kib + 64 * 1024,
        "peak RSS grew from {base_kib} KiB to {peak_kib} KiB"
    );
    // Still serving deliveries.
    assert_eq!(post_delivery(&daemon.addr, "ev-after", &cal).await, 200);
    assert!(daemon.terminate().success());
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------
// Item 5

/// A small tmpfs at `dir`, unmounted on drop; `None` where mounting is not
/// allowed (not root, no CAP_SYS_ADMIN).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` with `dir/filler`.
fn fill(dir: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

async fn health(addr: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// How the test takes the store's room away and gives it back.
enum NoRoom {
    /// A tmpfs of 8 MiB under the state directory, filled up (root only).
    Tmpfs,
    /// The daemon's file-size limit (`ulimit -f`) lowered to one page with
    /// prlimit(2), then raised again: any user can.
    FileSizeLimit,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_degrades_the_daemon_which_recovers_by_itself() {
    // Where a tmpfs cannot be mounted (not root), the file-size limit
    // stands in, so the scenario runs everywhere.
    no_room_scenario(NoRoom::Tmpfs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_size_limit_degrades_the_daemon_which_recovers_by_itself() {
    no_room_scenario(NoRoom::FileSizeLimit).await;
}

/// Lowers (`Some(bytes)`) or lifts (`None`) the soft file-size limit of `pid`.
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    let old = prlimit(
        Some(pid),
        Resource::Fsize,
        Rlimit {
            current: None,
            maximum: None,
        },
    )
    .unwrap();
    prlimit(
        Some(pid),
        Resource::Fsize,
        Rlimit {
            current: bytes.or(old.maximum),
            maximum: old.maximum,
        },
    )
    .unwrap();
}

async fn no_room_scenario(how: NoRoom) {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(
        &cal,
        crate::feishu::event("Before the disk filled", 1_760_000_000),
    );
    let dir = temp_dir(match how {
        NoRoom::Tmpfs => "hard-full",
        NoRoom::FileSizeLimit => "hard-fsize",
    });
    let tmpfs = match how {
        NoRoom::Tmpfs => {
            let mounted = Tmpfs::mount(&dir.join("state"), "8m");
            if mounted.is_none() {
                eprintln!("cannot mount a tmpfs here (not root?): using the file-size limit");
            }
            mounted
        }
        NoRoom::FileSizeLimit => None,
    };
    let config = emulator_config(&dir, &emu, &format!("[\"{cal}\"]"));
    let daemon = Daemon::start(&config);
    wait_ready(&daemon.addr).await;
    let ics = dir.join("ics");
    let start = Instant::now();
    while !std::fs::read_dir(&ics)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("Before the disk")))
    {
        assert!(start.elapsed() < Duration::from_secs(30), "initial mirror");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    match &tmpfs {
        Some(t) => fill(&t.0),
        // redb grows its file in large steps, so a limit at its size would
        // be met late: writing past the first page fails at once.
        None => limit_file_size(daemon.pid(), Some(4096)),
    }
    // Deliveries are taken until the store needs room, then refused with
    // 503 (Feishu retries), never 500.
    let mut statuses = Vec::new();
    for i in 0..3000 {
        let status = post_delivery(&daemon.addr, &format!("ev-full-{i}"), &cal).await;
        statuses.push(status);
        if status != 200 {
            break;
        }
    }
    let last = *statuses.last().unwrap();
    eprintln!(
        "disk full: {} deliveries answered 200, then {last}",
        statuses.len() - 1
    );
    assert_eq!(last, 503, "a delivery that cannot be made durable gets 503");
    assert_eq!(
        post_delivery(&daemon.addr, "ev-full-again", &cal).await,
        503
    );
    let (code, body) = health(&daemon.addr).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("degraded"), "{body}");

    // Room again: the daemon recovers without a restart.
    match &tmpfs {
        Some(t) => std::fs::remove_file(t.0.join("filler")).unwrap(),
        None => limit_file_size(daemon.pid(), None),
    }
    let start = Instant::now();
    loop {
        if post_delivery(&daemon.addr, "ev-after-full", &cal).await == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "deliveries are taken again within 60 s of the disk having room"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    while health(&daemon.addr).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/healthz ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The worker syncs again.
    emu.create_event(
        &cal,
        crate::feishu::event("After the disk had room", 1_760_086_400),
    );
    assert_eq!(
        post_delivery(&daemon.addr, "ev-after-full-2", &cal).await,
        200
    );
    let start = Instant::now();
    while !std::fs::read_dir(&ics)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("After the disk had room"))
        })
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker syncs again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = daemon.terminate();
    assert!(status.success(), "exit code 0 on SIGTERM: {status}");
    drop(tmpfs);
    emu.shutdown().await;
}
