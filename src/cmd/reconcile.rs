//! `feishu-bridge reconcile`: one full pass over every configured calendar.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use bridge_core::EventKey;
use bridge_core::model::EventTime;
use bridge_core::plan::Op;
use bridge_engine::{CalendarReport, EngineError};

use crate::app;

/// Exit code when some items failed (or deletions were held back).
pub(crate) const EXIT_FAILED_ITEMS: u8 = 1;
/// Exit code when Feishu could not be read.
pub(crate) const EXIT_SOURCE_UNAVAILABLE: u8 = 3;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "feishu-bridge.toml")]
    pub(crate) config: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Only this source calendar.
    #[arg(long)]
    calendar: Option<String>,
    /// Apply deletions beyond the deletion budget.
    #[arg(long)]
    allow_mass_delete: bool,
}

/// A start as a person reads it: `2026-12-08 09:00 Asia/Shanghai`,
/// `2026-12-08` (all day), `2026-12-08 01:00 UTC`.
fn fmt_start(t: &EventTime) -> String {
    match t {
        EventTime::Date(d) => d.format("%Y-%m-%d").to_string(),
        EventTime::Utc(_) => format!("{} UTC", t.local().format("%Y-%m-%d %H:%M")),
        EventTime::Zoned { tz, .. } => format!("{} {tz}", t.local().format("%Y-%m-%d %H:%M")),
    }
}

/// `"Planning" (single, 2026-12-08 09:00 Asia/Shanghai)`, or the key alone
/// when the report does not know the event.
fn describe(r: &CalendarReport, key: &EventKey) -> String {
    match r.events.get(key) {
        Some(i) => format!(
            "{:?} ({}, {})",
            i.title,
            i.kind.as_str(),
            fmt_start(&i.start)
        ),
        None => String::new(),
    }
}

fn event_json(r: &CalendarReport, key: &EventKey) -> serde_json::Value {
    match r.events.get(key) {
        Some(i) => serde_json::json!({
            "event_id": key.to_string(),
            "title": i.title,
            "kind": i.kind.as_str(),
            "start": fmt_start(&i.start),
            "start_unix": i.start.instant(),
        }),
        None => serde_json::json!({ "event_id": key.to_string() }),
    }
}

fn op_json(r: &CalendarReport, op: &Op) -> serde_json::Value {
    let mut v = event_json(r, op.key());
    v["op"] = op.kind().into();
    v["reason"] = op.reason().into();
    v
}

