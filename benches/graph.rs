//! `cargo bench --bench graph`: what mirroring into Exchange Online through
//! Microsoft Graph costs.
//!
//! Starts the Feishu and Graph emulators in this process (the Feishu rate
//! limit and Graph's 10,000-per-10-minutes window off; Graph's per-mailbox
//! concurrency of 4 on, and every API request or batch part taking
//! `LATENCY`, so that the concurrency cap decides the wall time), bulk-loads
//! 5,000 deterministic sample events (`bridge_core::sample::events(5000, 42,
//! BASE)`) and runs the real binary (bench profile) with one Graph sink
//! (client secret, a calendar it creates):
//!
//! 1. the initial mirror into a fresh mailbox and a fresh store;
//! 2. a no-op rerun.
//!
//! Measured per run, from the Graph emulator's call log: HTTP requests
//! (everything that reached the server as its own request: `$batch`
//! envelopes, single calls, token requests), `$batch` requests and parts,
//! writes per phase (phase 1: singles and masters; phase 2: occurrence
//! lookups through `instances`, then occurrence PATCH / DELETE), listing
//! calls (tagged events, calendars, rounds of `calendarView/delta`), other
//! reads (a series master read for its occurrences), the peak of requests
//! in flight for the mailbox, 429s for the
//! concurrency cap, and the wall time of the child process. Targets: batch
//! requests == the sum over phases of ceil(requests of the phase / 20); the
//! no-op rerun makes no write and only listing (and token) calls.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/replica.rs"]
mod replica;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge_emulators::graph::{
    GraphConfig, GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_TENANT,
};

use replica::{EVENTS, Tenant, verdict};

const UPN: &str = "bench@contoso.example";
const BATCH_PARTS: usize = 20;
const LATENCY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Default)]
struct Run {
    wall: Duration,
    exit: i32,
    http_requests: usize,
    batch_requests: usize,
    batch_parts: usize,
    /// POST / PATCH / DELETE of singles and masters.
    series_writes: usize,
    /// `instances` lookups of occurrence ids.
    lookups: usize,
    /// PATCH / DELETE on occurrence ids.
    occurrence_writes: usize,
    listing_calls: usize,
    token_calls: usize,
    other_reads: usize,
    peak: usize,
    throttled: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    failed: u64,
}

fn prepare(t: &Tenant, g: &GraphEmulator, dir: &Path) -> PathBuf {
    let rest = format!(
        // Attendees are not read, as in the Google bench: Feishu lists them per
        // event at 1,000 calls a minute, which would be most of the wall time.
        "[sync]\nattendees = \"none\"\n\n\
         [[sinks]]\nkind = \"graph\"\nname = \"graph\"\ntenant_id = \"{TEST_TENANT}\"\n\
         client_id = \"{TEST_CLIENT_ID}\"\nclient_secret = \"{TEST_CLIENT_SECRET}\"\n\
         mailbox = \"{UPN}\"\ncalendar = \"Bench mirror\"\ncreate_calendar = true\n\
         base_url = \"{gbase}\"\ntoken_url = \"{token_url}\"\n",
        gbase = g.base_url(),
        token_url = g.token_url(),
    );
    t.config(dir, &rest)
}

/// A listing: tagged events, calendars, or a round of the change feed.
fn listing(path: &str) -> bool {
    path.ends_with("/events")
        || path.ends_with("/calendars")
        || path.ends_with("/calendarView/delta")
}

fn reconcile(g: &GraphEmulator, config: &Path) -> Run {
    g.reset_calls();
    let throttled_before = g.over_concurrency();
    let r = replica::reconcile(config, "graph");
    let calls = g.calls();
    let occurrence = |path: &str| {
        path.rsplit_once("/events/")
            .is_some_and(|(_, id)| id.starts_with("AAMkOCC"))
    };
    let writes: Vec<_> = calls
        .iter()
        .filter(|c| c.is_write() && !c.path.ends_with("/calendars"))
        .collect();
    Run {
        wall: r.wall,
        exit: r.exit,
        http_requests: calls.iter().filter(|c| !c.batch_part).count(),
        batch_requests: calls.iter().filter(|c| c.path.ends_with("/$batch")).count(),
        batch_parts: calls.iter().filter(|c| c.batch_part).count(),
        series_writes: writes.iter().filter(|c| !occurrence(&c.path)).count(),
        occurrence_writes: writes.iter().filter(|c| occurrence(&c.path)).count(),
        lookups: calls
            .iter()
            .filter(|c| c.path.ends_with("/instances"))
            .count(),
        listing_calls: calls
            .iter()
            .filter(|c| c.method == "GET" && listing(&c.path))
            .count(),
        token_calls: calls
            .iter()
            .filter(|c| c.path.ends_with("/oauth2/v2.0/token"))
            .count(),
        other_reads: calls
            .iter()
            .filter(|c| c.method == "GET" && !listing(&c.path) && !c.path.ends_with("/instances"))
            .count(),
        peak: g.peak_concurrency(),
        throttled: g.over_concurrency() - throttled_before,
        created: r.n("created"),
        updated: r.n("updated"),
        unchanged: r.n("unchanged"),
        failed: r.n("failed"),
    }
}

