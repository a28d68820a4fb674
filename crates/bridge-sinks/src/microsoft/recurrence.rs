//! RRULE -> Microsoft recurrence (EWS `Recurrence`, Graph
//! `patternedRecurrence`): one pattern plus one range (`sinks-api.md` B.5).
//!
//! A rule maps only when the pattern generates exactly the rule's
//! occurrences. Where Microsoft's model differs from RFC 5545 the rule is
//! [`Unsupported`], and the target writes single occurrences instead:
//!
//! - days of month 29 to 31: Microsoft puts them on the last day of shorter
//!   months, RFC 5545 skips those months (B.5);
//! - several BYMONTHDAY, BYHOUR/BYMINUTE/BYSECOND, BYWEEKNO, BYYEARDAY,
//!   FREQ finer than DAILY, BYSETPOS other than one ordinal of one weekday,
//!   BYMONTH outside the yearly patterns, yearly intervals;
//! - a DTSTART the pattern would not generate (Microsoft starts at the first
//!   pattern match on or after the start date; RFC 5545 counts DTSTART).
//!
//! The range is exact too: `COUNT` is `Numbered` (up to 999, the bound
//! clients observe), an `UNTIL` becomes `EndDate` on the local date of the
//! last occurrence it allows, found by expanding the rule with the `rrule`
//! crate (an `UNTIL` in the middle of a day would otherwise let that day's
//! occurrence in or out depending on its time).

use chrono::{Datelike, NaiveDate, TimeZone, Weekday};
use chrono_tz::Tz;

use bridge_core::model::{CanonicalEvent, EventTime};

/// A day of the week, spelled per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayOfWeek {
    Sunday,
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
}

impl DayOfWeek {
    /// EWS `DaysOfWeekType` / `DayOfWeekType` spelling (`Monday`).
    pub fn ews(self) -> &'static str {
        match self {
            Self::Sunday => "Sunday",
            Self::Monday => "Monday",
            Self::Tuesday => "Tuesday",
            Self::Wednesday => "Wednesday",
            Self::Thursday => "Thursday",
            Self::Friday => "Friday",
            Self::Saturday => "Saturday",
        }
    }

    /// Graph `dayOfWeek` enum spelling (`monday`).
    pub fn graph(self) -> &'static str {
        match self {
            Self::Sunday => "sunday",
            Self::Monday => "monday",
            Self::Tuesday => "tuesday",
            Self::Wednesday => "wednesday",
            Self::Thursday => "thursday",
            Self::Friday => "friday",
            Self::Saturday => "saturday",
        }
    }

    fn from_rfc(code: &str) -> Option<Self> {
        Some(match code {
            "SU" => Self::Sunday,
            "MO" => Self::Monday,
            "TU" => Self::Tuesday,
            "WE" => Self::Wednesday,
            "TH" => Self::Thursday,
            "FR" => Self::Friday,
            "SA" => Self::Saturday,
            _ => return None,
        })
    }

    fn of(day: Weekday) -> Self {
        match day {
            Weekday::Sun => Self::Sunday,
            Weekday::Mon => Self::Monday,
            Weekday::Tue => Self::Tuesday,
            Weekday::Wed => Self::Wednesday,
            Weekday::Thu => Self::Thursday,
            Weekday::Fri => Self::Friday,
            Weekday::Sat => Self::Saturday,
        }
    }
}

/// Which week of the month (`DayOfWeekIndex` / Graph `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeekIndex {
    First,
    Second,
    Third,
    Fourth,
    Last,
}

impl WeekIndex {
    /// EWS spelling (`First`).
    pub fn ews(self) -> &'static str {
        match self {
            Self::First => "First",
            Self::Second => "Second",
            Self::Third => "Third",
            Self::Fourth => "Fourth",
            Self::Last => "Last",
        }
    }

    /// Graph spelling (`first`).
    pub fn graph(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Second => "second",
            Self::Third => "third",
            Self::Fourth => "fourth",
            Self::Last => "last",
        }
    }

    fn from_ordinal(n: i32) -> Option<Self> {
        Some(match n {
            1 => Self::First,
            2 => Self::Second,
            3 => Self::Third,
            4 => Self::Fourth,
            -1 => Self::Last,
            _ => return None,
        })
    }

    /// Whether `date` is this week of its month for its weekday.
    fn holds(self, date: NaiveDate) -> bool {
        let nth = (date.day() - 1) / 7; // 0-based
        match self {
            Self::First => nth == 0,
            Self::Second => nth == 1,
            Self::Third => nth == 2,
            Self::Fourth => nth == 3,
            Self::Last => date
                .checked_add_days(chrono::Days::new(7))
                .is_none_or(|next| next.month() != date.month()),
        }
    }
}

