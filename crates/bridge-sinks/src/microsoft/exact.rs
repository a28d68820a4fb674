//! Later occurrences of a series that Exchange could place elsewhere than
//! Feishu, written as modified occurrences with exact instants.
//!
//! Exchange stores a series as a wall-clock pattern in a Windows zone and
//! generates every occurrence itself. How it reads a generated wall-clock
//! time that its zone repeats (fall-back) or skips (spring-forward), and
//! whether it measures an occurrence's length in exact or wall-clock time
//! across an offset change, is not documented (UNCONFIRMED; the emulators
//! model one reading). Feishu's instant is the RFC 5545 reading: the first
//! of two equal times, the offset before a gap (`bridge_core::ics::exact`).
//!
//! So, as for the served feeds, every generated occurrence whose wall-clock
//! start is repeated or skipped, whose end is in a repeated hour, or which
//! spans an offset change (the choice and its bounds are
//! [`bridge_core::ics::exact::exact_series`], one function for both) is
//! written as a modified occurrence whose start and end are UTC instants:
//! right under any reading. It is named by its `InstanceIndex` (EWS) or
//! found through `instances` near its original start (Graph), both of which
//! find it under any reading too.
//!
//! The first occurrence is the master's own start and is left to
//! [`bridge_core::instant::fix_series`]; occurrences Feishu lists itself
//! (modified or cancelled) are written as they are.
//!
//! Bounded like the feeds: up to [`horizon`] (January 1 of the third year
//! after now), at most `MAX_OCCURRENCES` generated occurrences looked at.
//! A series is written with the overrides of the horizon at the time it is
//! written; a later write of the series (any change to it) extends them.

use bridge_core::Series;
use bridge_core::ics::exact::{ZoneChanges, exact_series};
use bridge_core::model::CanonicalEvent;
use chrono::{Offset, TimeZone};
use chrono_tz::Tz;

/// Whether instants `a` and `b` are two readings of one wall-clock time
/// in `tz`: the same local time read with the offsets before and after a
/// change (the two equal times of a repeated hour, or a time in a gap read
/// with either offset). How Exchange names an occurrence it generated at
/// such a time when Feishu reads it otherwise.
pub fn other_reading(tz: Tz, a: i64, b: i64) -> bool {
    let off = |t: i64| {
        tz.timestamp_opt(t, 0)
            .single()
            .map_or(0, |d| i64::from(d.offset().fix().local_minus_utc()))
    };
    let (oa, ob) = (off(a), off(b));
    a != b && oa != ob && (a - b == oa - ob || a - b == ob - oa)
}

/// A generated occurrence written as a modified occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactOccurrence {
    /// Its 1-based `InstanceIndex` (cancelled occurrences count).
    pub index: u32,
    /// Feishu's instant of it: its original start.
    pub original: i64,
    /// The master's content at Feishu's instants, in UTC, without a rule.
    pub event: CanonicalEvent,
}

/// The end of the window of occurrences made exact, for a write now.
///
/// The system clock, not the engine's `now`: the drift check (which gets
/// no `now`) must expect exactly the overrides an apply wrote.
pub fn horizon() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    bridge_core::ics::exact::horizon(now)
}

