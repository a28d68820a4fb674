//! One calendar, one pass: list -> map -> plan per sink -> apply -> record.
//!
//! The store keeps a snapshot of every source item. A listing updates the
//! snapshots (a full listing replaces them, a delta patches them); every sink
//! is then planned against the whole snapshot set, so an item that failed
//! earlier is simply planned again (level-triggered). Snapshots, sink records,
//! failures and the new sync token are committed in one store transaction
//! after the sinks answered, so the sync token never runs ahead of its items.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bridge_core::feishu::Event;
use bridge_core::hash::ContentHash;
use bridge_core::plan::{Op, RecordView, Rules, SourceState, SourceView, plan};
use bridge_core::{EventKey, Item, Revision, content_hash, map_event};
use bridge_store::{Backoff, Batch, Cursor, Record, SinkItemKey, Snapshot, Store, StoreError};
use tokio::sync::Mutex;

use bridge_target::{
    DriftInput, ItemOutcome, ProjectionInput, Recorded, RemoteRef, ReplicaInput, SeriesOps, Sink,
    Target,
};

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

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub rules: Rules,
    pub window: Option<Window>,
    pub failure_backoff: Backoff,
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
    pub source_calls: u64,
    /// Items in the snapshot after the pass.
    pub items: usize,
    pub sinks: Vec<SinkReport>,
    /// Set when the deletion budget held deletions back.
    pub blocked: Option<String>,
    pub dry_run: bool,
}

impl CalendarReport {
    pub fn failed(&self) -> usize {
        self.sinks.iter().map(|s| s.failed).sum()
    }
}

/// Sink results committed per store transaction before the final one.
const RECORD_CHUNK: usize = 4096;

/// One entry of the snapshot set.
#[derive(Debug, Clone)]
struct Entry {
    hash: ContentHash,
    item: Item,
}

/// The records of a sink as the target seam shows them.
fn recorded_refs(records: &BTreeMap<EventKey, Record>) -> BTreeMap<EventKey, Recorded> {
    records
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                Recorded {
                    remote: RemoteRef {
                        id: r.remote_id.clone(),
                        etag: r.etag.clone(),
                    },
                    tombstone: r.tombstone,
                },
            )
        })
        .collect()
}

/// The planner's ops grouped per uid (in uid order, ops in plan order),
/// each with its series as it stands.
fn series_ops<'a>(series: &'a [bridge_core::Series<'a>], ops: &'a [Op]) -> Vec<SeriesOps<'a>> {
    let mut by_uid: BTreeMap<&'a str, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_uid.entry(op.key().uid()).or_default().push(op.clone());
    }
    by_uid
        .into_iter()
        .map(|(uid, ops)| SeriesOps {
            uid,
            series: series
                .binary_search_by(|s| s.uid.cmp(uid))
                .ok()
                .map(|i| &series[i]),
            ops,
        })
        .collect()
}

