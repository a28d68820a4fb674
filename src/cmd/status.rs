//! `feishu-bridge status`: what the store says about every calendar: last
//! sync and lag, the sync token and its age, the last full listing, the
//! snapshot, pending change hints and failing items per sink.
//!
//! Read-only: a missing store is reported, not created. While the daemon
//! holds the store, the store's "locked" message is shown (exit 2).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bridge_store::{Cursor, DirtyEntry, Failure, SinkItemKey, Store, StoreError, StoreStats};

use crate::app;
use crate::config::{Calendars, Loaded};

/// Failures with at least this many attempts are "stuck" (exit 1).
pub(crate) const STUCK_ATTEMPTS: u32 = 5;
/// Exit code when some items are stuck.
const EXIT_STUCK: u8 = 1;
/// How many failing items are listed per sink.
const SHOWN_ERRORS: usize = 5;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "feishu-bridge.toml")]
    pub(crate) config: PathBuf,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

// ----- helpers shared with `check` and `explain` -----

/// The store of a configuration, opened only if it exists.
#[derive(Debug)]
pub(crate) enum Opened {
    Store(Store),
    /// No file yet: nothing was ever synced.
    Missing,
    /// Another process (the daemon) holds it.
    Locked(StoreError),
}

/// Opens the store at `path` if the file exists (never creates one).
pub(crate) async fn open_existing(path: &Path) -> anyhow::Result<Opened> {
    if let Some(store) = app::daemon_store() {
        return Ok(Opened::Store(store));
    }
    if !path.exists() {
        return Ok(Opened::Missing);
    }
    match Store::open_refusing_empty(path).await {
        Ok(s) => Ok(Opened::Store(s)),
        Err(e @ StoreError::Locked { .. }) => Ok(Opened::Locked(e)),
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("cannot open the store {}", path.display())),
    }
}

/// `1 calendar`, `3 calendars`.
pub(crate) fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `2025-10-09 08:53:20 UTC`.
pub(crate) fn fmt_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(
        || format!("@{t}"),
        |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// A duration in seconds, coarsely: `45s`, `3m`, `2h 5m`, `3d 4h`.
pub(crate) fn fmt_span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h {m}m", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{}d", s / 86_400),
            h => format!("{}d {h}h", s / 86_400),
        },
    }
}

/// `3m ago`, `in 58s`, `just now`.
pub(crate) fn relative(now: i64, t: i64) -> String {
    match now - t {
        0 => "just now".to_owned(),
        d if d > 0 => format!("{} ago", fmt_span(d)),
        d => format!("in {}", fmt_span(d)),
    }
}

/// `2025-10-09 08:53:20 UTC (3m ago)`.
pub(crate) fn when(now: i64, t: i64) -> String {
    format!("{} ({})", fmt_time(t), relative(now, t))
}

/// A failure as JSON.
pub(crate) fn failure_json(now: i64, f: &Failure) -> serde_json::Value {
    serde_json::json!({
        "attempts": f.attempts,
        "next_retry_at": f.next_retry_at,
        "retry_in_seconds": (f.next_retry_at - now).max(0),
        "first_failed_at": f.first_failed_at,
        "last_error": f.last_error,
        "stuck": f.attempts >= STUCK_ATTEMPTS,
    })
}

// ----- gathering -----

#[derive(Debug, Default)]
struct SinkStatus {
    /// Live records (tombstones left out).
    records: usize,
    /// Failing items, soonest retry first.
    failures: Vec<(String, Failure)>,
}

#[derive(Debug, Default)]
struct CalendarStatus {
    id: String,
    configured: bool,
    cursor: Option<Cursor>,
    snapshots: u64,
    dirty: Option<DirtyEntry>,
    sinks: BTreeMap<String, SinkStatus>,
}

impl CalendarStatus {
    fn stuck(&self) -> usize {
        self.sinks
            .values()
            .flat_map(|s| &s.failures)
            .filter(|(_, f)| f.attempts >= STUCK_ATTEMPTS)
            .count()
    }
}

