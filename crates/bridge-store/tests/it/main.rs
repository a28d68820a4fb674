//! Integration tests of `bridge-store`, one binary:
//!
//! - `tables`: round trips of every table, batches and their atomicity;
//! - `queue`: the dirty queue, delivery dedupe, failures and backoff;
//! - `open`: reopening, locking (same process and another process), file modes;
//! - `schema`: migration from a hand-made schema-1 database, newer schemas, foreign files;
//! - `model`: a random sequence of queue / dedupe operations against an in-memory model.

mod corrupt;
mod model;
mod open;
mod queue;
mod schema;
mod tables;

use std::path::PathBuf;

use bridge_store::Store;

/// A fresh directory and a store path inside a not-yet-existing subdirectory.
pub(crate) fn temp_store_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state").join("bridge.redb");
    (dir, path)
}

pub(crate) async fn temp_store() -> (tempfile::TempDir, Store) {
    let (dir, path) = temp_store_path();
    let store = Store::open(&path).await.expect("open store");
    (dir, store)
}
