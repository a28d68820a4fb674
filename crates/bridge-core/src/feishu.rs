//! Serde wire types of the Feishu / Lark calendar v4 API.
//!
//! Every struct is tolerant: unknown fields are ignored, every field may be
//! missing or `null`, timestamps are accepted as strings or numbers, and enum
//! values Feishu may add later are kept verbatim in an `Other` variant instead
//! of failing the whole response. Serialization writes the shape Feishu
//! documents (timestamps as strings, absent fields omitted), so the same types
//! serve the emulator.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::skip_serializing_none;

/// Declares a string enum that keeps unknown values in `Other(String)`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this version does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }

            /// Parses the wire spelling; unknown values become `Other`.
            pub fn from_wire(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Ok(Self::from_wire(&s))
            }
        }
    };
}

wire_enum!(
    /// `status` of an event.
    EventStatus {
        Tentative => "tentative",
        Confirmed => "confirmed",
        Cancelled => "cancelled",
    }
);

wire_enum!(
    /// `visibility` of an event.
    Visibility {
        Default => "default",
        Public => "public",
        Private => "private",
    }
);

wire_enum!(
    /// `free_busy_status` of an event.
    FreeBusyStatus {
        Busy => "busy",
        Free => "free",
    }
);

wire_enum!(
    /// `vchat.vc_type`.
    VcType {
        Vc => "vc",
        ThirdParty => "third_party",
        NoMeeting => "no_meeting",
        LarkLive => "lark_live",
        Unknown => "unknown",
    }
);

wire_enum!(
    /// `type` of an attendee.
    AttendeeType {
        User => "user",
        Chat => "chat",
        Resource => "resource",
        ThirdParty => "third_party",
    }
);

wire_enum!(
    /// `rsvp_status` of an attendee. For meeting rooms `needs_action` means
    /// "booking in progress", `accept` "booked", `decline` "booking failed".
    RsvpStatus {
        NeedsAction => "needs_action",
        Accept => "accept",
        Tentative => "tentative",
        Decline => "decline",
        Removed => "removed",
    }
);

wire_enum!(
    /// `type` of a calendar.
    CalendarType {
        Unknown => "unknown",
        Primary => "primary",
        Shared => "shared",
        Google => "google",
        Resource => "resource",
        Exchange => "exchange",
    }
);

/// Unix seconds as Feishu sends them: a decimal string (numbers are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixSeconds(pub i64);

impl Serialize for UnixSeconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for UnixSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Int(i64),
            Float(f64),
            #[serde(borrow)]
            Str(std::borrow::Cow<'a, str>),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) => Ok(UnixSeconds(i)),
            Raw::Float(f) if f.is_finite() && f.fract() == 0.0 => Ok(UnixSeconds(f as i64)),
            Raw::Float(f) => Err(serde::de::Error::custom(format!(
                "timestamp {f} is not a whole number of seconds"
            ))),
            Raw::Str(s) => s.trim().parse::<i64>().map(UnixSeconds).map_err(|_| {
                serde::de::Error::custom(format!("timestamp {s:?} is not a number of seconds"))
            }),
        }
    }
}

/// `time_info`: either `date` (all-day) or `timestamp` + `timezone`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeInfo {
    /// All-day date, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// Unix seconds.
    pub timestamp: Option<UnixSeconds>,
    /// IANA zone name; all-day events carry `UTC`.
    pub timezone: Option<String>,
}

/// `vchat.meeting_settings` (get-event with `need_meeting_settings=true`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MeetingSettings {
    pub owner_id: Option<String>,
    pub join_meeting_permission: Option<String>,
    pub password: Option<String>,
    pub assign_hosts: Option<Vec<String>>,
    pub auto_record: Option<bool>,
    pub open_lobby: Option<bool>,
    pub allow_attendees_start: Option<bool>,
}

/// `vchat`: the meeting attached to an event.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vchat {
    pub vc_type: Option<VcType>,
    pub icon_type: Option<String>,
    pub description: Option<String>,
    pub meeting_url: Option<String>,
    pub meeting_settings: Option<MeetingSettings>,
}

/// `location`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Location {
    pub name: Option<String>,
    pub address: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// One reminder: positive minutes are before the start, negative after it.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reminder {
    pub minutes: Option<i64>,
}

/// `schemas[]`: UI hints.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Schema {
    pub ui_name: Option<String>,
    pub ui_status: Option<String>,
    pub app_link: Option<String>,
}

/// `event_organizer`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventOrganizer {
    pub user_id: Option<String>,
    pub display_name: Option<String>,
}

/// `attachments[]`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attachment {
    pub file_token: Option<String>,
    pub file_size: Option<String>,
    pub name: Option<String>,
    pub is_deleted: Option<bool>,
}

/// `chat_members[]` of a chat attendee (deprecated in the list endpoint).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatMember {
    pub rsvp_status: Option<RsvpStatus>,
    pub is_optional: Option<bool>,
    pub display_name: Option<String>,
    pub is_organizer: Option<bool>,
    pub is_external: Option<bool>,
}

/// An attendee of any of the four types.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attendee {
    #[serde(rename = "type")]
    pub kind: Option<AttendeeType>,
    pub attendee_id: Option<String>,
    pub rsvp_status: Option<RsvpStatus>,
    pub is_optional: Option<bool>,
    pub is_organizer: Option<bool>,
    pub is_external: Option<bool>,
    pub display_name: Option<String>,
    pub chat_members: Option<Vec<ChatMember>>,
    pub user_id: Option<String>,
    pub chat_id: Option<String>,
    pub room_id: Option<String>,
    pub third_party_email: Option<String>,
    pub operate_id: Option<String>,
    pub resource_customization: Option<Vec<serde_json::Value>>,
    pub approval_reason: Option<String>,
}

