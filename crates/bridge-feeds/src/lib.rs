//! Serving ICS feeds: `GET|HEAD /feeds/<token>.ics` from the bodies the
//! feed projection keeps in its [`FeedBook`]. A request never renders.
//!
//! Its own crate, rather than in `bridge-sinks` or the binary, because
//! `bridge-sinks` must not know axum, and the router is used by the daemon,
//! by the demo and by the benchmark (which measures it in-process).
//!
//! HTTP, per RFC 9110 / 9111:
//! - `Content-Type: text/calendar; charset=utf-8`;
//! - a strong `ETag` (the SHA-256 of the body) and `Last-Modified` (when
//!   those bytes were published); `If-None-Match` (weak comparison, `*`)
//!   and, without it, `If-Modified-Since` answer `304`;
//! - gzip and brotli negotiated by tower-http's `CompressionLayer`, with
//!   `Vary: Accept-Encoding`; a compressed response's ETag names its
//!   encoding (`"<digest>-gzip"`, `"<digest>-br"`: tower-http passes the
//!   ETag through unchanged, and one strong ETag for different bytes
//!   would be wrong), and every variant of the current digest matches
//!   `If-None-Match`;
//! - `Cache-Control: private, no-cache` (see ARCHITECTURE.md, "Feeds");
//! - an unknown or rotated token is a 404 found by a constant-time lookup
//!   (the book is keyed by the token's SHA-256); repeated misses from one
//!   address are answered more and more slowly.
//!
//! Logs name the feed and the calendar, never the token (nor the path).
//!
//! A repeated full GET of an unchanged feed in an encoding it was already
//! compressed to gets the kept compressed bytes ([`cache`]).

pub mod cache;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bridge_sinks::feed::{Body, FeedBook, is_token_shaped};
use cache::{CacheKey, CompressedCache};
use tower_http::compression::{CompressionLayer, CompressionLevel};

pub const CONTENT_TYPE: &str = "text/calendar; charset=utf-8";

/// Subscribers keep a copy but revalidate before every use; shared caches
/// keep nothing (a rotated address must die at once). See ARCHITECTURE.md.
pub const CACHE_CONTROL: &str = "private, no-cache";

