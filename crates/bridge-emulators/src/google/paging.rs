//! Opaque page and sync tokens that only this emulator can read.
//!
//! A token is `base64url(json).mac`: the MAC (truncated SHA-256 over a
//! per-emulator secret) makes forged or foreign tokens fail like stale ones.
//! `expire_sync_tokens` bumps an epoch that every sync token carries.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::util::rand_hex;

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
    pub(crate) epoch: u64,
}

/// Encodes and checks tokens.
#[derive(Debug)]
pub(crate) struct Codec {
    secret: String,
    sync_epoch: AtomicU64,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            secret: rand_hex(32),
            sync_epoch: AtomicU64::new(1),
        }
    }
}

impl Codec {
    fn mac(&self, kind: &str, body: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret.as_bytes());
        h.update(kind.as_bytes());
        h.update(body.as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    fn encode<T: Serialize>(&self, kind: &str, v: &T) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default());
        let mac = self.mac(kind, &body);
        format!("{body}.{mac}")
    }

    fn decode<T: DeserializeOwned>(&self, kind: &str, token: &str) -> Option<T> {
        let (body, mac) = token.rsplit_once('.')?;
        if self.mac(kind, body) != mac {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    pub(crate) fn page_token(&self, c: &PageCursor) -> String {
        self.encode("page", c)
    }

    pub(crate) fn read_page(&self, token: &str) -> Option<PageCursor> {
        self.decode("page", token)
    }

    pub(crate) fn sync_token(&self, calendar: &str, version: u64) -> String {
        self.encode(
            "sync",
            &SyncCursor {
                calendar: calendar.to_owned(),
                version,
                epoch: self.sync_epoch.load(Ordering::SeqCst),
            },
        )
    }

    /// A still-valid sync token of this emulator for `calendar`.
    pub(crate) fn read_sync(&self, token: &str, calendar: &str) -> Option<SyncCursor> {
        self.decode::<SyncCursor>("sync", token)
            .filter(|c| c.calendar == calendar && c.epoch == self.sync_epoch.load(Ordering::SeqCst))
    }

    pub(crate) fn expire_syncs(&self) {
        self.sync_epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_forgery_and_expiry() {
        let codec = Codec::default();
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
        codec.expire_syncs();
        assert!(codec.read_sync(&s, "cal").is_none());
        assert!(
            Codec::default()
                .read_sync(&codec.sync_token("cal", 1), "cal")
                .is_none()
        );
    }
}
