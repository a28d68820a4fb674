//! The sync engine: hints mark calendars dirty; a worker lists the calendar
//! (sync-token delta, or a full listing), maps it, plans every sink against
//! its records, applies, records, and only then commits the sync token.
//!
//! Architecture invariant: the engine parses no HTTP; it talks to Feishu
//! through [`Source`] and to targets through [`Sink`].

pub mod daemon;
pub mod engine;
pub mod feishu_source;
pub mod traits;

pub use engine::{CalendarReport, Engine, EngineConfig, EngineError, Mode, SinkReport, Window};
pub use traits::{
    Applied, CalendarMeta, Drift, DriftInput, Listing, OpOutcome, Sink, SinkError, SinkInput,
    Source, SourceError,
};
