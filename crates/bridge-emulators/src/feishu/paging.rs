//! Feishu's page and sync tokens: the kit's signed cursors, spelled
//! `<Listing>PageToken_…` / `<Listing>SyncToken_…`, bound to one listing
//! and scope, valid for the documented 90 days; anything else is 190008.

use serde::{Deserialize, Serialize};

use crate::kit::{Cursors, Lane};

/// Documented lifetime of page and sync tokens (90 days).
pub(crate) const TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// What a page or sync token remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Position {
    /// Which listing (`events`, `calendars`, `attendees`, `instances`).
    pub(crate) kind: String,
    /// What it lists: a calendar id, an identity or an event id.
    pub(crate) scope: String,
    /// `full`, `anchor` or `delta`.
    pub(crate) mode: String,
    pub(crate) anchor: Option<i64>,
    /// Version the listing started at (becomes the next sync token).
    pub(crate) snap: u64,
    /// Delta: versions above this are returned.
    pub(crate) base: u64,
    /// Last id returned (full/anchor listings).
    pub(crate) after: Option<String>,
    /// Last version returned (deltas).
    pub(crate) after_version: u64,
    /// Offset (attendees, instances).
    pub(crate) offset: usize,
    /// Requested range (instances).
    pub(crate) range: Option<(i64, i64)>,
}

/// The token codec of one emulator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tokens<'a>(pub(crate) &'a Cursors);

impl Tokens<'_> {
    pub(crate) fn page_token(self, prefix: &str, p: Position) -> String {
        self.0.seal(Lane::Page, &format!("{prefix}PageToken_"), p)
    }

    pub(crate) fn sync_token(self, prefix: &str, p: Position) -> String {
        self.0.seal(Lane::Sync, &format!("{prefix}SyncToken_"), p)
    }

    fn read(
        self,
        lane: Lane,
        prefix: &str,
        token: &str,
        kind: &str,
        scope: &str,
    ) -> Option<Position> {
        self.0
            .open::<Position>(lane, prefix, token)
            .ok()
            .filter(|p| p.kind == kind && p.scope == scope)
    }

    /// A page token of this emulator, still valid, for `kind`/`scope`.
    pub(crate) fn read_page(
        self,
        prefix: &str,
        token: &str,
        kind: &str,
        scope: &str,
    ) -> Option<Position> {
        self.read(
            Lane::Page,
            &format!("{prefix}PageToken_"),
            token,
            kind,
            scope,
        )
    }

    /// A sync token of this emulator, still valid, for `kind`/`scope`.
    pub(crate) fn read_sync(
        self,
        prefix: &str,
        token: &str,
        kind: &str,
        scope: &str,
    ) -> Option<Position> {
        self.read(
            Lane::Sync,
            &format!("{prefix}SyncToken_"),
            token,
            kind,
            scope,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_scope_and_epochs() {
        let cursors = Cursors::new(Some(TOKEN_LIFETIME));
        let codec = Tokens(&cursors);
        let c = Position {
            kind: "events".into(),
            scope: "cal".into(),
            snap: 7,
            ..Position::default()
        };
        let t = codec.page_token("ListEvents", c.clone());
        assert!(t.starts_with("ListEventsPageToken_"));
        assert_eq!(
            codec
                .read_page("ListEvents", &t, "events", "cal")
                .unwrap()
                .snap,
            7
        );
        assert!(
            codec
                .read_page("ListEvents", &t, "events", "other")
                .is_none()
        );
        assert!(codec.read_sync("ListEvents", &t, "events", "cal").is_none());
        let mut forged = t.clone();
        forged.insert(25, 'x');
        assert!(
            codec
                .read_page("ListEvents", &forged, "events", "cal")
                .is_none()
        );
        let s = codec.sync_token("ListEvents", c);
        cursors.expire(Lane::Page);
        assert!(codec.read_page("ListEvents", &t, "events", "cal").is_none());
        assert!(codec.read_sync("ListEvents", &s, "events", "cal").is_some());
        cursors.expire(Lane::Sync);
        assert!(codec.read_sync("ListEvents", &s, "events", "cal").is_none());
    }
}
