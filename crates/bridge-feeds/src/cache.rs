//! The compressed bodies of full GETs, kept so that a repeated full GET of
//! an unchanged feed does not compress again.
//!
//! A tower layer (an axum `from_fn` middleware) outside tower-http's
//! `CompressionLayer`: negotiation stays in tower-http, which decides the
//! `Content-Encoding` and wraps the body in a lazy encoder. This layer
//! looks at the response headers only. For a `200` to a `GET` that the
//! handler marked with a [`CacheKey`] and tower-http encoded, it keeps the
//! last compressed bytes per (feed, calendar, encoding) together with
//! their `ETag`; the next such response with the same `ETag` gets those
//! bytes, and tower-http's encoder is dropped before it is ever polled, so
//! nothing is compressed. A new `ETag` (a new body) replaces the entry, so
//! a feed holds at most one compressed body per encoding.
//!
//! Written here because tower-http has no cache of compressed bodies, and
//! the only alternative, pre-compressing every body at render time, would
//! move negotiation out of tower-http (which the issue asks to keep).
//!
//! Memory is bounded by [`CompressedCache::with_limit`] (bytes of kept
//! bodies, 64 MiB by default): an entry that would pass the limit evicts
//! the oldest entries first; a body larger than the limit is not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body as HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;

/// Default bound of the kept compressed bytes.
pub const DEFAULT_LIMIT: usize = 64 * 1024 * 1024;

/// Which feed a response shows: set by the handler on a full `200` as a
/// response extension (tower-http keeps extensions). Never the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub feed: Arc<str>,
    pub calendar_id: Arc<str>,
}

#[derive(Debug)]
struct Entry {
    etag: HeaderValue,
    bytes: Bytes,
    /// Insertion order, for eviction.
    stamp: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(CacheKey, HeaderValue), Entry>,
    total: usize,
    next_stamp: u64,
}

/// The kept compressed bodies, and counters of their use.
#[derive(Debug)]
pub struct CompressedCache {
    limit: usize,
    inner: Mutex<Inner>,
    compressions: AtomicU64,
    hits: AtomicU64,
}

impl Default for CompressedCache {
    fn default() -> Self {
        Self::with_limit(DEFAULT_LIMIT)
    }
}

impl CompressedCache {
    /// A cache keeping at most `limit` bytes of compressed bodies.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::default(),
            compressions: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// How many response bodies were compressed (tower-http's encoder run
    /// to the end) since the start.
    pub fn compressions(&self) -> u64 {
        self.compressions.load(Ordering::Relaxed)
    }

    /// How many responses were answered from kept compressed bytes.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Bytes of compressed bodies kept now.
    pub fn kept_bytes(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &CacheKey, coding: &HeaderValue, etag: &HeaderValue) -> Option<Bytes> {
        let inner = self.lock();
        let e = inner.entries.get(&(key.clone(), coding.clone()))?;
        (e.etag == *etag).then(|| e.bytes.clone())
    }

    fn put(&self, key: CacheKey, coding: HeaderValue, etag: HeaderValue, bytes: Bytes) {
        let mut inner = self.lock();
        let slot = (key, coding);
        if let Some(old) = inner.entries.remove(&slot) {
            inner.total -= old.bytes.len();
        }
        if bytes.len() > self.limit {
            return;
        }
        while inner.total + bytes.len() > self.limit {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.stamp)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.total -= e.bytes.len();
            }
        }
        inner.total += bytes.len();
        inner.next_stamp += 1;
        let stamp = inner.next_stamp;
        inner.entries.insert(slot, Entry { etag, bytes, stamp });
    }
}

/// The middleware: see the module documentation.
pub async fn cached(
    State(cache): State<Arc<CompressedCache>>,
    request: Request,
    next: Next,
) -> Response {
    let get = request.method() == Method::GET;
    let res = next.run(request).await;
    if !get || res.status() != StatusCode::OK {
        return res;
    }
    let (Some(key), Some(coding), Some(etag)) = (
        res.extensions().get::<CacheKey>().cloned(),
        res.headers().get(header::CONTENT_ENCODING).cloned(),
        res.headers().get(header::ETAG).cloned(),
    ) else {
        return res;
    };
    let (mut parts, body) = res.into_parts();
    let bytes = if let Some(bytes) = cache.get(&key, &coding, &etag) {
        // tower-http's encoder is dropped unpolled: no compression.
        drop(body);
        cache.hits.fetch_add(1, Ordering::Relaxed);
        bytes
    } else {
        match body.collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                cache.compressions.fetch_add(1, Ordering::Relaxed);
                cache.put(key, coding, etag, bytes.clone());
                bytes
            }
            Err(e) => {
                // The body is the feed's bytes in memory: compressing
                // them does not fail in practice; answer 500 if it does.
                tracing::warn!(error = %e, "compressing a feed body failed");
                return Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(HttpBody::empty())
                    .unwrap_or_default();
            }
        }
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(parts, HttpBody::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(feed: &str) -> CacheKey {
        CacheKey {
            feed: feed.into(),
            calendar_id: "c".into(),
        }
    }

    #[test]
    fn one_body_per_feed_and_encoding_bounded_in_bytes() {
        let cache = CompressedCache::with_limit(10);
        let gzip = HeaderValue::from_static("gzip");
        let (e1, e2) = (
            HeaderValue::from_static("\"1\""),
            HeaderValue::from_static("\"2\""),
        );
        cache.put(key("a"), gzip.clone(), e1.clone(), Bytes::from("aaaa"));
        assert_eq!(cache.get(&key("a"), &gzip, &e1), Some(Bytes::from("aaaa")));
        assert_eq!(cache.get(&key("a"), &gzip, &e2), None);
        // A new ETag replaces the old body.
        cache.put(key("a"), gzip.clone(), e2.clone(), Bytes::from("aaa"));
        assert_eq!(cache.get(&key("a"), &gzip, &e1), None);
        assert_eq!(cache.kept_bytes(), 3);
        // Past the limit, the oldest entry goes.
        cache.put(key("b"), gzip.clone(), e1.clone(), Bytes::from("bbbb"));
        cache.put(key("c"), gzip.clone(), e1.clone(), Bytes::from("cccc"));
        assert_eq!(cache.get(&key("a"), &gzip, &e2), None);
        assert!(cache.get(&key("c"), &gzip, &e1).is_some());
        assert!(cache.kept_bytes() <= 10);
        // Larger than the limit: not kept.
        cache.put(
            key("d"),
            gzip.clone(),
            e1.clone(),
            Bytes::from("d".repeat(11)),
        );
        assert_eq!(cache.get(&key("d"), &gzip, &e1), None);
    }
}
