//! Drift of the occurrences of our series: what a user did in Outlook to
//! one occurrence (graph.md §3.1).
//!
//! Each of our recorded masters is read once by id (plain GETs, four at a
//! time) with `$select=cancelledOccurrences` and
//! `$expand=exceptionOccurrences`, the v1.0 way to see every exception and every deleted occurrence of a series
//! whatever its time (a `calendarView` window would miss an exception moved
//! far away, and never shows deleted occurrences). Then:
//!
//! * an exception at a modified occurrence we recorded whose `@odata.etag`
//!   is not the one we wrote: the occurrence is rewritten (the engine plans
//!   it again; the sink PATCHes that occurrence alone);
//! * an exception at an occurrence the source does not modify whose time or
//!   subject is not the series': a user's edit, reverted here with one PATCH
//!   on that occurrence (there is no record to plan it again from);
//! * an occurrence deleted in Graph that the source does not cancel: per
//!   `on_target_delete`. `respect` keeps it deleted (a recorded modified
//!   occurrence becomes a tombstone). `restore`: Graph v1.0 cannot bring one
//!   deleted occurrence of a series back (no undelete, no occurrence
//!   create), so the series is deleted here and written anew with all its
//!   occurrence changes (its base and occurrence records are planned again;
//!   the PATCH of the gone master creates it anew under a new
//!   `transactionId`), which converges without a duplicate.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bridge_core::{CanonicalEvent, EventKey, EventTime, Series};
use bridge_target::{Drift, DriftInput, ItemOutcome, Recorded, ReplicaInput};
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{GraphClient, Method, Request, seg};
use super::resource::{self, Shape};
use super::sink::{GraphSink, OnTargetDelete};

/// A master of ours to check: its series, content, rule zone and Graph id.
struct Checked<'a> {
    series: &'a Series<'a>,
    master: &'a CanonicalEvent,
    zone: Tz,
    id: String,
    /// The master's etag as recorded.
    etag: Option<String>,
}

/// The local date of an occurrence starting at `at` (the date Graph names
/// it by in `cancelledOccurrences`): in the rule's zone, or the all-day date.
pub(crate) fn occurrence_date(master: &CanonicalEvent, zone: Tz, at: i64) -> NaiveDate {
    match master.start.same_form(at) {
        EventTime::Date(d) => d,
        _ => chrono::DateTime::from_timestamp(at, 0)
            .unwrap_or_default()
            .with_timezone(&zone)
            .date_naive(),
    }
}

/// `YYYY-MM-DDThh:mm:ss[.f]` in UTC of a `dateTimeTimeZone` read back
/// (reads default to UTC); `None` for another zone (not judged).
fn utc_instant(v: &Value) -> Option<i64> {
    let zone = v["timeZone"].as_str().unwrap_or("UTC");
    if !zone.eq_ignore_ascii_case("UTC") {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(v["dateTime"].as_str()?, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|d| d.and_utc().timestamp())
}

/// Whether an exception read back still shows `expected`: its start and
/// end, and every other property we write (subject, body, location,
/// showAs, sensitivity, reminder, isAllDay, ...), compared against the body
/// the sink would write for that occurrence. What cannot be judged counts
/// as the same (no write on a doubt): a property not read back, a time in
/// another zone, a body read back in another content type.
fn shows(x: &Value, expected: &CanonicalEvent, expected_json: &Value) -> bool {
    let same = |got: &Value, want: &EventTime| match want {
        EventTime::Date(d) => got["dateTime"]
            .as_str()
            .and_then(|s| s.get(..10))
            .is_none_or(|s| s == d.format("%Y-%m-%d").to_string()),
        t => utc_instant(got).is_none_or(|at| at == t.instant()),
    };
    if !(same(&x["start"], &expected.start) && same(&x["end"], &expected.end)) {
        return false;
    }
    let Some(want) = expected_json.as_object() else {
        return true;
    };
    want.iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "start" | "end" | "recurrence" | "singleValueExtendedProperties" | "transactionId"
            )
        })
        .all(|(k, w)| match x.get(k) {
            None => true,
            Some(g) if k == "body" => same_body(g, w),
            Some(g) => same_value(g, w),
        })
}

/// A body read back against the one written: compared when read back in
/// the content type written (we ask for text; Graph's default is HTML).
fn same_body(got: &Value, want: &Value) -> bool {
    let kind = |v: &Value| v["contentType"].as_str().map(str::to_ascii_lowercase);
    if kind(got).is_some() && kind(got) != kind(want) {
        return true;
    }
    same_value(&got["content"], &want["content"])
}

