//! Tables, the schema version and migrations.
//!
//! The schema version lives in `META["schema_version"]`. Opening a store:
//!
//! - a file without tables is initialized at [`SCHEMA_VERSION`] in one
//!   write transaction;
//! - an older version runs every applicable entry of [`MIGRATIONS`], in
//!   order, and the version bump, in one write transaction: a crash leaves
//!   either the old or the new schema, never a mix;
//! - a newer version is refused with `StoreError::NewerSchema`; it is
//!   detected through a read-only open first, so the file is not touched
//!   (a read-write redb open rewrites header bytes even without a
//!   transaction);
//! - a redb file with tables but no `META` is refused (`NotAStore`).
//!
//! # Versions
//!
//! **Schema 1** (the first design; no released binary wrote it, but it is
//! kept as a real step so the migration path is exercised by a test that
//! builds such a file by hand): `meta`, `calendar_to_cursor`,
//! `event_to_snapshot`, `sink_event_to_record` as today;
//! `calendar_to_dirty: &str -> i64` (the bare dirty-since time) and
//! `event_id_to_seen: &str -> i64` (the bare receive time, expiry implied).
//!
//! **Schema 2**: the dirty queue keeps the earliest and newest
//! hint, a count and a reason (`calendar_to_dirty: &str -> DirtyEntry`), so
//! a hint arriving during a sync is not lost; dedupe entries carry their own
//! expiry (`dedupe_key_to_seen: &str -> Seen`); new tables
//! `sink_event_to_failure` and `name_to_token`. The 1 -> 2 migration
//! rewrites each dirty time `t` as `{since: t, last_hint_at: t, hints: 1}`
//! and each receive time `t` as `{seen_at: t, expires_at: t + 8 h}`.
//!
//! **Schema 3**: a new table `name_to_state` for small named
//! pieces of engine and sink state that are not tokens (the cached source
//! calendar metadata, the target calendars a sink created, a sink's pause
//! reason). The 2 -> 3 migration only creates it.
//!
//! **Schema 4** (current): the meeting-room tables (`rooms` module): room
//! registry, booking rules per node, bookings and their decisions, the
//! room-event inbox, the reply outbox and the room-delivery dedupe set.
//! The 3 -> 4 migration only creates them.

use redb::{
    Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle,
    WriteTransaction,
};
use tracing::info;

use crate::codec::{Codec, Seen};
use crate::error::{Fault, StoreError};
use crate::model::{DEFAULT_DEDUPE_TTL, DirtyEntry, secs};
use std::path::Path;

/// The schema this code writes.
pub const SCHEMA_VERSION: u64 = 4;

pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";

pub(crate) type Bytes = TableDefinition<'static, &'static str, &'static [u8]>;

pub(crate) const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
pub(crate) const CALENDAR_TO_CURSOR: Bytes = TableDefinition::new("calendar_to_cursor");
pub(crate) const EVENT_TO_SNAPSHOT: Bytes = TableDefinition::new("event_to_snapshot");
pub(crate) const SINK_EVENT_TO_RECORD: Bytes = TableDefinition::new("sink_event_to_record");
pub(crate) const CALENDAR_TO_DIRTY: Bytes = TableDefinition::new("calendar_to_dirty");
pub(crate) const DEDUPE_KEY_TO_SEEN: Bytes = TableDefinition::new("dedupe_key_to_seen");
pub(crate) const SINK_EVENT_TO_FAILURE: Bytes = TableDefinition::new("sink_event_to_failure");
pub(crate) const NAME_TO_TOKEN: Bytes = TableDefinition::new("name_to_token");
pub(crate) const NAME_TO_STATE: Bytes = TableDefinition::new("name_to_state");

/// Every byte-valued table of the current schema.
pub(crate) const DATA_TABLES: [Bytes; 14] = [
    crate::rooms::ROOM_TO_INFO,
    crate::rooms::SCOPE_TO_RULES,
    crate::rooms::BOOKING_TO_STATE,
    crate::rooms::ROOM_INBOX,
    crate::rooms::ROOM_REPLY_OUTBOX,
    crate::rooms::ROOM_DELIVERY_SEEN,
    CALENDAR_TO_CURSOR,
    EVENT_TO_SNAPSHOT,
    SINK_EVENT_TO_RECORD,
    CALENDAR_TO_DIRTY,
    DEDUPE_KEY_TO_SEEN,
    SINK_EVENT_TO_FAILURE,
    NAME_TO_TOKEN,
    NAME_TO_STATE,
];

/// Tables of schema 1 that schema 2 replaced.
mod v1 {
    use redb::TableDefinition;

    pub(super) const CALENDAR_TO_DIRTY: TableDefinition<'static, &'static str, i64> =
        TableDefinition::new("calendar_to_dirty");
    pub(super) const EVENT_ID_TO_SEEN: TableDefinition<'static, &'static str, i64> =
        TableDefinition::new("event_id_to_seen");
}

/// One schema step, `from` -> `from + 1`, run inside the caller's write
/// transaction.
pub(crate) struct Migration {
    pub(crate) from: u64,
    pub(crate) description: &'static str,
    pub(crate) run: fn(&WriteTransaction) -> Result<(), Fault>,
}