#[derive(Debug)]
struct Status {
    path: PathBuf,
    stats: StoreStats,
    calendars: Vec<CalendarStatus>,
    /// The configuration says "primary" / "all" (resolved only by Feishu).
    selection: Option<&'static str>,
    /// The configured sinks: id, kind, where they write.
    targets: Vec<(String, &'static str, String)>,
}

async fn gather(loaded: &Loaded, store: &Store) -> anyhow::Result<Status> {
    let stats = store.stats().await?;
    let cursors: BTreeMap<String, Cursor> = store.list_cursors().await?.into_iter().collect();
    let dirty: BTreeMap<String, DirtyEntry> = store
        .dirty()
        .await?
        .into_iter()
        .map(|d| (d.calendar_id.clone(), d))
        .collect();
    let failures: Vec<(SinkItemKey, Failure)> = store.due_failures(i64::MAX).await?;
    let (configured, selection): (BTreeSet<String>, _) = match &loaded.config.feishu.calendars {
        Calendars::List(ids) => (ids.iter().cloned().collect(), None),
        Calendars::Primary => (BTreeSet::new(), Some("primary")),
        Calendars::All => (BTreeSet::new(), Some("all")),
    };
    let sink_ids: Vec<String> = app::sinks(loaded)
        .iter()
        .map(|s| s.id().to_owned())
        .collect();

    let mut ids: BTreeSet<String> = configured.clone();
    ids.extend(cursors.keys().cloned());
    ids.extend(dirty.keys().cloned());
    ids.extend(failures.iter().map(|(k, _)| k.calendar_id.clone()));

    let mut calendars = Vec::new();
    for id in ids {
        let mut cal = CalendarStatus {
            configured: configured.contains(&id),
            cursor: cursors.get(&id).cloned(),
            snapshots: store.count_snapshots(&id).await?,
            dirty: dirty.get(&id).cloned(),
            ..CalendarStatus::default()
        };
        for sink in &sink_ids {
            let records = store.list_records(sink, &id).await?;
            cal.sinks.entry(sink.clone()).or_default().records =
                records.iter().filter(|(_, r)| !r.tombstone).count();
        }
        for (key, f) in failures.iter().filter(|(k, _)| k.calendar_id == id) {
            cal.sinks
                .entry(key.sink_id.clone())
                .or_default()
                .failures
                .push((key.event_key.clone(), f.clone()));
        }
        cal.id = id;
        calendars.push(cal);
    }
    Ok(Status {
        path: store.path().to_owned(),
        stats,
        calendars,
        selection,
        targets: loaded
            .sinks
            .iter()
            .map(|c| (c.target.id(), c.target.kind(), c.target.describe()))
            .collect(),
    })
}

// ----- output -----

fn status_json(now: i64, s: &Status) -> serde_json::Value {
    let calendars: Vec<serde_json::Value> = s
        .calendars
        .iter()
        .map(|c| {
            let cursor = c.cursor.as_ref();
            let last_sync = cursor.and_then(|c| c.last_sync);
            serde_json::json!({
                "calendar": c.id,
                "configured": c.configured,
                "last_sync": last_sync,
                "lag_seconds": last_sync.map(|t| now - t),
                "last_full_sync": cursor.and_then(|c| c.last_full_sync),
                "cursor": cursor.map(|c| serde_json::json!({
                    "has_sync_token": c.sync_token.is_some(),
                    "obtained_at": c.obtained_at,
                    "age_seconds": now - c.obtained_at,
                })),
                "snapshots": c.snapshots,
                "pending": c.dirty.as_ref().map(|d| serde_json::json!({
                    "since": d.since,
                    "waiting_seconds": now - d.since,
                    "last_hint_at": d.last_hint_at,
                    "hints": d.hints,
                    "reason": d.reason,
                })),
                "sinks": c.sinks.iter().map(|(id, st)| serde_json::json!({
                    "sink": id,
                    "records": st.records,
                    "failures": st.failures.len(),
                    "stuck": st.failures.iter().filter(|(_, f)| f.attempts >= STUCK_ATTEMPTS).count(),
                    "next_retry_at": st.failures.iter().map(|(_, f)| f.next_retry_at).min(),
                    "errors": st.failures.iter().take(SHOWN_ERRORS).map(|(k, f)| {
                        let mut v = failure_json(now, f);
                        v["event_id"] = serde_json::Value::from(k.as_str());
                        v
                    }).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "stuck": c.stuck(),
            })
        })
        .collect();
    serde_json::json!({
        "now": now,
        "store": {
            "path": s.path.display().to_string(),
            "exists": true,
            "schema_version": s.stats.schema_version,
            "cursors": s.stats.cursors,
            "snapshots": s.stats.snapshots,
            "records": s.stats.records,
            "dirty": s.stats.dirty,
            "failures": s.stats.failures,
        },
        "calendars_setting": s.selection,
        "sinks": s.targets.iter().map(|(id, kind, target)| serde_json::json!({
            "sink": id, "kind": kind, "target": target,
        })).collect::<Vec<_>>(),
        "calendars": calendars,
        "stuck": s.calendars.iter().map(CalendarStatus::stuck).sum::<usize>(),
    })
}

#[allow(clippy::print_stdout)]
fn print_human(now: i64, s: &Status) {
    let st = &s.stats;
    println!(
        "store {} (schema {}): {}, {}, {}, {} pending, {}",
        s.path.display(),
        st.schema_version,
        count(st.cursors, "calendar"),
        count(st.snapshots, "snapshot"),
        count(st.records, "record"),
        st.dirty,
        count(st.failures, "failing item"),
    );
    for (id, _, target) in &s.targets {
        println!("sink {id}: {target}");
    }
    if s.calendars.is_empty() {
        println!("no calendar has been synced yet: run `feishu-bridge reconcile`");
    }
    for c in &s.calendars {
        println!();
        println!(
            "calendar {}{}",
            c.id,
            if c.configured || s.selection.is_some() {
                ""
            } else {
                " (no longer configured)"
            }
        );
        match &c.cursor {
            None => println!("  last sync:     never"),
            Some(cur) => {
                match cur.last_sync {
                    Some(t) => println!(
                        "  last sync:     {} (lag {})",
                        fmt_time(t),
                        fmt_span(now - t)
                    ),
                    None => println!("  last sync:     never"),
                }
                match cur.last_full_sync {
                    Some(t) => println!("  full listing:  {}", when(now, t)),
                    None => println!("  full listing:  never (only deltas so far)"),
                }
                println!(
                    "  cursor:        {}, obtained {} (age {})",
                    if cur.sync_token.is_some() {
                        "sync token held"
                    } else {
                        "no sync token (the next sync lists in full)"
                    },
                    fmt_time(cur.obtained_at),
                    fmt_span(now - cur.obtained_at)
                );
            }
        }
        println!("  snapshot:      {}", count(c.snapshots, "item"));
        match &c.dirty {
            None => println!("  pending:       none"),
            Some(d) => println!(
                "  pending:       {} hint{} since {}, last: {:?}",
                d.hints,
                if d.hints == 1 { "" } else { "s" },
                when(now, d.since),
                d.reason
            ),
        }
        for (sink, ss) in &c.sinks {
            if ss.failures.is_empty() {
                println!("  sink {sink}: {} written, no failures", ss.records);
                continue;
            }
            let soonest = ss.failures.iter().map(|(_, f)| f.next_retry_at).min();
            let stuck = ss
                .failures
                .iter()
                .filter(|(_, f)| f.attempts >= STUCK_ATTEMPTS)
                .count();
            println!(
                "  sink {sink}: {} written, {} failing{}, next retry {}",
                ss.records,
                ss.failures.len(),
                if stuck > 0 {
                    format!(" ({stuck} STUCK after {STUCK_ATTEMPTS}+ attempts)")
                } else {
                    String::new()
                },
                soonest.map_or_else(|| "-".to_owned(), |t| when(now, t))
            );
            for (key, f) in ss.failures.iter().take(SHOWN_ERRORS) {
                println!(
                    "    {key}: {} attempt{}, retry {}: {}",
                    f.attempts,
                    if f.attempts == 1 { "" } else { "s" },
                    relative(now, f.next_retry_at),
                    f.last_error
                );
            }
            if ss.failures.len() > SHOWN_ERRORS {
                println!("    ... and {} more", ss.failures.len() - SHOWN_ERRORS);
            }
        }
    }
    if let Some(sel) = s.selection {
        println!();
        println!(
            "calendars = \"{sel}\": listed are the calendars the store has synced; \
             `feishu-bridge check` asks Feishu which ones are configured now"
        );
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let now = app::unix_now();
    let path = loaded.config.store.path.clone();
    let store = match open_existing(&path).await? {
        Opened::Store(s) => s,
        Opened::Locked(e) => {
            tracing::debug!("{e}; asking the daemon");
            return app::run_in_daemon(&loaded, &e).await;
        }
        Opened::Missing => {
            if args.json {
                let out = serde_json::json!({
                    "now": now,
                    "store": {"path": path.display().to_string(), "exists": false},
                    "calendars": [],
                    "stuck": 0,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "store {}: does not exist yet; nothing has been synced (run `feishu-bridge reconcile`)",
                    path.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let status = gather(&loaded, &store).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(now, &status))?
        );
    } else {
        print_human(now, &status);
    }
    let stuck: usize = status.calendars.iter().map(CalendarStatus::stuck).sum();
    Ok(if stuck > 0 {
        ExitCode::from(EXIT_STUCK)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_coarse_and_readable() {
        assert_eq!(fmt_span(0), "0s");
        assert_eq!(fmt_span(45), "45s");
        assert_eq!(fmt_span(180), "3m");
        assert_eq!(fmt_span(7200), "2h");
        assert_eq!(fmt_span(7500), "2h 5m");
        assert_eq!(fmt_span(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
        assert_eq!(relative(100, 100), "just now");
        assert_eq!(relative(280, 100), "3m ago");
        assert_eq!(relative(100, 158), "in 58s");
        assert_eq!(fmt_time(1_760_000_000), "2025-10-09 08:53:20 UTC");
    }
}
