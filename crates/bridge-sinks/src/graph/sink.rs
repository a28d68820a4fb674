//! The Microsoft Graph target, a [`Replica`] of one mailbox calendar.
//!
//! Graph assigns event ids, so identity rests on two things (graph.md §2,
//! §4): a `transactionId` on every create, derived from the source key (and,
//! for a master, its rule and start), so a create repeated after a crash is
//! answered with the event it made instead of a second one; and our tags
//! (single-value extended properties: the source key, the applied content
//! hash, the source calendar), so an event can be found again by `$filter`
//! when Graph refuses the repeated transactionId for a changed body.
//!
//! Per apply, writes run in `$batch`es of at most 20 (one batch in flight per
//! mailbox, Graph runs four of its parts at once), in two phases:
//!
//! 1. singles, masters and deletes of whole series: POST (with
//!    `transactionId`), PATCH (with `If-Match`; a 412 re-reads and applies
//!    again, a 404 creates anew), DELETE (404 is done);
//! 2. once a master is written, its modified occurrences are PATCHed on their
//!    occurrence ids and its cancelled occurrences DELETEd. An occurrence id
//!    comes from the record, else from `instances` in a window of a day
//!    around its original start. A master that was written has all of its
//!    occurrence changes applied again: a PATCH that changes the rule makes
//!    Exchange rebuild the series, which drops its exceptions, so the
//!    current ones are written again and no stale occurrence stays. A
//!    cancellation taken back cannot be undone on an occurrence: the series
//!    is deleted and written anew.
//!
//! Rules Microsoft's patterns cannot express are written as single
//! occurrences within a horizon (tagged with each occurrence's key), with a
//! warning; every write of such a series reconciles that set by tag.
//!
//! Credentials refused by the identity platform and mailboxes Graph cannot
//! use (`MailboxNotEnabledForRESTAPI`, `ErrorAccessDenied`) pause this sink
//! with a message saying what to fix; other sinks go on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bridge_core::plan::Op;
use bridge_core::{CanonicalEvent, EventKey, EventTime, Privacy, Series};
use bridge_target::{
    CalendarMeta, Drift, DriftInput, ItemOutcome, RemoteRef, Replica, ReplicaInput, SeriesOps,
    SeriesOutcome, Sink, SinkError, StateStore, Target,
};
use serde_json::{Value, json};

use super::client::{GraphClient, Method, Request, Response, seg};
use super::error::GraphError;
use super::resource::{self, Options, Shape, tag_ids, tagged, tags_of, transaction_id};
use crate::microsoft::exact;
use crate::microsoft::recurrence::Recurrence;
use crate::microsoft::tag::{KEY_PROPERTY, graph_property_id};

/// Rounds of 412 / 404 / duplicate-transaction resolution per phase.
const MAX_ROUNDS: usize = 4;
/// How far ahead a rule without a Microsoft pattern is written as singles.
const FALLBACK_HORIZON: i64 = 400 * 86_400;
/// How far back such a rule's occurrences are written (the past of a
/// mirror that keeps months of history).
const FALLBACK_PAST: i64 = 2 * 366 * 86_400;
/// Most single occurrences written for one such rule.
const FALLBACK_MAX: usize = 500;
/// The state naming the calendar created per source calendar.
pub const CALENDAR_STATE: &str = "graph_calendar";

/// What to do with an event a user deleted in Outlook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTargetDelete {
    /// Write it again (the source is the truth).
    #[default]
    Restore,
    /// Leave it deleted (a tombstone record keeps it so).
    Respect,
}

impl std::str::FromStr for OnTargetDelete {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "restore" => Ok(Self::Restore),
            "respect" => Ok(Self::Respect),
            other => Err(format!("{other:?} is not one of \"restore\", \"respect\"")),
        }
    }
}

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCalendar {
    /// The mailbox's default calendar.
    Primary,
    /// The calendar of this name (created when `create` is set).
    Named { name: String, create: bool },
}

/// Settings of one Graph sink.
#[derive(Debug, Clone)]
pub struct GraphSinkConfig {
    /// `graph:<name>`.
    pub id: String,
    pub privacy: Privacy,
    pub calendar: TargetCalendar,
    pub on_target_delete: OnTargetDelete,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Graph sink.
#[derive(Debug)]
pub struct GraphSink {
    cfg: GraphSinkConfig,
    client: Mutex<Option<GraphClient>>,
    pub(super) state: Arc<dyn StateStore>,
    pause: Mutex<Option<String>>,
    calendar_id: tokio::sync::Mutex<Option<String>>,
    /// One change-feed round at a time (see `drift::occurrence_drift`).
    feed: tokio::sync::Mutex<()>,
    /// Occurrence ids deleted by the `apply` under way (their removal in
    /// the change feed is ours).
    removed_now: Mutex<BTreeSet<String>>,
}

impl GraphSink {
    /// A sink; without a client (no credentials) it is paused with `why`.
    pub fn new(
        cfg: GraphSinkConfig,
        client: Result<GraphClient, String>,
        state: Arc<dyn StateStore>,
    ) -> Self {
        let (client, pause) = match client {
            Ok(c) => {
                c.keep_tokens_in(state.clone());
                (Some(c), None)
            }
            Err(why) => (None, Some(why)),
        };
        Self {
            cfg,
            client: Mutex::new(client),
            state,
            pause: Mutex::new(pause),
            calendar_id: tokio::sync::Mutex::new(None),
            feed: tokio::sync::Mutex::new(()),
            removed_now: Mutex::new(BTreeSet::new()),
        }
    }

    /// API calls by endpoint template and HTTP status (0: no answer), for
    /// `/metrics`.
    pub fn calls(&self) -> std::collections::BTreeMap<(String, u16), u64> {
        lock(&self.client)
            .as_ref()
            .map(|c| c.stats().snapshot())
            .unwrap_or_default()
    }

    /// New credentials (after `auth graph`): resumes a paused sink.
    pub fn set_client(&self, client: GraphClient) {
        client.keep_tokens_in(self.state.clone());
        *lock(&self.client) = Some(client);
        *lock(&self.pause) = None;
    }

    pub fn config(&self) -> &GraphSinkConfig {
        &self.cfg
    }

    /// The client (for statistics).
    pub fn client(&self) -> Option<GraphClient> {
        lock(&self.client).clone()
    }

    fn paused_for(&self, e: &GraphError) -> Option<String> {
        if !e.is_fatal() {
            return None;
        }
        let m = format!("{e}");
        tracing::error!(sink = %self.cfg.id, "{m}; the Graph sink pauses, other sinks go on");
        *lock(&self.pause) = Some(m.clone());
        Some(m)
    }

