//! `feishu-bridge explain <event_id>`: everything about one event: the
//! Feishu event as last seen, its iCalendar mapping (with its master, so an
//! exception shows its RECURRENCE-ID) and warnings, its content hash, and per
//! sink what was written, whether it is in sync, any failure, and what the
//! engine decides for it and why.
//!
//! The store is searched first (every configured or synced calendar, or
//! `--calendar`). An event the store does not know is fetched from Feishu
//! (unless `--offline`) and shown as never mirrored.
//!
//! Exit 0 when the event was found, 1 when not, 2 for a malformed id.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use bridge_core::feishu::{Event, EventStatus};
use bridge_core::plan::{Decision, Op};
use bridge_core::{
    EventKey, Item, Privacy, RenderOptions, Revision, content_hash, map_event, render_event,
};
use bridge_engine::{EngineConfig, RemoteRef, SinkExplanation, Verdict};
use bridge_feishu::FeishuError;
use bridge_feishu::client::{FeishuClient, Identity};
use bridge_store::{Failure, Record, SinkItemKey, Snapshot, Store};

use crate::app;
use crate::cmd::status::{
    Opened, STUCK_ATTEMPTS, failure_json, fmt_time, open_existing, relative, when,
};
use crate::config::{Calendars, Loaded};

/// Exit code when the event is unknown.
const EXIT_NOT_FOUND: u8 = 1;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The event: its Feishu id `<uid>_<original_time>`, its plain UID (as a calendar app
    /// shows it), or words of its title (several matches are listed); or a room booking,
    /// `<room_id>/<uid>/<original_time>` (as `rooms explain`).
    event_id: String,
    #[arg(long, default_value = "feishu-bridge.toml")]
    pub(crate) config: PathBuf,
    /// Only look in this source calendar.
    #[arg(long)]
    calendar: Option<String>,
    /// Print the explanation as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Do not ask Feishu when the store does not know the event.
    #[arg(long)]
    offline: bool,
}

// ----- mapping -----

/// The iCalendar side of one event.
#[derive(Debug, Default)]
struct Mapping {
    /// `event`, `exception`, `cancelled occurrence`, `deleted`, `unmappable`.
    kind: &'static str,
    /// The VEVENT(s) that show this event, folded as written.
    ics: String,
    /// What the mapping or the rendering could not represent exactly.
    warnings: Vec<String>,
    /// `v1:<hex>`; `None` when the event cannot be mapped.
    hash: Option<String>,
    /// A sentence on how it appears in a calendar.
    note: String,
    item: Option<Item>,
}

/// Maps `ev` and renders it with `companions` (its master, or a master's
/// cancelled occurrences), as the ICS sink would, and picks the VEVENT that
/// shows it.
fn mapping(
    key: &EventKey,
    ev: &Event,
    companions: &[Event],
    revisions: HashMap<EventKey, Revision>,
    dtstamp: i64,
) -> Mapping {
    let id = key.to_string();
    let mut warnings = Vec::new();
    let item = match map_event(ev, &mut warnings) {
        Ok(item) => item,
        Err(e) => {
            return Mapping {
                kind: "unmappable",
                warnings: warnings.iter().map(ToString::to_string).collect(),
                note: format!(
                    "cannot be mapped: {}; the engine keeps what it had and writes nothing new",
                    e.reason
                ),
                ..Mapping::default()
            };
        }
    };
    let hash = content_hash(&item).to_string();
    let mut items = vec![item.clone()];
    let mut ignored = Vec::new();
    for c in companions {
        if let Ok(i) = map_event(c, &mut ignored)
            && i.key() != key
            && i.key().uid() == key.uid()
        {
            items.push(i);
        }
    }
    let recurring_master = items
        .iter()
        .any(|i| i.key().is_base() && matches!(i, Item::Event(e) if e.rrule.is_some()));
    let opts = RenderOptions {
        name: "explain".to_owned(),
        privacy: Privacy::Full,
        dtstamp,
        refresh_minutes: None,
        timezone: None,
        revisions,
    };
    // The VEVENT(s) showing this event, as the ICS sink renders them.
    let (shown, render_warnings) = render_event(&items, key, &opts);
    warnings.extend(render_warnings);
    let shown = shown.replace("\r\n", "\n");
    let (kind, ics, note) = match (&item, key.is_base()) {
        (Item::Event(e), true) => (
            "event",
            shown,
            if e.rrule.is_some() {
                "a recurring series: one VEVENT with RRULE (cancelled occurrences as EXDATE)"
                    .to_owned()
            } else {
                "a single event: one VEVENT".to_owned()
            },
        ),
        (Item::Event(_), false) if recurring_master => (
            "exception",
            shown,
            format!(
                "a modified occurrence of series {}: a VEVENT with the series UID and RECURRENCE-ID",
                key.master()
            ),
        ),
        (Item::Event(_), false) => (
            "exception",
            shown,
            format!(
                "a modified occurrence whose master {} is not in the store: a standalone VEVENT with UID {id}",
                key.master()
            ),
        ),
        (Item::Cancelled(_), false) if recurring_master => (
            "cancelled occurrence",
            shown,
            format!(
                "a cancelled occurrence: an EXDATE on the master {} (shown)",
                key.master()
            ),
        ),
        (Item::Cancelled(_), false) => (
            "cancelled occurrence",
            String::new(),
            "a cancelled occurrence whose master is not in the store: produces nothing".to_owned(),
        ),
        (Item::Cancelled(_), true) => (
            "deleted",
            String::new(),
            "deleted in Feishu: produces nothing".to_owned(),
        ),
    };
    Mapping {
        kind,
        ics,
        warnings: warnings.iter().map(ToString::to_string).collect(),
        hash: Some(hash),
        note,
        item: Some(item),
    }
}

