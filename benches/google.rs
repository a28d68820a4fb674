//! `cargo bench --bench google`: what mirroring into Google Calendar costs.
//!
//! Starts the Feishu and Google Calendar emulators in this process (both
//! rate limits off, the Google daily creation limit off), bulk-loads 5,000
//! deterministic sample events (`bridge_core::sample::events(5000, 42, BASE)`)
//! and runs the real binary (bench profile) with one Google sink
//! (service account with domain-wide delegation, client limiter off):
//!
//! 1. the initial mirror with `batch = true`, into a fresh Google emulator
//!    and a fresh store;
//! 2. the initial mirror with `batch = false`, likewise;
//! 3. a no-op rerun of the `batch = true` setup.
//!
//! Measured per run, from the Google emulator's call log: batch requests,
//! HTTP requests (everything that reached the server as its own request:
//! batch envelopes, single API calls, token requests), batch parts, Calendar
//! API writes (batch parts included) and listing calls; and the wall time of
//! the child process. Targets: with batching, batch requests ==
//! ceil(writes / 50); the no-op rerun makes no write and only listing (and
//! token) calls.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/replica.rs"]
mod replica;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge_emulators::google::{GoogleConfig, GoogleEmulator};

use replica::{EVENTS, Tenant, verdict};

const OWNER: &str = "owner@example.com";
const BATCH_PARTS: usize = 50;

/// One measured `reconcile`.
#[derive(Debug, Clone)]
struct Run {
    wall: Duration,
    exit: i32,
    batch_requests: usize,
    http_requests: usize,
    batch_parts: usize,
    writes: usize,
    /// Writes on instance ids (`<masterId>_<time>`: exceptions, written
    /// after their masters).
    instance_writes: usize,
    listing_calls: usize,
    token_calls: usize,
    other_reads: usize,
    created: u64,
    updated: u64,
    deleted: u64,
    unchanged: u64,
    failed: u64,
}

fn start_google(rt: &tokio::runtime::Runtime) -> GoogleEmulator {
    let g = rt
        .block_on(GoogleEmulator::start(GoogleConfig {
            rate_limit: None,
            daily_event_creations: None,
            ..GoogleConfig::default()
        }))
        .expect("start the Google emulator");
    g.add_user(OWNER);
    g
}

/// A directory with a config mirroring the sample calendar into a new
/// calendar of `g`.
fn prepare(t: &Tenant, g: &GoogleEmulator, dir: &Path, batch: bool) -> PathBuf {
    std::fs::create_dir_all(dir).expect("bench dir");
    let gcal = g.create_calendar(OWNER, "Bench mirror");
    let key = dir.join("google-key.json");
    std::fs::write(
        &key,
        serde_json::to_vec_pretty(&g.service_account_key_json()).expect("key json"),
    )
    .expect("write key");
    let rest = format!(
        "[sync]\nattendees = \"none\"\n\n\
         [[sinks]]\nkind = \"google\"\nname = \"google\"\nprivacy = \"full\"\n\
         calendar_id = \"{gcal}\"\nservice_account_key_file = \"{key}\"\nsubject = \"{OWNER}\"\n\
         token_url = \"{token_url}\"\nauth_url = \"{auth_url}\"\nbase_url = \"{gbase}\"\n\
         requests_per_second = 0.0\nbatch = {batch}\non_target_delete = \"restore\"\n",
        key = key.display(),
        token_url = g.token_url(),
        auth_url = g.auth_url(),
        gbase = g.base_url(),
    );
    t.config(dir, &rest)
}

fn reconcile(g: &GoogleEmulator, config: &Path) -> Run {
    g.reset_calls();
    let r = replica::reconcile(config, "google");
    let calls = g.calls();
    let batch_requests = calls
        .iter()
        .filter(|c| c.path.starts_with("/batch"))
        .count();
    let batch_parts = calls.iter().filter(|c| c.batch_part).count();
    let listing_calls = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path.ends_with("/events"))
        .count();
    let token_calls = calls.iter().filter(|c| c.path == "/token").count();
    let writes = g.write_count();
    let instance_writes = calls
        .iter()
        .filter(|c| c.write)
        .filter(|c| {
            c.path
                .rsplit_once("/events/")
                .is_some_and(|(_, id)| id.contains('_'))
        })
        .count();
    let other_reads = calls
        .iter()
        .filter(|c| !c.write && !c.path.starts_with("/batch") && c.path != "/token")
        .filter(|c| !(c.method == "GET" && c.path.ends_with("/events")))
        .count();
    Run {
        wall: r.wall,
        exit: r.exit,
        batch_requests,
        http_requests: calls.iter().filter(|c| !c.batch_part).count(),
        batch_parts,
        writes,
        instance_writes,
        listing_calls,
        token_calls,
        other_reads,
        created: r.n("created"),
        updated: r.n("updated"),
        deleted: r.n("deleted"),
        unchanged: r.n("unchanged"),
        failed: r.n("failed"),
    }
}

