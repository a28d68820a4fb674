//! Occurrences of a recurring series that readers place differently.
//!
//! A series' RRULE expands in wall-clock time from its local DTSTART
//! (RFC 5545 §3.3.10); each generated wall-clock time is then read in the
//! zone. Readers disagree on the times a zone repeats or skips:
//! RFC 5545 §3.3.5 (and Python's `icalendar` stack) takes the first of two
//! equal wall-clock times and the offset before a gap; ical.js 2.2.1 and
//! khal 0.14.1 take the second of two equal times (and ical.js the offset
//! after a gap). Readers also measure an occurrence's end differently: some
//! add the length in exact time, some in wall-clock time (ical.js, Python),
//! which differ for an occurrence that spans an offset change.
//!
//! So every generated occurrence whose wall-clock start is repeated or
//! skipped, whose end is in a repeated hour, or which spans an offset
//! change, gets an override that no reading can misplace:
//!
//! - its RECURRENCE-ID is the generated wall-clock time with the series'
//!   TZID, exactly as the rule generates it (even inside a gap), so a
//!   reader resolves it as it resolves the generated occurrence and matches
//!   the two under any reading (ical.js matches by the wall-clock text;
//!   Python and khal by the instant, resolved the same way on both sides);
//! - its DTSTART / DTEND are UTC, exact under any reading.
//!
//! EXDATEs and the RECURRENCE-IDs of Feishu's own exceptions at such an
//! occurrence use the same wall-clock form. A master whose own DTSTART is
//! repeated gets a DURATION instead of a DTEND (a UTC DTEND would give the
//! length from whichever instant a reader picks).
//!
//! Feishu's instant of a generated occurrence: the master's start for the
//! first one; otherwise the RFC 5545 reading of its wall-clock time (the
//! `original_time` Feishu gives an exception of it, see the golden case
//! `dst_spring_forward_gap`).
//!
//! Bounded: occurrences up to [`horizon`] (the start of the third year
//! after the render's DTSTAMP, so at least two years ahead, and the same
//! for a whole year of renders), at most [`MAX_OCCURRENCES`] per series,
//! and only series whose zone changes offset between their start and the
//! horizon. Beyond it readers get the wall-clock form alone (RFC 5545 exact;
//! ical.js and khal may misplace occurrences in a repeated or skipped hour).
//!
//! The Microsoft replicas (EWS, Graph) use the same [`exact_series`] and
//! [`horizon`] for the same problem: Exchange generates each occurrence
//! itself from the wall-clock pattern (`bridge_sinks::microsoft::exact`).

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::instant::{is_repeated, resolve, wall_clock};
use crate::model::{CanonicalEvent, EventTime, utc_datetime};
use crate::series::Series;

/// Generated occurrences looked at per series, at most.
pub const MAX_OCCURRENCES: usize = 20_000;

/// The end of the window of occurrences made exact, for a render at
/// `dtstamp`: January 1 (UTC) of the third year after.
pub fn horizon(dtstamp: i64) -> i64 {
    let year = utc_datetime(dtstamp).year().clamp(1, 9000) + 3;
    chrono::NaiveDate::from_ymd_opt(year, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(i64::MAX, |d| d.and_utc().timestamp())
}

/// One generated occurrence that gets an override.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// As the rule generates it (may be inside a gap).
    pub wall: NaiveDateTime,
    /// Its 0-based position among the rule's generated occurrences (the
    /// first is the master's own start), cancelled ones included: what
    /// Exchange calls its `InstanceIndex` minus one.
    pub index: usize,
    /// The override: the master's content at Feishu's instants, in UTC.
    pub event: CanonicalEvent,
}

/// What a series' master needs to be exact under every reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactSeries {
    /// Overrides of generated occurrences Feishu does not list itself.
    pub occurrences: Vec<Occurrence>,
    /// Feishu instant -> generated wall-clock time, for every risky
    /// occurrence (listed by Feishu or not): the RECURRENCE-ID / EXDATE
    /// form of an exception at that instant.
    pub wall_of: HashMap<i64, NaiveDateTime>,
    /// The master's length, written as DURATION (its DTSTART is repeated).
    pub duration: Option<i64>,
    pub tz: Option<Tz>,
}