/// A value read back against the one written: objects by the members
/// written (a member not read back is not judged), strings with line ends
/// and outer white space normalized (Exchange stores CRLF), enum strings
/// case-insensitively.
fn same_value(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (_, Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| got.get(k).is_none_or(|gv| same_value(gv, wv))),
        (Value::String(g), Value::String(w)) => {
            let norm = |s: &str| s.replace("\r\n", "\n").trim().to_owned();
            norm(g) == norm(w) || g.eq_ignore_ascii_case(w)
        }
        (Value::Null, Value::String(w)) => w.is_empty(),
        (Value::Number(g), Value::Number(w)) => g.as_f64() == w.as_f64(),
        (g, w) => g == w,
    }
}

/// `YYYY-MM-DDThh:mm:ss` in UTC.
fn iso(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The date of an `OID.{masterId}.{yyyy-MM-dd}` value.
fn cancelled_date(oid: &str) -> Option<NaiveDate> {
    let (_, d) = oid.rsplit_once('.')?;
    NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()
}

/// The sink state of the occurrence-level change feed, per target calendar
/// and source calendar.
pub(crate) const DELTA_STATE: &str = "graph_delta";

/// How far back the change feed's window reaches at most.
const DELTA_PAST: i64 = 2 * 366 * 86_400;
/// How far past now (or the latest series start) it reaches.
const DELTA_AHEAD: i64 = 400 * 86_400;
/// Slack so that a window is renewed about monthly, not every pass.
const DELTA_SLACK: i64 = 30 * 86_400;
/// Page size asked of the feed (Graph may answer smaller pages).
const DELTA_PAGE: u32 = 1000;

/// Where the occurrence-level change feed stands: the `deltaLink` of a
/// `calendarView/delta` round over a frozen window, and the masters a
/// round flagged whose check has not completed yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaState {
    pub link: String,
    pub from: i64,
    pub to: i64,
    #[serde(default)]
    pub pending: BTreeSet<String>,
    /// A round showed a removal we cannot attribute: every master is
    /// checked at the next pass.
    #[serde(default)]
    pub all: bool,
    /// Ids we deleted since the link (orphans): their removal is ours.
    #[serde(default)]
    pub removed: BTreeSet<String>,
}

/// The window the feed should cover for these series at `now`: from the
/// earliest series start (at most [`DELTA_PAST`] back) to
/// [`DELTA_AHEAD`] past now or the latest start. `None`: no series.
fn wanted_window(series: &[Series<'_>], now: i64) -> Option<(i64, i64)> {
    let starts: Vec<i64> = series
        .iter()
        .filter_map(Series::master)
        .filter(|m| m.rrule.is_some())
        .map(|m| m.start.instant())
        .collect();
    let first = *starts.iter().min()?;
    let last = *starts.iter().max()?;
    Some((
        (first - 86_400).max(now - DELTA_PAST),
        now.max(last) + DELTA_AHEAD,
    ))
}

/// Whether a kept feed still serves the window wanted: it is taken with
/// [`DELTA_SLACK`] past the wanted end, so it is renewed about monthly as
/// time goes by, and at once for a series older or later than it covers.
fn covers(st: &DeltaState, want: (i64, i64)) -> bool {
    !st.link.is_empty() && st.from <= want.0 && st.to >= want.1
}

/// What one round of the feed says about our series.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flags {
    /// Masters (Graph ids) with an occurrence-level change not ours.
    masters: BTreeSet<String>,
    /// A removal we cannot attribute: every master is checked.
    all: bool,
}

/// An item of ours as a round may show it.
#[derive(Debug, Clone)]
pub(crate) struct Own {
    pub uid: String,
    /// A single or a master (the tagged listing sees those).
    pub base: bool,
    pub etag: Option<String>,
}

/// Our recorded items by Graph id.
pub(crate) fn ours_of(records: &BTreeMap<EventKey, Recorded>) -> HashMap<String, Own> {
    records
        .iter()
        .filter(|(_, r)| !r.remote.id.is_empty())
        .map(|(k, r)| {
            (
                r.remote.id.clone(),
                Own {
                    uid: k.uid().to_owned(),
                    base: k.is_base(),
                    etag: r.remote.etag.clone(),
                },
            )
        })
        .collect()
}