/// The sync engine.
#[derive(Debug)]
pub struct Engine {
    source: Arc<dyn Source>,
    sinks: Vec<Arc<dyn Sink>>,
    store: Store,
    cfg: EngineConfig,
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn in_window(window: Option<Window>, now: i64, item: &Item) -> bool {
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

/// One listed event, as the pass keeps it.
enum Seen {
    Entry(EventKey, Entry),
    /// A deleted event or series (`cancelled` with original_time 0).
    Deleted(EventKey),
    /// Could not be mapped: its stored version stays.
    Unmappable(EventKey),
}

/// Maps one event; `None` when it cannot be mapped (logged).
fn map_entry(ev: &Event) -> Option<(EventKey, ContentHash, Item)> {
    let mut warnings = Vec::new();
    match map_event(ev, &mut warnings) {
        Ok(item) => {
            for w in warnings {
                tracing::debug!("{w}");
            }
            let hash = content_hash(&item);
            Some((item.key().clone(), hash, item))
        }
        Err(e) => {
            tracing::warn!("{e}; left as it was");
            None
        }
    }
}

/// An entry from a stored snapshot (unchanged, so no JSON is kept).
fn entry_from_snapshot(key: &str, json: &str) -> Option<(EventKey, Entry)> {
    let Ok(ev) = serde_json::from_str::<Event>(json) else {
        tracing::warn!(key, "unreadable snapshot; it will be listed again");
        return None;
    };
    let (k, hash, item) = map_entry(&ev)?;
    Some((k, Entry { hash, item }))
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

    /// One pass over one calendar. Only one pass per calendar runs at a time.
    pub async fn sync_calendar(
        &self,
        cal: &CalendarMeta,
        mode: Mode,
        dry_run: bool,
        now: i64,
    ) -> Result<CalendarReport, EngineError> {
        let lock = self.calendar_lock(&cal.id);
        let _guard = lock.lock().await;
        let source_err = |source| EngineError::Source {
            calendar: cal.id.clone(),
            source,
        };

        let cursor = self.store.get_cursor(&cal.id).await?;
        let token = match mode {
            Mode::Full => None,
            Mode::Incremental => cursor.as_ref().and_then(|c| c.sync_token.clone()),
        };
        let mut report = CalendarReport {
            calendar: cal.id.clone(),
            name: cal.name.clone(),
            dry_run,
            ..CalendarReport::default()
        };
        // What we knew: the stored hashes only (bodies are loaded when needed).
        let prev_hash: BTreeMap<EventKey, ContentHash> = self
            .store
            .list_snapshot_hashes(&cal.id)
            .await?
            .into_iter()
            .filter_map(|(k, h)| Some((EventKey::parse(&k).ok()?, h.parse().ok()?)))
            .collect();

        // The listing, page by page: each event is mapped as it arrives; the
        // source JSON of new or changed items goes straight to the store as
        // their snapshot (a snapshot only states what the source holds now,
        // so it is safe ahead of the records and of a complete listing; the
        // cursor moves only in the final transaction). Nothing but the mapped
        // items stays in memory.
        let (snap_tx, mut snap_rx) = tokio::sync::mpsc::unbounded_channel::<Batch>();
        let writer = (!dry_run).then(|| {
            let store = self.store.clone();
            tokio::spawn(async move {
                while let Some(b) = snap_rx.recv().await {
                    store.apply_batch(b).await?;
                }
                Ok::<(), StoreError>(())
            })
        });
        let seen: std::sync::Mutex<Vec<Seen>> = std::sync::Mutex::new(Vec::new());
        let listed = std::sync::atomic::AtomicUsize::new(0);
        let mut on_page = |page: Vec<Event>| {
            listed.fetch_add(page.len(), std::sync::atomic::Ordering::Relaxed);
            let mut out = seen.lock().unwrap_or_else(|e| e.into_inner());
            let mut snaps = Batch::new();
            for ev in page {
                out.push(match map_entry(&ev) {
                    None => match ev
                        .event_id
                        .as_deref()
                        .and_then(|id| EventKey::parse(id).ok())
                    {
                        Some(k) => Seen::Unmappable(k),
                        None => continue,
                    },
                    Some((key, _, Item::Cancelled(_))) if key.is_base() => Seen::Deleted(key),
                    Some((key, hash, item)) => {
                        if prev_hash.get(&key) != Some(&hash)
                            && let Ok(json) = serde_json::to_string(&ev)
                        {
                            snaps.put_snapshot(
                                cal.id.as_str(),
                                key.to_string(),
                                Snapshot {
                                    event_json: json,
                                    content_hash: hash.to_string(),
                                    updated_at: now,
                                },
                            );
                        }
                        Seen::Entry(key, Entry { hash, item })
                    }
                });
            }
            if !dry_run && !snaps.is_empty() {
                let _ = snap_tx.send(snaps);
            }
        };
        let listed_result = match self
            .source
            .list_pages(&cal.id, token.as_deref(), &mut on_page)
            .await
        {
            Err(SourceError::CursorExpired) => {
                tracing::info!(calendar = %cal.id, "sync token expired; listing in full");
                report.cursor_expired = true;
                seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
                listed.store(0, std::sync::atomic::Ordering::Relaxed);
                self.source.list_pages(&cal.id, None, &mut on_page).await
            }
            other => other,
        };
        drop(snap_tx);
        if let Some(w) = writer {
            match w.await {
                Ok(r) => r?,
                Err(e) => {
                    return Err(EngineError::Store(StoreError::Task(format!(
                        "snapshot writer: {e}"
                    ))));
                }
            }
        }
        let listing = listed_result.map_err(source_err)?;
        let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
        let new_sync_token = listing.sync_token;
        let complete = listing.complete;
        report.full = complete;
        report.listed = listed.into_inner();
        report.source_calls = listing.calls;

        // The new snapshot set: a full listing replaces it, a delta patches it.
        let mut next: BTreeMap<EventKey, Entry> = BTreeMap::new();
        let mut taken: BTreeMap<EventKey, Entry> = BTreeMap::new();
        if !complete {
            for (k, snap) in self.store.list_snapshots(&cal.id).await? {
                if let Some((key, e)) = entry_from_snapshot(&k, &snap.event_json) {
                    next.insert(key, e);
                }
            }
        }
        let mut keep_stored: Vec<EventKey> = Vec::new();
        for s in seen {
            match s {
                Seen::Entry(key, e) => {
                    next.insert(key, e);
                }
                Seen::Deleted(key) => {
                    // A deleted event or series: its exceptions go with it.
                    let gone: Vec<EventKey> = next
                        .keys()
                        .filter(|k| k.uid() == key.uid())
                        .cloned()
                        .collect();
                    for k in gone {
                        if let Some(e) = next.remove(&k) {
                            taken.insert(k, e);
                        }
                    }
                }
                // Unmappable: keep what we had, so that a bad event never deletes.
                Seen::Unmappable(k) if complete && prev_hash.contains_key(&k) => {
                    keep_stored.push(k)
                }
                Seen::Unmappable(_) => {}
            }
        }
        // Bodies of stored items the pass still needs: unmappable ones kept
        // as they were, and vanished ones (budget restores, and whole-calendar
        // sinks while a deletion is held back).
        let vanished: Vec<EventKey> = prev_hash
            .keys()
            .filter(|k| !next.contains_key(*k) && !taken.contains_key(*k))
            .cloned()
            .collect();
        let mut stored: BTreeMap<EventKey, Entry> = BTreeMap::new();
        if keep_stored.len() + vanished.len() > 64 {
            let wanted: BTreeSet<String> = keep_stored
                .iter()
                .chain(&vanished)
                .map(|k| k.to_string())
                .collect();
            for (k, snap) in self.store.list_snapshots(&cal.id).await? {
                if wanted.contains(&k)
                    && let Some((key, e)) = entry_from_snapshot(&k, &snap.event_json)
                {
                    stored.insert(key, e);
                }
            }
        } else {
            for k in keep_stored.iter().chain(&vanished) {
                if let Some(snap) = self.store.get_snapshot(&cal.id, &k.to_string()).await?
                    && let Some((key, e)) = entry_from_snapshot(&k.to_string(), &snap.event_json)
                {
                    stored.insert(key, e);
                }
            }
        }
        for k in keep_stored {
            if let Some(e) = stored.remove(&k) {
                next.insert(k, e);
            }
        }
        let mut removed: BTreeMap<EventKey, Entry> = BTreeMap::new();
        for k in prev_hash.keys().filter(|k| !next.contains_key(*k)) {
            if let Some(e) = taken.remove(k).or_else(|| stored.remove(k)) {
                removed.insert(k.clone(), e);
            }
        }
        drop(taken);
        drop(stored);

        // The deletion budget, counted in series (a deleted master and its
        // exceptions are one deletion).
        let removed_series: BTreeSet<&str> = prev_hash
            .keys()
            .filter(|k| !next.contains_key(*k))
            .map(|k| k.uid())
            .collect();
        let total_series: BTreeSet<&str> = prev_hash.keys().map(|k| k.uid()).collect();
        let rules = &self.cfg.rules;
        let n = removed_series.len();
        let over = n > rules.max_delete_count
            || (n > rules.min_delete_for_fraction
                && (n as f64) > rules.max_delete_fraction * total_series.len() as f64);
        if over && !rules.allow_mass_delete {
            let msg = format!(
                "{n} of {} events of calendar {} would be deleted, more than the deletion budget \
                 ({} events or {:.0}%); nothing was deleted and the sync token was kept. If they \
                 were really deleted in Feishu, run `feishu-bridge reconcile --allow-mass-delete`",
                total_series.len(),
                cal.id,
                rules.max_delete_count,
                rules.max_delete_fraction * 100.0
            );
            tracing::warn!("{msg}");
            for (k, e) in std::mem::take(&mut removed) {
                next.insert(k, e);
            }
            report.blocked = Some(msg);
        }
        report.items = next.len();

        let window = self.cfg.window;
        let windowed: BTreeMap<&EventKey, bool> = next
            .iter()
            .map(|(k, e)| (k, in_window(window, now, &e.item)))
            .collect();
        let src: BTreeMap<EventKey, SourceState> = next
            .iter()
            .map(|(k, e)| (k.clone(), SourceState::Live(e.hash)))
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
        let mut batch = Batch::new();
        let mut sink_futures = Vec::new();
        // Drift repair runs on a full reconcile of a complete listing only:
        // what a sink finds missing on its side is judged against the whole
        // source, never against a delta or a truncated read.
        let drift_check = mode == Mode::Full && complete && report.blocked.is_none();
        let all_series = if drift_check {
            bridge_core::series::group(next.values().map(|e| &e.item))
        } else {
            Vec::new()
        };
        for sink in &self.sinks {
            let mut records: BTreeMap<EventKey, Record> = self
                .store
                .list_records(sink.id(), &cal.id)
                .await?
                .into_iter()
                .filter_map(|(k, r)| EventKey::parse(&k).ok().map(|k| (k, r)))
                .collect();
            let mut rewrite: BTreeSet<EventKey> = BTreeSet::new();
            let mut drift_report = None;
            if drift_check
                && sink.paused().is_none()
                && let Target::Replica(replica) = sink.target()
            {
                match replica
                    .drift(DriftInput {
                        calendar: cal,
                        series: &all_series,
                        records: &recorded_refs(&records),
                        dry_run,
                    })
                    .await
                {
                    Ok(d) => {
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
                        rewrite.extend(d.rewrite.iter().cloned());
                        drift_report = Some(d);
                    }
                    Err(e) => {
                        tracing::warn!(sink = sink.id(), calendar = %cal.id, error = %e, "drift check failed; skipped this pass");
                    }
                }
            }
            let recorded: BTreeMap<EventKey, RecordView> = records
                .iter()
                .map(|(k, r)| {
                    let applied_hash = if rewrite.contains(k) {
                        ContentHash([0; 32])
                    } else if r.tombstone {
                        // Deleted on the target and to stay so: never
                        // rewritten, only forgotten once the source drops it.
                        next.get(k).map_or(ContentHash([0; 32]), |e| e.hash)
                    } else {
                        r.applied_hash.parse().unwrap_or(ContentHash([0; 32]))
                    };
                    (k.clone(), RecordView { applied_hash })
                })
                .collect();
            // Recorded items outside the window are left alone, never deleted.
            let in_win = |k: &EventKey| {
                windowed
                    .get(k)
                    .copied()
                    .unwrap_or(window.is_none() || !records.contains_key(k))
            };
            let p = plan(SourceView::Complete(&src), &recorded, &in_win, rules);
            let mut sr = SinkReport {
                sink: sink.id().to_owned(),
                unchanged: p.unchanged,
                ..SinkReport::default()
            };
            if let Some(d) = drift_report {
                sr.orphans_deleted = d.orphans_deleted;
                sr.drift_rewrites = d.rewrite.len();
                sr.tombstoned = d.tombstone.len();
                sr.errors.extend(d.errors);
            }
            let sink_blocked = p.blocked.is_some();
            if let Some(b) = &p.blocked {
                report.blocked.get_or_insert_with(|| b.message.clone());
            }
            // Ops whose last failure asks to wait are deferred (one read of
            // the failure table, not one per op).
            let mut ops = Vec::with_capacity(p.ops.len());
            for op in p.ops {
                match failing.get(&(sink.id().to_owned(), op.key().to_string())) {
                    Some(retry_at) if *retry_at > now => sr.deferred += 1,
                    _ => ops.push(op),
                }
            }
            let mut revisions = HashMap::new();
            for (k, r) in &records {
                revisions.insert(
                    k.clone(),
                    Revision {
                        sequence: r.sequence,
                        last_modified: r.applied_at,
                    },
                );
            }
            for op in &ops {
                match op {
                    Op::Create(k) => {
                        revisions.insert(
                            k.clone(),
                            Revision {
                                sequence: 0,
                                last_modified: now,
                            },
                        );
                    }
                    Op::Update(k) => {
                        let seq = records.get(k).map_or(0, |r| r.sequence.saturating_add(1));
                        revisions.insert(
                            k.clone(),
                            Revision {
                                sequence: seq,
                                last_modified: now,
                            },
                        );
                    }
                    Op::Delete(_) => {}
                }
            }
            sr.ops = ops.clone();
            sink_futures.push((sink.clone(), sr, ops, revisions, records, sink_blocked));
        }

        // What whole-calendar sinks show: every item in the window, plus
        // anything already written (outside the window is never removed).
        let mut sink_reports = Vec::new();
        for (sink, mut sr, ops, revisions, records, sink_blocked) in sink_futures {
            let mut shown: BTreeMap<&EventKey, &Item> = next
                .iter()
                .filter(|(k, _)| {
                    windowed.get(k).copied().unwrap_or(true) || records.contains_key(*k)
                })
                .map(|(k, e)| (k, &e.item))
                .collect();
            if sink_blocked {
                // Deletions held back: whole-calendar sinks keep showing them.
                for k in records.keys().filter(|k| !next.contains_key(*k)) {
                    if let Some(e) = removed.get(k) {
                        shown.insert(k, &e.item);
                    }
                }
            }
            let series = bridge_core::series::group(shown.into_values());
            if dry_run {
                for op in &ops {
                    match op {
                        Op::Create(_) => sr.created += 1,
                        Op::Update(_) => sr.updated += 1,
                        Op::Delete(_) => sr.deleted += 1,
                    }
                }
                sink_reports.push(sr);
                continue;
            }
            let outcomes = match sink.target() {
                Target::Replica(replica) => {
                    let refs = recorded_refs(&records);
                    let ops = series_ops(&series, &ops);
                    replica
                        .apply(ReplicaInput {
                            calendar: cal,
                            series: &series,
                            ops: &ops,
                            records: &refs,
                            now,
                        })
                        .await
                        .into_iter()
                        .flat_map(|s| s.items)
                        .collect::<Vec<ItemOutcome>>()
                }
                Target::Projection(projection) => {
                    let published = projection
                        .publish(ProjectionInput {
                            calendar: cal,
                            series: &series,
                            revisions: &revisions,
                            changed: !ops.is_empty(),
                            now,
                        })
                        .await;
                    let result = match published {
                        Ok(p) => Ok(RemoteRef {
                            id: p.location,
                            etag: None,
                        }),
                        Err(e) => {
                            // One failure for the whole calendar: one line in
                            // the log and the report; each pending item keeps
                            // its retry time.
                            sr.failed += 1;
                            sr.errors.push(e.to_string());
                            tracing::warn!(sink = sink.id(), calendar = %cal.id, items = ops.len(), error = %e, "publishing failed; will retry");
                            for op in &ops {
                                batch.record_failure(
                                    SinkItemKey::new(sink.id(), &cal.id, op.key().to_string()),
                                    &e.to_string(),
                                    now,
                                    self.cfg.failure_backoff,
                                );
                            }
                            sink_reports.push(sr);
                            continue;
                        }
                    };
                    ops.iter()
                        .map(|op| ItemOutcome {
                            op: op.clone(),
                            result: result.clone(),
                        })
                        .collect()
                }
            };
            for o in outcomes {
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
                let key = SinkItemKey::new(sink.id(), &cal.id, key_str.as_str());
                match (&o.op, o.result) {
                    (Op::Create(k) | Op::Update(k), Ok(applied)) => {
                        let rev = revisions.get(k).copied().unwrap_or(Revision {
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
                        if failing.contains_key(&(sink.id().to_owned(), key_str.clone())) {
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
                        if failing.contains_key(&(sink.id().to_owned(), key_str.clone())) {
                            batch.clear_failure(key);
                        }
                        sr.deleted += 1;
                    }
                    (_, Err(e)) => {
                        sr.failed += 1;
                        let message = e.to_string();
                        sr.errors.push(format!("{key_str}: {message}"));
                        tracing::warn!(sink = sink.id(), calendar = %cal.id, event = %key_str, error = %message, "item failed; will retry");
                        batch.record_failure(key, &message, now, self.cfg.failure_backoff);
                    }
                }
                // Records only state what a sink already holds, so they may
                // be committed in chunks ahead of the final transaction (the
                // one with the cursor); one huge transaction would keep all
                // of its dirty pages in memory.
                if batch.len() >= RECORD_CHUNK {
                    self.store.apply_batch(std::mem::take(&mut batch)).await?;
                }
            }
            sink_reports.push(sr);
        }
        report.sinks = sink_reports;
        if dry_run {
            return Ok(report);
        }

        // Held-back deletions keep their snapshots (and the cursor is not
        // advanced), so the next pass sees them again.
        if report.blocked.is_none() {
            for k in prev_hash.keys().filter(|k| !next.contains_key(*k)) {
                batch.delete_snapshot(&cal.id, k.to_string());
            }
        }
        if report.blocked.is_none() {
            batch.put_cursor(
                cal.id.clone(),
                Cursor {
                    sync_token: new_sync_token.clone(),
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
        Ok(report)
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