/// Whether the engine would write this item now (`None`: no window).
fn in_window(cfg: &EngineConfig, now: i64, item: &Item) -> Option<bool> {
    cfg.window
        .map(|w| bridge_engine::in_window(Some(w), now, item))
}

// ----- per sink -----

fn left_out(why: &str, record: Option<&Record>) -> String {
    match record.filter(|r| !r.tombstone) {
        Some(_) => format!(
            "left out by the filter {why}: removed from this sink on the next pass (within the deletion budget)"
        ),
        None => format!("not written: left out by the filter {why}"),
    }
}

#[derive(Debug)]
struct SinkView {
    sink: String,
    record: Option<Record>,
    failure: Option<Failure>,
    in_sync: Option<bool>,
    decision: String,
    /// Where the event lives on the target, from its module.
    target: Vec<String>,
}

/// The engine's verdict for one sink, in words. `index` is the sink's
/// place in the configuration (a filter is named by its key path).
fn decision(now: i64, key: &EventKey, s: &SinkExplanation, index: Option<usize>) -> String {
    let record = s.record.as_ref();
    let live_record = record.filter(|r| !r.tombstone);
    let planned = match &s.verdict {
        Verdict::Unmappable => return "cannot be mapped; the sink keeps what it has".to_owned(),
        Verdict::LeftOut(filter) => {
            let why = match index {
                Some(i) => format!("sinks[{i}].filter.{filter}"),
                None => format!("filter.{filter}"),
            };
            return left_out(&why, record);
        }
        Verdict::HeldBack(message) => {
            return format!(
                "deleted in Feishu (or no longer listed); the deletion budget holds its removal back: {message}"
            );
        }
        Verdict::Planned { decision, .. } => *decision,
    };
    if let Some(f) = &s.failure {
        let what = match s.verdict.op(key) {
            Some(Op::Create(_)) => "writing it",
            Some(Op::Update(_)) => "updating it",
            Some(Op::Delete(_)) => "removing it (deleted in Feishu)",
            None if live_record.is_some() => "updating it",
            None => "writing it",
        };
        let times = format!(
            "{} time{}",
            f.attempts,
            if f.attempts == 1 { "" } else { "s" }
        );
        let stuck = if f.attempts >= STUCK_ATTEMPTS {
            " (stuck: look at the error)"
        } else {
            ""
        };
        return if f.next_retry_at > now {
            format!(
                "{what} failed {times}{stuck}; waiting to retry at {}",
                when(now, f.next_retry_at)
            )
        } else {
            format!(
                "{what} failed {times}{stuck}; the retry time has come: the next pass tries again"
            )
        };
    }
    match planned {
        Decision::Create => {
            "will be written on the next pass (not written yet: new since the last pass, or the pass was a dry run)"
                .to_owned()
        }
        Decision::Update => {
            "will be updated on the next pass (source changed since it was written)".to_owned()
        }
        Decision::Delete if live_record.is_some() => {
            "deleted in Feishu (or no longer listed); removed from the sink on the next full pass"
                .to_owned()
        }
        Decision::Delete => "deleted in Feishu; removed from the sink".to_owned(),
        Decision::Unchanged if record.is_some_and(|r| r.tombstone) => {
            "deleted on the target and left deleted (on_target_delete = \"respect\")".to_owned()
        }
        Decision::Unchanged => "up to date".to_owned(),
        Decision::OutsideWindow if live_record.is_some() => {
            "outside the sync window: the written version is left as it is".to_owned()
        }
        Decision::OutsideWindow => "not written: outside the sync window".to_owned(),
        Decision::Absent => "not in the source and not on this sink: nothing to do".to_owned(),
    }
}

