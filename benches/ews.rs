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

#[path = "common/replica.rs"]
mod replica;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge_emulators::ews::{EwsConfig, EwsEmulator};

use replica::{EVENTS, Tenant, verdict};

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

fn prepare(t: &Tenant, e: &EwsEmulator, dir: &Path) -> PathBuf {
    let rest = format!(
        // Attendees are not read, as in the Google bench: Feishu lists them per
        // event at 1,000 calls a minute, which would be most of the wall time.
        "[sync]\nattendees = \"none\"\n\n\
         [[sinks]]\nkind = \"ews\"\nname = \"bench\"\nurl = \"{url}\"\nmailbox = \"{MAILBOX}\"\n\
         auth = \"basic\"\nusername = \"svc-bridge\"\npassword = \"correct horse\"\n\
         impersonation = true\nbatch_size = {BATCH}\n",
        url = e.ews_url(),
    );
    t.config(dir, &rest)
}

fn reconcile(e: &EwsEmulator, config: &Path) -> Run {
    e.reset_calls();
    let r = replica::reconcile(config, "ews");
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
        wall: r.wall,
        exit: r.exit,
        phases,
        writes: e.write_count(),
        created: r.n("created"),
        updated: r.n("updated"),
        deleted: r.n("deleted"),
        unchanged: r.n("unchanged"),
        failed: r.n("failed"),
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
    let t = Tenant::start("ews");
    let rt = &t.rt;
    let e = rt
        .block_on(EwsEmulator::start(EwsConfig {
            mailboxes: vec![MAILBOX.into()],
            ..EwsConfig::default()
        }))
        .expect("start the EWS emulator");
    let config = prepare(&t, &e, &t.root);
    let initial = reconcile(&e, &config);
    let noop = reconcile(&e, &config);
    println!("\nEWS sink, {EVENTS} sample events, release binary, batch_size {BATCH}");
    let (total, least) = print("initial mirror", &initial);
    println!(
        "batching: {total} requests against the least {least} (ceil per phase): {}",
        verdict(total == least && initial.exit == 0)
    );
    let (noop_total, _) = print("no-op rerun", &noop);
    let listing_only = noop.phases.iter().all(|p| p.operation == "FindItem");
    println!(
        "no-op rerun: {noop_total} request(s), {} writes (target: the drift listing only, 0 writes: {})",
        noop.writes,
        verdict(listing_only && noop.writes == 0 && noop.exit == 0)
    );
    rt.block_on(e.shutdown());
    t.finish();
}
