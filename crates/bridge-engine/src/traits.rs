//! The seams of the engine: what a target must do.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::plan::Op;
use bridge_core::{EventKey, Item, Privacy, Revision};

/// A source calendar as the sinks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarMeta {
    /// The Feishu calendar id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its IANA time zone, when known.
    pub timezone: Option<String>,
}

/// What a sink gets to apply one planning run of one calendar.
#[derive(Debug, Clone, Copy)]
pub struct SinkInput<'a> {
    pub calendar: &'a CalendarMeta,
    /// Every item of the calendar as it stands after this run, in key order
    /// (whole-calendar sinks such as ICS render from it).
    pub items: &'a [&'a Item],
    /// What the planner decided for this sink.
    pub ops: &'a [Op],
    /// SEQUENCE / LAST-MODIFIED of every item after these ops.
    pub revisions: &'a HashMap<EventKey, Revision>,
    /// This sink's records of the calendar before these ops (remote ids,
    /// etags for conditional writes).
    pub records: &'a BTreeMap<EventKey, bridge_store::Record>,
    /// Unix seconds.
    pub now: i64,
}

/// What a sink found on its side during a full reconcile ([`Sink::drift`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Recorded items whose remote copy was changed or deleted by someone
    /// else: planned again as if never applied (the source is the truth).
    pub rewrite: Vec<EventKey>,
    /// Recorded items a user deleted on the target that must stay deleted
    /// (`on_target_delete = "respect"`): their records become tombstones.
    pub tombstone: Vec<EventKey>,
    /// Remote items of ours that the source no longer has (removed by the
    /// sink itself unless dry-run).
    pub orphans_deleted: usize,
    /// Orphans that could not be removed, `remote id: reason`.
    pub errors: Vec<String>,
}

/// What [`Sink::drift`] gets.
#[derive(Debug, Clone, Copy)]
pub struct DriftInput<'a> {
    pub calendar: &'a CalendarMeta,
    /// Every item of the calendar (complete listing), in key order.
    pub items: &'a [&'a Item],
    pub records: &'a BTreeMap<EventKey, bridge_store::Record>,
    /// Report orphans without deleting them.
    pub dry_run: bool,
}

/// Where an item ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub remote_id: String,
    pub etag: Option<String>,
}

/// Why one operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    /// Worth retrying later (throttling, 5xx, I/O).
    pub transient: bool,
    pub retry_after: Option<Duration>,
    /// The whole sink is paused (credentials revoked, daily quota): the item
    /// is not counted as failed and keeps no backoff; it is planned again
    /// once the sink resumes.
    pub paused: bool,
}

impl SinkError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
            retry_after: None,
            paused: false,
        }
    }

    /// The sink is paused for `message` (every item gets this error).
    pub fn paused(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
            retry_after: None,
            paused: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            retry_after: None,
            paused: false,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpOutcome {
    pub op: Op,
    pub result: Result<Applied, SinkError>,
}

/// A target calendar system.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// Stable id used to key its records in the store (`ics:<dir>`, ...).
    fn id(&self) -> &str;
    fn privacy(&self) -> Privacy;
    /// Applies the operations; one outcome per op, in any order. Item failures
    /// are outcomes, never a panic or an early return.
    async fn apply(&self, input: SinkInput<'_>) -> Vec<OpOutcome>;

    /// Drift repair, called on a full reconcile of a complete listing
    /// before planning: what changed on the target behind our back. Sinks
    /// that own their output whole (ICS) have none.
    async fn drift(&self, _input: DriftInput<'_>) -> Result<Drift, SinkError> {
        Ok(Drift::default())
    }

    /// Why the sink is paused, if it is.
    fn paused(&self) -> Option<String> {
        None
    }
}

/// One listing of a source calendar.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Feishu event objects as listed (masters, exceptions, cancelled items).
    pub events: Vec<bridge_core::feishu::Event>,
    /// The token for the next delta.
    pub sync_token: Option<String>,
    /// True for a full listing (every live event is in `events`); false for
    /// a delta (only changes). Only complete listings may delete by absence.
    pub complete: bool,
    /// Source calls made for this listing.
    pub calls: u64,
}

/// Why a listing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The sync token expired; list in full.
    #[error("the sync token expired")]
    CursorExpired,
    /// The source could not be read now (network, throttling, 5xx, truncated).
    #[error("source unavailable: {0}")]
    Unavailable(String),
    /// The source refuses (credentials, permissions, unknown calendar).
    #[error("{0}")]
    Refused(String),
}

impl SourceError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Unavailable(_))
    }
}

/// Where events come from.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// The calendars to mirror (resolving "primary" / "all").
    async fn calendars(&self) -> Result<Vec<CalendarMeta>, SourceError>;
    /// A delta since `sync_token`, or a full listing without one.
    async fn list(
        &self,
        calendar_id: &str,
        sync_token: Option<&str>,
    ) -> Result<Listing, SourceError>;

    /// The same, handing events over page by page (the returned listing's
    /// `events` is empty) so that a large calendar is never held twice. On
    /// error the pages already handed over are not a listing and must be
    /// dropped. The default lists in full and hands everything over at once.
    async fn list_pages(
        &self,
        calendar_id: &str,
        sync_token: Option<&str>,
        on_page: &mut (dyn FnMut(Vec<bridge_core::feishu::Event>) + Send),
    ) -> Result<Listing, SourceError> {
        let mut l = self.list(calendar_id, sync_token).await?;
        on_page(std::mem::take(&mut l.events));
        Ok(l)
    }
}
