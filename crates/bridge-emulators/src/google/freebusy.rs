//! `POST /calendar/v3/freeBusy`: the busy periods of a set of calendars.
//!
//! Written from Google's reference page (freebusy/query): the body holds
//! `timeMin`, `timeMax` (RFC 3339, required), an optional `timeZone` (of the
//! answer; default UTC), `groupExpansionMax` (≤ 100), `calendarExpansionMax`
//! (≤ 50) and `items[{id}]`. The answer is `{"kind":"calendar#freeBusy",
//! timeMin, timeMax, calendars: {id: {busy: [{start, end}]}}}`; a calendar
//! the caller cannot see is answered in place with
//! `errors: [{domain: "global", reason: "notFound"}]`, not as a failed call.
//!
//! As chosen here (the reference leaves it open): busy periods are the
//! caller-visible, non-cancelled, opaque instances (recurring events
//! expanded, `transparency = "transparent"` left out) that meet the window,
//! clipped to it and merged where they overlap or touch; more than
//! `calendarExpansionMax` (default 50) items is 400 `tooManyCalendarsRequested`;
//! an empty or reversed window is 400 `timeRangeEmpty`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::auth::{Caller, Need, allows};
use super::error::ApiError;
use super::http::json_response;
use super::list::{self, Env};
use super::time;
use super::{Inner, lock};

/// Most calendars per query (the reference's maximum of `calendarExpansionMax`).
const MAX_CALENDARS: u64 = 50;

fn field_time(body: &Map<String, Value>, key: &str) -> Result<DateTime<Utc>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => {
            Err(ApiError::required(format!("Missing {key}.")).at("parameter", key))
        }
        Some(Value::String(s)) => time::parse_rfc3339(s).ok_or_else(|| {
            ApiError::invalid(format!("Invalid value '{s}' for {key}.")).at("parameter", key)
        }),
        Some(other) => Err(
            ApiError::invalid(format!("Invalid value '{other}' for {key}.")).at("parameter", key),
        ),
    }
}

fn limit(body: &Map<String, Value>, key: &str, max: u64) -> Result<u64, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(max),
        Some(v) => v.as_u64().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::invalid(format!("Invalid value '{v}' for {key}.")).at("parameter", key)
        }),
    }
}

/// Overlapping or touching periods joined, in start order.
fn merge(mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    spans.sort();
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn query(inner: &Inner, caller: &Caller, raw: &Bytes) -> Result<Response, ApiError> {
    if !allows(&caller.scopes, Need::EventsRead) {
        return Err(ApiError::insufficient_scopes());
    }
    let body = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::parse_error()),
    };
    let min = field_time(&body, "timeMin")?;
    let max = field_time(&body, "timeMax")?;
    if max <= min {
        return Err(ApiError::time_range_empty("timeMax"));
    }
    let zone = match body.get("timeZone") {
        None | Some(Value::Null) => chrono_tz::UTC,
        Some(Value::String(z)) => time::parse_zone(z).ok_or_else(|| {
            ApiError::invalid(format!("Invalid value '{z}' for timeZone."))
                .at("parameter", "timeZone")
        })?,
        Some(v) => {
            return Err(
                ApiError::invalid(format!("Invalid value '{v}' for timeZone."))
                    .at("parameter", "timeZone"),
            );
        }
    };
    limit(&body, "groupExpansionMax", 100)?;
    let most = limit(&body, "calendarExpansionMax", MAX_CALENDARS)?;
    let items = match body.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(ApiError::invalid("Invalid value for items.").at("parameter", "items"));
        }
    };
    if items.len() as u64 > most {
        return Err(ApiError::new(
            400,
            "calendar",
            "tooManyCalendarsRequested",
            "The number of calendars requested is too large.",
        ));
    }
    let store = lock(&inner.store);
    let cfg = inner.config();
    let env = Env {
        codec: inner.codec(),
        horizon: list::horizon_from(super::util::now(), cfg.expansion_horizon),
        props: cfg.extended_property_match,
        version: store.version(),
    };
    let mut calendars = Map::new();
    for item in &items {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            return Err(ApiError::required("Missing items.id.").at("parameter", "items.id"));
        };
        let Ok((real, _role)) = store.resolve_calendar(id, &caller.email) else {
            calendars.insert(
                id.to_owned(),
                json!({"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}),
            );
            continue;
        };
        let cal = &store.calendars[&real];
        let cal_zone = cal.zone();
        let spans = list::expanded(cal, min, max, &env)
            .into_iter()
            .filter(|i| i.status != "cancelled")
            .filter(|i| {
                let rec = cal.events.get(&i.id).or_else(|| {
                    i.recurring_event_id
                        .as_ref()
                        .and_then(|m| cal.events.get(m))
                });
                rec.and_then(|r| r.res.get("transparency"))
                    .and_then(Value::as_str)
                    != Some("transparent")
            })
            .map(|i| (i.start.instant(cal_zone), i.end.instant(cal_zone)))
            .filter(|(s, e)| e > &min && s < &max)
            .map(|(s, e)| (s.max(min), e.min(max)))
            .collect();
        let busy: Vec<Value> = merge(spans)
            .into_iter()
            .map(|(s, e)| json!({"start": time::format_in(s, zone), "end": time::format_in(e, zone)}))
            .collect();
        calendars.insert(id.to_owned(), json!({ "busy": busy }));
    }
    let v = json!({
        "kind": "calendar#freeBusy",
        "timeMin": time::format_in(min, zone),
        "timeMax": time::format_in(max, zone),
        "calendars": calendars,
    });
    Ok(json_response(StatusCode::OK, &v, true, None))
}

/// `POST /calendar/v3/freeBusy`.
pub(crate) async fn free_busy(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    query(&inner, &caller, &body).unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_merge_when_they_meet() {
        let t = |h: i64| DateTime::<Utc>::from_timestamp(h * 3600, 0).unwrap();
        assert_eq!(
            merge(vec![(t(3), t(4)), (t(1), t(2)), (t(2), t(3)), (t(6), t(7))]),
            vec![(t(1), t(4)), (t(6), t(7))]
        );
    }
}
