//! The change-driven side: hints mark calendars dirty (durably, before the
//! webhook answers), a worker syncs dirty calendars one pass at a time each,
//! after a short debounce, and clears a mark only if no newer hint arrived
//! during the pass.
//!
//! The worker also wakes up by itself: when a failed sink write is due for
//! its retry (the earliest `next_retry_at` of the failure table), and to
//! purge expired delivery-dedupe entries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bridge_feishu::hint::{ChangeHint, Delivery};
use bridge_feishu::webhook::{DeliveryError, DeliverySink};
use bridge_store::{DEFAULT_DEDUPE_TTL, Store, StoreError};
use tokio::sync::{Mutex, Notify, RwLock};
// tokio's clock, so that the debounce follows a paused clock in tests.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{CalendarReport, Engine, EngineError, Mode};
use crate::traits::CalendarMeta;

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Counters for `/metrics` and `status`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub passes: AtomicU64,
    pub events_written: AtomicU64,
    pub item_failures: AtomicU64,
    pub pass_errors: AtomicU64,
    pub hints: AtomicU64,
    pub duplicate_hints: AtomicU64,
    /// Unix seconds of the last successful pass per calendar.
    pub last_sync: std::sync::Mutex<HashMap<String, i64>>,
    /// Set while the store refuses writes (I/O trouble such as a full disk):
    /// hints cannot be made durable, `/healthz` reports degraded. Cleared by
    /// the next successful write of a hint.
    pub store_degraded: AtomicBool,
    /// Per sink id: events written and writes failed since start.
    pub per_sink: std::sync::Mutex<std::collections::BTreeMap<String, SinkTotals>>,
}

/// What one sink did since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkTotals {
    /// Events created, updated or deleted.
    pub written: u64,
    /// Writes that failed (retried later).
    pub failed: u64,
}

/// A store failure as a [`DeliveryError`]: a store that cannot write (a
/// full disk, I/O trouble) is `Unavailable` (503, Feishu retries later) and
/// marks the daemon degraded; input the store refuses is `Failed`.
fn delivery_error(metrics: &Metrics, e: &StoreError) -> DeliveryError {
    if let StoreError::InvalidInput { .. } = e {
        return DeliveryError::Failed(e.to_string());
    }
    metrics.store_degraded.store(true, Ordering::SeqCst);
    DeliveryError::Unavailable(e.to_string())
}

impl Metrics {
    fn record(&self, r: &CalendarReport, now: i64) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        for s in &r.sinks {
            self.events_written.fetch_add(
                (s.created + s.updated + s.deleted) as u64,
                Ordering::Relaxed,
            );
            self.item_failures
                .fetch_add(s.failed as u64, Ordering::Relaxed);
            let mut per_sink = self.per_sink.lock().unwrap_or_else(|e| e.into_inner());
            let t = per_sink.entry(s.sink.clone()).or_default();
            t.written += (s.created + s.updated + s.deleted) as u64;
            t.failed += s.failed as u64;
        }
        self.last_sync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.calendar.clone(), now);
    }
}

#[derive(Debug, Default)]
struct HubState {
    /// Hints received per calendar since start (in-process generation).
    generation: HashMap<String, u64>,
    /// Last hint per calendar, for the debounce.
    last_hint: HashMap<String, Instant>,
    /// The first hint per calendar since its last pass began, for the
    /// debounce's maximum delay.
    first_hint: HashMap<String, Instant>,
}

/// Where hints arrive (webhook route, long connection, poll timer) and where
/// the worker learns what to do.
#[derive(Debug)]
pub struct Hub {
    store: Store,
    state: Mutex<HubState>,
    notify: Notify,
    list_changed: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            state: Mutex::new(HubState::default()),
            notify: Notify::new(),
            list_changed: AtomicBool::new(false),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks a calendar dirty: durable first, then the worker is woken.
    pub async fn hint_calendar(&self, calendar_id: &str, reason: &str) -> Result<(), StoreError> {
        let mut st = self.state.lock().await;
        self.store
            .mark_dirty(calendar_id, reason, unix_now())
            .await?;
        self.metrics.store_degraded.store(false, Ordering::SeqCst);
        *st.generation.entry(calendar_id.to_owned()).or_default() += 1;
        let now = Instant::now();
        st.last_hint.insert(calendar_id.to_owned(), now);
        st.first_hint.entry(calendar_id.to_owned()).or_insert(now);
        drop(st);
        self.metrics.hints.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
        Ok(())
    }

