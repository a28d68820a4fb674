//! `StoreError`, and the crate-private `Fault` that carries redb errors to
//! the API boundary without naming redb in any public signature.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another handle (in practice: another feishu-bridge process, usually
    /// the daemon) holds the database. redb allows one writer process.
    #[error(
        "the store {} is in use by another feishu-bridge process (probably the daemon `feishu-bridge run`); \
         use the daemon's admin endpoint while it runs, or stop it and try again",
        path.display()
    )]
    Locked {
        /// The store file.
        path: PathBuf,
    },

    /// The file or its directory could not be created, opened or made private.
    #[error("cannot prepare the store file {}: {source}", path.display())]
    File {
        /// The store file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },

    /// The database was written by a newer feishu-bridge. Nothing was written.
    #[error(
        "the store {} has schema version {found}, but this feishu-bridge knows versions up to {supported}; \
         upgrade feishu-bridge (the store was not modified)",
        path.display()
    )]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// The schema version in the file.
        found: u64,
        /// The newest schema version this code knows.
        supported: u64,
    },

    /// The file is not a feishu-bridge store (not redb, or someone else's
    /// redb, an empty file, a directory). Nothing was written to it.
    #[error(
        "{} is not a feishu-bridge store: {reason}. It was left as it is: restore the store from a backup, \
         or move this aside and run `feishu-bridge reconcile` to rebuild the store from Feishu",
        path.display()
    )]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },

    /// The database file is damaged (checksums, structure, or the database
    /// engine failed while reading it).
    #[error(
        "the store {} is damaged ({detail}): restore it from a backup, or move it aside and run \
         `feishu-bridge reconcile` to rebuild it from Feishu",
        path.display()
    )]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },

    /// A stored value could not be decoded (unknown format version, bad bytes).
    #[error(
        "stored {what} at key {key:?} is unreadable: {reason}; the store is damaged: restore it \
         from a backup, or move it aside and run `feishu-bridge reconcile` to rebuild it from Feishu"
    )]
    Corrupt {
        /// Which kind of value.
        what: &'static str,
        /// Its table key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An argument the store cannot accept (empty id, id containing the key separator, ...).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// An error of the underlying database engine.
    #[error("store database error: {0}")]
    Database(#[source] DbError),

    /// The blocking task running the operation panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when the store file is damaged or not a store at all: the
    /// operator must restore or rebuild it (the message says how).
    pub fn is_damaged(&self) -> bool {
        match self {
            StoreError::NotAStore { .. }
            | StoreError::Damaged { .. }
            | StoreError::Corrupt { .. } => true,
            StoreError::Database(e) => e.is_damage(),
            _ => false,
        }
    }

    /// True when retrying the same operation later may succeed without
    /// anyone changing anything (I/O trouble such as a full disk). A locked
    /// store, a newer schema, corruption or bad input are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => e.is_transient(),
            StoreError::File { source, .. } => io_transient(source),
            StoreError::Locked { .. }
            | StoreError::NewerSchema { .. }
            | StoreError::NotAStore { .. }
            | StoreError::Damaged { .. }
            | StoreError::Corrupt { .. }
            | StoreError::InvalidInput { .. }
            | StoreError::Task(_) => false,
        }
    }
}

/// An error of the database engine, kept opaque so that no engine type is
/// part of this crate's API. `Display` and `source()` carry the details.
pub struct DbError(redb::Error);

/// I/O trouble that may pass by itself (a full disk, a busy resource), as
/// opposed to a missing file, a permission or bad data.
fn io_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::Interrupted | K::WouldBlock | K::TimedOut | K::StorageFull | K::ResourceBusy
    )
}

impl DbError {
    /// The file is damaged or not a redb database of a version we read.
    pub(crate) fn is_damage(&self) -> bool {
        matches!(
            &self.0,
            redb::Error::Corrupted(_)
                | redb::Error::RepairAborted
                | redb::Error::UpgradeRequired(_)
        ) || matches!(&self.0, redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
    }

    fn is_transient(&self) -> bool {
        match &self.0 {
            redb::Error::Io(e) => io_transient(e),
            _ => false,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// What the blocking core returns: a redb error (converted by `?` from any
/// of redb's per-operation error types) or an already classified
/// `StoreError`. It becomes a `StoreError` at the async boundary.
#[derive(Debug)]
pub(crate) enum Fault {
    Db(redb::Error),
    Store(StoreError),
}

impl From<Fault> for StoreError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Db(e) => StoreError::Database(DbError(e)),
            Fault::Store(e) => e,
        }
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Store(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Fault {
            fn from(e: $t) -> Self {
                Fault::Db(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_message_names_the_daemon_and_the_way_out() {
        let e = StoreError::Locked {
            path: PathBuf::from("/s/bridge.redb"),
        };
        let msg = e.to_string();
        assert!(msg.contains("/s/bridge.redb"));
        assert!(msg.contains("another feishu-bridge"));
        assert!(msg.contains("daemon"));
        assert!(msg.contains("admin endpoint"));
        assert!(msg.contains("stop it"));
        assert!(!e.is_transient());
    }

    #[test]
    fn io_is_transient_and_corruption_is_not() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(StoreError::from(Fault::Db(redb::Error::Io(full))).is_transient());
        let bad = std::io::Error::from(std::io::ErrorKind::InvalidData);
        assert!(!StoreError::from(Fault::Db(redb::Error::Io(bad))).is_transient());
        let corrupt = StoreError::from(Fault::Db(redb::Error::Corrupted("x".into())));
        assert!(!corrupt.is_transient());
        let bad = StoreError::Corrupt {
            what: "cursor",
            key: "c".into(),
            reason: "r".into(),
        };
        assert!(!bad.is_transient());
    }
}
