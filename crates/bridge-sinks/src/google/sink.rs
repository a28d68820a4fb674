//! The Google Calendar target, a [`Replica`]: it gets series-level ops
//! (a series as it stands and the planner's item ops on it) and answers per
//! series.
//!
//! Ids are deterministic (see [`series_id`]), so a write repeated after a
//! crash lands on the same event and never duplicates it. Per series:
//!
//! - a single event or a master is written under its series id, the master
//!   with `recurrence` (RRULE + EXDATE for cancelled occurrences: a change to
//!   the set of cancelled occurrences rewrites the master);
//! - a modified occurrence is written to Google's instance id
//!   `<seriesId>_<original start>` after its master (a second round, since a
//!   batch does not order its parts); an occurrence whose modification is
//!   gone is reverted to the master's content;
//! - a master's id includes its rule and start: when either changes the old
//!   series is deleted (Google cancels its exceptions with it) and the new
//!   one written with its current exceptions, so no stale instance is left;
//! - inserts use `sendUpdates=none`; a 409 is resolved by reading the event:
//!   a cancelled one (an id kept by an earlier delete) is restored, our own
//!   is updated, a foreign one is an error; updates send `If-Match` and a
//!   412 re-reads and retries; deletes take 404 / 410 as done.
//!
//! Revoked credentials and the daily quota pause the sink (every op answers
//! [`SinkError::Paused`], so the engine keeps the queue), while other sinks
//! go on. The target calendars it creates are remembered in its
//! [`StateStore`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bridge_core::plan::Op;
use bridge_core::{CanonicalEvent, EventKey, EventTime, Privacy, Series};
use bridge_target::{
    CalendarMeta, Drift, DriftInput, ItemOutcome, RemoteRef, Replica, ReplicaInput, SeriesOutcome,
    Sink, SinkError, StateStore, Target,
};
use serde_json::{Value, json};

use super::auth::Credentials;
use super::client::{
    ApiRequest, ApiResponse, CallStats, GoogleClient, GoogleClientConfig, Method, event_path,
    events_path,
};
use super::error::GoogleError;
use super::ids::{event_id, instance_id};
use super::resource::{self, GoogleOptions, to_resource_in};

/// How long a sink pauses after Google's daily quota ran out before it tries
/// again.
const QUOTA_PAUSE: Duration = Duration::from_secs(3600);
/// Follow-up rounds (409 / 412 resolution) per apply.
const MAX_ROUNDS: usize = 4;

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCalendar {
    /// One calendar for every source calendar.
    Fixed(String),
    /// A dedicated calendar per source calendar, created on first use and
    /// remembered in the sink's state.
    CreatePerSource,
}

/// What to do with an event a user deleted in Google.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTargetDelete {
    /// Write it again (the source is the truth).
    #[default]
    Restore,
    /// Leave it deleted (a tombstone record keeps it so).
    Respect,
}

impl FromStr for OnTargetDelete {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "restore" => Ok(Self::Restore),
            "respect" => Ok(Self::Respect),
            other => Err(format!(
                "unknown on_target_delete {other:?} (expected \"restore\" or \"respect\")"
            )),
        }
    }
}

/// Settings of one Google sink.
#[derive(Debug, Clone)]
pub struct GoogleSinkConfig {
    /// Store sink id, `google:<name>`.
    pub id: String,
    pub privacy: Privacy,
    pub target: TargetCalendar,
    pub write_attendees: bool,
    pub on_target_delete: OnTargetDelete,
    /// Use multipart batch requests for bulk writes.
    pub batch: bool,
    pub client: GoogleClientConfig,
}

/// The store token name holding a sink's refresh token.
pub fn token_name(sink_id: &str) -> String {
    format!(
        "google_refresh:{}",
        sink_id.strip_prefix("google:").unwrap_or(sink_id)
    )
}