    pub(crate) fn sink_error(&self, e: &GraphError) -> SinkError {
        match self.paused_for(e) {
            Some(m) => SinkError::Paused(m),
            None if e.is_transient() => SinkError::Transient {
                message: e.to_string(),
                retry_after: e.retry_after(),
            },
            None => SinkError::transient(e.to_string()),
        }
    }

    fn ready(&self) -> Result<GraphClient, SinkError> {
        if let Some(m) = lock(&self.pause).clone() {
            return Err(SinkError::Paused(m));
        }
        self.client().ok_or_else(|| {
            SinkError::Paused("not authorized: run `feishu-bridge auth graph`".into())
        })
    }

    /// The target calendar's id (resolved once; created when configured).
    pub async fn calendar(&self, client: &GraphClient) -> Result<String, GraphError> {
        let mut cached = self.calendar_id.lock().await;
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        let user = client.user_path();
        let id = match &self.cfg.calendar {
            TargetCalendar::Primary => {
                let r = client
                    .execute(&Request::new(Method::Get, format!("{user}/calendar")))
                    .await?;
                r.body["id"]
                    .as_str()
                    .ok_or_else(|| GraphError::Decode("the default calendar has no id".into()))?
                    .to_owned()
            }
            TargetCalendar::Named { name, create } => {
                let stored = self
                    .state
                    .get(CALENDAR_STATE, name)
                    .await
                    .map_err(|e| GraphError::Config(e.to_string()))?
                    .and_then(|j| serde_json::from_str::<Value>(&j).ok())
                    .and_then(|v| v["id"].as_str().map(str::to_owned));
                let all = client
                    .list_all(
                        Request::new(Method::Get, format!("{user}/calendars")).query("$top", "100"),
                    )
                    .await?;
                let by_name = all.iter().find(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                });
                let by_stored = stored
                    .as_ref()
                    .and_then(|s| all.iter().find(|c| c["id"] == s.as_str()));
                match by_stored.or(by_name) {
                    Some(c) => c["id"].as_str().unwrap_or_default().to_owned(),
                    None if *create => {
                        let r = client
                            .execute(
                                &Request::new(Method::Post, format!("{user}/calendars"))
                                    .body(json!({"name": name})),
                            )
                            .await?;
                        let id = r.body["id"]
                            .as_str()
                            .ok_or_else(|| GraphError::Decode("the new calendar has no id".into()))?
                            .to_owned();
                        self.state
                            .put(CALENDAR_STATE, name, &json!({"id": id}).to_string())
                            .await
                            .map_err(|e| GraphError::Config(e.to_string()))?;
                        tracing::info!(sink = %self.cfg.id, calendar = %name, "created the Graph calendar");
                        id
                    }
                    None => {
                        return Err(GraphError::Config(format!(
                            "mailbox {} has no calendar named {name:?}; create it in Outlook or set create_calendar = true",
                            client.config().mailbox
                        )));
                    }
                }
            }
        };
        *cached = Some(id.clone());
        Ok(id)
    }
}

/// What the series holds at one key.
enum Found<'a> {
    Event(&'a CanonicalEvent),
    Cancelled,
    Absent,
}

fn found<'a>(series: Option<&Series<'a>>, key: &EventKey) -> Found<'a> {
    match series {
        Some(s) if s.is_cancelled(key) => Found::Cancelled,
        Some(s) => s.event(key).map_or(Found::Absent, Found::Event),
        None => Found::Absent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Post,
    Patch,
    Delete,
}

/// Where an occurrence is: its master and original start.
#[derive(Debug, Clone)]
struct Occurrence {
    master_id: String,
    original: i64,
    all_day: bool,
    /// The instant Exchange generates for it: the original time, except
    /// for the second of two equal wall-clock times, which a master's
    /// wall-clock start resolves to the first (see `instant`).
    generated: i64,
    /// The series' zone, when timed.
    tz: Option<chrono_tz::Tz>,
}

impl Occurrence {
    fn new(master: &CanonicalEvent, master_id: &str, original: i64) -> Self {
        let generated = match master.start {
            EventTime::Zoned { tz, .. } => {
                original
                    - bridge_core::instant::wall_clock_error(&EventTime::Zoned { at: original, tz })
            }
            _ => original,
        };
        Self {
            master_id: master_id.to_owned(),
            original,
            all_day: master.start.is_date(),
            generated,
            tz: master.start.tz(),
        }
    }
}

/// One write and the ops it answers.
#[derive(Debug, Clone)]
struct Write {
    kind: Kind,
    /// Graph id (empty: unknown yet, see `occurrence` / POST).
    id: String,
    body: Option<Value>,
    etag: Option<String>,
    /// `transactionId` of a POST.
    txn: Option<String>,
    /// The tag key (to find the event again).
    key: String,
    ops: Vec<Op>,
    /// An occurrence of a series (looked up through `instances`).
    occurrence: Option<Occurrence>,
    /// An occurrence that may not exist: absence is success (a revert, a
    /// cancellation).
    absent_ok: bool,
    /// The uid of the master this write is (phase 2 waits for it).
    master_of: Option<String>,
    tries: usize,
}

impl Write {
    fn new(kind: Kind, key: &EventKey, ops: Vec<Op>) -> Self {
        Self {
            kind,
            id: String::new(),
            body: None,
            etag: None,
            txn: None,
            key: key.to_string(),
            ops,
            occurrence: None,
            absent_ok: false,
            master_of: None,
            tries: 0,
        }
    }

    fn request(&self, user: &str, calendar: &str) -> Request {
        match self.kind {
            Kind::Post => {
                let mut b = self.body.clone().unwrap_or(Value::Null);
                if let Some(t) = &self.txn {
                    b["transactionId"] = json!(t);
                }
                Request::new(
                    Method::Post,
                    format!("{user}/calendars/{}/events", seg(calendar)),
                )
                .body(b)
            }
            Kind::Patch => Request::new(Method::Patch, format!("{user}/events/{}", seg(&self.id)))
                .body(self.body.clone().unwrap_or(Value::Null))
                .if_match(self.etag.clone()),
            Kind::Delete => {
                Request::new(Method::Delete, format!("{user}/events/{}", seg(&self.id)))
            }
        }
    }
}

fn outcome(op: &Op, result: Result<RemoteRef, SinkError>) -> ItemOutcome {
    ItemOutcome {
        op: op.clone(),
        result,
    }
}

fn answer_ok(out: &mut Vec<ItemOutcome>, w: &Write, id: &str, etag: Option<String>) {
    for op in &w.ops {
        out.push(outcome(
            op,
            Ok(RemoteRef {
                id: id.to_owned(),
                etag: etag.clone(),
            }),
        ));
    }
}