    /// The calendar list changed: the worker re-reads it.
    pub fn hint_calendar_list(&self) {
        self.list_changed.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// A pass of the calendar begins: its hint generation now, and the
    /// maximum delay counts again from the next hint.
    async fn begin_pass(&self, calendar_id: &str) -> u64 {
        let mut st = self.state.lock().await;
        st.first_hint.remove(calendar_id);
        st.generation.get(calendar_id).copied().unwrap_or(0)
    }

    /// Clears the durable mark unless a hint arrived since `generation`.
    async fn clear_if_unchanged(
        &self,
        calendar_id: &str,
        generation: u64,
    ) -> Result<bool, StoreError> {
        let st = self.state.lock().await;
        if st.generation.get(calendar_id).copied().unwrap_or(0) != generation {
            return Ok(false);
        }
        self.store.clear_dirty(calendar_id, i64::MAX).await?;
        Ok(true)
    }

    /// How much longer to wait before syncing the calendar: until it has
    /// been quiet for `debounce`, but never longer than `max_delay` after
    /// the first hint of the batch (a steady stream of hints would otherwise
    /// postpone the sync forever). `None`: sync now.
    async fn quiet_for(
        &self,
        calendar_id: &str,
        debounce: Duration,
        max_delay: Duration,
    ) -> Option<Duration> {
        let st = self.state.lock().await;
        let last = st.last_hint.get(calendar_id)?;
        let quiet = debounce
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())?;
        let left = match st.first_hint.get(calendar_id) {
            Some(first) => max_delay
                .checked_sub(first.elapsed())
                .filter(|d| !d.is_zero())?,
            None => quiet,
        };
        Some(quiet.min(left))
    }
}

#[async_trait]
impl DeliverySink for Hub {
    async fn seen_or_insert(&self, dedupe_key: &str) -> Result<bool, DeliveryError> {
        let seen = self
            .store
            .seen_or_insert(dedupe_key, unix_now(), DEFAULT_DEDUPE_TTL)
            .await
            .map_err(|e| delivery_error(&self.metrics, &e))?;
        if seen {
            self.metrics.duplicate_hints.fetch_add(1, Ordering::Relaxed);
        }
        Ok(seen)
    }

    async fn accept(&self, delivery: Delivery) -> Result<(), DeliveryError> {
        match &delivery.hint {
            ChangeHint::CalendarEventChanged { calendar_id, .. }
                if crate::feishu_source::unusable_calendar_id(calendar_id).is_some() =>
            {
                // Such a calendar is never mirrored (see `SkippedCalendar`);
                // the delivery is answered so that Feishu does not retry it.
                tracing::warn!(calendar = %calendar_id.escape_debug(), "change event for a calendar with an unusable id; ignored");
                Ok(())
            }
            ChangeHint::CalendarEventChanged {
                calendar_id,
                change_type,
                ..
            } => {
                let reason = match change_type {
                    Some(c) => format!("event changed ({c:?})"),
                    None => "event changed".to_owned(),
                };
                self.hint_calendar(calendar_id, &reason)
                    .await
                    .map_err(|e| delivery_error(&self.metrics, &e))
            }
            ChangeHint::CalendarListChanged { .. } | ChangeHint::AclChanged { .. } => {
                self.hint_calendar_list();
                Ok(())
            }
            other => {
                tracing::info!(event_type = %delivery.event_type, hint = ?other, "change event noted; no calendar to sync");
                Ok(())
            }
        }
    }

    async fn forget(&self, dedupe_key: &str) -> Result<(), DeliveryError> {
        self.store
            .forget_seen(dedupe_key)
            .await
            .map(|_| ())
            .map_err(|e| delivery_error(&self.metrics, &e))
    }
}

/// The daemon says at warn when the deletion budget held a pass back (no
/// one reads a report there).
fn log_blocked(report: &CalendarReport) {
    if let Some(b) = &report.blocked {
        tracing::warn!(calendar = %report.calendar, "{b}; the sync token was kept");
    }
}

/// The default maximum delay of a sync after the first pending hint.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(2);

/// How often expired delivery-dedupe entries are purged (and once at start).
pub const DEDUPE_PURGE_EVERY: Duration = Duration::from_secs(15 * 60);

