//! Normalization of Feishu's bare RRULE bodies.
//!
//! Feishu sends the rule without the `RRULE:` prefix (`FREQ=DAILY;INTERVAL=1`).
//! We validate the parts, upper-case them, put FREQ first and rewrite UNTIL in
//! the value type RFC 5545 §3.3.10 demands for the series' DTSTART: a DATE for
//! all-day series, UTC (`Z`) for timed ones. COUNT is kept as is.

use chrono::{NaiveDate, NaiveDateTime, TimeZone};

use crate::model::{EventTime, ical_date, ical_utc, utc_date};

const FREQS: [&str; 7] = [
    "SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY",
];
const WEEKDAYS: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];

/// A normalized rule and what was changed to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub rule: String,
    pub warnings: Vec<String>,
    /// The last instant the rule can reach, if bounded (UNTIL, or an upper
    /// bound derived from COUNT). `None` for open-ended rules.
    pub bound: Option<i64>,
}

enum Until {
    Date(NaiveDate),
    Local(NaiveDateTime),
    Utc(i64),
}

fn parse_until(v: &str) -> Option<Until> {
    if let Some(body) = v.strip_suffix('Z') {
        NaiveDateTime::parse_from_str(body, "%Y%m%dT%H%M%S")
            .ok()
            .map(|dt| Until::Utc(dt.and_utc().timestamp()))
    } else if v.len() == 8 {
        NaiveDate::parse_from_str(v, "%Y%m%d").ok().map(Until::Date)
    } else {
        NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
            .ok()
            .map(Until::Local)
    }
}

fn is_int_list(v: &str, signed: bool) -> bool {
    !v.is_empty()
        && v.split(',').all(|n| {
            let n = if signed {
                n.strip_prefix(['+', '-']).unwrap_or(n)
            } else {
                n
            };
            !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit())
        })
}

fn is_weekday_list(v: &str) -> bool {
    !v.is_empty()
        && v.split(',').all(|d| {
            // `get`, not slicing: the last two bytes may split a character.
            let split = d.len().checked_sub(2).filter(|&i| d.is_char_boundary(i));
            split.is_some_and(|i| WEEKDAYS.contains(&&d[i..]) && is_int_list_or_empty(&d[..i]))
        })
}

fn is_int_list_or_empty(v: &str) -> bool {
    v.is_empty() || is_int_list(v, true)
}

fn positive(v: &str) -> Option<u32> {
    v.parse::<u32>().ok().filter(|n| *n > 0)
}

