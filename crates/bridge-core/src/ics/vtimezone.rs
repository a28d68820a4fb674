//! VTIMEZONE components generated from the IANA data compiled into chrono-tz.
//!
//! For a zone and a range of years we find every UTC-offset transition (by
//! scanning in steps and bisecting to the second), then compress transitions
//! that repeat yearly on the same rule (month, weekday, ordinal, wall-clock
//! time, offsets, name) into one observance with
//! `RRULE:FREQ=YEARLY;BYMONTH=..;BYDAY=..`. A rule still in force at the end of
//! the range is left open (no UNTIL), so open-ended series stay correct as long
//! as the zone keeps its current rule; every other observance is bounded. Each
//! observance's DTSTART is the local wall-clock time before the transition, as
//! RFC 5545 §3.6.5 requires.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Weekday};
use chrono_tz::{OffsetComponents, OffsetName, Tz};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::write::Component;

/// The offset state in force at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    offset: i32,
    dst: bool,
    name: Abbr,
}

/// A zone abbreviation stored inline, so that `State` stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Abbr {
    bytes: [u8; 16],
    len: u8,
}

impl Abbr {
    fn new(s: Option<&str>) -> Self {
        let mut bytes = [0u8; 16];
        let s = s.unwrap_or("");
        // Abbreviations are short ASCII ("EST", "+0545"); longer ones are cut
        // at a character boundary.
        let mut len = s.len().min(16);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .ok()
            .filter(|s| !s.is_empty())
    }
}

fn state_at(tz: Tz, t: i64) -> State {
    let utc = DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .naive_utc();
    let off = tz.offset_from_utc_datetime(&utc);
    State {
        offset: off.fix().local_minus_utc(),
        dst: !off.dst_offset().is_zero(),
        name: Abbr::new(off.abbreviation()),
    }
}

#[derive(Debug, Clone, Copy)]
struct Transition {
    /// First UTC second of the new state.
    at: i64,
    from: State,
    to: State,
}

impl Transition {
    /// Wall-clock time just before the transition (in the old offset).
    fn local(&self) -> NaiveDateTime {
        DateTime::from_timestamp(self.at + i64::from(self.from.offset), 0)
            .unwrap_or_default()
            .naive_utc()
    }

    /// Everything that must be equal for two yearly transitions to share a rule.
    fn signature(&self) -> (State, State, u32, Weekday, u32) {
        let l = self.local();
        (
            self.from,
            self.to,
            l.month(),
            l.weekday(),
            l.num_seconds_from_midnight(),
        )
    }

    /// Ordinals of its weekday in the month that describe this date: the nth
    /// (1..=5) and, in the month's last week, also -1.
    fn ordinals(&self) -> Vec<i8> {
        let l = self.local().date();
        let nth = ((l.day() - 1) / 7 + 1) as i8;
        let mut v = vec![nth];
        if l.day() + 7 > days_in_month(l.year(), l.month()) {
            v.push(-1);
        }
        v
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

fn year_start(year: i32) -> i64 {
    NaiveDate::from_ymd_opt(year, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |d| d.and_utc().timestamp())
}

/// Every transition in `[from_year-01-01, to_year+1-01-01)` UTC: the
/// state at the range's first second and the transitions in order.
///
/// Each year is scanned once per process and kept (see [`year_transitions`]),
/// so that the calendars rendered on every pass, and the exact-instant checks
/// of the same render, do not scan the same zone-years again.
fn transitions(tz: Tz, from_year: i32, to_year: i32) -> (State, Vec<Transition>) {
    let mut out = Vec::new();
    let mut initial = None;
    for year in from_year..=to_year {
        let scanned = year_transitions(tz, year);
        initial.get_or_insert(scanned.0);
        out.extend_from_slice(&scanned.1);
    }
    let initial = initial.unwrap_or_else(|| state_at(tz, year_start(from_year)));
    (initial, out)
}

/// One zone-year's scan, `(state at its first second, transitions)`.
type YearScan = Arc<(State, Vec<Transition>)>;

/// [`scan`] of one year, memoised for the life of the process.
///
/// The zone data is compiled into the binary, so a zone-year's transitions
/// never change; the memo holds one entry per zone and year ever rendered (a
/// few hundred bytes each, a handful of zones and years in practice). Scanning
/// year by year finds what one scan of the whole range finds: a transition at
/// the first second of a year is found by the previous year's scan, whose
/// range ends there.
fn year_transitions(tz: Tz, year: i32) -> YearScan {
    static MEMO: OnceLock<Mutex<HashMap<(Tz, i32), YearScan>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Mutex::default);
    if let Some(hit) = memo
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&(tz, year))
    {
        return Arc::clone(hit);
    }
    // Scanned outside the lock: two renders that race here both scan, and
    // both get the same answer.
    let scanned = Arc::new(scan(tz, year, year));
    memo.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((tz, year))
        .or_insert(scanned)
        .clone()
}