fn record_json(r: &Record) -> serde_json::Value {
    serde_json::json!({
        "remote_id": r.remote_id,
        "etag": r.etag,
        "applied_hash": r.applied_hash,
        "applied_at": r.applied_at,
        "sequence": r.sequence,
        "tombstone": r.tombstone,
    })
}

// ----- what was found -----

#[derive(Debug)]
struct Found {
    calendar: String,
    /// The stored snapshot; `None` for an event fetched live or only recorded.
    snapshot: Option<Snapshot>,
    /// The Feishu event (from the snapshot or fetched live).
    source: Option<serde_json::Value>,
    mapping: Option<Mapping>,
    window: Option<bool>,
    sinks: Vec<SinkView>,
    /// The overall verdict when no sink says more.
    summary: String,
}

fn parse_event(json: &str) -> Option<Event> {
    serde_json::from_str(json).ok()
}

async fn search_store(
    loaded: &Loaded,
    store: &Store,
    key: &EventKey,
    only: Option<&str>,
    now: i64,
) -> anyhow::Result<Vec<Found>> {
    let id = key.to_string();
    let failures: Vec<(SinkItemKey, Failure)> = store
        .due_failures(i64::MAX)
        .await?
        .into_iter()
        .filter(|(k, _)| k.event_key == id)
        .collect();
    let mut calendars: BTreeSet<String> = BTreeSet::new();
    match only {
        Some(c) => {
            calendars.insert(c.to_owned());
        }
        None => {
            if let Calendars::List(ids) = &loaded.config.feishu.calendars {
                calendars.extend(ids.iter().cloned());
            }
            calendars.extend(store.list_cursors().await?.into_iter().map(|(c, _)| c));
            calendars.extend(failures.iter().map(|(k, _)| k.calendar_id.clone()));
        }
    }
    let cfg = engine_config(loaded);
    let configured_sinks: Vec<String> = app::sinks(loaded)
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    let mut out = Vec::new();
    for cal in calendars {
        let mut sink_ids = configured_sinks.clone();
        for (k, _) in failures.iter().filter(|(k, _)| k.calendar_id == cal) {
            if !sink_ids.contains(&k.sink_id) {
                sink_ids.push(k.sink_id.clone());
            }
        }
        // The engine's own phases: cursor, snapshot set, plan per sink.
        let Some(x) =
            bridge_engine::engine::explain::explain(store, &cfg, &sink_ids, &cal, key, now).await?
        else {
            continue;
        };
        let snapshot = if x.in_store {
            store.get_snapshot(&cal, &id).await?
        } else {
            None
        };
        let revisions: HashMap<EventKey, Revision> = x
            .sinks
            .iter()
            .find_map(|s| s.record.as_ref())
            .map(|r| {
                HashMap::from([(
                    key.clone(),
                    Revision {
                        sequence: r.sequence,
                        last_modified: r.applied_at,
                    },
                )])
            })
            .unwrap_or_default();
        let (source, mapping) = match &snapshot {
            Some(snap) => {
                let source = serde_json::from_str::<serde_json::Value>(&snap.event_json)
                    .unwrap_or_else(|_| serde_json::Value::String(snap.event_json.clone()));
                let mapping = match parse_event(&snap.event_json) {
                    Some(ev) => {
                        let companions = companions(store, &cal, key, &ev).await?;
                        mapping(key, &ev, &companions, revisions, snap.updated_at)
                    }
                    None => Mapping {
                        kind: "unmappable",
                        note: "the stored snapshot is not a Feishu event object; the next listing replaces it".to_owned(),
                        ..Mapping::default()
                    },
                };
                (Some(source), Some(mapping))
            }
            None => (None, None),
        };
        let sinks: Vec<SinkView> = x
            .sinks
            .into_iter()
            .map(|s| {
                let configured = loaded.sinks.iter().find(|c| c.target.id() == s.sink);
                let decision = decision(now, key, &s, configured.map(|c| c.index));
                // Where it lives, as the target's module says.
                let remote = s.record.as_ref().map(|r| RemoteRef {
                    id: r.remote_id.clone(),
                    etag: r.etag.clone(),
                });
                let target = configured
                    .map(|c| c.target.config().explain(&cal, remote.as_ref()))
                    .unwrap_or_default();
                SinkView {
                    in_sync: match (&s.record, &s.hash) {
                        (Some(r), Some(h)) => Some(!r.tombstone && r.applied_hash == h.to_string()),
                        (Some(_), None) => Some(false),
                        (None, _) => None,
                    },
                    sink: s.sink,
                    record: s.record,
                    failure: s.failure,
                    decision,
                    target,
                }
            })
            .collect();
        let summary = if let Some(snap) = &snapshot {
            let current = sinks.iter().filter(|s| s.decision == "up to date").count();
            match sinks.len() {
                0 => format!(
                    "in the store (snapshot of {}, {}); no sink is configured",
                    fmt_time(snap.updated_at),
                    relative(now, snap.updated_at)
                ),
                n => format!(
                    "in the store (snapshot of {}, {}); up to date in {current} of {n} sink{}",
                    fmt_time(snap.updated_at),
                    relative(now, snap.updated_at),
                    if n == 1 { "" } else { "s" }
                ),
            }
        } else {
            "no longer in the store: deleted in Feishu (or no longer listed); the sinks still hold a record".to_owned()
        };
        out.push(Found {
            calendar: cal,
            snapshot,
            source,
            mapping,
            window: x.in_window,
            sinks,
            summary,
        });
    }
    Ok(out)
}

