//! Typed change hints from Feishu event pushes.
//!
//! Feishu delivers events in two envelopes (`feishu-api.md` §7.1):
//!
//! * **v2** (`"schema": "2.0"`): `header.event_id` (dedupe key),
//!   `header.event_type`, `header.create_time` (ms), `header.token`, `event`;
//! * **v1** (no `schema`): top-level `uuid` (dedupe key), `token`, `ts`
//!   (seconds with a fraction), `type: "event_callback"` and `event.type`
//!   (the event name).
//!
//! [`parse_event`] turns the plaintext JSON of either envelope (as received
//! by the webhook after decryption, or as a long-connection payload) into one
//! [`Delivery`] carrying a typed [`ChangeHint`]. A hint only says *what to
//! re-read*: the gray-release fields (`calendar_event_id`, `change_type`,
//! `rsvp_infos`) may be missing and callers must fall back to a `sync_token`
//! delta on every push.
//!
//! Tolerance rules: unknown fields are ignored; numbers are accepted as JSON
//! numbers or decimal strings; an optional number that cannot be read is
//! treated as absent (and logged at debug level) instead of rejecting the
//! whole push. Malformed JSON, an envelope without its id or type, or a known
//! event without its identifying field (e.g. `calendar_id`) is a
//! [`HintError`] naming what is wrong. Unknown event types become
//! [`ChangeHint::Unknown`] (callers log and acknowledge them).

use std::fmt;

use bridge_core::feishu::RsvpStatus;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `calendar.calendar.event.changed_v4`: events of a subscribed calendar changed.
pub const EVENT_CHANGED: &str = "calendar.calendar.event.changed_v4";
/// `calendar.calendar.changed_v4`: a user's calendar list changed.
pub const CALENDAR_CHANGED: &str = "calendar.calendar.changed_v4";
/// `calendar.calendar.acl.created_v4`.
pub const ACL_CREATED: &str = "calendar.calendar.acl.created_v4";
/// `calendar.calendar.acl.deleted_v4`.
pub const ACL_DELETED: &str = "calendar.calendar.acl.deleted_v4";
/// v1 third-party meeting room event: created.
pub const ROOM_EVENT_CREATED: &str = "third_party_meeting_room_event_created";
/// v1 third-party meeting room event: updated (only when the time changed).
pub const ROOM_EVENT_UPDATED: &str = "third_party_meeting_room_event_updated";
/// v1 third-party meeting room event: deleted.
pub const ROOM_EVENT_DELETED: &str = "third_party_meeting_room_event_deleted";
/// `vc.reserve_config.updated_v1`: meeting room booking restrictions changed.
pub const RESERVE_CONFIG_UPDATED: &str = "vc.reserve_config.updated_v1";

/// What can be wrong with a pushed payload.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// The payload is not JSON, or not a JSON object.
    #[error("event payload is not a valid JSON object: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// A field the envelope or the event needs is missing or empty.
    #[error("event payload has no `{field}`")]
    MissingField {
        /// Dotted path of the field, e.g. `header.event_id`.
        field: &'static str,
    },
    /// A field is present but unusable.
    #[error("event payload field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Dotted path of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body of a known event type does not have the documented shape.
    #[error("body of {event_type} event is malformed: {source}")]
    InvalidEvent {
        /// The event type whose body failed.
        event_type: String,
        /// The decoding error (names the field and position).
        #[source]
        source: serde_json::Error,
    },
    /// The payload is a URL-verification challenge, not an event.
    #[error("payload is a url_verification challenge, not an event")]
    UrlVerification,
}

/// A user as Feishu names it in pushes: any subset of the three ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct UserIds {
    pub union_id: Option<String>,
    pub user_id: Option<String>,
    pub open_id: Option<String>,
}

impl UserIds {
    /// True when none of the three ids is present.
    pub fn is_empty(&self) -> bool {
        self.union_id.is_none() && self.user_id.is_none() && self.open_id.is_none()
    }
}

/// `change_type` of `calendar.calendar.event.changed_v4` (gray-release field).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangeType {
    /// Created on this calendar (including being invited).
    Create,
    /// Changed.
    Update,
    /// Gone from this calendar (deleted, or removed as attendee).
    Delete,
    /// A user attendee replied.
    Rsvp,
    /// A value this version does not know, kept as sent.
    Other(String),
}

impl ChangeType {
    /// Parses the wire spelling; unknown values become `Other`.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "create" => Self::Create,
            "update" => Self::Update,
            "delete" => Self::Delete,
            "rsvp" => Self::Rsvp,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Rsvp => "rsvp",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `rsvp_infos` (gray-release field): a user attendee's reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RsvpInfo {
    pub from_user_id: Option<UserIds>,
    /// `accept`, `decline` or `tentative`.
    pub rsvp_status: Option<RsvpStatus>,
}

/// Which of the three third-party meeting room events fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomEventKind {
    Created,
    /// Fired only when the event's time changed.
    Updated,
    Deleted,
}

impl RoomEventKind {
    /// The v1 event type naming this kind.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Created => ROOM_EVENT_CREATED,
            Self::Updated => ROOM_EVENT_UPDATED,
            Self::Deleted => ROOM_EVENT_DELETED,
        }
    }
}

/// `approve_config` of `vc.reserve_config.updated_v1`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApprovalConfig {
    /// 0 = off, 1 = on.
    pub approval_switch: Option<i64>,
    /// 0 = every booking needs approval, 1 = only those meeting the condition.
    pub approval_condition: Option<i64>,
    /// Bookings longer than this many hours need approval.
    pub meeting_duration_hours: Option<f64>,
    pub approvers: Vec<UserIds>,
}

