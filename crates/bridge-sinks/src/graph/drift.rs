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

use std::collections::{BTreeSet, HashMap};

use bridge_core::{CanonicalEvent, EventKey, EventTime, Series};
use bridge_target::{Drift, DriftInput, Recorded};
use chrono::NaiveDate;
use chrono_tz::Tz;
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

/// Whether an exception read back still shows `expected` (subject, start,
/// end); what cannot be judged counts as the same (no write on a doubt).
fn shows(x: &Value, expected: &CanonicalEvent, expected_json: &Value) -> bool {
    if x["subject"].as_str() != expected_json["subject"].as_str() {
        return false;
    }
    let same = |got: &Value, want: &EventTime| match want {
        EventTime::Date(d) => got["dateTime"]
            .as_str()
            .and_then(|s| s.get(..10))
            .is_none_or(|s| s == d.format("%Y-%m-%d").to_string()),
        t => utc_instant(got).is_none_or(|at| at == t.instant()),
    };
    same(&x["start"], &expected.start) && same(&x["end"], &expected.end)
}

/// The date of an `OID.{masterId}.{yyyy-MM-dd}` value.
fn cancelled_date(oid: &str) -> Option<NaiveDate> {
    let (_, d) = oid.rsplit_once('.')?;
    NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()
}

impl GraphSink {
    /// Checks the occurrences of our recorded masters that are still in
    /// the calendar (`listed`); fills `drift` and returns the writes drift
    /// makes itself (a user's occurrence edit reverted, a series deleted to
    /// be restored). A master that cannot be read is skipped this pass.
    pub(crate) async fn occurrence_drift(
        &self,
        client: &GraphClient,
        input: &DriftInput<'_>,
        listed: &HashMap<&str, &Value>,
        drift: &mut Drift,
    ) -> Result<Vec<Request>, bridge_target::SinkError> {
        let records = input.records;
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
            });
        }
        if checked.is_empty() {
            return Ok(Vec::new());
        }
        // Occurrence records by uid.
        let mut by_uid: HashMap<&str, Vec<(&EventKey, &Recorded)>> = HashMap::new();
        for (k, r) in records {
            if !k.is_base() && !r.tombstone {
                by_uid.entry(k.uid()).or_default().push((k, r));
            }
        }
        let user = client.user_path();
        let reqs: Vec<Request> = checked
            .iter()
            .map(|c| {
                Request::new(Method::Get, format!("{user}/events/{}", seg(&c.id)))
                    .query("$select", "id,type,cancelledOccurrences")
                    .query("$expand", "exceptionOccurrences")
            })
            .collect();
        // Plain GETs (not a `$batch`): a pass with nothing to write makes
        // reads only.
        let answers = client.each(reqs).await;
        let mut writes = Vec::new();
        for (c, a) in checked.iter().zip(answers) {
            let v = match a {
                Ok(r) => r.body,
                // Deleted meanwhile: the next pass sees it gone.
                Err(e) if e.status() == Some(404) => continue,
                Err(e) if e.is_fatal() => return Err(self.sink_error(&e)),
                Err(e) => {
                    drift.errors.push(format!("{}: {e}", c.id));
                    continue;
                }
            };
            let recs = by_uid.get(c.series.uid).map_or(&[][..], Vec::as_slice);
            self.check_series(c, &v, recs, input, drift, &mut writes, &user);
        }
        Ok(writes)
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