/// The engine's settings: the daemon's when it runs the command, else as
/// the configuration gives them.
fn engine_config(loaded: &Loaded) -> EngineConfig {
    app::IN_DAEMON
        .try_with(|d| d.app.engine.config().clone())
        .unwrap_or_else(|_| app::engine_config(loaded, false))
}

/// What to render with: an exception's master, or a master's cancelled
/// occurrences (its EXDATEs).
async fn companions(
    store: &Store,
    calendar: &str,
    key: &EventKey,
    ev: &Event,
) -> anyhow::Result<Vec<Event>> {
    if !key.is_base() {
        let master = store
            .get_snapshot(calendar, &key.master().to_string())
            .await?
            .and_then(|s| parse_event(&s.event_json));
        return Ok(master.into_iter().collect());
    }
    if ev.recurrence.as_deref().is_none_or(str::is_empty) {
        return Ok(Vec::new());
    }
    let prefix = format!("{}_", key.uid());
    Ok(store
        .list_snapshots(calendar)
        .await?
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix(&prefix)
                .is_some_and(|t| t != "0" && t.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(_, s)| parse_event(&s.event_json))
        .filter(|e| e.status == Some(EventStatus::Cancelled))
        .collect())
}

/// The calendars to ask Feishu about.
async fn live_calendars(
    loaded: &Loaded,
    client: &FeishuClient,
    identity: Identity,
    only: Option<&str>,
) -> Result<Vec<String>, FeishuError> {
    if let Some(c) = only {
        return Ok(vec![c.to_owned()]);
    }
    crate::cmd::subscribe::resolve_calendars(client, loaded, identity).await
}