/// `time_config` of `vc.reserve_config.updated_v1`. Times of day are seconds
/// since midnight (0..=86400).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeConfig {
    /// 0 = off, 1 = on.
    pub time_switch: Option<i64>,
    /// How many days ahead a room may be booked.
    pub days_in_advance: Option<i64>,
    /// Bookings for a newly opened day start at this second of the day.
    pub opening_hour_s: Option<i64>,
    /// Start of the bookable range each day, seconds of day.
    pub start_time_s: Option<i64>,
    /// End of the bookable range each day, seconds of day.
    pub end_time_s: Option<i64>,
    /// Longest single booking, hours.
    pub max_duration_hours: Option<i64>,
}

/// One department of `reserve_scope_config.allow_depts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Department {
    pub department_id: Option<String>,
    pub department_name: Option<String>,
}

/// `reserve_scope_config` of `vc.reserve_config.updated_v1`: who may book.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReserveScopeConfig {
    /// 0 = only the listed users / departments, 1 = everyone.
    pub allow_all_users: Option<i64>,
    pub allow_users: Vec<UserIds>,
    pub allow_depts: Vec<Department>,
}

/// What a push says changed.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeHint {
    /// `calendar.calendar.event.changed_v4`: re-read the calendar's delta.
    CalendarEventChanged {
        calendar_id: String,
        /// `calendar_event_id` (gray release).
        event_id: Option<String>,
        /// `change_type` (gray release).
        change_type: Option<ChangeType>,
        /// `rsvp_infos` (gray release).
        rsvp_infos: Vec<RsvpInfo>,
        /// `user_id_list`: the subscribers this push is for.
        user_ids: Vec<UserIds>,
    },
    /// `calendar.calendar.changed_v4`: re-read these users' calendar lists.
    CalendarListChanged { user_ids: Vec<UserIds> },
    /// `calendar.calendar.acl.created_v4` / `…deleted_v4`. The payload names
    /// no calendar; `user_ids` are the subscribers.
    AclChanged {
        /// True for `created`, false for `deleted`.
        created: bool,
        acl_id: Option<String>,
        /// `free_busy_reader` / `reader` / `writer` / `owner` / `unknown`.
        role: Option<String>,
        /// `scope.user_id`: whose access changed, when the scope is a user.
        scope_user: Option<UserIds>,
        user_ids: Vec<UserIds>,
    },
    /// v1 `third_party_meeting_room_event_{created,updated,deleted}`.
    ThirdPartyRoomEvent {
        kind: RoomEventKind,
        uid: String,
        /// Unix seconds (0 for single events and recurring masters). Values
        /// that look like milliseconds (> 10^11) are divided by 1000.
        original_time: i64,
        /// `<uid>_<original_time>` when sent.
        event_id: Option<String>,
        /// `start.time_stamp`, Unix ms.
        start_ms: Option<i64>,
        /// `end.time_stamp`, Unix ms.
        end_ms: Option<i64>,
        /// `meeting_rooms[].open_id` (`omm_…`).
        room_ids: Vec<String>,
        organizer: Option<UserIds>,
    },
    /// `vc.reserve_config.updated_v1`: booking restrictions of a room or level changed.
    ReserveConfigUpdated {
        /// Room (`omm_…`) or room-level id.
        scope_id: String,
        /// 1 = level, 2 = room.
        scope_type: Option<i64>,
        approval: Option<ApprovalConfig>,
        time: Option<TimeConfig>,
        scope: Option<ReserveScopeConfig>,
    },
    /// Any other event type: acknowledged, not acted upon.
    Unknown { event_type: String },
}

impl ChangeHint {
    /// The calendar this hint names, when it names one.
    pub fn calendar_id(&self) -> Option<&str> {
        match self {
            Self::CalendarEventChanged { calendar_id, .. } => Some(calendar_id),
            _ => None,
        }
    }

    /// The subscribers the push was sent for (empty when the event has none).
    pub fn user_ids(&self) -> &[UserIds] {
        match self {
            Self::CalendarEventChanged { user_ids, .. }
            | Self::CalendarListChanged { user_ids }
            | Self::AclChanged { user_ids, .. } => user_ids,
            _ => &[],
        }
    }
}

/// One pushed event: its dedupe key, its type and the typed hint.
#[derive(Clone, PartialEq)]
pub struct Delivery {
    /// `header.event_id` (v2) or `uuid` (v1): at-least-once deliveries repeat it.
    pub dedupe_key: String,
    /// `header.event_type` (v2) or `event.type` (v1).
    pub event_type: String,
    /// When Feishu created the event, Unix ms: v2 `header.create_time`
    /// (a 16-digit microsecond value is scaled down, a 10-digit second value
    /// up), v1 `ts` (seconds with a fraction).
    pub create_time_ms: Option<i64>,
    /// The verification token the payload carries (v2 `header.token`, v1
    /// `token`). Redacted in `Debug`.
    pub token: Option<String>,
    pub hint: ChangeHint,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("dedupe_key", &self.dedupe_key)
            .field("event_type", &self.event_type)
            .field("create_time_ms", &self.create_time_ms)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("hint", &self.hint)
            .finish()
    }
}

/// A parsed inbound message: either a URL-verification challenge or an event.
#[derive(Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived value, moved once; boxing buys nothing"
)]
pub(crate) enum Inbound {
    Challenge {
        challenge: String,
        token: Option<String>,
    },
    Event(Delivery),
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Challenge { .. } => f.write_str("Challenge"),
            Self::Event(d) => f.debug_tuple("Event").field(d).finish(),
        }
    }
}