fn answer_err(out: &mut Vec<ItemOutcome>, w: &Write, e: &GraphError) {
    let err = if e.is_transient() {
        SinkError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        SinkError::Permanent(e.to_string())
    };
    for op in &w.ops {
        out.push(outcome(op, Err(err.clone())));
    }
}

/// A master's content at one of its occurrences (to revert a modification).
pub(crate) fn reverted(master: &CanonicalEvent, original: i64) -> Option<CanonicalEvent> {
    let key = EventKey::new(master.key.uid(), original).ok()?;
    let mut ev = master.clone();
    let start = master.start.same_form(original);
    let length = master.end.instant() - master.start.instant();
    ev.end = match (&master.end, start) {
        (EventTime::Date(_), EventTime::Date(d)) => {
            EventTime::Date(d + chrono::Days::new((length / 86_400).max(1) as u64))
        }
        _ => master.end.same_form(start.instant() + length),
    };
    ev.start = start;
    ev.rrule = None;
    ev.rrule_bound = None;
    ev.key = key;
    Some(ev)
}

/// The series signature a master's transactionId covers.
fn series_seed(ev: &CanonicalEvent, cancelled: &[i64]) -> String {
    match &ev.rrule {
        None => String::new(),
        Some(rule) => format!("{rule}\u{1f}{}\u{1f}{cancelled:?}", ev.start.instant()),
    }
}

/// The writes of one apply.
#[derive(Default)]
struct Plan {
    first: Vec<Write>,
    /// Per master uid: the occurrence writes of phase 2.
    second: Vec<Write>,
    free: Vec<ItemOutcome>,
    /// Series written as single occurrences (no Microsoft pattern): uid ->
    /// ops to answer once the set is reconciled.
    fallback: Vec<(String, Vec<Op>)>,
}

