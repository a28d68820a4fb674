//! The Feishu calendar data model and the pure Feishu -> iCalendar mapping.
//!
//! Architecture invariant: this crate does no I/O, never reads the clock and
//! knows nothing of tokio, reqwest or redb. "Now" (DTSTAMP) is a parameter.

pub mod feishu;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod ics;
pub mod input;
pub mod instant;
pub mod key;
pub mod map;
pub mod model;
pub mod plan;
pub mod privacy;
pub mod recur;
pub mod rooms;
pub mod sample;
pub mod series;
pub mod view;

pub use hash::{ContentHash, content_hash};
pub use ics::{
    RenderOptions, RenderSummary, Rendered, Revision, render_calendar, render_calendar_to,
    render_event, render_series_to,
};
pub use key::{EventKey, KeyError};
pub use map::{MapError, Mapped, Warning, map_event, map_events};
pub use model::{CanonicalEvent, EventTime, Item};
pub use privacy::Privacy;
pub use series::Series;

/// Maps Feishu events and renders them as one VCALENDAR. Events that cannot
/// be mapped at all are reported in the warnings (with their event id) and
/// left out; everything else is written.
pub fn feishu_to_ics<'a>(
    events: impl IntoIterator<Item = &'a feishu::Event>,
    opts: &RenderOptions,
) -> Rendered {
    let mapped = map_events(events);
    let mut rendered = render_calendar(&mapped.items, opts);
    let mut warnings: Vec<Warning> = mapped
        .errors
        .into_iter()
        .map(|e| Warning {
            event_id: Some(e.event_id),
            message: format!("not converted: {}", e.reason),
        })
        .collect();
    warnings.extend(mapped.warnings);
    warnings.append(&mut rendered.warnings);
    rendered.warnings = warnings;
    rendered
}
