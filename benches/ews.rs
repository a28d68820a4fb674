//! `cargo bench --bench ews`: what mirroring into Exchange over EWS costs.
//!
//! Starts the Feishu and EWS emulators in this process, bulk-loads 5,000
//! deterministic sample events (`bridge_core::sample::events(5000, 42,
//! BASE)`) and runs the real binary (bench profile) with one EWS sink
//! (Basic auth with impersonation, `batch_size = 50`):
//!
//! 1. the initial mirror into a fresh mailbox and a fresh store;
//! 2. a no-op rerun.
//!
//! Measured from the EWS emulator's call log: the requests of each phase
//! (a run of consecutive requests of one operation: the adoption lookup,
//! deletes, creates, updates, occurrence updates and deletes, the masters'
//! ChangeKeys read back) against the least possible, ceil(items / 50) per
//! phase; and the wall time of the child process. Target of the rerun: the
//! drift listing only, zero writes.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bridge_emulators::ews::{EwsConfig, EwsEmulator};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};

const BASE: i64 = 1_760_000_000;
const EVENTS: usize = 5000;
const BATCH: usize = 50;
const MAILBOX: &str = "alice@example.com";

struct Phase {
    operation: String,
    requests: usize,
    items: usize,
}

struct Run {
    wall: Duration,
    exit: i32,
    phases: Vec<Phase>,
    writes: usize,
    created: u64,
    updated: u64,
    deleted: u64,
    unchanged: u64,
    failed: u64,
}

fn prepare(f: &FeishuEmulator, fcal: &str, e: &EwsEmulator, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("bench dir");
    let c = f.config();
    let text = format!(
        "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
         app_secret = \"{secret}\"\ncalendars = [\"{fcal}\"]\ndelivery = \"poll\"\n\
         user_token_file = \"{tokens}\"\n\n\
         [[sinks]]\nkind = \"ews\"\nname = \"bench\"\nurl = \"{url}\"\nmailbox = \"{MAILBOX}\"\n\
         auth = \"basic\"\nusername = \"svc-bridge\"\npassword = \"correct horse\"\n\
         impersonation = true\nbatch_size = {BATCH}\n",
        store = dir.join("state/bridge.redb").display(),
        base = f.base_url(),
        app = c.app_id,
        secret = c.app_secret,
        tokens = dir.join("state/feishu-user.json").display(),
        url = e.ews_url(),
    );
    let config = dir.join("feishu-bridge.toml");
    std::fs::write(&config, text).expect("write config");
    config
}

fn reconcile(e: &EwsEmulator, config: &Path) -> Run {
    e.reset_calls();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_feishu-bridge"))
        .args(["reconcile", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run feishu-bridge");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("reconcile printed no JSON ({err}):\n{stderr}"));
    let sink = report["calendars"][0]["sinks"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["sink"].as_str().is_some_and(|n| n.starts_with("ews")))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no ews sink in the report: {report}\n{stderr}"));
    let n = |k: &str| {
        sink[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k}: {report}"))
    };
    let mut phases: Vec<Phase> = Vec::new();
    for c in e.calls().iter().filter(|c| c.path.contains("/EWS/")) {
        let op = c
            .operation
            .clone()
            .unwrap_or_else(|| format!("HTTP {}", c.status));
        match phases.last_mut() {
            Some(p) if p.operation == op => {
                p.requests += 1;
                p.items += c.codes.len();
            }
            _ => phases.push(Phase {
                operation: op,
                requests: 1,
                items: c.codes.len(),
            }),
        }
    }
    Run {
        wall,
        exit: out.status.code().unwrap_or(-1),
        phases,
        writes: e.write_count(),
        created: n("created"),
        updated: n("updated"),
        deleted: n("deleted"),
        unchanged: n("unchanged"),
        failed: n("failed"),
    }
}

fn print(name: &str, r: &Run) -> (usize, usize) {
    println!(
        "\n{name}: exit {}, wall {:.2} s, created/updated/deleted {}/{}/{}, unchanged {}, failed {}, {} items written",
        r.exit,
        r.wall.as_secs_f64(),
        r.created,
        r.updated,
        r.deleted,
        r.unchanged,
        r.failed,
        r.writes
    );
    println!("| phase | operation | requests | items | least (ceil(items/{BATCH})) |");
    println!("|---|---|---|---|---|");
    let (mut total, mut least) = (0, 0);
    for (i, p) in r.phases.iter().enumerate() {
        // A listing's pages are not batches: its least is what it made.
        let min = if p.operation == "FindItem" {
            p.requests
        } else {
            p.items.div_ceil(BATCH)
        };
        total += p.requests;
        least += min;
        println!(
            "| {} | {} | {} | {} | {} |",
            i + 1,
            p.operation,
            p.requests,
            p.items,
            min
        );
    }
    println!("| all | | {total} | | {least} |");
    (total, least)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let f = rt
        .block_on(FeishuEmulator::start(FeishuConfig {
            rate_limit: None,
            ..FeishuConfig::default()
        }))
        .expect("start the Feishu emulator");
    let fcal = f.create_calendar("Bench 5k");
    f.bulk_load(&fcal, bridge_core::sample::events(EVENTS, 42, BASE));
    let root = std::env::temp_dir().join(format!("fb-bench-ews-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let e = rt
        .block_on(EwsEmulator::start(EwsConfig {
            mailboxes: vec![MAILBOX.into()],
            ..EwsConfig::default()
        }))
        .expect("start the EWS emulator");
    let config = prepare(&f, &fcal, &e, &root);
    let initial = reconcile(&e, &config);
    let noop = reconcile(&e, &config);
    println!("\nEWS sink, {EVENTS} sample events, release binary, batch_size {BATCH}");
    let (total, least) = print("initial mirror", &initial);
    println!(
        "batching: {total} requests against the least {least} (ceil per phase): {}",
        if total == least && initial.exit == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    let (noop_total, _) = print("no-op rerun", &noop);
    let listing_only = noop.phases.iter().all(|p| p.operation == "FindItem");
    println!(
        "no-op rerun: {noop_total} request(s), {} writes (target: the drift listing only, 0 writes: {})",
        noop.writes,
        if listing_only && noop.writes == 0 && noop.exit == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    rt.block_on(f.shutdown());
    rt.block_on(e.shutdown());
    let _ = std::fs::remove_dir_all(&root);
}