/// Parses the plaintext JSON of a v2 or v1 event envelope.
///
/// A URL-verification challenge is refused with [`HintError::UrlVerification`]
/// (the webhook answers those itself).
pub fn parse_event(payload: &[u8]) -> Result<Delivery, HintError> {
    match parse_inbound(payload)? {
        Inbound::Event(d) => Ok(d),
        Inbound::Challenge { .. } => Err(HintError::UrlVerification),
    }
}

// ---------------------------------------------------------------------------
// Envelope decoding

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
    #[serde(default)]
    header: Option<RawHeader>,
    // v1 and url_verification fields
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ts: Option<Lenient>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawHeader {
    event_id: Option<String>,
    event_type: Option<String>,
    create_time: Option<Lenient>,
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1Probe {
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub(crate) fn parse_inbound(payload: &[u8]) -> Result<Inbound, HintError> {
    let env: RawEnvelope<'_> = serde_json::from_slice(payload).map_err(HintError::InvalidJson)?;

    if env.kind.as_deref() == Some("url_verification") && env.schema.is_none() {
        let challenge =
            non_empty(env.challenge).ok_or(HintError::MissingField { field: "challenge" })?;
        return Ok(Inbound::Challenge {
            challenge,
            token: env.token,
        });
    }

    let event = env.event.filter(|raw| raw.get() != "null");
    if env.schema.is_some() {
        // v2
        let header = env
            .header
            .ok_or(HintError::MissingField { field: "header" })?;
        let dedupe_key = non_empty(header.event_id).ok_or(HintError::MissingField {
            field: "header.event_id",
        })?;
        no_control("header.event_id", &dedupe_key)?;
        let event_type = non_empty(header.event_type).ok_or(HintError::MissingField {
            field: "header.event_type",
        })?;
        let create_time_ms = header
            .create_time
            .and_then(|v| v.as_f64("header.create_time"))
            .map(normalize_epoch_ms);
        let hint = parse_v2_body(&event_type, event)?;
        Ok(Inbound::Event(Delivery {
            dedupe_key,
            event_type,
            create_time_ms,
            token: header.token,
            hint,
        }))
    } else {
        // v1
        let dedupe_key = non_empty(env.uuid).ok_or(HintError::MissingField { field: "uuid" })?;
        no_control("uuid", &dedupe_key)?;
        let event = event.ok_or(HintError::MissingField { field: "event" })?;
        let probe: V1Probe =
            serde_json::from_str(event.get()).map_err(|e| HintError::InvalidField {
                field: "event",
                reason: e.to_string(),
            })?;
        let event_type = non_empty(probe.kind).ok_or(HintError::MissingField {
            field: "event.type",
        })?;
        let create_time_ms = env.ts.and_then(|v| v.as_f64("ts")).map(normalize_epoch_ms);
        let hint = parse_v1_body(&event_type, event)?;
        Ok(Inbound::Event(Delivery {
            dedupe_key,
            event_type,
            create_time_ms,
            token: env.token,
            hint,
        }))
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Refuses an identifier holding a control character. Feishu ids never
/// contain one, and the store cannot key by them (U+001F is its key
/// separator): such a delivery is a bad request (400), not a server fault
/// that Feishu would retry for hours.
fn no_control(field: &'static str, value: &str) -> Result<(), HintError> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(HintError::InvalidField {
            field,
            reason: format!("contains the control character U+{:04X}", u32::from(c)),
        }),
        None => Ok(()),
    }
}

/// Scales an epoch value of unknown unit to milliseconds: values below 10^11
/// are seconds, values above 10^14 are microseconds, the rest milliseconds.
pub(crate) fn normalize_epoch_ms(v: f64) -> i64 {
    if v.abs() < 1e11 {
        (v * 1000.0).round() as i64
    } else if v.abs() > 1e14 {
        (v / 1000.0).round() as i64
    } else {
        v.round() as i64
    }
}

fn decode_body<'de, T: Deserialize<'de>>(
    event_type: &str,
    raw: &'de RawValue,
) -> Result<T, HintError> {
    serde_json::from_str(raw.get()).map_err(|source| HintError::InvalidEvent {
        event_type: event_type.to_owned(),
        source,
    })
}

fn parse_v2_body(event_type: &str, event: Option<&RawValue>) -> Result<ChangeHint, HintError> {
    let known = matches!(
        event_type,
        EVENT_CHANGED | CALENDAR_CHANGED | ACL_CREATED | ACL_DELETED | RESERVE_CONFIG_UPDATED
    );
    if !known {
        return Ok(ChangeHint::Unknown {
            event_type: event_type.to_owned(),
        });
    }
    let event = event.ok_or(HintError::MissingField { field: "event" })?;
    match event_type {
        EVENT_CHANGED => {
            let b: EventChangedBody = decode_body(event_type, event)?;
            let calendar_id = non_empty(b.calendar_id).ok_or(HintError::MissingField {
                field: "event.calendar_id",
            })?;
            no_control("event.calendar_id", &calendar_id)?;
            Ok(ChangeHint::CalendarEventChanged {
                calendar_id,
                event_id: non_empty(b.calendar_event_id),
                change_type: non_empty(b.change_type).map(|s| ChangeType::from_wire(&s)),
                rsvp_infos: b.rsvp_infos.unwrap_or_default(),
                user_ids: b.user_id_list.unwrap_or_default(),
            })
        }
        CALENDAR_CHANGED => {
            let b: UserListBody = decode_body(event_type, event)?;
            Ok(ChangeHint::CalendarListChanged {
                user_ids: b.user_id_list.unwrap_or_default(),
            })
        }
        ACL_CREATED | ACL_DELETED => {
            let b: AclBody = decode_body(event_type, event)?;
            Ok(ChangeHint::AclChanged {
                created: event_type == ACL_CREATED,
                acl_id: non_empty(b.acl_id),
                role: non_empty(b.role),
                scope_user: b.scope.and_then(|s| s.user_id).filter(|u| !u.is_empty()),
                user_ids: b.user_id_list.unwrap_or_default(),
            })
        }
        _ => {
            let b: ReserveConfigBody = decode_body(event_type, event)?;
            let scope_id = non_empty(b.scope_id).ok_or(HintError::MissingField {
                field: "event.scope_id",
            })?;
            Ok(ChangeHint::ReserveConfigUpdated {
                scope_id,
                scope_type: b.scope_type.and_then(|v| v.as_i64("event.scope_type")),
                approval: b.approve_config.map(|a| ApprovalConfig {
                    approval_switch: a.approval_switch.and_then(|v| v.as_i64("approval_switch")),
                    approval_condition: a
                        .approval_condition
                        .and_then(|v| v.as_i64("approval_condition")),
                    meeting_duration_hours: a
                        .meeting_duration
                        .and_then(|v| v.as_f64("meeting_duration")),
                    approvers: users_of(a.approvers),
                }),
                time: b.time_config.map(|t| TimeConfig {
                    time_switch: t.time_switch.and_then(|v| v.as_i64("time_switch")),
                    days_in_advance: t.days_in_advance.and_then(|v| v.as_i64("days_in_advance")),
                    opening_hour_s: t.opening_hour.and_then(|v| v.as_i64("opening_hour")),
                    start_time_s: t.start_time.and_then(|v| v.as_i64("start_time")),
                    end_time_s: t.end_time.and_then(|v| v.as_i64("end_time")),
                    max_duration_hours: t.max_duration.and_then(|v| v.as_i64("max_duration")),
                }),
                scope: b.reserve_scope_config.map(|s| ReserveScopeConfig {
                    allow_all_users: s.allow_all_users.and_then(|v| v.as_i64("allow_all_users")),
                    allow_users: users_of(s.allow_users),
                    allow_depts: s.allow_depts.unwrap_or_default(),
                }),
            })
        }
    }
}

fn users_of(list: Option<Vec<UserWrapper>>) -> Vec<UserIds> {
    list.unwrap_or_default()
        .into_iter()
        .filter_map(|w| w.user_id)
        .collect()
}

fn parse_v1_body(event_type: &str, event: &RawValue) -> Result<ChangeHint, HintError> {
    let kind = match event_type {
        ROOM_EVENT_CREATED => RoomEventKind::Created,
        ROOM_EVENT_UPDATED => RoomEventKind::Updated,
        ROOM_EVENT_DELETED => RoomEventKind::Deleted,
        other => {
            return Ok(ChangeHint::Unknown {
                event_type: other.to_owned(),
            });
        }
    };
    let b: RoomEventBody = decode_body(event_type, event)?;
    let uid = non_empty(b.uid).ok_or(HintError::MissingField { field: "event.uid" })?;
    let event_id = non_empty(b.event_id);
    let original_time = match b.original_time {
        Some(v) => v
            .as_f64_strict()
            .map_err(|reason| HintError::InvalidField {
                field: "event.original_time",
                reason,
            })?,
        // Recover it from `<uid>_<original_time>` when only the id is sent.
        None => event_id
            .as_deref()
            .and_then(|id| id.strip_prefix(uid.as_str()))
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|t| t.parse::<f64>().ok())
            .ok_or(HintError::MissingField {
                field: "event.original_time",
            })?,
    };
    let original_time = if original_time.abs() > 1e11 {
        (original_time / 1000.0).floor() as i64
    } else {
        original_time as i64
    };
    Ok(ChangeHint::ThirdPartyRoomEvent {
        kind,
        uid,
        original_time,
        event_id,
        start_ms: b
            .start
            .and_then(|t| t.time_stamp)
            .and_then(|v| v.as_f64("start.time_stamp"))
            .map(normalize_epoch_ms),
        end_ms: b
            .end
            .and_then(|t| t.time_stamp)
            .and_then(|v| v.as_f64("end.time_stamp"))
            .map(normalize_epoch_ms),
        room_ids: b
            .meeting_rooms
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| non_empty(r.open_id))
            .collect(),
        organizer: b.organizer.filter(|u| !u.is_empty()),
    })
}