impl GraphSink {
    fn opts<'a>(&self, cal: &'a CalendarMeta) -> Options<'a> {
        Options {
            privacy: self.cfg.privacy,
            source_calendar: &cal.id,
            calendar_zone: cal.timezone.as_deref().and_then(|z| z.parse().ok()),
        }
    }

    pub(crate) fn body(&self, ev: &CanonicalEvent, shape: Shape<'_>, cal: &CalendarMeta) -> Value {
        tagged(
            resource::event_json(ev, shape, &self.opts(cal)),
            &ev.key.to_string(),
            &cal.id,
        )
    }

    /// The occurrence writes of a master: every override and cancellation.
    fn occurrence_writes(
        &self,
        series: &Series<'_>,
        master: &CanonicalEvent,
        master_id: &str,
        ops: &mut BTreeMap<EventKey, Vec<Op>>,
        records: &BTreeMap<EventKey, bridge_target::Recorded>,
        cal: &CalendarMeta,
    ) -> Vec<Write> {
        let mut out = Vec::new();
        let occ = |t: i64| Occurrence::new(master, master_id, t);
        // Occurrence ids survive a PATCH of the master; a stale one (a
        // master written anew) answers 404 and is looked up again.
        let recorded = |k: &EventKey| {
            records
                .get(k)
                .map(|r| r.remote.id.clone())
                .filter(|id| !id.is_empty() && !id.starts_with(CANCELLED_MARK))
        };
        for o in &series.overrides {
            // Deleted in Outlook and kept so (`on_target_delete = "respect"`).
            if records.get(&o.key).is_some_and(|r| r.tombstone) {
                continue;
            }
            let mut w = Write::new(Kind::Patch, &o.key, ops.remove(&o.key).unwrap_or_default());
            w.body = Some(self.body(o, Shape::Occurrence, cal));
            w.id = recorded(&o.key).unwrap_or_default();
            w.occurrence = Some(occ(o.key.original_time()));
            out.push(w);
        }
        for t in &series.cancelled {
            let Ok(k) = EventKey::new(series.uid, *t) else {
                continue;
            };
            let mut w = Write::new(Kind::Delete, &k, ops.remove(&k).unwrap_or_default());
            w.id = recorded(&k).unwrap_or_default();
            w.occurrence = Some(occ(*t));
            w.absent_ok = true;
            out.push(w);
        }
        // The first occurrence's exact instants when its wall clock is read
        // otherwise (instant::fix_series).
        if let Some(fix) = series.wall_clock_fix()
            && let Some(first) = fix.first
        {
            let k = master.key.clone();
            let mut w = Write::new(
                Kind::Patch,
                &EventKey::new(series.uid, master.start.instant()).unwrap_or(k),
                Vec::new(),
            );
            w.body = Some(self.body(&first.event, Shape::Occurrence, cal));
            w.occurrence = Some(occ(master.start.instant()));
            w.absent_ok = true;
            out.push(w);
        }
        // Later occurrences in a repeated or skipped hour, or spanning an
        // offset change, at Feishu's exact instants (microsoft::exact).
        for o in exact::exact_occurrences(series, exact::horizon()) {
            let Ok(k) = EventKey::new(series.uid, o.original) else {
                continue;
            };
            let mut w = Write::new(Kind::Patch, &k, Vec::new());
            w.body = Some(self.body(&o.event, Shape::Occurrence, cal));
            w.occurrence = Some(occ(o.original));
            w.absent_ok = true;
            out.push(w);
        }
        out
    }

    /// Decides the writes of the planned ops.
    fn plan(&self, input: &ReplicaInput<'_>, calendar: &str) -> Plan {
        let cal = input.calendar;
        let records = input.records;
        let mut p = Plan::default();
        for so in input.ops {
            if so.ops.is_empty() {
                continue;
            }
            let series = so.series;
            let base = series.and_then(|s| s.base);
            let master = series.and_then(Series::master);
            let rec: Option<Result<Recurrence, String>> =
                master.map(|m| resource::recurrence_of(m).map_err(|u| u.0));
            if let (Some(Err(why)), Some(_)) = (&rec, master) {
                tracing::warn!(sink = %self.cfg.id, uid = so.uid, "the rule has no Microsoft pattern ({why}); its occurrences are written as single events");
                let base_key =
                    EventKey::new(so.uid, 0).unwrap_or_else(|_| so.ops[0].key().master());
                if let Some(r) = records
                    .get(&base_key)
                    .filter(|r| !r.remote.id.is_empty() && !r.remote.id.starts_with(FALLBACK_MARK))
                {
                    // The rule had a pattern before: that series goes.
                    let mut d = Write::new(Kind::Delete, &base_key, Vec::new());
                    d.id = r.remote.id.clone();
                    p.first.push(d);
                }
                p.fallback.push((so.uid.to_owned(), so.ops.clone()));
                continue;
            }
            let base_key = EventKey::new(so.uid, 0).unwrap_or_else(|_| so.ops[0].key().master());
            let base_record = records.get(&base_key).filter(|r| !r.remote.id.is_empty());
            // Ops by key.
            let mut ops: BTreeMap<EventKey, Vec<Op>> = BTreeMap::new();
            for op in &so.ops {
                ops.entry(op.key().clone()).or_default().push(op.clone());
            }
            // A recorded fallback set (the rule had no pattern before): its
            // singles are removed by the fallback reconciliation.
            let was_fallback = base_record.is_some_and(|r| r.remote.id.starts_with(FALLBACK_MARK));
            if was_fallback {
                p.fallback.push((so.uid.to_owned(), Vec::new()));
            }
            let base_record = base_record.filter(|_| !was_fallback);
            // The base.
            let base_ops = ops.remove(&base_key).unwrap_or_default();
            let mut write_master = false;
            let mut recreate = false;
            if master.is_some() {
                // A cancellation taken back: Graph cannot restore one
                // occurrence, so the series is written anew.
                let uncancelled = ops.keys().any(|k| {
                    records
                        .get(k)
                        .is_some_and(|r| r.remote.id.starts_with(CANCELLED_MARK))
                        && !matches!(found(series, k), Found::Cancelled)
                });
                recreate = uncancelled && base_record.is_some();
                write_master = !base_ops.is_empty() || recreate || base_record.is_none();
            }
            match (base, base_ops.first()) {
                (None, Some(_)) | (Some(_), Some(Op::Delete(_))) => {
                    // The series (or single) is gone.
                    let w = match base_record {
                        Some(r) => {
                            let mut w = Write::new(Kind::Delete, &base_key, base_ops.clone());
                            w.id = r.remote.id.clone();
                            w
                        }
                        None => {
                            for op in &base_ops {
                                p.free.push(outcome(op, Ok(RemoteRef::default())));
                            }
                            Write::new(Kind::Delete, &base_key, Vec::new())
                        }
                    };
                    if !w.id.is_empty() {
                        p.first.push(w);
                    }
                    // Occurrence ops go with it.
                    for (_, v) in std::mem::take(&mut ops) {
                        for op in v {
                            p.free.push(outcome(&op, Ok(RemoteRef::default())));
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(b) = base
                && (master.is_none() && !base_ops.is_empty() || write_master)
            {
                let shape = match &rec {
                    Some(Ok(r)) => Shape::Master(r),
                    _ => Shape::Single,
                };
                let written = match (master, series.and_then(Series::wall_clock_fix)) {
                    (Some(_), Some(fix)) => fix.master,
                    _ => b.clone(),
                };
                let mut w = Write::new(Kind::Post, &base_key, base_ops.clone());
                if w.ops.is_empty() {
                    w.ops.push(Op::Update(base_key.clone()));
                }
                w.body = Some(self.body(&written, shape, cal));
                let cancelled: &[i64] = series.map_or(&[], |s| &s.cancelled);
                w.txn = Some(transaction_id(
                    &self.cfg.id,
                    calendar,
                    &cal.id,
                    &base_key.to_string(),
                    &series_seed(b, cancelled),
                ));
                if master.is_some() {
                    w.master_of = Some(so.uid.to_owned());
                }
                match base_record {
                    Some(r) if recreate => {
                        let mut d = Write::new(Kind::Delete, &base_key, Vec::new());
                        d.id = r.remote.id.clone();
                        p.first.push(d);
                    }
                    Some(r) => {
                        w.kind = Kind::Patch;
                        w.id = r.remote.id.clone();
                        w.etag = r.remote.etag.clone();
                    }
                    None => {}
                }
                p.first.push(w);
            }
            // Occurrence ops.
            match master {
                Some(m) if !write_master => {
                    // The master stays: only the occurrences with ops.
                    let master_id = base_record.map(|r| r.remote.id.clone()).unwrap_or_default();
                    for (k, v) in std::mem::take(&mut ops) {
                        let occ = Occurrence::new(m, &master_id, k.original_time());
                        let recorded = records
                            .get(&k)
                            .map(|r| r.remote.id.clone())
                            .filter(|i| !i.is_empty() && !i.starts_with(CANCELLED_MARK));
                        let mut w = match found(series, &k) {
                            Found::Event(ev) => {
                                let mut w = Write::new(Kind::Patch, &k, v);
                                w.body = Some(self.body(ev, Shape::Occurrence, cal));
                                w
                            }
                            Found::Cancelled => {
                                let mut w = Write::new(Kind::Delete, &k, v);
                                w.absent_ok = true;
                                w
                            }
                            Found::Absent => {
                                // A modification gone: back to the master's content.
                                let Some(ev) = reverted(m, k.original_time()) else {
                                    continue;
                                };
                                let mut w = Write::new(Kind::Patch, &k, v);
                                w.body = Some(self.body(&ev, Shape::Occurrence, cal));
                                w.absent_ok = true;
                                w
                            }
                        };
                        w.id = recorded.unwrap_or_default();
                        w.occurrence = Some(occ);
                        p.second.push(w);
                    }
                }
                Some(_) => {
                    // Written in phase 2 once the master id is known.
                    let mut rest: Vec<Write> = Vec::new();
                    for (k, v) in std::mem::take(&mut ops) {
                        // Ops of occurrences the series no longer lists.
                        if !matches!(found(series, &k), Found::Event(_) | Found::Cancelled) {
                            for op in v {
                                p.free.push(outcome(&op, Ok(RemoteRef::default())));
                            }
                        } else {
                            let mut w = Write::new(Kind::Patch, &k, v);
                            w.master_of = Some(format!("{PENDING_MARK}{}", so.uid));
                            rest.push(w);
                        }
                    }
                    // Placeholders carrying the ops; expanded after phase 1.
                    p.second.extend(rest);
                }
                None => {
                    // No mirrored master: occurrences are standalone events.
                    for (k, v) in std::mem::take(&mut ops) {
                        let rec = records.get(&k).filter(|r| !r.remote.id.is_empty());
                        match found(series, &k) {
                            Found::Event(ev) => {
                                let mut w = Write::new(Kind::Post, &k, v);
                                w.body = Some(self.body(ev, Shape::Single, cal));
                                w.txn = Some(transaction_id(
                                    &self.cfg.id,
                                    calendar,
                                    &cal.id,
                                    &k.to_string(),
                                    "",
                                ));
                                if let Some(r) = rec {
                                    w.kind = Kind::Patch;
                                    w.id = r.remote.id.clone();
                                    w.etag = r.remote.etag.clone();
                                }
                                p.first.push(w);
                            }
                            _ => match rec {
                                Some(r) if !r.remote.id.starts_with(CANCELLED_MARK) => {
                                    let mut w = Write::new(Kind::Delete, &k, v);
                                    w.id = r.remote.id.clone();
                                    p.first.push(w);
                                }
                                _ => {
                                    for op in v {
                                        p.free.push(outcome(&op, Ok(RemoteRef::default())));
                                    }
                                }
                            },
                        }
                    }
                }
            }
        }
        p
    }
}

/// Record id of a cancelled occurrence whose id is unknown.
const CANCELLED_MARK: &str = "cancelled:";
/// Record id of a series written as single occurrences.
const FALLBACK_MARK: &str = "singles:";
/// `master_of` of a phase-2 placeholder.
const PENDING_MARK: &str = "\u{0}";

pub(crate) fn parse_utc(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp())
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|d| d.and_utc().timestamp())
        })
}

