//! Opaque page and sync tokens that only this emulator can read.
//!
//! A token is `<Prefix>_<base64url(json)>.<mac>`: the JSON holds the cursor,
//! the MAC (truncated SHA-256 over a per-emulator secret) makes forged or
//! foreign tokens fail like unknown ones (190008). `expire_page_tokens` /
//! `expire_sync_tokens` bump an epoch that every token carries.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::util::{now_secs, rand_hex};

/// Documented lifetime of page and sync tokens (90 days).
const TOKEN_LIFETIME_SECS: i64 = 90 * 86_400;

/// What a page or sync token remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Cursor {
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
    pub(crate) epoch: u64,
    pub(crate) issued: i64,
}

/// Encodes and checks tokens.
#[derive(Debug)]
pub(crate) struct Codec {
    secret: String,
    page_epoch: AtomicU64,
    sync_epoch: AtomicU64,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            secret: rand_hex(32),
            page_epoch: AtomicU64::new(1),
            sync_epoch: AtomicU64::new(1),
        }
    }
}

impl Codec {
    fn mac(&self, body: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret.as_bytes());
        h.update(body.as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    fn encode(&self, prefix: &str, mut c: Cursor, epoch: u64) -> String {
        c.epoch = epoch;
        c.issued = now_secs();
        let json = serde_json::to_string(&c).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let mac = self.mac(&body);
        format!("{prefix}_{body}.{mac}")
    }

    fn decode(&self, prefix: &str, token: &str, epoch: u64) -> Option<Cursor> {
        let rest = token.strip_prefix(prefix)?.strip_prefix('_')?;
        let (body, mac) = rest.rsplit_once('.')?;
        if self.mac(body) != mac {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(body).ok()?;
        let c: Cursor = serde_json::from_slice(&json).ok()?;
        let fresh = now_secs() - c.issued < TOKEN_LIFETIME_SECS;
        (c.epoch == epoch && fresh).then_some(c)
    }

    pub(crate) fn page_token(&self, prefix: &str, c: Cursor) -> String {
        self.encode(
            &format!("{prefix}PageToken"),
            c,
            self.page_epoch.load(Ordering::SeqCst),
        )
    }

    pub(crate) fn sync_token(&self, prefix: &str, c: Cursor) -> String {
        self.encode(
            &format!("{prefix}SyncToken"),
            c,
            self.sync_epoch.load(Ordering::SeqCst),
        )
    }

    /// A page token of this emulator, still valid, for `kind`/`scope`.
    pub(crate) fn read_page(
        &self,
        prefix: &str,
        token: &str,
        kind: &str,
        scope: &str,
    ) -> Option<Cursor> {
        self.decode(
            &format!("{prefix}PageToken"),
            token,
            self.page_epoch.load(Ordering::SeqCst),
        )
        .filter(|c| c.kind == kind && c.scope == scope)
    }

    /// A sync token of this emulator, still valid, for `kind`/`scope`.
    pub(crate) fn read_sync(
        &self,
        prefix: &str,
        token: &str,
        kind: &str,
        scope: &str,
    ) -> Option<Cursor> {
        self.decode(
            &format!("{prefix}SyncToken"),
            token,
            self.sync_epoch.load(Ordering::SeqCst),
        )
        .filter(|c| c.kind == kind && c.scope == scope)
    }

    pub(crate) fn expire_pages(&self) {
        self.page_epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn expire_syncs(&self) {
        self.sync_epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_scope_and_epochs() {
        let codec = Codec::default();
        let c = Cursor {
            kind: "events".into(),
            scope: "cal".into(),
            snap: 7,
            ..Cursor::default()
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
        codec.expire_pages();
        assert!(codec.read_page("ListEvents", &t, "events", "cal").is_none());
        assert!(codec.read_sync("ListEvents", &s, "events", "cal").is_some());
        codec.expire_syncs();
        assert!(codec.read_sync("ListEvents", &s, "events", "cal").is_none());
    }
}
