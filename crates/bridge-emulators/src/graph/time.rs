//! `dateTimeTimeZone` values, Windows zones and the recurrence expansion of
//! a `patternedRecurrence` (the `rrule` crate, in the IANA zone CLDR maps the
//! series' Windows zone to; `localzone`'s `win_zones` table).

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::RRuleSet;
use serde_json::{Value, json};

/// The zone of a `timeZone` string: `UTC` or a Windows zone id. IANA names
/// are refused like the tenants that answer `TimeZoneNotSupportedException`
/// (graph.md §1.1), so a client has to send Windows ids.
pub(crate) fn zone(name: &str) -> Option<Tz> {
    if name == "UTC" || name == "Coordinated Universal Time" {
        return Some(chrono_tz::UTC);
    }
    localzone::win_zone_to_iana(name, Some("001"))
        .or_else(|| localzone::win_zone_to_iana(name, None))
        .and_then(|iana| iana.parse().ok())
}

/// `YYYY-MM-DDThh:mm:ss[.fffffff]`, no offset.
pub(crate) fn parse_local(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

/// The instant of a wall-clock time (first of a repeated one; a time in a
/// gap moves forward by the gap, as Exchange does).
pub(crate) fn resolve(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, _) => Some(a.with_timezone(&Utc)),
        LocalResult::None => (1..=48).find_map(|h| {
            let shift = chrono::Duration::minutes(30 * h);
            tz.from_local_datetime(&(wall + shift))
                .earliest()
                .map(|t| t.with_timezone(&Utc) - shift)
        }),
    }
}

/// A parsed `dateTimeTimeZone`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct When {
    pub(crate) local: NaiveDateTime,
    pub(crate) tz: Tz,
    pub(crate) at: DateTime<Utc>,
}

/// Reads `{dateTime, timeZone}`; the error is Graph's message.
pub(crate) fn when(v: &Value) -> Result<When, String> {
    let dt = v["dateTime"]
        .as_str()
        .ok_or("dateTime is required in a dateTimeTimeZone")?;
    let tzname = v["timeZone"]
        .as_str()
        .ok_or("timeZone is required in a dateTimeTimeZone")?;
    let local = parse_local(dt).ok_or_else(|| {
        format!("Cannot convert the literal '{dt}' to the expected type 'Edm.DateTime'.")
    })?;
    let tz = zone(tzname).ok_or_else(|| {
        format!(
            "TZ:A valid TimeZone value must be specified. The following TimeZone value is not supported: '{tzname}'."
        )
    })?;
    let at = resolve(tz, local).ok_or("the time does not exist in its zone")?;
    Ok(When { local, tz, at })
}

/// Graph's rendering of an instant in `tz` (`UTC` by default).
pub(crate) fn render(at: DateTime<Utc>, tz: Tz, tz_name: &str) -> Value {
    let local = at.with_timezone(&tz).naive_local();
    json!({
        "dateTime": local.format("%Y-%m-%dT%H:%M:%S.0000000").to_string(),
        "timeZone": tz_name,
    })
}

/// Like [`render`], for a value the emulator reads back later (a generated
/// occurrence's start and end): the wall-clock time in `tz` when it names
/// `at` again, else (the second of two equal wall-clock times) `at` in UTC.
/// Exchange keeps an occurrence's instants, so its end stays the master's
/// length after its start even when the wall clock repeats.
pub(crate) fn render_exact(at: DateTime<Utc>, tz: Tz, tz_name: &str) -> Value {
    let local = at.with_timezone(&tz).naive_local();
    if resolve(tz, local) == Some(at) {
        render(at, tz, tz_name)
    } else {
        render(at, chrono_tz::UTC, "UTC")
    }
}

/// ISO 8601 UTC with `Z` (`originalStart`).
pub(crate) fn iso_utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `startDateTime` / `endDateTime` query values (offset or `Z`, or a local
/// time read as UTC, as Graph does).
pub(crate) fn parse_query_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_local(s).map(|l| l.and_utc()))
}

fn day(name: &str) -> Option<&'static str> {
    Some(match name {
        "sunday" => "SU",
        "monday" => "MO",
        "tuesday" => "TU",
        "wednesday" => "WE",
        "thursday" => "TH",
        "friday" => "FR",
        "saturday" => "SA",
        _ => return None,
    })
}

fn index(name: &str) -> Option<i32> {
    Some(match name {
        "first" => 1,
        "second" => 2,
        "third" => 3,
        "fourth" => 4,
        "last" => -1,
        _ => return None,
    })
}

