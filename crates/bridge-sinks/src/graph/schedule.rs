//! `POST /users/{id}/calendar/getSchedule`: the busy periods of one mailbox
//! (a room mailbox, README "Meeting rooms"), asked as the sink's own
//! mailbox.
//!
//! Every `scheduleItems` entry whose status is not `free` is busy
//! (tentative, out of office and working elsewhere hold the room too). A
//! schedule answered with `error` is an error, never "free".

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value, json};

use super::client::{GraphClient, Method, Request};
use super::error::GraphError;

fn utc(at: i64) -> Result<String, GraphError> {
    DateTime::<Utc>::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .ok_or_else(|| GraphError::Decode(format!("time {at} is out of range")))
}

/// A `dateTimeTimeZone` the request asked in UTC.
fn instant(v: &Value) -> Result<i64, GraphError> {
    let zone = v["timeZone"].as_str().unwrap_or("UTC");
    if zone != "UTC" {
        return Err(GraphError::Decode(format!(
            "getSchedule answered in {zone:?}, not UTC"
        )));
    }
    v["dateTime"]
        .as_str()
        .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok())
        .map(|t| t.and_utc().timestamp())
        .ok_or_else(|| GraphError::Decode(format!("getSchedule: {v} is not a date-time")))
}

/// The busy periods `(start, end)` of `mailbox` over `[from, to)`.
///
/// # Errors
/// The call failed, or Graph answered an error for the mailbox.
pub async fn busy(
    client: &GraphClient,
    mailbox: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, i64)>, GraphError> {
    let req = Request::new(
        Method::Post,
        format!("{}/calendar/getSchedule", client.user_path()),
    )
    .body(json!({
        "schedules": [mailbox],
        "startTime": {"dateTime": utc(from)?, "timeZone": "UTC"},
        "endTime": {"dateTime": utc(to)?, "timeZone": "UTC"},
        "availabilityViewInterval": 30,
    }));
    let resp = client.execute(&req).await?;
    parse(&resp.body, mailbox)
}

/// The busy periods of `mailbox` in a getSchedule answer.
///
/// # Errors
/// The mailbox is missing from the answer or answered with an error.
pub fn parse(body: &Value, mailbox: &str) -> Result<Vec<(i64, i64)>, GraphError> {
    let info = body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| {
            s["scheduleId"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(mailbox))
        })
        .ok_or_else(|| GraphError::Decode(format!("getSchedule answered nothing for {mailbox}")))?;
    if let Some(e) = info.get("error") {
        return Err(GraphError::Decode(format!(
            "getSchedule cannot read {mailbox}: {} {}",
            e["responseCode"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        )));
    }
    info["scheduleItems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["status"] != "free")
        .map(|i| Ok((instant(&i["start"])?, instant(&i["end"])?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_items_and_errors() {
        let ok = json!({"value": [{"scheduleId": "Room-A@example.com", "availabilityView": "020",
        "scheduleItems": [
            {"status": "busy", "start": {"dateTime": "2026-01-01T10:00:00.0000000", "timeZone": "UTC"},
             "end": {"dateTime": "2026-01-01T11:00:00.0000000", "timeZone": "UTC"}},
            {"status": "free", "start": {"dateTime": "2026-01-01T12:00:00.0000000", "timeZone": "UTC"},
             "end": {"dateTime": "2026-01-01T13:00:00.0000000", "timeZone": "UTC"}}
        ]}]});
        assert_eq!(
            parse(&ok, "room-a@example.com").unwrap(),
            vec![(1_767_261_600, 1_767_265_200)]
        );
        let err = json!({"value": [{"scheduleId": "x@example.com",
            "error": {"message": "not found", "responseCode": "ErrorMailRecipientNotFound"}}]});
        assert!(parse(&err, "x@example.com").is_err());
        assert!(parse(&ok, "other@example.com").is_err());
    }
}