/// How misses are slowed down.
#[derive(Debug, Clone, Copy)]
pub struct MissPolicy {
    /// Misses from one address within `window` answered at once.
    pub free: u32,
    pub window: Duration,
    /// The delay of the first slowed miss, doubled for each further one.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for MissPolicy {
    fn default() -> Self {
        Self {
            free: 10,
            window: Duration::from_secs(60),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Addresses remembered at most; beyond, expired ones are dropped, then all.
const MAX_TRACKED: usize = 16_384;

#[derive(Debug)]
struct Misses {
    policy: MissPolicy,
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Misses {
    /// Counts a miss of `ip`; how long to wait before answering it.
    fn delay(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let p = self.policy;
        let mut map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| now.duration_since(*since) < p.window);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= p.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        let over = entry.0.saturating_sub(p.free);
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (over - 1).min(16);
        p.base_delay.saturating_mul(factor).min(p.max_delay)
    }
}

#[derive(Debug)]
struct Server {
    book: Arc<FeedBook>,
    misses: Misses,
}

/// The routes of the served feeds, over `book`. The peer address for the
/// miss slow-down is read from a `ConnectInfo<SocketAddr>` request
/// extension (without it, all misses count as one address).
pub fn router(book: Arc<FeedBook>) -> Router {
    router_with(book, MissPolicy::default())
}

pub fn router_with(book: Arc<FeedBook>, policy: MissPolicy) -> Router {
    router_with_cache(book, policy, Arc::default())
}

/// [`router_with`] keeping compressed bodies in `cache` (whose counters
/// tell how many bodies were compressed).
pub fn router_with_cache(
    book: Arc<FeedBook>,
    policy: MissPolicy,
    cache: Arc<CompressedCache>,
) -> Router {
    let server = Arc::new(Server {
        book,
        misses: Misses {
            policy,
            by_ip: Mutex::default(),
        },
    });
    Router::new()
        .route("/feeds/{file}", get(serve))
        .with_state(server)
        // Level 4 for both: brotli's default (11) takes seconds for a
        // 10,000-event feed; 4 compresses calendar text nearly as well.
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .br(true)
                .quality(CompressionLevel::Precise(4)),
        )
        .layer(axum::middleware::map_response(etag_per_encoding))
        // Outside compression: sees the negotiated encoding and the ETag
        // of that encoding, and keeps the compressed bytes.
        .layer(axum::middleware::from_fn_with_state(cache, cache::cached))
}

/// `"<digest>"` -> `"<digest>-<coding>"` on a compressed response.
async fn etag_per_encoding(mut res: Response) -> Response {
    let coding = res
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(coding) = coding
        && let Some(etag) = res
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
        && let Some(inner) = etag.strip_prefix('"').and_then(|e| e.strip_suffix('"'))
        && let Ok(v) = HeaderValue::from_str(&format!("\"{inner}-{coding}\""))
    {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

/// Whether `If-None-Match` names the current body in some encoding; the
/// tag it matched (to echo in the 304).
fn none_match(value: &str, digest: &str) -> Option<String> {
    for tag in value.split(',').map(str::trim) {
        if tag == "*" {
            return Some(format!("\"{digest}\""));
        }
        let opaque = tag.strip_prefix("W/").unwrap_or(tag);
        let Some(inner) = opaque.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
            continue;
        };
        let base = inner
            .strip_suffix("-gzip")
            .or_else(|| inner.strip_suffix("-br"))
            .unwrap_or(inner);
        if base == digest {
            return Some(format!("\"{inner}\""));
        }
    }
    None
}

fn http_date(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    httpdate::fmt_http_date(at)
}

/// The answer to a conditional request, `None` to send the body.
fn not_modified(headers: &HeaderMap, body: &Body) -> Option<String> {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        // RFC 9110 13.2.2: If-Modified-Since is ignored with If-None-Match.
        return none_match(inm.to_str().ok()?, &body.digest);
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)?
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())?;
    let modified = UNIX_EPOCH + Duration::from_secs(u64::try_from(body.last_modified).ok()?);
    (modified <= since).then(|| format!("\"{}\"", body.digest))
}

fn common_headers(h: &mut HeaderMap, etag: &str, body: &Body) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(body.last_modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
}

async fn serve(
    State(s): State<Arc<Server>>,
    Path(file): Path<String>,
    request: Request,
) -> Response {
    let token = file.strip_suffix(".ics").unwrap_or("");
    let served = if is_token_shaped(token) {
        s.book.lookup(token)
    } else {
        None
    };
    let Some(served) = served else {
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let delay = s.misses.delay(ip);
        tracing::debug!(peer = %ip, delay_ms = delay.as_millis() as u64, "feed request for an unknown address");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no feed at this address\n",
        )
            .into_response();
    };
    let Some(body) = served.body.clone() else {
        tracing::debug!(feed = %served.feed, calendar = %served.calendar_id, "feed not rendered yet");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::RETRY_AFTER, "60"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            "this feed has not been rendered yet; try again in a minute\n",
        )
            .into_response();
    };
    if let Some(etag) = not_modified(request.headers(), &body) {
        tracing::debug!(feed = %served.feed, calendar = %served.calendar_id, "feed not modified");
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        common_headers(res.headers_mut(), &etag, &body);
        res.headers_mut().remove(header::CONTENT_TYPE);
        return res;
    }
    tracing::debug!(feed = %served.feed, calendar = %served.calendar_id, bytes = body.bytes.len(), "feed served");
    let mut res = Response::new(HttpBody::from(body.bytes.clone()));
    common_headers(res.headers_mut(), &format!("\"{}\"", body.digest), &body);
    res.extensions_mut().insert(CacheKey {
        feed: served.feed.as_str().into(),
        calendar_id: served.calendar_id.as_str().into(),
    });
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_takes_every_encoding_of_the_digest() {
        assert_eq!(none_match("\"abc\"", "abc").as_deref(), Some("\"abc\""));
        assert_eq!(
            none_match("\"x\", W/\"abc-gzip\"", "abc").as_deref(),
            Some("\"abc-gzip\"")
        );
        assert_eq!(
            none_match("\"abc-br\"", "abc").as_deref(),
            Some("\"abc-br\"")
        );
        assert_eq!(none_match("*", "abc").as_deref(), Some("\"abc\""));
        assert_eq!(none_match("\"abd\"", "abc"), None);
        assert_eq!(none_match("abc", "abc"), None);
    }

    async fn get(router: &Router, token: &str, encoding: &str) -> Response {
        use tower::ServiceExt;
        let req = axum::http::Request::get(format!("/feeds/{token}.ics"))
            .header(header::ACCEPT_ENCODING, encoding)
            .body(HttpBody::empty())
            .unwrap();
        router.clone().oneshot(req).await.unwrap()
    }

    async fn bytes(res: Response) -> bytes::Bytes {
        use http_body_util::BodyExt;
        res.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_repeated_compressed_get_is_not_compressed_again() {
        let book = FeedBook::new();
        let token = "t".repeat(43);
        assert!(
            is_token_shaped(&token),
            "the test's token must look like one"
        );
        book.set_token("team", "cal1", &token);
        let text = "BEGIN:VCALENDAR\r\n".to_owned() + &"SUMMARY:x\r\n".repeat(2000);
        book.set_body("team", "cal1", Arc::new(Body::new(text.clone(), 5)));
        let cache = Arc::new(CompressedCache::default());
        let router = router_with_cache(book.clone(), MissPolicy::default(), cache.clone());

        let first = get(&router, &token, "gzip").await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_ENCODING], "gzip");
        let etag = first.headers()[header::ETAG].clone();
        assert!(etag.to_str().unwrap().ends_with("-gzip\""), "{etag:?}");
        let vary = first.headers()[header::VARY].clone();
        let first = bytes(first).await;
        assert_eq!(cache.compressions(), 1);

        let second = get(&router, &token, "gzip").await;
        assert_eq!(second.headers()[header::ETAG], etag);
        assert_eq!(second.headers()[header::VARY], vary);
        assert_eq!(second.headers()[header::CONTENT_ENCODING], "gzip");
        let second = bytes(second).await;
        assert_eq!(second, first, "the same bytes");
        assert_eq!(cache.compressions(), 1, "not compressed again");
        assert_eq!(cache.hits(), 1);
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&second[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, text);

        // Another encoding is compressed once, then kept too.
        let br = get(&router, &token, "br").await;
        assert!(
            br.headers()[header::ETAG]
                .to_str()
                .unwrap()
                .ends_with("-br\"")
        );
        bytes(br).await;
        bytes(get(&router, &token, "br").await).await;
        assert_eq!(cache.compressions(), 2);
        // Identity is never kept; HEAD never compresses.
        let id = get(&router, &token, "identity").await;
        assert!(id.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(bytes(id).await, text.as_bytes());
        assert_eq!(cache.compressions(), 2);

        // A new body (new ETag) is compressed again, and replaces the old.
        let changed = text.replace("SUMMARY:x", "SUMMARY:y");
        book.set_body("team", "cal1", Arc::new(Body::new(changed.clone(), 6)));
        let third = get(&router, &token, "gzip").await;
        assert_ne!(third.headers()[header::ETAG], etag);
        let third = bytes(third).await;
        assert_ne!(third, first);
        assert_eq!(cache.compressions(), 3);
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&third[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, changed);
    }

    #[test]
    fn misses_slow_down_after_the_free_ones() {
        let m = Misses {
            policy: MissPolicy {
                free: 2,
                window: Duration::from_secs(60),
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(350),
            },
            by_ip: Mutex::default(),
        };
        let ip = IpAddr::from([10, 0, 0, 1]);
        let delays: Vec<u128> = (0..5).map(|_| m.delay(ip).as_millis()).collect();
        assert_eq!(delays, [0, 0, 100, 200, 350]);
        assert_eq!(m.delay(IpAddr::from([10, 0, 0, 2])), Duration::ZERO);
    }
}
