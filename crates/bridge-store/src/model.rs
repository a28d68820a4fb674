//! The domain types the store reads and writes. They carry no serde
//! derives: their stored form is defined in `codec`, with a version byte.

use std::time::Duration;

/// The Feishu delivery retry horizon is about 7.1 hours; a dedupe entry
/// must outlive it, so no TTL shorter than this is used.
pub const MIN_DEDUPE_TTL: Duration = Duration::from_secs(8 * 3600);

/// The TTL used when the caller has no better idea.
pub const DEFAULT_DEDUPE_TTL: Duration = MIN_DEDUPE_TTL;

/// The longest `last_error` kept for a failure, in bytes (cut at a char
/// boundary, with a `…` marker).
pub const MAX_ERROR_LEN: usize = 2000;

/// Where the sync of one source calendar stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The Feishu `sync_token` for the next delta, if one was obtained.
    pub sync_token: Option<String>,
    /// When `sync_token` was obtained (Unix seconds; tokens expire).
    pub obtained_at: i64,
    /// The last complete full listing (Unix seconds).
    pub last_full_sync: Option<i64>,
    /// The last successful sync of any kind (Unix seconds).
    pub last_sync: Option<i64>,
}

/// The last seen version of one source event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The Feishu event object as received, JSON text.
    pub event_json: String,
    /// `v1:<hex>`, from `bridge_core::content_hash`.
    pub content_hash: String,
    /// When this snapshot was written (Unix seconds).
    pub updated_at: i64,
}

/// Identifies one event in one sink: `(sink_id, calendar_id, event_key)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkItemKey {
    /// The configured sink.
    pub sink_id: String,
    /// The source calendar.
    pub calendar_id: String,
    /// `<uid>_<original_time>`.
    pub event_key: String,
}

impl SinkItemKey {
    /// Builds a key from its three parts.
    pub fn new(
        sink_id: impl Into<String>,
        calendar_id: impl Into<String>,
        event_key: impl Into<String>,
    ) -> Self {
        Self {
            sink_id: sink_id.into(),
            calendar_id: calendar_id.into(),
            event_key: event_key.into(),
        }
    }
}

/// What was last applied to a sink for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The id of the event in the target.
    pub remote_id: String,
    /// The target's etag / change key, when it has one.
    pub etag: Option<String>,
    /// The content hash that was applied.
    pub applied_hash: String,
    /// When it was applied (Unix seconds).
    pub applied_at: i64,
    /// The iCalendar SEQUENCE last written.
    pub sequence: u32,
    /// The event was deleted in the target; the record stays so that a
    /// re-appearing event is restored, not duplicated.
    pub tombstone: bool,
}

/// One calendar in the durable dirty queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyEntry {
    /// The source calendar that needs a sync.
    pub calendar_id: String,
    /// The earliest hint not yet covered by a sync (Unix seconds).
    pub since: i64,
    /// The newest hint (Unix seconds); `clear_dirty` compares against it.
    pub last_hint_at: i64,
    /// How many hints arrived since the entry was created.
    pub hints: u64,
    /// The reason given with the newest hint.
    pub reason: String,
}

/// A per-item failure awaiting retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Failed attempts so far (at least 1).
    pub attempts: u32,
    /// Not to be retried before this time (Unix seconds).
    pub next_retry_at: i64,
    /// The last error, redacted (see [`crate::redact`]) and bounded to
    /// [`MAX_ERROR_LEN`] bytes.
    pub last_error: String,
    /// When the first failure of this streak happened (Unix seconds).
    pub first_failed_at: i64,
}

/// Exponential backoff for item retries: `base * 2^(attempts-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// One minute, doubling, at most six hours.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            max: Duration::from_secs(6 * 3600),
        }
    }
}

impl Backoff {
    /// The delay before the next retry after `attempts` failures (`attempts`
    /// of 0 is treated as 1).
    pub fn delay(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let secs = self.base.as_secs().saturating_mul(factor);
        let nanos = u64::from(self.base.subsec_nanos()).saturating_mul(factor);
        let delay = Duration::from_secs(secs).saturating_add(Duration::from_nanos(nanos));
        delay.min(self.max)
    }
}

/// Entry counts per table, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// The schema version of the open database.
    pub schema_version: u64,
    /// Calendar cursors.
    pub cursors: u64,
    /// Event snapshots, all calendars.
    pub snapshots: u64,
    /// Per-sink records, all sinks.
    pub records: u64,
    /// Dirty calendars.
    pub dirty: u64,
    /// Delivery dedupe entries (expired ones included until purged).
    pub dedupe: u64,
    /// Per-item failures.
    pub failures: u64,
    /// Stored tokens.
    pub tokens: u64,
}

/// Whole seconds of a duration as `i64`, saturating.
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(100),
        };
        let delays: Vec<u64> = (0..=7).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(delays, [10, 10, 20, 40, 80, 100, 100, 100]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(100));
        let unbounded = Backoff {
            base: Duration::from_secs(1),
            max: Duration::MAX,
        };
        assert_eq!(unbounded.delay(64), Duration::from_secs(1 << 63));
        assert_eq!(unbounded.delay(u32::MAX), Duration::from_secs(1 << 63));
    }
}
