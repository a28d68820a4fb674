//! `feishu-bridge reconcile`: one full pass over every configured calendar.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

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
    config: PathBuf,
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

fn op_json(op: &Op) -> serde_json::Value {
    serde_json::json!({"op": op.kind(), "event_id": op.key().to_string(), "reason": op.reason()})
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
            "plan": if r.dry_run { s.ops.iter().map(op_json).collect::<Vec<_>>() } else { Vec::new() },
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
        println!(
            "  {}: {verb} created {}, updated {}, deleted {}, unchanged {}, failed {}{extra}",
            s.sink, s.created, s.updated, s.deleted, s.unchanged, s.failed,
        );
        if let Some(p) = &s.paused {
            println!("    PAUSED: {p}");
        }
        if r.dry_run {
            // The planner's own decisions, with the rule behind each.
            for op in &s.ops {
                println!("    {:<6} {}: {}", op.kind(), op.key(), op.reason());
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

/// How long `reconcile` waits for the daemon's full pass.
const DAEMON_RECONCILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The store is held by a running daemon: ask it to reconcile instead.
#[allow(clippy::print_stdout)]
async fn via_daemon(loaded: &crate::config::Loaded, args: &Args) -> anyhow::Result<ExitCode> {
    if args.dry_run || args.calendar.is_some() || args.allow_mass_delete {
        anyhow::bail!(
            "the store is in use by a running daemon; --dry-run, --calendar and \
             --allow-mass-delete need the store: stop the daemon first"
        );
    }
    let (url, request) = app::admin_request(
        loaded,
        reqwest::Method::POST,
        "/admin/reconcile",
        DAEMON_RECONCILE_TIMEOUT,
    )?;
    tracing::info!(%url, "the store is in use by the daemon; asking it to reconcile");
    let resp = request.send().await.map_err(|e| {
        if e.is_timeout() {
            anyhow::anyhow!(
                "the store is in use by a daemon, but its admin endpoint {url} did not answer \
                 within {} s; see the daemon's log",
                DAEMON_RECONCILE_TIMEOUT.as_secs()
            )
        } else {
            anyhow::anyhow!(
                "the store is in use (a daemon?) but its admin endpoint {url} does not answer: {e}"
            )
        }
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        crate::cmd::report_error(
            &anyhow::anyhow!(
                "the daemon cannot reconcile yet: {}",
                body["error"].as_str().unwrap_or("it is starting")
            ),
            args.json,
        );
        return Ok(ExitCode::from(EXIT_SOURCE_UNAVAILABLE));
    }
    if !status.is_success() {
        anyhow::bail!(
            "the daemon could not reconcile ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        println!("reconciled by the running daemon ({url}):");
        for c in body["calendars"].as_array().into_iter().flatten() {
            println!(
                "calendar {}: {} items",
                c["calendar"].as_str().unwrap_or("?"),
                c["items"]
            );
            for s in c["sinks"].as_array().into_iter().flatten() {
                println!(
                    "  {}: created {}, updated {}, deleted {}, unchanged {}, failed {}{}",
                    s["sink"].as_str().unwrap_or("?"),
                    s["created"],
                    s["updated"],
                    s["deleted"],
                    s["unchanged"],
                    s["failed"],
                    match s["deferred"].as_u64() {
                        Some(n) if n > 0 => format!(", waiting to retry {n}"),
                        _ => String::new(),
                    }
                );
                if let Some(p) = s["paused"].as_str() {
                    println!("    PAUSED: {p}");
                }
            }
        }
    }
    let failed = body["calendars"].as_array().into_iter().flatten().any(|c| {
        !c["blocked"].is_null()
            || c["sinks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["failed"].as_u64().unwrap_or(0) > 0 || !s["paused"].is_null())
    });
    Ok(if failed {
        ExitCode::from(EXIT_FAILED_ITEMS)
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let app = match app::build(&loaded, args.allow_mass_delete).await {
        Ok(app) => app,
        Err(e) if app::is_locked(&e) => return via_daemon(&loaded, &args).await,
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
    let bar = (std::io::stderr().is_terminal() && !args.json).then(|| {
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
            .sync_calendar(cal, bridge_engine::Mode::Full, args.dry_run, now)
            .await
        {
            Ok(r) => reports.push(r),
            Err(e @ EngineError::Source { .. }) => {
                source_failed = true;
                crate::cmd::report_error(&anyhow::Error::new(e), args.json);
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