/// Syncs dirty calendars.
#[derive(Debug)]
pub struct Worker {
    engine: Arc<Engine>,
    hub: Arc<Hub>,
    calendars: RwLock<Vec<CalendarMeta>>,
    debounce: Duration,
    max_delay: Duration,
    /// Re-read the calendar list when it changes (`calendars = "all"`).
    follow_list: bool,
    /// Per calendar, the Unix time up to which item failures are covered by
    /// a pass that began (or a retry that was requested) then: a failure
    /// whose `next_retry_at` is not later needs no timer of its own. This is
    /// what keeps a stale failure (an item no pass plans any more) from
    /// waking the worker again and again.
    retries_covered: std::sync::Mutex<HashMap<String, i64>>,
}

impl Worker {
    pub fn new(
        engine: Arc<Engine>,
        hub: Arc<Hub>,
        calendars: Vec<CalendarMeta>,
        debounce: Duration,
        follow_list: bool,
    ) -> Self {
        Self {
            engine,
            hub,
            calendars: RwLock::new(calendars),
            debounce,
            max_delay: DEFAULT_MAX_DELAY,
            follow_list,
            retries_covered: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The longest a sync waits after the first pending hint of a calendar,
    /// however many hints keep arriving ([`DEFAULT_MAX_DELAY`] unless set).
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    fn cover_retries(&self, calendar_id: &str, up_to: i64) {
        let mut covered = self
            .retries_covered
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let at = covered.entry(calendar_id.to_owned()).or_insert(up_to);
        *at = (*at).max(up_to);
    }

    /// The earliest retry time of a failed item that no pass has covered
    /// yet, and the calendars due then.
    async fn next_retry(&self) -> Result<Option<(i64, Vec<String>)>, StoreError> {
        let failures = self.engine.store().due_failures(i64::MAX).await?;
        let covered = self
            .retries_covered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut next: Option<(i64, Vec<String>)> = None;
        for (key, f) in failures {
            if covered
                .get(&key.calendar_id)
                .is_some_and(|c| f.next_retry_at <= *c)
            {
                continue;
            }
            match &mut next {
                Some((at, cals)) if f.next_retry_at == *at => {
                    if !cals.contains(&key.calendar_id) {
                        cals.push(key.calendar_id);
                    }
                }
                Some((at, _)) if f.next_retry_at > *at => {}
                _ => next = Some((f.next_retry_at, vec![key.calendar_id])),
            }
        }
        Ok(next)
    }

    /// Marks the calendars whose failed items are due dirty (durably, like
    /// a hint, but without counting one), so that the next sweep retries them.
    async fn request_retries(&self) -> Result<(), StoreError> {
        let now = unix_now();
        while let Some((at, calendars)) = self.next_retry().await? {
            if at > now {
                break;
            }
            for cal in calendars {
                tracing::info!(calendar = %cal, "failed writes are due for a retry");
                self.engine
                    .store()
                    .mark_dirty(&cal, "retry of failed writes", now)
                    .await?;
                self.cover_retries(&cal, at);
            }
        }
        Ok(())
    }

    /// Removes expired delivery-dedupe entries; returns how many.
    pub async fn purge_dedupe(&self) -> Result<u64, StoreError> {
        let n = self.engine.store().purge_expired(unix_now()).await?;
        if n > 0 {
            tracing::info!(purged = n, "expired delivery dedupe entries removed");
        }
        Ok(n)
    }

    pub async fn calendars(&self) -> Vec<CalendarMeta> {
        self.calendars.read().await.clone()
    }

    /// Marks every calendar dirty (start-up, poll tick).
    pub async fn hint_all(&self, reason: &str) -> Result<(), StoreError> {
        for c in self.calendars().await {
            self.hub.hint_calendar(&c.id, reason).await?;
        }
        Ok(())
    }

    async fn refresh_calendars(&self) {
        match self.engine.source().calendars().await {
            Ok(list) => {
                let old: HashSet<String> =
                    self.calendars().await.into_iter().map(|c| c.id).collect();
                let added: Vec<String> = list
                    .iter()
                    .filter(|c| !old.contains(&c.id))
                    .map(|c| c.id.clone())
                    .collect();
                tracing::info!(
                    calendars = list.len(),
                    added = added.len(),
                    "calendar list re-read"
                );
                *self.calendars.write().await = list;
                for id in added {
                    if let Err(e) = self.hub.hint_calendar(&id, "new calendar").await {
                        tracing::error!("cannot mark {id} dirty: {e}");
                    }
                }
            }
            Err(e) => {
                tracing::warn!("cannot re-read the calendar list: {e}; keeping the old one");
                self.hub.list_changed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// One sweep over the dirty queue. Returns how long to wait before the
    /// next sweep is useful (debounce), if anything was postponed.
    pub async fn sweep(&self) -> Result<Option<Duration>, EngineError> {
        if self.follow_list && self.hub.list_changed.swap(false, Ordering::SeqCst) {
            self.refresh_calendars().await;
        }
        let dirty = self.engine.store().dirty().await?;
        let mut wait: Option<Duration> = None;
        let calendars = self.calendars().await;
        for entry in dirty {
            if let Some(d) = self
                .hub
                .quiet_for(&entry.calendar_id, self.debounce, self.max_delay)
                .await
            {
                wait = Some(wait.map_or(d, |w| w.min(d)));
                continue;
            }
            let generation = self.hub.begin_pass(&entry.calendar_id).await;
            // This pass retries every failed item of the calendar due by now.
            self.cover_retries(&entry.calendar_id, unix_now());
            let Some(cal) = calendars.iter().find(|c| c.id == entry.calendar_id) else {
                tracing::info!(calendar = %entry.calendar_id, "hint for a calendar that is not mirrored; dropped");
                self.hub
                    .clear_if_unchanged(&entry.calendar_id, generation)
                    .await?;
                continue;
            };
            let now = unix_now();
            match self
                .engine
                .sync_calendar(cal, Mode::Incremental, false, now)
                .await
            {
                Ok(report) => {
                    self.hub.metrics.record(&report, now);
                    log_blocked(&report);
                    tracing::info!(
                        calendar = %cal.id,
                        listed = report.listed,
                        written = report.sinks.iter().map(|s| s.created + s.updated + s.deleted).sum::<usize>(),
                        failed = report.failed(),
                        "calendar synced"
                    );
                    self.hub.clear_if_unchanged(&cal.id, generation).await?;
                }
                Err(e @ EngineError::Source { .. }) => {
                    self.hub.metrics.pass_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("{e}; the calendar stays dirty");
                    // Try again later rather than spinning on a failing source.
                    wait = Some(
                        wait.map_or(Duration::from_secs(5), |w| w.min(Duration::from_secs(5))),
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(wait)
    }

    /// Runs until cancelled; a store failure stops it with the error.
    /// Besides hints, it wakes up when a failed write is due for its retry
    /// and every [`DEDUPE_PURGE_EVERY`] to purge the dedupe table.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), EngineError> {
        let mut wait = Some(Duration::ZERO);
        let mut next_purge = Instant::now();
        loop {
            let mut sleep = wait.unwrap_or(Duration::from_secs(60));
            if let Some((at, _)) = self.next_retry().await? {
                let secs = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
                sleep = sleep.min(Duration::from_secs(secs));
            }
            sleep = sleep.min(next_purge.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.hub.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            if Instant::now() >= next_purge {
                // Housekeeping: a failed purge is tried again next time and
                // never stops the syncs.
                if let Err(e) = self.purge_dedupe().await {
                    tracing::warn!("cannot purge expired delivery dedupe entries: {e}");
                }
                next_purge = Instant::now() + DEDUPE_PURGE_EVERY;
            }
            self.request_retries().await?;
            wait = self.sweep().await?;
        }
    }

    /// A full reconcile of every calendar (the periodic repair).
    pub async fn full_pass(&self) -> Result<Vec<CalendarReport>, EngineError> {
        if self.follow_list {
            self.refresh_calendars().await;
        }
        let mut out = Vec::new();
        for cal in self.calendars().await {
            let now = unix_now();
            self.cover_retries(&cal.id, now);
            match self
                .engine
                .sync_calendar(&cal, Mode::Full, false, now)
                .await
            {
                Ok(r) => {
                    self.hub.metrics.record(&r, now);
                    log_blocked(&r);
                    out.push(r);
                }
                Err(e @ EngineError::Source { .. }) => {
                    self.hub.metrics.pass_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("full reconcile: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
