//! Expansion of a master's RRULE into occurrences (the `instances` and
//! `instance_view` endpoints, and validation of exception ids).
//!
//! Feishu stores the rule body without the `RRULE:` prefix and evaluates it in
//! the event's time zone (`start_time.timezone`, default `Asia/Shanghai`);
//! all-day series are fixed to `UTC` and their occurrences start at midnight
//! UTC, which is also what their `original_time` holds.

use bridge_core::feishu::{Event, TimeInfo};
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Feishu's default event time zone.
pub(crate) const DEFAULT_TZ: &str = "Asia/Shanghai";

/// Safety valve for pathological rules (e.g. `FREQ=SECONDLY`).
const MAX_STEPS: usize = 200_000;

/// Why a rule could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecurError {
    #[error("event has no usable start_time/end_time")]
    NoTimes,
    #[error("unknown time zone {0:?}")]
    Zone(String),
    #[error("invalid recurrence {rule:?}: {reason}")]
    Rule { rule: String, reason: String },
}

/// Parses an all-day `date` (`YYYY-MM-DD`).
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn midnight_utc(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|dt| dt.and_utc().timestamp())
        .unwrap_or_default()
}

/// Start of a `time_info` in Unix seconds (all-day: midnight UTC of the date).
pub(crate) fn start_secs(ti: &TimeInfo) -> Option<i64> {
    if let Some(ts) = ti.timestamp {
        return Some(ts.0);
    }
    ti.date.as_deref().and_then(parse_date).map(midnight_utc)
}

/// End of a `time_info` in Unix seconds. All-day end dates are inclusive, so
/// the end instant is midnight UTC of the day after.
pub(crate) fn end_secs(ti: &TimeInfo) -> Option<i64> {
    if let Some(ts) = ti.timestamp {
        return Some(ts.0);
    }
    ti.date
        .as_deref()
        .and_then(parse_date)
        .map(|d| midnight_utc(d) + 86_400)
}

/// `(start, end)` of an event in Unix seconds.
pub(crate) fn span(ev: &Event) -> Option<(i64, i64)> {
    let s = start_secs(ev.start_time.as_ref()?)?;
    let e = end_secs(ev.end_time.as_ref()?)?;
    Some((s, e))
}

/// True for all-day events (`date` instead of `timestamp`).
pub(crate) fn is_all_day(ev: &Event) -> bool {
    ev.start_time.as_ref().is_some_and(|t| t.date.is_some())
}

/// The rule body of a recurring master, if any.
pub(crate) fn rule_of(ev: &Event) -> Option<&str> {
    ev.recurrence
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

/// The zone a series is evaluated in.
pub(crate) fn zone_of(ev: &Event) -> Result<chrono_tz::Tz, RecurError> {
    if is_all_day(ev) {
        return Ok(chrono_tz::UTC);
    }
    let name = ev
        .start_time
        .as_ref()
        .and_then(|t| t.timezone.as_deref())
        .filter(|z| !z.is_empty())
        .unwrap_or(DEFAULT_TZ);
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| RecurError::Zone(name.to_owned()))
}

/// Builds a `time_info` for an occurrence start/end of `ev`'s kind.
pub(crate) fn time_info_like(ev: &Event, secs: i64, is_end: bool) -> TimeInfo {
    if is_all_day(ev) {
        let secs = if is_end { secs - 86_400 } else { secs };
        let date = chrono::DateTime::<Utc>::from_timestamp(secs, 0)
            .map(|d| d.date_naive().format("%Y-%m-%d").to_string());
        TimeInfo {
            date,
            timestamp: None,
            timezone: Some("UTC".into()),
        }
    } else {
        TimeInfo {
            date: None,
            timestamp: Some(bridge_core::feishu::UnixSeconds(secs)),
            timezone: Some(
                ev.start_time
                    .as_ref()
                    .and_then(|t| t.timezone.clone())
                    .unwrap_or_else(|| DEFAULT_TZ.into()),
            ),
        }
    }
}

