//! Opaque paging and sync tokens that only the emulator that issued them
//! can read.
//!
//! A token is `<prefix><base64url(json)>.<mac>`: the JSON is a
//! [`Cursor<T>`] (the service's position `T`, the epoch of its lane, the
//! issue time), the MAC is HMAC-SHA-256 under a per-emulator random key over
//! lane, prefix and body, truncated to 64 bits (tokens stay short; a forger
//! still has to guess 64 bits). A forged, foreign, stale or expired token
//! is a [`CursorError`] that each service turns into its own error shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::ids::now_secs;

/// Bytes of the MAC kept in a token.
const MAC_LEN: usize = 8;

/// Page tokens and sync tokens expire separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Page,
    Sync,
}

impl Lane {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Page => b"page",
            Self::Sync => b"sync",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CursorError {
    #[error("not a token of this emulator")]
    Forged,
    #[error("token expired")]
    Expired,
}

/// What a token carries: the service's position plus the lane epoch and the
/// issue time the kit checks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Cursor<T> {
    #[serde(rename = "p")]
    pub(crate) position: T,
    #[serde(rename = "e")]
    epoch: u64,
    #[serde(rename = "i")]
    issued: i64,
}

/// Signs and checks tokens; the epochs make every token of a lane stale at
/// once (`expire_*_tokens` of the emulators).
#[derive(Debug)]
pub(crate) struct Cursors {
    key: [u8; 32],
    lifetime: Option<Duration>,
    page_epoch: AtomicU64,
    sync_epoch: AtomicU64,
}

impl Cursors {
    /// A fresh random key; tokens older than `lifetime` (if any) expire.
    pub(crate) fn new(lifetime: Option<Duration>) -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            key,
            lifetime,
            page_epoch: AtomicU64::new(1),
            sync_epoch: AtomicU64::new(1),
        }
    }

    fn epoch(&self, lane: Lane) -> &AtomicU64 {
        match lane {
            Lane::Page => &self.page_epoch,
            Lane::Sync => &self.sync_epoch,
        }
    }

    fn mac(&self, lane: Lane, prefix: &str, body: &str) -> Hmac<Sha256> {
        // A key of any length is valid for HMAC, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in [lane.tag(), b"\0", prefix.as_bytes(), b"\0", body.as_bytes()] {
            mac.update(part);
        }
        mac
    }

    /// A token for `position` in `lane`, starting with `prefix`.
    pub(crate) fn seal<T: Serialize>(&self, lane: Lane, prefix: &str, position: T) -> String {
        let cursor = Cursor {
            position,
            epoch: self.epoch(lane).load(Ordering::SeqCst),
            issued: now_secs(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default());
        let tag = self.mac(lane, prefix, &body).finalize().into_bytes();
        format!("{prefix}{body}.{}", hex::encode(&tag[..MAC_LEN]))
    }

    /// The position of a token this emulator sealed for `lane` and `prefix`,
    /// if it is neither stale (an expiry since) nor older than the lifetime.
    pub(crate) fn open<T: DeserializeOwned>(
        &self,
        lane: Lane,
        prefix: &str,
        token: &str,
    ) -> Result<T, CursorError> {
        let (body, tag) = token
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once('.'))
            .ok_or(CursorError::Forged)?;
        let tag = hex::decode(tag).map_err(|_| CursorError::Forged)?;
        if tag.len() != MAC_LEN {
            return Err(CursorError::Forged);
        }
        self.mac(lane, prefix, body)
            .verify_truncated_left(&tag)
            .map_err(|_| CursorError::Forged)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CursorError::Forged)?;
        let cursor: Cursor<T> = serde_json::from_slice(&json).map_err(|_| CursorError::Forged)?;
        let too_old = self.lifetime.is_some_and(|l| {
            now_secs().saturating_sub(cursor.issued)
                >= i64::try_from(l.as_secs()).unwrap_or(i64::MAX)
        });
        if cursor.epoch != self.epoch(lane).load(Ordering::SeqCst) || too_old {
            return Err(CursorError::Expired);
        }
        Ok(cursor.position)
    }

    /// Every token of `lane` issued so far becomes stale.
    pub(crate) fn expire(&self, lane: Lane) {
        self.epoch(lane).fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_lanes_prefixes_forgery_and_epochs() {
        let c = Cursors::new(None);
        let t = c.seal(Lane::Page, "P_", ("cal", 7u64));
        assert!(t.starts_with("P_"));
        assert_eq!(c.open(Lane::Page, "P_", &t), Ok(("cal".to_owned(), 7u64)));
        assert_eq!(
            c.open::<(String, u64)>(Lane::Sync, "P_", &t),
            Err(CursorError::Forged),
            "lanes do not mix"
        );
        assert_eq!(
            c.open::<(String, u64)>(Lane::Page, "Q_", &t),
            Err(CursorError::Forged)
        );
        let mut forged = t.clone();
        forged.insert(4, 'x');
        assert_eq!(
            c.open::<(String, u64)>(Lane::Page, "P_", &forged),
            Err(CursorError::Forged)
        );
        assert_eq!(
            Cursors::new(None).open::<(String, u64)>(Lane::Page, "P_", &t),
            Err(CursorError::Forged),
            "another emulator's key"
        );
        let s = c.seal(Lane::Sync, "", 9u64);
        c.expire(Lane::Page);
        assert_eq!(
            c.open::<(String, u64)>(Lane::Page, "P_", &t),
            Err(CursorError::Expired)
        );
        assert_eq!(c.open(Lane::Sync, "", &s), Ok(9u64));
        c.expire(Lane::Sync);
        assert_eq!(c.open::<u64>(Lane::Sync, "", &s), Err(CursorError::Expired));
    }

    #[test]
    fn lifetime_expires_tokens() {
        let c = Cursors::new(Some(Duration::ZERO));
        let t = c.seal(Lane::Page, "", 1u8);
        assert_eq!(c.open::<u8>(Lane::Page, "", &t), Err(CursorError::Expired));
    }
}
