//! `EventDateTime` (`{date}` or `{dateTime, timeZone}`): parsing, the
//! canonical stored form and rendering in the answer's time zone.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::error::ApiError;

/// A start, end or original start: an all-day date or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventTime {
    /// All-day (`date`, `yyyy-mm-dd`; an end date is exclusive).
    Date(NaiveDate),
    /// Timed (`dateTime`), as an instant.
    DateTime(DateTime<Utc>),
}

impl EventTime {
    /// The date of an all-day time.
    pub fn date(&self) -> Option<NaiveDate> {
        match self {
            Self::Date(d) => Some(*d),
            Self::DateTime(_) => None,
        }
    }

    /// The instant of a timed time.
    pub fn date_time(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Date(_) => None,
            Self::DateTime(t) => Some(*t),
        }
    }

    pub fn is_all_day(&self) -> bool {
        matches!(self, Self::Date(_))
    }

    /// The instant this time stands for; an all-day date starts at midnight
    /// in `zone` (Google evaluates all-day bounds in the calendar's zone).
    pub fn instant(&self, zone: Tz) -> DateTime<Utc> {
        match self {
            Self::DateTime(t) => *t,
            Self::Date(d) => local_to_utc(zone, d.and_hms_opt(0, 0, 0).unwrap_or_default()),
        }
    }

    /// The instance-id suffix: `YYYYMMDDTHHMMSSZ` (UTC) or `YYYYMMDD`.
    pub fn id_suffix(&self) -> String {
        match self {
            Self::Date(d) => d.format("%Y%m%d").to_string(),
            Self::DateTime(t) => t.format("%Y%m%dT%H%M%SZ").to_string(),
        }
    }

    /// Parses an instance-id suffix.
    pub(crate) fn from_id_suffix(s: &str) -> Option<Self> {
        match s.len() {
            8 => NaiveDate::parse_from_str(s, "%Y%m%d").ok().map(Self::Date),
            16 => NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
                .ok()
                .map(|n| Self::DateTime(n.and_utc())),
            _ => None,
        }
    }

    /// Canonical stored JSON: `{date}` or `{dateTime}` in UTC, plus `timeZone`.
    pub(crate) fn to_json(self, time_zone: Option<&str>) -> Value {
        let mut m = Map::new();
        match self {
            Self::Date(d) => {
                m.insert("date".into(), json!(d.format("%Y-%m-%d").to_string()));
            }
            Self::DateTime(t) => {
                m.insert(
                    "dateTime".into(),
                    json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
            }
        }
        if let Some(z) = time_zone {
            m.insert("timeZone".into(), json!(z));
        }
        Value::Object(m)
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Self::DateTime(t) => write!(f, "{}", t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        }
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json(None).serialize(s)
    }
}

/// Local wall time in `zone` to UTC: the earlier of an ambiguous pair, and
/// for a time inside a spring-forward gap the instant one hour later.
pub(crate) fn local_to_utc(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    if let Some(t) = zone.from_local_datetime(&local).earliest() {
        return t.with_timezone(&Utc);
    }
    let shifted = local + chrono::Duration::hours(1);
    zone.from_local_datetime(&shifted)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| local.and_utc())
}

/// Parses an IANA zone name.
pub(crate) fn parse_zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// Parses an RFC 3339 timestamp with a mandatory offset (query parameters).
pub(crate) fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Which field is being parsed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Start,
    End,
}

impl Which {
    fn word(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::End => "end",
        }
    }
}

/// A parsed `EventDateTime`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) time: EventTime,
    pub(crate) time_zone: Option<String>,
}

fn non_null<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

