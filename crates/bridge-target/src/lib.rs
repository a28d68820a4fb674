//! The target seam: what the engine asks of a target, and nothing else.
//!
//! Two kinds of target (architecture.md section 8):
//!
//! - a [`Replica`] holds its own copy of every series (Google, EWS, Graph,
//!   CalDAV). It gets series-level operations: the planner's item ops of one
//!   uid together with the series as it stands now (a master with its
//!   overrides and cancellations, or a standalone event), and answers per
//!   series with the [`RemoteRef`] of each written item.
//! - a [`Projection`] publishes whole calendars (ICS files, served feeds).
//!   It renders from the current series set and answers once per calendar.
//!
//! The engine holds either through [`Sink`] (its [`Sink::target`] says
//! which). Sinks keep their own state behind [`StateStore`], scoped to the
//! sink.
//!
//! Architecture invariant: this crate depends on `bridge-core` only; no
//! store, engine or Feishu type crosses the seam.

mod error;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use bridge_core::plan::Op;
use bridge_core::{EventKey, Revision, Series};

pub use error::SinkError;
pub use state::{StateError, StateStore};

/// A source calendar as the targets see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarMeta {
    /// The Feishu calendar id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its IANA time zone, when known.
    pub timezone: Option<String>,
}

/// Where an item lives on a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRef {
    /// The target's id of the item (empty: nothing on the target).
    pub id: String,
    /// The target's version tag, for conditional writes.
    pub etag: Option<String>,
}

/// What the engine recorded of one item on a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub remote: RemoteRef,
    /// Deleted on the target and to stay so (`on_target_delete = "respect"`).
    pub tombstone: bool,
}

/// The planner's ops on the items of one uid, with the series as it stands.
#[derive(Debug, Clone)]
pub struct SeriesOps<'a> {
    pub uid: &'a str,
    /// The series now; `None` when the source holds nothing of the uid.
    pub series: Option<&'a Series<'a>>,
    /// In key order.
    pub ops: Vec<Op>,
}

/// What a replica gets to apply one planning run of one calendar.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaInput<'a> {
    pub calendar: &'a CalendarMeta,
    /// Every series of the calendar shown to this target, in uid order.
    pub series: &'a [Series<'a>],
    /// The series with something to do, in uid order.
    pub ops: &'a [SeriesOps<'a>],
    /// The replica's records of the calendar before these ops.
    pub records: &'a BTreeMap<EventKey, Recorded>,
    /// Unix seconds.
    pub now: i64,
}

/// The result of one item op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOutcome {
    pub op: Op,
    pub result: Result<RemoteRef, SinkError>,
}

/// The results of one series: one per op of its [`SeriesOps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesOutcome {
    pub uid: String,
    pub items: Vec<ItemOutcome>,
}

/// What a replica found on its side during a full reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Recorded items whose remote copy was changed or deleted by someone
    /// else: planned again as if never applied (the source is the truth).
    pub rewrite: Vec<EventKey>,
    /// Recorded items a user deleted on the target that must stay deleted
    /// (`on_target_delete = "respect"`): their records become tombstones.
    pub tombstone: Vec<EventKey>,
    /// Remote items of ours that the source no longer has (removed by the
    /// replica itself unless dry-run).
    pub orphans_deleted: usize,
    /// Orphans that could not be removed, `remote id: reason`.
    pub errors: Vec<String>,
}

/// What [`Replica::drift`] gets.
#[derive(Debug, Clone, Copy)]
pub struct DriftInput<'a> {
    pub calendar: &'a CalendarMeta,
    /// Every series of the calendar (complete listing), in uid order.
    pub series: &'a [Series<'a>],
    pub records: &'a BTreeMap<EventKey, Recorded>,
    /// Report orphans without deleting them.
    pub dry_run: bool,
}

/// A target that keeps its own copy of every series.
#[async_trait]
pub trait Replica: Send + Sync + fmt::Debug {
    /// Stable id used to key its records (`google:<name>`, ...).
    fn id(&self) -> &str;

    /// Whether the target can be reached with the configured credentials.
    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Why the replica is paused, if it is.
    fn paused(&self) -> Option<String> {
        None
    }

    /// Applies the series ops: one outcome per series of `input.ops`, each
    /// with one item outcome per op. Failures are outcomes, never a panic.
    async fn apply(&self, input: ReplicaInput<'_>) -> Vec<SeriesOutcome>;

    /// Drift repair, called on a full reconcile of a complete listing
    /// before planning: what changed on the target behind our back.
    async fn drift(&self, _input: DriftInput<'_>) -> Result<Drift, SinkError> {
        Ok(Drift::default())
    }
}

/// What a projection gets to publish one calendar.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionInput<'a> {
    pub calendar: &'a CalendarMeta,
    /// Every series it shows, in uid order.
    pub series: &'a [Series<'a>],
    /// SEQUENCE / LAST-MODIFIED of every item shown.
    pub revisions: &'a HashMap<EventKey, Revision>,
    /// Whether the planner found anything to change (a projection may skip
    /// publishing when nothing changed and its output is intact).
    pub changed: bool,
    /// Unix seconds (DTSTAMP of new items).
    pub now: i64,
}

/// Where a calendar was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The published resource (a file name, a feed path): the remote id
    /// recorded for every item it shows.
    pub location: String,
    /// Whether its bytes changed.
    pub changed: bool,
}

/// A target that publishes whole calendars.
#[async_trait]
pub trait Projection: Send + Sync + fmt::Debug {
    /// Stable id used to key its records (`ics:<dir>`, ...).
    fn id(&self) -> &str;

    /// Whether the target can be written.
    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Publishes one calendar: one outcome for the whole of it.
    async fn publish(&self, input: ProjectionInput<'_>) -> Result<Published, SinkError>;
}

/// Which kind a sink is, for the engine's dispatch.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Replica(&'a dyn Replica),
    Projection(&'a dyn Projection),
}

/// The handle the engine holds for a target of either kind.
pub trait Sink: Send + Sync + fmt::Debug {
    fn target(&self) -> Target<'_>;

    /// Stable id used to key its records.
    fn id(&self) -> &str {
        match self.target() {
            Target::Replica(r) => r.id(),
            Target::Projection(p) => p.id(),
        }
    }

    /// Why the sink is paused, if it is (projections never pause).
    fn paused(&self) -> Option<String> {
        match self.target() {
            Target::Replica(r) => r.paused(),
            Target::Projection(_) => None,
        }
    }
}