/// The later occurrences of `s`'s master (index 2 on) that are written as
/// modified occurrences with exact instants, up to `horizon`; empty for a
/// single event, an all-day series or a zone without offset changes.
pub fn exact_occurrences(s: &Series<'_>, horizon: i64) -> Vec<ExactOccurrence> {
    let Some(ex) = exact_series(s, horizon, &mut ZoneChanges::default()) else {
        return Vec::new();
    };
    ex.occurrences
        .into_iter()
        .filter(|o| o.index > 0)
        .filter_map(|o| {
            Some(ExactOccurrence {
                index: u32::try_from(o.index + 1).ok()?,
                original: o.event.start.instant(),
                event: o.event,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::model::{EventTime, Item};

    fn master(uid: &str, tz: &str, start: i64, end: i64, rule: &str) -> Item {
        bridge_core::map::map_event(
            &serde_json::from_value(serde_json::json!({
                "event_id": format!("{uid}_0"),
                "summary": "s",
                "start_time": {"timestamp": start.to_string(), "timezone": tz},
                "end_time": {"timestamp": end.to_string(), "timezone": tz},
                "recurrence": rule,
            }))
            .unwrap(),
            &mut Vec::new(),
        )
        .unwrap()
    }

    const NY: &str = "America/New_York";
    /// Rendered in 2026: the horizon is 2029-01-01.
    const H2026: i64 = 1_861_920_000;
    /// 2026-10-30T05:30:00Z = 01:30 EDT.
    const OCT30_0130: i64 = 1_793_338_200;
    /// 2026-03-06T07:30:00Z = 02:30 EST.
    const MAR06_0230: i64 = 1_772_782_200;

    fn times(o: &ExactOccurrence) -> (u32, i64, EventTime, EventTime) {
        (o.index, o.original, o.event.start, o.event.end)
    }

    #[test]
    fn the_repeated_hour_is_the_first_of_the_two() {
        let items = [master(
            "a",
            NY,
            OCT30_0130,
            OCT30_0130 + 1800,
            "FREQ=DAILY;COUNT=5",
        )];
        let series = bridge_core::series::group(&items);
        let got: Vec<_> = exact_occurrences(&series[0], H2026)
            .iter()
            .map(times)
            .collect();
        // Nov 1 01:30 (the third occurrence) is 05:30Z, 01:30 EDT.
        let t = 1_793_511_000;
        assert_eq!(got, [(3, t, EventTime::Utc(t), EventTime::Utc(t + 1800))]);
        let o = &exact_occurrences(&series[0], H2026)[0].event;
        assert_eq!((o.rrule.as_deref(), o.summary.as_str()), (None, "s"));
    }

    #[test]
    fn the_gap_takes_the_offset_before_it() {
        let items = [master(
            "b",
            NY,
            MAR06_0230,
            MAR06_0230 + 1800,
            "FREQ=DAILY;COUNT=4",
        )];
        let series = bridge_core::series::group(&items);
        let got: Vec<_> = exact_occurrences(&series[0], H2026)
            .iter()
            .map(times)
            .collect();
        // Mar 8 02:30 does not exist: 07:30Z (02:30 EST, 03:30 EDT).
        let t = 1_772_955_000;
        assert_eq!(got, [(3, t, EventTime::Utc(t), EventTime::Utc(t + 1800))]);
    }

    #[test]
    fn an_occurrence_spanning_the_change_or_ending_in_the_repeated_hour() {
        // 00:30-03:30 from Oct 31: Nov 1's spans the fall-back (3 hours
        // exactly: 04:30Z-07:30Z, 02:30 EST by the wall clock).
        let oct31_0030 = 1_793_421_000;
        // 00:45-01:15 from Oct 30: Nov 1's ends in the repeated hour.
        let oct30_0045 = 1_793_335_500;
        let items = [
            master(
                "c",
                NY,
                oct31_0030,
                oct31_0030 + 3 * 3600,
                "FREQ=DAILY;COUNT=3",
            ),
            master("d", NY, oct30_0045, oct30_0045 + 1800, "FREQ=DAILY;COUNT=4"),
        ];
        let series = bridge_core::series::group(&items);
        let c: Vec<_> = exact_occurrences(&series[0], H2026)
            .iter()
            .map(times)
            .collect();
        let t = oct31_0030 + 86_400;
        assert_eq!(c, [(2, t, EventTime::Utc(t), EventTime::Utc(t + 3 * 3600))]);
        let d: Vec<_> = exact_occurrences(&series[1], H2026)
            .iter()
            .map(times)
            .collect();
        let t = oct30_0045 + 2 * 86_400;
        assert_eq!(d, [(3, t, EventTime::Utc(t), EventTime::Utc(t + 1800))]);
    }

    #[test]
    fn zones_without_dst_and_single_events_need_none() {
        let items = [
            master(
                "e",
                "Asia/Shanghai",
                MAR06_0230,
                MAR06_0230 + 1800,
                "FREQ=DAILY",
            ),
            master("f", NY, OCT30_0130, OCT30_0130 + 1800, ""),
        ];
        let series = bridge_core::series::group(&items);
        assert!(
            series
                .iter()
                .all(|s| exact_occurrences(s, H2026).is_empty())
        );
    }

    #[test]
    fn other_readings_of_one_wall_clock_time() {
        let ny = chrono_tz::America::New_York;
        // 01:30 on 2026-11-01: 05:30Z (EDT) and 06:30Z (EST).
        assert!(other_reading(ny, 1_793_511_000, 1_793_514_600));
        assert!(other_reading(ny, 1_793_514_600, 1_793_511_000));
        // 02:30 on 2026-03-08 (a gap): 07:30Z (EST offset), 06:30Z (EDT).
        assert!(other_reading(ny, 1_772_955_000, 1_772_951_400));
        // An hour apart on one side of a change, or the same instant: no.
        assert!(!other_reading(ny, 1_793_514_600, 1_793_518_200));
        assert!(!other_reading(ny, 1_793_511_000, 1_793_511_000));
        assert!(!other_reading(ny, 1_793_511_000, 1_793_511_000 + 86_400));
    }

    #[test]
    fn bounded_by_the_horizon() {
        // Open-ended, 01:30-02:00 daily from Oct 30 2026: Nov 1 2026,
        // Nov 7 2027 and Nov 5 2028 repeat 01:30, each the first of the two
        // (EDT); Mar 14 2027 and Mar 12 2028 end at the spring-forward
        // (02:00 EST is 03:00 EDT: the occurrence spans the change).
        let items = [master("g", NY, OCT30_0130, OCT30_0130 + 1800, "FREQ=DAILY")];
        let series = bridge_core::series::group(&items);
        let got: Vec<i64> = exact_occurrences(&series[0], H2026)
            .iter()
            .map(|o| o.original)
            .collect();
        assert_eq!(
            got,
            [
                1_793_511_000,
                1_805_005_800,
                1_825_565_400,
                1_836_455_400,
                1_857_015_000
            ]
        );
        // A horizon a year earlier stops before 2028's.
        let h2025 = bridge_core::ics::exact::horizon(1_735_689_600);
        let got: Vec<i64> = exact_occurrences(&series[0], h2025)
            .iter()
            .map(|o| o.original)
            .collect();
        assert_eq!(got, [1_793_511_000, 1_805_005_800, 1_825_565_400]);
        // Indexes count every generated occurrence (Oct 30 2026 is 1).
        assert_eq!(exact_occurrences(&series[0], H2026)[2].index, 374);
        assert!(horizon() > H2026 - 366 * 86_400);
    }
}