/// Parses an `EventDateTime` object as the API does.
pub(crate) fn parse_event_datetime(v: &Value, which: Which) -> Result<Parsed, ApiError> {
    let word = which.word();
    let Some(m) = v.as_object() else {
        return Err(ApiError::invalid(format!("Invalid {word} time.")));
    };
    let time_zone = match non_null(m, "timeZone") {
        None => None,
        Some(Value::String(z)) if parse_zone(z).is_some() => Some(z.clone()),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "Invalid time zone definition for {word} time."
            )));
        }
    };
    let zone = time_zone.as_deref().and_then(parse_zone);
    let time = match (non_null(m, "date"), non_null(m, "dateTime")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(format!(
                "Invalid {word} time: date and dateTime are mutually exclusive."
            )));
        }
        (None, None) => {
            return Err(ApiError::required(format!("Missing {word} time.")));
        }
        (Some(d), None) => {
            let d = d
                .as_str()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .ok_or_else(|| ApiError::invalid(format!("Invalid {word} time.")))?;
            EventTime::Date(d)
        }
        (None, Some(dt)) => {
            let s = dt
                .as_str()
                .ok_or_else(|| ApiError::invalid(format!("Invalid {word} time.")))?;
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                EventTime::DateTime(truncate(t.with_timezone(&Utc)))
            } else {
                let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .map_err(|_| ApiError::invalid(format!("Invalid {word} time.")))?;
                let zone = zone.ok_or_else(|| {
                    ApiError::required(format!("Missing time zone definition for {word} time."))
                })?;
                EventTime::DateTime(truncate(local_to_utc(zone, naive)))
            }
        }
    };
    Ok(Parsed { time, time_zone })
}

/// Drops sub-second precision (Google keeps whole seconds).
fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Renders a stored `EventDateTime` for an answer: `dateTime` in the offset
/// of `zone` (`Z` when that offset is zero), other fields unchanged.
pub(crate) fn render(stored: &Value, zone: Tz) -> Value {
    let Some(m) = stored.as_object() else {
        return stored.clone();
    };
    let mut out = m.clone();
    if let Some(t) = m
        .get("dateTime")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
    {
        out.insert("dateTime".into(), json!(format_in(t, zone)));
    }
    Value::Object(out)
}

/// RFC 3339 in `zone`'s offset, `Z` for UTC.
pub(crate) fn format_in(t: DateTime<Utc>, zone: Tz) -> String {
    let local = t.with_timezone(&zone).fixed_offset();
    if local.offset().local_minus_utc() == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        local.to_rfc3339_opts(SecondsFormat::Secs, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_shapes() {
        let p = parse_event_datetime(&json!({"date": "2024-03-10"}), Which::Start).unwrap();
        assert_eq!(
            p.time,
            EventTime::Date(NaiveDate::from_ymd_opt(2024, 3, 10).unwrap())
        );
        let p = parse_event_datetime(
            &json!({"dateTime": "2024-03-10T09:00:00-04:00", "timeZone": "America/New_York"}),
            Which::Start,
        )
        .unwrap();
        assert_eq!(p.time.id_suffix(), "20240310T130000Z");
        assert_eq!(p.time_zone.as_deref(), Some("America/New_York"));
        // No offset: the zone decides (EDT after 2024-03-10 02:00).
        let p = parse_event_datetime(
            &json!({"dateTime": "2024-03-11T09:00:00", "timeZone": "America/New_York"}),
            Which::Start,
        )
        .unwrap();
        assert_eq!(p.time.id_suffix(), "20240311T130000Z");
    }

    #[test]
    fn rejections() {
        let e = parse_event_datetime(&json!({"dateTime": "2024-03-11T09:00:00"}), Which::End)
            .unwrap_err();
        assert_eq!(e.reason, "required");
        let e = parse_event_datetime(
            &json!({"dateTime": "2024-03-11T09:00:00Z", "timeZone": "Mars/Olympus"}),
            Which::Start,
        )
        .unwrap_err();
        assert_eq!(e.message, "Invalid time zone definition for start time.");
        assert!(
            parse_event_datetime(
                &json!({"date": "2024-03-11", "dateTime": "2024-03-11T09:00:00Z"}),
                Which::Start
            )
            .is_err()
        );
        assert_eq!(
            parse_event_datetime(&json!({}), Which::Start)
                .unwrap_err()
                .reason,
            "required"
        );
    }

    #[test]
    fn renders_in_zone_and_round_trips_suffixes() {
        let stored = EventTime::DateTime(parse_rfc3339("2024-07-01T13:00:00Z").unwrap())
            .to_json(Some("America/New_York"));
        let r = render(&stored, chrono_tz::America::New_York);
        assert_eq!(r["dateTime"], "2024-07-01T09:00:00-04:00");
        assert_eq!(
            render(&stored, chrono_tz::UTC)["dateTime"],
            "2024-07-01T13:00:00Z"
        );
        for s in ["20240310", "20240310T130000Z"] {
            assert_eq!(EventTime::from_id_suffix(s).unwrap().id_suffix(), s);
        }
        assert!(EventTime::from_id_suffix("2024031").is_none());
    }
}
