//! Recurrence: the `recurrence[]` lines of a master (`RRULE:`, `EXRULE:`,
//! `RDATE…`, `EXDATE…`) validated and expanded with the `rrule` crate in the
//! event's `start.timeZone` (DST-correct); all-day series are evaluated on
//! dates.
//!
//! The lines are only *normalised* before the crate sees them, never expanded
//! by hand: `UNTIL` is rewritten to the UTC form the crate requires for a
//! zoned DTSTART (a bare date means "through the end of that day"), and
//! `RDATE`/`EXDATE` values without a zone get the series' zone (a floating
//! value would otherwise be read in the machine's local zone). An `EXDATE`
//! with `VALUE=DATE` on a timed series excludes the occurrence starting on
//! that local date (at the series' time of day).

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use rrule::RRuleSet;

use super::time::{EventTime, local_to_utc};

/// Safety valve for pathological rules (e.g. `FREQ=SECONDLY`).
const MAX_STEPS: usize = 200_000;

/// Why a recurrence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecurError {
    #[error("recurrence line {0:?} is not RRULE, EXRULE, RDATE or EXDATE")]
    Property(String),
    #[error("recurrence line {0:?} has no value")]
    Syntax(String),
    #[error("unknown time zone {0:?}")]
    Zone(String),
    #[error("unsupported value {0:?}")]
    Value(String),
    #[error("COUNT and UNTIL must not both appear in {0:?}")]
    CountAndUntil(String),
    #[error("{0}")]
    Rule(String),
}

/// Shape of the occurrences.
#[derive(Debug, Clone, Copy)]
enum Kind {
    AllDay { days: i64 },
    Timed { duration: Duration },
}

/// A parsed, expandable series.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    set: RRuleSet,
    kind: Kind,
    /// `(expanded from, start)` when `start` is the later of two equal
    /// wall-clock times (see [`Series::parse`]).
    first: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// One occurrence: its original start (the instance id) and its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Occurrence {
    pub(crate) original: EventTime,
    pub(crate) start: EventTime,
    pub(crate) end: EventTime,
}

impl Occurrence {
    /// `[start, end)` as instants (all-day dates at midnight in `zone`).
    pub(crate) fn span(&self, zone: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.start.instant(zone), self.end.instant(zone))
    }
}

/// True when `[start, end)` meets the listing window: `end > from` and
/// `start < to` (both exclusive, sinks-api.md A.6); a zero-length event
/// counts when it starts inside.
pub(crate) fn overlaps(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> bool {
    let after_from = from.is_none_or(|f| end > f || (end == start && start >= f));
    let before_to = to.is_none_or(|t| start < t);
    after_from && before_to
}

fn rule_tz(zone: Tz) -> rrule::Tz {
    rrule::Tz::Tz(zone)
}

/// Rewrites `UNTIL` to UTC.
fn normalize_rule(value: &str, zone: Tz, all_day: bool) -> Result<String, RecurError> {
    let mut parts = Vec::new();
    let mut count = false;
    let mut until = false;
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") => {
                until = true;
                parts.push(format!("UNTIL={}", until_utc(v.trim(), zone, all_day)?));
            }
            Some((k, _)) if k.eq_ignore_ascii_case("COUNT") => {
                count = true;
                parts.push(part.to_owned());
            }
            _ => parts.push(part.to_owned()),
        }
    }
    if count && until {
        return Err(RecurError::CountAndUntil(value.to_owned()));
    }
    Ok(parts.join(";"))
}

fn until_utc(v: &str, zone: Tz, all_day: bool) -> Result<String, RecurError> {
    if v.ends_with(['Z', 'z']) {
        return Ok(v.to_uppercase());
    }
    let local = if v.len() == 8 {
        let d =
            NaiveDate::parse_from_str(v, "%Y%m%d").map_err(|_| RecurError::Value(v.to_owned()))?;
        if all_day {
            d.and_hms_opt(0, 0, 0)
        } else {
            d.and_hms_opt(23, 59, 59)
        }
    } else {
        NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").ok()
    }
    .ok_or_else(|| RecurError::Value(v.to_owned()))?;
    let zone = if all_day { chrono_tz::UTC } else { zone };
    Ok(local_to_utc(zone, local)
        .format("%Y%m%dT%H%M%SZ")
        .to_string())
}

