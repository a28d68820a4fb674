//! `POST /users/{id}/calendar/getSchedule`: free/busy of mailboxes (room
//! mailboxes for meeting rooms).
//!
//! Written from the v1.0 reference (calendar: getSchedule) and the CSDL's
//! `getSchedule` action: the body is `schedules` (SMTP addresses,
//! required), `startTime` and `endTime` (`dateTimeTimeZone`, required) and
//! `availabilityViewInterval` (minutes, 5–1440, default 30). The answer is
//! `value[]` of `scheduleInformation` in request order: `scheduleId`,
//! `availabilityView` (one digit per interval: 0 free, 1 tentative, 2 busy,
//! 3 oof, 4 workingElsewhere), `scheduleItems[{isPrivate, status, subject,
//! location, start, end}]` (times in UTC); a mailbox that cannot be read is
//! answered in place with `error{message, responseCode}`.
//!
//! As chosen here (the reference leaves it open): at most 100 schedules and
//! a window of at most 62 days (400 `ErrorInvalidParameter` otherwise);
//! cancelled instances and `showAs: free` are not items; the items are the
//! default calendar's.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::api::{Req, Resp, view_items};
use super::model::Shape;
use super::{Inner, lock, time};

const MAX_SCHEDULES: usize = 100;
const MAX_DAYS: i64 = 62;

fn bad(msg: &str) -> Resp {
    Resp::error(400, "ErrorInvalidParameter", msg)
}

/// A `dateTimeTimeZone` dateTime in UTC, as Graph writes it.
fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S.0000000").to_string()
}

fn digit(status: &str) -> char {
    match status {
        "tentative" => '1',
        "busy" => '2',
        "oof" => '3',
        "workingElsewhere" => '4',
        _ => '0',
    }
}

/// The `getSchedule` action of `mailbox` (the caller's).
pub(crate) fn get_schedule(inner: &Arc<Inner>, _mailbox: &str, req: &Req) -> Resp {
    let Some(body) = req.body.as_ref().and_then(Value::as_object) else {
        return Resp::error(400, "RequestBodyRead", "A getSchedule body is required.");
    };
    let schedules: Vec<String> = match body.get("schedules") {
        Some(Value::Array(a)) if !a.is_empty() => {
            match a.iter().map(|v| v.as_str().map(str::to_owned)).collect() {
                Some(v) => v,
                None => return bad("schedules must be a list of SMTP addresses."),
            }
        }
        _ => return bad("The parameter 'schedules' is required and must not be empty."),
    };
    if schedules.len() > MAX_SCHEDULES {
        return bad("Too many schedules requested (at most 100).");
    }
    let when = |k: &str| -> Result<DateTime<Utc>, Resp> {
        let v = body
            .get(k)
            .ok_or_else(|| bad(&format!("The parameter '{k}' is required.")))?;
        time::when(v).map(|w| w.at).map_err(|m| bad(&m))
    };
    let (from, to) = match (when("startTime"), when("endTime")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if to <= from {
        return bad("endTime must be after startTime.");
    }
    if to - from > Duration::days(MAX_DAYS) {
        return bad("The requested time window is longer than 62 days.");
    }
    let interval = match body.get("availabilityViewInterval") {
        None | Some(Value::Null) => 30,
        Some(v) => match v.as_i64().filter(|n| (5..=1440).contains(n)) {
            Some(n) => n,
            None => return bad("availabilityViewInterval must be between 5 and 1440."),
        },
    };
    let sh = Shape {
        select: Vec::new(),
        expand: None,
        exceptions: false,
        immutable: true,
    };
    let model = lock(&inner.model);
    let mut out = Vec::new();
    for id in &schedules {
        let Some(mb) = model.mailbox_id(id).map(|m| &model.mailboxes[&m]) else {
            out.push(json!({"scheduleId": id, "error": {
                "message": format!("The mailbox {id} cannot be found."),
                "responseCode": "ErrorMailRecipientNotFound"}}));
            continue;
        };
        let mut items = Vec::new();
        let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>, char)> = Vec::new();
        for v in view_items(mb, None, from, to, &sh) {
            let status = v["showAs"].as_str().unwrap_or("busy").to_owned();
            if v["isCancelled"] == true || status == "free" {
                continue;
            }
            let (Ok(s), Ok(e)) = (time::when(&v["start"]), time::when(&v["end"])) else {
                continue;
            };
            spans.push((s.at, e.at, digit(&status)));
            items.push(json!({
                "isPrivate": v["sensitivity"] == "private",
                "status": status,
                "subject": v["subject"],
                "location": v["location"]["displayName"],
                "start": {"dateTime": utc(s.at), "timeZone": "UTC"},
                "end": {"dateTime": utc(e.at), "timeZone": "UTC"},
            }));
        }
        let mut view = String::new();
        let mut t = from;
        while t < to {
            let next = t + Duration::minutes(interval);
            let d = spans
                .iter()
                .filter(|(s, e, _)| *s < next && *e > t)
                .map(|(_, _, d)| *d)
                .max()
                .unwrap_or('0');
            view.push(d);
            t = next;
        }
        out.push(json!({
            "scheduleId": id,
            "availabilityView": view,
            "scheduleItems": items,
            "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
                "timeZone": {"name": "UTC"}},
        }));
    }
    Resp::ok(200, json!({"value": out}))
}

#[cfg(test)]
mod tests {
    use super::digit;

    #[test]
    fn availability_digits() {
        assert_eq!(
            ["free", "tentative", "busy", "oof", "workingElsewhere"].map(digit),
            ['0', '1', '2', '3', '4']
        );
    }
}
