//! `Batch`: everything one applied batch changes, committed in one write
//! transaction.

use crate::codec::clean_error;
use crate::model::{Backoff, Cursor, Failure, Record, SinkItemKey, Snapshot};

/// One change inside a batch.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    PutSnapshot {
        calendar_id: String,
        event_key: String,
        snapshot: Snapshot,
    },
    DeleteSnapshot {
        calendar_id: String,
        event_key: String,
    },
    PutRecord {
        key: SinkItemKey,
        record: Record,
    },
    DeleteRecord {
        key: SinkItemKey,
    },
    PutFailure {
        key: SinkItemKey,
        failure: Failure,
    },
    RecordFailure {
        key: SinkItemKey,
        error: String,
        now: i64,
        backoff: Backoff,
    },
    ClearFailure {
        key: SinkItemKey,
    },
    PutCursor {
        calendar_id: String,
        cursor: Cursor,
    },
}

/// Changes applied together by `Store::apply_batch`, in the order they were
/// added, in ONE write transaction: either all of them are committed or
/// none. This is what lets the engine record a batch of sink results and
/// the calendar's new `sync_token` so that the token is never durable
/// before the items it covers.
///
/// Error texts are redacted when they are added, so a `Batch` never holds
/// (or prints with `Debug`) an unredacted error.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Writes (or replaces) an event snapshot.
    pub fn put_snapshot(
        &mut self,
        calendar_id: impl Into<String>,
        event_key: impl Into<String>,
        snapshot: Snapshot,
    ) -> &mut Self {
        self.ops.push(Op::PutSnapshot {
            calendar_id: calendar_id.into(),
            event_key: event_key.into(),
            snapshot,
        });
        self
    }

    /// Removes an event snapshot (no error if absent).
    pub fn delete_snapshot(
        &mut self,
        calendar_id: impl Into<String>,
        event_key: impl Into<String>,
    ) -> &mut Self {
        self.ops.push(Op::DeleteSnapshot {
            calendar_id: calendar_id.into(),
            event_key: event_key.into(),
        });
        self
    }

    /// Writes (or replaces) a sink record.
    pub fn put_record(&mut self, key: SinkItemKey, record: Record) -> &mut Self {
        self.ops.push(Op::PutRecord { key, record });
        self
    }

    /// Removes a sink record (no error if absent).
    pub fn delete_record(&mut self, key: SinkItemKey) -> &mut Self {
        self.ops.push(Op::DeleteRecord { key });
        self
    }

    /// Writes a failure as given (its error is redacted).
    pub fn put_failure(&mut self, key: SinkItemKey, mut failure: Failure) -> &mut Self {
        failure.last_error = clean_error(&failure.last_error);
        self.ops.push(Op::PutFailure { key, failure });
        self
    }

    /// Counts one more failed attempt, like `Store::record_failure`.
    pub fn record_failure(
        &mut self,
        key: SinkItemKey,
        error: &str,
        now: i64,
        backoff: Backoff,
    ) -> &mut Self {
        self.ops.push(Op::RecordFailure {
            key,
            error: clean_error(error),
            now,
            backoff,
        });
        self
    }

    /// Forgets a failure (the item succeeded or is gone).
    pub fn clear_failure(&mut self, key: SinkItemKey) -> &mut Self {
        self.ops.push(Op::ClearFailure { key });
        self
    }

    /// Writes a calendar cursor. Add it after the items it covers; since the
    /// batch is one transaction, it is never durable without them.
    pub fn put_cursor(&mut self, calendar_id: impl Into<String>, cursor: Cursor) -> &mut Self {
        self.ops.push(Op::PutCursor {
            calendar_id: calendar_id.into(),
            cursor,
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_redacted_when_added() {
        let mut b = Batch::new();
        b.record_failure(
            SinkItemKey::new("s", "c", "u_0"),
            "refresh_token=hunter2",
            0,
            Backoff::default(),
        )
        .put_failure(
            SinkItemKey::new("s", "c", "u_1"),
            Failure {
                attempts: 1,
                next_retry_at: 0,
                last_error: "app_secret: hunter3".into(),
                first_failed_at: 0,
            },
        );
        assert_eq!(b.len(), 2);
        let dbg = format!("{b:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("hunter3"),
            "{dbg}"
        );
    }
}
