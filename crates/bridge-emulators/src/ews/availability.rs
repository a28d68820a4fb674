//! `GetUserAvailability`: the free/busy times of mailboxes (room mailboxes
//! for meeting rooms), written from the schema (`messages.xsd`
//! `GetUserAvailabilityRequestType`, `types.xsd` availability types) and
//! Microsoft's operation reference.
//!
//! Request: `t:TimeZone` (`SerializableTimeZone`: `Bias` in minutes, UTC =
//! local + bias, and the standard / daylight transitions),
//! `m:MailboxDataArray` (`t:MailboxData`: `Email/Address`, `AttendeeType`),
//! `t:FreeBusyViewOptions` (`TimeWindow` `StartTime` / `EndTime`, local
//! times in that zone; `RequestedView`). Answer:
//! `m:GetUserAvailabilityResponse/m:FreeBusyResponseArray`, one
//! `m:FreeBusyResponse` per mailbox in request order, each a
//! `m:ResponseMessage` and, on success, a `m:FreeBusyView` with
//! `t:CalendarEventArray` of `t:CalendarEvent` (`StartTime`, `EndTime` in the
//! request's zone without offset, `BusyType`).
//!
//! As chosen here (what the references leave open): `TimeZone` is required
//! (`ErrorTimeZone` without it) and only zones without daylight saving
//! (both transition biases equal) are served; an empty mailbox list is
//! `ErrorMailboxDataArrayEmpty`, more than 100 `ErrorMailboxDataArrayTooBig`
//! (the schema's codes); a window of more than 62 days or an end not after
//! the start is `ErrorInvalidTimeInterval`; an unknown mailbox answers
//! `ErrorMailRecipientNotFound` in its own response. Items whose
//! `LegacyFreeBusyStatus` is `Free` are not events; the status of others is
//! their `BusyType` (default `Busy`).

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use super::model::{InFolder, Store};
use super::ops::Answer;
use super::xml::{El, M, T, esc};

const MAX_MAILBOXES: usize = 100;
const MAX_DAYS: i64 = 62;

fn fault(code: &str, text: &str) -> Answer {
    Answer {
        xml: format!(
            "<m:GetUserAvailabilityResponse xmlns:m=\"{M}\" xmlns:t=\"{T}\"><m:FreeBusyResponseArray><m:FreeBusyResponse><m:ResponseMessage ResponseClass=\"Error\"><m:MessageText>{}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode></m:ResponseMessage></m:FreeBusyResponse></m:FreeBusyResponseArray></m:GetUserAvailabilityResponse>",
            esc(text)
        ),
        codes: vec![code.to_owned()],
        writes: 0,
    }
}

/// The zone's offset: UTC = local + `bias` minutes.
fn bias(tz: &El) -> Result<i64, &'static str> {
    let int = |e: Option<&El>| e.and_then(|e| e.text.trim().parse::<i64>().ok());
    let base = int(tz.child("Bias")).ok_or("TimeZone/Bias is missing or not a number.")?;
    let std = int(tz.child("StandardTime").and_then(|s| s.child("Bias")));
    let dst = int(tz.child("DaylightTime").and_then(|s| s.child("Bias")));
    match (std, dst) {
        (Some(s), Some(d)) if s == d => Ok(base + s),
        (Some(_), Some(_)) => Err("Time zones with daylight saving are not served by this server."),
        _ => Err("TimeZone needs StandardTime and DaylightTime."),
    }
}

/// An `xs:dateTime`: with an offset as given, without one in the zone.
fn instant(text: &str, bias: i64) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|l| l.and_utc() + Duration::minutes(bias))
}