/// Every transition in `[from_year-01-01, to_year+1-01-01)` UTC, found by
/// stepping 6 hours at a time and bisecting to the second.
fn scan(tz: Tz, from_year: i32, to_year: i32) -> (State, Vec<Transition>) {
    const STEP: i64 = 6 * 3600;
    let start = year_start(from_year);
    let end = year_start(to_year + 1);
    let initial = state_at(tz, start);
    let mut out = Vec::new();
    let mut t = start;
    let mut cur = initial;
    while t < end {
        let next_t = (t + STEP).min(end);
        let next = state_at(tz, next_t);
        if next != cur {
            // Bisect: state(lo) == cur, state(hi) != cur.
            let (mut lo, mut hi) = (t, next_t);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if state_at(tz, mid) == cur {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let to = state_at(tz, hi);
            out.push(Transition {
                at: hi,
                from: cur,
                to,
            });
            cur = to;
            // Re-scan from the transition in case two happen within one step.
            t = hi;
            continue;
        }
        t = next_t;
        cur = next;
    }
    (initial, out)
}

/// Every change of `tz`'s UTC offset in `[from_year-01-01, to_year+1-01-01)`
/// UTC: its first second, the offset before and the offset after
/// (transitions of the abbreviation or DST flag alone are left out).
pub(crate) fn offset_changes(tz: Tz, from_year: i32, to_year: i32) -> Vec<(i64, i32, i32)> {
    transitions(tz, from_year, to_year)
        .1
        .into_iter()
        .filter(|t| t.from.offset != t.to.offset)
        .map(|t| (t.at, t.from.offset, t.to.offset))
        .collect()
}

fn format_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, (a % 3600) / 60, a % 60);
    if s == 0 {
        format!("{sign}{h:02}{m:02}")
    } else {
        format!("{sign}{h:02}{m:02}{s:02}")
    }
}

fn format_local(dt: NaiveDateTime) -> String {
    crate::model::ical_datetime(dt, false)
}