/// The pattern: how often, on which days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Daily {
        interval: u32,
    },
    Weekly {
        interval: u32,
        /// In the rule's order, without repeats.
        days: Vec<DayOfWeek>,
        first_day_of_week: DayOfWeek,
    },
    AbsoluteMonthly {
        interval: u32,
        day_of_month: u32,
    },
    RelativeMonthly {
        interval: u32,
        day_of_week: DayOfWeek,
        index: WeekIndex,
    },
    AbsoluteYearly {
        /// 1 to 12.
        month: u32,
        day_of_month: u32,
    },
    RelativeYearly {
        month: u32,
        day_of_week: DayOfWeek,
        index: WeekIndex,
    },
}

/// The range: from which local date, to when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    NoEnd {
        start: NaiveDate,
    },
    /// `end` is inclusive: the local date of the last occurrence.
    EndDate {
        start: NaiveDate,
        end: NaiveDate,
    },
    Numbered {
        start: NaiveDate,
        count: u32,
    },
}

impl Range {
    /// The local date of the first occurrence.
    pub fn start(&self) -> NaiveDate {
        match *self {
            Self::NoEnd { start } | Self::EndDate { start, .. } | Self::Numbered { start, .. } => {
                start
            }
        }
    }
}

/// A master's rule in Microsoft's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    pub pattern: Pattern,
    pub range: Range,
    /// The IANA zone the pattern expands in (the DTSTART's zone; UTC for
    /// all-day and UTC series, whose dates are zone-free).
    pub zone: Tz,
}

/// Why a rule is not a Microsoft pattern; the target writes the series as
/// single occurrences within a horizon and warns with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// The largest `NumberOfOccurrences` written; larger counts become an end date.
const MAX_NUMBERED: u32 = 999;
/// Expansion safety bound (steps through the rule).
const MAX_STEPS: usize = 200_000;

fn unsupported(why: impl Into<String>) -> Unsupported {
    Unsupported(why.into())
}

/// The zone and local start date a master's rule expands from.
fn anchor(ev: &CanonicalEvent) -> (Tz, NaiveDate) {
    match ev.start {
        EventTime::Date(d) => (chrono_tz::UTC, d),
        EventTime::Utc(_) => (chrono_tz::UTC, ev.start.local().date()),
        EventTime::Zoned { tz, .. } => (tz, ev.start.local().date()),
    }
}

struct Parts<'a> {
    freq: &'a str,
    interval: u32,
    count: Option<u32>,
    until: Option<&'a str>,
    byday: Option<&'a str>,
    bymonthday: Option<&'a str>,
    bymonth: Option<&'a str>,
    bysetpos: Option<&'a str>,
    wkst: Option<&'a str>,
}

fn parse(rule: &str) -> Result<Parts<'_>, Unsupported> {
    let mut p = Parts {
        freq: "",
        interval: 1,
        count: None,
        until: None,
        byday: None,
        bymonthday: None,
        bymonth: None,
        bysetpos: None,
        wkst: None,
    };
    for part in rule.split(';').filter(|s| !s.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| unsupported(format!("recurrence part {part:?} is not NAME=VALUE")))?;
        match name {
            "FREQ" => p.freq = value,
            "INTERVAL" => {
                p.interval = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| unsupported(format!("INTERVAL={value} is not a count")))?;
            }
            "COUNT" => {
                p.count = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| unsupported(format!("COUNT={value} is not a count")))?,
                );
            }
            "UNTIL" => p.until = Some(value),
            "BYDAY" => p.byday = Some(value),
            "BYMONTHDAY" => p.bymonthday = Some(value),
            "BYMONTH" => p.bymonth = Some(value),
            "BYSETPOS" => p.bysetpos = Some(value),
            "WKST" => p.wkst = Some(value),
            other => {
                return Err(unsupported(format!(
                    "{other} has no equivalent in Microsoft's recurrence patterns"
                )));
            }
        }
    }
    Ok(p)
}

