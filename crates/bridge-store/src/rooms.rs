//! The meeting-room tables (schema 4).
//!
//! | table | key | value |
//! |---|---|---|
//! | `room_to_info` | room id (`omm_…`) | the room as the registry last said (JSON) |
//! | `scope_to_rules` | room or level id | the booking restrictions set on that node (JSON) |
//! | `booking_to_state` | room 1F uid 1F original_time | the booking, its decisions and reply state (JSON) |
//! | `room_inbox` | sequence (20 digits) | a room event accepted from Feishu, waiting for a decision (JSON) |
//! | `room_reply_outbox` | room 1F uid 1F original_time 1F decision no. | a reply to send (JSON) |
//! | `room_delivery_seen` | delivery id (`uuid` / `event_id`) | when it was accepted (JSON) |
//!
//! The JSON documents belong to the room logic (`bridge-rooms`), which
//! versions them; the store keeps them verbatim after its format byte and
//! checks only that they are JSON. What the store guarantees is the
//! transaction: [`RoomWrite`] puts, deletes and claims across these tables
//! in ONE write transaction, so a decision, its reply and the removal of
//! the event that caused it are durable together or not at all.

use redb::{ReadableTable, WriteTransaction};

use crate::codec::TokenJson;
use crate::error::{Fault, StoreError};
use crate::keys;
use crate::schema::Bytes;
use crate::store::{Store, all, get, put, read, remove, write};

use redb::TableDefinition;

pub(crate) const ROOM_TO_INFO: Bytes = TableDefinition::new("room_to_info");
pub(crate) const SCOPE_TO_RULES: Bytes = TableDefinition::new("scope_to_rules");
pub(crate) const BOOKING_TO_STATE: Bytes = TableDefinition::new("booking_to_state");
pub(crate) const ROOM_INBOX: Bytes = TableDefinition::new("room_inbox");
pub(crate) const ROOM_REPLY_OUTBOX: Bytes = TableDefinition::new("room_reply_outbox");
pub(crate) const ROOM_DELIVERY_SEEN: Bytes = TableDefinition::new("room_delivery_seen");

/// Every room table.
pub(crate) const TABLES: [Bytes; 6] = [
    ROOM_TO_INFO,
    SCOPE_TO_RULES,
    BOOKING_TO_STATE,
    ROOM_INBOX,
    ROOM_REPLY_OUTBOX,
    ROOM_DELIVERY_SEEN,
];

/// One of the room tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomTable {
    /// Room registry cache, by room id.
    Rooms,
    /// Booking restrictions set on a node, by room or level id.
    Rules,
    /// Bookings with their decisions, by [`booking_key`].
    Bookings,
    /// Room events waiting for a decision, by [`inbox_key`].
    Inbox,
    /// Replies to send, by booking key + decision number.
    Outbox,
    /// Room deliveries already accepted, by delivery id.
    DeliverySeen,
}

impl RoomTable {
    fn def(self) -> Bytes {
        match self {
            Self::Rooms => ROOM_TO_INFO,
            Self::Rules => SCOPE_TO_RULES,
            Self::Bookings => BOOKING_TO_STATE,
            Self::Inbox => ROOM_INBOX,
            Self::Outbox => ROOM_REPLY_OUTBOX,
            Self::DeliverySeen => ROOM_DELIVERY_SEEN,
        }
    }
}

/// The key of a booking: room, uid, original_time (components checked).
///
/// # Errors
/// [`StoreError::InvalidInput`] for an empty component or one with U+001F.
pub fn booking_key(room_id: &str, uid: &str, original_time: i64) -> Result<String, StoreError> {
    keys::join(&[
        ("room id", room_id),
        ("event uid", uid),
        ("original time", &original_time.to_string()),
    ])
}

/// The inbox key of sequence number `seq`: zero-padded so that key order
/// is arrival order.
pub fn inbox_key(seq: u64) -> String {
    format!("{seq:020}")
}

#[derive(Debug, Clone)]
enum Op {
    Put(RoomTable, String, String),
    Delete(RoomTable, String),
    /// Inserts; if the key exists, the whole write is abandoned.
    Claim(RoomTable, String, String),
}

/// Changes to the room tables, applied in one transaction by
/// [`Store::room_write`].
#[derive(Debug, Clone, Default)]
pub struct RoomWrite {
    ops: Vec<Op>,
}

fn check_json(what: &'static str, value: &str) -> Result<(), StoreError> {
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| StoreError::InvalidInput {
            what,
            reason: format!("not JSON: {e}"),
        })
}

impl RoomWrite {
    /// An empty write.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a JSON document.
    pub fn put(
        &mut self,
        table: RoomTable,
        key: impl Into<String>,
        json: impl Into<String>,
    ) -> &mut Self {
        self.ops.push(Op::Put(table, key.into(), json.into()));
        self
    }

