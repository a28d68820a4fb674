//! The source seam of the engine: where events come from. The target seam
//! (what a target must do) is the `bridge-target` crate.

use std::fmt;

use async_trait::async_trait;
pub use bridge_target::CalendarMeta;

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

/// The attendees of one event, as the source lists them.
#[derive(Debug, Clone, Default)]
pub struct Attendees {
    pub items: Vec<bridge_core::feishu::Attendee>,
    /// Source calls made (one per page).
    pub calls: u64,
    /// The event has more than the source lets us read.
    pub truncated: bool,
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

    /// Every attendee of one event (Feishu's list events carries none).
    /// The default is a source that holds no attendees: an empty list and
    /// no call.
    async fn attendees(&self, calendar_id: &str, event_id: &str) -> Result<Attendees, SourceError> {
        let _ = (calendar_id, event_id);
        Ok(Attendees::default())
    }
}
