//! `cargo bench --bench reconcile`: what a `reconcile` costs.
//!
//! Starts the Feishu emulator in this process (rate limit off), bulk-loads
//! deterministic sample calendars, writes a config with one ICS sink into a
//! temporary directory and runs the real binary, built with the bench
//! profile (`CARGO_BIN_EXE_feishu-bridge`, which Cargo sets for benches as
//! for integration tests). Measured per run:
//!
//! - Feishu calls, from the emulator's call log: listing pages, token
//!   requests and the rest (the calendar lookup);
//! - writes: created / updated / deleted from the JSON report, and whether
//!   the ICS file's mtime changed;
//! - wall time of the child process;
//! - peak RSS of the child: `Maximum resident set size` of GNU
//!   `/usr/bin/time -v` when it exists, else `VmHWM` of `/proc/<pid>/status`
//!   polled every 2 ms until the child exits (the high-water mark itself is
//!   kept by the kernel, so polling only misses growth in the last 2 ms).
//!
//! The bridge's own client limits (50 calls/s, 1000/min, the config
//! defaults) stay on; the emulator's limiter is off. Attendees are not read
//! (`sync.attendees = "none"`): with them a first mirror makes one more
//! call per event, paced by the 1,000 calls/min limit (e2e `fidelity`
//! counts them), which would measure the limiter, not the bridge.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};

const BASE: i64 = 1_760_000_000;
const GNU_TIME: &str = "/usr/bin/time";

/// One measured `reconcile`.
#[derive(Debug, Clone)]
struct Run {
    wall: Duration,
    peak_rss_kib: Option<u64>,
    rss_method: &'static str,
    listing_calls: usize,
    token_calls: usize,
    other_calls: usize,
    created: u64,
    updated: u64,
    deleted: u64,
    unchanged: u64,
    ics_rewritten: bool,
    ics_bytes: u64,
}

fn gnu_time_available() -> bool {
    Command::new(GNU_TIME)
        .args(["-v", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ics_meta(dir: &Path) -> Option<std::fs::Metadata> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".ics"))?;
    entry.metadata().ok()
}

