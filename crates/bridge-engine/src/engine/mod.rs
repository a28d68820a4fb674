//! One calendar, one pass: list -> map -> plan per sink -> apply -> record.
//!
//! The store keeps a snapshot of every source item. A listing updates the
//! snapshots (a full listing replaces them, a delta patches them); every sink
//! is then planned against the whole snapshot set, so an item that failed
//! earlier is simply planned again (level-triggered). Snapshots, sink records,
//! failures and the new sync token are committed in one store transaction
//! after the sinks answered, so the sync token never runs ahead of its items.

mod apply;
mod assemble;
mod attendees;
pub mod departed;
pub mod explain;
mod listing;
mod sinkplan;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bridge_core::hash::ContentHash;
use bridge_core::plan::{Op, Rules};
use bridge_core::{EventKey, Item, Revision};
use bridge_store::{Backoff, Batch, Cursor, Record, SinkItemKey, Store, StoreError};
use tokio::sync::Mutex;

use bridge_target::{Drift, DriftInput, Sink, Target};

use self::apply::recorded_refs;
use self::assemble::{Entry, Seen};
use self::attendees::{Mark, split_stored, stored_entry};
use self::sinkplan::{PlanContext, SinkPlan, plan_sink};

use crate::traits::{CalendarMeta, Source, SourceError};

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("calendar {calendar}: {source}")]
    Source {
        calendar: String,
        #[source]
        source: SourceError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    pub fn is_source(&self) -> bool {
        matches!(self, EngineError::Source { .. })
    }
}

/// Days around "now" that are mirrored; `None` mirrors everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub past_days: u32,
    pub future_days: u32,
}

/// Whether attendees are read from the source (`sync.attendees`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttendeeMode {
    /// Read the attendees of new or changed events (and refresh upcoming
    /// ones on a full reconcile).
    Changed,
    /// Never read attendees; mirrors show none.
    #[default]
    None,
}

/// How attendees are synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendeeSync {
    pub mode: AttendeeMode,
    /// A full reconcile reads again the attendees of events starting within
    /// this many days (room bookings settle after the event was listed).
    pub refresh_days: u32,
    /// ... at most this many events per calendar and pass.
    pub refresh_budget: usize,
}

impl Default for AttendeeSync {
    fn default() -> Self {
        Self {
            mode: AttendeeMode::None,
            refresh_days: 14,
            refresh_budget: 200,
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub rules: Rules,
    pub window: Option<Window>,
    pub failure_backoff: Backoff,
    pub attendees: AttendeeSync,
    /// Filters and transforms by sink id (a sink without one sees the
    /// calendar as it is).
    pub views: BTreeMap<String, bridge_core::view::View>,
}

/// How to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A delta with the stored sync token (a full listing when there is none).
    Incremental,
    /// A full listing whatever is stored (reconcile).
    Full,
}

/// What one sink did (or would do) for one calendar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    pub sink: String,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Operations waiting for their retry time.
    pub deferred: usize,
    /// The planned operations (kept for `--dry-run`).
    pub ops: Vec<Op>,
    /// Failure messages, `event_key: message`.
    pub errors: Vec<String>,
    /// Why the sink is paused (nothing was written; its queue is kept).
    pub paused: Option<String>,
    /// Drift repair: our items removed from the target because the source
    /// no longer has them.
    pub orphans_deleted: usize,
    /// Drift repair: items changed or deleted on the target, written again.
    pub drift_rewrites: usize,
    /// Drift repair: items deleted on the target and left deleted.
    pub tombstoned: usize,
    /// Deletions the deletion budget held back (not in `ops`).
    pub held_back: Vec<EventKey>,
    /// Items the sink's filters leave out.
    pub filtered: usize,
}

/// What a report says about one event it names: enough for a person to
/// recognise it in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// Its title (the master's for a cancelled occurrence; may be empty).
    pub title: String,
    /// Its (first) start.
    pub start: bridge_core::model::EventTime,
    pub kind: EventKind,
}