fn local(at: DateTime<Utc>, bias: i64) -> String {
    (at - Duration::minutes(bias))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The operation; `known` says whether a mailbox exists.
pub(crate) fn get_user_availability(
    store: &mut Store,
    known: &dyn Fn(&str) -> bool,
    op: &El,
) -> Answer {
    let Some(tz) = op.child("TimeZone") else {
        return fault("ErrorTimeZone", "The request needs a TimeZone.");
    };
    let bias = match bias(tz) {
        Ok(b) => b,
        Err(m) => return fault("ErrorTimeZone", m),
    };
    let mailboxes: Vec<String> = op
        .child("MailboxDataArray")
        .map(|a| {
            a.children
                .iter()
                .filter_map(|m| m.path(&["Email", "Address"]))
                .map(|e| e.text.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    if mailboxes.is_empty() {
        return fault(
            "ErrorMailboxDataArrayEmpty",
            "The MailboxDataArray parameter is empty.",
        );
    }
    if mailboxes.len() > MAX_MAILBOXES {
        return fault(
            "ErrorMailboxDataArrayTooBig",
            "Too many mailboxes are requested (at most 100).",
        );
    }
    let Some(window) = op.path(&["FreeBusyViewOptions", "TimeWindow"]) else {
        return fault(
            "ErrorInvalidRequest",
            "FreeBusyViewOptions/TimeWindow is required for free/busy.",
        );
    };
    let (Some(from), Some(to)) = (
        window.text_of("StartTime").and_then(|t| instant(t, bias)),
        window.text_of("EndTime").and_then(|t| instant(t, bias)),
    ) else {
        return fault(
            "ErrorInvalidTimeInterval",
            "TimeWindow needs StartTime and EndTime.",
        );
    };
    if to <= from || to - from > Duration::days(MAX_DAYS) {
        return fault(
            "ErrorInvalidTimeInterval",
            "The time window must end after it starts and span at most 62 days.",
        );
    }
    let view = op
        .path(&["FreeBusyViewOptions", "RequestedView"])
        .map_or("FreeBusy".to_owned(), |v| v.text.trim().to_owned());
    let mut xml = format!(
        "<m:GetUserAvailabilityResponse xmlns:m=\"{M}\" xmlns:t=\"{T}\"><m:FreeBusyResponseArray>"
    );
    let mut codes = Vec::new();
    for mb in &mailboxes {
        if !known(mb) {
            codes.push("ErrorMailRecipientNotFound".to_owned());
            xml.push_str(&format!(
                "<m:FreeBusyResponse><m:ResponseMessage ResponseClass=\"Error\"><m:MessageText>No mailbox with address {}.</m:MessageText><m:ResponseCode>ErrorMailRecipientNotFound</m:ResponseCode></m:ResponseMessage></m:FreeBusyResponse>",
                esc(mb)
            ));
            continue;
        }
        let instances = match store.calendar_view(mb, InFolder::Calendar, from, to) {
            Ok(i) => i,
            Err(r) => {
                codes.push(r.0.to_owned());
                xml.push_str(&format!(
                    "<m:FreeBusyResponse><m:ResponseMessage ResponseClass=\"Error\"><m:MessageText>{}</m:MessageText><m:ResponseCode>{}</m:ResponseCode></m:ResponseMessage></m:FreeBusyResponse>",
                    esc(&r.1),
                    r.0
                ));
                continue;
            }
        };
        codes.push("NoError".to_owned());
        let mut events = String::new();
        for i in instances {
            let status = i.fields.free_busy.clone().unwrap_or_else(|| "Busy".into());
            let (Some(s), Some(e)) = (i.fields.start, i.fields.end) else {
                continue;
            };
            if status == "Free" {
                continue;
            }
            events.push_str(&format!(
                "<t:CalendarEvent><t:StartTime>{}</t:StartTime><t:EndTime>{}</t:EndTime><t:BusyType>{}</t:BusyType></t:CalendarEvent>",
                local(s, bias),
                local(e, bias),
                esc(&status)
            ));
        }
        xml.push_str(&format!(
            "<m:FreeBusyResponse><m:ResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode></m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>{}</t:FreeBusyViewType><t:CalendarEventArray>{events}</t:CalendarEventArray></m:FreeBusyView></m:FreeBusyResponse>",
            esc(&view)
        ));
    }
    xml.push_str("</m:FreeBusyResponseArray></m:GetUserAvailabilityResponse>");
    Answer {
        xml,
        codes,
        writes: 0,
    }
}

/// The schema's content models of the `GetUserAvailabilityRequest` parts,
/// for the request checker (`xml::check_order`).
pub(super) fn rule(parent: &str, name: &str) -> Option<super::xml::Rule> {
    use super::xml::Rule::{Any, Seq, Text};
    Some(match name {
        "GetUserAvailabilityRequest" if parent == "Body" => Seq(&[
            "TimeZone",
            "m:MailboxDataArray",
            "FreeBusyViewOptions",
            "SuggestionsViewOptions",
        ]),
        "TimeZone" if parent == "GetUserAvailabilityRequest" => {
            Seq(&["Bias", "StandardTime", "DaylightTime"])
        }
        "StandardTime" | "DaylightTime" if parent == "TimeZone" => {
            Seq(&["Bias", "Time", "DayOrder", "Month", "DayOfWeek", "Year"])
        }
        "MailboxDataArray" if parent == "GetUserAvailabilityRequest" => Any(&["MailboxData"]),
        "MailboxData" if parent == "MailboxDataArray" => {
            Seq(&["Email", "AttendeeType", "ExcludeConflicts"])
        }
        "Email" if parent == "MailboxData" => Seq(&["Name", "Address", "RoutingType"]),
        "FreeBusyViewOptions" if parent == "GetUserAvailabilityRequest" => Seq(&[
            "TimeWindow",
            "MergedFreeBusyIntervalInMinutes",
            "RequestedView",
        ]),
        "TimeWindow" if parent == "FreeBusyViewOptions" => Seq(&["StartTime", "EndTime"]),
        "Bias" if matches!(parent, "TimeZone" | "StandardTime" | "DaylightTime") => Text,
        "Time" | "DayOrder" | "DayOfWeek" | "Year"
            if matches!(parent, "StandardTime" | "DaylightTime") =>
        {
            Text
        }
        "Address" if parent == "Email" => Text,
        "AttendeeType" | "ExcludeConflicts" if parent == "MailboxData" => Text,
        "StartTime" | "EndTime" if parent == "TimeWindow" => Text,
        "MergedFreeBusyIntervalInMinutes" | "RequestedView" if parent == "FreeBusyViewOptions" => {
            Text
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_in_the_request_zone() {
        // Asia/Shanghai: Bias -480.
        let at = instant("2026-01-01T10:00:00", -480).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-01-01T02:00:00+00:00");
        assert_eq!(local(at, -480), "2026-01-01T10:00:00");
        assert_eq!(
            instant("2026-01-01T10:00:00Z", -480).unwrap().to_rfc3339(),
            "2026-01-01T10:00:00+00:00"
        );
    }
}