// ---------------------------------------------------------------------------
// Event bodies (private wire shapes; every field optional)

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventChangedBody {
    calendar_id: Option<String>,
    user_id_list: Option<Vec<UserIds>>,
    calendar_event_id: Option<String>,
    change_type: Option<String>,
    rsvp_infos: Option<Vec<RsvpInfo>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserListBody {
    user_id_list: Option<Vec<UserIds>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AclScope {
    user_id: Option<UserIds>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AclBody {
    acl_id: Option<String>,
    role: Option<String>,
    scope: Option<AclScope>,
    user_id_list: Option<Vec<UserIds>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserWrapper {
    user_id: Option<UserIds>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawApproval {
    approval_switch: Option<Lenient>,
    approval_condition: Option<Lenient>,
    meeting_duration: Option<Lenient>,
    approvers: Option<Vec<UserWrapper>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTimeConfig {
    time_switch: Option<Lenient>,
    days_in_advance: Option<Lenient>,
    opening_hour: Option<Lenient>,
    start_time: Option<Lenient>,
    end_time: Option<Lenient>,
    max_duration: Option<Lenient>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawScopeConfig {
    allow_all_users: Option<Lenient>,
    allow_users: Option<Vec<UserWrapper>>,
    allow_depts: Option<Vec<Department>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReserveConfigBody {
    scope_id: Option<String>,
    scope_type: Option<Lenient>,
    approve_config: Option<RawApproval>,
    time_config: Option<RawTimeConfig>,
    reserve_scope_config: Option<RawScopeConfig>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTimeStamp {
    time_stamp: Option<Lenient>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRoom {
    open_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RoomEventBody {
    uid: Option<String>,
    original_time: Option<Lenient>,
    event_id: Option<String>,
    start: Option<RawTimeStamp>,
    end: Option<RawTimeStamp>,
    meeting_rooms: Option<Vec<RawRoom>>,
    organizer: Option<UserIds>,
}

/// A number sent as a JSON number or a decimal string; anything else is kept
/// so that the caller decides whether it matters.
enum Lenient {
    Num(f64),
    Text(String),
    Other,
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Lenient, E> {
                Ok(Lenient::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Lenient, E> {
                Ok(Lenient::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Lenient, E> {
                Ok(Lenient::Num(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lenient, E> {
                Ok(Lenient::Text(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient, E> {
                Ok(Lenient::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Lenient, E> {
                Ok(Lenient::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Lenient, A::Error> {
                while a.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Lenient::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Lenient, A::Error> {
                while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Lenient::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl Lenient {
    fn as_f64_strict(&self) -> Result<f64, String> {
        match self {
            Lenient::Num(v) if v.is_finite() => Ok(*v),
            Lenient::Text(s) => match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(format!("{s:?} is not a number")),
            },
            _ => Err("not a number".to_owned()),
        }
    }

    /// The value, or `None` (logged at debug) when it is not a number.
    fn as_f64(&self, field: &'static str) -> Option<f64> {
        match self.as_f64_strict() {
            Ok(v) => Some(v),
            Err(reason) => {
                tracing::debug!(field, %reason, "ignoring unreadable optional number in push");
                None
            }
        }
    }

    fn as_i64(&self, field: &'static str) -> Option<i64> {
        self.as_f64(field).map(|v| v.round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the `calendar.calendar.event.changed_v4` page.
    const EVENT_CHANGED_EXAMPLE: &str = r#"{
        "schema": "2.0",
        "header": {
            "event_id": "5e3702a84e847582be8db7fb73283c02",
            "event_type": "calendar.calendar.event.changed_v4",
            "create_time": "1608725989000",
            "token": "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV",
            "app_id": "cli_9f5343c580712544",
            "tenant_key": "2ca1d211f64f6438"
        },
        "event": {
            "calendar_id": "feishu.cn_xxxxxxxxxx@group.calendar.feishu.cn",
            "user_id_list": [
                {"union_id": "on_xxxxxx", "user_id": "exxxxxxz", "open_id": "ou_xxxxxx"}
            ],
            "calendar_event_id": "efa67a98-06a8-4df5-8559-746c8f4477ef_0",
            "change_type": "create",
            "rsvp_infos": [
                {
                    "from_user_id": {
                        "union_id": "on_8ed6aa67826108097d9ee143816345",
                        "user_id": "e33ggbyz",
                        "open_id": "ou_84aad35d084aa403a838cf73ee18467"
                    },
                    "rsvp_status": "accept"
                }
            ]
        }
    }"#;

    /// The example of the `calendar.calendar.changed_v4` page.
    const CALENDAR_CHANGED_EXAMPLE: &str = r#"{
        "schema": "2.0",
        "header": {
            "event_id": "5e3702a84e847582be8db7fb73283c02",
            "event_type": "calendar.calendar.changed_v4",
            "create_time": "1608725989000",
            "token": "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV",
            "app_id": "cli_9f5343c580712544",
            "tenant_key": "2ca1d211f64f6438"
        },
        "event": {
            "user_id_list": [
                {"union_id": "on_xxxxxx", "user_id": "exxxxxxz", "open_id": "ou_xxxxxx"}
            ]
        }
    }"#;

    /// The example of the third-party meeting room page (v1 envelope).
    const ROOM_EVENT_EXAMPLE: &str = r#"{
        "ts": "1502199207.7171419",
        "uuid": "bc447199585340d1f3728d26b1c0297a",
        "token": "41a9425ea7df4536a7623e38fa321bae",
        "type": "event_callback",
        "event":{
            "app_id":"cli_xxxxxxxx",
            "tenant_key":"xxxxxxx",
            "type":"third_party_meeting_room_event_created",
            "event_id":"d123a331-e2g2-v4n2-h7g7-xxxx",
            "event_time":"1594979647635",
            "uid":"bff6b51f-b7c1-40c6-b8ef-aef966c9ffc7",
            "original_time":0,
            "start":{"time_stamp":"1553853600000"},
            "end":{"time_stamp":"1553860800000"},
            "meeting_rooms":[
                {"open_id":"omm_c4e2da9493fbd2ceea4f37aae6b3ee78"},
                {"open_id":"omm_a5ab469c8e012e2a0b48fe4a8e344f94"}],
            "organizer":{
                "open_id":"ou_xxxxxxxxxxxxxxxxxxxx",
                "user_id":"xxxxxxxx",
                "union_id":"on_xxxxxxxxxxxxx"
            }
        }
    }"#;

    /// The example of the `vc.reserve_config.updated_v1` page.
    const RESERVE_CONFIG_EXAMPLE: &str = r#"{
        "schema": "2.0",
        "header": {
            "event_id": "5e3702a84e847582be8db7fb73283c02",
            "event_type": "vc.reserve_config.updated_v1",
            "create_time": "1608725989000",
            "token": "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV",
            "app_id": "cli_9f5343c580712544",
            "tenant_key": "2ca1d211f64f6438"
        },
        "event": {
            "scope_id": "omm_3c5dd7e09bac0c1758fcf9511bd1a771",
            "scope_type": 2,
            "approve_config": {
                "approval_switch": 0,
                "approval_condition": 0,
                "meeting_duration": 1,
                "approvers": [{"user_id": {
                    "union_id": "on_8ed6aa67826108097d9ee143816345",
                    "user_id": "e33ggbyz",
                    "open_id": "ou_84aad35d084aa403a838cf73ee18467"}}]
            },
            "time_config": {
                "time_switch": 1,
                "days_in_advance": 30,
                "opening_hour": "27900",
                "start_time": "0",
                "end_time": "86400",
                "max_duration": 24
            },
            "reserve_scope_config": {
                "allow_all_users": 1,
                "allow_users": [{"user_id": {
                    "union_id": "on_8ed6aa67826108097d9ee143816345",
                    "user_id": "e33ggbyz",
                    "open_id": "ou_84aad35d084aa403a838cf73ee18467"}}],
                "allow_depts": [{"department_id": "od-47d8b570b0a011e9679a755efcc5f61a"}]
            }
        }
    }"#;

    fn user(union: &str, user: &str, open: &str) -> UserIds {
        UserIds {
            union_id: Some(union.into()),
            user_id: Some(user.into()),
            open_id: Some(open.into()),
        }
    }

    #[test]
    fn event_changed_doc_example() {
        let d = parse_event(EVENT_CHANGED_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.dedupe_key, "5e3702a84e847582be8db7fb73283c02");
        assert_eq!(d.event_type, EVENT_CHANGED);
        assert_eq!(d.create_time_ms, Some(1_608_725_989_000));
        assert_eq!(d.token.as_deref(), Some("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"));
        assert_eq!(
            d.hint,
            ChangeHint::CalendarEventChanged {
                calendar_id: "feishu.cn_xxxxxxxxxx@group.calendar.feishu.cn".into(),
                event_id: Some("efa67a98-06a8-4df5-8559-746c8f4477ef_0".into()),
                change_type: Some(ChangeType::Create),
                rsvp_infos: vec![RsvpInfo {
                    from_user_id: Some(user(
                        "on_8ed6aa67826108097d9ee143816345",
                        "e33ggbyz",
                        "ou_84aad35d084aa403a838cf73ee18467"
                    )),
                    rsvp_status: Some(RsvpStatus::Accept),
                }],
                user_ids: vec![user("on_xxxxxx", "exxxxxxz", "ou_xxxxxx")],
            }
        );
        assert_eq!(
            d.hint.calendar_id(),
            Some("feishu.cn_xxxxxxxxxx@group.calendar.feishu.cn")
        );
    }

    #[test]
    fn event_changed_without_gray_release_fields() {
        let d = parse_event(
            br#"{"schema":"2.0","header":{"event_id":"e1","event_type":"calendar.calendar.event.changed_v4"},
                "event":{"calendar_id":"cal_1","user_id_list":[{"open_id":"ou_1"}]}}"#,
        )
        .unwrap();
        assert_eq!(d.create_time_ms, None);
        assert_eq!(d.token, None);
        assert_eq!(
            d.hint,
            ChangeHint::CalendarEventChanged {
                calendar_id: "cal_1".into(),
                event_id: None,
                change_type: None,
                rsvp_infos: vec![],
                user_ids: vec![UserIds {
                    open_id: Some("ou_1".into()),
                    ..UserIds::default()
                }],
            }
        );
    }

    #[test]
    fn change_types_and_unknown_values() {
        for (wire, want) in [
            ("update", ChangeType::Update),
            ("delete", ChangeType::Delete),
            ("rsvp", ChangeType::Rsvp),
            ("moved", ChangeType::Other("moved".into())),
        ] {
            let json = format!(
                r#"{{"schema":"2.0","header":{{"event_id":"e","event_type":"{EVENT_CHANGED}"}},
                    "event":{{"calendar_id":"c","change_type":"{wire}",
                    "rsvp_infos":[{{"rsvp_status":"maybe"}}]}}}}"#
            );
            let d = parse_event(json.as_bytes()).unwrap();
            let ChangeHint::CalendarEventChanged {
                change_type,
                rsvp_infos,
                ..
            } = d.hint
            else {
                panic!("wrong hint {:?}", d.hint)
            };
            assert_eq!(change_type.as_ref(), Some(&want));
            assert_eq!(change_type.unwrap().as_str(), wire);
            assert_eq!(
                rsvp_infos[0].rsvp_status,
                Some(RsvpStatus::Other("maybe".into()))
            );
        }
    }

    #[test]
    fn calendar_changed_doc_example() {
        let d = parse_event(CALENDAR_CHANGED_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.event_type, CALENDAR_CHANGED);
        assert_eq!(
            d.hint,
            ChangeHint::CalendarListChanged {
                user_ids: vec![user("on_xxxxxx", "exxxxxxz", "ou_xxxxxx")]
            }
        );
        assert_eq!(d.hint.user_ids().len(), 1);
        assert_eq!(d.hint.calendar_id(), None);
    }

    #[test]
    fn acl_created_and_deleted() {
        for (ty, created) in [(ACL_CREATED, true), (ACL_DELETED, false)] {
            let json = format!(
                r#"{{"schema":"2.0","header":{{"event_id":"a1","event_type":"{ty}","create_time":"1608725989000"}},
                  "event":{{"acl_id":"user_123","role":"reader",
                  "scope":{{"type":"user","user_id":{{"open_id":"ou_9"}}}},
                  "user_id_list":[{{"open_id":"ou_1"}}]}}}}"#
            );
            let d = parse_event(json.as_bytes()).unwrap();
            assert_eq!(
                d.hint,
                ChangeHint::AclChanged {
                    created,
                    acl_id: Some("user_123".into()),
                    role: Some("reader".into()),
                    scope_user: Some(UserIds {
                        open_id: Some("ou_9".into()),
                        ..UserIds::default()
                    }),
                    user_ids: vec![UserIds {
                        open_id: Some("ou_1".into()),
                        ..UserIds::default()
                    }],
                }
            );
        }
    }

    #[test]
    fn third_party_room_doc_example_v1() {
        let d = parse_event(ROOM_EVENT_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.dedupe_key, "bc447199585340d1f3728d26b1c0297a");
        assert_eq!(d.event_type, ROOM_EVENT_CREATED);
        assert_eq!(d.token.as_deref(), Some("41a9425ea7df4536a7623e38fa321bae"));
        // ts "1502199207.7171419" seconds -> ms
        assert_eq!(d.create_time_ms, Some(1_502_199_207_717));
        assert_eq!(
            d.hint,
            ChangeHint::ThirdPartyRoomEvent {
                kind: RoomEventKind::Created,
                uid: "bff6b51f-b7c1-40c6-b8ef-aef966c9ffc7".into(),
                original_time: 0,
                event_id: Some("d123a331-e2g2-v4n2-h7g7-xxxx".into()),
                start_ms: Some(1_553_853_600_000),
                end_ms: Some(1_553_860_800_000),
                room_ids: vec![
                    "omm_c4e2da9493fbd2ceea4f37aae6b3ee78".into(),
                    "omm_a5ab469c8e012e2a0b48fe4a8e344f94".into()
                ],
                organizer: Some(user(
                    "on_xxxxxxxxxxxxx",
                    "xxxxxxxx",
                    "ou_xxxxxxxxxxxxxxxxxxxx"
                )),
            }
        );
    }

    fn room_event(ty: &str, original_time: &str, event_id: &str, start: &str) -> ChangeHint {
        let json = format!(
            r#"{{"uuid":"u1","token":"t","type":"event_callback",
              "event":{{"type":"{ty}","uid":"abc","original_time":{original_time},
              "event_id":{event_id},"start":{{"time_stamp":{start}}}}}}}"#
        );
        parse_event(json.as_bytes()).unwrap().hint
    }

    #[test]
    fn room_event_units_and_kinds() {
        // seconds as string, ms as int, ms as string.
        for (raw, want) in [
            ("\"1713168000\"", 1_713_168_000),
            ("1713168000000", 1_713_168_000),
            ("\"1713168000000\"", 1_713_168_000),
            ("1713168000", 1_713_168_000),
        ] {
            let ChangeHint::ThirdPartyRoomEvent { original_time, .. } =
                room_event(ROOM_EVENT_UPDATED, raw, "null", "null")
            else {
                panic!()
            };
            assert_eq!(original_time, want, "{raw}");
        }
        // start as int ms and as seconds (scaled to ms).
        let ChangeHint::ThirdPartyRoomEvent {
            kind,
            start_ms,
            end_ms,
            room_ids,
            organizer,
            ..
        } = room_event(ROOM_EVENT_DELETED, "0", "null", "1553853600000")
        else {
            panic!()
        };
        assert_eq!(kind, RoomEventKind::Deleted);
        assert_eq!(start_ms, Some(1_553_853_600_000));
        assert_eq!(end_ms, None);
        assert!(room_ids.is_empty());
        assert_eq!(organizer, None);
        let ChangeHint::ThirdPartyRoomEvent { start_ms, .. } =
            room_event(ROOM_EVENT_CREATED, "0", "null", "\"1553853600\"")
        else {
            panic!()
        };
        assert_eq!(start_ms, Some(1_553_853_600_000));
    }

    #[test]
    fn room_event_original_time_recovered_from_event_id() {
        let json = r#"{"uuid":"u1","event":{"type":"third_party_meeting_room_event_updated",
            "uid":"abc","event_id":"abc_1713168000"}}"#;
        let ChangeHint::ThirdPartyRoomEvent { original_time, .. } =
            parse_event(json.as_bytes()).unwrap().hint
        else {
            panic!()
        };
        assert_eq!(original_time, 1_713_168_000);

        let json = r#"{"uuid":"u1","event":{"type":"third_party_meeting_room_event_updated","uid":"abc"}}"#;
        let err = parse_event(json.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                HintError::MissingField {
                    field: "event.original_time"
                }
            ),
            "{err}"
        );
        let json = r#"{"uuid":"u1","event":{"type":"third_party_meeting_room_event_updated","uid":"abc","original_time":"soon"}}"#;
        let err = parse_event(json.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("original_time"), "{err}");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn reserve_config_doc_example() {
        let d = parse_event(RESERVE_CONFIG_EXAMPLE.as_bytes()).unwrap();
        let e33 = user(
            "on_8ed6aa67826108097d9ee143816345",
            "e33ggbyz",
            "ou_84aad35d084aa403a838cf73ee18467",
        );
        assert_eq!(
            d.hint,
            ChangeHint::ReserveConfigUpdated {
                scope_id: "omm_3c5dd7e09bac0c1758fcf9511bd1a771".into(),
                scope_type: Some(2),
                approval: Some(ApprovalConfig {
                    approval_switch: Some(0),
                    approval_condition: Some(0),
                    meeting_duration_hours: Some(1.0),
                    approvers: vec![e33.clone()],
                }),
                time: Some(TimeConfig {
                    time_switch: Some(1),
                    days_in_advance: Some(30),
                    opening_hour_s: Some(27_900),
                    start_time_s: Some(0),
                    end_time_s: Some(86_400),
                    max_duration_hours: Some(24),
                }),
                scope: Some(ReserveScopeConfig {
                    allow_all_users: Some(1),
                    allow_users: vec![e33],
                    allow_depts: vec![Department {
                        department_id: Some("od-47d8b570b0a011e9679a755efcc5f61a".into()),
                        department_name: None,
                    }],
                }),
            }
        );
    }

    #[test]
    fn reserve_config_minimal_and_garbage_numbers_are_absent() {
        let d = parse_event(
            br#"{"schema":"2.0","header":{"event_id":"r","event_type":"vc.reserve_config.updated_v1"},
                "event":{"scope_id":"omm_1","scope_type":"two","time_config":{"days_in_advance":"7"}}}"#,
        )
        .unwrap();
        assert_eq!(
            d.hint,
            ChangeHint::ReserveConfigUpdated {
                scope_id: "omm_1".into(),
                scope_type: None,
                approval: None,
                time: Some(TimeConfig {
                    days_in_advance: Some(7),
                    ..TimeConfig::default()
                }),
                scope: None,
            }
        );
    }

    #[test]
    fn unknown_event_types_v2_and_v1() {
        let d = parse_event(
            br#"{"schema":"2.0","header":{"event_id":"x","event_type":"im.message.receive_v1"},"event":{"anything":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(
            d.hint,
            ChangeHint::Unknown {
                event_type: "im.message.receive_v1".into()
            }
        );
        let d = parse_event(br#"{"uuid":"y","type":"event_callback","event":{"type":"app_open"}}"#)
            .unwrap();
        assert_eq!(d.dedupe_key, "y");
        assert_eq!(
            d.hint,
            ChangeHint::Unknown {
                event_type: "app_open".into()
            }
        );
    }

    #[test]
    fn create_time_units_are_normalized() {
        for (raw, want) in [
            ("\"1608725989000\"", 1_608_725_989_000),
            ("\"1603977298000000\"", 1_603_977_298_000),
            ("1608725989", 1_608_725_989_000),
            ("1608725989000", 1_608_725_989_000),
        ] {
            let json = format!(
                r#"{{"schema":"2.0","header":{{"event_id":"e","event_type":"x.y","create_time":{raw}}}}}"#
            );
            assert_eq!(
                parse_event(json.as_bytes()).unwrap().create_time_ms,
                Some(want),
                "{raw}"
            );
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not a valid JSON object"),
            (b"[1,2]", "not a valid JSON object"),
            (br#"{"schema":"2.0"}"#, "`header`"),
            (
                br#"{"schema":"2.0","header":{"event_type":"a"}}"#,
                "`header.event_id`",
            ),
            (
                br#"{"schema":"2.0","header":{"event_id":"","event_type":"a"}}"#,
                "`header.event_id`",
            ),
            (
                br#"{"schema":"2.0","header":{"event_id":"e"}}"#,
                "`header.event_type`",
            ),
            (br#"{"type":"event_callback","event":{"type":"a"}}"#, "`uuid`"),
            (br#"{"uuid":"u"}"#, "`event`"),
            (br#"{"uuid":"u","event":{}}"#, "`event.type`"),
            (
                br#"{"schema":"2.0","header":{"event_id":"e","event_type":"calendar.calendar.event.changed_v4"}}"#,
                "`event`",
            ),
            (
                br#"{"schema":"2.0","header":{"event_id":"e","event_type":"calendar.calendar.event.changed_v4"},"event":{}}"#,
                "`event.calendar_id`",
            ),
            (
                br#"{"schema":"2.0","header":{"event_id":"e","event_type":"calendar.calendar.event.changed_v4"},"event":{"calendar_id":5}}"#,
                "calendar.calendar.event.changed_v4 event is malformed",
            ),
            (
                br#"{"uuid":"u","event":{"type":"third_party_meeting_room_event_created","original_time":0}}"#,
                "`event.uid`",
            ),
            (
                br#"{"schema":"2.0","header":{"event_id":"e","event_type":"vc.reserve_config.updated_v1"},"event":{}}"#,
                "`event.scope_id`",
            ),
            (
                br#"{"type":"url_verification","challenge":"c"}"#,
                "url_verification",
            ),
            (br#"{"type":"url_verification"}"#, "`challenge`"),
        ];
        for (payload, needle) in cases {
            let err = parse_event(payload).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{} -> {err} (wanted {needle})",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn challenge_is_recognised_by_the_inbound_parser() {
        let inbound = parse_inbound(
            br#"{"challenge":"ajls384kdjx98XX","token":"xxxxxx","type":"url_verification"}"#,
        )
        .unwrap();
        assert_eq!(
            inbound,
            Inbound::Challenge {
                challenge: "ajls384kdjx98XX".into(),
                token: Some("xxxxxx".into())
            }
        );
    }

    #[test]
    fn debug_redacts_the_token() {
        let d = parse_event(EVENT_CHANGED_EXAMPLE.as_bytes()).unwrap();
        let dbg = format!("{d:?}");
        assert!(!dbg.contains("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_event(&bytes);
        }

        #[test]
        fn never_panics_on_arbitrary_event_bodies(body in "[ -~]{0,80}", ty in proptest::sample::select(vec![
            EVENT_CHANGED, CALENDAR_CHANGED, ACL_CREATED, RESERVE_CONFIG_UPDATED, ROOM_EVENT_UPDATED,
        ])) {
            let v2 = format!(r#"{{"schema":"2.0","header":{{"event_id":"e","event_type":"{ty}"}},"event":{body}}}"#);
            let _ = parse_event(v2.as_bytes());
            let v1 = format!(r#"{{"uuid":"u","event":{{"type":"{ty}","x":{body}}}}}"#);
            let _ = parse_event(v1.as_bytes());
        }
    }
}
