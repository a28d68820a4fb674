//! The book of served feeds: secret token -> the feed's cached body.
//!
//! The feed projection writes it (a new body once per change of its
//! calendar, a new token on rotation); the HTTP side only reads it, so a
//! request never renders. One book is shared by every feed sink of a
//! process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The bytes of one rendered feed and their validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The iCalendar text (CRLF lines).
    pub bytes: Bytes,
    /// Hex SHA-256 of `bytes`: the strong ETag of the identity encoding.
    pub digest: String,
    /// When these bytes were first published (Unix seconds): `Last-Modified`.
    pub last_modified: i64,
}

impl Body {
    pub fn new(bytes: impl Into<Bytes>, last_modified: i64) -> Self {
        let bytes = bytes.into();
        let digest = hex::encode(Sha256::digest(&bytes));
        Self {
            bytes,
            digest,
            last_modified,
        }
    }
}

/// What a token serves.
#[derive(Debug, Clone)]
pub struct Served {
    /// The feed's name (what logs say instead of the token).
    pub feed: String,
    pub calendar_id: String,
    /// `None` until the feed's first render (or cached body) is there.
    pub body: Option<Arc<Body>>,
}

/// The key of a token in the book: the SHA-256 of the token.
///
/// Why hashed: a `HashMap` lookup compares keys with `==`, which returns at
/// the first differing byte; keyed by the token itself, response times
/// could tell how long a guessed prefix is right. Keyed by its digest, the
/// timing depends only on the digest of what was presented, which says
/// nothing about any real token (the digests of two guesses share no
/// useful prefix). This is the usual constant-time lookup of secrets.
type TokenKey = [u8; 32];

fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug, Default)]
struct Inner {
    by_token: HashMap<TokenKey, Arc<Served>>,
    /// (feed, calendar) -> its current token's key.
    by_feed: HashMap<(String, String), TokenKey>,
}

/// Every served feed of the process, by token.
#[derive(Debug, Default)]
pub struct FeedBook {
    inner: RwLock<Inner>,
}

impl FeedBook {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// What `token` serves; `None` for an unknown or rotated token.
    pub fn lookup(&self, token: &str) -> Option<Arc<Served>> {
        let key = token_key(token);
        self.read().by_token.get(&key).cloned()
    }

    /// Makes `token` the address of (feed, calendar); a previous token of it
    /// is dead on return. The cached body, if any, stays.
    pub fn set_token(&self, feed: &str, calendar_id: &str, token: &str) {
        let key = token_key(token);
        let mut inner = self.write();
        let id = (feed.to_owned(), calendar_id.to_owned());
        let body = match inner.by_feed.insert(id, key) {
            Some(old) => inner.by_token.remove(&old).and_then(|s| s.body.clone()),
            None => None,
        };
        inner.by_token.insert(
            key,
            Arc::new(Served {
                feed: feed.to_owned(),
                calendar_id: calendar_id.to_owned(),
                body,
            }),
        );
    }

    /// Replaces the body of (feed, calendar). Returns false when it has no
    /// token in the book (nothing is kept then).
    pub fn set_body(&self, feed: &str, calendar_id: &str, body: Arc<Body>) -> bool {
        let mut inner = self.write();
        let Some(key) = inner
            .by_feed
            .get(&(feed.to_owned(), calendar_id.to_owned()))
            .copied()
        else {
            return false;
        };
        inner.by_token.insert(
            key,
            Arc::new(Served {
                feed: feed.to_owned(),
                calendar_id: calendar_id.to_owned(),
                body: Some(body),
            }),
        );
        true
    }

    /// The current body of (feed, calendar).
    pub fn body(&self, feed: &str, calendar_id: &str) -> Option<Arc<Body>> {
        let inner = self.read();
        let key = inner
            .by_feed
            .get(&(feed.to_owned(), calendar_id.to_owned()))?;
        inner.by_token.get(key)?.body.clone()
    }

    /// How many addresses are served.
    pub fn len(&self) -> usize {
        self.read().by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_is_dead_and_the_body_moves() {
        let book = FeedBook::new();
        book.set_token("team", "cal1", "old");
        assert!(book.lookup("old").unwrap().body.is_none());
        assert!(book.set_body("team", "cal1", Arc::new(Body::new("BEGIN", 5))));
        book.set_token("team", "cal1", "new");
        assert!(book.lookup("old").is_none());
        let s = book.lookup("new").unwrap();
        assert_eq!(s.feed, "team");
        assert_eq!(s.body.as_ref().unwrap().bytes, Bytes::from("BEGIN"));
        assert_eq!(book.len(), 1);
        assert!(!book.set_body("other", "cal1", Arc::new(Body::new("x", 1))));
        assert!(book.lookup("").is_none());
    }

    #[test]
    fn the_digest_is_the_content_sha256() {
        let b = Body::new("abc", 0);
        assert_eq!(
            b.digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