/// Which kind of item a planned op touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A standalone event.
    Single,
    /// A recurring series (its master and rule).
    Series,
    /// One modified occurrence of a series.
    Occurrence,
    /// One cancelled occurrence of a series.
    Cancellation,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Series => "series",
            Self::Occurrence => "occurrence",
            Self::Cancellation => "cancelled occurrence",
        }
    }
}

/// What one pass over one calendar did.
#[derive(Debug, Clone, Default)]
pub struct CalendarReport {
    pub calendar: String,
    pub name: String,
    /// The listing was a full one.
    pub full: bool,
    /// The stored sync token had expired.
    pub cursor_expired: bool,
    pub listed: usize,
    /// Listing calls.
    pub source_calls: u64,
    /// Attendee calls (pages of the attendees endpoint).
    pub attendee_calls: u64,
    /// Events whose attendees were read because they were new or changed.
    pub attendees_fetched: usize,
    /// Unchanged upcoming events whose attendees were read again.
    pub attendees_refreshed: usize,
    /// Attendee reads that failed (retried next pass).
    pub attendee_failures: usize,
    /// Items in the snapshot after the pass.
    pub items: usize,
    pub sinks: Vec<SinkReport>,
    /// Set when the deletion budget held deletions back.
    pub blocked: Option<String>,
    pub dry_run: bool,
    /// Every event an op or a held-back deletion of the report names.
    pub events: BTreeMap<EventKey, EventInfo>,
}

impl CalendarReport {
    pub fn failed(&self) -> usize {
        self.sinks.iter().map(|s| s.failed).sum()
    }
}

/// Title, first start and kind of every event the sinks' ops and held-back
/// deletions name, from the current items or the removed ones.
fn describe(
    sinks: &[SinkReport],
    next: &BTreeMap<EventKey, Entry>,
    removed: &BTreeMap<EventKey, Entry>,
) -> BTreeMap<EventKey, EventInfo> {
    let mut out = BTreeMap::new();
    let keys = sinks
        .iter()
        .flat_map(|s| s.ops.iter().map(Op::key).chain(s.held_back.iter()));
    for key in keys {
        if out.contains_key(key) {
            continue;
        }
        let Some(entry) = next.get(key).or_else(|| removed.get(key)) else {
            continue;
        };
        let info = match &entry.item {
            Item::Event(ev) => EventInfo {
                title: ev.summary.clone(),
                start: ev.start,
                kind: if ev.rrule.is_some() {
                    EventKind::Series
                } else if key.original_time() != 0 {
                    EventKind::Occurrence
                } else {
                    EventKind::Single
                },
            },
            Item::Cancelled(k) => {
                let master = EventKey::new(k.uid(), 0).ok();
                let title = master
                    .as_ref()
                    .and_then(|m| next.get(m).or_else(|| removed.get(m)))
                    .and_then(|e| match &e.item {
                        Item::Event(ev) => Some(ev.summary.clone()),
                        Item::Cancelled(_) => None,
                    })
                    .unwrap_or_default();
                EventInfo {
                    title,
                    start: bridge_core::model::EventTime::Utc(k.original_time()),
                    kind: EventKind::Cancellation,
                }
            }
        };
        out.insert(key.clone(), info);
    }
    out
}

/// Sink results committed per store transaction before the final one.
const RECORD_CHUNK: usize = 4096;

/// The sync engine.
#[derive(Debug)]
pub struct Engine {
    source: Arc<dyn Source>,
    sinks: Vec<Arc<dyn Sink>>,
    store: Store,
    cfg: EngineConfig,
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Whether the pass may write `item` now: everything without a window; a
/// series reaches into the window from any start before its end.
pub fn in_window(window: Option<Window>, now: i64, item: &Item) -> bool {
    let Some(w) = window else { return true };
    let from = now - i64::from(w.past_days) * 86_400;
    let to = now + i64::from(w.future_days) * 86_400;
    match item {
        Item::Cancelled(_) => true,
        Item::Event(e) => {
            let start = e.start.instant();
            let end = e.end.instant();
            if e.rrule.is_some() {
                // A series may reach into the window from any start before its end.
                start < to
            } else {
                start < to && end >= from
            }
        }
    }
}

/// What a sink shows: every item in the window, plus anything already
/// written (outside the window is never removed), plus, while the budget
/// holds deletions back, the removed items it still holds.
fn shown<'a>(
    next: &'a BTreeMap<EventKey, Entry>,
    windowed: &BTreeMap<&EventKey, bool>,
    records: &BTreeMap<EventKey, Record>,
    blocked: bool,
    removed: &'a BTreeMap<EventKey, Entry>,
) -> Vec<&'a Item> {
    let mut shown: BTreeMap<&EventKey, &Item> = next
        .iter()
        .filter(|(k, _)| windowed.get(k).copied().unwrap_or(true) || records.contains_key(*k))
        .map(|(k, e)| (k, &e.item))
        .collect();
    if blocked {
        for k in records.keys().filter(|k| !next.contains_key(*k)) {
            if let Some((k, e)) = removed.get_key_value(k) {
                shown.insert(k, &e.item);
            }
        }
    }
    shown.into_values().collect()
}