fn row(name: &str, r: &Run) {
    println!(
        "| {name:<16} | {:>4} | {:>8.2} s | {:>5} | {:>5} | {:>5} | {:>6} | {:>6} | {:>6} | {:>7} | {:>5} | {:>4} | {:>4} | {:>5}/{:<5} | {:>9} | {:>6} |",
        r.exit,
        r.wall.as_secs_f64(),
        r.http_requests,
        r.batch_requests,
        r.batch_parts,
        r.series_writes,
        r.lookups,
        r.occurrence_writes,
        r.listing_calls,
        r.token_calls,
        r.peak,
        r.throttled,
        r.created,
        r.updated,
        r.unchanged,
        r.failed,
    );
}

fn main() {
    let t = Tenant::start("graph");
    let rt = &t.rt;
    let g = rt
        .block_on(GraphEmulator::start_with(GraphConfig {
            rate_limit: None,
            latency: LATENCY,
            ..GraphConfig::default()
        }))
        .expect("start the Graph emulator");
    g.add_mailbox(UPN, MailboxAccess::Enabled);
    let config = prepare(&t, &g, &t.root.join("mirror"));
    let initial = reconcile(&g, &config);
    let noop = reconcile(&g, &config);

    println!();
    println!(
        "Graph sink, {EVENTS} sample events, release binary, {LATENCY:?} per Graph request or batch part, at most 4 in flight per mailbox"
    );
    println!(
        "| {:<16} | exit | {:>10} | {:>5} | {:>5} | {:>5} | {:>6} | {:>6} | {:>6} | {:>7} | {:>5} | {:>4} | {:>4} | {:>11} | {:>9} | {:>6} |",
        "run",
        "wall",
        "HTTP",
        "batch",
        "parts",
        "ph1 w",
        "lookup",
        "ph2 w",
        "listing",
        "token",
        "peak",
        "429",
        "created/upd",
        "unchanged",
        "failed"
    );
    row("initial mirror", &initial);
    row("no-op rerun", &noop);
    println!();
    let target = initial.series_writes.div_ceil(BATCH_PARTS)
        + initial.lookups.div_ceil(BATCH_PARTS)
        + initial.occurrence_writes.div_ceil(BATCH_PARTS);
    println!(
        "batching: {} $batch requests for {} phase-1 writes, {} lookups and {} phase-2 writes \
         (target ceil per phase = {} + {} + {} = {target}: {}); {} HTTP requests in all; wall {:.2} s; \
         peak {} in flight for the mailbox, {} answered 429 for the concurrency cap",
        initial.batch_requests,
        initial.series_writes,
        initial.lookups,
        initial.occurrence_writes,
        initial.series_writes.div_ceil(BATCH_PARTS),
        initial.lookups.div_ceil(BATCH_PARTS),
        initial.occurrence_writes.div_ceil(BATCH_PARTS),
        verdict(initial.batch_requests <= target && initial.exit == 0),
        initial.http_requests,
        initial.wall.as_secs_f64(),
        initial.peak,
        initial.throttled,
    );
    let noop_ok = noop.exit == 0
        && noop.series_writes + noop.occurrence_writes == 0
        && noop.batch_requests == 0
        && noop.lookups == 0
        && noop.other_reads == 0
        && noop.created + noop.updated == 0;
    println!(
        "no-op rerun: {} writes, {} $batch requests, {} listing call(s), {} token call(s), {} other read(s), wall {:.2} s \
         (target: 0 writes, listing only: {})",
        noop.series_writes + noop.occurrence_writes,
        noop.batch_requests,
        noop.listing_calls,
        noop.token_calls,
        noop.other_reads,
        noop.wall.as_secs_f64(),
        verdict(noop_ok),
    );
    rt.block_on(g.shutdown());
    t.finish();
}
