//! `Store`: the async facade over the synchronous redb core.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::backends::InMemoryBackend;
use redb::{
    Builder, Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, WriteTransaction,
};
use tracing::{debug, warn};

use crate::batch::{Batch, Op};
use crate::codec::{Codec, Seen, TokenJson, clean_error};
use crate::error::{Fault, StoreError};
use crate::keys;
use crate::model::{
    Backoff, Cursor, DirtyEntry, Failure, MIN_DEDUPE_TTL, Record, SinkItemKey, Snapshot,
    StoreStats, secs,
};
use crate::schema::{
    self, CALENDAR_TO_CURSOR, CALENDAR_TO_DIRTY, DEDUPE_KEY_TO_SEEN, EVENT_TO_SNAPSHOT, META,
    NAME_TO_STATE, NAME_TO_TOKEN, SCHEMA_VERSION_KEY, SINK_EVENT_TO_FAILURE, SINK_EVENT_TO_RECORD,
};

/// redb's page cache. Its default (1 GiB) is far more than a calendar
/// mirror needs; reads are sequential scans that the OS page cache serves
/// well, so 16 MiB (hot B-tree branch pages) keeps peak memory down.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

pub(crate) type BytesTable<'t> = Table<'t, &'static str, &'static [u8]>;

/// The bridge's local state. Cheap to clone (an `Arc` inside); every clone
/// is the same open database. See the crate docs for tables and encoding.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    // Field order matters: the database (and its file lock) is dropped
    // before the in-process claim on the path is released.
    // `Db(None)` only between a failed [`Store::reopen`] and the next one.
    db: std::sync::RwLock<Db>,
    path: PathBuf,
    _claim: Option<Claim>,
}

/// The database, closed without letting a panic out: redb flushes on
/// close and can panic doing so on a damaged file; that must not turn the
/// clear error a command is about to report into a crash.
struct Db(Option<Database>);

impl std::ops::Deref for Db {
    type Target = Database;
    fn deref(&self) -> &Database {
        // Always `Some` until `drop`.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("database used after close"))
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Database {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("database used after close"))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(db) = self.0.take()
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db))).is_err()
        {
            debug!("closing the store failed: the file is damaged");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Paths this process has open. redb's file lock already refuses a second
/// open on Linux, macOS and Windows, but whether a lock conflicts within
/// one process depends on the platform's lock flavour; this registry makes
/// a second `Store::open` in the same process fail the same way everywhere.
static OPEN_PATHS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

struct Claim(PathBuf);

impl Claim {
    fn take(canonical: PathBuf, shown: &Path) -> Result<Claim, StoreError> {
        let mut open = OPEN_PATHS.lock().unwrap_or_else(PoisonError::into_inner);
        if !open.insert(canonical.clone()) {
            return Err(StoreError::Locked {
                path: shown.to_owned(),
            });
        }
        Ok(Claim(canonical))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        OPEN_PATHS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// Creates the parent directories (0700) and the file (0600), or tightens
/// an existing file that others can read. Done before redb sees the file,
/// so no data is ever written to a file readable by others.
fn open_private_file(path: &Path) -> Result<File, StoreError> {
    let err = |source| StoreError::File {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(err)?;
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(err)?;
            warn!(
                path = %path.display(),
                was = format!("{mode:o}"),
                "store file was accessible to other users; tightened to 0600"
            );
        }
    }
    Ok(file)
}

/// Opening a redb file for writing touches its header even if no
/// transaction is written, so a store with a newer schema is detected
/// through a read-only open first: then the file is not modified at all.
/// Anything else the probe runs into is left to the read-write open,
/// which reports it (or repairs the file after a crash).
fn refuse_newer_schema(path: &Path, file: &File) -> Result<(), StoreError> {
    let len = file.metadata().map_or(0, |m| m.len());
    if len == 0 {
        return Ok(());
    }
    let db = match Builder::new().open_read_only(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::Locked {
                path: path.to_owned(),
            });
        }
        Err(_) => return Ok(()),
    };
    match schema::stored_version(&db, path) {
        Ok(Some(v)) if v > schema::SCHEMA_VERSION => Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: v,
            supported: schema::SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

/// Refuses what can be told from the file system alone, before anything
/// is created or opened for writing: a directory where the file should be,
/// and (when `refuse_empty`) an existing empty file.
fn refuse_non_store(path: &Path, refuse_empty: bool) -> Result<(), StoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::File {
                path: path.to_owned(),
                source,
            });
        }
    };
    let reason = if meta.is_dir() {
        "it is a directory"
    } else if !meta.is_file() {
        "it is not a regular file"
    } else if refuse_empty && meta.len() == 0 {
        // What a crash during creation or a full disk can leave of a store;
        // initializing it would silently start over from nothing.
        "the file is empty (0 bytes)"
    } else {
        return Ok(());
    };
    Err(StoreError::NotAStore {
        path: path.to_owned(),
        reason: reason.to_owned(),
    })
}