/// A BYDAY entry: optional ordinal and weekday (`-1FR`, `MO`).
fn byday_entry(entry: &str) -> Result<(Option<i32>, DayOfWeek), Unsupported> {
    let bad = || unsupported(format!("BYDAY entry {entry:?} is not a weekday"));
    let split = entry
        .len()
        .checked_sub(2)
        .filter(|i| entry.is_char_boundary(*i))
        .ok_or_else(bad)?;
    let day = DayOfWeek::from_rfc(&entry[split..]).ok_or_else(bad)?;
    let ordinal = &entry[..split];
    let ordinal = if ordinal.is_empty() {
        None
    } else {
        Some(
            ordinal
                .trim_start_matches('+')
                .parse::<i32>()
                .map_err(|_| bad())?,
        )
    };
    Ok((ordinal, day))
}

fn single_number(name: &str, value: &str) -> Result<i32, Unsupported> {
    if value.contains(',') {
        return Err(unsupported(format!(
            "{name}={value}: Microsoft's patterns take one value"
        )));
    }
    value
        .trim_start_matches('+')
        .parse()
        .map_err(|_| unsupported(format!("{name}={value} is not a number")))
}

/// One weekday with an ordinal Microsoft has (1-4, last), from BYDAY alone
/// (`2TU`) or BYDAY + BYSETPOS (`TU` + `2`).
fn relative(p: &Parts<'_>, byday: &str) -> Result<Option<(DayOfWeek, WeekIndex)>, Unsupported> {
    if byday.contains(',') {
        return Err(unsupported(format!(
            "BYDAY={byday}: Microsoft's monthly and yearly patterns take one weekday"
        )));
    }
    let (ordinal, day) = byday_entry(byday)?;
    let ordinal = match (ordinal, p.bysetpos) {
        (Some(n), None) => n,
        (None, Some(pos)) => single_number("BYSETPOS", pos)?,
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(unsupported("BYDAY with an ordinal and BYSETPOS together"));
        }
    };
    let index = WeekIndex::from_ordinal(ordinal).ok_or_else(|| {
        unsupported(format!(
            "week {ordinal} of the month: Microsoft has first to fourth and last"
        ))
    })?;
    Ok(Some((day, index)))
}

fn day_of_month(p: &Parts<'_>, start: NaiveDate) -> Result<u32, Unsupported> {
    let day = match p.bymonthday {
        Some(v) => single_number("BYMONTHDAY", v)?,
        None => start.day() as i32,
    };
    u32::try_from(day)
        .ok()
        .filter(|d| (1..=31).contains(d))
        .ok_or_else(|| unsupported(format!("day {day} of the month counted from the end")))
}

fn month_of(p: &Parts<'_>, start: NaiveDate) -> Result<u32, Unsupported> {
    match p.bymonth {
        Some(v) => u32::try_from(single_number("BYMONTH", v)?)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| unsupported(format!("BYMONTH={v} is not a month"))),
        None => Ok(start.month()),
    }
}