fn iso(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl GraphSink {
    /// Runs writes until each is done or failed; `Err` for a fatal error.
    async fn execute(
        &self,
        client: &GraphClient,
        calendar: &str,
        mut pending: Vec<Write>,
        out: &mut Vec<ItemOutcome>,
        masters: &mut HashMap<String, String>,
    ) -> Result<(), GraphError> {
        let user = client.user_path();
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            // Occurrences without an id: look them up first.
            let (lookup, ready): (Vec<Write>, Vec<Write>) = pending
                .into_iter()
                .partition(|w| w.id.is_empty() && w.occurrence.is_some());
            let mut again: Vec<Write> = Vec::new();
            if !lookup.is_empty() {
                let reqs: Vec<Request> = lookup
                    .iter()
                    .map(|w| {
                        let o = w.occurrence.as_ref().expect("partitioned");
                        let pad = if o.all_day { 2 * 86_400 } else { 86_400 };
                        Request::new(
                            Method::Get,
                            format!("{user}/events/{}/instances", seg(&o.master_id)),
                        )
                        .query("startDateTime", iso(o.original - pad))
                        .query("endDateTime", iso(o.original + pad))
                        .query("$select", "id,originalStart,type")
                        .query("$top", "100")
                    })
                    .collect();
                let res = client.batch(&reqs).await?;
                for (mut w, r) in lookup.into_iter().zip(res) {
                    let o = w.occurrence.clone().expect("partitioned");
                    let tolerance = if o.all_day { 14 * 3600 } else { 0 };
                    match r {
                        Ok(resp) => {
                            let listed = || {
                                resp.body["value"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|v| {
                                        Some((v, v["originalStart"].as_str().and_then(parse_utc)?))
                                    })
                            };
                            let hit = listed()
                                .find(|(_, t)| {
                                    (t - o.original).abs() <= tolerance || *t == o.generated
                                })
                                .or_else(|| {
                                    // Exchange read a repeated or skipped
                                    // wall-clock time otherwise.
                                    let tz = o.tz?;
                                    listed().find(|(_, t)| exact::other_reading(tz, *t, o.original))
                                })
                                .map(|(v, _)| v);
                            match hit.and_then(|v| v["id"].as_str()) {
                                Some(id) => {
                                    w.id = id.to_owned();
                                    again.push(w);
                                }
                                None if w.absent_ok || w.kind == Kind::Delete => {
                                    let id = if w.kind == Kind::Delete {
                                        format!("{CANCELLED_MARK}{}", o.original)
                                    } else {
                                        String::new()
                                    };
                                    answer_ok(out, &w, &id, None)
                                }
                                None => answer_err(
                                    out,
                                    &w,
                                    &GraphError::Api {
                                        status: 404,
                                        code: "ErrorItemNotFound".into(),
                                        message: format!(
                                            "the series has no occurrence at {}",
                                            iso(o.original)
                                        ),
                                        retry_after: None,
                                    },
                                ),
                            }
                        }
                        Err(e) if e.status() == Some(404) => {
                            answer_err(out, &w, &GraphError::transient_missing_master())
                        }
                        Err(e) => answer_err(out, &w, &e),
                    }
                }
            }
            let reqs: Vec<Request> = ready.iter().map(|w| w.request(&user, calendar)).collect();
            let results = client.batch(&reqs).await?;
            let mut reads: Vec<Write> = Vec::new();
            let mut by_tag: Vec<Write> = Vec::new();
            for (mut w, r) in ready.into_iter().zip(results) {
                match (w.kind, r) {
                    (Kind::Delete, Ok(_)) => answer_ok(
                        out,
                        &w,
                        &if w.occurrence.is_some() {
                            lock(&self.removed_now).insert(w.id.clone());
                            format!(
                                "{CANCELLED_MARK}{}",
                                w.occurrence.as_ref().map_or(0, |o| o.original)
                            )
                        } else {
                            String::new()
                        },
                        None,
                    ),
                    (Kind::Delete, Err(e))
                        if e.status() == Some(404) && w.occurrence.is_some() && w.tries == 0 =>
                    {
                        // A stale occurrence id: look it up again.
                        w.tries += 1;
                        w.id.clear();
                        again.push(w);
                    }
                    (Kind::Delete, Err(e)) if e.status() == Some(404) => {
                        answer_ok(out, &w, "", None)
                    }
                    (_, Ok(resp)) => self.written(out, &w, &resp, masters),
                    (Kind::Patch, Err(e)) if e.status() == Some(412) => reads.push(w),
                    (Kind::Patch, Err(e)) if e.status() == Some(404) && w.occurrence.is_some() => {
                        if w.tries == 0 {
                            // A stale occurrence id: look it up again.
                            w.tries += 1;
                            w.id.clear();
                            again.push(w);
                        } else if w.absent_ok {
                            answer_ok(out, &w, "", None);
                        } else {
                            answer_err(out, &w, &e);
                        }
                    }
                    (Kind::Patch, Err(e)) if e.status() == Some(404) && w.txn.is_some() => {
                        // Deleted behind our back: create it anew, under a
                        // transactionId of its own (Graph may remember the
                        // first one, graph.md §4), derived from the gone id so
                        // that a retry after a crash repeats it.
                        w.txn = w.txn.as_ref().map(|t| {
                            resource::transaction_id(&self.cfg.id, calendar, t, &w.key, &w.id)
                        });
                        w.kind = Kind::Post;
                        w.id.clear();
                        w.etag = None;
                        again.push(w);
                    }
                    (Kind::Post, Err(e))
                        if matches!(e.status(), Some(400 | 409))
                            && e.code() == Some("ErrorDuplicateTransactionId") =>
                    {
                        by_tag.push(w)
                    }
                    (_, Err(e)) => answer_err(out, &w, &e),
                }
            }
            if !reads.is_empty() {
                let reqs: Vec<Request> = reads
                    .iter()
                    .map(|w| {
                        Request::new(Method::Get, format!("{user}/events/{}", seg(&w.id)))
                            .query("$select", "id")
                    })
                    .collect();
                for (mut w, r) in reads.into_iter().zip(client.batch(&reqs).await?) {
                    w.tries += 1;
                    match r {
                        // Changed since our write: ours is the truth, write it over.
                        Ok(resp) => {
                            w.etag = resp.etag();
                            again.push(w);
                        }
                        Err(e) => answer_err(out, &w, &e),
                    }
                }
            }
            if !by_tag.is_empty() {
                let key_id = graph_property_id(KEY_PROPERTY);
                let reqs: Vec<Request> = by_tag
                    .iter()
                    .map(|w| {
                        Request::new(Method::Get, format!("{user}/calendars/{}/events", seg(calendar)))
                            .query("$filter", format!("singleValueExtendedProperties/Any(ep: ep/id eq '{key_id}' and ep/value eq '{}')", w.key.replace('\'', "''")))
                            .query("$select", "id")
                    })
                    .collect();
                for (mut w, r) in by_tag.into_iter().zip(client.batch(&reqs).await?) {
                    w.tries += 1;
                    match r.map(|resp| resp.body["value"].as_array().and_then(|a| a.first()).cloned()) {
                        Ok(Some(v)) => {
                            // Adopted: the event a lost answer created.
                            tracing::info!(sink = %self.cfg.id, key = %w.key, "adopted an event created before a crash");
                            w.kind = Kind::Patch;
                            w.id = v["id"].as_str().unwrap_or_default().to_owned();
                            w.etag = v["@odata.etag"].as_str().map(str::to_owned);
                            again.push(w);
                        }
                        Ok(None) => answer_err(out, &w, &GraphError::Api { status: 409, code: "ErrorDuplicateTransactionId".into(), message: "the transactionId was used for an event that is no longer in the calendar".into(), retry_after: None }),
                        Err(e) => answer_err(out, &w, &e),
                    }
                }
            }
            pending = again;
        }
        for w in pending {
            answer_err(
                out,
                &w,
                &GraphError::Api {
                    status: 503,
                    code: "KeptChanging".into(),
                    message: format!("event {} kept changing while being written", w.key),
                    retry_after: None,
                },
            );
        }
        Ok(())
    }

    fn written(
        &self,
        out: &mut Vec<ItemOutcome>,
        w: &Write,
        resp: &Response,
        masters: &mut HashMap<String, String>,
    ) {
        let id = resp.body["id"].as_str().unwrap_or(&w.id).to_owned();
        if let Some(uid) = &w.master_of {
            masters.insert(uid.clone(), id.clone());
        }
        answer_ok(out, w, &id, resp.etag());
    }
}

