//! iCalendar output: the writer, VTIMEZONE generation and rendering of
//! canonical items into a VCALENDAR.

pub mod exact;
pub mod render;
pub mod vtimezone;
pub mod write;

pub use render::{
    PRODID, Privacy, RenderOptions, RenderSummary, Rendered, Revision, render_calendar,
    render_calendar_to, render_event, render_series_to,
};