fn pattern_of(p: &Parts<'_>, start: NaiveDate) -> Result<Pattern, Unsupported> {
    let no_bymonth = |freq: &str| match p.bymonth {
        Some(v) => Err(unsupported(format!(
            "{freq} with BYMONTH={v} has no Microsoft pattern"
        ))),
        None => Ok(()),
    };
    let no = |name: &str, v: Option<&str>, freq: &str| match v {
        Some(v) => Err(unsupported(format!(
            "{freq} with {name}={v} has no Microsoft pattern"
        ))),
        None => Ok(()),
    };
    match p.freq {
        "DAILY" => {
            no_bymonth("DAILY")?;
            no("BYMONTHDAY", p.bymonthday, "DAILY")?;
            no("BYSETPOS", p.bysetpos, "DAILY")?;
            match p.byday {
                None => Ok(Pattern::Daily {
                    interval: p.interval,
                }),
                // Every day, on some weekdays only: a weekly pattern.
                Some(days) if p.interval == 1 => Ok(Pattern::Weekly {
                    interval: 1,
                    days: weekdays(days)?,
                    first_day_of_week: DayOfWeek::Monday,
                }),
                Some(days) => Err(unsupported(format!(
                    "every {} days on BYDAY={days} has no Microsoft pattern",
                    p.interval
                ))),
            }
        }
        "WEEKLY" => {
            no_bymonth("WEEKLY")?;
            no("BYMONTHDAY", p.bymonthday, "WEEKLY")?;
            no("BYSETPOS", p.bysetpos, "WEEKLY")?;
            let days = match p.byday {
                Some(v) => weekdays(v)?,
                None => vec![DayOfWeek::of(start.weekday())],
            };
            let first_day_of_week = match p.wkst {
                Some(v) => DayOfWeek::from_rfc(v)
                    .ok_or_else(|| unsupported(format!("WKST={v} is not a weekday")))?,
                None => DayOfWeek::Monday, // RFC 5545's default
            };
            Ok(Pattern::Weekly {
                interval: p.interval,
                days,
                first_day_of_week,
            })
        }
        "MONTHLY" => {
            no_bymonth("MONTHLY")?;
            if let Some(byday) = p.byday {
                no("BYMONTHDAY", p.bymonthday, "MONTHLY with BYDAY")?;
                let (day_of_week, index) = relative(p, byday)?.ok_or_else(|| {
                    unsupported(format!(
                        "every {byday} of the month (no ordinal) has no Microsoft pattern"
                    ))
                })?;
                return Ok(Pattern::RelativeMonthly {
                    interval: p.interval,
                    day_of_week,
                    index,
                });
            }
            no("BYSETPOS", p.bysetpos, "MONTHLY without BYDAY")?;
            let day_of_month = day_of_month(p, start)?;
            if day_of_month > 28 {
                return Err(unsupported(format!(
                    "day {day_of_month} of every month: Microsoft moves it to the last day of \
                     shorter months, RFC 5545 skips them"
                )));
            }
            Ok(Pattern::AbsoluteMonthly {
                interval: p.interval,
                day_of_month,
            })
        }
        "YEARLY" => {
            if p.interval != 1 {
                return Err(unsupported(format!(
                    "every {} years: EWS yearly patterns have no interval",
                    p.interval
                )));
            }
            let month = month_of(p, start)?;
            if let Some(byday) = p.byday {
                no("BYMONTHDAY", p.bymonthday, "YEARLY with BYDAY")?;
                if p.bymonth.is_none() {
                    return Err(unsupported(format!(
                        "YEARLY on BYDAY={byday} without BYMONTH has no Microsoft pattern"
                    )));
                }
                let (day_of_week, index) = relative(p, byday)?.ok_or_else(|| {
                    unsupported(format!(
                        "every {byday} of a month (no ordinal) has no Microsoft pattern"
                    ))
                })?;
                return Ok(Pattern::RelativeYearly {
                    month,
                    day_of_week,
                    index,
                });
            }
            no("BYSETPOS", p.bysetpos, "YEARLY without BYDAY")?;
            let day_of_month = day_of_month(p, start)?;
            // The shortest length of that month (February: 28).
            let shortest = match month {
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            if day_of_month > shortest {
                return Err(unsupported(format!(
                    "day {day_of_month} of month {month}: Microsoft moves it in years without \
                     that day, RFC 5545 skips them"
                )));
            }
            Ok(Pattern::AbsoluteYearly {
                month,
                day_of_month,
            })
        }
        "" => Err(unsupported("the rule has no FREQ")),
        other => Err(unsupported(format!(
            "FREQ={other}: Microsoft's patterns are daily at the finest"
        ))),
    }
}

fn weekdays(list: &str) -> Result<Vec<DayOfWeek>, Unsupported> {
    let mut days = Vec::new();
    for entry in list.split(',') {
        let (ordinal, day) = byday_entry(entry)?;
        if ordinal.is_some() {
            return Err(unsupported(format!(
                "BYDAY={list}: an ordinal weekday in a daily or weekly rule"
            )));
        }
        if !days.contains(&day) {
            days.push(day);
        }
    }
    Ok(days)
}

/// Whether the pattern generates `date` (the series' first date must be one
/// of its occurrences: Microsoft starts at the first match on or after it).
fn generates(pattern: &Pattern, date: NaiveDate) -> bool {
    let weekday = DayOfWeek::of(date.weekday());
    match pattern {
        Pattern::Daily { .. } | Pattern::AbsoluteMonthly { .. } => match pattern {
            Pattern::AbsoluteMonthly { day_of_month, .. } => date.day() == *day_of_month,
            _ => true,
        },
        Pattern::Weekly { days, .. } => days.contains(&weekday),
        Pattern::RelativeMonthly {
            day_of_week, index, ..
        } => weekday == *day_of_week && index.holds(date),
        Pattern::AbsoluteYearly {
            month,
            day_of_month,
        } => date.month() == *month && date.day() == *day_of_month,
        Pattern::RelativeYearly {
            month,
            day_of_week,
            index,
        } => date.month() == *month && weekday == *day_of_week && index.holds(date),
    }
}

/// The Microsoft recurrence of a master (`ev.rrule` from `ev.start`), or
/// why it has none.
pub fn from_event(ev: &CanonicalEvent) -> Result<Recurrence, Unsupported> {
    let rule = ev
        .rrule
        .as_deref()
        .ok_or_else(|| unsupported("the event has no recurrence rule"))?;
    let parts = parse(rule)?;
    let (zone, start) = anchor(ev);
    let pattern = pattern_of(&parts, start)?;
    if !generates(&pattern, start) {
        return Err(unsupported(format!(
            "the series starts on {start}, a day its rule does not generate"
        )));
    }
    let range = match (parts.count, parts.until) {
        (Some(_), Some(_)) => return Err(unsupported("COUNT and UNTIL together")),
        (Some(count), None) if count <= MAX_NUMBERED => Range::Numbered { start, count },
        (None, None) => Range::NoEnd { start },
        // UNTIL, or a COUNT above what clients write: the date of the last
        // occurrence the rule generates.
        _ => {
            let last = last_occurrence(ev)?
                .ok_or_else(|| unsupported("the rule generates no occurrence"))?;
            let end = zone
                .timestamp_opt(last, 0)
                .single()
                .map(|d| d.date_naive())
                .ok_or_else(|| unsupported("the last occurrence is out of range"))?;
            Range::EndDate { start, end }
        }
    };
    Ok(Recurrence {
        pattern,
        range,
        zone,
    })
}

/// The rule of `ev` built for the `rrule` crate, and the first start to put
/// back at its exact instant, `(generated, exact)`.
///
/// The crate expands in wall-clock time: from a start in the second of two
/// equal wall-clock hours (the repeated hour when clocks go back) it
/// resolves the local time to the first one, and then generates nothing at
/// all. So such a rule is built from the first of the two hours (every later
/// occurrence is a wall-clock reading anyway), and its first occurrence is
/// put back at the series' exact start.
fn rule_set(ev: &CanonicalEvent) -> Result<(rrule::RRuleSet, Option<(i64, i64)>), String> {
    let rule = ev
        .rrule
        .as_deref()
        .ok_or("the event has no recurrence rule")?;
    let (zone, _) = anchor(ev);
    let rtz = rrule::Tz::Tz(zone);
    let exact = ev.start.instant();
    let error = bridge_core::instant::wall_clock_error(&ev.start);
    let generated = exact - error;
    let start = rtz
        .timestamp_opt(generated, 0)
        .single()
        .ok_or("the start is out of range")?;
    // The rrule crate wants UNTIL in UTC; an all-day series' UNTIL is a date
    // (through the end of that day).
    let body: Vec<String> = rule
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|part| match part.split_once('=') {
            Some(("UNTIL", v)) if v.len() == 8 => format!("UNTIL={v}T235959Z"),
            _ => part.to_owned(),
        })
        .collect();
    let parsed: rrule::RRule<rrule::Unvalidated> = body
        .join(";")
        .parse()
        .map_err(|e: rrule::RRuleError| e.to_string())?;
    let set = parsed.build(start).map_err(|e| e.to_string())?;
    Ok((set, (error != 0).then_some((generated, exact))))
}