/// The RECURRENCE-ID / EXDATE form of original time `at` in the series
/// of `master`, given what [`exact_series`] found for it.
pub fn rid(ex: Option<&ExactSeries>, master: &CanonicalEvent, at: i64) -> Rid {
    match ex.and_then(|e| Some((e.tz?, e.wall_of.get(&at)?))) {
        Some((tz, w)) => Rid::Wall(tz, *w),
        None => Rid::Time(master.start.same_form(at)),
    }
}

/// A RECURRENCE-ID or EXDATE value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rid {
    Time(EventTime),
    /// A wall-clock time with a TZID, as generated (may name no instant).
    Wall(Tz, NaiveDateTime),
}

fn offset(tz: Tz, at: i64) -> i32 {
    tz.offset_from_utc_datetime(&utc_datetime(at))
        .fix()
        .local_minus_utc()
}

/// Whether the offset of `tz` changes in `[from, to]`. Cached per zone
/// and year range by the caller; sampled every 6 hours (no zone has
/// changed offset twice within 6 hours).
fn changes_offset(tz: Tz, from: i64, to: i64) -> bool {
    const STEP: i64 = 6 * 3600;
    let first = offset(tz, from);
    let mut t = from;
    while t < to {
        t = (t + STEP).min(to);
        if offset(tz, t) != first {
            return true;
        }
    }
    false
}