/// Rewrites an `RDATE`/`EXDATE` line into one line per value that the crate
/// reads unambiguously.
fn normalize_dates(
    name: &str,
    params: &str,
    values: &str,
    zone: Tz,
    all_day: bool,
    start_local: NaiveDateTime,
    out: &mut Vec<String>,
) -> Result<(), RecurError> {
    let mut tzid: Option<Tz> = None;
    for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| RecurError::Value(p.to_owned()))?;
        if k.eq_ignore_ascii_case("TZID") {
            tzid = Some(
                v.trim_matches('"')
                    .parse::<Tz>()
                    .map_err(|_| RecurError::Zone(v.to_owned()))?,
            );
        } else if k.eq_ignore_ascii_case("VALUE") {
            if !(v.eq_ignore_ascii_case("DATE") || v.eq_ignore_ascii_case("DATE-TIME")) {
                return Err(RecurError::Value(p.to_owned()));
            }
        } else {
            return Err(RecurError::Value(p.to_owned()));
        }
    }
    for v in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let date_only = v.len() == 8;
        if all_day {
            let d = NaiveDate::parse_from_str(&v[..v.len().min(8)], "%Y%m%d")
                .map_err(|_| RecurError::Value(v.to_owned()))?;
            out.push(format!("{name};TZID=UTC:{}T000000", d.format("%Y%m%d")));
        } else if date_only {
            let d = NaiveDate::parse_from_str(v, "%Y%m%d")
                .map_err(|_| RecurError::Value(v.to_owned()))?;
            let local = d.and_time(start_local.time());
            out.push(format!(
                "{name};TZID={}:{}",
                zone.name(),
                local.format("%Y%m%dT%H%M%S")
            ));
        } else if v.ends_with(['Z', 'z']) {
            NaiveDateTime::parse_from_str(&v[..v.len() - 1], "%Y%m%dT%H%M%S")
                .map_err(|_| RecurError::Value(v.to_owned()))?;
            out.push(format!("{name}:{}", v.to_uppercase()));
        } else {
            let naive = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
                .map_err(|_| RecurError::Value(v.to_owned()))?;
            let z = tzid.unwrap_or(zone);
            // Resolve the wall time ourselves so gaps/overlaps cannot fail.
            let utc = local_to_utc(z, naive);
            out.push(format!("{name}:{}", utc.format("%Y%m%dT%H%M%SZ")));
        }
    }
    Ok(())
}

