//! `GetUserAvailability`: the busy periods of one mailbox (a room mailbox,
//! README "Meeting rooms").
//!
//! The request is in UTC (a `SerializableTimeZone` of bias 0 without
//! daylight saving), so the answer's offset-less `StartTime` / `EndTime`
//! are UTC. Every `CalendarEvent` whose `BusyType` is not `Free` holds the
//! room; a mailbox answered with an error, or with `NoData`, is an error,
//! never "free".

use chrono::{DateTime, NaiveDateTime, Utc};

use super::client::{EwsClient, EwsError};
use super::xml::{El, esc};

/// A `SerializableTimeZoneTime` of UTC.
const UTC_TRANSITION: &str = "<t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>0</t:DayOrder><t:Month>0</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek>";

fn utc(at: i64) -> Result<String, EwsError> {
    DateTime::<Utc>::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .ok_or_else(|| EwsError::Decode(format!("time {at} is out of range")))
}

/// The request body for `mailbox` over `[from, to)`.
pub fn request(mailbox: &str, from: i64, to: i64) -> Result<String, EwsError> {
    Ok(format!(
        "<m:GetUserAvailabilityRequest><t:TimeZone><t:Bias>0</t:Bias><t:StandardTime>{UTC_TRANSITION}</t:StandardTime><t:DaylightTime>{UTC_TRANSITION}</t:DaylightTime></t:TimeZone>\
         <m:MailboxDataArray><t:MailboxData><t:Email><t:Address>{}</t:Address></t:Email><t:AttendeeType>Room</t:AttendeeType><t:ExcludeConflicts>false</t:ExcludeConflicts></t:MailboxData></m:MailboxDataArray>\
         <t:FreeBusyViewOptions><t:TimeWindow><t:StartTime>{}</t:StartTime><t:EndTime>{}</t:EndTime></t:TimeWindow><t:MergedFreeBusyIntervalInMinutes>30</t:MergedFreeBusyIntervalInMinutes><t:RequestedView>FreeBusy</t:RequestedView></t:FreeBusyViewOptions></m:GetUserAvailabilityRequest>",
        esc(mailbox),
        utc(from)?,
        utc(to)?
    ))
}

/// The busy periods `(start, end)` of `mailbox` over `[from, to)`.
///
/// # Errors
/// The call failed, or Exchange answered an error for the mailbox.
pub async fn busy(
    client: &EwsClient,
    mailbox: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, i64)>, EwsError> {
    let answer = client
        .call("GetUserAvailability", &request(mailbox, from, to)?)
        .await?;
    parse(&answer)
}

/// An answer's time: UTC (the request's zone) unless it carries an offset.
fn instant(text: &str) -> Result<i64, EwsError> {
    let t = text.trim();
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp())
        .or_else(|_| {
            NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|n| n.and_utc().timestamp())
        })
        .map_err(|_| EwsError::Decode(format!("GetUserAvailability: {t:?} is not a date-time")))
}

/// The busy periods of the first mailbox of a `GetUserAvailabilityResponse`.
///
/// # Errors
/// No answer for the mailbox, an error answer, or `NoData`.
pub fn parse(answer: &El) -> Result<Vec<(i64, i64)>, EwsError> {
    let resp = answer
        .path(&["FreeBusyResponseArray", "FreeBusyResponse"])
        .ok_or_else(|| EwsError::Decode("GetUserAvailability answered no mailbox".into()))?;
    if let Some(m) = resp.child("ResponseMessage")
        && m.attr("ResponseClass") != Some("Success")
    {
        return Err(EwsError::Fault {
            code: m.text_of("ResponseCode").unwrap_or("").to_owned(),
            message: m.text_of("MessageText").unwrap_or("").to_owned(),
        });
    }
    let mut out = Vec::new();
    for e in resp
        .path(&["FreeBusyView", "CalendarEventArray"])
        .map(|a| a.children.as_slice())
        .unwrap_or_default()
    {
        match e.text_of("BusyType").unwrap_or("Busy") {
            "Free" => continue,
            "NoData" => {
                return Err(EwsError::Decode(
                    "GetUserAvailability has no data for the mailbox".into(),
                ));
            }
            _ => {}
        }
        out.push((
            instant(e.text_of("StartTime").unwrap_or(""))?,
            instant(e.text_of("EndTime").unwrap_or(""))?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_events_and_errors() {
        let ok = crate::ews::xml::parse(
            "<m:GetUserAvailabilityResponse xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\" xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\"><m:FreeBusyResponseArray><m:FreeBusyResponse><m:ResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode></m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>FreeBusy</t:FreeBusyViewType><t:CalendarEventArray>\
             <t:CalendarEvent><t:StartTime>2026-01-01T10:00:00</t:StartTime><t:EndTime>2026-01-01T11:00:00</t:EndTime><t:BusyType>Busy</t:BusyType></t:CalendarEvent>\
             <t:CalendarEvent><t:StartTime>2026-01-01T12:00:00</t:StartTime><t:EndTime>2026-01-01T13:00:00</t:EndTime><t:BusyType>Free</t:BusyType></t:CalendarEvent>\
             </t:CalendarEventArray></m:FreeBusyView></m:FreeBusyResponse></m:FreeBusyResponseArray></m:GetUserAvailabilityResponse>",
        )
        .unwrap();
        assert_eq!(parse(&ok).unwrap(), vec![(1_767_261_600, 1_767_265_200)]);
        let err = crate::ews::xml::parse(
            "<m:GetUserAvailabilityResponse xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\"><m:FreeBusyResponseArray><m:FreeBusyResponse><m:ResponseMessage ResponseClass=\"Error\"><m:MessageText>no</m:MessageText><m:ResponseCode>ErrorMailRecipientNotFound</m:ResponseCode></m:ResponseMessage></m:FreeBusyResponse></m:FreeBusyResponseArray></m:GetUserAvailabilityResponse>",
        )
        .unwrap();
        assert!(
            parse(&err)
                .unwrap_err()
                .to_string()
                .contains("ErrorMailRecipientNotFound")
        );
        assert!(
            request("a&b@example.com", 0, 60)
                .unwrap()
                .contains("a&amp;b@example.com")
        );
    }
}
