//! The local state of feishu-bridge, on [redb](https://docs.rs/redb).
//!
//! Architecture invariant: **no redb type escapes this crate.** Callers see
//! [`Store`], the domain types in this crate and [`StoreError`]; redb errors
//! are wrapped in the opaque [`DbError`].
//!
//! # Tables
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` | `u64`: `schema_version` |
//! | `calendar_to_cursor` | calendar id | [`Cursor`]: Feishu `sync_token`, when obtained, last full / any sync |
//! | `event_to_snapshot` | calendar id, event key | [`Snapshot`]: the Feishu event JSON as received, its content hash |
//! | `sink_event_to_record` | sink id, calendar id, event key | [`Record`]: remote id, etag, applied hash, sequence, tombstone |
//! | `calendar_to_dirty` | calendar id | [`DirtyEntry`]: the durable dirty queue |
//! | `dedupe_key_to_seen` | delivery id (`header.event_id` / `uuid`) | seen at, expires at |
//! | `sink_event_to_failure` | sink id, calendar id, event key | [`Failure`]: attempts, next retry, redacted error |
//! | `name_to_token` | token name | token JSON (user OAuth tokens) |
//! | `name_to_state` | state name | JSON: cached calendar metadata, created target calendars, sink pause reasons |
//! | `room_to_info`, `scope_to_rules`, `booking_to_state`, `room_inbox`, `room_reply_outbox`, `room_delivery_seen` | see the `rooms` module | meeting rooms: registry, rules, bookings, inbox, reply outbox |
//!
//! # Keys
//!
//! Keys are `&str`; composite keys join their components with U+001F, and
//! components may be neither empty nor contain U+001F (refused with
//! [`StoreError::InvalidInput`]), which makes the encoding unambiguous and
//! puts all keys of one calendar or one `(sink, calendar)` in one
//! contiguous range. Details in the `keys` module.
//!
//! # Values
//!
//! Every value (except `meta`'s integers) is a format-version byte followed
//! by a body; version 1 is a JSON object with a fixed, frozen set of fields
//! (`codec` module; the bytes are pinned by unit tests). The domain types
//! have no serde derives, so changing them cannot silently change the disk
//! format. An unknown version byte is an error ([`StoreError::Corrupt`]),
//! never a guess. Error texts of failures are redacted ([`redact`]) and
//! bounded before they are stored.
//!
//! # Schema versions
//!
//! `meta["schema_version"]` is [`SCHEMA_VERSION`]. An older store is
//! migrated by an ordered list of migrations in one write transaction; a
//! newer one is refused with [`StoreError::NewerSchema`] before anything is
//! written. The `schema` module documents each version.
//!
//! # Durability, concurrency, locking
//!
//! - Every mutating method is one write transaction committed with redb's
//!   `Durability::Immediate` (the default, set explicitly): it is on disk
//!   when the method returns. [`Store::apply_batch`] puts a whole batch,
//!   sink results and the calendar's new cursor, in one transaction, so a
//!   `sync_token` is never durable before the items it covers.
//! - Every method is `async` and runs its redb work on tokio's blocking
//!   pool (`spawn_blocking`); redb is synchronous. redb serializes write
//!   transactions; readers see consistent snapshots and never block.
//! - One process owns the file: a second `Store::open` of the same path
//!   (in another process or this one) fails with [`StoreError::Locked`].
//!   While the daemon runs, other commands go through its admin endpoint.
//! - The file is created with mode 0600 (an existing one is tightened),
//!   its new parent directories with 0700: it holds OAuth tokens.
//!
//! # Time
//!
//! The store never reads the clock: every time is a parameter, in Unix
//! seconds.

#![warn(missing_docs)]

mod batch;
mod codec;
mod error;
mod keys;
mod model;
mod redact;
mod rooms;
mod schema;
mod store;

pub use batch::Batch;
pub use error::{DbError, StoreError};
pub use model::{
    Backoff, Cursor, DEFAULT_DEDUPE_TTL, DirtyEntry, Failure, MAX_ERROR_LEN, MIN_DEDUPE_TTL,
    Record, SinkItemKey, Snapshot, StoreStats,
};
pub use redact::redact;
pub use rooms::{RoomTable, RoomWrite, booking_key, inbox_key};
pub use schema::SCHEMA_VERSION;
pub use store::Store;