/// The refresh token in a stored token JSON (`{"refresh_token": "..."}`).
pub fn stored_refresh_token(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    v.get("refresh_token")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

const NOT_AUTHORIZED: &str =
    "not authorized: run `feishu-bridge auth google` (no refresh token stored for this sink)";

#[derive(Debug, Clone)]
enum Pause {
    Auth(String),
    Quota { message: String, until: Instant },
}

/// The Google Calendar sink.
#[derive(Debug)]
pub struct GoogleSink {
    cfg: GoogleSinkConfig,
    client: Mutex<Option<GoogleClient>>,
    state: Arc<dyn StateStore>,
    pause: Mutex<Option<Pause>>,
    /// Source calendar id -> target calendar id (CreatePerSource).
    targets: tokio::sync::Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GoogleSink {
    /// A sink; without credentials it stays paused until
    /// [`GoogleSink::set_credentials`].
    pub fn new(
        cfg: GoogleSinkConfig,
        creds: Option<Credentials>,
        state: Arc<dyn StateStore>,
    ) -> Self {
        let (client, pause) = match creds.map(|c| GoogleClient::new(cfg.client.clone(), c)) {
            Some(Ok(c)) => (Some(c), None),
            Some(Err(e)) => (None, Some(Pause::Auth(e.to_string()))),
            None => (None, Some(Pause::Auth(NOT_AUTHORIZED.to_owned()))),
        };
        Self {
            cfg,
            client: Mutex::new(client),
            state,
            pause: Mutex::new(pause),
            targets: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// New credentials (after `auth google`): resumes a sink paused for them.
    pub fn set_credentials(&self, creds: Credentials) -> Result<(), GoogleError> {
        let c = GoogleClient::new(self.cfg.client.clone(), creds)?;
        *lock(&self.client) = Some(c);
        let mut p = lock(&self.pause);
        if matches!(*p, Some(Pause::Auth(_))) {
            *p = None;
        }
        Ok(())
    }

    /// API calls by endpoint template and HTTP status (0: no answer).
    pub fn calls(&self) -> std::collections::BTreeMap<(String, u16), u64> {
        lock(&self.client)
            .as_ref()
            .map(|c| c.calls().snapshot())
            .unwrap_or_default()
    }

    /// Calls made so far.
    pub fn stats(&self) -> Option<CallStats> {
        lock(&self.client).as_ref().map(GoogleClient::stats)
    }

    pub fn config(&self) -> &GoogleSinkConfig {
        &self.cfg
    }

    fn pause_reason(&self) -> Option<String> {
        let mut p = lock(&self.pause);
        match &*p {
            None => None,
            Some(Pause::Auth(m)) => Some(m.clone()),
            Some(Pause::Quota { message, until }) => {
                if Instant::now() >= *until {
                    *p = None;
                    None
                } else {
                    Some(message.clone())
                }
            }
        }
    }

    /// Records a fatal error; returns the pause message when it pauses.
    fn note_fatal(&self, e: &GoogleError) -> Option<String> {
        let pause = match e {
            GoogleError::Revoked(_) => Pause::Auth(e.to_string()),
            GoogleError::Quota(_) => Pause::Quota {
                message: e.to_string(),
                until: Instant::now() + QUOTA_PAUSE,
            },
            _ => return None,
        };
        tracing::error!(sink = %self.cfg.id, "{e}; the Google sink pauses, other sinks go on");
        *lock(&self.pause) = Some(pause);
        Some(e.to_string())
    }

    fn client(&self) -> Option<GoogleClient> {
        lock(&self.client).clone()
    }

    fn opts(&self, cal: &CalendarMeta) -> GoogleOptions {
        GoogleOptions {
            calendar_id: cal.id.clone(),
            write_attendees: self.cfg.write_attendees,
        }
    }

    /// The target calendar of a source calendar (created when configured so).
    async fn target(
        &self,
        client: &GoogleClient,
        cal: &CalendarMeta,
        series: &[Series<'_>],
    ) -> Result<String, GoogleError> {
        let TargetCalendar::CreatePerSource = &self.cfg.target else {
            let TargetCalendar::Fixed(id) = &self.cfg.target else {
                unreachable!()
            };
            return Ok(id.clone());
        };
        let mut targets = self.targets.lock().await;
        if let Some(t) = targets.get(&cal.id) {
            return Ok(t.clone());
        }
        let stored = self
            .state
            .get(CALENDAR_STATE, &cal.id)
            .await
            .map_err(|e| GoogleError::Config(format!("store: {e}")))?
            .and_then(|j: String| serde_json::from_str::<Value>(&j).ok())
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
        let id = match stored {
            Some(id) => id,
            None => {
                let zone = cal
                    .timezone
                    .clone()
                    .or_else(|| main_zone(series))
                    .unwrap_or_else(|| "UTC".to_owned());
                let resp = client
                    .execute(
                        ApiRequest::new(Method::Post, "/calendars".to_owned()).with_body(json!({
                            "summary": cal.name,
                            "timeZone": zone,
                            "description": format!("Mirrored from Feishu calendar {} by feishu-bridge", cal.id),
                        })),
                    )
                    .await?;
                let id = resp
                    .body
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| GoogleError::Decode("calendars.insert answered no id".into()))?
                    .to_owned();
                self.state
                    .put(CALENDAR_STATE, &cal.id, &json!({ "id": id }).to_string())
                    .await
                    .map_err(|e| GoogleError::Config(format!("store: {e}")))?;
                tracing::info!(sink = %self.cfg.id, calendar = %cal.id, target = %id, "created a Google calendar");
                id
            }
        };
        targets.insert(cal.id.clone(), id.clone());
        Ok(id)
    }

    /// Runs requests, batched when configured; `Err` only for fatal errors.
    async fn run(
        &self,
        client: &GoogleClient,
        reqs: Vec<ApiRequest>,
    ) -> Result<Vec<Result<ApiResponse, GoogleError>>, GoogleError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        if self.cfg.batch && reqs.len() > 1 {
            return client.execute_batch(reqs).await;
        }
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            match client.execute(r).await {
                Err(e @ (GoogleError::Revoked(_) | GoogleError::Quota(_))) => return Err(e),
                other => out.push(other),
            }
        }
        Ok(out)
    }
}

/// The sink's state holding the target calendar it created per source
/// calendar (`{"id": ...}` under the source calendar id).
pub const CALENDAR_STATE: &str = "google_calendar";

/// The zone most timed starts use.
fn main_zone(series: &[Series<'_>]) -> Option<String> {
    let mut n: BTreeMap<&'static str, usize> = BTreeMap::new();
    for e in series.iter().flat_map(Series::events) {
        if let Some(tz) = e.start.tz() {
            *n.entry(tz.name()).or_default() += 1;
        }
    }
    n.into_iter()
        .max_by_key(|(_, c)| *c)
        .map(|(z, _)| z.to_owned())
}

/// The Google id of a single event or a series master. A master's id also
/// covers its rule and start, so a changed rule starts a new series (the
/// old one is deleted with all its exceptions).
pub fn series_id(source_calendar: &str, ev: &CanonicalEvent) -> String {
    match &ev.rrule {
        None => event_id(source_calendar, ev.key.uid()),
        Some(rule) => {
            let start = match &ev.start {
                EventTime::Date(d) => format!("D{d}"),
                EventTime::Utc(at) => format!("U{at}"),
                EventTime::Zoned { at, tz } => format!("Z{at}@{}", tz.name()),
            };
            event_id(
                source_calendar,
                &format!("{}\u{1f}{rule}\u{1f}{start}", ev.key.uid()),
            )
        }
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

/// Tags the resource with the source calendar (scopes drift repair).
fn tag(mut r: Value, source_calendar: &str) -> Value {
    if let Some(p) = r
        .get_mut("extendedProperties")
        .and_then(|e| e.get_mut("private"))
        .and_then(Value::as_object_mut)
    {
        p.insert("feishuCalendar".into(), json!(source_calendar));
    }
    r
}

/// Whether a remote event is ours for `source_calendar`.
fn is_ours(v: &Value, source_calendar: &str) -> bool {
    let p = &v["extendedProperties"]["private"];
    p["feishuBridge"] == "1" && p["feishuCalendar"] == source_calendar
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Update,
    Delete,
}

/// One write and the ops it satisfies.
#[derive(Debug, Clone)]
struct Write {
    kind: Kind,
    /// Google event id.
    id: String,
    resource: Option<Value>,
    if_match: Option<String>,
    ops: Vec<Op>,
    /// Rounds of 409 / 412 resolution used.
    tries: usize,
    /// Reverts an occurrence: if the series has no such occurrence (404 /
    /// 410) there is nothing to revert.
    revert: bool,
}

impl Write {
    fn request(&self, target: &str) -> ApiRequest {
        match self.kind {
            Kind::Insert => ApiRequest::new(Method::Post, events_path(target))
                .with_query("sendUpdates", "none")
                .with_body(self.resource.clone().unwrap_or(Value::Null)),
            Kind::Update => {
                let mut r = ApiRequest::new(Method::Put, event_path(target, &self.id))
                    .with_query("sendUpdates", "none")
                    .with_body(self.resource.clone().unwrap_or(Value::Null));
                if let Some(e) = &self.if_match {
                    r = r.with_if_match(e.clone());
                }
                r
            }
            Kind::Delete => ApiRequest::new(Method::Delete, event_path(target, &self.id))
                .with_query("sendUpdates", "none"),
        }
    }
}

/// The writes of one apply, in two rounds (masters and singles, then
/// instances of those masters).
#[derive(Default)]
struct Writes {
    first: Vec<Write>,
    second: Vec<Write>,
    /// Ops needing no call (e.g. a cancelled occurrence of an absent master).
    free: Vec<ItemOutcome>,
}

impl GoogleSink {
    fn resource(
        &self,
        ev: &CanonicalEvent,
        series: resource::Series<'_>,
        cal: &CalendarMeta,
        id: &str,
        master_id: Option<&str>,
    ) -> Value {
        let (mut r, warnings) = to_resource_in(ev, series, self.cfg.privacy, &self.opts(cal));
        for w in warnings {
            tracing::warn!(sink = %self.cfg.id, "{w}");
        }
        r["id"] = json!(id);
        if let Some(m) = master_id {
            r["recurringEventId"] = json!(m);
        }
        tag(r, &cal.id)
    }

    /// The resource of a master's occurrence at `original_time` with the
    /// master's own content (to revert a modification).
    fn reverted(
        &self,
        master: &CanonicalEvent,
        master_id: &str,
        original_time: i64,
        cal: &CalendarMeta,
    ) -> Option<(String, Value)> {
        let key = EventKey::new(master.key.uid(), original_time).ok()?;
        let mut ev = master.clone();
        let start = master.start.same_form(original_time);
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
        let id = instance_id(master_id, &master.start, original_time);
        let r = self.resource(
            &ev,
            resource::Series::Instance {
                master_start: master.start,
            },
            cal,
            &id,
            Some(master_id),
        );
        Some((id, r))
    }

    /// Decides the writes for the planned ops.
    fn writes(&self, input: &ReplicaInput<'_>) -> Writes {
        let cal = input.calendar;
        let records = input.records;
        let mut w = Writes::default();
        for so in input.ops {
            let Some(first) = so.ops.first() else {
                continue;
            };
            let (uid, series) = (so.uid, so.series);
            let base_key = first.key().master();
            let base = series.and_then(|s| s.base);
            let master = series.and_then(Series::master);
            let base_record = records.get(&base_key);
            let new_id = base.map(|b| series_id(&cal.id, b));
            let old_id = base_record
                .map(|r| r.remote.id.clone())
                .filter(|id| !id.is_empty());
            let rule_changed = matches!((&new_id, &old_id), (Some(n), Some(o)) if n != o);
            let mut master_ops: Vec<Op> = Vec::new();
            let mut write_master = false;
            let mut base_delete: Option<Op> = None;
            // Exceptions to (re)write to instance ids, and occurrences to revert.
            let mut instance_ops: BTreeMap<i64, Vec<Op>> = BTreeMap::new();
            let mut reverts: BTreeMap<i64, Vec<Op>> = BTreeMap::new();
            for op in &so.ops {
                let key = op.key();
                if key.is_base() {
                    match op {
                        Op::Delete(_) => base_delete = Some(op.clone()),
                        _ => {
                            write_master = true;
                            master_ops.push(op.clone());
                        }
                    }
                    continue;
                }
                let item = found(series, key);
                let recorded_instance = records.get(key).is_some_and(|r| r.remote.id.contains('_'));
                match (op, item, master) {
                    // A modified occurrence of a mirrored series.
                    (Op::Create(_) | Op::Update(_), Found::Event(_), Some(_)) => {
                        instance_ops
                            .entry(key.original_time())
                            .or_default()
                            .push(op.clone());
                    }
                    // A cancelled occurrence: EXDATE on the master.
                    (Op::Create(_) | Op::Update(_), Found::Cancelled, Some(_)) => {
                        write_master = true;
                        master_ops.push(op.clone());
                    }
                    // A modification gone: the occurrence reverts to the master.
                    (Op::Delete(_), _, Some(_)) if recorded_instance => {
                        reverts
                            .entry(key.original_time())
                            .or_default()
                            .push(op.clone());
                    }
                    // A cancellation gone: the master loses the EXDATE.
                    (Op::Delete(_), _, Some(_)) => {
                        write_master = true;
                        master_ops.push(op.clone());
                    }
                    // No mirrored master: a standalone event.
                    (Op::Create(_) | Op::Update(_), Found::Event(ev), None) => {
                        let id = event_id(&cal.id, &key.to_string());
                        let r = self.resource(ev, resource::Series::Standalone, cal, &id, None);
                        let rec = records.get(key);
                        w.first.push(Write {
                            kind: if rec.is_some() {
                                Kind::Update
                            } else {
                                Kind::Insert
                            },
                            if_match: rec.and_then(|r| r.remote.etag.clone()),
                            id,
                            resource: Some(r),
                            ops: vec![op.clone()],
                            tries: 0,
                            revert: false,
                        });
                    }
                    (Op::Delete(_), _, None) if recorded_instance || base.is_none() => {
                        match records.get(key).map(|r| r.remote.id.clone()) {
                            Some(id) if !id.is_empty() && base_delete.is_none() => {
                                w.first.push(Write {
                                    kind: Kind::Delete,
                                    id,
                                    resource: None,
                                    if_match: None,
                                    ops: vec![op.clone()],
                                    tries: 0,
                                    revert: false,
                                })
                            }
                            _ => w.free.push(ok(op, "")),
                        }
                    }
                    _ => w.free.push(ok(
                        op,
                        &records
                            .get(key)
                            .map(|r| r.remote.id.clone())
                            .unwrap_or_default(),
                    )),
                }
            }
            // The base: delete, (re)write, or a new series.
            if let Some(op) = base_delete {
                match old_id.clone() {
                    Some(id) => w.first.push(Write {
                        kind: Kind::Delete,
                        id,
                        resource: None,
                        if_match: None,
                        ops: vec![op],
                        tries: 0,
                        revert: false,
                    }),
                    None => w.free.push(ok(&op, "")),
                }
            }
            let Some(base) = base else {
                // Ops left for an absent base are answered above.
                if write_master {
                    for op in master_ops {
                        w.free.push(ok(&op, ""));
                    }
                }
                continue;
            };
            let new_id = new_id.unwrap_or_default();
            if rule_changed {
                // A new series: the old one goes (with its exceptions), every
                // current exception is written again under the new id.
                write_master = true;
                if let Some(old) = &old_id {
                    w.first.push(Write {
                        kind: Kind::Delete,
                        id: old.clone(),
                        resource: None,
                        if_match: None,
                        ops: Vec::new(),
                        tries: 0,
                        revert: false,
                    });
                }
                if !master_ops.iter().any(|o| o.key().is_base()) {
                    master_ops.push(Op::Update(base_key.clone()));
                }
                for e in series.iter().flat_map(|s| s.events()) {
                    let k = &e.key;
                    if !k.is_base() {
                        instance_ops
                            .entry(k.original_time())
                            .or_insert_with(|| vec![Op::Update(k.clone())]);
                    }
                }
                // Modifications gone with the old series: nothing to revert.
                for (_, ops) in std::mem::take(&mut reverts) {
                    for op in ops {
                        w.free.push(ok(&op, ""));
                    }
                }
            }
            if write_master {
                let cancelled: &[i64] = series.map_or(&[], |s| &s.cancelled);
                let r = self.resource(
                    base,
                    resource::Series::Base { cancelled },
                    cal,
                    &new_id,
                    None,
                );
                let insert = base_record.is_none() || rule_changed;
                if master_ops.iter().all(|o| !o.key().is_base()) {
                    // Only cancellations changed: the base record is refreshed too.
                    master_ops.push(Op::Update(base_key.clone()));
                }
                w.first.push(Write {
                    kind: if insert { Kind::Insert } else { Kind::Update },
                    if_match: if insert {
                        None
                    } else {
                        base_record.and_then(|r| r.remote.etag.clone())
                    },
                    id: new_id.clone(),
                    resource: Some(r),
                    ops: master_ops,
                    tries: 0,
                    revert: false,
                });
            }
            let Some(master) = master else { continue };
            for (t, ops) in instance_ops {
                let key = match EventKey::new(uid, t) {
                    Ok(k) => k,
                    Err(_) => continue,
                };
                let Found::Event(ev) = found(series, &key) else {
                    continue;
                };
                let id = instance_id(&new_id, &master.start, t);
                let r = self.resource(
                    ev,
                    resource::Series::Instance {
                        master_start: master.start,
                    },
                    cal,
                    &id,
                    Some(&new_id),
                );
                w.second.push(Write {
                    kind: Kind::Update,
                    if_match: None,
                    id,
                    resource: Some(r),
                    ops,
                    tries: 0,
                    revert: false,
                });
            }
            for (t, ops) in reverts {
                if let Some((id, r)) = self.reverted(master, &new_id, t, cal) {
                    w.second.push(Write {
                        kind: Kind::Update,
                        if_match: None,
                        id,
                        resource: Some(r),
                        ops,
                        tries: 0,
                        revert: true,
                    });
                }
            }
        }
        w
    }

    /// Runs writes until each is done or failed, resolving 409 / 412 / 404.
    async fn execute(
        &self,
        client: &GoogleClient,
        target: &str,
        mut pending: Vec<Write>,
        out: &mut Vec<ItemOutcome>,
    ) -> Result<(), GoogleError> {
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            let reqs: Vec<ApiRequest> = pending.iter().map(|w| w.request(target)).collect();
            let results = self.run(client, reqs).await?;
            let mut reads: Vec<Write> = Vec::new();
            let mut again: Vec<Write> = Vec::new();
            for (mut w, res) in pending.into_iter().zip(results) {
                match (w.kind, res) {
                    (Kind::Delete, Ok(_)) => done(out, &w, None),
                    (Kind::Delete, Err(e)) if matches!(e.status(), Some(404 | 410)) => {
                        done(out, &w, None)
                    }
                    (_, Err(e)) if w.revert && matches!(e.status(), Some(404 | 410)) => {
                        done(out, &w, None)
                    }
                    (_, Ok(resp)) => done(out, &w, resp.etag.or_else(|| etag_of(&resp.body))),
                    // The id exists: read it to decide.
                    (Kind::Insert, Err(e)) if e.status() == Some(409) => reads.push(w),
                    // Someone changed it since our write: read, then retry.
                    (Kind::Update, Err(e)) if e.status() == Some(412) => reads.push(w),
                    // Gone without a trace: create it.
                    (Kind::Update, Err(e)) if e.status() == Some(404) && !w.id.contains('_') => {
                        w.kind = Kind::Insert;
                        w.if_match = None;
                        again.push(w);
                    }
                    (_, Err(e)) => failed(out, &w, &e),
                }
            }
            if !reads.is_empty() {
                let reqs: Vec<ApiRequest> = reads
                    .iter()
                    .map(|w| ApiRequest::new(Method::Get, event_path(target, &w.id)))
                    .collect();
                let got = self.run(client, reqs).await?;
                for (mut w, res) in reads.into_iter().zip(got) {
                    w.tries += 1;
                    match res {
                        Ok(resp) => {
                            let cancelled = resp.body["status"] == "cancelled";
                            let mine = w.resource.as_ref().is_some_and(|r| {
                                let p = &r["extendedProperties"]["private"];
                                let q = &resp.body["extendedProperties"]["private"];
                                q["feishuBridge"] == "1"
                                    && q["feishuKey"] == p["feishuKey"]
                                    && q["feishuCalendar"] == p["feishuCalendar"]
                            });
                            if cancelled || mine || w.id.contains('_') {
                                // Restore a deleted one / update our own.
                                w.kind = Kind::Update;
                                w.if_match = resp.etag.or_else(|| etag_of(&resp.body));
                                again.push(w);
                            } else {
                                let e = GoogleError::Api {
                                    status: 409,
                                    reason: "duplicate".into(),
                                    message: format!(
                                        "event id {} is taken by an event feishu-bridge did not write; left alone",
                                        w.id
                                    ),
                                };
                                failed_conflict(out, &w, &e);
                            }
                        }
                        Err(e) if e.status() == Some(404) => {
                            w.kind = Kind::Insert;
                            w.if_match = None;
                            again.push(w);
                        }
                        Err(e) => failed(out, &w, &e),
                    }
                }
            }
            pending = again;
        }
        for w in pending {
            failed(
                out,
                &w,
                &GoogleError::Unavailable(format!(
                    "event {} kept changing while being written",
                    w.id
                )),
            );
        }
        Ok(())
    }
}

fn etag_of(body: &Value) -> Option<String> {
    body.get("etag").and_then(Value::as_str).map(str::to_owned)
}

fn ok(op: &Op, remote_id: &str) -> ItemOutcome {
    ItemOutcome {
        op: op.clone(),
        result: Ok(RemoteRef {
            id: remote_id.to_owned(),
            etag: None,
        }),
    }
}

fn done(out: &mut Vec<ItemOutcome>, w: &Write, etag: Option<String>) {
    for op in &w.ops {
        // Only the op the write is about keeps the etag (a master written for
        // a cancelled occurrence answers the master's etag).
        let own = op.key().is_base() || w.id.contains('_');
        out.push(ItemOutcome {
            op: op.clone(),
            result: Ok(RemoteRef {
                id: w.id.clone(),
                etag: if own { etag.clone() } else { None },
            }),
        });
    }
}

fn failed(out: &mut Vec<ItemOutcome>, w: &Write, e: &GoogleError) {
    let err = if e.is_transient() {
        SinkError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        SinkError::Permanent(e.to_string())
    };
    for op in &w.ops {
        out.push(ItemOutcome {
            op: op.clone(),
            result: Err(err.clone()),
        });
    }
}

/// A foreign event holds the id: a conflict, left alone.
fn failed_conflict(out: &mut Vec<ItemOutcome>, w: &Write, e: &GoogleError) {
    for op in &w.ops {
        out.push(ItemOutcome {
            op: op.clone(),
            result: Err(SinkError::Conflict(e.to_string())),
        });
    }
}

/// Every op of the input answered with `err`.
fn all_failed(input: &ReplicaInput<'_>, err: &SinkError) -> Vec<ItemOutcome> {
    input
        .ops
        .iter()
        .flat_map(|so| &so.ops)
        .map(|op| ItemOutcome {
            op: op.clone(),
            result: Err(err.clone()),
        })
        .collect()
}

/// Item outcomes grouped per series, in the order of the input's series.
fn per_series(input: &ReplicaInput<'_>, items: Vec<ItemOutcome>) -> Vec<SeriesOutcome> {
    let mut by_uid: BTreeMap<String, Vec<ItemOutcome>> = BTreeMap::new();
    for o in items {
        by_uid
            .entry(o.op.key().uid().to_owned())
            .or_default()
            .push(o);
    }
    input
        .ops
        .iter()
        .map(|so| SeriesOutcome {
            uid: so.uid.to_owned(),
            items: by_uid.remove(so.uid).unwrap_or_default(),
        })
        .collect()
}

impl Sink for GoogleSink {
    fn target(&self) -> Target<'_> {
        Target::Replica(self)
    }
}

#[async_trait]
impl Replica for GoogleSink {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn paused(&self) -> Option<String> {
        self.pause_reason()
    }

    async fn apply(&self, input: ReplicaInput<'_>) -> Vec<SeriesOutcome> {
        if input.ops.iter().all(|so| so.ops.is_empty()) {
            return Vec::new();
        }
        let items = self.apply_items(&input).await;
        per_series(&input, items)
    }

    async fn drift(&self, input: DriftInput<'_>) -> Result<Drift, SinkError> {
        if let Some(m) = self.pause_reason() {
            return Err(SinkError::Paused(m));
        }
        let Some(client) = self.client() else {
            return Err(SinkError::Paused(NOT_AUTHORIZED.to_owned()));
        };
        let cal = input.calendar;
        let target = self
            .target(&client, cal, input.series)
            .await
            .map_err(|e| self.sink_error(&e))?;
        // Ours, deleted ones included (a user delete leaves a cancelled event).
        let remote = client
            .list_all(
                &events_path(&target),
                vec![
                    (
                        "privateExtendedProperty".into(),
                        format!("feishuCalendar={}", cal.id),
                    ),
                    ("showDeleted".into(), "true".into()),
                ],
            )
            .await
            .map_err(|e| self.sink_error(&e))?;
        let by_id: HashMap<&str, &Value> = remote
            .iter()
            .filter_map(|v| Some((v.get("id")?.as_str()?, v)))
            .collect();
        let mut drift = Drift::default();
        // Ids the current series own.
        let by_uid: HashMap<&str, &Series<'_>> = input.series.iter().map(|s| (s.uid, s)).collect();
        let mut expected: BTreeSet<String> = BTreeSet::new();
        for s in input.series {
            if let Some(b) = s.base {
                expected.insert(series_id(&cal.id, b));
            }
            if let Some(m) = s.master() {
                let master_id = series_id(&cal.id, m);
                for o in &s.overrides {
                    expected.insert(instance_id(&master_id, &m.start, o.key.original_time()));
                }
            }
            for o in &s.orphans {
                expected.insert(event_id(&cal.id, &o.key.to_string()));
            }
        }
        let recorded_ids: BTreeSet<&str> = input
            .records
            .values()
            .map(|r| r.remote.id.as_str())
            .collect();
        for (k, r) in input.records {
            if r.tombstone || r.remote.id.is_empty() {
                continue;
            }
            // Cancelled occurrences live in their master's EXDATE.
            if !matches!(found(by_uid.get(k.uid()).copied(), k), Found::Event(_)) {
                continue;
            }
            let v = by_id.get(r.remote.id.as_str());
            let deleted = v.is_none_or(|v| v["status"] == "cancelled");
            if deleted {
                match self.cfg.on_target_delete {
                    OnTargetDelete::Restore => drift.rewrite.push(k.clone()),
                    OnTargetDelete::Respect => drift.tombstone.push(k.clone()),
                }
                continue;
            }
            let etag = v.and_then(|v| etag_of(v));
            if r.remote.etag.is_some() && etag != r.remote.etag {
                // Edited in Google: the source is the truth.
                drift.rewrite.push(k.clone());
            }
        }
        // Ours but unknown: orphans (gone from the source) are deleted;
        // user-made exceptions of our series are reverted by rewriting them.
        let mut deletes: Vec<String> = Vec::new();
        let mut reverts: Vec<(String, Value)> = Vec::new();
        for v in &remote {
            let Some(id) = v.get("id").and_then(Value::as_str) else {
                continue;
            };
            if v["status"] == "cancelled"
                || !is_ours(v, &cal.id)
                || recorded_ids.contains(id)
                || expected.contains(id)
            {
                continue;
            }
            let parent = v.get("recurringEventId").and_then(Value::as_str);
            match parent {
                Some(p) if expected.contains(p) => {
                    // A user's change to one occurrence of our series.
                    let key = v["extendedProperties"]["private"]["feishuKey"]
                        .as_str()
                        .and_then(|k| EventKey::parse(k).ok());
                    let master = key
                        .and_then(|k| by_uid.get(k.uid()).copied())
                        .and_then(Series::master);
                    let original = v
                        .get("originalStartTime")
                        .and_then(parse_event_time)
                        .unwrap_or(i64::MIN);
                    if let Some(m) = master
                        && original != i64::MIN
                        && let Some((rid, r)) = self.reverted(m, p, original, cal)
                        && rid == id
                    {
                        reverts.push((rid, r));
                    }
                }
                Some(p) if !by_id.contains_key(p) || expected.contains(p) => {}
                _ => deletes.push(id.to_owned()),
            }
        }
        if input.dry_run {
            drift.orphans_deleted = deletes.len();
            return Ok(drift);
        }
        let reqs: Vec<ApiRequest> = deletes
            .iter()
            .map(|id| {
                ApiRequest::new(Method::Delete, event_path(&target, id))
                    .with_query("sendUpdates", "none")
            })
            .chain(reverts.iter().map(|(id, r)| {
                ApiRequest::new(Method::Put, event_path(&target, id))
                    .with_query("sendUpdates", "none")
                    .with_body(r.clone())
            }))
            .collect();
        let results = self
            .run(&client, reqs)
            .await
            .map_err(|e| self.sink_error(&e))?;
        let ids = deletes.iter().chain(reverts.iter().map(|(id, _)| id));
        for (n, (id, res)) in ids.zip(results).enumerate() {
            match res {
                Ok(_) if n < deletes.len() => drift.orphans_deleted += 1,
                Ok(_) => {
                    tracing::info!(sink = %self.cfg.id, event = %id, "reverted a change made in Google to one occurrence")
                }
                Err(e) if n < deletes.len() && matches!(e.status(), Some(404 | 410)) => {
                    drift.orphans_deleted += 1
                }
                Err(e) => drift.errors.push(format!("{id}: {e}")),
            }
        }
        if drift.orphans_deleted > 0 {
            tracing::info!(sink = %self.cfg.id, calendar = %cal.id, n = drift.orphans_deleted, "removed orphaned Google events");
        }
        Ok(drift)
    }
}

/// Unix seconds of an EventDateTime (`date` at 00:00 UTC).
fn parse_event_time(v: &Value) -> Option<i64> {
    if let Some(dt) = v.get("dateTime").and_then(Value::as_str) {
        return chrono::DateTime::parse_from_rfc3339(dt)
            .ok()
            .map(|d| d.timestamp());
    }
    let d = v.get("date").and_then(Value::as_str)?;
    let d = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

impl GoogleSink {
    /// The item outcomes of one apply.
    async fn apply_items(&self, input: &ReplicaInput<'_>) -> Vec<ItemOutcome> {
        if let Some(m) = self.pause_reason() {
            return all_failed(input, &SinkError::Paused(m));
        }
        let Some(client) = self.client() else {
            return all_failed(input, &SinkError::Paused(NOT_AUTHORIZED.to_owned()));
        };
        let target = match self.target(&client, input.calendar, input.series).await {
            Ok(t) => t,
            Err(e) => {
                if let Some(m) = self.note_fatal(&e) {
                    return all_failed(input, &SinkError::Paused(m));
                }
                return all_failed(
                    input,
                    &SinkError::transient(format!("target calendar: {e}")),
                );
            }
        };
        let w = self.writes(input);
        let mut out = w.free;
        let first_failed: BTreeSet<String>;
        {
            let mut first = Vec::new();
            if let Err(e) = self.execute(&client, &target, w.first, &mut first).await {
                return self.fatal(e, input, out);
            }
            first_failed = first
                .iter()
                .filter(|o| o.result.is_err() && o.op.key().is_base())
                .map(|o| o.op.key().uid().to_owned())
                .collect();
            out.extend(first);
        }
        // Instances only once their master is written.
        let (second, blocked): (Vec<Write>, Vec<Write>) = w
            .second
            .into_iter()
            .partition(|x| x.ops.iter().all(|o| !first_failed.contains(o.key().uid())));
        for b in blocked {
            failed(
                &mut out,
                &b,
                &GoogleError::Unavailable("the series master could not be written".into()),
            );
        }
        if let Err(e) = self.execute(&client, &target, second, &mut out).await {
            return self.fatal(e, input, out);
        }
        out
    }

    /// A sink-level error: a pause when it pauses the sink.
    fn sink_error(&self, e: &GoogleError) -> SinkError {
        match self.note_fatal(e) {
            Some(m) => SinkError::Paused(m),
            None => SinkError::transient(e.to_string()),
        }
    }

    /// A fatal error mid-apply: pause (or fail) every op not answered yet.
    fn fatal(
        &self,
        e: GoogleError,
        input: &ReplicaInput<'_>,
        mut out: Vec<ItemOutcome>,
    ) -> Vec<ItemOutcome> {
        let answered: BTreeSet<Op> = out.iter().map(|o| o.op.clone()).collect();
        let err = match self.note_fatal(&e) {
            Some(m) => SinkError::Paused(m),
            None => SinkError::transient(e.to_string()),
        };
        let ops = input.ops.iter().flat_map(|so| &so.ops);
        for op in ops.filter(|o| !answered.contains(*o)) {
            out.push(ItemOutcome {
                op: op.clone(),
                result: Err(err.clone()),
            });
        }
        out
    }
}
