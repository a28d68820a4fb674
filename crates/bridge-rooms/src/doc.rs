//! The documents the room logic keeps in the store's room tables. Each has
//! `v` (1); a document of another version is refused, never guessed.

use bridge_feishu::rooms::Room;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::RoomsError;
use crate::decide::Instance;
use crate::rules::{Effective, NodeSet};

/// The format version of every document.
pub const VERSION: u8 = 1;

/// Decodes a document, checking its version.
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &str,
    json: &str,
) -> Result<T, RoomsError> {
    #[derive(Deserialize)]
    struct V {
        v: u8,
    }
    let v: V = serde_json::from_str(json).map_err(|e| RoomsError::Doc {
        what,
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    if v.v != VERSION {
        return Err(RoomsError::Doc {
            what,
            key: key.to_owned(),
            reason: format!("version {} (this build reads {VERSION})", v.v),
        });
    }
    serde_json::from_str(json).map_err(|e| RoomsError::Doc {
        what,
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Encodes a document.
pub fn encode<T: Serialize>(doc: &T) -> String {
    serde_json::to_string(doc).unwrap_or_else(|_| "{}".to_owned())
}

/// A room as the registry last said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDoc {
    pub v: u8,
    pub room_id: String,
    pub name: String,
    pub capacity: i64,
    pub custom_room_id: String,
    pub room_level_id: String,
    /// Level ids from the tenant root (`"0"` first when Feishu sends it).
    pub path: Vec<String>,
    pub refreshed_at: i64,
}

impl RoomDoc {
    pub fn from_api(r: &Room, now: i64) -> Self {
        Self {
            v: VERSION,
            room_id: r.room_id.clone(),
            name: r.name.clone(),
            capacity: r.capacity,
            custom_room_id: r.custom_room_id.clone(),
            room_level_id: r.room_level_id.clone(),
            path: r.path.clone(),
            refreshed_at: now,
        }
    }

    /// The rule nodes from the root to the room: `"0"`, the levels, the room.
    pub fn nodes(&self) -> Vec<(String, u8)> {
        let mut out = vec![("0".to_owned(), 1)];
        for l in &self.path {
            if l != "0" && !l.is_empty() {
                out.push((l.clone(), 1));
            }
        }
        if !self.room_level_id.is_empty()
            && self.room_level_id != "0"
            && !out.iter().any(|(n, _)| n == &self.room_level_id)
        {
            out.push((self.room_level_id.clone(), 1));
        }
        out.push((self.room_id.clone(), 2));
        out
    }
}

/// The restrictions set on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesDoc {
    pub v: u8,
    pub set: NodeSet,
    pub read_at: i64,
    /// `api` (read with `reserve_scope`) or `event` (from the update event,
    /// until the re-read).
    pub from: String,
}

/// Where a booking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Accepted,
    Declined,
    Pending,
    /// Deleted in Feishu: the slot is free again.
    Freed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Pending => "pending",
            Self::Freed => "freed",
        }
    }
}

/// One reply a decision sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyPlan {
    pub original_time: i64,
    pub status: String,
    /// `queued`, `sent`, `not sent (reply = false)`, `obsolete (…)`.
    pub state: String,
    pub sent_at: Option<i64>,
    /// What happened on the way (a 105003 recovered, the last error).
    #[serde(default)]
    pub note: Option<String>,
}

/// One decision and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionDoc {
    pub n: u32,
    pub at: i64,
    /// `created`, `updated`, `deleted`, `approved`, `declined by admin`.
    pub trigger: String,
    pub status: Status,
    pub reasons: Vec<String>,
    pub passed: Vec<String>,
    pub instances: Vec<Instance>,
    pub declined_instances: Vec<i64>,
    pub rules: Option<Effective>,
    pub replies: Vec<ReplyPlan>,
}

/// A booking of a room by one event instance (room, uid, original_time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingDoc {
    pub v: u8,
    pub room_id: String,
    pub uid: String,
    pub original_time: i64,
    pub summary: String,
    pub organizer: Vec<String>,
    pub series: bool,
    pub instances: Vec<Instance>,
    pub declined_instances: Vec<i64>,
    pub status: Status,
    pub decisions: Vec<DecisionDoc>,
}

impl BookingDoc {
    /// How commands name it: `<room>/<uid>/<original_time>`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.room_id, self.uid, self.original_time)
    }

    /// The instances that hold the room (accepted, minus declined ones).
    pub fn held(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(move |i| {
            self.status == Status::Accepted && !self.declined_instances.contains(&i.original_time)
        })
    }
}

/// A room event accepted from Feishu, waiting for its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxDoc {
    pub v: u8,
    pub delivery_id: String,
    /// `created`, `updated`, `deleted`.
    pub kind: String,
    pub uid: String,
    pub original_time: i64,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub room_ids: Vec<String>,
    pub organizer: Vec<String>,
    pub received_at: i64,
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxDoc {
    pub v: u8,
    pub booking: String,
    pub decision: u32,
    pub index: u32,
    pub room_id: String,
    pub uid: String,
    pub original_time: i64,
    pub status: String,
    pub attempts: u32,
    pub next_at: i64,
    pub last_error: Option<String>,
    /// Set (durably) before each send and cleared by a definite answer: an
    /// entry found in flight after a restart may have reached Feishu.
    #[serde(default)]
    pub in_flight: bool,
}
