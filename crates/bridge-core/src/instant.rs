//! Exact instants in wall-clock form.
//!
//! Feishu gives every time as an exact instant (Unix seconds) plus an IANA
//! zone. iCalendar (and Exchange's EWS / Graph) take a wall-clock time plus a
//! zone name, which RFC 5545 §3.3.5 resolves like this:
//!
//! - a wall-clock time that occurs twice (the repeated hour when clocks fall
//!   back) means its **first** occurrence;
//! - a wall-clock time that does not occur (the gap when clocks spring
//!   forward) is read with the UTC offset in force **before** the gap.
//!
//! So the second occurrence of a repeated hour cannot be written as wall-clock
//! time at all, and a value in the first occurrence only by a convention some
//! readers get wrong. The mapping ([`crate::map`]) therefore writes such
//! times in UTC ([`exact`]) except where the wall-clock form is needed: the
//! DTSTART of a recurring series, which must stay local so that the rule keeps
//! expanding in local time. A series whose first occurrence is the second of
//! two equal wall-clock times gets an override of that one occurrence at its
//! true instant ([`fix_series`]); see ARCHITECTURE.md, "Identity and
//! mapping decisions".
//!
//! Pure: no I/O, no clock.

use chrono::{Duration, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::model::{CanonicalEvent, EventTime, utc_datetime};

/// The wall-clock time of `at` in `tz`.
pub fn wall_clock(tz: Tz, at: i64) -> NaiveDateTime {
    EventTime::Zoned { at, tz }.local()
}

/// The instant an RFC 5545 reader gives `wall` in `tz` (§3.3.5): the first
/// occurrence of a repeated time; the offset before the gap for a time that
/// does not exist.
pub fn resolve(tz: Tz, wall: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.timestamp(),
        LocalResult::Ambiguous(a, b) => a.timestamp().min(b.timestamp()),
        LocalResult::None => {
            // In a gap: the offset of the last wall-clock time before it.
            // Gaps are at most a day long (Pacific/Apia, 2011).
            let before = (1..=49).find_map(|h| {
                tz.from_local_datetime(&wall.checked_sub_signed(Duration::hours(h))?)
                    .latest()
                    .map(|t| i64::from(t.offset().fix().local_minus_utc()))
            });
            wall.and_utc().timestamp() - before.unwrap_or(0)
        }
    }
}

/// Whether the wall-clock time of `at` in `tz` occurs twice (either
/// occurrence of a repeated hour).
pub fn is_repeated(tz: Tz, at: i64) -> bool {
    matches!(
        tz.from_local_datetime(&wall_clock(tz, at)),
        LocalResult::Ambiguous(..)
    )
}

/// How far an RFC 5545 reader puts the wall-clock form of `t` before its true
/// instant: one transition's difference for the second occurrence of a
/// repeated hour, otherwise 0.
pub fn wall_clock_error(t: &EventTime) -> i64 {
    match t {
        EventTime::Zoned { at, tz } => at - resolve(*tz, wall_clock(*tz, *at)),
        _ => 0,
    }
}

/// `t` in a form every reader resolves to its instant: a zoned time whose
/// wall-clock time is repeated becomes UTC; everything else is unchanged.
pub fn exact(t: EventTime) -> EventTime {
    match t {
        EventTime::Zoned { at, tz } if is_repeated(tz, at) => EventTime::Utc(at),
        t => t,
    }
}

/// The DTEND of a recurring series. Readers take every occurrence's length
/// from DTSTART and DTEND; RFC 5545 §3.8.5.3 means the exact length, but some
/// readers (Python's `icalendar` stack) subtract two values with the same
/// TZID as wall-clock times. So an end whose UTC offset differs from the
/// offset at the start (the first occurrence spans a transition) is written
/// in UTC, like an end in a repeated hour: every reader then gets the exact
/// length.
pub fn series_end(start: &EventTime, end: EventTime) -> EventTime {
    match end {
        EventTime::Zoned { at, tz } if offset(tz, at) != offset(tz, start.instant()) => {
            EventTime::Utc(at)
        }
        end => exact(end),
    }
}

