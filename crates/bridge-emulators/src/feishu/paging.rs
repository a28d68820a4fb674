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
    /// `<listing>PageToken_…` or `<listing>SyncToken_…` for `p`.
    pub(crate) fn seal(self, lane: Lane, listing: &str, p: Position) -> String {
        self.0.seal(lane, &prefix(lane, listing), p)
    }

    /// A token of this emulator and `listing`, still valid, for
    /// `kind`/`scope`.
    pub(crate) fn open(
        self,
        lane: Lane,
        listing: &str,
        token: &str,
        kind: &str,
        scope: &str,
    ) -> Option<Position> {
        self.0
            .open::<Position>(lane, &prefix(lane, listing), token)
            .ok()
            .filter(|p| p.kind == kind && p.scope == scope)
    }
}

fn prefix(lane: Lane, listing: &str) -> String {
    match lane {
        Lane::Page => format!("{listing}PageToken_"),
        Lane::Sync => format!("{listing}SyncToken_"),
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
        let t = codec.seal(Lane::Page, "ListEvents", c.clone());
        assert!(t.starts_with("ListEventsPageToken_"));
        assert_eq!(
            codec
                .open(Lane::Page, "ListEvents", &t, "events", "cal")
                .unwrap()
                .snap,
            7
        );
        assert!(
            codec
                .open(Lane::Page, "ListEvents", &t, "events", "other")
                .is_none()
        );
        assert!(
            codec
                .open(Lane::Sync, "ListEvents", &t, "events", "cal")
                .is_none()
        );
        let mut forged = t.clone();
        forged.insert(25, 'x');
        assert!(
            codec
                .open(Lane::Page, "ListEvents", &forged, "events", "cal")
                .is_none()
        );
        let s = codec.seal(Lane::Sync, "ListEvents", c);
        cursors.expire(Lane::Page);
        assert!(
            codec
                .open(Lane::Page, "ListEvents", &t, "events", "cal")
                .is_none()
        );
        assert!(
            codec
                .open(Lane::Sync, "ListEvents", &s, "events", "cal")
                .is_some()
        );
        cursors.expire(Lane::Sync);
        assert!(
            codec
                .open(Lane::Sync, "ListEvents", &s, "events", "cal")
                .is_none()
        );
    }
}