fn row(name: &str, r: &Run) {
    let cud = format!("{}/{}/{}", r.created, r.updated, r.deleted);
    println!(
        "| {name:<30} | {:>4} | {:>8.2} s | {:>6} | {:>6} | {:>6} | {:>6} | {:>7} | {:>5} | {:>5} | {cud:>12} | {:>9} | {:>6} |",
        r.exit,
        r.wall.as_secs_f64(),
        r.http_requests,
        r.batch_requests,
        r.batch_parts,
        r.writes,
        r.listing_calls,
        r.token_calls,
        r.other_reads,
        r.unchanged,
        r.failed,
    );
}

fn main() {
    let t = Tenant::start("google");
    let rt = &t.rt;
    let root = &t.root;
    let g_batch = start_google(rt);
    let config_batch = prepare(&t, &g_batch, &root.join("batch"), true);
    let batched = reconcile(&g_batch, &config_batch);
    let noop = reconcile(&g_batch, &config_batch);

    let g_single = start_google(rt);
    let config_single = prepare(&t, &g_single, &root.join("single"), false);
    let single = reconcile(&g_single, &config_single);

    println!();
    println!("Google sink, {EVENTS} sample events, release binary, emulator limits off");
    println!(
        "| {:<30} | {:>4} | {:>10} | {:>6} | {:>6} | {:>6} | {:>6} | {:>7} | {:>5} | {:>5} | {:>12} | {:>9} | {:>6} |",
        "run",
        "exit",
        "wall",
        "HTTP",
        "batch",
        "parts",
        "writes",
        "listing",
        "token",
        "other",
        "c/u/d",
        "unchanged",
        "failed"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(32),
        "-".repeat(6),
        "-".repeat(12),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(9),
        "-".repeat(7),
        "-".repeat(7),
        "-".repeat(14),
        "-".repeat(11),
        "-".repeat(8)
    );
    row("initial, batch = true", &batched);
    row("initial, batch = false", &single);
    row("no-op rerun (batch = true)", &noop);
    println!();
    let want = batched.writes.div_ceil(BATCH_PARTS);
    // Exceptions go in batches after their masters' batches, so the least
    // possible with that ordering is one round per phase.
    let series_writes = batched.writes - batched.instance_writes;
    let phased =
        series_writes.div_ceil(BATCH_PARTS) + batched.instance_writes.div_ceil(BATCH_PARTS);
    println!(
        "batching: {} batch requests for {} writes (target ceil({}/{BATCH_PARTS}) = {want}: {}; \
         {} writes of masters/singles then {} on instance ids: ceil per phase = {phased}: {}); \
         {} HTTP requests vs {} without batching ({:.1}x fewer); wall {:.2} s vs {:.2} s",
        batched.batch_requests,
        batched.writes,
        batched.writes,
        verdict(batched.batch_requests == want && batched.exit == 0),
        series_writes,
        batched.instance_writes,
        verdict(batched.batch_requests == phased && batched.exit == 0),
        batched.http_requests,
        single.http_requests,
        single.http_requests as f64 / batched.http_requests.max(1) as f64,
        batched.wall.as_secs_f64(),
        single.wall.as_secs_f64(),
    );
    println!(
        "batch = false: {} batch requests (target 0: {}), {} writes",
        single.batch_requests,
        verdict(single.batch_requests == 0 && single.exit == 0),
        single.writes,
    );
    let noop_ok = noop.exit == 0
        && noop.writes == 0
        && noop.batch_requests == 0
        && noop.other_reads == 0
        && noop.created + noop.updated + noop.deleted == 0;
    println!(
        "no-op rerun: {} writes, {} batch requests, {} listing call(s), {} token call(s), {} other call(s) \
         (target: 0 writes, listing only: {})",
        noop.writes,
        noop.batch_requests,
        noop.listing_calls,
        noop.token_calls,
        noop.other_reads,
        verdict(noop_ok),
    );

    rt.block_on(g_batch.shutdown());
    rt.block_on(g_single.shutdown());
    t.finish();
}