fn offset(tz: Tz, at: i64) -> i32 {
    tz.offset_from_utc_datetime(&utc_datetime(at))
        .fix()
        .local_minus_utc()
}

/// The fix for a recurring series whose first occurrence a reader could get
/// wrong from the master alone:
///
/// - its DTSTART, written as wall-clock time, means an earlier instant than
///   Feishu's (the first occurrence is the second of two equal wall-clock
///   times);
/// - or the first occurrence spans a transition of the start's zone: readers
///   that add the length to the wall-clock start (Python's `icalendar` stack
///   does) then put its end an offset change away from Feishu's.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesFix {
    /// The master as written: the same local DTSTART (the rule expands from
    /// it), and an end, in UTC, that gives every generated occurrence
    /// Feishu's length (`end - error`, since readers measure the length from
    /// the resolved DTSTART).
    pub master: CanonicalEvent,
    /// The override of the first generated occurrence, unless Feishu lists
    /// that occurrence itself.
    pub first: Option<FirstOccurrence>,
}

/// An override of a series' first generated occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstOccurrence {
    /// The master's content at Feishu's instants, in UTC, without a rule.
    pub event: CanonicalEvent,
    /// Its RECURRENCE-ID: the master's DTSTART value, which every reader
    /// resolves to the occurrence it generates.
    pub recurrence_id: EventTime,
}