/// Per render: whether a zone changes offset in a year range.
#[derive(Debug, Default)]
pub struct ZoneChanges(BTreeMap<(&'static str, i32, i32), bool>);

impl ZoneChanges {
    fn changes(&mut self, tz: Tz, from: i64, to: i64) -> bool {
        let (fy, ty) = (utc_datetime(from).year(), utc_datetime(to).year());
        *self.0.entry((tz.name(), fy, ty)).or_insert_with(|| {
            let start = chrono::NaiveDate::from_ymd_opt(fy, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(from, |d| d.and_utc().timestamp());
            let end = chrono::NaiveDate::from_ymd_opt(ty + 1, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(to, |d| d.and_utc().timestamp());
            changes_offset(tz, start, end)
        })
    }
}

/// The rule's generated wall-clock times, from `first` (the master's local
/// DTSTART) up to `until_wall`. The rule is expanded as if the zone were
/// UTC, that is in pure wall-clock time, which is what RFC 5545 asks and
/// what keeps the `rrule` crate out of the zone's gaps and folds; UNTIL is
/// left out here and applied by the caller in real time.
fn wall_times(rule: &str, first: NaiveDateTime, until_wall: NaiveDateTime) -> Vec<NaiveDateTime> {
    let body: Vec<&str> = rule
        .split(';')
        .filter(|p| !p.to_ascii_uppercase().starts_with("UNTIL="))
        .collect();
    let start = rrule::Tz::UTC.from_utc_datetime(&first);
    let end = rrule::Tz::UTC.from_utc_datetime(&until_wall);
    let Ok(set) = rrule::RRuleSet::new(start).set_from_string(&format!("RRULE:{}", body.join(";")))
    else {
        return Vec::new();
    };
    set.before(end)
        .into_iter()
        .take(MAX_OCCURRENCES)
        .map(|d| d.naive_utc())
        .collect()
}

/// What `s`'s master needs (see the module documentation); `None` when
/// it needs nothing (no master, not zoned, no offset change in range).
pub fn exact_series(s: &Series<'_>, horizon: i64, zones: &mut ZoneChanges) -> Option<ExactSeries> {
    let m = s.master()?;
    let rule = m.rrule.as_deref()?;
    let EventTime::Zoned { at: start, tz } = m.start else {
        return None;
    };
    let length = m.end.instant() - start;
    let duration = is_repeated(tz, start).then_some(length);
    let until = m.rrule_bound.unwrap_or(i64::MAX).min(horizon);
    if !zones.changes(tz, start, until.max(start) + length.max(0)) {
        return None;
    }
    let risky = |wall: NaiveDateTime, at: i64| {
        !matches!(tz.from_local_datetime(&wall), LocalResult::Single(_))
            || is_repeated(tz, at + length)
            || offset(tz, at) != offset(tz, at + length)
    };
    let listed = |at: i64| {
        s.cancelled.contains(&at) || s.overrides.iter().any(|o| o.key.original_time() == at)
    };
    let first = wall_clock(tz, start);
    let until_wall = utc_datetime(until.max(start))
        .checked_add_signed(chrono::Duration::days(2))
        .unwrap_or(NaiveDateTime::MAX);
    let mut out = ExactSeries {
        tz: Some(tz),
        duration,
        ..ExactSeries::default()
    };
    for (i, wall) in wall_times(rule, first, until_wall).into_iter().enumerate() {
        let at = if i == 0 { start } else { resolve(tz, wall) };
        if i > 0 && at > until {
            break;
        }
        if !risky(wall, at) {
            continue;
        }
        out.wall_of.insert(at, wall);
        if !listed(at) {
            let mut event = m.clone();
            event.start = EventTime::Utc(at);
            event.end = EventTime::Utc(at + length);
            event.rrule = None;
            event.rrule_bound = None;
            out.occurrences.push(Occurrence {
                wall,
                index: i,
                event,
            });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Item;

    const NY: &str = "America/New_York";

    fn master(uid: &str, start: i64, end: i64, rule: &str) -> Item {
        crate::map::map_event(
            &serde_json::from_value(serde_json::json!({
                "event_id": format!("{uid}_0"),
                "summary": "s",
                "start_time": {"timestamp": start.to_string(), "timezone": NY},
                "end_time": {"timestamp": end.to_string(), "timezone": NY},
                "recurrence": rule,
            }))
            .unwrap(),
            &mut Vec::new(),
        )
        .unwrap()
    }

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }

    /// 2026-10-30T05:30:00Z = 01:30 EDT.
    const OCT30_0130: i64 = 1_793_338_200;
    /// 2026-03-06T07:30:00Z = 02:30 EST.
    const MAR06_0230: i64 = 1_772_782_200;

    #[test]
    fn later_occurrences_in_a_repeated_or_skipped_hour_get_overrides() {
        let items = [
            master("a", OCT30_0130, OCT30_0130 + 1800, "FREQ=DAILY;COUNT=5"),
            master("b", MAR06_0230, MAR06_0230 + 1800, "FREQ=DAILY"),
        ];
        let series = crate::series::group(&items);
        let mut zones = ZoneChanges::default();
        let h = horizon(1_767_225_600); // rendered in 2026: up to 2029-01-01
        assert_eq!(h, 1_861_920_000);
        let a = exact_series(&series[0], h, &mut zones).unwrap();
        // Nov 1 01:30 is repeated: read as the first (05:30Z), 30 minutes.
        let walls: Vec<_> = a.occurrences.iter().map(|o| o.wall).collect();
        assert_eq!(walls, [wall("2026-11-01T01:30")]);
        assert_eq!(a.occurrences[0].index, 2);
        let o = &a.occurrences[0].event;
        assert_eq!(o.start, EventTime::Utc(1_793_511_000));
        assert_eq!(o.end, EventTime::Utc(1_793_511_000 + 1800));
        assert_eq!(o.rrule, None);
        assert_eq!(a.duration, None);

        let b = exact_series(&series[1], h, &mut zones).unwrap();
        // Mar 8 2026, 2027 and 2028: 02:30 falls in the gap each year
        // (NY springs forward on the second Sunday of March).
        let walls: Vec<_> = b.occurrences.iter().map(|o| o.wall).collect();
        assert_eq!(
            walls,
            [
                wall("2026-03-08T02:30"),
                wall("2027-03-14T02:30"),
                wall("2028-03-12T02:30")
            ]
        );
        // Read with the offset before the gap: 07:30Z (03:30 EDT).
        assert_eq!(b.occurrences[0].event.start, EventTime::Utc(1_772_955_000));
        let Item::Event(bm) = &items[1] else { panic!() };
        assert_eq!(
            rid(Some(&b), bm, 1_772_955_000),
            Rid::Wall(chrono_tz::America::New_York, wall("2026-03-08T02:30"))
        );
        assert!(matches!(
            rid(Some(&b), bm, 1_772_955_000 + 86_400),
            Rid::Time(_)
        ));
    }

    #[test]
    fn zones_without_offset_changes_need_nothing() {
        let item = crate::map::map_event(
            &serde_json::from_value(serde_json::json!({
                "event_id": "c_0",
                "summary": "s",
                "start_time": {"timestamp": "1772782200", "timezone": "Asia/Shanghai"},
                "end_time": {"timestamp": "1772784000", "timezone": "Asia/Shanghai"},
                "recurrence": "FREQ=DAILY",
            }))
            .unwrap(),
            &mut Vec::new(),
        )
        .unwrap();
        let series = crate::series::group(std::slice::from_ref(&item));
        assert_eq!(
            exact_series(
                &series[0],
                horizon(1_767_225_600),
                &mut ZoneChanges::default()
            ),
            None
        );
    }
}
