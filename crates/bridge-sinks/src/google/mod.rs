//! The Google Calendar v3 target, pure part: deterministic event ids and the
//! event resource built from a canonical event (no network code here).
//!
//! See `sinks-api.md` A.3 (resource), A.4 (ids), A.5 (recurrence), A.7
//! (extendedProperties).

pub mod ids;
pub mod resource;

pub use ids::{event_id, instance_id, is_valid_event_id};
pub use resource::{GoogleOptions, Series, to_resource, to_resource_in};