/// Every start the rule generates, in order (exact instants, see
/// [`rule_set`]).
fn starts(ev: &CanonicalEvent) -> Result<impl Iterator<Item = i64>, String> {
    let (set, fix) = rule_set(ev)?;
    Ok(set.into_iter().enumerate().map(move |(n, dt)| {
        let t = dt.timestamp();
        match fix {
            Some((generated, exact)) if n == 0 && t == generated => exact,
            _ => t,
        }
    }))
}

fn last_occurrence(ev: &CanonicalEvent) -> Result<Option<i64>, Unsupported> {
    let mut last = None;
    for (steps, t) in starts(ev).map_err(Unsupported)?.enumerate() {
        if steps >= MAX_STEPS {
            return Err(unsupported("the rule has too many occurrences to bound"));
        }
        last = Some(t);
    }
    Ok(last)
}

/// The starts (Unix seconds) of `ev`'s generated occurrences in
/// `[from, until)`, at most `max`: the single-occurrence fallback for a rule
/// without a Microsoft pattern, and a way to find an occurrence's index.
pub fn occurrences(
    ev: &CanonicalEvent,
    from: i64,
    until: i64,
    max: usize,
) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for (steps, t) in starts(ev)?.enumerate() {
        if steps >= MAX_STEPS || t >= until || out.len() >= max {
            break;
        }
        if t >= from {
            out.push(t);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::key::EventKey;
    use chrono::NaiveDateTime;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    fn at(tz: Tz, s: &str) -> i64 {
        let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        tz.from_local_datetime(&local)
            .earliest()
            .unwrap()
            .timestamp()
    }

    fn master(start: &str, rule: &str) -> CanonicalEvent {
        let s = at(SH, start);
        CanonicalEvent {
            key: EventKey::new("u1", 0).unwrap(),
            start: EventTime::Zoned { at: s, tz: SH },
            end: EventTime::Zoned {
                at: s + 3600,
                tz: SH,
            },
            rrule: Some(rule.to_owned()),
            rrule_bound: None,
            summary: "s".into(),
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

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn weekly_with_count() {
        // 2026-12-07 is a Monday.
        let r = from_event(&master(
            "2026-12-07 09:00",
            "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
        ))
        .unwrap();
        assert_eq!(
            r.pattern,
            Pattern::Weekly {
                interval: 1,
                days: vec![DayOfWeek::Monday, DayOfWeek::Wednesday],
                first_day_of_week: DayOfWeek::Monday
            }
        );
        assert_eq!(
            r.range,
            Range::Numbered {
                start: date("2026-12-07"),
                count: 10
            }
        );
        assert_eq!(r.zone, SH);
    }

    #[test]
    fn until_ends_on_the_date_of_the_last_occurrence_it_allows() {
        // UNTIL 2026-12-10 00:30Z = 08:30 Shanghai, before the 09:00
        // occurrence of the 10th: the last occurrence is on the 9th.
        let r = from_event(&master(
            "2026-12-07 09:00",
            "FREQ=DAILY;UNTIL=20261210T003000Z",
        ))
        .unwrap();
        assert_eq!(r.pattern, Pattern::Daily { interval: 1 });
        assert_eq!(
            r.range,
            Range::EndDate {
                start: date("2026-12-07"),
                end: date("2026-12-09")
            }
        );
    }

    #[test]
    fn monthly_and_yearly_patterns() {
        let r = from_event(&master("2026-12-08 09:00", "FREQ=MONTHLY;BYDAY=2TU")).unwrap();
        assert_eq!(
            r.pattern,
            Pattern::RelativeMonthly {
                interval: 1,
                day_of_week: DayOfWeek::Tuesday,
                index: WeekIndex::Second
            }
        );
        assert_eq!(
            r.range,
            Range::NoEnd {
                start: date("2026-12-08")
            }
        );
        // Last Thursday via BYSETPOS.
        let r = from_event(&master(
            "2026-12-31 09:00",
            "FREQ=MONTHLY;INTERVAL=2;BYDAY=TH;BYSETPOS=-1",
        ))
        .unwrap();
        assert_eq!(
            r.pattern,
            Pattern::RelativeMonthly {
                interval: 2,
                day_of_week: DayOfWeek::Thursday,
                index: WeekIndex::Last
            }
        );
        let r = from_event(&master("2026-12-15 09:00", "FREQ=MONTHLY")).unwrap();
        assert_eq!(
            r.pattern,
            Pattern::AbsoluteMonthly {
                interval: 1,
                day_of_month: 15
            }
        );
        let r = from_event(&master("2026-12-25 09:00", "FREQ=YEARLY")).unwrap();
        assert_eq!(
            r.pattern,
            Pattern::AbsoluteYearly {
                month: 12,
                day_of_month: 25
            }
        );
        // Thanksgiving: fourth Thursday of November (2027-11-25).
        let r = from_event(&master(
            "2027-11-25 12:00",
            "FREQ=YEARLY;BYMONTH=11;BYDAY=4TH",
        ))
        .unwrap();
        assert_eq!(
            r.pattern,
            Pattern::RelativeYearly {
                month: 11,
                day_of_week: DayOfWeek::Thursday,
                index: WeekIndex::Fourth
            }
        );
    }

    #[test]
    fn rules_microsoft_cannot_express_say_why() {
        for (start, rule, why) in [
            (
                "2026-12-30 09:00",
                "FREQ=MONTHLY;BYMONTHDAY=30",
                "shorter months",
            ),
            (
                "2026-12-01 09:00",
                "FREQ=MONTHLY;BYMONTHDAY=1,15",
                "one value",
            ),
            ("2026-12-07 09:00", "FREQ=DAILY;BYHOUR=9,15", "BYHOUR"),
            ("2026-12-07 09:00", "FREQ=HOURLY", "daily at the finest"),
            (
                "2026-12-07 09:00",
                "FREQ=MONTHLY;BYDAY=5MO",
                "first to fourth",
            ),
            ("2026-12-07 09:00", "FREQ=YEARLY;INTERVAL=2", "no interval"),
            ("2028-02-29 09:00", "FREQ=YEARLY", "years without"),
            (
                "2026-12-08 09:00",
                "FREQ=WEEKLY;BYDAY=MO",
                "does not generate",
            ),
        ] {
            let err = from_event(&master(start, rule)).unwrap_err();
            assert!(err.0.contains(why), "{rule}: {err}");
        }
    }

    #[test]
    fn daily_on_weekdays_is_weekly() {
        let r = from_event(&master(
            "2026-12-07 09:00",
            "FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR",
        ))
        .unwrap();
        assert!(matches!(r.pattern, Pattern::Weekly { ref days, .. } if days.len() == 5));
    }

    #[test]
    fn all_day_series_expand_by_date() {
        let mut ev = master("2026-12-07 00:00", "FREQ=WEEKLY;UNTIL=20261221");
        ev.start = EventTime::Date(date("2026-12-07"));
        ev.end = EventTime::Date(date("2026-12-08"));
        let r = from_event(&ev).unwrap();
        assert_eq!(
            r.range,
            Range::EndDate {
                start: date("2026-12-07"),
                end: date("2026-12-21")
            }
        );
        assert_eq!(r.zone, chrono_tz::UTC);
    }

    #[test]
    fn occurrences_in_a_window() {
        let ev = master("2026-12-07 09:00", "FREQ=DAILY;COUNT=5");
        let first = at(SH, "2026-12-07 09:00");
        let all = occurrences(&ev, 0, i64::MAX, 100).unwrap();
        assert_eq!(all, (0..5).map(|i| first + i * 86_400).collect::<Vec<_>>());
        let some = occurrences(&ev, first + 1, first + 3 * 86_400, 100).unwrap();
        assert_eq!(some, vec![first + 86_400, first + 2 * 86_400]);
        assert_eq!(occurrences(&ev, 0, i64::MAX, 2).unwrap().len(), 2);
    }

    const NY: Tz = chrono_tz::America::New_York;
    /// 2026-11-01 01:15 EST, the second 01:15 of that day in New York.
    const SECOND_0115: i64 = 1_793_513_700;

    fn ny_master(at: i64, rule: &str) -> CanonicalEvent {
        let mut ev = master("2026-12-07 09:00", rule);
        ev.start = EventTime::Zoned { at, tz: NY };
        ev.end = EventTime::Zoned {
            at: at + 1800,
            tz: NY,
        };
        ev
    }

    #[test]
    fn a_start_in_the_repeated_hour_expands_from_its_exact_instant() {
        assert_eq!(
            bridge_core::instant::wall_clock_error(&EventTime::Zoned {
                at: SECOND_0115,
                tz: NY
            }),
            3600
        );
        let ev = ny_master(SECOND_0115, "FREQ=DAILY;COUNT=3");
        // The first at Feishu's instant, the next ones at 01:15 EST.
        assert_eq!(
            occurrences(&ev, i64::MIN / 4, i64::MAX, 10).unwrap(),
            vec![SECOND_0115, SECOND_0115 + 86_400, SECOND_0115 + 2 * 86_400]
        );
        // A window after the first still sees the later ones.
        assert_eq!(
            occurrences(&ev, SECOND_0115 + 1, i64::MAX, 10).unwrap(),
            vec![SECOND_0115 + 86_400, SECOND_0115 + 2 * 86_400]
        );
        // The first hour of the two is not affected.
        let first = ny_master(SECOND_0115 - 3600, "FREQ=DAILY;COUNT=2");
        assert_eq!(
            occurrences(&first, i64::MIN / 4, i64::MAX, 10).unwrap(),
            vec![SECOND_0115 - 3600, SECOND_0115 - 3600 + 90_000]
        );
    }

    #[test]
    fn until_and_large_counts_from_the_repeated_hour() {
        let start = date("2026-11-01");
        let r = from_event(&ny_master(SECOND_0115, "FREQ=DAILY;COUNT=1000")).unwrap();
        assert_eq!(
            r.range,
            Range::EndDate {
                start,
                end: start + chrono::Days::new(999)
            }
        );
        // UNTIL 2026-11-05 06:15Z = 01:15 EST: that day's occurrence is in.
        let ev = ny_master(SECOND_0115, "FREQ=DAILY;UNTIL=20261105T061500Z");
        let r = from_event(&ev).unwrap();
        assert_eq!(
            r.range,
            Range::EndDate {
                start,
                end: date("2026-11-05")
            }
        );
        assert_eq!(
            occurrences(&ev, i64::MIN / 4, i64::MAX, 100).unwrap().len(),
            5
        );
        let r = from_event(&ny_master(SECOND_0115, "FREQ=DAILY;COUNT=999")).unwrap();
        assert_eq!(r.range, Range::Numbered { start, count: 999 });
    }

    #[test]
    fn until_and_counts_at_the_edges() {
        // UNTIL exactly at an occurrence keeps it (RFC 5545: inclusive).
        let ev = master("2026-12-07 09:00", "FREQ=DAILY;UNTIL=20261209T010000Z");
        let r = from_event(&ev).unwrap();
        assert_eq!(
            r.range,
            Range::EndDate {
                start: date("2026-12-07"),
                end: date("2026-12-09")
            }
        );
        assert_eq!(occurrences(&ev, 0, i64::MAX, 100).unwrap().len(), 3);
        // UNTIL before the first occurrence: nothing to write.
        let none = master("2026-12-07 09:00", "FREQ=DAILY;UNTIL=20261206T000000Z");
        assert!(occurrences(&none, 0, i64::MAX, 100).map_or(true, |v| v.is_empty()));
        assert!(from_event(&none).is_err());
        // COUNT 999 stays numbered, 1000 and more become the last date.
        let weekly = master("2026-12-07 09:00", "FREQ=WEEKLY;BYDAY=MO;COUNT=999");
        assert!(matches!(
            from_event(&weekly).unwrap().range,
            Range::Numbered { count: 999, .. }
        ));
        let weekly = master("2026-12-07 09:00", "FREQ=WEEKLY;BYDAY=MO;COUNT=1500");
        let Range::EndDate { end, .. } = from_event(&weekly).unwrap().range else {
            panic!("an end date");
        };
        assert_eq!(end, date("2026-12-07") + chrono::Days::new(7 * 1499));
        let all = occurrences(&weekly, 0, i64::MAX, usize::MAX).unwrap();
        assert_eq!(all.len(), 1500);
    }

    #[test]
    fn large_counts_become_an_end_date() {
        let r = from_event(&master("2026-12-07 09:00", "FREQ=DAILY;COUNT=1000")).unwrap();
        assert_eq!(
            r.range,
            Range::EndDate {
                start: date("2026-12-07"),
                end: date("2026-12-07") + chrono::Days::new(999)
            }
        );
    }
}