impl Series {
    /// Parses a master's recurrence. `zone` is the zone of `start.timeZone`
    /// (ignored for all-day series).
    pub(crate) fn parse(
        start: EventTime,
        end: EventTime,
        zone: Tz,
        lines: &[String],
    ) -> Result<Self, RecurError> {
        let mut first = None;
        let (dt_start, kind, all_day) = match (start, end) {
            (EventTime::Date(s), EventTime::Date(e)) => {
                let dt = rule_tz(chrono_tz::UTC)
                    .from_utc_datetime(&s.and_hms_opt(0, 0, 0).unwrap_or_default());
                (
                    dt,
                    Kind::AllDay {
                        days: (e - s).num_days().max(1),
                    },
                    true,
                )
            }
            (EventTime::DateTime(s), EventTime::DateTime(e)) => {
                // `start` is the first instance (Google: "for a recurring
                // event, this is the start time of the first instance";
                // RFC 5545: DTSTART is the first instance and COUNT
                // includes it). When it is the later of two equal
                // wall-clock times, the rrule crate (which generates by
                // wall-clock time, a repeated one resolved to its earlier
                // instant) would skip it as earlier than DTSTART and count
                // on from the next day. So the rule is expanded from the
                // earlier instant of that wall-clock time, and its first
                // occurrence is put back at `start`.
                let local = rule_tz(zone)
                    .from_utc_datetime(&s.naive_utc())
                    .naive_local();
                let earlier = local_to_utc(zone, local);
                first = (earlier != s).then_some((earlier, s));
                (
                    rule_tz(zone).from_utc_datetime(&earlier.naive_utc()),
                    Kind::Timed { duration: e - s },
                    false,
                )
            }
            _ => return Err(RecurError::Rule("start and end differ in kind".into())),
        };
        let start_local = dt_start.naive_local();
        let mut normalized = Vec::new();
        for line in lines {
            let line = line.trim();
            let (head, value) = line
                .split_once(':')
                .ok_or_else(|| RecurError::Syntax(line.to_owned()))?;
            let (name, params) = head.split_once(';').unwrap_or((head, ""));
            let name = name.trim().to_ascii_uppercase();
            match name.as_str() {
                "RRULE" | "EXRULE" => {
                    if !params.is_empty() {
                        return Err(RecurError::Value(params.to_owned()));
                    }
                    normalized.push(format!("{name}:{}", normalize_rule(value, zone, all_day)?));
                }
                "RDATE" | "EXDATE" => normalize_dates(
                    &name,
                    params,
                    value,
                    zone,
                    all_day,
                    start_local,
                    &mut normalized,
                )?,
                _ => return Err(RecurError::Property(line.to_owned())),
            }
        }
        let set = RRuleSet::new(dt_start)
            .set_from_string(&normalized.join("\n"))
            .map_err(|e| RecurError::Rule(e.to_string()))?;
        Ok(Self { set, kind, first })
    }

    fn occurrence(&self, dt: DateTime<rrule::Tz>) -> Occurrence {
        match self.kind {
            Kind::AllDay { days } => {
                let d = dt.naive_utc().date();
                Occurrence {
                    original: EventTime::Date(d),
                    start: EventTime::Date(d),
                    end: EventTime::Date(d + Duration::days(days)),
                }
            }
            Kind::Timed { duration } => {
                let mut s = dt.with_timezone(&Utc);
                if let Some((earlier, start)) = self.first
                    && s == earlier
                {
                    s = start;
                }
                Occurrence {
                    original: EventTime::DateTime(s),
                    start: EventTime::DateTime(s),
                    end: EventTime::DateTime(s + duration),
                }
            }
        }
    }

    /// Occurrences meeting the window `(from, to)` (see [`overlaps`]), in
    /// order, at most `cap`. All-day dates are placed in `zone`.
    pub(crate) fn between(
        &self,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
        zone: Tz,
        cap: usize,
    ) -> Vec<Occurrence> {
        let mut out = Vec::new();
        for (steps, dt) in self.set.clone().into_iter().enumerate() {
            if steps >= MAX_STEPS || out.len() >= cap {
                break;
            }
            let occ = self.occurrence(dt);
            let (s, e) = occ.span(zone);
            if s >= to {
                break;
            }
            if overlaps(s, e, from, Some(to)) {
                out.push(occ);
            }
        }
        out
    }