impl GraphError {
    fn transient_missing_master() -> Self {
        GraphError::Api {
            status: 503,
            code: "ErrorItemNotFound".into(),
            message: "the series master is not in the calendar yet".into(),
            retry_after: None,
        }
    }
}

impl GraphSink {
    /// The item outcomes of one apply.
    async fn apply_items(&self, input: &ReplicaInput<'_>) -> Vec<ItemOutcome> {
        let all_ops = || input.ops.iter().flat_map(|so| so.ops.iter());
        let fail_all = |e: SinkError| {
            all_ops()
                .map(|op| outcome(op, Err(e.clone())))
                .collect::<Vec<_>>()
        };
        let client = match self.ready() {
            Ok(c) => c,
            Err(e) => return fail_all(e),
        };
        let calendar = match self.calendar(&client).await {
            Ok(c) => c,
            Err(e) => return fail_all(self.sink_error(&e)),
        };
        let plan = self.plan(input, &calendar);
        let mut out = plan.free;
        let mut masters: HashMap<String, String> = HashMap::new();
        if let Err(e) = self
            .execute(&client, &calendar, plan.first, &mut out, &mut masters)
            .await
        {
            return self.fatal(e, input, out);
        }
        // Phase 2: occurrences of masters (re)written now, then the rest.
        let by_uid: HashMap<&str, &SeriesOps<'_>> =
            input.ops.iter().map(|so| (so.uid, so)).collect();
        let mut second: Vec<Write> = Vec::new();
        let mut pending_ops: BTreeMap<String, BTreeMap<EventKey, Vec<Op>>> = BTreeMap::new();
        for w in plan.second {
            match w
                .master_of
                .as_deref()
                .and_then(|m| m.strip_prefix(PENDING_MARK))
            {
                Some(uid) => {
                    pending_ops.entry(uid.to_owned()).or_default().insert(
                        EventKey::parse(&w.key).unwrap_or_else(|_| w.ops[0].key().clone()),
                        w.ops,
                    );
                }
                None => second.push(w),
            }
        }
        for (uid, id) in &masters {
            let Some(so) = by_uid.get(uid.as_str()) else {
                continue;
            };
            let (Some(series), Some(master)) = (so.series, so.series.and_then(Series::master))
            else {
                continue;
            };
            let mut ops = pending_ops.remove(uid).unwrap_or_default();
            second.extend(self.occurrence_writes(
                series,
                master,
                id,
                &mut ops,
                input.records,
                input.calendar,
            ));
            for (k, v) in ops {
                // A modification gone while the master was written: the
                // occurrence goes back to the master's content (absent when a
                // new rule dropped it).
                let recorded = input
                    .records
                    .get(&k)
                    .map(|r| r.remote.id.clone())
                    .filter(|i| !i.is_empty() && !i.starts_with(CANCELLED_MARK));
                match (recorded, reverted(master, k.original_time())) {
                    (Some(_), Some(ev)) => {
                        let mut w = Write::new(Kind::Patch, &k, v);
                        w.body = Some(self.body(&ev, Shape::Occurrence, input.calendar));
                        w.occurrence = Some(Occurrence::new(master, id, k.original_time()));
                        w.absent_ok = true;
                        second.push(w);
                    }
                    _ => {
                        for op in v {
                            out.push(outcome(&op, Ok(RemoteRef::default())));
                        }
                    }
                }
            }
        }
        // The master could not be written: its occurrences wait.
        for (_, ops) in pending_ops {
            for (_, v) in ops {
                for op in v {
                    out.push(outcome(
                        &op,
                        Err(SinkError::transient(
                            "the series master could not be written",
                        )),
                    ));
                }
            }
        }
        let (ready, blocked): (Vec<Write>, Vec<Write>) = second.into_iter().partition(|w| {
            w.occurrence
                .as_ref()
                .is_some_and(|o| !o.master_id.is_empty())
        });
        for w in blocked {
            answer_err(&mut out, &w, &GraphError::transient_missing_master());
        }
        if let Err(e) = self
            .execute(&client, &calendar, ready, &mut out, &mut masters)
            .await
        {
            return self.fatal(e, input, out);
        }
        for (uid, ops) in plan.fallback {
            let so = by_uid.get(uid.as_str()).copied();
            match self.fallback(&client, &calendar, so, input).await {
                Ok(marker) => {
                    for op in ops {
                        let id = if op.key().is_base() {
                            marker.clone()
                        } else {
                            String::new()
                        };
                        out.push(outcome(&op, Ok(RemoteRef { id, etag: None })));
                    }
                }
                Err(e) if e.is_fatal() => return self.fatal(e, input, out),
                Err(e) => {
                    for op in ops {
                        out.push(outcome(
                            &op,
                            Err(SinkError::Transient {
                                message: e.to_string(),
                                retry_after: e.retry_after(),
                            }),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Reconciles the single occurrences of a series without a Microsoft
    /// pattern: lists our events tagged `<uid>_…`, deletes those not wanted,
    /// writes the wanted ones. Returns the base record's id.
    async fn fallback(
        &self,
        client: &GraphClient,
        calendar: &str,
        so: Option<&SeriesOps<'_>>,
        input: &ReplicaInput<'_>,
    ) -> Result<String, GraphError> {
        let uid = so.map(|s| s.uid).unwrap_or_default();
        let user = client.user_path();
        let key_id = graph_property_id(KEY_PROPERTY);
        let [k, h, c] = tag_ids();
        let listed = client
            .list_all(
                Request::new(Method::Get, format!("{user}/calendars/{}/events", seg(calendar)))
                    .query("$filter", format!("singleValueExtendedProperties/Any(ep: ep/id eq '{key_id}' and startswith(ep/value, '{}_'))", uid.replace('\'', "''")))
                    .query("$expand", format!("singleValueExtendedProperties($filter=id eq '{k}' or id eq '{h}' or id eq '{c}')"))
                    .query("$top", "1000"),
            )
            .await?;
        let cal = input.calendar;
        // What the series wants now.
        let mut wanted: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(series) = so.and_then(|s| s.series)
            && let Some(m) = series.master()
            && resource::recurrence_of(m).is_err()
        {
            let from = input.now - FALLBACK_PAST;
            let starts = crate::microsoft::recurrence::occurrences(
                m,
                from,
                input.now + FALLBACK_HORIZON,
                FALLBACK_MAX,
            )
            .map_err(GraphError::Config)?;
            for t in starts {
                let Ok(key) = EventKey::new(uid, t) else {
                    continue;
                };
                if series.is_cancelled(&key) {
                    continue;
                }
                let ev = match series.event(&key) {
                    Some(o) => o.clone(),
                    None => match reverted(m, t) {
                        Some(e) => e,
                        None => continue,
                    },
                };
                wanted.insert(key.to_string(), self.body(&ev, Shape::Single, cal));
            }
        }
        let mut writes: Vec<Write> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for v in &listed {
            let (key, hash, vcal) = tags_of(v);
            let (Some(key), Some(id)) = (key, v["id"].as_str()) else {
                continue;
            };
            if vcal.as_deref() != Some(cal.id.as_str()) {
                continue;
            }
            let Ok(ek) = EventKey::parse(&key) else {
                continue;
            };
            if ek.is_base() {
                // The master of a series that has a pattern again.
                continue;
            }
            match wanted.get(&key) {
                Some(body) if seen.insert(key.clone()) => {
                    if hash.as_deref() != tags_of(body).1.as_deref() {
                        let mut w = Write::new(Kind::Patch, &ek, Vec::new());
                        w.id = id.to_owned();
                        w.body = Some(body.clone());
                        writes.push(w);
                    }
                }
                _ => {
                    let mut w = Write::new(Kind::Delete, &ek, Vec::new());
                    w.id = id.to_owned();
                    writes.push(w);
                }
            }
        }
        for (key, body) in &wanted {
            if seen.contains(key) {
                continue;
            }
            let Ok(ek) = EventKey::parse(key) else {
                continue;
            };
            let mut w = Write::new(Kind::Post, &ek, Vec::new());
            w.body = Some(body.clone());
            w.txn = Some(transaction_id(
                &self.cfg.id,
                calendar,
                &cal.id,
                key,
                "singles",
            ));
            writes.push(w);
        }
        for w in &mut writes {
            // An op per write, so that each answers.
            if let Ok(k) = EventKey::parse(&w.key) {
                w.ops = vec![Op::Update(k)];
            }
        }
        let mut out = Vec::new();
        let mut masters = HashMap::new();
        self.execute(client, calendar, writes, &mut out, &mut masters)
            .await?;
        if let Some(e) = out.iter().find_map(|o| o.result.as_ref().err()) {
            return Err(GraphError::Transport(format!(
                "single occurrences of {uid}: {e}"
            )));
        }
        Ok(if wanted.is_empty() {
            String::new()
        } else {
            format!("{FALLBACK_MARK}{}", wanted.len())
        })
    }

    /// A fatal error mid-apply: every op not answered yet is paused.
    fn fatal(
        &self,
        e: GraphError,
        input: &ReplicaInput<'_>,
        mut out: Vec<ItemOutcome>,
    ) -> Vec<ItemOutcome> {
        let err = self.sink_error(&e);
        let answered: BTreeSet<Op> = out.iter().map(|o| o.op.clone()).collect();
        for op in input.ops.iter().flat_map(|so| &so.ops) {
            if !answered.contains(op) {
                out.push(outcome(op, Err(err.clone())));
            }
        }
        out
    }
}

/// Item outcomes grouped per series, in the input's order; one per op (the
/// first answer of an op wins).
fn per_series(input: &ReplicaInput<'_>, items: Vec<ItemOutcome>) -> Vec<SeriesOutcome> {
    let mut by_op: BTreeMap<Op, ItemOutcome> = BTreeMap::new();
    for o in items {
        by_op.entry(o.op.clone()).or_insert(o);
    }
    input
        .ops
        .iter()
        .map(|so| SeriesOutcome {
            uid: so.uid.to_owned(),
            items: so
                .ops
                .iter()
                .map(|op| {
                    by_op.remove(op).unwrap_or_else(|| {
                        outcome(op, Err(SinkError::transient("no answer for this item")))
                    })
                })
                .collect(),
        })
        .collect()
}

impl Sink for GraphSink {
    fn target(&self) -> Target<'_> {
        Target::Replica(self)
    }
}

#[async_trait]
impl Replica for GraphSink {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn paused(&self) -> Option<String> {
        lock(&self.pause).clone()
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let client = self.ready()?;
        self.calendar(&client)
            .await
            .map(|_| ())
            .map_err(|e| self.sink_error(&e))
    }

    async fn apply(&self, input: ReplicaInput<'_>) -> Vec<SeriesOutcome> {
        if input.ops.iter().all(|so| so.ops.is_empty()) {
            return Vec::new();
        }
        let items = self.apply_items(&input).await;
        // Applies running at once share the set: every id in it is ours.
        let _feed = self.feed.lock().await;
        let removed = std::mem::take(&mut *lock(&self.removed_now));
        if let Ok(client) = self.ready()
            && let Some(calendar) = self.calendar_id.lock().await.clone()
        {
            self.acknowledge_writes(&client, &calendar, &input, &items, removed)
                .await;
        }
        per_series(&input, items)
    }

    /// Lists our tagged singles and masters of the source calendar (a
    /// failed or cut listing is an error: nothing is deleted from it).
    async fn drift(&self, input: DriftInput<'_>) -> Result<Drift, SinkError> {
        let _feed = self.feed.lock().await;
        let client = self.ready()?;
        let calendar = self
            .calendar(&client)
            .await
            .map_err(|e| self.sink_error(&e))?;
        let cal = input.calendar;
        let user = client.user_path();
        let [k, h, c] = tag_ids();
        let remote = client
            .list_all(
                Request::new(Method::Get, format!("{user}/calendars/{}/events", seg(&calendar)))
                    .query("$filter", format!("singleValueExtendedProperties/Any(ep: ep/id eq '{c}' and ep/value eq '{}')", cal.id.replace('\'', "''")))
                    .query("$expand", format!("singleValueExtendedProperties($filter=id eq '{k}' or id eq '{h}' or id eq '{c}')"))
                    .query("$select", "id,type")
                    .query("$top", "1000"),
            )
            .await
            .map_err(|e| self.sink_error(&e))?;
        let by_id: HashMap<&str, &Value> = remote
            .iter()
            .filter_map(|v| Some((v["id"].as_str()?, v)))
            .collect();
        let by_uid: HashMap<&str, &Series<'_>> = input.series.iter().map(|s| (s.uid, s)).collect();
        let mut drift = Drift::default();
        for (key, r) in input.records {
            let id = r.remote.id.as_str();
            if r.tombstone
                || id.is_empty()
                || id.starts_with(CANCELLED_MARK)
                || id.starts_with(FALLBACK_MARK)
            {
                continue;
            }
            // Occurrence records are checked through their master.
            let Found::Event(_) = found(by_uid.get(key.uid()).copied(), key) else {
                continue;
            };
            let standalone =
                key.is_base() || by_uid.get(key.uid()).is_some_and(|s| s.master().is_none());
            if !standalone {
                continue;
            }
            match by_id.get(id) {
                None => match self.cfg.on_target_delete {
                    OnTargetDelete::Restore => drift.rewrite.push(key.clone()),
                    OnTargetDelete::Respect => drift.tombstone.push(key.clone()),
                },
                Some(v) => {
                    let etag = v["@odata.etag"].as_str();
                    if r.remote.etag.is_some() && etag != r.remote.etag.as_deref() {
                        drift.rewrite.push(key.clone());
                    }
                }
            }
        }
        // Ours but not recorded under that id: orphans and duplicates.
        let recorded: HashMap<&EventKey, &str> = input
            .records
            .iter()
            .filter(|(_, r)| !r.tombstone)
            .map(|(k, r)| (k, r.remote.id.as_str()))
            .collect();
        let mut deletes: Vec<String> = Vec::new();
        let occurrences = self
            .occurrence_drift(&client, &calendar, &input, &by_id, &mut drift)
            .await?;
        for v in &remote {
            let Some(id) = v["id"].as_str() else { continue };
            let (key, _, vcal) = tags_of(v);
            if vcal.as_deref() != Some(cal.id.as_str()) {
                continue;
            }
            let Some(key) = key.and_then(|k| EventKey::parse(&k).ok()) else {
                continue;
            };
            let series = by_uid.get(key.uid()).copied();
            let live = matches!(found(series, &key), Found::Event(_));
            // Singles of a rule without a pattern belong to its base.
            let fallback_single = !key.is_base()
                && series
                    .and_then(Series::master)
                    .is_some_and(|m| resource::recurrence_of(m).is_err());
            if fallback_single {
                continue;
            }
            match recorded.get(&key) {
                Some(r) if *r == id => {}
                // Created but never recorded (a crash): adopted by the next create.
                None if live => {}
                Some(r) if r.is_empty() && live => {}
                _ if !live || recorded.contains_key(&key) => deletes.push(id.to_owned()),
                _ => {}
            }
        }
        drift.rewrite.sort();
        drift.rewrite.dedup();
        if input.dry_run {
            drift.orphans_deleted = deletes.len();
            return Ok(drift);
        }
        let user = client.user_path();
        let (masters, repairs): (Vec<String>, Vec<Request>) =
            occurrences.writes.into_iter().unzip();
        let reqs: Vec<Request> = deletes
            .iter()
            .map(|id| Request::new(Method::Delete, format!("{user}/events/{}", seg(id))))
            .chain(repairs)
            .collect();
        let results = client.batch(&reqs).await.map_err(|e| self.sink_error(&e))?;
        let (orphans, repairs) = results.split_at(deletes.len().min(results.len()));
        let mut failed = std::collections::BTreeSet::new();
        for ((req, master), r) in reqs[deletes.len()..].iter().zip(&masters).zip(repairs) {
            match r {
                Ok(_) => {}
                // Gone meanwhile (a series deleted to be written anew).
                Err(e) if e.status() == Some(404) => {}
                Err(e) => {
                    drift.errors.push(format!("{}: {e}", req.path));
                    failed.insert(master.clone());
                }
            }
        }
        // A part without an answer is checked again too.
        failed.extend(masters.iter().skip(repairs.len()).cloned());
        let gone: BTreeSet<String> = deletes
            .iter()
            .zip(orphans)
            .filter(|(_, r)| r.is_ok())
            .map(|(id, _)| id.clone())
            .collect();
        self.commit_occurrence_check(occurrences.commit, failed, gone)
            .await;
        for (id, r) in deletes.iter().zip(orphans) {
            match r {
                Ok(_) => drift.orphans_deleted += 1,
                Err(e) if e.status() == Some(404) => drift.orphans_deleted += 1,
                Err(e) => drift.errors.push(format!("{id}: {e}")),
            }
        }
        if drift.orphans_deleted > 0 {
            tracing::info!(sink = %self.cfg.id, calendar = %cal.id, n = drift.orphans_deleted, "removed orphaned Graph events");
        }
        Ok(drift)
    }
}