/// Reads one round of the feed. Occurrences (`type: occurrence`) are
/// computed from their master, so only exceptions and removals can be a
/// user's occurrence-level change; an exception with the id and etag we
/// hold is our own write, a removal of an id we deleted is ours.
/// `masters`: our masters, Graph id to uid.
fn flags(
    items: &[Value],
    masters: &HashMap<String, String>,
    ours: &HashMap<String, Own>,
    removed: &BTreeSet<String>,
) -> Flags {
    let by_uid: HashMap<&str, &str> = masters
        .iter()
        .map(|(id, uid)| (uid.as_str(), id.as_str()))
        .collect();
    let mut out = Flags::default();
    for v in items {
        let Some(id) = v["id"].as_str() else { continue };
        if v.get("@removed").is_some() {
            if removed.contains(id) {
                continue;
            }
            match ours.get(id) {
                // One of our modified occurrences gone: its master.
                Some(o) if !o.base => {
                    if let Some(m) = by_uid.get(o.uid.as_str()) {
                        out.masters.insert((*m).to_owned());
                    }
                }
                // A single or master of ours: the tagged listing sees it.
                Some(_) => {}
                // An occurrence deleted (its id is computed, never
                // recorded), or an item that left the window.
                None => out.all = true,
            }
            continue;
        }
        if v["type"].as_str() != Some("exception") {
            continue;
        }
        let Some(master) = v["seriesMasterId"].as_str() else {
            continue;
        };
        if !masters.contains_key(master) {
            continue;
        }
        let etag = v["@odata.etag"].as_str();
        let own = ours
            .get(id)
            .is_some_and(|o| o.etag.is_some() && o.etag.as_deref() == etag);
        if !own {
            out.masters.insert(master.to_owned());
        }
    }
    out
}

