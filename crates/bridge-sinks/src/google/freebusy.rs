//! `POST /calendar/v3/freeBusy`: the busy periods of one calendar (the
//! room calendars of meeting rooms, README "Meeting rooms").
//!
//! A calendar Google answers with `errors` (e.g. `notFound`: the calendar
//! does not exist or is not shared with the caller) is an error, never an
//! empty list: a room whose busy times cannot be read must not look free.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::client::GoogleClient;
use super::error::GoogleError;
use super::request::{ApiRequest, Method};

fn rfc3339(at: i64) -> Result<String, GoogleError> {
    DateTime::<Utc>::from_timestamp(at, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .ok_or_else(|| GoogleError::Decode(format!("time {at} is out of range")))
}

fn instant(v: &Value, what: &str) -> Result<i64, GoogleError> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp())
        .ok_or_else(|| GoogleError::Decode(format!("freeBusy: {what} {v} is not an RFC 3339 time")))
}

/// The busy periods `(start, end)` (Unix seconds) of `calendar_id` over
/// `[from, to)`.
///
/// # Errors
/// The call failed, or Google reports an error for the calendar.
pub async fn busy(
    client: &GoogleClient,
    calendar_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, i64)>, GoogleError> {
    let mut req = ApiRequest::new(Method::Post, "/freeBusy");
    req.body = Some(json!({
        "timeMin": rfc3339(from)?,
        "timeMax": rfc3339(to)?,
        "timeZone": "UTC",
        "items": [{"id": calendar_id}],
    }));
    let resp = client.execute(req).await?;
    parse(&resp.body, calendar_id)
}

/// The busy periods of `calendar_id` in a freeBusy answer.
///
/// # Errors
/// The calendar is missing from the answer or has errors.
pub fn parse(body: &Value, calendar_id: &str) -> Result<Vec<(i64, i64)>, GoogleError> {
    let cal = body
        .get("calendars")
        .and_then(|c| c.get(calendar_id))
        .ok_or_else(|| {
            GoogleError::Decode(format!(
                "freeBusy answered nothing for calendar {calendar_id:?}"
            ))
        })?;
    if let Some(errors) = cal.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        let reasons: Vec<&str> = errors
            .iter()
            .filter_map(|e| e.get("reason").and_then(Value::as_str))
            .collect();
        return Err(GoogleError::Decode(format!(
            "freeBusy cannot read calendar {calendar_id:?}: {}",
            reasons.join(", ")
        )));
    }
    cal.get("busy")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| Ok((instant(&p["start"], "start")?, instant(&p["end"], "end")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_periods_and_calendar_errors() {
        let ok = json!({"kind": "calendar#freeBusy", "calendars": {"c1": {"busy": [
            {"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T11:00:00+01:00"}
        ]}}});
        assert_eq!(
            parse(&ok, "c1").unwrap(),
            vec![(1_767_261_600, 1_767_261_600)]
        );
        let err = json!({"calendars": {"c1": {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}}});
        assert!(
            parse(&err, "c1")
                .unwrap_err()
                .to_string()
                .contains("notFound")
        );
        assert!(parse(&ok, "c2").is_err(), "a calendar left out is not free");
    }
}