fn weekday_code(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

fn observance(state: State, from: i32, dtstart: NaiveDateTime) -> Component {
    let mut c = Component::new(if state.dst { "DAYLIGHT" } else { "STANDARD" });
    c.raw("DTSTART", format_local(dtstart));
    c.raw("TZOFFSETFROM", format_offset(from));
    c.raw("TZOFFSETTO", format_offset(state.offset));
    if let Some(name) = state.name.as_str() {
        c.text("TZNAME", name);
    }
    c
}

/// A run of yearly transitions sharing one rule.
struct Run {
    items: Vec<Transition>,
    ordinals: Vec<i8>,
}

/// Builds the VTIMEZONE for `tz` covering the years `from_year..=to_year`.
pub fn vtimezone(tz: Tz, from_year: i32, to_year: i32) -> Component {
    let (from_year, to_year) = (from_year.min(to_year), to_year.max(from_year));
    let (initial, trans) = transitions(tz, from_year, to_year);

    let mut vtz = Component::new("VTIMEZONE");
    vtz.raw("TZID", tz.name());

    // The observance in force when the range opens.
    let first_local = NaiveDate::from_ymd_opt(from_year, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default();
    let mut observances: Vec<(NaiveDateTime, Component)> = vec![(
        first_local,
        observance(initial, initial.offset, first_local),
    )];

    // Group into runs: consecutive years, same signature, a common ordinal.
    let mut runs: Vec<Run> = Vec::new();
    let mut open: Vec<usize> = Vec::new(); // indices into `runs`, one per live signature
    for tr in &trans {
        let sig = tr.signature();
        let year = tr.local().year();
        let ords = tr.ordinals();
        let mut extended = false;
        if let Some(pos) = open
            .iter()
            .position(|&i| runs[i].items[0].signature() == sig)
        {
            let run = &mut runs[open[pos]];
            let last_year = run.items.last().map_or(i32::MIN, |l| l.local().year());
            let common: Vec<i8> = run
                .ordinals
                .iter()
                .copied()
                .filter(|o| ords.contains(o))
                .collect();
            if last_year + 1 == year && !common.is_empty() {
                run.items.push(*tr);
                run.ordinals = common;
                extended = true;
            } else {
                open.remove(pos);
            }
        }
        if !extended {
            runs.push(Run {
                items: vec![*tr],
                ordinals: ords,
            });
            open.push(runs.len() - 1);
        }
    }

    let last_year_with_transition = trans.last().map(|t| t.local().year());
    for run in &runs {
        let first = run.items[0];
        let mut c = observance(first.to, first.from.offset, first.local());
        if run.items.len() > 1 {
            let local = first.local();
            // Prefer "last <weekday>" when it describes every year of the run.
            let ord = if run.ordinals.contains(&-1) {
                -1
            } else {
                run.ordinals[0]
            };
            let mut rule = format!(
                "FREQ=YEARLY;BYMONTH={};BYDAY={}{}",
                local.month(),
                ord,
                weekday_code(local.weekday())
            );
            let last = run.items[run.items.len() - 1];
            let still_in_force = Some(last.local().year()) == last_year_with_transition
                && last.local().year() >= to_year;
            if !still_in_force {
                let until = DateTime::from_timestamp(last.at, 0).unwrap_or_default();
                rule.push_str(&format!(";UNTIL={}", until.format("%Y%m%dT%H%M%SZ")));
            }
            c.raw("RRULE", rule);
        }
        observances.push((first.local(), c));
    }
    observances.sort_by_key(|(start, _)| *start);
    vtz.components = observances.into_iter().map(|(_, c)| c).collect();
    vtz
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(c: &Component) -> String {
        c.to_ics().replace("\r\n", "\n")
    }

    #[test]
    fn year_by_year_memo_finds_what_one_scan_of_the_range_finds() {
        // Zones with a change at a year boundary (Pacific/Apia left out its
        // 2011-12-30), half-hour and 45-minute offsets, midnight changes and
        // Casablanca's Ramadan suspensions, two transitions a month apart.
        for name in [
            "America/New_York",
            "Australia/Lord_Howe",
            "America/Santiago",
            "Africa/Casablanca",
            "Asia/Kathmandu",
            "Pacific/Apia",
            "Europe/Moscow",
        ] {
            let tz: Tz = name.parse().unwrap();
            let (from, to) = (1980, 2030);
            let whole = scan(tz, from, to);
            let by_year = transitions(tz, from, to);
            assert_eq!(by_year.0, whole.0, "{name}: initial state");
            let at = |v: &[Transition]| v.iter().map(|t| (t.at, t.from, t.to)).collect::<Vec<_>>();
            assert_eq!(at(&by_year.1), at(&whole.1), "{name}: transitions");
            assert!(!whole.1.is_empty(), "{name}: some transitions seen");
            // Asked again, the memo answers the same.
            assert_eq!(
                at(&transitions(tz, 2020, 2021).1),
                at(&scan(tz, 2020, 2021).1)
            );
        }
    }

    #[test]
    fn fixed_offset_zone_has_one_observance() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        assert_eq!(
            lines(&vtimezone(tz, 2024, 2025)),
            "BEGIN:VTIMEZONE\nTZID:Asia/Shanghai\nBEGIN:STANDARD\nDTSTART:20240101T000000\n\
             TZOFFSETFROM:+0800\nTZOFFSETTO:+0800\nTZNAME:CST\nEND:STANDARD\nEND:VTIMEZONE\n"
        );
    }

    #[test]
    fn new_york_rules_are_compressed_and_open_ended() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let text = lines(&vtimezone(tz, 2024, 2026));
        assert!(
            text.contains(
                "BEGIN:DAYLIGHT\nDTSTART:20240310T020000\nTZOFFSETFROM:-0500\nTZOFFSETTO:-0400\n\
                 TZNAME:EDT\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\nEND:DAYLIGHT"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "BEGIN:STANDARD\nDTSTART:20241103T020000\nTZOFFSETFROM:-0400\nTZOFFSETTO:-0500\n\
                 TZNAME:EST\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\nEND:STANDARD"
            ),
            "{text}"
        );
    }

    #[test]
    fn europe_uses_last_sunday() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let text = lines(&vtimezone(tz, 2023, 2026));
        assert!(
            text.contains("RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU"),
            "{text}"
        );
        assert!(
            text.contains("RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU"),
            "{text}"
        );
        assert!(text.contains("DTSTART:20230326T020000"), "{text}");
        assert!(text.contains("DTSTART:20231029T030000"), "{text}");
    }

    #[test]
    fn a_rule_change_inside_the_range_bounds_the_old_rule() {
        // The US moved DST from April/October to March/November in 2007.
        let tz: Tz = "America/New_York".parse().unwrap();
        let text = lines(&vtimezone(tz, 2005, 2008));
        assert!(
            text.contains("RRULE:FREQ=YEARLY;BYMONTH=4;BYDAY=1SU;UNTIL=20060402T070000Z"),
            "{text}"
        );
        assert!(
            text.contains("RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU;UNTIL=20061029T060000Z"),
            "{text}"
        );
        assert!(
            text.contains("RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\n"),
            "{text}"
        );
    }
}