/// A redb error met while opening or using the file at `path`, with damage
/// named as such.
fn classify(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Database(db) if db.is_damage() => StoreError::Damaged {
            path: path.to_owned(),
            detail: db.to_string(),
        },
        other => other,
    }
}

/// What a panic of the blocking work becomes. redb may panic on a damaged
/// page (its reads trust the checksummed structure); the panic is caught
/// by the blocking pool and reported as damage, with the way out.
fn join_error(path: &Path, e: tokio::task::JoinError) -> StoreError {
    if e.is_panic() {
        let payload = e.into_panic();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        StoreError::Damaged {
            path: path.to_owned(),
            detail: format!("the database engine failed reading it: {msg}"),
        }
    } else {
        StoreError::Task(e.to_string())
    }
}

fn open_blocking(path: PathBuf, refuse_empty: bool) -> Result<Store, StoreError> {
    refuse_non_store(&path, refuse_empty)?;
    let file = open_private_file(&path)?;
    let canonical = std::fs::canonicalize(&path).map_err(|source| StoreError::File {
        path: path.clone(),
        source,
    })?;
    let claim = Claim::take(canonical, &path)?;
    refuse_newer_schema(&path, &file)?;
    let db = match Builder::new().set_cache_size(CACHE_BYTES).create_file(file) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::Locked { path });
        }
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            return Err(StoreError::NotAStore {
                path,
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(classify(&path, Fault::from(e).into())),
    };
    let found = schema::prepare(&db, &path).map_err(|f| classify(&path, f.into()))?;
    debug!(path = %path.display(), ?found, "store opened");
    Ok(Store {
        inner: Arc::new(Inner {
            db: std::sync::RwLock::new(Db(Some(db))),
            path,
            _claim: Some(claim),
        }),
    })
}

/// One write transaction with immediate durability: when it returns `Ok`,
/// the change is on disk. On error the transaction is aborted, so nothing
/// of it becomes visible.
pub(crate) fn write<T>(
    db: &Database,
    f: impl FnOnce(&WriteTransaction) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    match f(&txn) {
        Ok(v) => {
            txn.commit()?;
            Ok(v)
        }
        Err(e) => {
            if let Err(abort) = txn.abort() {
                warn!(error = %abort, "aborting a failed store transaction failed");
            }
            Err(e)
        }
    }
}

pub(crate) fn read<T>(
    db: &Database,
    f: impl FnOnce(&ReadTransaction) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let txn = db.begin_read()?;
    f(&txn)
}

pub(crate) fn get<T: Codec>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, Fault> {
    match table.get(key)? {
        Some(v) => Ok(Some(T::decode(key, v.value())?)),
        None => Ok(None),
    }
}

/// Every entry whose key lies in `[lo, hi)`, in key order.
fn range<T: Codec>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    (lo, hi): (String, String),
) -> Result<Vec<(String, T)>, Fault> {
    let mut out = Vec::new();
    for item in table.range::<&str>(lo.as_str()..hi.as_str())? {
        let (k, v) = item?;
        let k = k.value();
        out.push((k.to_owned(), T::decode(k, v.value())?));
    }
    Ok(out)
}

/// Like [`range`], keeping only what `f` extracts from each decoded value.
fn range_map<T: Codec, U>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    (lo, hi): (String, String),
    f: impl Fn(T) -> U,
) -> Result<Vec<(String, U)>, Fault> {
    let mut out = Vec::new();
    for item in table.range::<&str>(lo.as_str()..hi.as_str())? {
        let (k, v) = item?;
        let k = k.value();
        out.push((k.to_owned(), f(T::decode(k, v.value())?)));
    }
    Ok(out)
}

pub(crate) fn all<T: Codec>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, T)>, Fault> {
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let k = k.value();
        out.push((k.to_owned(), T::decode(k, v.value())?));
    }
    Ok(out)
}

pub(crate) fn put<T: Codec>(table: &mut BytesTable<'_>, key: &str, value: &T) -> Result<(), Fault> {
    table.insert(key, value.encode().as_slice())?;
    Ok(())
}

pub(crate) fn remove(table: &mut BytesTable<'_>, key: &str) -> Result<bool, Fault> {
    Ok(table.remove(key)?.is_some())
}

fn snapshot_key(calendar_id: &str, event_key: &str) -> Result<String, StoreError> {
    keys::join(&[("calendar id", calendar_id), ("event key", event_key)])
}

fn item_key(key: &SinkItemKey) -> Result<String, StoreError> {
    keys::join(&[
        ("sink id", &key.sink_id),
        ("calendar id", &key.calendar_id),
        ("event key", &key.event_key),
    ])
}

