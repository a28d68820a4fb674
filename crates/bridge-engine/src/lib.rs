//! The sync engine: hints mark calendars dirty; a worker lists the calendar
//! (sync-token delta, or a full listing), maps it, plans every sink against
//! its records, applies, records, and only then commits the sync token.
//!
//! Architecture invariant: the engine parses no HTTP; it talks to Feishu
//! through [`Source`] and to targets through [`Sink`] (the `bridge-target`
//! seam: replicas and projections).

pub mod daemon;
pub mod engine;
pub mod feishu_source;
pub mod state;
pub mod traits;

pub use bridge_target::{
    CalendarMeta, Drift, DriftInput, ItemOutcome, Projection, ProjectionInput, Published, Recorded,
    RemoteRef, Replica, ReplicaInput, SeriesOps, SeriesOutcome, Sink, SinkError, StateStore,
    Target,
};
pub use engine::departed;
pub use engine::explain::{Explanation, SinkExplanation, Verdict};
pub use engine::{
    AttendeeMode, AttendeeSync, CalendarReport, Engine, EngineConfig, EngineError, EventInfo,
    EventKind, Mode, SinkReport, Window, in_window,
};
pub use state::SinkState;
pub use traits::{Attendees, Listing, Source, SourceError};