    /// True when `original` is an occurrence of this series.
    pub(crate) fn contains(&self, original: &EventTime) -> bool {
        for (steps, dt) in self.set.clone().into_iter().enumerate() {
            if steps >= MAX_STEPS {
                break;
            }
            let occ = self.occurrence(dt);
            if occ.original == *original {
                return true;
            }
            let past = match (occ.original, original) {
                (EventTime::Date(a), EventTime::Date(b)) => a > *b,
                (EventTime::DateTime(a), EventTime::DateTime(b)) => a > *b,
                _ => true,
            };
            if past {
                break;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::time::parse_rfc3339;

    fn at(s: &str) -> EventTime {
        EventTime::DateTime(parse_rfc3339(s).unwrap())
    }

    fn ny() -> Tz {
        chrono_tz::America::New_York
    }

    fn suffixes(occ: &[Occurrence]) -> Vec<String> {
        occ.iter().map(|o| o.original.id_suffix()).collect()
    }

    #[test]
    fn daily_keeps_local_time_across_dst() {
        // 09:00 EST on 2024-03-08; DST starts 2024-03-10.
        let s = Series::parse(
            at("2024-03-08T14:00:00Z"),
            at("2024-03-08T15:00:00Z"),
            ny(),
            &["RRULE:FREQ=DAILY;COUNT=4".into()],
        )
        .unwrap();
        let occ = s.between(
            None,
            parse_rfc3339("2030-01-01T00:00:00Z").unwrap(),
            ny(),
            10,
        );
        assert_eq!(
            suffixes(&occ),
            [
                "20240308T140000Z",
                "20240309T140000Z",
                "20240310T130000Z",
                "20240311T130000Z"
            ]
        );
        assert_eq!(occ[2].end, at("2024-03-10T14:00:00Z"));
        assert!(s.contains(&at("2024-03-10T13:00:00Z")));
        assert!(!s.contains(&at("2024-03-10T14:00:00Z")));
    }

    #[test]
    fn exdate_forms_and_rdate() {
        let lines = [
            "RRULE:FREQ=DAILY;UNTIL=20240312".to_owned(),
            "EXDATE;TZID=America/New_York:20240309T090000".to_owned(),
            "EXDATE;VALUE=DATE:20240310".to_owned(),
            "EXDATE:20240311T130000Z".to_owned(),
            "RDATE;TZID=America/New_York:20240320T090000".to_owned(),
        ];
        let s = Series::parse(
            at("2024-03-08T14:00:00Z"),
            at("2024-03-08T15:00:00Z"),
            ny(),
            &lines,
        )
        .unwrap();
        let occ = s.between(
            None,
            parse_rfc3339("2030-01-01T00:00:00Z").unwrap(),
            ny(),
            10,
        );
        assert_eq!(
            suffixes(&occ),
            ["20240308T140000Z", "20240312T130000Z", "20240320T130000Z"]
        );
    }

    #[test]
    fn all_day_series_and_window() {
        let d = |s: &str| EventTime::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap());
        let s = Series::parse(
            d("2024-01-01"),
            d("2024-01-02"),
            chrono_tz::UTC,
            &[
                "RRULE:FREQ=WEEKLY;COUNT=5".into(),
                "EXDATE;VALUE=DATE:20240115".into(),
            ],
        )
        .unwrap();
        let occ = s.between(
            parse_rfc3339("2024-01-05T00:00:00Z"),
            parse_rfc3339("2024-02-01T00:00:00Z").unwrap(),
            chrono_tz::UTC,
            10,
        );
        assert_eq!(suffixes(&occ), ["20240108", "20240122", "20240129"]);
        assert_eq!(occ[0].end, d("2024-01-09"));
    }

    #[test]
    fn bad_lines() {
        let p = |l: &str| {
            Series::parse(
                at("2024-03-08T14:00:00Z"),
                at("2024-03-08T15:00:00Z"),
                ny(),
                &[l.to_owned()],
            )
        };
        assert!(matches!(p("FREQ=DAILY"), Err(RecurError::Syntax(_))));
        assert!(matches!(
            p("DTSTART:20240308T140000Z"),
            Err(RecurError::Property(_))
        ));
        assert!(p("RRULE:FREQ=SOMETIMES").is_err());
        assert!(matches!(
            p("RRULE:FREQ=DAILY;COUNT=2;UNTIL=20300101T000000Z"),
            Err(RecurError::CountAndUntil(_))
        ));
        assert!(
            p("EXDATE:20240309T140000Z").is_err(),
            "needs RRULE or RDATE"
        );
        assert!(p("RDATE;VALUE=PERIOD:20240309T140000Z/PT1H").is_err());
    }
}