/// A master's recurrence, ready to expand.
#[derive(Debug, Clone)]
pub(crate) struct Expansion {
    set: RRuleSet,
    pub(crate) tz: Tz,
}

/// Validates a `patternedRecurrence` for a master starting at `start` and
/// builds its expansion; the error is the `ErrorPropertyValidationFailure`
/// detail.
pub(crate) fn expansion(rec: &Value, start: &When) -> Result<Expansion, String> {
    let p = &rec["pattern"];
    let r = &rec["range"];
    let interval = p["interval"]
        .as_u64()
        .filter(|i| *i >= 1)
        .ok_or("pattern.interval must be a positive integer")?;
    let days = || -> Result<String, String> {
        let list = p["daysOfWeek"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or("pattern.daysOfWeek is required")?;
        let v: Option<Vec<&str>> = list.iter().map(|d| d.as_str().and_then(day)).collect();
        Ok(v.ok_or("pattern.daysOfWeek has an unknown day")?.join(","))
    };
    let month = || -> Result<u64, String> {
        p["month"]
            .as_u64()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| "pattern.month must be 1-12".to_owned())
    };
    let dom = || -> Result<u64, String> {
        p["dayOfMonth"]
            .as_u64()
            .filter(|m| (1..=31).contains(m))
            .ok_or_else(|| "pattern.dayOfMonth must be 1-31".to_owned())
    };
    // Exchange puts a day of month beyond a month's length on its last day.
    let by_dom = |d: u64| -> String {
        if d >= 29 {
            let days: Vec<String> = (28..=d).map(|x| x.to_string()).collect();
            format!("BYMONTHDAY={};BYSETPOS=-1", days.join(","))
        } else {
            format!("BYMONTHDAY={d}")
        }
    };
    let setpos = || -> Result<i32, String> {
        index(p["index"].as_str().unwrap_or("first"))
            .ok_or_else(|| "pattern.index is not a weekIndex".to_owned())
    };
    let rule = match p["type"].as_str() {
        Some("daily") => format!("FREQ=DAILY;INTERVAL={interval}"),
        Some("weekly") => {
            let wkst = day(p["firstDayOfWeek"].as_str().unwrap_or("sunday"))
                .ok_or("pattern.firstDayOfWeek is not a dayOfWeek")?;
            format!(
                "FREQ=WEEKLY;INTERVAL={interval};BYDAY={};WKST={wkst}",
                days()?
            )
        }
        Some("absoluteMonthly") => format!("FREQ=MONTHLY;INTERVAL={interval};{}", by_dom(dom()?)),
        Some("relativeMonthly") => format!(
            "FREQ=MONTHLY;INTERVAL={interval};BYDAY={};BYSETPOS={}",
            days()?,
            setpos()?
        ),
        Some("absoluteYearly") => format!(
            "FREQ=YEARLY;INTERVAL={interval};BYMONTH={};{}",
            month()?,
            by_dom(dom()?)
        ),
        Some("relativeYearly") => format!(
            "FREQ=YEARLY;INTERVAL={interval};BYMONTH={};BYDAY={};BYSETPOS={}",
            month()?,
            days()?,
            setpos()?
        ),
        _ => return Err("pattern.type is required".into()),
    };
    let tz = match r["recurrenceTimeZone"].as_str() {
        Some(z) if !z.is_empty() => {
            zone(z).ok_or_else(|| format!("recurrenceTimeZone '{z}' is not supported"))?
        }
        _ => start.tz,
    };
    let local_start = start.at.with_timezone(&tz).naive_local();
    let start_date = r["startDate"]
        .as_str()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or("range.startDate is required")?;
    if start_date != local_start.date() {
        return Err(format!(
            "range.startDate {start_date} must be the date of the start ({})",
            local_start.date()
        ));
    }
    let end = match r["type"].as_str() {
        Some("noEnd") => String::new(),
        Some("numbered") => {
            let n = r["numberOfOccurrences"]
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or("range.numberOfOccurrences must be positive")?;
            format!(";COUNT={n}")
        }
        Some("endDate") => {
            let e = r["endDate"]
                .as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or("range.endDate is required")?;
            if e < start_date {
                return Err("range.endDate is before range.startDate".into());
            }
            let last = e.and_hms_opt(23, 59, 59).unwrap_or_default();
            let until = resolve(tz, last).unwrap_or_else(|| last.and_utc());
            format!(";UNTIL={}", until.format("%Y%m%dT%H%M%SZ"))
        }
        _ => return Err("range.type is required".into()),
    };
    let rtz = rrule::Tz::Tz(tz);
    let dt_start = rtz.from_utc_datetime(&start.at.naive_utc());
    let set = RRuleSet::new(dt_start)
        .set_from_string(&format!("RRULE:{rule}{end}"))
        .map_err(|e| format!("the recurrence cannot be expanded: {e}"))?;
    Ok(Expansion { set, tz })
}