/// Wall-clock `local` read in the zone of `start` (UTC when there is none).
fn local_to_utc(local: NaiveDateTime, start: &EventTime) -> i64 {
    match start {
        EventTime::Zoned { tz, .. } => tz
            .from_local_datetime(&local)
            .earliest()
            .or_else(|| {
                // In a DST gap: the instant one hour later exists.
                tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map_or_else(|| local.and_utc().timestamp(), |d| d.timestamp()),
        _ => local.and_utc().timestamp(),
    }
}

/// Normalizes `rule` for a series starting at `start`; an error says why the
/// rule cannot be used at all.
pub fn normalize(rule: &str, start: &EventTime) -> Result<Normalized, String> {
    let body = rule.trim();
    // `get`, not slicing: the sixth byte may be inside a character.
    let body = match body.get(..6) {
        Some(prefix) if prefix.eq_ignore_ascii_case("RRULE:") => &body[6..],
        _ => body,
    };
    let mut warnings = Vec::new();
    let mut freq = None;
    let mut parts: Vec<(String, String)> = Vec::new();
    for part in body.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("recurrence part {part:?} is not NAME=VALUE"))?;
        let name = name.trim().to_ascii_uppercase();
        let value = value.trim().to_ascii_uppercase();
        if parts.iter().any(|(n, _)| *n == name) || (name == "FREQ" && freq.is_some()) {
            return Err(format!("recurrence names {name} twice"));
        }
        let ok = match name.as_str() {
            "FREQ" => {
                if !FREQS.contains(&value.as_str()) {
                    return Err(format!("recurrence FREQ={value} is not a frequency"));
                }
                freq = Some(value);
                continue;
            }
            "UNTIL" => parse_until(&value).is_some(),
            "COUNT" | "INTERVAL" => positive(&value).is_some(),
            "BYSECOND" | "BYMINUTE" | "BYHOUR" | "BYMONTH" => is_int_list(&value, false),
            "BYMONTHDAY" | "BYYEARDAY" | "BYWEEKNO" | "BYSETPOS" => is_int_list(&value, true),
            "BYDAY" => is_weekday_list(&value),
            "WKST" => WEEKDAYS.contains(&value.as_str()),
            _ => {
                warnings.push(format!("recurrence part {name} is not RFC 5545; dropped"));
                continue;
            }
        };
        if !ok {
            return Err(format!("recurrence {name}={value} is malformed"));
        }
        parts.push((name, value));
    }
    let freq = freq.ok_or_else(|| format!("recurrence {rule:?} has no FREQ"))?;

    let has_count = parts.iter().any(|(n, _)| n == "COUNT");
    if has_count && parts.iter().any(|(n, _)| n == "UNTIL") {
        warnings.push("recurrence has both COUNT and UNTIL; kept COUNT".to_owned());
        parts.retain(|(n, _)| n != "UNTIL");
    }

    let mut bound = None;
    for (name, value) in parts.iter_mut() {
        if name != "UNTIL" {
            continue;
        }
        let until = parse_until(value).ok_or_else(|| format!("UNTIL={value} is malformed"))?;
        match start {
            EventTime::Date(_) => {
                let date = match until {
                    Until::Date(d) => d,
                    Until::Local(l) => l.date(),
                    Until::Utc(at) => utc_date(at),
                };
                *value = ical_date(date);
                bound = Some(EventTime::Date(date).instant() + 86_400);
            }
            _ => {
                let at = match until {
                    Until::Utc(at) => at,
                    Until::Local(l) => local_to_utc(l, start),
                    Until::Date(d) => {
                        local_to_utc(d.and_hms_opt(23, 59, 59).unwrap_or_default(), start)
                    }
                };
                *value = ical_utc(at);
                bound = Some(at);
            }
        }
    }
    if let Some((_, count)) = parts.iter().find(|(n, _)| n == "COUNT") {
        let count = i64::from(positive(count).unwrap_or(1));
        let interval = parts
            .iter()
            .find(|(n, _)| n == "INTERVAL")
            .and_then(|(_, v)| positive(v))
            .map_or(1, i64::from);
        let unit: i64 = match freq.as_str() {
            "SECONDLY" => 1,
            "MINUTELY" => 60,
            "HOURLY" => 3_600,
            "DAILY" => 86_400,
            "WEEKLY" => 7 * 86_400,
            "MONTHLY" => 31 * 86_400,
            _ => 366 * 86_400,
        };
        // COUNT occurrences never span more than COUNT periods.
        bound = Some(
            start
                .instant()
                .saturating_add(count.saturating_mul(interval).saturating_mul(unit)),
        );
    }

    let mut rule = format!("FREQ={freq}");
    for (name, value) in &parts {
        rule.push(';');
        rule.push_str(name);
        rule.push('=');
        rule.push_str(value);
    }
    Ok(Normalized {
        rule,
        warnings,
        bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;

    fn ny(at: i64) -> EventTime {
        EventTime::Zoned {
            at,
            tz: "America/New_York".parse::<Tz>().unwrap(),
        }
    }

    #[test]
    fn keeps_utc_until_and_puts_freq_first() {
        let n = normalize("INTERVAL=1;FREQ=DAILY;UNTIL=20220531T155959Z", &ny(0)).unwrap();
        assert_eq!(n.rule, "FREQ=DAILY;INTERVAL=1;UNTIL=20220531T155959Z");
        assert!(n.warnings.is_empty());
    }

    #[test]
    fn floating_and_date_until_become_utc_in_the_series_zone() {
        let n = normalize("FREQ=WEEKLY;BYDAY=mo;UNTIL=20250310T090000", &ny(0)).unwrap();
        assert_eq!(n.rule, "FREQ=WEEKLY;BYDAY=MO;UNTIL=20250310T130000Z");
        let n = normalize("RRULE:FREQ=WEEKLY;UNTIL=20250101", &ny(0)).unwrap();
        assert_eq!(n.rule, "FREQ=WEEKLY;UNTIL=20250102T045959Z");
    }

    #[test]
    fn all_day_until_becomes_a_date() {
        let start = EventTime::Date(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
        let n = normalize("FREQ=DAILY;UNTIL=20250110T155959Z", &start).unwrap();
        assert_eq!(n.rule, "FREQ=DAILY;UNTIL=20250110");
    }

    #[test]
    fn count_is_kept_and_wins_over_until() {
        let n = normalize("FREQ=MONTHLY;COUNT=4", &ny(0)).unwrap();
        assert_eq!(n.rule, "FREQ=MONTHLY;COUNT=4");
        let n = normalize("FREQ=DAILY;COUNT=2;UNTIL=20250101T000000Z", &ny(0)).unwrap();
        assert_eq!(n.rule, "FREQ=DAILY;COUNT=2");
        assert_eq!(n.warnings.len(), 1);
    }

    #[test]
    fn rejects_what_cannot_be_a_rule() {
        for bad in [
            "",
            "INTERVAL=2",
            "FREQ=SOMETIMES",
            "FREQ=DAILY;COUNT=0",
            "FREQ=DAILY;BYDAY=XX",
            "FREQ=DAILY;FREQ=WEEKLY",
            "FREQ=DAILY;UNTIL=tomorrow",
            "garbage",
        ] {
            assert!(normalize(bad, &ny(0)).is_err(), "{bad}");
        }
        let n = normalize("FREQ=WEEKLY;BYDAY=1MO,-1FR,TU;X-FOO=1", &ny(0)).unwrap();
        assert_eq!(n.rule, "FREQ=WEEKLY;BYDAY=1MO,-1FR,TU");
        assert_eq!(n.warnings.len(), 1);
    }
}