/// Distinct events (a series counts once) among `keys`.
fn events_among<'a>(keys: impl Iterator<Item = &'a EventKey>) -> usize {
    keys.map(EventKey::uid)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn report_json(r: &CalendarReport) -> serde_json::Value {
    serde_json::json!({
        "calendar": r.calendar,
        "name": r.name,
        "full_listing": r.full,
        "cursor_expired": r.cursor_expired,
        "listed": r.listed,
        "items": r.items,
        "source_calls": r.source_calls,
        "blocked": r.blocked,
        "dry_run": r.dry_run,
        "sinks": r.sinks.iter().map(|s| serde_json::json!({
            "sink": s.sink,
            "created": s.created,
            "updated": s.updated,
            "deleted": s.deleted,
            "unchanged": s.unchanged,
            "failed": s.failed,
            "deferred": s.deferred,
            "errors": s.errors,
            "paused": s.paused,
            "orphans_deleted": s.orphans_deleted,
            "drift_rewrites": s.drift_rewrites,
            "tombstoned": s.tombstoned,
            "deleted_events": events_among(s.ops.iter().filter(|o| matches!(o, Op::Delete(_))).map(Op::key)),
            "plan": if r.dry_run { s.ops.iter().map(|o| op_json(r, o)).collect::<Vec<_>>() } else { Vec::new() },
            "held_back": s.held_back.iter().map(|k| event_json(r, k)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[allow(clippy::print_stdout)]
fn print_human(r: &CalendarReport) {
    println!(
        "calendar {} ({}): {} listing, {} items listed, {} in the mirror{}",
        r.name,
        r.calendar,
        if r.full { "full" } else { "delta" },
        r.listed,
        r.items,
        if r.cursor_expired {
            " (sync token had expired)"
        } else {
            ""
        }
    );
    for s in &r.sinks {
        let verb = if r.dry_run { "would be" } else { "" };
        let mut extra = String::new();
        if s.deferred > 0 {
            extra.push_str(&format!(", waiting to retry {}", s.deferred));
        }
        if s.orphans_deleted > 0 {
            extra.push_str(&format!(", orphans deleted {}", s.orphans_deleted));
        }
        if s.drift_rewrites > 0 {
            extra.push_str(&format!(
                ", rewritten after changes on the target {}",
                s.drift_rewrites
            ));
        }
        if s.tombstoned > 0 {
            extra.push_str(&format!(", left deleted on the target {}", s.tombstoned));
        }
        // Counts are items (a single event, a series, an occurrence); the
        // deletions also say how many events they are, as the budget counts.
        let deleted_events = events_among(
            s.ops
                .iter()
                .filter(|o| matches!(o, Op::Delete(_)))
                .map(Op::key),
        );
        let deleted = if deleted_events == s.deleted {
            s.deleted.to_string()
        } else {
            format!("{} ({deleted_events} events)", s.deleted)
        };
        println!(
            "  {}: {verb} created {}, updated {}, deleted {deleted}, unchanged {}, failed {}{extra}",
            s.sink, s.created, s.updated, s.unchanged, s.failed,
        );
        if let Some(p) = &s.paused {
            println!("    PAUSED: {p}");
        }
        if r.dry_run {
            // The planner's own decisions, with the rule behind each.
            for op in &s.ops {
                println!(
                    "    {:<6} {} {}: {}",
                    op.kind(),
                    describe(r, op.key()),
                    op.key(),
                    op.reason()
                );
            }
            if !s.held_back.is_empty() {
                println!(
                    "    held back by the deletion budget ({} items, {} events):",
                    s.held_back.len(),
                    events_among(s.held_back.iter())
                );
                for k in &s.held_back {
                    println!("    delete {} {k}", describe(r, k));
                }
            }
        }
        for e in s.errors.iter().take(20) {
            println!("    failed: {e}");
        }
    }
    if let Some(b) = &r.blocked {
        println!("  STOPPED: {b}");
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let app = match app::build(&loaded, args.allow_mass_delete).await {
        Ok(app) => app,
        Err(e) if app::is_locked(&e) => {
            return app::run_in_daemon(&loaded, &format!("{e:#}")).await;
        }
        Err(e) => return Err(e),
    };
    let now = app::unix_now();
    let calendars = match app.engine.source().calendars().await {
        Ok(c) => c,
        Err(e) => {
            crate::cmd::report_error(
                &anyhow::anyhow!("cannot list the Feishu calendars: {e}"),
                args.json,
            );
            return Ok(ExitCode::from(EXIT_SOURCE_UNAVAILABLE));
        }
    };
    let selected: Vec<_> = calendars
        .into_iter()
        .filter(|c| args.calendar.as_deref().is_none_or(|only| only == c.id))
        .collect();
    if let Some(only) = &args.calendar
        && selected.is_empty()
    {
        anyhow::bail!("calendar {only} is not among the configured calendars");
    }
    // No bar on the daemon's terminal for a client's reconcile.
    let bar = (std::io::stderr().is_terminal() && !args.json && app::daemon_store().is_none())
        .then(|| {
            let b = indicatif::ProgressBar::new(selected.len() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} calendars  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
    let mut reports = Vec::new();
    let mut source_failed = false;
    for cal in &selected {
        if let Some(b) = &bar {
            b.set_message(cal.name.clone());
        } else if !args.json {
            tracing::info!(calendar = %cal.id, "reconciling");
        }
        match app
            .engine
            .sync_calendar_with(
                cal,
                bridge_engine::Mode::Full,
                args.dry_run,
                now,
                args.allow_mass_delete,
            )
            .await
        {
            Ok(r) => reports.push(r),
            Err(e @ EngineError::Source { .. }) => {
                source_failed = true;
                // The report that follows says so in its JSON.
                crate::cmd::report_error(&anyhow::Error::new(e), false);
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let calls = app.client.stats().snapshot();
    let skipped = app.source.skipped();
    // A sink paused for authorization or quota writes nothing, even when a
    // pass had no operation for it to refuse.
    let mut paused: Vec<(String, String)> = Vec::new();
    for r in &reports {
        for s in &r.sinks {
            if let Some(p) = &s.paused
                && !paused.iter().any(|(id, _)| *id == s.sink)
            {
                paused.push((s.sink.clone(), p.clone()));
            }
        }
    }
    for h in &app.sinks {
        if let Some(p) = h.paused()
            && !paused.iter().any(|(id, _)| *id == h.id())
        {
            paused.push((h.id(), p));
        }
    }
    if args.json {
        let out = serde_json::json!({
            "dry_run": args.dry_run,
            "calendars": reports.iter().map(report_json).collect::<Vec<_>>(),
            "source_unavailable": source_failed,
            "skipped_calendars": skipped.iter().map(|s| serde_json::json!({
                "calendar": s.id, "name": s.name, "reason": s.reason
            })).collect::<Vec<_>>(),
            "paused_sinks": paused.iter().map(|(sink, reason)| serde_json::json!({
                "sink": sink, "reason": reason
            })).collect::<Vec<_>>(),
            "api_calls": calls.iter().map(|((endpoint, status), n)| serde_json::json!({
                "endpoint": endpoint, "status": status, "count": n
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for r in &reports {
            print_human(r);
        }
        for (sink, reason) in &paused {
            println!("sink {sink} is paused: {reason}");
        }
        for s in &skipped {
            println!(
                "calendar \"{}\"{} skipped: {}",
                s.id,
                s.name
                    .as_ref()
                    .map_or_else(String::new, |n| format!(" ({n})")),
                s.reason
            );
        }
        let total: u64 = calls.values().sum();
        println!("Feishu API calls: {total}");
        for ((endpoint, status), n) in &calls {
            println!("  {n:>6}  {status}  {endpoint}");
        }
        if args.dry_run {
            println!("dry run: nothing was changed");
        }
    }
    let failed = !paused.is_empty()
        || reports
            .iter()
            .any(|r| r.failed() > 0 || r.blocked.is_some());
    Ok(if source_failed {
        ExitCode::from(EXIT_SOURCE_UNAVAILABLE)
    } else if failed {
        ExitCode::from(EXIT_FAILED_ITEMS)
    } else {
        ExitCode::SUCCESS
    })
}
