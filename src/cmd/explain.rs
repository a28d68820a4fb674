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
use bridge_core::{
    EventKey, Item, Privacy, RenderOptions, Revision, content_hash, map_event, render_event,
};
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
    /// The Feishu event id, `<uid>_<original_time>`.
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
fn in_window(loaded: &Loaded, now: i64, item: &Item) -> Option<bool> {
    let sync = &loaded.config.sync;
    let window = bridge_engine::Window {
        past_days: sync.window_past_days?,
        future_days: sync.window_future_days?,
    };
    Some(bridge_engine::in_window(Some(window), now, item))
}

// ----- per sink -----

#[derive(Debug)]
struct SinkView {
    sink: String,
    record: Option<Record>,
    failure: Option<Failure>,
    in_sync: Option<bool>,
    decision: String,
}

fn decide(
    now: i64,
    hash: Option<&str>,
    in_store: bool,
    window: Option<bool>,
    record: Option<&Record>,
    failure: Option<&Failure>,
) -> String {
    let live_record = record.filter(|r| !r.tombstone);
    if let Some(f) = failure {
        let what = match (in_store, live_record) {
            (false, _) => "removing it (deleted in Feishu)",
            (true, None) => "writing it",
            (true, Some(_)) => "updating it",
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
    if !in_store {
        return match live_record {
            Some(_) => "deleted in Feishu (or no longer listed); removed from the sink on the next full pass".to_owned(),
            None => "deleted in Feishu; removed from the sink".to_owned(),
        };
    }
    let outside = window == Some(false);
    match (live_record, hash) {
        (_, None) => "cannot be mapped; the sink keeps what it has".to_owned(),
        (Some(r), Some(h)) if r.applied_hash == h => "up to date".to_owned(),
        (Some(_), Some(_)) if outside => {
            "outside the sync window: the written version is left as it is".to_owned()
        }
        (Some(_), Some(_)) => {
            "will be updated on the next pass (source changed since it was written)".to_owned()
        }
        (None, Some(_)) if outside => "not written: outside the sync window".to_owned(),
        (None, Some(_)) => {
            "will be written on the next pass (not written yet: new since the last pass, or the pass was a dry run)"
                .to_owned()
        }
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
    let configured_sinks: Vec<String> = app::sinks(loaded)
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    let mut out = Vec::new();
    for cal in calendars {
        let snapshot = store.get_snapshot(&cal, &id).await?;
        let mut sink_ids = configured_sinks.clone();
        for (k, _) in failures.iter().filter(|(k, _)| k.calendar_id == cal) {
            if !sink_ids.contains(&k.sink_id) {
                sink_ids.push(k.sink_id.clone());
            }
        }
        let mut records = Vec::new();
        for sink in &sink_ids {
            let k = SinkItemKey::new(sink.as_str(), cal.as_str(), id.as_str());
            let record = store.get_record(&k).await?;
            let failure = store.get_failure(&k).await?;
            records.push((sink.clone(), record, failure));
        }
        if snapshot.is_none() && records.iter().all(|(_, r, f)| r.is_none() && f.is_none()) {
            continue;
        }
        let revisions: HashMap<EventKey, Revision> = records
            .iter()
            .find_map(|(_, r, _)| r.as_ref())
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
        let window = mapping
            .as_ref()
            .and_then(|m| m.item.as_ref())
            .and_then(|i| in_window(loaded, now, i));
        let hash = mapping.as_ref().and_then(|m| m.hash.clone());
        let sinks: Vec<SinkView> = records
            .into_iter()
            .map(|(sink, record, failure)| {
                let decision = decide(
                    now,
                    hash.as_deref(),
                    snapshot.is_some(),
                    window,
                    record.as_ref(),
                    failure.as_ref(),
                );
                SinkView {
                    in_sync: match (&record, &hash) {
                        (Some(r), Some(h)) => Some(!r.tombstone && r.applied_hash == *h),
                        (Some(_), None) => Some(false),
                        (None, _) => None,
                    },
                    sink,
                    record,
                    failure,
                    decision,
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
            window,
            sinks,
            summary,
        });
    }
    Ok(out)
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
            .and_then(|i| in_window(loaded, now, i));
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
        "snapshot": f.snapshot.as_ref().map(|s| serde_json::json!({
            "content_hash": s.content_hash,
            "updated_at": s.updated_at,
        })),
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
        })).collect::<Vec<_>>(),
    })
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
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = match EventKey::parse(&args.event_id) {
        Ok(k) => k,
        Err(e) => {
            crate::cmd::report_error(
                &anyhow::anyhow!(
                    "{e}; an event id is <uid>_<original_time>, e.g. 1f0c6c63-8d0e-4b8c-9d0a-1c2f3e4d5a6b_0"
                ),
                args.json,
            );
            return Ok(ExitCode::from(crate::EXIT_USAGE));
        }
    };
    let id = key.to_string();
    let loaded = crate::config::load(&args.config)?;
    let now = app::unix_now();
    let store = match open_existing(&loaded.config.store.path).await? {
        Opened::Store(s) => Some(s),
        Opened::Missing => None,
        Opened::Locked(e) => {
            tracing::debug!("{e}; asking the daemon");
            return app::run_in_daemon(&loaded, &e).await;
        }
    };
    let mut found = match &store {
        Some(s) => search_store(&loaded, s, &key, args.calendar.as_deref(), now).await?,
        None => Vec::new(),
    };
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

    #[test]
    fn decisions_follow_the_engine() {
        let now = 1_000;
        let h = Some("v1:aa");
        assert_eq!(
            decide(now, h, true, None, Some(&stored("v1:aa")), None),
            "up to date"
        );
        assert!(decide(now, h, true, None, Some(&stored("v1:bb")), None).contains("updated"));
        assert_eq!(
            decide(now, h, true, Some(false), None, None),
            "not written: outside the sync window"
        );
        assert!(decide(now, h, true, Some(true), None, None).starts_with("will be written"));
        let f = Failure {
            attempts: 2,
            next_retry_at: now + 120,
            last_error: "disk full".into(),
            first_failed_at: 0,
        };
        let d = decide(now, h, true, None, None, Some(&f));
        assert!(
            d.starts_with("writing it failed 2 times; waiting to retry at"),
            "{d}"
        );
        let d = decide(now, h, true, None, Some(&stored("v1:bb")), Some(&f));
        assert!(d.starts_with("updating it failed"), "{d}");
        let stuck = Failure {
            attempts: 7,
            next_retry_at: now - 1,
            ..f
        };
        let d = decide(now, h, true, None, None, Some(&stuck));
        assert!(
            d.contains("(stuck") && d.contains("the next pass tries again"),
            "{d}"
        );
        assert!(
            decide(now, None, false, None, Some(&stored("v1:aa")), None).starts_with("deleted")
        );
    }
}