fn item_key_from(stored: &str) -> Result<SinkItemKey, StoreError> {
    let [sink_id, calendar_id, event_key] = keys::split::<3>("item key", stored)?;
    Ok(SinkItemKey {
        sink_id,
        calendar_id,
        event_key,
    })
}

/// Counts one more failed attempt of an item.
fn record_failure_in(
    table: &mut BytesTable<'_>,
    key: &SinkItemKey,
    error: &str,
    now: i64,
    backoff: Backoff,
) -> Result<Failure, Fault> {
    let k = item_key(key)?;
    let prev: Option<Failure> = get(table, &k)?;
    let attempts = prev.as_ref().map_or(1, |p| p.attempts.saturating_add(1));
    let failure = Failure {
        attempts,
        next_retry_at: now.saturating_add(secs(backoff.delay(attempts))),
        last_error: clean_error(error),
        first_failed_at: prev.map_or(now, |p| p.first_failed_at),
    };
    put(table, &k, &failure)?;
    debug!(
        sink_id = %key.sink_id,
        calendar_id = %key.calendar_id,
        event_key = %key.event_key,
        attempts,
        next_retry_at = failure.next_retry_at,
        "item failure recorded"
    );
    Ok(failure)
}

impl Store {
    /// Opens (or creates) the store at `path`.
    ///
    /// Creates missing parent directories (mode 0700) and the file (mode
    /// 0600; an existing file readable by others is tightened to 0600
    /// before anything is written). Takes an exclusive lock: while another
    /// process, or another `Store` in this process, has the file open,
    /// this fails with [`StoreError::Locked`]. Initializes a new file,
    /// migrates an older schema in one transaction, and refuses a newer
    /// schema with [`StoreError::NewerSchema`] without writing.
    ///
    /// An existing empty file is initialized (a file prepared in advance,
    /// with chosen permissions); see [`Store::open_refusing_empty`].
    /// A directory, a foreign or damaged file is refused
    /// ([`StoreError::NotAStore`], [`StoreError::Damaged`]) and left as it is.
    pub async fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Self::open_impl(path.as_ref(), false).await
    }

    /// Like [`Store::open`], but an existing empty (0-byte) file is refused
    /// with [`StoreError::NotAStore`] instead of being initialized: that is
    /// what a crash or a full disk can leave of a store, and starting over
    /// silently would lose every record. What the binary uses.
    pub async fn open_refusing_empty(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Self::open_impl(path.as_ref(), true).await
    }

    async fn open_impl(path: &Path, refuse_empty: bool) -> Result<Store, StoreError> {
        let shown = path.to_owned();
        let path = path.to_owned();
        match tokio::task::spawn_blocking(move || open_blocking(path, refuse_empty)).await {
            Ok(r) => r,
            Err(e) => Err(join_error(&shown, e)),
        }
    }

    /// Runs redb's integrity check (every page checksum; a file that was
    /// not closed cleanly is repaired by redb) and then decodes every
    /// stored value. Needs the only handle to the store (no clone alive).
    /// Returns the store when it is sound; [`StoreError::Damaged`] (or
    /// [`StoreError::Corrupt`] for an undecodable value) otherwise, also
    /// when redb had to repair the file, since its last changes may be lost.
    pub async fn check_integrity(self) -> Result<Store, StoreError> {
        let path = self.inner.path.clone();
        let shown = path.clone();
        let task = move || -> Result<Store, StoreError> {
            let mut store = self;
            let Some(inner) = Arc::get_mut(&mut store.inner) else {
                return Err(StoreError::InvalidInput {
                    what: "store handle",
                    reason: "the integrity check needs the only handle to the store".into(),
                });
            };
            let db = inner.db.get_mut().unwrap_or_else(PoisonError::into_inner);
            let Some(db) = db.0.as_mut() else {
                return Err(classify(&path, Fault::Db(redb::Error::PreviousIo).into()));
            };
            match db.check_integrity() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(StoreError::Damaged {
                        path,
                        detail: "redb found damage and repaired the file; changes since the last \
                                 sound transaction may be lost"
                            .into(),
                    });
                }
                Err(e) => return Err(classify(&path, Fault::from(e).into())),
            }
            read(db, |txn| {
                all::<Cursor>(&txn.open_table(CALENDAR_TO_CURSOR)?)?;
                all::<Snapshot>(&txn.open_table(EVENT_TO_SNAPSHOT)?)?;
                all::<Record>(&txn.open_table(SINK_EVENT_TO_RECORD)?)?;
                all::<DirtyEntry>(&txn.open_table(CALENDAR_TO_DIRTY)?)?;
                all::<Seen>(&txn.open_table(DEDUPE_KEY_TO_SEEN)?)?;
                all::<Failure>(&txn.open_table(SINK_EVENT_TO_FAILURE)?)?;
                all::<TokenJson>(&txn.open_table(NAME_TO_TOKEN)?)?;
                all::<TokenJson>(&txn.open_table(NAME_TO_STATE)?)?;
                crate::rooms::check_all(txn)?;
                Ok(())
            })
            .map_err(|f| classify(&path, f.into()))?;
            Ok(store)
        };
        match tokio::task::spawn_blocking(task).await {
            Ok(r) => r,
            Err(e) => Err(join_error(&shown, e)),
        }
    }

    /// A store held in memory only (tests, `--dry-run` without state).
    pub async fn in_memory() -> Result<Store, StoreError> {
        let open = || -> Result<Store, StoreError> {
            let path = PathBuf::from(":memory:");
            let db = Builder::new()
                .create_with_backend(InMemoryBackend::new())
                .map_err(Fault::from)?;
            schema::prepare(&db, &path)?;
            Ok(Store {
                inner: Arc::new(Inner {
                    db: std::sync::RwLock::new(Db(Some(db))),
                    path,
                    _claim: None,
                }),
            })
        };
        match tokio::task::spawn_blocking(open).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Task(e.to_string())),
        }
    }

    /// The path the store was opened with (`:memory:` for [`Store::in_memory`]).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the blocking pool: redb is synchronous and must never
    /// block a runtime thread.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, Fault> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let span = tracing::Span::current();
        let op = move || {
            let db = inner.db.read().unwrap_or_else(PoisonError::into_inner);
            match db.0.as_ref() {
                Some(db) => f(db),
                None => Err(Fault::Db(redb::Error::PreviousIo)),
            }
        };
        match tokio::task::spawn_blocking(move || span.in_scope(op)).await {
            Ok(r) => r.map_err(|f| classify(&self.inner.path, f.into())),
            Err(e) => Err(join_error(&self.inner.path, e)),
        }
    }

    /// Opens the database file again, after an I/O failure (a full disk):
    /// redb refuses every operation after a failed write until the file is
    /// reopened, so the daemon calls this to recover by itself once the
    /// disk has room again. Waits for running operations; if the file
    /// cannot be opened yet, operations fail until a later call succeeds.
    pub async fn reopen(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let reopen = move || -> Result<(), StoreError> {
            if inner._claim.is_none() {
                return Ok(()); // in memory: nothing to reopen
            }
            let mut slot = inner.db.write().unwrap_or_else(PoisonError::into_inner);
            // Release redb's file lock before opening the file again.
            *slot = Db(None);
            let file = open_private_file(&inner.path)?;
            let db = Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create_file(file)
                .map_err(Fault::from)?;
            schema::prepare(&db, &inner.path)?;
            *slot = Db(Some(db));
            debug!(path = %inner.path.display(), "store reopened");
            Ok(())
        };
        match tokio::task::spawn_blocking(reopen).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Task(e.to_string())),
        }
    }

    // ----- calendar cursors -----

    /// The cursor of a source calendar.
    pub async fn get_cursor(&self, calendar_id: &str) -> Result<Option<Cursor>, StoreError> {
        let cal = calendar_id.to_owned();
        self.run(move |db| {
            keys::component("calendar id", &cal)?;
            read(db, |txn| get(&txn.open_table(CALENDAR_TO_CURSOR)?, &cal))
        })
        .await
    }

    /// Writes the cursor of a source calendar. To commit a `sync_token`
    /// together with the items it covers, use [`Batch::put_cursor`].
    pub async fn put_cursor(&self, calendar_id: &str, cursor: Cursor) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put_cursor(calendar_id, cursor);
        self.apply_batch(batch).await
    }

    /// Forgets a calendar's cursor (the next sync is a full listing).
    /// Returns whether there was one.
    pub async fn clear_cursor(&self, calendar_id: &str) -> Result<bool, StoreError> {
        let cal = calendar_id.to_owned();
        self.run(move |db| {
            keys::component("calendar id", &cal)?;
            write(db, |txn| {
                remove(&mut txn.open_table(CALENDAR_TO_CURSOR)?, &cal)
            })
        })
        .await
    }

    /// Every calendar cursor as `(calendar_id, cursor)`, ordered by the
    /// calendar id's UTF-8 bytes: the calendars this store has synced.
    pub async fn list_cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        self.run(|db| read(db, |txn| all(&txn.open_table(CALENDAR_TO_CURSOR)?)))
            .await
    }

    // ----- event snapshots -----

    /// The snapshot of one event.
    pub async fn get_snapshot(
        &self,
        calendar_id: &str,
        event_key: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let key = snapshot_key(calendar_id, event_key)?;
        self.run(move |db| read(db, |txn| get(&txn.open_table(EVENT_TO_SNAPSHOT)?, &key)))
            .await
    }

    /// Every snapshot of a calendar as `(event_key, snapshot)`, ordered by
    /// the event key's UTF-8 bytes.
    pub async fn list_snapshots(
        &self,
        calendar_id: &str,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        let bounds = keys::prefix_range(&[("calendar id", calendar_id)])?;
        self.run(move |db| {
            read(db, |txn| {
                let rows: Vec<(String, Snapshot)> =
                    range(&txn.open_table(EVENT_TO_SNAPSHOT)?, bounds)?;
                Ok(rows
                    .into_iter()
                    .map(|(k, s)| (keys::last(&k).to_owned(), s))
                    .collect())
            })
        })
        .await
    }

    /// The content hash of every snapshot of a calendar (event key, hash),
    /// without holding the event bodies in memory.
    pub async fn list_snapshot_hashes(
        &self,
        calendar_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let bounds = keys::prefix_range(&[("calendar id", calendar_id)])?;
        self.run(move |db| {
            read(db, |txn| {
                let rows: Vec<(String, String)> = range_map(
                    &txn.open_table(EVENT_TO_SNAPSHOT)?,
                    bounds,
                    |s: Snapshot| s.content_hash,
                )?;
                Ok(rows
                    .into_iter()
                    .map(|(k, h)| (keys::last(&k).to_owned(), h))
                    .collect())
            })
        })
        .await
    }

    /// How many snapshots a calendar has.
    pub async fn count_snapshots(&self, calendar_id: &str) -> Result<u64, StoreError> {
        let (lo, hi) = keys::prefix_range(&[("calendar id", calendar_id)])?;
        self.run(move |db| {
            read(db, |txn| {
                let table = txn.open_table(EVENT_TO_SNAPSHOT)?;
                let mut n = 0u64;
                for item in table.range::<&str>(lo.as_str()..hi.as_str())? {
                    item?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .await
    }

    /// Writes one snapshot (one transaction). Prefer [`Store::apply_batch`]
    /// for many.
    pub async fn put_snapshot(
        &self,
        calendar_id: &str,
        event_key: &str,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put_snapshot(calendar_id, event_key, snapshot);
        self.apply_batch(batch).await
    }

    /// Removes one snapshot; returns whether it existed.
    pub async fn delete_snapshot(
        &self,
        calendar_id: &str,
        event_key: &str,
    ) -> Result<bool, StoreError> {
        let key = snapshot_key(calendar_id, event_key)?;
        self.run(move |db| {
            write(db, |txn| {
                remove(&mut txn.open_table(EVENT_TO_SNAPSHOT)?, &key)
            })
        })
        .await
    }

    // ----- per-sink records -----

    /// What was last applied to a sink for one event.
    pub async fn get_record(&self, key: &SinkItemKey) -> Result<Option<Record>, StoreError> {
        let k = item_key(key)?;
        self.run(move |db| read(db, |txn| get(&txn.open_table(SINK_EVENT_TO_RECORD)?, &k)))
            .await
    }

    /// Every record of one `(sink, calendar)` as `(event_key, record)`,
    /// ordered by the event key's UTF-8 bytes.
    pub async fn list_records(
        &self,
        sink_id: &str,
        calendar_id: &str,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let bounds = keys::prefix_range(&[("sink id", sink_id), ("calendar id", calendar_id)])?;
        self.run(move |db| {
            read(db, |txn| {
                let rows: Vec<(String, Record)> =
                    range(&txn.open_table(SINK_EVENT_TO_RECORD)?, bounds)?;
                Ok(rows
                    .into_iter()
                    .map(|(k, r)| (keys::last(&k).to_owned(), r))
                    .collect())
            })
        })
        .await
    }

    /// Writes one record (one transaction).
    pub async fn put_record(&self, key: &SinkItemKey, record: Record) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put_record(key.clone(), record);
        self.apply_batch(batch).await
    }

    /// Removes one record; returns whether it existed.
    pub async fn delete_record(&self, key: &SinkItemKey) -> Result<bool, StoreError> {
        let k = item_key(key)?;
        self.run(move |db| {
            write(db, |txn| {
                remove(&mut txn.open_table(SINK_EVENT_TO_RECORD)?, &k)
            })
        })
        .await
    }

    // ----- dirty-calendar queue -----

    /// Marks a calendar dirty. Idempotent: a calendar is queued once; the
    /// entry keeps the earliest hint (`since`), the newest (`last_hint_at`,
    /// whose `reason` it keeps) and the number of hints. Returns the entry.
    pub async fn mark_dirty(
        &self,
        calendar_id: &str,
        reason: &str,
        at: i64,
    ) -> Result<DirtyEntry, StoreError> {
        let cal = calendar_id.to_owned();
        let reason = reason.to_owned();
        self.run(move |db| {
            keys::component("calendar id", &cal)?;
            write(db, |txn| {
                let mut table = txn.open_table(CALENDAR_TO_DIRTY)?;
                let entry = match get::<DirtyEntry>(&table, &cal)? {
                    Some(mut e) => {
                        e.since = e.since.min(at);
                        if at >= e.last_hint_at {
                            e.last_hint_at = at;
                            e.reason = reason;
                        }
                        e.hints = e.hints.saturating_add(1);
                        e
                    }
                    None => DirtyEntry {
                        calendar_id: cal.clone(),
                        since: at,
                        last_hint_at: at,
                        hints: 1,
                        reason,
                    },
                };
                put(&mut table, &cal, &entry)?;
                debug!(calendar_id = %cal, hints = entry.hints, since = entry.since, "calendar marked dirty");
                Ok(entry)
            })
        })
        .await
    }

    /// The dirty calendars, oldest `since` first (ties by calendar id).
    pub async fn dirty(&self) -> Result<Vec<DirtyEntry>, StoreError> {
        self.run(|db| {
            read(db, |txn| {
                let rows: Vec<(String, DirtyEntry)> = all(&txn.open_table(CALENDAR_TO_DIRTY)?)?;
                let mut entries: Vec<DirtyEntry> = rows.into_iter().map(|(_, e)| e).collect();
                entries.sort_by(|a, b| (a.since, &a.calendar_id).cmp(&(b.since, &b.calendar_id)));
                Ok(entries)
            })
        })
        .await
    }

    /// Removes a calendar from the queue after a sync, unless a hint newer
    /// than `up_to` arrived (`last_hint_at > up_to`): then the entry stays
    /// and the calendar is synced again. Returns whether it was removed.
    ///
    /// A hint stamped exactly `up_to` counts as covered. Timestamps are
    /// whole seconds, so a worker should pass a time strictly before it
    /// began fetching (for instance `fetch_started_at - 1`): a hint in the
    /// same second as the fetch then keeps the entry, costing at most one
    /// extra sync instead of a missed change.
    pub async fn clear_dirty(&self, calendar_id: &str, up_to: i64) -> Result<bool, StoreError> {
        let cal = calendar_id.to_owned();
        self.run(move |db| {
            keys::component("calendar id", &cal)?;
            write(db, |txn| {
                let mut table = txn.open_table(CALENDAR_TO_DIRTY)?;
                match get::<DirtyEntry>(&table, &cal)? {
                    Some(e) if e.last_hint_at > up_to => {
                        debug!(calendar_id = %cal, last_hint_at = e.last_hint_at, up_to, "dirty entry kept: newer hint");
                        Ok(false)
                    }
                    Some(_) => remove(&mut table, &cal),
                    None => Ok(false),
                }
            })
        })
        .await
    }

    // ----- delivery dedupe -----

    /// Returns `true` if `dedupe_key` was seen and has not expired at `now`;
    /// otherwise records it as seen at `now`, expiring at `now + ttl`, and
    /// returns `false`. `ttl` is raised to [`MIN_DEDUPE_TTL`] (8 h, beyond
    /// Feishu's ~7.1 h retry horizon) if shorter. A repeat does not extend
    /// the expiry. An entry expires when `now >= expires_at`.
    pub async fn seen_or_insert(
        &self,
        dedupe_key: &str,
        now: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = keys::component("dedupe key", dedupe_key)?.to_owned();
        let ttl = secs(ttl.max(MIN_DEDUPE_TTL));
        self.run(move |db| {
            write(db, |txn| {
                let mut table = txn.open_table(DEDUPE_KEY_TO_SEEN)?;
                if let Some(seen) = get::<Seen>(&table, &key)?
                    && now < seen.expires_at
                {
                    return Ok(true);
                }
                let seen = Seen {
                    seen_at: now,
                    expires_at: now.saturating_add(ttl),
                };
                put(&mut table, &key, &seen)?;
                Ok(false)
            })
        })
        .await
    }

    /// Forgets a dedupe key (its delivery could not be taken, so Feishu's
    /// retry must be processed); returns whether it was there.
    pub async fn forget_seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let key = keys::component("dedupe key", dedupe_key)?.to_owned();
        self.run(move |db| {
            write(db, |txn| {
                let mut table = txn.open_table(DEDUPE_KEY_TO_SEEN)?;
                let removed = table.remove(key.as_str())?.is_some();
                Ok(removed)
            })
        })
        .await
    }

    /// Removes dedupe entries expired at `now`; returns how many.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.run(move |db| {
            write(db, |txn| {
                let mut table = txn.open_table(DEDUPE_KEY_TO_SEEN)?;
                let expired: Vec<String> = all::<Seen>(&table)?
                    .into_iter()
                    .filter(|(_, s)| now >= s.expires_at)
                    .map(|(k, _)| k)
                    .collect();
                for k in &expired {
                    table.remove(k.as_str())?;
                }
                debug!(purged = expired.len(), "expired dedupe entries purged");
                Ok(expired.len() as u64)
            })
        })
        .await
    }

    // ----- per-item failures -----

    /// Counts one more failed attempt: `attempts + 1`,
    /// `next_retry_at = now + backoff.delay(attempts)` (exponential, capped),
    /// the redacted error, and the first failure time of the streak. Returns
    /// the new state.
    pub async fn record_failure(
        &self,
        key: &SinkItemKey,
        error: &str,
        now: i64,
        backoff: Backoff,
    ) -> Result<Failure, StoreError> {
        let key = key.clone();
        let error = clean_error(error);
        self.run(move |db| {
            write(db, |txn| {
                record_failure_in(
                    &mut txn.open_table(SINK_EVENT_TO_FAILURE)?,
                    &key,
                    &error,
                    now,
                    backoff,
                )
            })
        })
        .await
    }

    /// The failure state of an item.
    pub async fn get_failure(&self, key: &SinkItemKey) -> Result<Option<Failure>, StoreError> {
        let k = item_key(key)?;
        self.run(move |db| read(db, |txn| get(&txn.open_table(SINK_EVENT_TO_FAILURE)?, &k)))
            .await
    }

    /// Forgets an item's failures; returns whether there were any.
    pub async fn clear_failure(&self, key: &SinkItemKey) -> Result<bool, StoreError> {
        let k = item_key(key)?;
        self.run(move |db| {
            write(db, |txn| {
                remove(&mut txn.open_table(SINK_EVENT_TO_FAILURE)?, &k)
            })
        })
        .await
    }

    /// Failures whose `next_retry_at <= now`, soonest first.
    pub async fn due_failures(&self, now: i64) -> Result<Vec<(SinkItemKey, Failure)>, StoreError> {
        self.run(move |db| {
            read(db, |txn| {
                let rows: Vec<(String, Failure)> = all(&txn.open_table(SINK_EVENT_TO_FAILURE)?)?;
                let mut due = Vec::new();
                for (k, f) in rows {
                    if f.next_retry_at <= now {
                        due.push((item_key_from(&k)?, f));
                    }
                }
                due.sort_by(|a, b| (a.1.next_retry_at, &a.0).cmp(&(b.1.next_retry_at, &b.0)));
                Ok(due)
            })
        })
        .await
    }

    // ----- tokens -----

    /// A stored token (JSON text), e.g. the Feishu user OAuth tokens.
    pub async fn get_token(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = keys::component("token name", name)?.to_owned();
        self.run(move |db| {
            read(db, |txn| {
                Ok(get::<TokenJson>(&txn.open_table(NAME_TO_TOKEN)?, &name)?.map(|t| t.0))
            })
        })
        .await
    }

    /// Stores a token (must be JSON text). Durable when it returns, which a
    /// rotated refresh token requires.
    pub async fn put_token(&self, name: &str, value_json: &str) -> Result<(), StoreError> {
        let name = keys::component("token name", name)?.to_owned();
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(value_json) {
            return Err(StoreError::InvalidInput {
                what: "token value",
                // The position only: the value itself is a secret.
                reason: format!("not JSON (line {}, column {})", e.line(), e.column()),
            });
        }
        let value = TokenJson(value_json.to_owned());
        self.run(move |db| {
            write(db, |txn| {
                put(&mut txn.open_table(NAME_TO_TOKEN)?, &name, &value)
            })
        })
        .await
    }

    /// Removes a token; returns whether it existed.
    pub async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let name = keys::component("token name", name)?.to_owned();
        self.run(move |db| write(db, |txn| remove(&mut txn.open_table(NAME_TO_TOKEN)?, &name)))
            .await
    }

    // ----- named state -----

    /// A piece of named state (JSON text): cached source calendar metadata,
    /// the target calendars a sink created, a sink's pause reason.
    pub async fn get_state(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = keys::component("state name", name)?.to_owned();
        self.run(move |db| {
            read(db, |txn| {
                Ok(get::<TokenJson>(&txn.open_table(NAME_TO_STATE)?, &name)?.map(|t| t.0))
            })
        })
        .await
    }

    /// Stores a piece of named state (must be JSON text); durable on return.
    pub async fn put_state(&self, name: &str, value_json: &str) -> Result<(), StoreError> {
        let name = keys::component("state name", name)?.to_owned();
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(value_json) {
            return Err(StoreError::InvalidInput {
                what: "state value",
                reason: format!("not JSON: {e}"),
            });
        }
        let value = TokenJson(value_json.to_owned());
        self.run(move |db| {
            write(db, |txn| {
                put(&mut txn.open_table(NAME_TO_STATE)?, &name, &value)
            })
        })
        .await
    }

    /// Removes a piece of named state; returns whether it existed.
    pub async fn delete_state(&self, name: &str) -> Result<bool, StoreError> {
        let name = keys::component("state name", name)?.to_owned();
        self.run(move |db| write(db, |txn| remove(&mut txn.open_table(NAME_TO_STATE)?, &name)))
            .await
    }

    // ----- batches and stats -----

    /// Applies every change of `batch`, in order, in ONE write transaction
    /// with immediate durability. If any change fails (for instance an
    /// invalid key), the transaction is aborted and nothing of the batch is
    /// visible.
    pub async fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        self.run(move |db| {
            write(db, |txn| {
                let mut snapshots = txn.open_table(EVENT_TO_SNAPSHOT)?;
                let mut records = txn.open_table(SINK_EVENT_TO_RECORD)?;
                let mut failures = txn.open_table(SINK_EVENT_TO_FAILURE)?;
                let mut cursors = txn.open_table(CALENDAR_TO_CURSOR)?;
                for op in batch.ops {
                    match op {
                        Op::PutSnapshot {
                            calendar_id,
                            event_key,
                            snapshot,
                        } => put(
                            &mut snapshots,
                            &snapshot_key(&calendar_id, &event_key)?,
                            &snapshot,
                        )?,
                        Op::DeleteSnapshot {
                            calendar_id,
                            event_key,
                        } => {
                            remove(&mut snapshots, &snapshot_key(&calendar_id, &event_key)?)?;
                        }
                        Op::PutRecord { key, record } => {
                            put(&mut records, &item_key(&key)?, &record)?;
                        }
                        Op::DeleteRecord { key } => {
                            remove(&mut records, &item_key(&key)?)?;
                        }
                        Op::PutFailure { key, failure } => {
                            put(&mut failures, &item_key(&key)?, &failure)?;
                        }
                        Op::RecordFailure {
                            key,
                            error,
                            now,
                            backoff,
                        } => {
                            record_failure_in(&mut failures, &key, &error, now, backoff)?;
                        }
                        Op::ClearFailure { key } => {
                            remove(&mut failures, &item_key(&key)?)?;
                        }
                        Op::PutCursor {
                            calendar_id,
                            cursor,
                        } => {
                            keys::component("calendar id", &calendar_id)?;
                            put(&mut cursors, &calendar_id, &cursor)?;
                        }
                    }
                }
                Ok(())
            })?;
            debug!(changes = n, "batch committed");
            Ok(())
        })
        .await
    }

    /// Entry counts per table.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.run(|db| {
            read(db, |txn| {
                Ok(StoreStats {
                    schema_version: txn
                        .open_table(META)?
                        .get(SCHEMA_VERSION_KEY)?
                        .map_or(0, |v| v.value()),
                    cursors: txn.open_table(CALENDAR_TO_CURSOR)?.len()?,
                    snapshots: txn.open_table(EVENT_TO_SNAPSHOT)?.len()?,
                    records: txn.open_table(SINK_EVENT_TO_RECORD)?.len()?,
                    dirty: txn.open_table(CALENDAR_TO_DIRTY)?.len()?,
                    dedupe: txn.open_table(DEDUPE_KEY_TO_SEEN)?.len()?,
                    failures: txn.open_table(SINK_EVENT_TO_FAILURE)?.len()?,
                    tokens: txn.open_table(NAME_TO_TOKEN)?.len()?,
                })
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(n: i64) -> Cursor {
        Cursor {
            sync_token: (n % 2 == 0).then(|| format!("token-{n}")),
            obtained_at: n,
            last_full_sync: Some(n),
            last_sync: Some(n + 1),
        }
    }

    #[tokio::test]
    async fn list_cursors_returns_every_calendar_in_id_order() {
        let store = Store::in_memory().await.unwrap();
        assert!(store.list_cursors().await.unwrap().is_empty());
        for (cal, n) in [("cal-b", 2), ("cal-a", 1), ("cal-c", 3)] {
            store.put_cursor(cal, cursor(n)).await.unwrap();
        }
        // Other tables do not make a calendar appear.
        store.mark_dirty("cal-d", "hint", 5).await.unwrap();
        let listed = store.list_cursors().await.unwrap();
        assert_eq!(
            listed,
            vec![
                ("cal-a".to_owned(), cursor(1)),
                ("cal-b".to_owned(), cursor(2)),
                ("cal-c".to_owned(), cursor(3)),
            ]
        );
        assert!(store.clear_cursor("cal-b").await.unwrap());
        let ids: Vec<String> = store
            .list_cursors()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["cal-a", "cal-c"]);
    }
}
