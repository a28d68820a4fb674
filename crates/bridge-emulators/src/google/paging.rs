//! Google's page and sync tokens: the kit's signed cursors without a
//! prefix. A sync token is bound to its calendar; a forged, foreign or
//! expired one is `410 fullSyncRequired` (a bad page token is 400), as the
//! callers decide.

use serde::{Deserialize, Serialize};

use crate::kit::{Cursors, Lane};

/// Where a listing continues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageCursor {
    /// `full`, `delta` or `instances`.
    pub(crate) mode: String,
    pub(crate) calendar: String,
    /// The master id (`instances`).
    pub(crate) event: String,
    /// Sort key of the last item returned.
    pub(crate) after: String,
    /// Store version when the listing started (becomes the sync token).
    pub(crate) snap: u64,
    /// Delta: versions above this are returned.
    pub(crate) base: u64,
}

/// What a sync token remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SyncCursor {
    pub(crate) calendar: String,
    pub(crate) version: u64,
}

/// The token codec of one emulator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec<'a>(pub(crate) &'a Cursors);

impl Codec<'_> {
    pub(crate) fn page_token(self, c: &PageCursor) -> String {
        self.0.seal(Lane::Page, "", c)
    }

    pub(crate) fn read_page(self, token: &str) -> Option<PageCursor> {
        self.0.open(Lane::Page, "", token).ok()
    }

    pub(crate) fn sync_token(self, calendar: &str, version: u64) -> String {
        let calendar = calendar.to_owned();
        self.0
            .seal(Lane::Sync, "", SyncCursor { calendar, version })
    }

    /// A still-valid sync token of this emulator for `calendar`.
    pub(crate) fn read_sync(self, token: &str, calendar: &str) -> Option<SyncCursor> {
        self.0
            .open::<SyncCursor>(Lane::Sync, "", token)
            .ok()
            .filter(|c| c.calendar == calendar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_forgery_and_expiry() {
        let cursors = Cursors::new(None);
        let codec = Codec(&cursors);
        let c = PageCursor {
            mode: "full".into(),
            calendar: "cal".into(),
            after: "k".into(),
            snap: 7,
            ..PageCursor::default()
        };
        let t = codec.page_token(&c);
        assert_eq!(codec.read_page(&t), Some(c));
        let mut forged = t.clone();
        forged.insert(3, 'x');
        assert_eq!(codec.read_page(&forged), None);
        let s = codec.sync_token("cal", 9);
        assert!(codec.read_page(&s).is_none(), "kinds do not mix");
        assert_eq!(codec.read_sync(&s, "cal").unwrap().version, 9);
        assert!(codec.read_sync(&s, "other").is_none());
        cursors.expire(Lane::Sync);
        assert!(codec.read_sync(&s, "cal").is_none());
        let other = Cursors::new(None);
        assert!(
            Codec(&other)
                .read_sync(&codec.sync_token("cal", 1), "cal")
                .is_none()
        );
    }
}