/// Every migration, in order; entry `i` migrates from version `i + 1`.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 1,
        description: "dirty entries with hint range and count; dedupe entries with expiry; failure and token tables",
        run: v1_to_v2,
    },
    Migration {
        from: 2,
        description: "state table",
        run: v2_to_v3,
    },
    Migration {
        from: 3,
        description: "meeting-room tables",
        run: v3_to_v4,
    },
];

fn v3_to_v4(txn: &WriteTransaction) -> Result<(), Fault> {
    for t in crate::rooms::TABLES {
        txn.open_table(t)?;
    }
    Ok(())
}

fn v2_to_v3(txn: &WriteTransaction) -> Result<(), Fault> {
    txn.open_table(NAME_TO_STATE)?;
    Ok(())
}

fn v1_to_v2(txn: &WriteTransaction) -> Result<(), Fault> {
    let dirty: Vec<(String, i64)> = {
        let old = txn.open_table(v1::CALENDAR_TO_DIRTY)?;
        old.iter()?
            .map(|r| r.map(|(k, v)| (k.value().to_owned(), v.value())))
            .collect::<Result<_, _>>()?
    };
    txn.delete_table(v1::CALENDAR_TO_DIRTY)?;
    {
        let mut new = txn.open_table(CALENDAR_TO_DIRTY)?;
        for (calendar_id, since) in &dirty {
            let entry = DirtyEntry {
                calendar_id: calendar_id.clone(),
                since: *since,
                last_hint_at: *since,
                hints: 1,
                reason: "carried over from schema 1".into(),
            };
            new.insert(calendar_id.as_str(), entry.encode().as_slice())?;
        }
    }

    let seen: Vec<(String, i64)> = {
        let old = txn.open_table(v1::EVENT_ID_TO_SEEN)?;
        old.iter()?
            .map(|r| r.map(|(k, v)| (k.value().to_owned(), v.value())))
            .collect::<Result<_, _>>()?
    };
    txn.delete_table(v1::EVENT_ID_TO_SEEN)?;
    {
        let mut new = txn.open_table(DEDUPE_KEY_TO_SEEN)?;
        for (key, at) in &seen {
            let entry = Seen {
                seen_at: *at,
                expires_at: at.saturating_add(secs(DEFAULT_DEDUPE_TTL)),
            };
            new.insert(key.as_str(), entry.encode().as_slice())?;
        }
    }
    info!(
        dirty = dirty.len(),
        dedupe = seen.len(),
        "store migration 1 -> 2 rewrote dirty and dedupe entries"
    );
    Ok(())
}

fn create_tables(txn: &WriteTransaction) -> Result<(), Fault> {
    txn.open_table(META)?;
    for t in DATA_TABLES {
        txn.open_table(t)?;
    }
    Ok(())
}

/// The schema version stored in `db`; `None` for a database without tables.
pub(crate) fn stored_version(
    db: &impl ReadableDatabase,
    path: &Path,
) -> Result<Option<u64>, Fault> {
    let read = db.begin_read()?;
    let version = match read.open_table(META) {
        Ok(meta) => meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value()),
        Err(TableError::TableDoesNotExist(_)) => {
            if let Some(t) = read.list_tables()?.next() {
                return Err(StoreError::NotAStore {
                    path: path.to_owned(),
                    reason: format!("it has a table {:?} but no meta table", t.name()),
                }
                .into());
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    match version {
        Some(v) => Ok(Some(v)),
        None => Err(StoreError::NotAStore {
            path: path.to_owned(),
            reason: "its meta table has no schema_version".into(),
        }
        .into()),
    }
}

/// Brings the database to [`SCHEMA_VERSION`]; returns the version found.
pub(crate) fn prepare(db: &Database, path: &Path) -> Result<Option<u64>, Fault> {
    let found = stored_version(db, path)?;
    match found {
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found: v,
                supported: SCHEMA_VERSION,
            }
            .into());
        }
        Some(0) => {
            return Err(StoreError::NotAStore {
                path: path.to_owned(),
                reason: "schema_version 0 was never written by feishu-bridge".into(),
            }
            .into());
        }
        Some(v) => {
            let txn = db.begin_write()?;
            for m in MIGRATIONS.iter().filter(|m| m.from >= v) {
                info!(
                    from = m.from,
                    to = m.from + 1,
                    what = m.description,
                    "migrating store schema"
                );
                (m.run)(&txn)?;
            }
            create_tables(&txn)?;
            txn.open_table(META)?
                .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
            txn.commit()?;
            info!(from = v, to = SCHEMA_VERSION, path = %path.display(), "store schema migrated");
        }
        None => {
            let txn = db.begin_write()?;
            create_tables(&txn)?;
            txn.open_table(META)?
                .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
            txn.commit()?;
            info!(version = SCHEMA_VERSION, path = %path.display(), "store initialized");
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_form_a_chain_to_the_current_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.from,
                i as u64 + 1,
                "migration {i} starts at the wrong version"
            );
            assert!(!m.description.is_empty());
        }
        assert_eq!(MIGRATIONS.len() as u64 + 1, SCHEMA_VERSION);
    }

    #[test]
    fn table_names_are_distinct() {
        let mut names: Vec<&str> = DATA_TABLES.iter().map(|t| t.name()).collect();
        names.push(META.name());
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