impl Expansion {
    /// Occurrence starts from the series start on, while `keep` says go on
    /// (it sees each start), at most `cap`.
    pub(crate) fn starts(&self, cap: usize, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        for dt in &self.set {
            let at = dt.with_timezone(&Utc);
            if at >= until || out.len() >= cap {
                break;
            }
            out.push(at);
        }
        out
    }

    /// The local date of an occurrence (the occurrence's name).
    pub(crate) fn date_of(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }
}

/// `yyyy-MM-dd`.
pub(crate) fn date_str(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_rendering_keeps_the_second_of_two_equal_times() {
        let ny = chrono_tz::America::New_York;
        // 2026-11-01 05:30Z is the first 01:30 (EDT), 06:30Z the second (EST).
        let first = DateTime::from_timestamp(1_793_511_000, 0).unwrap();
        let second = DateTime::from_timestamp(1_793_514_600, 0).unwrap();
        let tz = "Eastern Standard Time";
        assert_eq!(render_exact(first, ny, tz), render(first, ny, tz));
        let v = render_exact(second, ny, tz);
        assert_eq!(v["timeZone"], "UTC");
        assert_eq!(when(&v).unwrap().at, second);
    }

    #[test]
    fn windows_zones_resolve_and_iana_names_do_not() {
        assert_eq!(zone("China Standard Time"), Some(chrono_tz::Asia::Shanghai));
        assert_eq!(
            zone("Pacific Standard Time"),
            Some(chrono_tz::America::Los_Angeles)
        );
        assert_eq!(zone("UTC"), Some(chrono_tz::UTC));
        assert_eq!(zone("Asia/Shanghai"), None);
        assert_eq!(zone("Greenwich Mean Time"), None);
    }

    #[test]
    fn weekly_series_expand_in_their_zone_across_dst() {
        let start =
            when(&json!({"dateTime": "2026-03-02T09:00:00", "timeZone": "Pacific Standard Time"}))
                .unwrap();
        let rec = json!({
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday"},
            "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 3}
        });
        let x = expansion(&rec, &start).unwrap();
        let s = x.starts(10, DateTime::<Utc>::MAX_UTC);
        let hours: Vec<u32> = s.iter().map(chrono::Timelike::hour).collect();
        // 09:00 PST = 17:00Z; from 8 March on 09:00 PDT = 16:00Z.
        assert_eq!(hours, [17, 16, 16]);
        assert_eq!(date_str(x.date_of(s[2])), "2026-03-16");
    }

    #[test]
    fn day_31_lands_on_short_months_last_day() {
        let start = when(&json!({"dateTime": "2026-01-31T10:00:00", "timeZone": "UTC"})).unwrap();
        let rec = json!({
            "pattern": {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
            "range": {"type": "numbered", "startDate": "2026-01-31", "numberOfOccurrences": 3}
        });
        let x = expansion(&rec, &start).unwrap();
        let d: Vec<String> = x
            .starts(5, DateTime::<Utc>::MAX_UTC)
            .into_iter()
            .map(|t| date_str(x.date_of(t)))
            .collect();
        assert_eq!(d, ["2026-01-31", "2026-02-28", "2026-03-31"]);
    }

    #[test]
    fn start_date_must_match_and_end_date_is_inclusive() {
        let start =
            when(&json!({"dateTime": "2026-05-01T23:30:00", "timeZone": "Tokyo Standard Time"}))
                .unwrap();
        let bad = json!({"pattern": {"type": "daily", "interval": 1}, "range": {"type": "noEnd", "startDate": "2026-04-30"}});
        assert!(expansion(&bad, &start).is_err());
        let rec = json!({"pattern": {"type": "daily", "interval": 1}, "range": {"type": "endDate", "startDate": "2026-05-01", "endDate": "2026-05-03"}});
        let x = expansion(&rec, &start).unwrap();
        assert_eq!(x.starts(10, DateTime::<Utc>::MAX_UTC).len(), 3);
    }
}