fn ics_mtime(dir: &Path) -> Option<SystemTime> {
    ics_meta(dir)?.modified().ok()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs the binary with `args`; returns stdout, stderr, wall time, peak RSS.
fn run_child(args: &[&str], gnu_time: bool) -> (Vec<u8>, String, Duration, Option<u64>) {
    let bin = env!("CARGO_BIN_EXE_feishu-bridge");
    if gnu_time {
        let started = Instant::now();
        // `RECONCILE_BENCH_WRAP="heaptrack -o /tmp/ht"` profiles the runs.
        let wrap = std::env::var("RECONCILE_BENCH_WRAP").unwrap_or_default();
        let mut cmd = Command::new(GNU_TIME);
        cmd.arg("-v")
            .args(wrap.split_whitespace())
            .arg(bin)
            .args(args);
        let out = cmd.output().expect("run /usr/bin/time");
        let wall = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let rss = stderr.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes):")
                .and_then(|v| v.trim().parse().ok())
        });
        return (out.stdout, stderr, wall, rss);
    }
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run feishu-bridge");
    let pid = child.id();
    // Drain the pipes on threads so that the child never blocks on them.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut s);
        s
    });
    let mut peak = None;
    loop {
        if let Some(hwm) = vm_hwm_kib(pid) {
            peak = Some(peak.map_or(hwm, |p: u64| p.max(hwm)));
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = started.elapsed();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    (stdout, stderr, wall, peak)
}

/// One `reconcile --json` of `config`, measured.
fn reconcile(emu: &FeishuEmulator, config: &Path, ics: &Path, gnu_time: bool) -> Run {
    emu.reset_calls();
    let mtime_before = ics_mtime(ics);
    let config = config.to_string_lossy().into_owned();
    let (stdout, stderr, wall, peak) =
        run_child(&["reconcile", "--json", "--config", &config], gnu_time);
    let report: serde_json::Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("reconcile printed no JSON ({e}):\n{stderr}"));
    let sink = &report["calendars"][0]["sinks"][0];
    let n = |k: &str| {
        sink[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in the report: {report}\n{stderr}"))
    };
    let calls = emu.calls();
    let listing_calls = calls.iter().filter(|c| c.path.ends_with("/events")).count();
    let token_calls = calls
        .iter()
        .filter(|c| c.path.contains("access_token"))
        .count();
    Run {
        wall,
        peak_rss_kib: peak,
        rss_method: if gnu_time {
            "/usr/bin/time -v"
        } else {
            "VmHWM polling"
        },
        listing_calls,
        token_calls,
        other_calls: calls.len() - listing_calls - token_calls,
        created: n("created"),
        updated: n("updated"),
        deleted: n("deleted"),
        unchanged: n("unchanged"),
        ics_rewritten: mtime_before.is_none() || ics_mtime(ics) != mtime_before,
        ics_bytes: ics_meta(ics).map_or(0, |m| m.len()),
    }
}

/// A calendar of `count` sample events and a config mirroring it to ICS.
fn prepare(emu: &FeishuEmulator, root: &Path, count: usize) -> (PathBuf, PathBuf) {
    let cal = emu.create_calendar(&format!("Bench {count}"));
    emu.bulk_load(&cal, bridge_core::sample::events(count, 42, BASE));
    let dir = root.join(format!("cal-{count}"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let ics = dir.join("ics");
    let c = emu.config();
    let text = format!(
        "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
         app_secret = \"{secret}\"\ncalendars = [\"{cal}\"]\ndelivery = \"poll\"\n\
         user_token_file = \"{tokens}\"\n\n[sync]\nattendees = \"none\"\n\n\
         [[sinks]]\nkind = \"ics\"\ndir = \"{ics}\"\n",
        store = dir.join("state/bridge.redb").display(),
        base = emu.base_url(),
        app = c.app_id,
        secret = c.app_secret,
        tokens = dir.join("state/feishu-user.json").display(),
        ics = ics.display(),
    );
    let config = dir.join("feishu-bridge.toml");
    std::fs::write(&config, text).expect("write config");
    (config, ics)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

fn row(name: &str, r: &Run) {
    let cud = format!("{}/{}/{}", r.created, r.updated, r.deleted);
    println!(
        "| {name:<32} | {:>7.2} s | {:>10} | {:>7} | {:>5} | {:>5} | {cud:>10} | {:>9} | {:>8.1} MB | {:>11} |",
        r.wall.as_secs_f64(),
        mib(r.peak_rss_kib),
        r.listing_calls,
        r.token_calls,
        r.other_calls,
        r.unchanged,
        r.ics_bytes as f64 / 1e6,
        if r.ics_rewritten { "yes" } else { "no" },
    );
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.wall);
    runs[runs.len() / 2].clone()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let emu = rt
        .block_on(FeishuEmulator::start(FeishuConfig {
            rate_limit: None,
            ..FeishuConfig::default()
        }))
        .expect("start the Feishu emulator");
    let root = std::env::temp_dir().join(format!("fb-bench-reconcile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let gnu_time = gnu_time_available();

    let (config10k, ics10k) = prepare(&emu, &root, 10_000);
    let initial10k = reconcile(&emu, &config10k, &ics10k, gnu_time);
    let noop10k = median(
        (0..5)
            .map(|_| reconcile(&emu, &config10k, &ics10k, gnu_time))
            .collect(),
    );

    let (config100k, ics100k) = prepare(&emu, &root, 100_000);
    let initial100k = reconcile(&emu, &config100k, &ics100k, gnu_time);
    let noop100k = reconcile(&emu, &config100k, &ics100k, gnu_time);

    println!();
    println!(
        "reconcile, release binary, ICS sink, peak RSS by {}",
        initial10k.rss_method
    );
    println!(
        "| {:<32} | {:>9} | {:>10} | {:>7} | {:>5} | {:>5} | {:>10} | {:>9} | {:>11} | {:>11} |",
        "run",
        "wall",
        "peak RSS",
        "listing",
        "token",
        "other",
        "c/u/d",
        "unchanged",
        "ICS size",
        "ICS written"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(34),
        "-".repeat(11),
        "-".repeat(12),
        "-".repeat(9),
        "-".repeat(7),
        "-".repeat(7),
        "-".repeat(12),
        "-".repeat(11),
        "-".repeat(13),
        "-".repeat(13)
    );
    row("10k events, first reconcile", &initial10k);
    row("10k events, no-op (median of 5)", &noop10k);
    row("100k events, first reconcile", &initial100k);
    row("100k events, no-op", &noop100k);
    println!();
    let pages = 10_000usize.div_ceil(1000);
    println!(
        "no-op 10k: {} listing calls (target {pages}), {} token call(s), {} other; writes {}/{}/{}; ICS file {}",
        noop10k.listing_calls,
        noop10k.token_calls,
        noop10k.other_calls,
        noop10k.created,
        noop10k.updated,
        noop10k.deleted,
        if noop10k.ics_rewritten {
            "REWRITTEN"
        } else {
            "untouched (mtime unchanged)"
        }
    );
    for (what, run) in [("first", &initial100k), ("no-op", &noop100k)] {
        let rss = run.peak_rss_kib.unwrap_or(0);
        println!(
            "full 100k ({what}): peak RSS {} = {:.0} MB (target < 300 MB: {})",
            mib(run.peak_rss_kib),
            rss as f64 * 1024.0 / 1e6,
            if rss > 0 && rss * 1024 < 300_000_000 {
                "met"
            } else {
                "NOT met"
            }
        );
    }

    rt.block_on(emu.shutdown());
    let _ = std::fs::remove_dir_all(&root);
}