/// Asks Feishu for an event the store does not know. Returns what was found
/// and, otherwise, why not.
async fn search_live(
    loaded: &Loaded,
    store: Option<&Store>,
    key: &EventKey,
    only: Option<&str>,
    now: i64,
) -> (Vec<Found>, Vec<String>) {
    let id = key.to_string();
    let mut misses = Vec::new();
    let client = match crate::cmd::check::client(loaded) {
        Ok(c) => c,
        Err(e) => return (Vec::new(), vec![format!("cannot ask Feishu: {e}")]),
    };
    let identity = app::identity(loaded);
    let calendars = match live_calendars(loaded, &client, identity, only).await {
        Ok(c) => c,
        Err(e) => return (Vec::new(), vec![format!("cannot list the calendars: {e}")]),
    };
    let mut out = Vec::new();
    for cal in calendars {
        let ev = match client.get_event(identity, &cal, &id, true).await {
            Ok(ev) => ev,
            Err(e) if e.code() == Some(193_003) => {
                out.push(Found {
                    calendar: cal,
                    snapshot: None,
                    source: None,
                    mapping: None,
                    window: None,
                    sinks: Vec::new(),
                    summary:
                        "deleted in Feishu; nothing of it is in the store, so no sink holds it \
                              (removed from the sinks, or never mirrored)"
                            .to_owned(),
                });
                continue;
            }
            Err(e) => {
                misses.push(format!("calendar {cal}: {e}"));
                continue;
            }
        };
        let source = serde_json::to_value(&ev).ok();
        // An unchanged occurrence of a series has no event of its own.
        let occurrence_of = (!key.is_base() && ev.is_exception != Some(true))
            .then(|| ev.recurring_event_id.clone())
            .flatten();
        let master_stored = match (store, &occurrence_of) {
            (Some(s), Some(_)) => s
                .get_snapshot(&cal, &key.master().to_string())
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        let summary = match (&occurrence_of, &master_stored) {
            (Some(m), Some(_)) => format!(
                "an unchanged occurrence of series {m}: it has no event of its own and is mirrored \
                 through the master's RRULE (`feishu-bridge explain {}`)",
                key.master()
            ),
            (Some(m), None) => format!(
                "an unchanged occurrence of series {m}, which was never mirrored: not in the store \
                 (run `feishu-bridge reconcile`)"
            ),
            (None, _) => "never mirrored: it exists in Feishu but not in the store (run `feishu-bridge reconcile`)".to_owned(),
        };
        let companions: Vec<Event> = if key.is_base() {
            Vec::new()
        } else {
            let master = client
                .get_event(identity, &cal, &key.master().to_string(), true)
                .await
                .ok();
            master.into_iter().collect()
        };
        let mapping = mapping(key, &ev, &companions, HashMap::new(), now);
        let window = mapping
            .item
            .as_ref()
            .and_then(|i| in_window(&engine_config(loaded), now, i));
        out.push(Found {
            calendar: cal,
            snapshot: None,
            source,
            mapping: Some(mapping),
            window,
            sinks: Vec::new(),
            summary,
        });
    }
    (out, misses)
}

// ----- output -----

fn found_json(now: i64, f: &Found) -> serde_json::Value {
    serde_json::json!({
        "calendar": f.calendar,
        "in_store": f.snapshot.is_some(),
        "summary": f.summary,
        "snapshot": f.snapshot.as_ref().map(|s| {
            // The stored hash is the listed content's, then the mark of
            // the attendees read for it (`n@time` or `pending`).
            let (hash, mark) = s.content_hash.split_once(' ').unwrap_or((&s.content_hash, ""));
            serde_json::json!({
                "content_hash": hash,
                "attendees": mark.strip_prefix("attendees="),
                "updated_at": s.updated_at,
            })
        }),
        "source": f.source,
        "mapping": f.mapping.as_ref().map(|m| serde_json::json!({
            "kind": m.kind,
            "note": m.note,
            "ics": m.ics,
            "warnings": m.warnings,
            "content_hash": m.hash,
        })),
        "in_window": f.window,
        "sinks": f.sinks.iter().map(|s| serde_json::json!({
            "sink": s.sink,
            "record": s.record.as_ref().map(record_json),
            "in_sync": s.in_sync,
            "failure": s.failure.as_ref().map(|x| failure_json(now, x)),
            "decision": s.decision,
            "target": s.target,
        })).collect::<Vec<_>>(),
    })
}

/// An event that left the source (the engine remembers it for 30 days).
#[allow(clippy::print_stdout)]
fn print_departed(
    id: &str,
    calendar: &str,
    d: &bridge_engine::departed::Departed,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let out = serde_json::json!({
            "event_id": id,
            "found": false,
            "departed": {
                "calendar": calendar,
                "title": d.title,
                "start": d.start,
                "at": d.at,
                "why": d.why,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("event {id} in calendar {calendar}: gone");
    println!("  title:    {:?}", d.title);
    if let Some(start) = d.start {
        println!("  start:    {}", fmt_time(start));
    }
    println!("  removed:  {} ({})", fmt_time(d.at), d.why);
    println!("  decision: deleted from every mirror by that pass (remembered for 30 days)");
    Ok(())
}

/// Several events matched a title search: they are listed, to be named by id.
#[allow(clippy::print_stdout)]
fn print_matches(
    words: &str,
    matches: &[TitleMatch],
    more: bool,
    json: bool,
) -> anyhow::Result<()> {
    let shown = &matches[..matches.len().min(TITLE_MATCHES)];
    if json {
        let out = serde_json::json!({
            "query": words,
            "found": false,
            "several": shown.iter().map(|m| serde_json::json!({
                "event_id": m.key, "calendar": m.calendar, "title": m.title, "start": m.start,
            })).collect::<Vec<_>>(),
            "more": more,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} events have {words:?} in their title; name one by its id:",
        if more {
            format!("more than {TITLE_MATCHES}")
        } else {
            shown.len().to_string()
        }
    );
    for m in shown {
        println!(
            "  {}  {:?}  {}  (calendar {})",
            m.key,
            m.title,
            m.start.map_or_else(|| "-".to_owned(), fmt_time),
            m.calendar
        );
    }
    Ok(())
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}\n"))
        .collect::<String>()
}

#[allow(clippy::print_stdout)]
fn print_found(now: i64, id: &str, f: &Found) {
    println!("event {id} in calendar {}", f.calendar);
    println!("  {}", f.summary);
    match (&f.source, &f.snapshot) {
        (Some(src), Some(snap)) => {
            println!(
                "source: the Feishu event as stored {}",
                fmt_time(snap.updated_at)
            );
            print!(
                "{}",
                indent(&serde_json::to_string_pretty(src).unwrap_or_default(), "  ")
            );
        }
        (Some(src), None) => {
            println!("source: the Feishu event, fetched now");
            print!(
                "{}",
                indent(&serde_json::to_string_pretty(src).unwrap_or_default(), "  ")
            );
        }
        (None, _) => println!("source: not in the store"),
    }
    if let Some(m) = &f.mapping {
        println!("mapping: {} ({})", m.kind, m.note);
        if !m.ics.is_empty() {
            print!("{}", indent(&m.ics, "  "));
        }
        if m.warnings.is_empty() {
            println!("  warnings: none");
        } else {
            for w in &m.warnings {
                println!("  warning: {w}");
            }
        }
        if let Some(h) = &m.hash {
            match &f.snapshot {
                // The stored hash is the listed content's, followed by the
                // mark of the attendees read for it.
                Some(s) if s.content_hash.contains(" attendees=") => println!(
                    "content hash: {h} (listed content {})",
                    s.content_hash.replace(" attendees=", "; attendees ")
                ),
                Some(s) if s.content_hash != *h => println!(
                    "content hash: {h} (stored snapshot: {}; the hash version changed, \
                     so the next pass rewrites it once)",
                    s.content_hash
                ),
                _ => println!("content hash: {h}"),
            }
        }
        match f.window {
            None => println!("sync window: none (everything is mirrored)"),
            Some(true) => println!("sync window: inside"),
            Some(false) => println!("sync window: outside"),
        }
    }
    for s in &f.sinks {
        println!("sink {}:", s.sink);
        match &s.record {
            Some(r) => println!(
                "  record:   remote id {}, etag {}, applied hash {}, applied {}, sequence {}{}{}",
                r.remote_id,
                r.etag.as_deref().unwrap_or("-"),
                r.applied_hash,
                when(now, r.applied_at),
                r.sequence,
                if r.tombstone {
                    ", deleted (tombstone)"
                } else {
                    ""
                },
                match s.in_sync {
                    Some(true) => " (in sync)",
                    Some(false) => " (NOT in sync with the snapshot)",
                    None => "",
                }
            ),
            None => println!("  record:   none (never written to this sink)"),
        }
        for line in &s.target {
            println!("  target:   {line}");
        }
        match &s.failure {
            Some(x) => println!(
                "  failure:  {} attempt{} since {}, next retry {} ({}): {}",
                x.attempts,
                if x.attempts == 1 { "" } else { "s" },
                fmt_time(x.first_failed_at),
                fmt_time(x.next_retry_at),
                relative(now, x.next_retry_at),
                x.last_error
            ),
            None => println!("  failure:  none"),
        }
        println!("  decision: {}", s.decision);
    }
}

#[allow(clippy::print_stdout)]
/// One stored event a title search matched.
#[derive(Debug)]
struct TitleMatch {
    calendar: String,
    key: String,
    title: String,
    start: Option<i64>,
}

/// The stored events whose title contains `words` (case-insensitive), in
/// calendar and key order, at most `limit`.
async fn by_title(
    store: &Store,
    loaded: &Loaded,
    words: &str,
    limit: usize,
) -> anyhow::Result<Vec<TitleMatch>> {
    let needle = words.to_lowercase();
    let mut calendars: BTreeSet<String> = store
        .list_cursors()
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    if let Calendars::List(ids) = &loaded.config.feishu.calendars {
        calendars.extend(ids.iter().cloned());
    }
    let mut out = Vec::new();
    for cal in calendars {
        for (key, snap) in store.list_snapshots(&cal).await? {
            let Some(ev) = parse_event(&snap.event_json) else {
                continue;
            };
            let title = ev.summary.clone().unwrap_or_default();
            if title.to_lowercase().contains(&needle) {
                out.push(TitleMatch {
                    calendar: cal.clone(),
                    key,
                    title,
                    start: ev
                        .start_time
                        .as_ref()
                        .and_then(|t| t.timestamp.as_ref())
                        .map(|t| t.0),
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The departure of `key` the engine remembers (`departed`), with its
/// calendar, newest first.
async fn departed_lookup(
    store: &Store,
    loaded: &Loaded,
    key: &str,
) -> anyhow::Result<Option<(String, bridge_engine::departed::Departed)>> {
    let mut calendars: BTreeSet<String> = store
        .list_cursors()
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    if let Calendars::List(ids) = &loaded.config.feishu.calendars {
        calendars.extend(ids.iter().cloned());
    }
    let mut best: Option<(String, bridge_engine::departed::Departed)> = None;
    for cal in calendars {
        let Some(json) = store
            .get_state(&bridge_engine::departed::state_name(&cal))
            .await?
        else {
            continue;
        };
        let list: Vec<bridge_engine::departed::Departed> =
            serde_json::from_str(&json).unwrap_or_default();
        if let Some(d) = list.into_iter().rev().find(|d| d.key == key)
            && best.as_ref().is_none_or(|(_, b)| b.at < d.at)
        {
            best = Some((cal, d));
        }
    }
    Ok(best)
}

/// How many title matches are listed at most.
const TITLE_MATCHES: usize = 50;

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if crate::cmd::rooms::is_booking_id(&args.event_id) {
        return crate::cmd::rooms::explain(&args.config, &args.event_id, args.json).await;
    }
    let loaded = crate::config::load(&args.config)?;
    let store = match open_existing(&loaded.config.store.path).await? {
        Opened::Store(s) => Some(s),
        Opened::Missing => None,
        Opened::Locked(e) => {
            tracing::debug!("{e}; asking the daemon");
            return app::run_in_daemon(&loaded, &e).await;
        }
    };
    // `<uid>_<original_time>`, else a plain UID (the event or series it
    // names is `<uid>_0`), else words of a title.
    let arg = args.event_id.trim();
    let key = match EventKey::parse(arg) {
        Ok(k) => k,
        Err(_) if arg.is_empty() => {
            crate::cmd::report_error(
                &anyhow::anyhow!(
                    "name an event: <uid>_<original_time>, its UID, or words of its title"
                ),
                args.json,
            );
            return Ok(ExitCode::from(crate::EXIT_USAGE));
        }
        Err(e) => {
            let as_uid = EventKey::new(arg, 0).ok();
            let departed_uid = match (&store, &as_uid) {
                (Some(s), Some(k)) => departed_lookup(s, &loaded, &k.to_string()).await?.is_some(),
                _ => false,
            };
            let known_uid = departed_uid
                || match (&store, &as_uid) {
                    (Some(s), Some(k)) => {
                        !search_store(&loaded, s, k, args.calendar.as_deref(), app::unix_now())
                            .await?
                            .iter()
                            .all(|f| f.snapshot.is_none())
                    }
                    _ => false,
                };
            match (as_uid, known_uid, &store) {
                (Some(k), true, _) => k,
                (_, _, Some(s)) => {
                    let matches = by_title(s, &loaded, arg, TITLE_MATCHES + 1).await?;
                    match matches.len() {
                        1 => EventKey::parse(&matches[0].key)?,
                        0 => {
                            crate::cmd::report_error(
                                &anyhow::anyhow!(
                                    "no stored event has the id, UID or title {arg:?} ({e}; an event id is \
                                     <uid>_<original_time>, e.g. 1f0c6c63-8d0e-4b8c-9d0a-1c2f3e4d5a6b_0)"
                                ),
                                args.json,
                            );
                            return Ok(ExitCode::from(EXIT_NOT_FOUND));
                        }
                        n => {
                            print_matches(arg, &matches, n > TITLE_MATCHES, args.json)?;
                            return Ok(ExitCode::from(EXIT_NOT_FOUND));
                        }
                    }
                }
                (_, _, None) => {
                    crate::cmd::report_error(
                        &anyhow::anyhow!(
                            "{e}; an event id is <uid>_<original_time>, e.g. \
                             1f0c6c63-8d0e-4b8c-9d0a-1c2f3e4d5a6b_0 (nothing is stored yet to search by UID or title)"
                        ),
                        args.json,
                    );
                    return Ok(ExitCode::from(crate::EXIT_USAGE));
                }
            }
        }
    };
    let id = key.to_string();
    let now = app::unix_now();
    let mut found = match &store {
        Some(s) => search_store(&loaded, s, &key, args.calendar.as_deref(), now).await?,
        None => Vec::new(),
    };
    if found.is_empty()
        && let Some(s) = &store
        && let Some((cal, d)) = departed_lookup(s, &loaded, &id).await?
    {
        print_departed(&id, &cal, &d, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut misses = Vec::new();
    let in_store = !found.is_empty();
    if !in_store && !args.offline {
        let (live, why) =
            search_live(&loaded, store.as_ref(), &key, args.calendar.as_deref(), now).await;
        found = live;
        misses = why;
    }
    let never_seen = "never seen: not in the store (run `feishu-bridge reconcile`)";
    if args.json {
        let out = serde_json::json!({
            "event_id": id,
            "found": !found.is_empty(),
            "in_store": in_store,
            "matches": found.iter().map(|f| found_json(now, f)).collect::<Vec<_>>(),
            "not_found": if found.is_empty() {
                Some(serde_json::json!({"reason": never_seen, "feishu": misses}))
            } else {
                None
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if found.is_empty() {
        println!("event {id}: {never_seen}");
        if args.offline {
            println!("  Feishu was not asked (--offline)");
        }
        for m in &misses {
            println!("  not in Feishu either: {m}");
        }
    } else {
        for (i, f) in found.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_found(now, &id, f);
        }
    }
    Ok(if found.is_empty() {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(hash: &str) -> Record {
        Record {
            remote_id: "r".into(),
            etag: None,
            applied_hash: hash.into(),
            applied_at: 0,
            sequence: 0,
            tombstone: false,
        }
    }

    fn sink(verdict: Verdict, record: Option<Record>, failure: Option<Failure>) -> SinkExplanation {
        SinkExplanation {
            sink: "ics:x".into(),
            hash: None,
            record,
            failure,
            verdict,
        }
    }

    fn planned(d: Decision) -> Verdict {
        Verdict::Planned {
            decision: d,
            waiting_until: None,
        }
    }

    /// The engine's verdicts in words (the engine decides: `Engine::explain`).
    #[test]
    fn decisions_follow_the_engine() {
        let now = 1_000;
        let k = EventKey::new("u", 0).unwrap();
        let decide = |v: Verdict, r: Option<Record>, f: Option<Failure>| {
            decision(now, &k, &sink(v, r, f), Some(1))
        };
        assert_eq!(
            decide(planned(Decision::Unchanged), Some(stored("v1:aa")), None),
            "up to date"
        );
        assert!(decide(planned(Decision::Update), Some(stored("v1:bb")), None).contains("updated"));
        assert_eq!(
            decide(planned(Decision::OutsideWindow), None, None),
            "not written: outside the sync window"
        );
        assert!(decide(planned(Decision::Create), None, None).starts_with("will be written"));
        let f = Failure {
            attempts: 2,
            next_retry_at: now + 120,
            last_error: "disk full".into(),
            first_failed_at: 0,
        };
        let waiting = |d| Verdict::Planned {
            decision: d,
            waiting_until: Some(now + 120),
        };
        let d = decide(waiting(Decision::Create), None, Some(f.clone()));
        assert!(
            d.starts_with("writing it failed 2 times; waiting to retry at"),
            "{d}"
        );
        let d = decide(
            waiting(Decision::Update),
            Some(stored("v1:bb")),
            Some(f.clone()),
        );
        assert!(d.starts_with("updating it failed"), "{d}");
        let stuck = Failure {
            attempts: 7,
            next_retry_at: now - 1,
            ..f
        };
        let d = decide(planned(Decision::Create), None, Some(stuck));
        assert!(
            d.contains("(stuck") && d.contains("the next pass tries again"),
            "{d}"
        );
        assert!(
            decide(planned(Decision::Delete), Some(stored("v1:aa")), None).starts_with("deleted")
        );
        assert_eq!(
            decide(Verdict::LeftOut("skip_private"), None, None),
            "not written: left out by the filter sinks[1].filter.skip_private"
        );
        let mut gone = stored("v1:aa");
        gone.tombstone = true;
        assert!(
            decide(planned(Decision::Unchanged), Some(gone), None)
                .starts_with("deleted on the target")
        );
    }
}