/// The full event object (list, get, instance_view).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// `<uid>_<original_time>`; see [`crate::EventKey`].
    pub event_id: Option<String>,
    pub organizer_calendar_id: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub need_notification: Option<bool>,
    pub start_time: Option<TimeInfo>,
    pub end_time: Option<TimeInfo>,
    pub vchat: Option<Vchat>,
    pub visibility: Option<Visibility>,
    pub attendee_ability: Option<String>,
    pub free_busy_status: Option<FreeBusyStatus>,
    pub location: Option<Location>,
    pub color: Option<i64>,
    pub reminders: Option<Vec<Reminder>>,
    /// Bare RRULE body (no `RRULE:` prefix); empty for singles and exceptions.
    pub recurrence: Option<String>,
    pub status: Option<EventStatus>,
    pub is_exception: Option<bool>,
    /// The master's event id (`<uid>_0` or a bare uid: the docs disagree).
    pub recurring_event_id: Option<String>,
    pub create_time: Option<UnixSeconds>,
    pub schemas: Option<Vec<Schema>>,
    pub event_organizer: Option<EventOrganizer>,
    pub app_link: Option<String>,
    pub attachments: Option<Vec<Attachment>>,
    pub attendees: Option<Vec<Attendee>>,
    pub has_more_attendee: Option<bool>,
    pub event_check_in: Option<serde_json::Value>,
}

/// The calendar object.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Calendar {
    pub calendar_id: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<String>,
    pub color: Option<i64>,
    #[serde(rename = "type")]
    pub kind: Option<CalendarType>,
    pub summary_alias: Option<String>,
    pub is_deleted: Option<bool>,
    pub is_third_party: Option<bool>,
    pub role: Option<String>,
}

/// The common envelope `{code, msg, data}`; `code == 0` means success.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Envelope<T> {
    pub code: i64,
    pub msg: Option<String>,
    pub data: Option<T>,
}

/// `data` of list-events.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventPage {
    pub has_more: bool,
    pub page_token: Option<String>,
    pub sync_token: Option<String>,
    pub items: Vec<Event>,
}

/// `data` of list-calendars.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CalendarPage {
    pub has_more: bool,
    pub page_token: Option<String>,
    pub sync_token: Option<String>,
    pub calendar_list: Vec<Calendar>,
}

/// `data` of list-attendees.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttendeePage {
    pub has_more: bool,
    pub page_token: Option<String>,
    pub items: Vec<Attendee>,
}

/// The list-events response.
pub type EventListResponse = Envelope<EventPage>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_of_unknown_fields_nulls_and_new_enum_values() {
        let ev: Event = serde_json::from_str(
            r#"{"event_id":"u_0","summary":null,"status":"postponed","brand_new":{"x":1},
                "start_time":{"timestamp":1700000000,"timezone":"Asia/Shanghai"},
                "create_time":"1699999999","attendees":[{"type":"bot","rsvp_status":"maybe"}]}"#,
        )
        .unwrap();
        assert_eq!(ev.summary, None);
        assert_eq!(ev.status, Some(EventStatus::Other("postponed".into())));
        assert_eq!(
            ev.start_time.unwrap().timestamp,
            Some(UnixSeconds(1_700_000_000))
        );
        assert_eq!(ev.create_time, Some(UnixSeconds(1_699_999_999)));
        let att = &ev.attendees.unwrap()[0];
        assert_eq!(att.kind, Some(AttendeeType::Other("bot".into())));
        assert_eq!(att.rsvp_status, Some(RsvpStatus::Other("maybe".into())));
    }

    #[test]
    fn bad_timestamp_is_an_error_naming_the_value() {
        let err = serde_json::from_str::<TimeInfo>(r#"{"timestamp":"soon"}"#).unwrap_err();
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }

    #[test]
    fn serializes_timestamps_as_strings_and_omits_absent_fields() {
        let ev = Event {
            event_id: Some("u_0".into()),
            start_time: Some(TimeInfo {
                timestamp: Some(UnixSeconds(5)),
                timezone: Some("UTC".into()),
                date: None,
            }),
            status: Some(EventStatus::Confirmed),
            ..Event::default()
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"event_id":"u_0","start_time":{"timestamp":"5","timezone":"UTC"},"status":"confirmed"}"#
        );
    }

    #[test]
    fn every_attendee_type_and_rsvp_status_is_known() {
        for t in ["user", "chat", "resource", "third_party"] {
            assert!(
                !matches!(AttendeeType::from_wire(t), AttendeeType::Other(_)),
                "{t}"
            );
        }
        for r in ["needs_action", "accept", "tentative", "decline", "removed"] {
            assert!(
                !matches!(RsvpStatus::from_wire(r), RsvpStatus::Other(_)),
                "{r}"
            );
        }
    }

    #[test]
    fn list_envelope() {
        let page: EventListResponse = serde_json::from_str(
            r#"{"code":0,"msg":"success","data":{"has_more":false,"sync_token":"s1","items":[{"event_id":"a_0"}]}}"#,
        )
        .unwrap();
        let data = page.data.unwrap();
        assert!(!data.has_more);
        assert_eq!(data.sync_token.as_deref(), Some("s1"));
        assert_eq!(data.items.len(), 1);
    }
}