/// What a wall-clock target must write instead of `master`, or `None` when
/// it needs no fix (see [`SeriesFix`]; always `None` for a single event, an
/// all-day series or one in UTC). `listed` says whether Feishu lists the first occurrence itself (a
/// modification or a cancellation with `original_time` = the master's start):
/// then its RECURRENCE-ID or EXDATE, written with [`EventTime::same_form`],
/// already names the generated occurrence and no override is added.
pub fn fix_series(master: &CanonicalEvent, listed: bool) -> Option<SeriesFix> {
    master.rrule.as_ref()?;
    let EventTime::Zoned { at: start, tz } = master.start else {
        return None;
    };
    let end = master.end.instant();
    let error = wall_clock_error(&master.start);
    if error == 0 && offset(tz, start) == offset(tz, end) {
        return None;
    }
    let mut written = master.clone();
    written.end = EventTime::Utc(end - error);
    let first = (!listed).then(|| {
        let mut event = master.clone();
        event.start = EventTime::Utc(start);
        event.end = EventTime::Utc(end);
        event.rrule = None;
        event.rrule_bound = None;
        FirstOccurrence {
            event,
            recurrence_id: master.start.same_form(start),
        }
    });
    Some(SeriesFix {
        master: written,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Item;
    use chrono::NaiveDate;

    fn wall(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    }

    const NY: Tz = chrono_tz::America::New_York;
    /// 2026-11-01T05:30:00Z = 01:30 EDT, the first 01:30.
    const FIRST: i64 = 1_793_511_000;
    /// 2026-11-01T06:30:00Z = 01:30 EST, the second 01:30.
    const SECOND: i64 = FIRST + 3600;

    #[test]
    fn rfc5545_examples() {
        // §3.3.5: 20071104T013000 is 1:30 EDT; 20070311T023000 is 3:30 EDT.
        assert_eq!(resolve(NY, wall(2007, 11, 4, 1, 30)), 1_194_154_200);
        assert_eq!(resolve(NY, wall(2007, 3, 11, 2, 30)), 1_173_598_200);
        assert_eq!(resolve(NY, wall(2026, 11, 1, 1, 30)), FIRST);
        // Lord Howe springs forward by 30 minutes at 02:00 local.
        let lh = chrono_tz::Australia::Lord_Howe;
        let t = resolve(lh, wall(2026, 10, 4, 2, 15));
        assert_eq!(wall_clock(lh, t), wall(2026, 10, 4, 2, 45));
        // Apia skipped 2011-12-30 entirely (UTC-10 -> UTC+14).
        let apia = chrono_tz::Pacific::Apia;
        let t = resolve(apia, wall(2011, 12, 30, 12, 0));
        assert_eq!(wall_clock(apia, t), wall(2011, 12, 31, 12, 0));
    }

    #[test]
    fn repeated_hour_both_occurrences() {
        assert!(is_repeated(NY, FIRST));
        assert!(is_repeated(NY, SECOND));
        assert!(!is_repeated(NY, FIRST - 1801));
        assert!(!is_repeated(NY, SECOND + 1800));
        let first = EventTime::Zoned { at: FIRST, tz: NY };
        let second = EventTime::Zoned { at: SECOND, tz: NY };
        assert_eq!(wall_clock_error(&first), 0);
        assert_eq!(wall_clock_error(&second), 3600);
        assert_eq!(exact(first), EventTime::Utc(FIRST));
        assert_eq!(exact(second), EventTime::Utc(SECOND));
        let noon = EventTime::Zoned {
            at: FIRST + 12 * 3600,
            tz: NY,
        };
        assert_eq!(exact(noon), noon);
    }

    fn series(start: i64, end: i64) -> CanonicalEvent {
        let item = crate::map::map_event(
            &serde_json::from_value(serde_json::json!({
                "event_id": "u_0",
                "summary": "s",
                "start_time": {"timestamp": start.to_string(), "timezone": "America/New_York"},
                "end_time": {"timestamp": end.to_string(), "timezone": "America/New_York"},
                "recurrence": "FREQ=DAILY;COUNT=3",
            }))
            .unwrap(),
            &mut Vec::new(),
        )
        .unwrap();
        match item {
            Item::Event(e) => *e,
            Item::Cancelled(_) => unreachable!(),
        }
    }

    #[test]
    fn series_starting_in_the_second_occurrence_gets_an_override() {
        let m = series(SECOND, SECOND + 1800);
        // The mapping keeps the local start and the end (02:00 EST, exact).
        assert_eq!(m.start, EventTime::Zoned { at: SECOND, tz: NY });
        assert_eq!(
            m.end,
            EventTime::Zoned {
                at: SECOND + 1800,
                tz: NY
            }
        );
        let fix = fix_series(&m, false).unwrap();
        assert_eq!(fix.master.start, m.start);
        // Readers put the DTSTART at FIRST, so the length runs from there.
        assert_eq!(fix.master.end, EventTime::Utc(FIRST + 1800));
        let first = fix.first.unwrap();
        assert_eq!(first.recurrence_id, EventTime::Zoned { at: SECOND, tz: NY });
        assert_eq!(first.event.start, EventTime::Utc(SECOND));
        assert_eq!(first.event.end, EventTime::Utc(SECOND + 1800));
        assert_eq!(first.event.rrule, None);
        assert_eq!(first.event.key, m.key);
        // Feishu lists the first occurrence itself: no override, same master.
        let listed = fix_series(&m, true).unwrap();
        assert_eq!((listed.master, listed.first), (fix.master, None));
    }

    #[test]
    fn series_fixes_only_when_needed() {
        // The first 01:30, 20 minutes: exact as written.
        assert_eq!(fix_series(&series(FIRST, FIRST + 1200), false), None);
        // Noon to 13:00 the day before: nothing near a transition.
        let noon = FIRST - 12 * 3600;
        let m = series(noon, noon + 3600);
        assert_eq!(
            m.end,
            EventTime::Zoned {
                at: noon + 3600,
                tz: NY
            }
        );
        assert_eq!(fix_series(&m, false), None);
        // 00:30 EDT to 02:30 EST spans the change: UTC end and an override.
        let m = series(FIRST - 3600, SECOND + 3600);
        assert_eq!(m.end, EventTime::Utc(SECOND + 3600));
        let fix = fix_series(&m, false).unwrap();
        assert_eq!(fix.master.end, EventTime::Utc(SECOND + 3600));
        assert_eq!(fix.first.unwrap().event.start, EventTime::Utc(FIRST - 3600));
    }
}
