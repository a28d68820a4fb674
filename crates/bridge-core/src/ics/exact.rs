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

use chrono::{Datelike, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike};
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

/// One change of a zone's offset: the wall-clock time of day (seconds
/// after midnight) just before it and just after it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Change {
    /// The first second with the new offset.
    at: i64,
    before: i64,
    after: i64,
}

impl Change {
    /// The size of the change, whichever way it goes.
    fn size(self) -> i64 {
        let d = (self.after - self.before).rem_euclid(DAY);
        d.min(DAY - d)
    }
}

const DAY: i64 = 86_400;

/// The changes of `tz`'s offset in year `year` (UTC).
fn offset_changes(tz: Tz, year: i32) -> Vec<Change> {
    super::vtimezone::offset_changes(tz, year, year)
        .into_iter()
        .map(|(at, before, after)| Change {
            at,
            before: (at + i64::from(before)).rem_euclid(DAY),
            after: (at + i64::from(after)).rem_euclid(DAY),
        })
        .collect()
}

/// Per render: the offset changes of a zone, by year, as this module
/// reads them. The scans themselves are kept for the process by
/// `vtimezone`; this map only spares each series of a render the memo's
/// lock and the conversion to [`Change`].
#[derive(Debug, Default)]
pub struct ZoneChanges(BTreeMap<(&'static str, i32), Vec<Change>>);

impl ZoneChanges {
    /// The changes of `tz` in the years of `[from, to]` (and the year
    /// before, which holds a change at the first second of `from`'s year).
    /// Each year is found once per render, whatever the ranges asked.
    fn changes(&mut self, tz: Tz, from: i64, to: i64) -> Vec<Change> {
        let (fy, ty) = (utc_datetime(from).year(), utc_datetime(to).year());
        let mut out = Vec::new();
        for y in fy - 1..=ty {
            let changes = self
                .0
                .entry((tz.name(), y))
                .or_insert_with(|| offset_changes(tz, y));
            out.extend_from_slice(changes);
        }
        out
    }
}

/// Whether an occurrence of `rule` may need an override, judged by its
/// wall-clock time of day alone, without expanding the rule (expanding a
/// daily rule to the horizon is a thousand `rrule` steps per series).
///
/// A rule of FREQ DAILY or coarser without BYHOUR, BYMINUTE or BYSECOND
/// generates every occurrence at DTSTART's time of day `s` (RFC 5545
/// §3.3.10). An occurrence needs an override only if its start is in a gap
/// or a fold, its end is in a fold, or it spans a change (see
/// [`exact_series`]); in each case the wall-clock time just before some
/// change lies in `[s - D, s + L + D]` (mod a day), `L` being the length
/// and `D` the largest change. So when no change's wall-clock times fall in
/// that window, no occurrence needs one. Anything else is expanded.
fn may_need_overrides(rule: &str, first: NaiveDateTime, length: i64, changes: &[Change]) -> bool {
    let has_prefix = |p: &str, prefix: &str| {
        p.get(..prefix.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
    };
    let daily_or_coarser = rule.split(';').any(|p| {
        ["FREQ=DAILY", "FREQ=WEEKLY", "FREQ=MONTHLY", "FREQ=YEARLY"]
            .iter()
            .any(|f| p.eq_ignore_ascii_case(f))
    });
    let fixed_time = !rule.split(';').any(|p| {
        ["BYHOUR=", "BYMINUTE=", "BYSECOND="]
            .iter()
            .any(|f| has_prefix(p, f))
    });
    let d = changes.iter().map(|c| c.size()).max().unwrap_or(0);
    let window = length.max(0) + 2 * d;
    if !daily_or_coarser || !fixed_time || window >= DAY {
        return true;
    }
    let s = i64::from(first.time().num_seconds_from_midnight());
    changes.iter().any(|c| {
        [c.before, c.after]
            .iter()
            .any(|t| (t - (s - d)).rem_euclid(DAY) <= window)
    })
}

/// The rule's generated wall-clock times as `(index, wall)`, from `first`
/// (the master's local DTSTART) up to `end`: the first always, and each
/// later one that `next_wanted` asks for. `next_wanted(wall)` is `wall` when
/// that occurrence is wanted, else the earliest wall time after it that may
/// be; occurrences before that are counted (for their index) and not listed.
///
/// The rule is expanded as if the zone were UTC, that is in pure wall-clock
/// time, which is what RFC 5545 asks and what keeps the `rrule` crate out of
/// the zone's gaps and folds; UNTIL is left out here and applied by the
/// caller in real time.
fn wall_times(
    rule: &str,
    first: NaiveDateTime,
    end: NaiveDateTime,
    next_wanted: &dyn Fn(NaiveDateTime) -> NaiveDateTime,
) -> Vec<(usize, NaiveDateTime)> {
    match SimpleRule::parse(rule) {
        Some(simple) => simple.expand(first, end, next_wanted),
        None => rrule_wall_times(rule, first, end)
            .into_iter()
            .enumerate()
            .filter(|&(i, wall)| i == 0 || next_wanted(wall) <= wall)
            .collect(),
    }
}

/// Every wall time of a plain DAILY or WEEKLY rule (see [`SimpleRule`]);
/// `None` for any other rule.
#[cfg(test)]
fn simple_wall_times(
    rule: &str,
    first: NaiveDateTime,
    end: NaiveDateTime,
) -> Option<Vec<NaiveDateTime>> {
    let all = SimpleRule::parse(rule)?.expand(first, end, &|wall| wall);
    Some(all.into_iter().map(|(_, wall)| wall).collect())
}

/// A plain DAILY or WEEKLY rule (INTERVAL, COUNT, UNTIL, weekday BYDAY,
/// WKST), counted out directly.
///
/// Written here rather than left to the `rrule` crate because that crate
/// spends about 2,000 instructions per occurrence, and a daily series is a
/// thousand occurrences to the horizon on every render; these two
/// frequencies are most recurring meetings. Counting also lets whole
/// stretches far from every offset change be skipped in one step. The tests
/// `simple_rules_expand_as_the_rrule_crate_does` and
/// `skipping_lists_what_filtering_the_whole_expansion_lists` hold it to the
/// crate.
#[derive(Debug)]
struct SimpleRule {
    weekly: bool,
    /// In days (DAILY) or weeks (WEEKLY), at least 1.
    interval: u64,
    /// COUNT, capped at [`MAX_OCCURRENCES`].
    limit: usize,
    days: Vec<chrono::Weekday>,
    wkst: chrono::Weekday,
}

impl SimpleRule {
    fn parse(rule: &str) -> Option<Self> {
        use chrono::Weekday;
        let weekday = |v: &str| -> Option<Weekday> {
            Some(match v {
                "MO" => Weekday::Mon,
                "TU" => Weekday::Tue,
                "WE" => Weekday::Wed,
                "TH" => Weekday::Thu,
                "FR" => Weekday::Fri,
                "SA" => Weekday::Sat,
                "SU" => Weekday::Sun,
                _ => return None,
            })
        };
        let (mut weekly, mut interval, mut count) = (None, 1u64, None);
        let (mut days, mut wkst) = (Vec::new(), Weekday::Mon);
        for part in rule.split(';') {
            let (key, value) = part.split_once('=')?;
            match (
                key.to_ascii_uppercase().as_str(),
                value.to_ascii_uppercase(),
            ) {
                ("FREQ", v) if v == "DAILY" || v == "WEEKLY" => weekly = Some(v == "WEEKLY"),
                ("INTERVAL", v) => {
                    interval = v.parse().ok().filter(|n| (1..=10_000).contains(n))?
                }
                ("COUNT", v) => count = Some(v.parse::<usize>().ok().filter(|n| *n > 0)?),
                ("UNTIL", _) => {}
                ("BYDAY", v) => {
                    for d in v.split(',') {
                        let d = weekday(d)?;
                        if !days.contains(&d) {
                            days.push(d);
                        }
                    }
                }
                ("WKST", v) => wkst = weekday(&v)?,
                _ => return None,
            }
        }
        Some(Self {
            weekly: weekly?,
            interval,
            limit: count.unwrap_or(usize::MAX).min(MAX_OCCURRENCES),
            days,
            wkst,
        })
    }

    /// See [`wall_times`].
    fn expand(
        &self,
        first: NaiveDateTime,
        end: NaiveDateTime,
        next_wanted: &dyn Fn(NaiveDateTime) -> NaiveDateTime,
    ) -> Vec<(usize, NaiveDateTime)> {
        use chrono::Days;
        let (date, time) = (first.date(), first.time());
        let mut out = Vec::new();
        // The index of the next occurrence generated.
        let mut index = 0usize;
        let mut emit = |index: usize, at: NaiveDateTime| {
            if index == 0 || next_wanted(at) <= at {
                out.push((index, at));
            }
        };
        // How many whole cycles of `cycle_days`, the first starting at `at`
        // and each with its last possible occurrence `last` days after its
        // start, end before the next wanted time after `at`: skipping them
        // passes over no wanted occurrence.
        let cycles_before_wanted = |at: NaiveDateTime, cycle_days: u64, last: i64| -> u64 {
            let span = (next_wanted(at) - at).num_seconds() - last * DAY;
            let cycle = i64::try_from(cycle_days)
                .unwrap_or(i64::MAX)
                .saturating_mul(DAY);
            if span <= 0 {
                0
            } else {
                // ceil(span / cycle), less one when the cycle's last
                // occurrence is its first step (so that it stays before).
                let whole = span / cycle + i64::from(span % cycle != 0);
                u64::try_from(whole - i64::from(last == 0)).unwrap_or(0)
            }
        };
        if self.weekly {
            let days = if self.days.is_empty() {
                vec![date.weekday()]
            } else {
                self.days.clone()
            };
            // Weeks start on WKST; the first is the one holding DTSTART.
            let back = u64::from(date.weekday().days_since(self.wkst));
            let Some(mut week) = date.checked_sub_days(Days::new(back)) else {
                return out;
            };
            loop {
                // Past the first occurrence every week is whole: weeks
                // wholly before the next wanted time are only counted.
                if index > 0 {
                    let skip = cycles_before_wanted(week.and_time(time), 7 * self.interval, 6);
                    if skip > 0 {
                        let skipped = usize::try_from(skip)
                            .unwrap_or(usize::MAX)
                            .saturating_mul(days.len());
                        index = index.saturating_add(skipped);
                        let Some(next) = skip
                            .checked_mul(7 * self.interval)
                            .and_then(|d| week.checked_add_days(Days::new(d)))
                        else {
                            return out;
                        };
                        week = next;
                    }
                }
                for i in 0..7 {
                    let Some(day) = week.checked_add_days(Days::new(i)) else {
                        return out;
                    };
                    if day < date || !days.contains(&day.weekday()) {
                        continue;
                    }
                    let at = day.and_time(time);
                    if at > end || index >= self.limit {
                        return out;
                    }
                    emit(index, at);
                    index += 1;
                }
                let Some(next) = week.checked_add_days(Days::new(7 * self.interval)) else {
                    return out;
                };
                week = next;
            }
        }
        // DAILY: with BYDAY, the weekdays of the days stepped through repeat
        // every 7 steps (7 × INTERVAL days is whole weeks), so 7 steps are a
        // cycle with a fixed number of occurrences.
        let steps = if self.days.is_empty() { 1 } else { 7 };
        let mut day = date;
        loop {
            let at = day.and_time(time);
            if at > end || index >= self.limit {
                return out;
            }
            if index > 0 {
                let skip = cycles_before_wanted(at, steps * self.interval, 0);
                if skip > 0 {
                    let per_cycle = if self.days.is_empty() {
                        1
                    } else {
                        (0..7)
                            .filter_map(|j| day.checked_add_days(Days::new(j * self.interval)))
                            .filter(|d| self.days.contains(&d.weekday()))
                            .count()
                    };
                    let skipped = usize::try_from(skip)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(per_cycle);
                    index = index.saturating_add(skipped);
                    let Some(next) = skip
                        .checked_mul(steps * self.interval)
                        .and_then(|d| day.checked_add_days(Days::new(d)))
                    else {
                        return out;
                    };
                    day = next;
                    continue;
                }
            }
            if self.days.is_empty() || self.days.contains(&day.weekday()) {
                emit(index, at);
                index += 1;
            }
            let Some(next) = day.checked_add_days(Days::new(self.interval)) else {
                return out;
            };
            day = next;
        }
    }
}

/// [`wall_times`] by the `rrule` crate.
fn rrule_wall_times(
    rule: &str,
    first: NaiveDateTime,
    until_wall: NaiveDateTime,
) -> Vec<NaiveDateTime> {
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
    // `RRuleSet::before` only bounds `all()`, not the iterator: bound it
    // here, or an unbounded rule runs to MAX_OCCURRENCES every time.
    set.into_iter()
        .take_while(|d| *d <= end)
        .take(MAX_OCCURRENCES)
        .map(|d| d.naive_utc())
        .collect()
}

/// What `s`'s master needs (see the module documentation); `None` when
/// it needs nothing (no master, not zoned, no offset change in range).
pub fn exact_series(s: &Series<'_>, horizon: i64, zones: &mut ZoneChanges) -> Option<ExactSeries> {
    exact_series_by(s, horizon, zones, true)
}

/// How far from an offset change, its wall time read as UTC, an occurrence
/// may need an override (offsets are within a day of UTC).
const REACH: i64 = 2 * DAY;

/// The first time from `t` (a wall time read as UTC) at which an occurrence
/// of `length` seconds may need an override: `t` itself when a change of
/// `ats` (sorted) is in `[t - REACH, t + length + REACH]`, or when `t` is at
/// or past `tail` (those near the end of the series are always read, the
/// caller's loop bounds them). An occurrence at `t` is near a change at `c`
/// when `t` is in `[c - length - REACH, c + REACH]`; those intervals are in
/// the order of the changes, so the answer is the start of the first one
/// that does not end before `t`, or `tail`.
fn wanted_from(t: i64, ats: &[i64], length: i64, tail: i64) -> i64 {
    if t >= tail {
        return t;
    }
    let i = ats.partition_point(|&c| c + REACH < t);
    let from = ats.get(i).map_or(tail, |&c| (c - length - REACH).min(tail));
    from.max(t)
}

/// [`exact_series`]; `shortcuts`: whether series that
/// [`may_need_overrides`] clears are answered without expanding them, and
/// occurrences far from every change are passed over unread (always,
/// except in the tests that check those shortcuts).
fn exact_series_by(
    s: &Series<'_>,
    horizon: i64,
    zones: &mut ZoneChanges,
    shortcuts: bool,
) -> Option<ExactSeries> {
    let m = s.master()?;
    let rule = m.rrule.as_deref()?;
    let EventTime::Zoned { at: start, tz } = m.start else {
        return None;
    };
    let length = m.end.instant() - start;
    let duration = is_repeated(tz, start).then_some(length);
    let until = m.rrule_bound.unwrap_or(i64::MAX).min(horizon);
    let changes = zones.changes(tz, start, until.max(start) + length.max(0));
    if changes.is_empty() {
        return None;
    }
    let first = wall_clock(tz, start);
    if shortcuts && !may_need_overrides(rule, first, length, &changes) {
        // Nothing to override, but the series is zoned across a change:
        // the same answer a full expansion finds no risky occurrence in.
        return Some(ExactSeries {
            tz: Some(tz),
            duration,
            ..ExactSeries::default()
        });
    }
    let risky = |wall: NaiveDateTime, at: i64| {
        !matches!(tz.from_local_datetime(&wall), LocalResult::Single(_))
            || is_repeated(tz, at + length)
            || offset(tz, at) != offset(tz, at + length)
    };
    let listed = |at: i64| {
        s.cancelled.contains(&at) || s.overrides.iter().any(|o| o.key.original_time() == at)
    };
    let until_wall = utc_datetime(until.max(start))
        .checked_add_signed(chrono::Duration::days(2))
        .unwrap_or(NaiveDateTime::MAX);
    let mut out = ExactSeries {
        tz: Some(tz),
        duration,
        ..ExactSeries::default()
    };
    // Only an occurrence with a change within two days of it can need an
    // override: the others are passed over without reading them in the
    // zone (see `wanted_from`).
    let ats: Vec<i64> = changes.iter().map(|c| c.at).collect();
    let tail = until.saturating_sub(REACH);
    let next_wanted = |wall: NaiveDateTime| -> NaiveDateTime {
        let t = wall.and_utc().timestamp();
        match wanted_from(t, &ats, length.max(0), tail) {
            from if !shortcuts || from <= t => wall,
            from => utc_datetime(from),
        }
    };
    for (i, wall) in wall_times(rule, first, until_wall, &next_wanted) {
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
    fn offset_changes_are_found_to_the_second() {
        // New York 2026: 2026-03-08 07:00Z (02:00 EST -> 03:00 EDT) and
        // 2026-11-01 06:00Z (02:00 EDT -> 01:00 EST).
        let changes = offset_changes(chrono_tz::America::New_York, 2026);
        let h = 3600;
        assert_eq!(
            changes,
            [
                Change {
                    at: 1_772_953_200,
                    before: 2 * h,
                    after: 3 * h
                },
                Change {
                    at: 1_793_512_800,
                    before: 2 * h,
                    after: h
                },
            ]
        );
        // Lord Howe moves by 30 minutes.
        let lh = offset_changes(chrono_tz::Australia::Lord_Howe, 2026);
        assert!(
            !lh.is_empty() && lh.iter().all(|c| c.size() == 1800),
            "{lh:?}"
        );
    }

    #[test]
    fn the_time_of_day_shortcut_clears_only_series_far_from_every_change() {
        let ny = [
            Change {
                at: 1_772_953_200,
                before: 7200,
                after: 10_800,
            },
            Change {
                at: 1_793_512_800,
                before: 7200,
                after: 3600,
            },
        ];
        let at = |h: u32, m: u32| wall(&format!("2026-05-05T{h:02}:{m:02}"));
        // 09:00 for an hour: far from 01:00-03:00.
        assert!(!may_need_overrides("FREQ=DAILY", at(9, 0), 3600, &ny));
        // Starts in the repeated or skipped hour, or ends in it, or spans it.
        assert!(may_need_overrides("FREQ=DAILY", at(1, 30), 1800, &ny));
        assert!(may_need_overrides(
            "FREQ=WEEKLY;BYDAY=SU",
            at(2, 30),
            1800,
            &ny
        ));
        assert!(may_need_overrides(
            "FREQ=DAILY",
            at(0, 30),
            3600 + 1800,
            &ny
        ));
        assert!(may_need_overrides("FREQ=DAILY", at(23, 0), 4 * 3600, &ny));
        // A time of day that varies, or a length near a day: expanded.
        assert!(may_need_overrides("FREQ=HOURLY", at(9, 0), 60, &ny));
        assert!(may_need_overrides(
            "FREQ=DAILY;BYHOUR=9,14",
            at(9, 0),
            60,
            &ny
        ));
        assert!(may_need_overrides("FREQ=DAILY", at(9, 0), 22 * 3600, &ny));
    }

    /// The shortcuts never change the answer: around each change of 2026 in
    /// five zones, for local start times every 30 minutes from 22:00 to
    /// 05:00 and one far one, and lengths from none to four hours, a
    /// series the first clears has no occurrence the full expansion
    /// overrides, and the second finds the same overrides.
    #[test]
    fn the_shortcut_agrees_with_the_full_expansion() {
        let zones = [
            "America/New_York",
            "Europe/London",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "America/Santiago",
        ];
        let lengths = [0, 2700, 4 * 3600];
        let tods = (0..15)
            .map(|q| 22 * 3600 + q * 1800)
            .chain([13 * 3600 + 900]);
        let (mut cleared, mut overridden) = (0, 0);
        for zone in zones {
            let tz: Tz = zone.parse().unwrap();
            let mut zc = ZoneChanges::default();
            // The days of 2026 whose noon has another offset than the day before.
            let noon = |d: i64| resolve(tz, wall("2026-01-01T12:00") + chrono::Duration::days(d));
            let change_days = (1..365).filter(|&d| offset(tz, noon(d)) != offset(tz, noon(d - 1)));
            for day in change_days {
                for tod in tods.clone() {
                    for length in lengths {
                        let rule = "FREQ=DAILY";
                        let local = wall("2026-01-01T00:00")
                            + chrono::Duration::seconds((day - 7) * DAY + tod);
                        let start = resolve(tz, local);
                        let item = crate::map::map_event(
                            &serde_json::from_value(serde_json::json!({
                                "event_id": "p_0",
                                "summary": "s",
                                "start_time": {"timestamp": start.to_string(), "timezone": zone},
                                "end_time": {"timestamp": (start + length).to_string(), "timezone": zone},
                                "recurrence": rule,
                            }))
                            .unwrap(),
                            &mut Vec::new(),
                        )
                        .unwrap();
                        let series = crate::series::group(std::slice::from_ref(&item));
                        let h = start + 15 * DAY;
                        let full = exact_series_by(&series[0], h, &mut zc, false);
                        let fast = exact_series_by(&series[0], h, &mut zc, true);
                        assert_eq!(fast, full, "{zone} {local} +{length}s {rule}");
                        match full {
                            Some(f) if f.wall_of.is_empty() => cleared += 1,
                            Some(_) => overridden += 1,
                            None => {}
                        }
                    }
                }
            }
        }
        // Both kinds were seen, so the comparison checked something.
        assert!(cleared > 100 && overridden > 100, "{cleared} {overridden}");
    }

    proptest::prop_compose! {
        /// Plain DAILY and WEEKLY rules: INTERVAL, COUNT, BYDAY, WKST.
        fn plain_rules()(
            weekly: bool,
            interval in 1u32..5,
            count in proptest::option::of(1u32..400),
            days in proptest::collection::btree_set(0usize..7, 0..4),
            wkst in proptest::option::of(0usize..7),
        ) -> String {
            plain_rule(weekly, interval, count, &days, wkst)
        }
    }

    /// A DAILY or WEEKLY rule; `days` and `wkst` are weekdays from Monday = 0.
    fn plain_rule(
        weekly: bool,
        interval: u32,
        count: Option<u32>,
        days: &std::collections::BTreeSet<usize>,
        wkst: Option<usize>,
    ) -> String {
        const NAMES: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
        let freq = if weekly { "WEEKLY" } else { "DAILY" };
        let mut rule = format!("FREQ={freq};INTERVAL={interval}");
        if let Some(c) = count {
            rule += &format!(";COUNT={c}");
        }
        if !days.is_empty() {
            let d: Vec<&str> = days.iter().map(|&i| NAMES[i]).collect();
            rule += &format!(";BYDAY={}", d.join(","));
        }
        if let Some(w) = wkst {
            rule += &format!(";WKST={}", NAMES[w]);
        }
        rule
    }

    proptest::proptest! {
        /// The direct count of plain DAILY and WEEKLY rules gives exactly
        /// the `rrule` crate's wall-clock times.
        #[test]
        fn simple_rules_expand_as_the_rrule_crate_does(
            rule in plain_rules(),
            day in 0u64..400,
            minute in 0u32..(24 * 60),
            span in 0u64..500,
        ) {
            let first = wall("2026-01-01T00:00")
                + chrono::Duration::days(day as i64)
                + chrono::Duration::minutes(i64::from(minute));
            let end = first + chrono::Duration::days(span as i64);
            let simple = simple_wall_times(&rule, first, end);
            proptest::prop_assert!(simple.is_some(), "{}", rule);
            proptest::prop_assert_eq!(simple.unwrap(), rrule_wall_times(&rule, first, end), "{}", rule);
        }
    }

    proptest::proptest! {
        /// Skipping whole days and weeks far from every change lists
        /// exactly the occurrences, with their indexes, that expanding
        /// everything and asking `next_wanted` of each lists.
        #[test]
        fn skipping_lists_what_filtering_the_whole_expansion_lists(
            rule in plain_rules(),
            minute in 0u32..(24 * 60),
            changes in proptest::collection::btree_set(0i64..(700 * DAY), 0..6),
            length in 0i64..(3 * DAY),
            tail in 0i64..(800 * DAY),
        ) {
            let first = wall("2026-01-05T00:00") + chrono::Duration::minutes(i64::from(minute));
            let base = first.and_utc().timestamp();
            let end = first + chrono::Duration::days(750);
            let changes: Vec<i64> = changes.into_iter().map(|c| base + c).collect();
            let tail = base + tail;
            let next_wanted = |wall: NaiveDateTime| {
                utc_datetime(wanted_from(wall.and_utc().timestamp(), &changes, length, tail))
            };
            let simple = SimpleRule::parse(&rule).unwrap();
            let filtered: Vec<_> = simple
                .expand(first, end, &|w| w)
                .into_iter()
                .filter(|&(i, w)| i == 0 || next_wanted(w) <= w)
                .collect();
            let skipped = simple.expand(first, end, &next_wanted);
            proptest::prop_assert_eq!(skipped, filtered, "{}", rule);
        }
    }

    #[test]
    fn other_rules_are_left_to_the_rrule_crate() {
        let first = wall("2026-01-01T09:00");
        for rule in [
            "FREQ=MONTHLY",
            "FREQ=WEEKLY;BYDAY=1MO",
            "FREQ=DAILY;BYHOUR=9,10",
            "FREQ=DAILY;INTERVAL=0",
            "FREQ=DAILY;COUNT=0",
            "FREQ=DAILY;BYSETPOS=1",
        ] {
            assert_eq!(simple_wall_times(rule, first, first), None, "{rule}");
        }
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