    /// Deletes a key (absent keys are fine).
    pub fn delete(&mut self, table: RoomTable, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete(table, key.into()));
        self
    }

    /// Inserts a key that must not exist yet; if it does, nothing of this
    /// write is applied and [`Store::room_write`] answers `false`.
    pub fn claim(
        &mut self,
        table: RoomTable,
        key: impl Into<String>,
        json: impl Into<String>,
    ) -> &mut Self {
        self.ops.push(Op::Claim(table, key.into(), json.into()));
        self
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Marker error: a claim found its key taken.
const CLAIMED: &str = "room write: key already claimed";

fn apply(txn: &WriteTransaction, ops: &[Op]) -> Result<(), Fault> {
    for op in ops {
        match op {
            Op::Put(t, k, v) => {
                let k = non_empty(k)?;
                put(&mut txn.open_table(t.def())?, k, &TokenJson(v.clone()))?;
            }
            Op::Delete(t, k) => {
                remove(&mut txn.open_table(t.def())?, k)?;
            }
            Op::Claim(t, k, v) => {
                let k = non_empty(k)?;
                let mut table = txn.open_table(t.def())?;
                if table.get(k)?.is_some() {
                    return Err(StoreError::InvalidInput {
                        what: "room write",
                        reason: CLAIMED.into(),
                    }
                    .into());
                }
                put(&mut table, k, &TokenJson(v.clone()))?;
            }
        }
    }
    Ok(())
}

/// Room keys may be composite ([`booking_key`]); they must not be empty.
fn non_empty(k: &str) -> Result<&str, StoreError> {
    if k.is_empty() {
        return Err(StoreError::InvalidInput {
            what: "room table key",
            reason: "empty".into(),
        });
    }
    Ok(k)
}

/// Decodes every room value (the integrity check).
pub(crate) fn check_all(txn: &redb::ReadTransaction) -> Result<(), Fault> {
    for t in TABLES {
        all::<TokenJson>(&txn.open_table(t)?)?;
    }
    Ok(())
}

impl Store {
    /// Applies a [`RoomWrite`] in one write transaction (durable on
    /// return). `Ok(false)`: a claim found its key taken and nothing was
    /// applied.
    ///
    /// # Errors
    /// Invalid keys or values ([`StoreError::InvalidInput`]), I/O.
    pub async fn room_write(&self, w: RoomWrite) -> Result<bool, StoreError> {
        for op in &w.ops {
            if let Op::Put(_, _, v) | Op::Claim(_, _, v) = op {
                check_json("room table value", v)?;
            }
        }
        if w.ops.is_empty() {
            return Ok(true);
        }
        let ops = w.ops;
        match self.run(move |db| write(db, |txn| apply(txn, &ops))).await {
            Ok(()) => Ok(true),
            Err(StoreError::InvalidInput { reason, .. }) if reason == CLAIMED => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One document of a room table.
    ///
    /// # Errors
    /// I/O or a value that does not decode.
    pub async fn room_get(
        &self,
        table: RoomTable,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.run(move |db| {
            read(db, |txn| {
                Ok(get::<TokenJson>(&txn.open_table(table.def())?, &key)?.map(|t| t.0))
            })
        })
        .await
    }

    /// Every `(key, document)` of a room table, in key order.
    ///
    /// # Errors
    /// I/O or a value that does not decode.
    pub async fn room_list(&self, table: RoomTable) -> Result<Vec<(String, String)>, StoreError> {
        self.run(move |db| {
            read(db, |txn| {
                Ok(all::<TokenJson>(&txn.open_table(table.def())?)?
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect())
            })
        })
        .await
    }

    /// The last key of a room table (the inbox's newest sequence).
    ///
    /// # Errors
    /// I/O.
    pub async fn room_last_key(&self, table: RoomTable) -> Result<Option<String>, StoreError> {
        self.run(move |db| {
            read(db, |txn| {
                let t = txn.open_table(table.def())?;
                Ok(t.last()?.map(|(k, _)| k.value().to_owned()))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claims_abandon_the_whole_write() {
        let s = Store::in_memory().await.unwrap();
        let mut w = RoomWrite::new();
        w.claim(RoomTable::DeliverySeen, "u1", "{}").put(
            RoomTable::Inbox,
            inbox_key(1),
            r#"{"a":1}"#,
        );
        assert!(s.room_write(w.clone()).await.unwrap());
        let mut again = RoomWrite::new();
        again
            .put(RoomTable::Inbox, inbox_key(2), r#"{"a":2}"#)
            .claim(RoomTable::DeliverySeen, "u1", "{}");
        assert!(!s.room_write(again).await.unwrap());
        let inbox = s.room_list(RoomTable::Inbox).await.unwrap();
        assert_eq!(inbox.len(), 1, "the refused write left nothing behind");
        assert_eq!(
            s.room_last_key(RoomTable::Inbox).await.unwrap(),
            Some(inbox_key(1))
        );
        let mut bad = RoomWrite::new();
        bad.put(RoomTable::Rooms, "omm_x", "not json");
        assert!(s.room_write(bad).await.is_err());
        assert!(booking_key("omm_x", "", 0).is_err());
    }
}