impl Engine {
    pub fn new(
        source: Arc<dyn Source>,
        sinks: Vec<Arc<dyn Sink>>,
        store: Store,
        cfg: EngineConfig,
    ) -> Self {
        Self {
            source,
            sinks,
            store,
            cfg,
            locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    pub fn sinks(&self) -> &[Arc<dyn Sink>] {
        &self.sinks
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn calendar_lock(&self, calendar_id: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(calendar_id.to_owned())
            .or_default()
            .clone()
    }

    /// One pass over one calendar, in phases: read the cursor; list and
    /// write snapshots; assemble the new snapshot set; plan every sink (the
    /// planner decides, the deletion budget included); drift repair on a
    /// full reconcile; apply; record; commit. Only one pass per calendar
    /// runs at a time.
    pub async fn sync_calendar(
        &self,
        cal: &CalendarMeta,
        mode: Mode,
        dry_run: bool,
        now: i64,
    ) -> Result<CalendarReport, EngineError> {
        self.sync_calendar_with(cal, mode, dry_run, now, self.cfg.rules.allow_mass_delete)
            .await
    }

    /// [`Engine::sync_calendar`], with the deletion budget lifted for this
    /// pass only when `allow_mass_delete` (`reconcile --allow-mass-delete`
    /// run by a daemon configured without it).
    pub async fn sync_calendar_with(
        &self,
        cal: &CalendarMeta,
        mode: Mode,
        dry_run: bool,
        now: i64,
        allow_mass_delete: bool,
    ) -> Result<CalendarReport, EngineError> {
        let rules = bridge_core::plan::Rules {
            allow_mass_delete,
            ..self.cfg.rules
        };
        let lock = self.calendar_lock(&cal.id);
        let _guard = lock.lock().await;

        // Read the cursor, and what we knew: the stored hashes only (bodies
        // are loaded when needed).
        let cursor = self.store.get_cursor(&cal.id).await?;
        let token = match mode {
            Mode::Full => None,
            Mode::Incremental => cursor.as_ref().and_then(|c| c.sync_token.clone()),
        };
        let mut prev_hash: BTreeMap<EventKey, ContentHash> = BTreeMap::new();
        let mut prev_att: BTreeMap<EventKey, Mark> = BTreeMap::new();
        for (k, h) in self.store.list_snapshot_hashes(&cal.id).await? {
            let Ok(key) = EventKey::parse(&k) else {
                continue;
            };
            let (hash, mark) = split_stored(&h);
            let Some(hash) = hash else { continue };
            if let Some(m) = mark {
                prev_att.insert(key.clone(), m);
            }
            prev_hash.insert(key, hash);
        }
        let with_attendees = self.cfg.attendees.mode == AttendeeMode::Changed;

        // List and snapshot.
        let mut listed = listing::list_and_snapshot(
            &self.source,
            &self.store,
            cal,
            token.as_deref(),
            &listing::Compare {
                prev: &prev_hash,
                prev_att: &prev_att,
                attendees: with_attendees,
            },
            dry_run,
            now,
        )
        .await?;

        // Attendees: of new or changed events, and a refresh of upcoming
        // ones on a full reconcile.
        let att = if with_attendees {
            attendees::Phase {
                source: &self.source,
                store: &self.store,
                cal,
                prev_att: &prev_att,
                sync: self.cfg.attendees,
                refresh: mode == Mode::Full && listed.complete,
                dry_run,
                now,
            }
            .run(&mut listed.seen, std::mem::take(&mut listed.want))
            .await?
        } else {
            attendees::Resolved::default()
        };
        let complete = listed.complete;
        let mut report = CalendarReport {
            calendar: cal.id.clone(),
            name: cal.name.clone(),
            dry_run,
            full: complete,
            cursor_expired: listed.cursor_expired,
            listed: listed.listed,
            source_calls: listed.calls,
            attendee_calls: att.calls,
            attendees_fetched: att.fetched,
            attendees_refreshed: att.refreshed,
            attendee_failures: att.failed,
            ..CalendarReport::default()
        };

        // Assemble: a full listing replaces the set, a delta patches it.
        let (next, removed) = self
            .assemble(cal, &prev_hash, listed.seen, complete)
            .await?;

        let window = self.cfg.window;
        // What each sink sees: its filters and transforms (`None`: the
        // set as it is), and which items are inside the sync window and
        // the sink's own time frame.
        let views: Vec<Option<&bridge_core::view::View>> = self
            .sinks
            .iter()
            .map(|s| self.cfg.views.get(s.id()).filter(|v| !v.is_identity()))
            .collect();
        let sets: Vec<Option<view::SinkSet>> = views
            .iter()
            .map(|v| v.map(|v| view::apply(v, &next, &removed)))
            .collect();
        let windowed_per_sink: Vec<BTreeMap<&EventKey, bool>> = views
            .iter()
            .map(|v| {
                next.iter()
                    .map(|(k, e)| {
                        (
                            k,
                            in_window(window, now, &e.item) && view::in_frame(*v, now, &e.item),
                        )
                    })
                    .collect()
            })
            .collect();
        // Items of this calendar whose last write failed: (sink, key) -> retry time.
        let failing: HashMap<(String, String), i64> = self
            .store
            .due_failures(i64::MAX)
            .await?
            .into_iter()
            .filter(|(k, _)| k.calendar_id == cal.id)
            .map(|(k, f)| ((k.sink_id, k.event_key), f.next_retry_at))
            .collect();

        // Plan every sink. The deletion budget is the planner's alone: when
        // it holds deletions back for any sink, the pass keeps the removed
        // items' snapshots and the sync token, so the next pass sees them
        // again.
        let mut planned = Vec::with_capacity(self.sinks.len());
        for (i, sink) in self.sinks.iter().enumerate() {
            let cx = PlanContext {
                next: sets[i].as_ref().map_or(&next, |s| &s.next),
                windowed: &windowed_per_sink[i],
                window_configured: window.is_some() || views[i].and_then(|v| v.frame()).is_some(),
                rules: &rules,
                now,
            };
            let records: BTreeMap<EventKey, Record> = self
                .store
                .list_records(sink.id(), &cal.id)
                .await?
                .into_iter()
                .filter_map(|(k, r)| EventKey::parse(&k).ok().map(|k| (k, r)))
                .collect();
            let retry_at =
                |k: &EventKey| failing.get(&(sink.id().to_owned(), k.to_string())).copied();
            let p = plan_sink(cx, &records, &BTreeSet::new(), &retry_at);
            if let Some(b) = &p.blocked {
                report.blocked.get_or_insert_with(|| b.message.clone());
            }
            planned.push((sink.clone(), records, p, cx));
        }
        if let Some(b) = &report.blocked {
            // Said once to the user: in `reconcile`'s report, or by the
            // daemon's worker at warn (`Worker::log_blocked`).
            tracing::info!(calendar = %cal.id, "{b}; the sync token was kept");
        }
        report.items = next.len()
            + if report.blocked.is_some() {
                removed.len()
            } else {
                0
            };

        // Drift repair runs on a full reconcile of a complete listing only:
        // what a sink finds missing on its side is judged against the whole
        // source, never against a delta, a truncated read or a held-back
        // deletion. Its rewrites and tombstones re-plan the sink.
        let mut batch = Batch::new();
        let mut drift_reports: Vec<Option<Drift>> = vec![None; planned.len()];
        if mode == Mode::Full && complete && report.blocked.is_none() {
            for (i, (sink, records, p, cx)) in planned.iter_mut().enumerate() {
                let Target::Replica(replica) = sink.target() else {
                    continue;
                };
                if sink.paused().is_some() {
                    continue;
                }
                let all_series = bridge_core::series::group(cx.next.values().map(|e| &e.item));
                let d = match replica
                    .drift(DriftInput {
                        calendar: cal,
                        series: &all_series,
                        records: &recorded_refs(records),
                        dry_run,
                    })
                    .await
                {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(sink = sink.id(), calendar = %cal.id, error = %e, "drift check failed; skipped this pass");
                        continue;
                    }
                };
                for k in &d.tombstone {
                    if let Some(r) = records.get_mut(k) {
                        r.tombstone = true;
                        if !dry_run {
                            batch.put_record(
                                SinkItemKey::new(sink.id(), &cal.id, k.to_string()),
                                r.clone(),
                            );
                        }
                    }
                }
                if !d.rewrite.is_empty() || !d.tombstone.is_empty() {
                    let rewrite: BTreeSet<EventKey> = d.rewrite.iter().cloned().collect();
                    let retry_at =
                        |k: &EventKey| failing.get(&(sink.id().to_owned(), k.to_string())).copied();
                    *p = plan_sink(*cx, records, &rewrite, &retry_at);
                }
                drift_reports[i] = Some(d);
            }
        }

        // Apply and record, sink by sink.
        let mut sink_reports = Vec::new();
        for (i, ((sink, records, p, cx), drift)) in
            planned.into_iter().zip(drift_reports).enumerate()
        {
            let mut sr = SinkReport {
                sink: sink.id().to_owned(),
                filtered: sets[i].as_ref().map_or(0, |s| s.excluded.len()),
                unchanged: p.unchanged,
                deferred: p.deferred,
                ops: p.ops.clone(),
                held_back: p
                    .blocked
                    .as_ref()
                    .map(|b| b.held.clone())
                    .unwrap_or_default(),
                ..SinkReport::default()
            };
            if let Some(d) = drift {
                sr.orphans_deleted = d.orphans_deleted;
                sr.drift_rewrites = d.rewrite.len();
                sr.tombstoned = d.tombstone.len();
                sr.errors.extend(d.errors);
            }
            if dry_run {
                for op in &p.ops {
                    match op {
                        Op::Create(_) => sr.created += 1,
                        Op::Update(_) => sr.updated += 1,
                        Op::Delete(_) => sr.deleted += 1,
                    }
                }
                sink_reports.push(sr);
                continue;
            }
            let shown = shown(
                cx.next,
                cx.windowed,
                &records,
                p.blocked.is_some(),
                sets[i].as_ref().map_or(&removed, |s| &s.removed),
            );
            let series = bridge_core::series::group(shown);
            let outcomes = apply::apply(sink.as_ref(), cal, &series, &records, &p, now).await;
            self.record(
                cal,
                sink.id(),
                cx.next,
                &p,
                outcomes,
                &failing,
                now,
                &mut sr,
                &mut batch,
            )
            .await?;
            sink_reports.push(sr);
        }
        report.sinks = sink_reports;
        report.events = describe(&report.sinks, &next, &removed);
        if dry_run {
            return Ok(report);
        }

        // Commit: held-back deletions keep their snapshots and the cursor
        // stays, so the next pass sees them again.
        if report.blocked.is_none() {
            for k in prev_hash.keys().filter(|k| !next.contains_key(*k)) {
                batch.delete_snapshot(&cal.id, k.to_string());
            }
            batch.put_cursor(
                cal.id.clone(),
                Cursor {
                    sync_token: listed.sync_token.clone(),
                    obtained_at: now,
                    last_full_sync: if complete {
                        Some(now)
                    } else {
                        cursor.as_ref().and_then(|c| c.last_full_sync)
                    },
                    last_sync: Some(now),
                },
            );
        }
        self.store.apply_batch(batch).await?;
        if report.blocked.is_none() {
            self.remember_departed(cal, &prev_hash, &next, &removed, now)
                .await;
        }
        Ok(report)
    }

    /// Notes the events whose snapshots this pass removed (see `departed`).
    async fn remember_departed(
        &self,
        cal: &CalendarMeta,
        prev_hash: &BTreeMap<EventKey, ContentHash>,
        next: &BTreeMap<EventKey, Entry>,
        removed: &BTreeMap<EventKey, Entry>,
        now: i64,
    ) {
        let new: Vec<departed::Departed> = prev_hash
            .keys()
            .filter(|k| !next.contains_key(*k))
            .map(|k| {
                let (title, start) = match removed.get(k).map(|e| &e.item) {
                    Some(Item::Event(ev)) => (ev.summary.clone(), Some(ev.start.instant())),
                    _ => (String::new(), None),
                };
                let series_gone =
                    k.original_time() != 0 && !next.keys().any(|n| n.uid() == k.uid());
                departed::Departed {
                    key: k.to_string(),
                    title,
                    start,
                    at: now,
                    why: if series_gone {
                        "its series was deleted in Feishu".to_owned()
                    } else {
                        "deleted in Feishu (no longer in its calendar)".to_owned()
                    },
                }
            })
            .collect();
        if new.is_empty() {
            return;
        }
        let name = departed::state_name(&cal.id);
        let old: Vec<departed::Departed> = match self.store.get_state(&name).await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
            _ => Vec::new(),
        };
        let list = departed::merged(old, new, now);
        let result = match serde_json::to_string(&list) {
            Ok(json) => self
                .store
                .put_state(&name, &json)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(calendar = %cal.id, "cannot note the departed events for explain: {e}");
        }
    }

    /// Phase: the new snapshot set, loading the stored bodies the pass
    /// needs (a delta's base, unmappable items kept as they were, vanished
    /// ones for held-back deletions). Returns the items now and the removed.
    async fn assemble(
        &self,
        cal: &CalendarMeta,
        prev_hash: &BTreeMap<EventKey, ContentHash>,
        seen: Vec<Seen>,
        complete: bool,
    ) -> Result<(BTreeMap<EventKey, Entry>, BTreeMap<EventKey, Entry>), EngineError> {
        let with_attendees = self.cfg.attendees.mode == AttendeeMode::Changed;
        let mut base = BTreeMap::new();
        if !complete {
            for (k, snap) in self.store.list_snapshots(&cal.id).await? {
                if let Some((key, e)) = stored_entry(&k, &snap.event_json, with_attendees) {
                    base.insert(key, e);
                }
            }
        }
        let a = assemble::assemble(prev_hash, base, seen, complete);
        let mut stored: BTreeMap<EventKey, Entry> = BTreeMap::new();
        let wanted_n = a.keep_stored.len() + a.vanished.len();
        if wanted_n > 64 {
            let wanted: BTreeSet<String> = a
                .keep_stored
                .iter()
                .chain(&a.vanished)
                .map(|k| k.to_string())
                .collect();
            for (k, snap) in self.store.list_snapshots(&cal.id).await? {
                if wanted.contains(&k)
                    && let Some((key, e)) = stored_entry(&k, &snap.event_json, with_attendees)
                {
                    stored.insert(key, e);
                }
            }
        } else {
            for k in a.keep_stored.iter().chain(&a.vanished) {
                if let Some(snap) = self.store.get_snapshot(&cal.id, &k.to_string()).await?
                    && let Some((key, e)) =
                        stored_entry(&k.to_string(), &snap.event_json, with_attendees)
                {
                    stored.insert(key, e);
                }
            }
        }
        Ok(a.finish(prev_hash, stored))
    }

    /// Phase: records, failures and the report of one sink's outcomes.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        cal: &CalendarMeta,
        sink_id: &str,
        next: &BTreeMap<EventKey, Entry>,
        p: &SinkPlan,
        outcomes: apply::Outcomes,
        failing: &HashMap<(String, String), i64>,
        now: i64,
        sr: &mut SinkReport,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let is_failing = |k: &str| failing.contains_key(&(sink_id.to_owned(), k.to_owned()));
        let items = match outcomes {
            apply::Outcomes::Items(items) => items,
            apply::Outcomes::Failed(e) => {
                // One failure for the whole calendar: one line in the log
                // and the report; each pending item keeps its retry time.
                sr.failed += 1;
                sr.errors.push(e.to_string());
                tracing::warn!(sink = sink_id, calendar = %cal.id, items = p.ops.len(), error = %e, "publishing failed; will retry");
                for op in &p.ops {
                    batch.record_failure(
                        SinkItemKey::new(sink_id, &cal.id, op.key().to_string()),
                        &e.to_string(),
                        now,
                        self.cfg.failure_backoff,
                    );
                }
                return Ok(());
            }
        };
        for o in items {
            if let Err(e) = &o.result
                && e.is_paused()
            {
                // A paused sink keeps its queue: nothing is recorded, the
                // items are planned again once it resumes.
                sr.paused.get_or_insert_with(|| e.to_string());
                sr.deferred += 1;
                continue;
            }
            let key_str = o.op.key().to_string();
            let key = SinkItemKey::new(sink_id, &cal.id, key_str.as_str());
            match (&o.op, o.result) {
                (Op::Create(k) | Op::Update(k), Ok(applied)) => {
                    let rev = p.revisions.get(k).copied().unwrap_or(Revision {
                        sequence: 0,
                        last_modified: now,
                    });
                    batch.put_record(
                        key.clone(),
                        Record {
                            remote_id: applied.id,
                            etag: applied.etag,
                            applied_hash: next
                                .get(k)
                                .map(|e| e.hash.to_string())
                                .unwrap_or_default(),
                            applied_at: rev.last_modified,
                            sequence: rev.sequence,
                            tombstone: false,
                        },
                    );
                    if is_failing(&key_str) {
                        batch.clear_failure(key);
                    }
                    if matches!(o.op, Op::Create(_)) {
                        sr.created += 1;
                    } else {
                        sr.updated += 1;
                    }
                }
                (Op::Delete(_), Ok(_)) => {
                    batch.delete_record(key.clone());
                    if is_failing(&key_str) {
                        batch.clear_failure(key);
                    }
                    sr.deleted += 1;
                }
                (_, Err(e)) => {
                    let message = e.to_string();
                    sr.failed += 1;
                    sr.errors.push(format!("{key_str}: {message}"));
                    tracing::warn!(sink = sink_id, calendar = %cal.id, event = %key_str, error = %message, "item failed; will retry");
                    batch.record_failure(key, &message, now, self.cfg.failure_backoff);
                }
            }
            // Records only state what a sink already holds, so they may be
            // committed in chunks ahead of the final transaction (the one
            // with the cursor); one huge transaction would keep all of its
            // dirty pages in memory.
            if batch.len() >= RECORD_CHUNK {
                self.store.apply_batch(std::mem::take(batch)).await?;
            }
        }
        Ok(())
    }

    /// What the engine decides for `key` of `calendar`, per sink, without
    /// applying anything: the pass's phases over what the store holds
    /// (see [`explain::explain`]). `None` when the store knows nothing of it.
    pub async fn explain(
        &self,
        calendar: &str,
        key: &EventKey,
        now: i64,
    ) -> Result<Option<explain::Explanation>, EngineError> {
        let sinks: Vec<String> = self.sinks.iter().map(|s| s.id().to_owned()).collect();
        explain::explain(&self.store, &self.cfg, &sinks, calendar, key, now).await
    }

    /// A full pass over every configured calendar (or one).
    pub async fn reconcile(
        &self,
        only: Option<&str>,
        dry_run: bool,
        now: i64,
    ) -> Result<Vec<CalendarReport>, EngineError> {
        let calendars = self
            .source
            .calendars()
            .await
            .map_err(|source| EngineError::Source {
                calendar: "(calendar list)".to_owned(),
                source,
            })?;
        let mut out = Vec::new();
        for cal in calendars.iter().filter(|c| only.is_none_or(|o| o == c.id)) {
            out.push(self.sync_calendar(cal, Mode::Full, dry_run, now).await?);
        }
        Ok(out)
    }
}