/// Rewrites `UNTIL` into the UTC form the `rrule` crate requires for a zoned
/// DTSTART (a bare date means "through the end of that day").
fn normalize_rule(body: &str, tz: chrono_tz::Tz, all_day: bool) -> String {
    let body = body.trim();
    let body = body
        .strip_prefix("RRULE:")
        .or_else(|| body.strip_prefix("rrule:"))
        .unwrap_or(body);
    body.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("UNTIL") => {
                format!("UNTIL={}", until_utc(v.trim(), tz, all_day))
            }
            _ => part.trim().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn until_utc(v: &str, tz: chrono_tz::Tz, all_day: bool) -> String {
    if v.ends_with('Z') || v.ends_with('z') {
        return v.to_uppercase();
    }
    let local = if v.len() == 8 {
        NaiveDate::parse_from_str(v, "%Y%m%d").ok().and_then(|d| {
            if all_day {
                d.and_hms_opt(0, 0, 0)
            } else {
                d.and_hms_opt(23, 59, 59)
            }
        })
    } else {
        NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").ok()
    };
    match local.and_then(|l| tz.from_local_datetime(&l).earliest()) {
        Some(dt) => dt.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ").to_string(),
        None => v.to_owned(),
    }
}

/// A parsed series: the rule set plus the occurrence duration.
struct Series {
    set: rrule::RRuleSet,
    duration: i64,
}

fn series(master: &Event) -> Result<Option<Series>, RecurError> {
    let Some(rule) = rule_of(master) else {
        return Ok(None);
    };
    let (start, end) = span(master).ok_or(RecurError::NoTimes)?;
    let tz = zone_of(master)?;
    let all_day = is_all_day(master);
    let rtz = rrule::Tz::Tz(tz);
    let dt_start = rtz
        .timestamp_opt(start, 0)
        .single()
        .ok_or(RecurError::NoTimes)?;
    let normalized = normalize_rule(rule, tz, all_day);
    let err = |reason: String| RecurError::Rule {
        rule: rule.to_owned(),
        reason,
    };
    let parsed: rrule::RRule<rrule::Unvalidated> = normalized
        .parse()
        .map_err(|e: rrule::RRuleError| err(e.to_string()))?;
    if parsed.get_count().is_some() && parsed.get_until().is_some() {
        return Err(err("COUNT and UNTIL must not both appear".into()));
    }
    let set = parsed.build(dt_start).map_err(|e| err(e.to_string()))?;
    Ok(Some(Series {
        set,
        duration: (end - start).max(0),
    }))
}

/// Checks that a master's rule can be expanded.
pub(crate) fn validate(master: &Event) -> Result<(), RecurError> {
    series(master).map(|_| ())
}

/// Original starts (Unix s) of the occurrences of `master` overlapping the
/// open interval `(from, to)`, at most `cap` of them. A non-recurring event
/// yields its own start when it overlaps.
pub(crate) fn occurrences(
    master: &Event,
    from: i64,
    to: i64,
    cap: usize,
) -> Result<Vec<i64>, RecurError> {
    let Some(series) = series(master)? else {
        let (s, e) = span(master).ok_or(RecurError::NoTimes)?;
        let overlaps = s < to && (e > from || (e == s && s >= from));
        return Ok(if overlaps { vec![s] } else { Vec::new() });
    };
    let mut out = Vec::new();
    for (steps, dt) in series.set.into_iter().enumerate() {
        if steps >= MAX_STEPS || out.len() >= cap {
            break;
        }
        let s = dt.timestamp();
        if s >= to {
            break;
        }
        let e = s + series.duration;
        if e > from || (series.duration == 0 && s >= from) {
            out.push(s);
        }
    }
    Ok(out)
}

/// True when `t` is an original start of `master`'s series.
pub(crate) fn is_occurrence(master: &Event, t: i64) -> Result<bool, RecurError> {
    let Some(series) = series(master)? else {
        return Ok(false);
    };
    for (steps, dt) in series.set.into_iter().enumerate() {
        if steps >= MAX_STEPS {
            break;
        }
        let s = dt.timestamp();
        if s == t {
            return Ok(true);
        }
        if s > t {
            break;
        }
    }
    Ok(false)
}

/// The end of the last occurrence, or `None` for an open-ended series.
pub(crate) fn series_end(master: &Event) -> Result<Option<i64>, RecurError> {
    let Some(series) = series(master)? else {
        return Ok(span(master).map(|(_, e)| e));
    };
    let bounded = series
        .set
        .get_rrule()
        .iter()
        .all(|r| r.get_count().is_some() || r.get_until().is_some());
    if !bounded {
        return Ok(None);
    }
    let duration = series.duration;
    let mut last = None;
    for (steps, dt) in series.set.into_iter().enumerate() {
        if steps >= MAX_STEPS {
            return Ok(None);
        }
        last = Some(dt.timestamp() + duration);
    }
    Ok(last.or_else(|| span(master).map(|(_, e)| e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::feishu::UnixSeconds;

    fn timed(start: i64, end: i64, tz: &str, rule: &str) -> Event {
        Event {
            start_time: Some(TimeInfo {
                timestamp: Some(UnixSeconds(start)),
                timezone: Some(tz.into()),
                date: None,
            }),
            end_time: Some(TimeInfo {
                timestamp: Some(UnixSeconds(end)),
                timezone: Some(tz.into()),
                date: None,
            }),
            recurrence: Some(rule.into()),
            ..Event::default()
        }
    }

    #[test]
    fn daily_in_zone_keeps_local_time_across_dst() {
        // 2024-03-09 09:00 America/New_York = 14:00Z; DST starts 2024-03-10.
        let start = 1_709_992_800;
        let ev = timed(
            start,
            start + 3600,
            "America/New_York",
            "FREQ=DAILY;COUNT=3",
        );
        let occ = occurrences(&ev, 0, i64::MAX, 10).unwrap();
        assert_eq!(
            occ,
            vec![start, start + 86_400 - 3600, start + 2 * 86_400 - 3600]
        );
        assert_eq!(series_end(&ev).unwrap(), Some(start + 2 * 86_400));
    }

    #[test]
    fn until_as_date_and_open_ended() {
        let start = 1_700_000_000;
        let ev = timed(start, start + 60, "UTC", "FREQ=DAILY;UNTIL=20231116");
        // 2023-11-14 22:13:20Z; a bare-date UNTIL runs through the end of that day.
        assert_eq!(occurrences(&ev, 0, i64::MAX, 10).unwrap().len(), 3);
        let open = timed(start, start + 60, "Asia/Shanghai", "FREQ=WEEKLY");
        assert_eq!(series_end(&open).unwrap(), None);
        assert!(is_occurrence(&open, start + 7 * 86_400).unwrap());
        assert!(!is_occurrence(&open, start + 86_400).unwrap());
    }

    #[test]
    fn bad_rules_are_errors() {
        let ev = timed(0, 60, "UTC", "FREQ=SOMETIMES");
        assert!(matches!(validate(&ev), Err(RecurError::Rule { .. })));
        let ev = timed(0, 60, "UTC", "FREQ=DAILY;COUNT=2;UNTIL=20300101T000000Z");
        assert!(validate(&ev).is_err());
    }
}