/// `items` of a round read right after an apply, without the exceptions
/// that apply wrote itself and keeps no record of: those at the exact
/// instants of a series whose master it wrote (the first-occurrence fix and
/// [`crate::microsoft::exact`]), matched by their original start within 3
/// hours (Exchange may read a repeated or skipped time the other way). Left
/// in, each would flag its master and cost a read at the next pass.
fn without_own_exact(
    items: Vec<Value>,
    written: &[ItemOutcome],
    masters: &HashMap<String, String>,
    series: &[Series<'_>],
) -> Vec<Value> {
    let written: BTreeSet<&str> = written
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .map(|r| r.id.as_str())
        .filter(|id| masters.contains_key(*id))
        .collect();
    if written.is_empty() {
        return items;
    }
    let uids: BTreeSet<&str> = written
        .iter()
        .filter_map(|id| masters.get(*id).map(String::as_str))
        .collect();
    let horizon = crate::microsoft::exact::horizon();
    let exact: HashMap<&str, Vec<i64>> = series
        .iter()
        .filter(|s| uids.contains(s.uid))
        .map(|s| {
            let first = s
                .wall_clock_fix()
                .and_then(|f| f.first)
                .and(s.master())
                .map(|m| m.start.instant());
            let at = first
                .into_iter()
                .chain(
                    crate::microsoft::exact::exact_occurrences(s, horizon)
                        .into_iter()
                        .map(|o| o.original),
                )
                .collect();
            (s.uid, at)
        })
        .collect();
    items
        .into_iter()
        .filter(|v| {
            let own = v["type"].as_str() == Some("exception")
                && v.get("@removed").is_none()
                && v["seriesMasterId"]
                    .as_str()
                    .filter(|m| written.contains(m))
                    .and_then(|m| masters.get(m))
                    .and_then(|uid| exact.get(uid.as_str()))
                    .zip(v["originalStart"].as_str().and_then(super::sink::parse_utc))
                    .is_some_and(|(at, orig)| at.iter().any(|a| (a - orig).abs() <= 3 * 3600));
            !own
        })
        .collect()
}

/// What the occurrence check hands back to the drift pass: its writes (with
/// the master each is for) and the feed state to keep once they are done.
#[derive(Debug, Default)]
pub(crate) struct OccurrenceCheck {
    pub writes: Vec<(String, Request)>,
    pub commit: Option<(String, DeltaState)>,
}

impl GraphSink {
    /// Checks the occurrences of our recorded masters that are still in
    /// the calendar (`listed`); fills `drift` and returns the writes drift
    /// makes itself (a user's occurrence edit reverted, a series deleted to
    /// be restored).
    ///
    /// A master is read (its exceptions and deleted occurrences) only when
    /// something says it may have changed at the occurrence level, so that a
    /// pass over an unchanged calendar makes listing calls only. Whether
    /// Graph changes a series master's `@odata.etag` when one of its
    /// occurrences is edited or deleted is not documented (graph.md:
    /// `changeKey` "changes every time the event is changed"; nothing on
    /// occurrences), so the master's etag alone is not trusted: the
    /// occurrence-level changes come from `calendarView/delta` (graph.md §7),
    /// kept per target and source calendar in the sink state. A master is
    /// read when:
    /// * the feed has no round yet, its token was evicted (410), or its
    ///   window no longer covers the series (every master, once);
    /// * a round shows an exception of it that is not our write, or a
    ///   removal of one of its recorded occurrences; a removal we cannot
    ///   attribute (a deleted occurrence has a computed id) reads every
    ///   master;
    /// * its listed etag is not the one recorded;
    /// * an earlier pass flagged it and its check did not complete (a read
    ///   failed, or it made a write or rewrite; re-read once to confirm).
    ///
    /// The new `deltaLink` is kept only after the pass (see
    /// [`Self::commit_occurrence_check`]); a failed round keeps the old one,
    /// which Graph answers again from the same point.
    pub(crate) async fn occurrence_drift(
        &self,
        client: &GraphClient,
        calendar_id: &str,
        input: &DriftInput<'_>,
        listed: &HashMap<&str, &Value>,
        drift: &mut Drift,
    ) -> Result<OccurrenceCheck, bridge_target::SinkError> {
        let records = input.records;
        let now = chrono::Utc::now().timestamp();
        let Some(want) = wanted_window(input.series, now) else {
            return Ok(OccurrenceCheck::default());
        };
        let mut checked: Vec<Checked<'_>> = Vec::new();
        for s in input.series {
            let Some(m) = s.master() else { continue };
            let Ok(rec) = resource::recurrence_of(m) else {
                continue;
            };
            let Ok(base) = EventKey::new(s.uid, 0) else {
                continue;
            };
            let Some(r) = records.get(&base) else {
                continue;
            };
            if r.tombstone || !listed.contains_key(r.remote.id.as_str()) {
                continue;
            }
            checked.push(Checked {
                series: s,
                master: m,
                zone: rec.zone,
                id: r.remote.id.clone(),
                etag: r.remote.etag.clone(),
            });
        }
        // The change feed first: a change made while masters are read
        // shows in the next round.
        let key = format!("{calendar_id}|{}", input.calendar.id);
        let kept: Option<DeltaState> = self
            .state
            .get(DELTA_STATE, &key)
            .await
            .ok()
            .flatten()
            .and_then(|j| serde_json::from_str(&j).ok());
        let user = client.user_path();
        let prefer = vec![format!("odata.maxpagesize={DELTA_PAGE}")];
        let initial = || {
            Request::new(
                Method::Get,
                format!("{user}/calendars/{}/calendarView/delta", seg(calendar_id)),
            )
            .query("startDateTime", iso(want.0))
            .query("endDateTime", iso(want.1 + DELTA_SLACK))
            .prefer(prefer[0].clone())
        };
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut every = true;
        let mut round = None;
        if let Some(st) = kept.as_ref().filter(|st| covers(st, want)) {
            let answer = match client.follow(&st.link, &prefer) {
                Ok(req) => client.delta_round(req).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(r) => {
                    every = false;
                    pending.extend(st.pending.iter().cloned());
                    round = Some((r, st.from, st.to));
                }
                Err(e) if e.is_fatal() => return Err(self.sink_error(&e)),
                // Tried again from the same link next pass.
                Err(e) if e.is_transient() => {
                    drift.errors.push(format!("calendarView/delta: {e}"));
                    return Ok(OccurrenceCheck::default());
                }
                // Evicted (410) or refused: a new feed, every series once.
                Err(e) => {
                    tracing::info!(sink = %self.config().id, error = %e, "the Graph change feed starts anew: every series is checked once");
                }
            }
        }
        let ((items, link), from, to) = match round {
            Some(r) => r,
            None => match client.delta_round(initial()).await {
                Ok(r) => (r, want.0, want.1 + DELTA_SLACK),
                Err(e) if e.is_fatal() => return Err(self.sink_error(&e)),
                Err(e) => {
                    drift.errors.push(format!("calendarView/delta: {e}"));
                    return Ok(OccurrenceCheck::default());
                }
            },
        };
        let masters: HashMap<String, String> = checked
            .iter()
            .map(|c| (c.id.clone(), c.series.uid.to_owned()))
            .collect();
        if let Some(st) = kept.as_ref().filter(|_| !every) {
            let f = flags(&items, &masters, &ours_of(records), &st.removed);
            every = f.all || st.all;
            pending.extend(f.masters);
        }
        let read: Vec<&Checked<'_>> = checked
            .iter()
            .filter(|c| {
                every
                    || pending.contains(&c.id)
                    || listed
                        .get(c.id.as_str())
                        .and_then(|v| v["@odata.etag"].as_str())
                        .is_some_and(|e| c.etag.as_deref().is_some_and(|r| r != e))
            })
            .collect();
        // Masters no longer ours are not kept pending.
        pending.retain(|id| masters.contains_key(id));
        let mut check = OccurrenceCheck {
            writes: Vec::new(),
            commit: Some((
                key,
                DeltaState {
                    link,
                    from,
                    to,
                    ..DeltaState::default()
                },
            )),
        };
        let mut next_pending: BTreeSet<String> = BTreeSet::new();
        if read.is_empty() {
            if let Some((_, st)) = check.commit.as_mut() {
                st.pending = next_pending;
            }
            return Ok(check);
        }
        // Occurrence records by uid.
        let mut by_uid: HashMap<&str, Vec<(&EventKey, &Recorded)>> = HashMap::new();
        for (k, r) in records {
            if !k.is_base() && !r.tombstone {
                by_uid.entry(k.uid()).or_default().push((k, r));
            }
        }
        let reqs: Vec<Request> = read
            .iter()
            .map(|c| {
                Request::new(Method::Get, format!("{user}/events/{}", seg(&c.id)))
                    .query("$select", "id,type,cancelledOccurrences")
                    .query("$expand", "exceptionOccurrences")
                    // The body as we write it (Graph answers HTML otherwise).
                    .prefer("outlook.body-content-type=\"text\"")
            })
            .collect();
        // Plain GETs (not a `$batch`): a pass with nothing to write makes
        // reads only.
        let answers = client.each(reqs).await;
        for (c, a) in read.iter().zip(answers) {
            let v = match a {
                Ok(r) => r.body,
                // Deleted meanwhile: the next pass sees it gone.
                Err(e) if e.status() == Some(404) => continue,
                Err(e) if e.is_fatal() => return Err(self.sink_error(&e)),
                Err(e) => {
                    drift.errors.push(format!("{}: {e}", c.id));
                    next_pending.insert(c.id.clone());
                    continue;
                }
            };
            let recs = by_uid.get(c.series.uid).map_or(&[][..], Vec::as_slice);
            let mut writes = Vec::new();
            let before = (drift.rewrite.len(), drift.tombstone.len());
            self.check_series(c, &v, recs, input, drift, &mut writes, &user);
            // Acted on: checked again next pass, to see it done.
            if !writes.is_empty() || before != (drift.rewrite.len(), drift.tombstone.len()) {
                next_pending.insert(c.id.clone());
            }
            check
                .writes
                .extend(writes.into_iter().map(|w| (c.id.clone(), w)));
        }
        if let Some((_, st)) = check.commit.as_mut() {
            st.pending = next_pending;
        }
        Ok(check)
    }

    /// Keeps the feed state of a pass once its writes are done: the masters
    /// whose write failed stay pending. A dry run keeps nothing.
    pub(crate) async fn commit_occurrence_check(
        &self,
        commit: Option<(String, DeltaState)>,
        failed: BTreeSet<String>,
        removed: BTreeSet<String>,
    ) {
        let Some((key, mut st)) = commit else { return };
        st.pending.extend(failed);
        st.removed.extend(removed);
        self.keep_feed(&key, &st).await;
    }

    async fn keep_feed(&self, key: &str, st: &DeltaState) {
        let json = match serde_json::to_string(st) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(sink = %self.config().id, error = %e, "the Graph change feed state was not kept");
                return;
            }
        };
        if let Err(e) = self.state.put(DELTA_STATE, key, &json).await {
            // The next pass starts from the old link (or anew): nothing lost.
            tracing::warn!(sink = %self.config().id, error = %e, "the Graph change feed state was not kept");
        }
    }

    /// After `apply` wrote: one round of the feed, so that what we just
    /// wrote is not taken for a user's change at the next pass, and what
    /// was created since the last round is covered by the feed from now on
    /// (a round reports removals only of items it has shown). What the
    /// round shows that is not ours (an exception, a removal we cannot
    /// attribute) is kept pending for the next pass. Without a kept feed
    /// (no full pass yet) nothing is done: the next pass starts one.
    pub(crate) async fn acknowledge_writes(
        &self,
        client: &GraphClient,
        calendar_id: &str,
        input: &ReplicaInput<'_>,
        items: &[ItemOutcome],
        removed_now: BTreeSet<String>,
    ) {
        let key = format!("{calendar_id}|{}", input.calendar.id);
        let Some(mut st) = self
            .state
            .get(DELTA_STATE, &key)
            .await
            .ok()
            .flatten()
            .and_then(|j| serde_json::from_str::<DeltaState>(&j).ok())
            .filter(|st| !st.link.is_empty())
        else {
            return;
        };
        let prefer = vec![format!("odata.maxpagesize={DELTA_PAGE}")];
        let round = match client.follow(&st.link, &prefer) {
            Ok(req) => client.delta_round(req).await,
            Err(e) => Err(e),
        };
        let (items_seen, link) = match round {
            Ok(r) => r,
            Err(e) if e.status() == Some(410) => {
                // Evicted: the next pass starts anew (every master once).
                let _ = self.state.delete(DELTA_STATE, &key).await;
                return;
            }
            Err(e) => {
                // The next pass follows the kept link: our writes then show
                // as changes and cost reads, nothing is missed.
                tracing::debug!(sink = %self.config().id, error = %e, "the Graph change feed was not advanced");
                return;
            }
        };
        let mut ours = ours_of(input.records);
        for o in items {
            if let Ok(r) = &o.result
                && !r.id.is_empty()
            {
                ours.insert(
                    r.id.clone(),
                    Own {
                        uid: o.op.key().uid().to_owned(),
                        base: o.op.key().is_base(),
                        etag: r.etag.clone(),
                    },
                );
            }
        }
        let uids: BTreeSet<&str> = input
            .series
            .iter()
            .filter(|s| s.master().is_some_and(|m| m.rrule.is_some()))
            .map(|s| s.uid)
            .collect();
        let masters: HashMap<String, String> = ours
            .iter()
            .filter(|(_, o)| o.base && uids.contains(o.uid.as_str()))
            .map(|(id, o)| (id.clone(), o.uid.clone()))
            .collect();
        let mut removed = std::mem::take(&mut st.removed);
        removed.extend(removed_now);
        let items_seen = without_own_exact(items_seen, items, &masters, input.series);
        let f = flags(&items_seen, &masters, &ours, &removed);
        st.link = link;
        st.all |= f.all;
        st.pending.extend(f.masters);
        self.keep_feed(&key, &st).await;
    }

    #[allow(clippy::too_many_arguments)]
    fn check_series(
        &self,
        c: &Checked<'_>,
        v: &Value,
        recs: &[(&EventKey, &Recorded)],
        input: &DriftInput<'_>,
        drift: &mut Drift,
        writes: &mut Vec<Request>,
        user: &str,
    ) {
        let s = c.series;
        let m = c.master;
        let date = |t: i64| occurrence_date(m, c.zone, t);
        let src_cancelled: BTreeSet<NaiveDate> = s.cancelled.iter().map(|t| date(*t)).collect();
        let src_override: HashMap<NaiveDate, &CanonicalEvent> = s
            .overrides
            .iter()
            .map(|o| (date(o.key.original_time()), *o))
            .collect();
        let rec_at: HashMap<NaiveDate, (&EventKey, &Recorded)> = recs
            .iter()
            .map(|(k, r)| (date(k.original_time()), (*k, *r)))
            .collect();
        // Occurrences we write at exact instants (the first-occurrence fix
        // and microsoft::exact): their content is ours.
        let fix_first: HashMap<NaiveDate, CanonicalEvent> = s
            .wall_clock_fix()
            .and_then(|f| f.first)
            .map(|f| (date(m.start.instant()), f.event))
            .into_iter()
            .chain(
                crate::microsoft::exact::exact_occurrences(s, crate::microsoft::exact::horizon())
                    .into_iter()
                    .map(|o| (date(o.original), o.event)),
            )
            .collect();
        let mut rewrite: BTreeSet<EventKey> = BTreeSet::new();
        for x in v["exceptionOccurrences"].as_array().into_iter().flatten() {
            let (Some(xid), Some(orig)) = (
                x["id"].as_str(),
                x["originalStart"].as_str().and_then(super::sink::parse_utc),
            ) else {
                continue;
            };
            let d = date(orig);
            let etag = x["@odata.etag"].as_str();
            if src_cancelled.contains(&d) || src_override.contains_key(&d) {
                // Ours: rewritten when changed since our write.
                if let Some((k, r)) = rec_at.get(&d)
                    && r.remote.etag.as_deref().is_some_and(|e| Some(e) != etag)
                {
                    rewrite.insert((*k).clone());
                }
                continue;
            }
            // An occurrence the source does not modify: the series' content.
            let expected = match fix_first.get(&d) {
                Some(ev) => Some(ev.clone()),
                None => super::sink::reverted(m, orig),
            };
            let Some(expected) = expected else { continue };
            let body = self.body(&expected, Shape::Occurrence, input.calendar);
            if shows(x, &expected, &body) {
                continue;
            }
            tracing::info!(sink = %self.config().id, uid = s.uid, occurrence = %d, "an occurrence edited in Outlook is written back");
            if !input.dry_run {
                writes.push(
                    Request::new(Method::Patch, format!("{user}/events/{}", seg(xid)))
                        .body(body)
                        .if_match(etag.map(str::to_owned)),
                );
            }
        }
        let deleted: Vec<NaiveDate> = v["cancelledOccurrences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str().and_then(cancelled_date))
            .filter(|d| !src_cancelled.contains(d))
            .collect();
        if !deleted.is_empty() {
            match self.config().on_target_delete {
                OnTargetDelete::Respect => {
                    for d in &deleted {
                        if let Some((k, _)) = rec_at.get(d) {
                            drift.tombstone.push((*k).clone());
                        }
                    }
                }
                OnTargetDelete::Restore => {
                    tracing::info!(sink = %self.config().id, uid = s.uid, n = deleted.len(), "occurrences deleted in Outlook: the series is written anew");
                    if !input.dry_run {
                        writes.push(Request::new(
                            Method::Delete,
                            format!("{user}/events/{}", seg(&c.id)),
                        ));
                    }
                    if let Ok(base) = EventKey::new(s.uid, 0) {
                        rewrite.insert(base);
                    }
                    rewrite.extend(recs.iter().map(|(k, _)| (*k).clone()));
                }
            }
        }
        drift.rewrite.extend(rewrite);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_local_to_the_rule_zone_and_oids_parse() {
        let ev_zone: Tz = "Asia/Shanghai".parse().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-05-01T17:00:00Z")
            .unwrap()
            .timestamp();
        // 01:00 on 2 May in Shanghai.
        let mut ev = test_event();
        ev.start = EventTime::Zoned { at, tz: ev_zone };
        assert_eq!(
            occurrence_date(&ev, ev_zone, at),
            NaiveDate::from_ymd_opt(2026, 5, 2).unwrap()
        );
        assert_eq!(
            cancelled_date("OID.AAMk+/=.2026-05-02"),
            NaiveDate::from_ymd_opt(2026, 5, 2)
        );
        assert_eq!(cancelled_date("OID.x.notadate"), None);
    }

    #[test]
    fn an_exception_shows_the_series_unless_its_time_or_subject_changed() {
        let mut ev = test_event();
        ev.start = EventTime::Utc(1_777_000_000);
        ev.end = EventTime::Utc(1_777_003_600);
        let body = json!({"subject": "Standup"});
        let at = |t: i64| json!({"dateTime": chrono::DateTime::from_timestamp(t, 0).unwrap().format("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": "UTC"});
        let same =
            json!({"subject": "Standup", "start": at(1_777_000_000), "end": at(1_777_003_600)});
        assert!(shows(&same, &ev, &body));
        let moved =
            json!({"subject": "Standup", "start": at(1_777_000_900), "end": at(1_777_003_600)});
        assert!(!shows(&moved, &ev, &body));
        let renamed =
            json!({"subject": "Mine", "start": at(1_777_000_000), "end": at(1_777_003_600)});
        assert!(!shows(&renamed, &ev, &body));
        // Another read zone is not judged.
        let other = json!({"subject": "Standup", "start": {"dateTime": "2026-01-01T00:00:00", "timeZone": "Pacific Standard Time"}, "end": at(1_777_003_600)});
        assert!(shows(&other, &ev, &body));
    }

    #[test]
    fn an_exception_differing_in_any_written_property_does_not_show_the_series() {
        let mut ev = test_event();
        ev.start = EventTime::Utc(1_777_000_000);
        ev.end = EventTime::Utc(1_777_003_600);
        let at = |t: i64| json!({"dateTime": chrono::DateTime::from_timestamp(t, 0).unwrap().format("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": "UTC"});
        let want = json!({
            "subject": "Standup",
            "body": {"contentType": "text", "content": "Agenda\n1. a"},
            "isAllDay": false,
            "showAs": "busy",
            "sensitivity": "normal",
            "location": {"displayName": "Room 1"},
            "isReminderOn": true,
            "reminderMinutesBeforeStart": 15,
            "start": at(1_777_000_000),
            "end": at(1_777_003_600),
        });
        // As read back: CRLF line ends, extra members, an enum in another case.
        let read = json!({
            "subject": "Standup",
            "body": {"contentType": "text", "content": "Agenda\r\n1. a\r\n"},
            "isAllDay": false,
            "showAs": "Busy",
            "sensitivity": "normal",
            "location": {"displayName": "Room 1", "locationType": "default"},
            "isReminderOn": true,
            "reminderMinutesBeforeStart": 15,
            "importance": "normal",
            "start": at(1_777_000_000),
            "end": at(1_777_003_600),
        });
        assert!(shows(&read, &ev, &want));
        for (k, v) in [
            ("body", json!({"contentType": "text", "content": "mine"})),
            ("location", json!({"displayName": "Elsewhere"})),
            ("showAs", json!("oof")),
            ("sensitivity", json!("private")),
            ("isReminderOn", json!(false)),
            ("reminderMinutesBeforeStart", json!(30)),
            ("isAllDay", json!(true)),
        ] {
            let mut x = read.clone();
            x[k] = v;
            assert!(!shows(&x, &ev, &want), "{k}");
        }
        // Not judged: a property not read back, an HTML body.
        let mut x = read.clone();
        x.as_object_mut().unwrap().remove("location");
        x["body"] = json!({"contentType": "html", "content": "<p>Agenda</p>"});
        assert!(shows(&x, &ev, &want));
    }

    fn own(uid: &str, base: bool, etag: &str) -> Own {
        Own {
            uid: uid.into(),
            base,
            etag: Some(etag.into()),
        }
    }

    #[test]
    fn a_round_flags_exceptions_not_ours_and_removals_it_cannot_attribute() {
        let masters: HashMap<String, String> = [
            ("M1".to_owned(), "u1".to_owned()),
            ("M2".to_owned(), "u2".to_owned()),
        ]
        .into();
        let ours: HashMap<String, Own> = [
            ("M1".to_owned(), own("u1", true, "m1")),
            ("M2".to_owned(), own("u2", true, "m2")),
            ("X1".to_owned(), own("u1", false, "x1")),
            ("S1".to_owned(), own("s1", true, "s1")),
        ]
        .into();
        let removed: BTreeSet<String> = ["O9".to_owned()].into();
        let ex = |id: &str, m: &str, e: &str| json!({"id": id, "type": "exception", "seriesMasterId": m, "@odata.etag": e});
        let gone = |id: &str| json!({"id": id, "@removed": {"reason": "deleted"}});
        // Our own writes, computed occurrences, our orphan deletes: nothing.
        let quiet = [
            ex("X1", "M1", "x1"),
            json!({"id": "O1", "type": "occurrence", "seriesMasterId": "M2", "@odata.etag": "z"}),
            ex("Y", "OTHER", "y"),
            gone("S1"),
            gone("O9"),
        ];
        assert_eq!(flags(&quiet, &masters, &ours, &removed), Flags::default());
        // Our exception changed; a plain occurrence of M2 edited.
        let f = flags(
            &[ex("X1", "M1", "x2"), ex("O2", "M2", "q")],
            &masters,
            &ours,
            &removed,
        );
        assert_eq!(f.masters, ["M1".to_owned(), "M2".to_owned()].into());
        assert!(!f.all);
        // One of our modified occurrences deleted: its master.
        let f = flags(&[gone("X1")], &masters, &ours, &removed);
        assert_eq!((f.masters, f.all), (["M1".to_owned()].into(), false));
        // A deleted plain occurrence has an id we never recorded.
        assert!(flags(&[gone("O3")], &masters, &ours, &removed).all);
    }

    #[test]
    fn the_feed_window_follows_the_series_and_is_renewed_monthly() {
        let now = 1_800_000_000;
        let st = |from, to| DeltaState {
            link: "https://graph.microsoft.com/v1.0/x?$deltatoken=t".into(),
            from,
            to,
            ..DeltaState::default()
        };
        let want = (now - 100 * 86_400, now + DELTA_AHEAD);
        assert!(covers(&st(want.0, want.1 + DELTA_SLACK), want));
        // An older series than the window, or time past the slack: anew.
        assert!(!covers(&st(want.0 + 1, want.1 + DELTA_SLACK), want));
        assert!(!covers(&st(want.0, now + DELTA_AHEAD - 1), want));
        assert!(!covers(&DeltaState::default(), want));
        // A month later the same feed is renewed.
        let later = now + DELTA_SLACK + 1;
        let want_later = (want.0, later + DELTA_AHEAD);
        assert!(!covers(&st(want.0, want.1 + DELTA_SLACK), want_later));
    }

    fn test_event() -> CanonicalEvent {
        CanonicalEvent {
            key: EventKey::new("u1", 0).unwrap(),
            start: EventTime::Utc(0),
            end: EventTime::Utc(3600),
            rrule: None,
            rrule_bound: None,
            summary: "Standup".into(),
            description: String::new(),
            location: None,
            geo: None,
            url: None,
            conference: None,
            status: None,
            class: None,
            transparent: false,
            alarms: Vec::new(),
            organizer: None,
            attendees: Vec::new(),
            created: None,
        }
    }
}
