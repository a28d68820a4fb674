//! The Calendar v3 HTTP client: bearer tokens from the [`TokenSource`], a
//! client-side token bucket, retries with exponential backoff and jitter for
//! 429 / 5xx / rate-limit 403s, one token refresh on 401, the batch endpoint
//! and paged listings (sinks-api.md A.1, A.6, A.9–A.11).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header;
use serde_json::Value;
use tokio::time::Instant;

use super::auth::{Credentials, DEFAULT_TOKEN_URL, Secret, TokenRetry, TokenSource, error_chain};
use super::batch;
use super::error::{GoogleError, is_quota, is_transient_answer};
use super::limit::RateLimiter;

/// Google's host root.
pub const DEFAULT_BASE_URL: &str = "https://www.googleapis.com";
/// Most parts per batch call the client sends.
pub const MAX_BATCH_SIZE: usize = 50;
/// `maxResults` of [`GoogleClient::list_all`] (the API's maximum).
pub const LIST_PAGE_SIZE: u32 = 2500;

/// Client settings. `Default` gives Google's endpoints and the documented
/// limits.
#[derive(Debug, Clone)]
pub struct GoogleClientConfig {
    /// Host root; the API is `{base_url}/calendar/v3`, batches go to
    /// `{base_url}/batch/calendar/v3`.
    pub base_url: String,
    /// The OAuth token endpoint.
    pub token_url: String,
    /// Client-side token bucket (one second of burst); `<= 0` = unlimited.
    /// Every HTTP call takes one token, every batch part one more.
    pub requests_per_second: f64,
    /// Retries of a transient failure (per request, per batch part, per
    /// batch call).
    pub max_retries: u32,
    /// Longest wait between retries (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// Timeout of one HTTP call.
    pub timeout: Duration,
    /// Parts per batch call, clamped to `1..=50`.
    pub batch_size: usize,
}

impl Default for GoogleClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            token_url: DEFAULT_TOKEN_URL.into(),
            requests_per_second: 10.0,
            max_retries: 5,
            max_backoff: Duration::from_secs(32),
            timeout: Duration::from_secs(30),
            batch_size: MAX_BATCH_SIZE,
        }
    }
}

/// HTTP methods of the Calendar API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn to_reqwest(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Post => reqwest::Method::POST,
            Self::Put => reqwest::Method::PUT,
            Self::Patch => reqwest::Method::PATCH,
            Self::Delete => reqwest::Method::DELETE,
        }
    }
}

/// One Calendar API request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: Method,
    /// Relative to `/calendar/v3`, each segment already percent-encoded
    /// (see [`calendar_path`], [`event_path`]).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// `If-Match` (an etag, quotes included).
    pub if_match: Option<String>,
}

impl ApiRequest {
    /// A request without query, body or precondition.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            if_match: None,
        }
    }

    /// Adds a query parameter.
    pub fn with_query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Sets the JSON body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sets `If-Match`.
    pub fn with_if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    /// The `ETag` header, else the body's `etag`.
    pub etag: Option<String>,
    /// `Null` for an empty body (204).
    pub body: Value,
}

/// A complete listing: every item of every page, and the sync token of the
/// last page.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub items: Vec<Value>,
    pub next_sync_token: Option<String>,
}

/// Characters kept as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One percent-encoded path segment (`@` → `%40`, `/` → `%2F`, …).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `/calendars/<calendar id>`.
pub fn calendar_path(calendar_id: &str) -> String {
    format!("/calendars/{}", encode_segment(calendar_id))
}

/// `/calendars/<calendar id>/events/<event id>`.
pub fn event_path(calendar_id: &str, event_id: &str) -> String {
    format!(
        "{}/events/{}",
        calendar_path(calendar_id),
        encode_segment(event_id)
    )
}

/// `/calendars/<calendar id>/events`.
pub fn events_path(calendar_id: &str) -> String {
    format!("{}/events", calendar_path(calendar_id))
}

/// Call counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// HTTP calls to the API, each batch call counted once.
    pub api_calls: u64,
    pub batch_calls: u64,
    /// Parts sent in batch calls (resent parts again).
    pub batched_parts: u64,
    /// HTTP calls to the token endpoint.
    pub token_calls: u64,
    /// POST / PUT / PATCH / DELETE sent, as calls or parts (every attempt).
    pub writes: u64,
    /// Retries of any kind (backoff, token renewal after 401, resent parts).
    pub retries: u64,
}

/// The live counters behind [`CallStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    api_calls: AtomicU64,
    batch_calls: AtomicU64,
    batched_parts: AtomicU64,
    token_calls: AtomicU64,
    writes: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn token_call(&self) {
        Self::add(&self.token_calls, 1);
    }

    pub(crate) fn retry(&self) {
        Self::add(&self.retries, 1);
    }

    fn snapshot(&self) -> CallStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallStats {
            api_calls: get(&self.api_calls),
            batch_calls: get(&self.batch_calls),
            batched_parts: get(&self.batched_parts),
            token_calls: get(&self.token_calls),
            writes: get(&self.writes),
            retries: get(&self.retries),
        }
    }

    fn reset(&self) {
        for c in [
            &self.api_calls,
            &self.batch_calls,
            &self.batched_parts,
            &self.token_calls,
            &self.writes,
            &self.retries,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The wait before retry number `attempt + 1`: `2^attempt` s plus up to 1 s
/// of jitter, at least `retry_after`, at most `max`.
pub(crate) fn backoff(attempt: u32, max: Duration, retry_after: Option<Duration>) -> Duration {
    let exp = Duration::from_secs(1u64 << attempt.min(16));
    let jitter = Duration::from_millis(rand::random_range(0..1000));
    let d = (exp + jitter).max(retry_after.unwrap_or_default());
    d.min(max)
}

/// What one answer (a whole call or a batch part) means for the caller.
#[derive(Debug)]
enum Outcome {
    Done(ApiResponse),
    Final(GoogleError),
    Quota(String),
    Unauthorized(String),
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// `(reason, message)` of Google's error envelope (OAuth-style bodies and
/// non-JSON pages tolerated).
fn error_fields(status: u16, body: &[u8]) -> (String, String) {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = &json["error"];
    let reason = err["errors"][0]["reason"]
        .as_str()
        .or_else(|| err["status"].as_str())
        .or_else(|| err.as_str())
        .unwrap_or_default()
        .to_owned();
    let message = err["message"]
        .as_str()
        .or_else(|| json["error_description"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                text.chars().take(200).collect()
            }
        });
    (reason, message)
}

fn classify(
    status: u16,
    etag: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Outcome {
    if (200..300).contains(&status) {
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return Outcome::Final(GoogleError::Decode(format!(
                        "{status} answer is not JSON: {e}"
                    )));
                }
            }
        };
        let etag = etag.or_else(|| body["etag"].as_str().map(str::to_owned));
        return Outcome::Done(ApiResponse { status, etag, body });
    }
    let (reason, message) = error_fields(status, body);
    if status == 401 {
        return Outcome::Unauthorized(message);
    }
    if status == 403 && is_quota(&reason) {
        return Outcome::Quota(format!("{reason}: {message}"));
    }
    if is_transient_answer(status, &reason) {
        return Outcome::Retry {
            error: format!("{status} {reason}: {message}"),
            retry_after,
        };
    }
    Outcome::Final(GoogleError::Api {
        status,
        reason,
        message,
    })
}

fn retry_after_of(headers: impl Fn(&str) -> Option<String>) -> Option<Duration> {
    headers("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

struct Inner {
    cfg: GoogleClientConfig,
    http: reqwest::Client,
    api_base: String,
    batch_url: String,
    tokens: TokenSource,
    limiter: RateLimiter,
    counters: Arc<Counters>,
}

/// The Google Calendar client. Cheap to clone (shared state: token cache,
/// rate limiter, counters).
#[derive(Clone)]
pub struct GoogleClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleClient")
            .field("config", &self.inner.cfg)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

fn check_url(what: &str, s: &str) -> Result<(), GoogleError> {
    let u = url::Url::parse(s).map_err(|e| GoogleError::Config(format!("{what} {s:?}: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(GoogleError::Config(format!(
            "{what} {s:?}: not an http(s) URL"
        )));
    }
    Ok(())
}

impl GoogleClient {
    /// A client with its own HTTP connection pool (no redirects, the
    /// configured timeout).
    pub fn new(cfg: GoogleClientConfig, creds: Credentials) -> Result<Self, GoogleError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("feishu-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GoogleError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Self::with_http_client(cfg, creds, http)
    }

    /// A client on a caller-built `reqwest::Client` (proxies, roots); it
    /// should not follow redirects. `cfg.timeout` still applies per call.
    pub fn with_http_client(
        mut cfg: GoogleClientConfig,
        creds: Credentials,
        http: reqwest::Client,
    ) -> Result<Self, GoogleError> {
        cfg.base_url = cfg.base_url.trim_end_matches('/').to_owned();
        check_url("base URL", &cfg.base_url)?;
        check_url("token URL", &cfg.token_url)?;
        cfg.batch_size = cfg.batch_size.clamp(1, MAX_BATCH_SIZE);
        let counters = Arc::new(Counters::default());
        let tokens = TokenSource::new(
            http.clone(),
            creds,
            &cfg.token_url,
            Arc::clone(&counters),
            TokenRetry {
                max_retries: cfg.max_retries,
                max_backoff: cfg.max_backoff,
            },
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                api_base: format!("{}{}", cfg.base_url, batch::API_PREFIX),
                batch_url: format!("{}/batch{}", cfg.base_url, batch::API_PREFIX),
                limiter: RateLimiter::new(cfg.requests_per_second),
                cfg,
                http,
                tokens,
                counters,
            }),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &GoogleClientConfig {
        &self.inner.cfg
    }

    /// Counters since creation or the last [`Self::reset_stats`].
    pub fn stats(&self) -> CallStats {
        self.inner.counters.snapshot()
    }

    pub fn reset_stats(&self) {
        self.inner.counters.reset();
    }

    /// A live access token (cached; minted when missing or about to
    /// expire). Useful to check credentials up front.
    pub async fn access_token(&self) -> Result<Secret, GoogleError> {
        self.inner.tokens.token().await
    }

    /// One request, retried on transient failures; a 401 renews the token
    /// once. Errors: `Api` for final answers, `Quota`, `Revoked`,
    /// `Unavailable` when retries ran out, `Decode`.
    pub async fn execute(&self, req: ApiRequest) -> Result<ApiResponse, GoogleError> {
        let inner = &self.inner;
        let mut token = inner.tokens.token().await?;
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            match self.send_once(&req, &token).await {
                Outcome::Done(r) => return Ok(r),
                Outcome::Final(e) => return Err(e),
                Outcome::Quota(m) => return Err(GoogleError::Quota(m)),
                Outcome::Unauthorized(m) => {
                    if renewed {
                        return Err(GoogleError::Api {
                            status: 401,
                            reason: "authError".into(),
                            message: m,
                        });
                    }
                    renewed = true;
                    tracing::debug!(path = %req.path, "google 401, renewing the access token");
                    inner.counters.retry();
                    token = inner.tokens.renew(&token).await?;
                }
                Outcome::Retry { error, retry_after } => {
                    if attempt >= inner.cfg.max_retries {
                        return Err(GoogleError::Unavailable(error));
                    }
                    let wait = backoff(attempt, inner.cfg.max_backoff, retry_after);
                    tracing::warn!(
                        method = req.method.as_str(), path = %req.path, attempt,
                        wait_ms = wait.as_millis() as u64, %error, "google call failed, retrying"
                    );
                    inner.counters.retry();
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn send_once(&self, req: &ApiRequest, token: &Secret) -> Outcome {
        let inner = &self.inner;
        inner.limiter.acquire(1).await;
        Counters::add(&inner.counters.api_calls, 1);
        if req.method.is_write() {
            Counters::add(&inner.counters.writes, 1);
        }
        let started = Instant::now();
        let mut rb = inner
            .http
            .request(
                req.method.to_reqwest(),
                format!("{}{}", inner.api_base, req.path),
            )
            .bearer_auth(token.expose())
            .timeout(inner.cfg.timeout);
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(etag) = &req.if_match {
            rb = rb.header(header::IF_MATCH, etag);
        }
        if let Some(body) = &req.body {
            rb = rb.json(body);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    error: format!("transport: {}", error_chain(&e)),
                    retry_after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        // In a block: a closure taking `&str` must not live across an await
        // (it would make the future not `Send` for every lifetime).
        let (etag, retry_after) = {
            let hdr = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            (hdr("etag"), retry_after_of(hdr))
        };
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Retry {
                    error: format!("transport (body): {}", error_chain(&e)),
                    retry_after: None,
                };
            }
        };
        tracing::debug!(
            method = req.method.as_str(), path = %req.path, status,
            elapsed_ms = started.elapsed().as_millis() as u64, "google call"
        );
        classify(status, etag, retry_after, &body)
    }

    /// Runs requests as batch calls of at most `batch_size` parts. Parts
    /// that failed transiently (403 rate limits, 429, 5xx, 401) are resent
    /// in later batch calls with backoff, up to `max_retries` times each; a
    /// whole batch call that fails transiently is resent as a whole.
    /// Results come in input order. `Err` only for `Revoked` (no token) and
    /// `Quota` (any part or call), which stop everything.
    pub async fn execute_batch(
        &self,
        reqs: Vec<ApiRequest>,
    ) -> Result<Vec<Result<ApiResponse, GoogleError>>, GoogleError> {
        let inner = &self.inner;
        let n = reqs.len();
        let mut results: Vec<Option<Result<ApiResponse, GoogleError>>> =
            (0..n).map(|_| None).collect();
        let mut attempts = vec![0u32; n];
        let mut pending: Vec<usize> = (0..n).collect();
        let mut round = 0u32;
        while !pending.is_empty() {
            let mut again = Vec::new();
            let mut hint: Option<Duration> = None;
            let mut stale_token: Option<Secret> = None;
            for chunk in pending.chunks(inner.cfg.batch_size) {
                let (token, answers) = self.send_batch(chunk, &reqs).await?;
                for (idx, outcome) in answers {
                    let (error, retry_after) = match outcome {
                        Outcome::Done(r) => {
                            results[idx] = Some(Ok(r));
                            continue;
                        }
                        Outcome::Final(e) => {
                            results[idx] = Some(Err(e));
                            continue;
                        }
                        Outcome::Quota(m) => return Err(GoogleError::Quota(m)),
                        Outcome::Unauthorized(m) => {
                            stale_token = Some(token.clone());
                            if attempts[idx] >= inner.cfg.max_retries {
                                results[idx] = Some(Err(GoogleError::Api {
                                    status: 401,
                                    reason: "authError".into(),
                                    message: m,
                                }));
                                continue;
                            }
                            (format!("401: {m}"), None)
                        }
                        Outcome::Retry { error, retry_after } => (error, retry_after),
                    };
                    if attempts[idx] >= inner.cfg.max_retries {
                        results[idx] = Some(Err(GoogleError::Unavailable(error)));
                        continue;
                    }
                    attempts[idx] += 1;
                    hint = hint.max(retry_after);
                    tracing::debug!(part = idx, %error, "google batch part failed, will resend");
                    again.push(idx);
                }
            }
            if let Some(t) = stale_token {
                inner.tokens.renew(&t).await?;
            }
            if !again.is_empty() {
                let wait = backoff(round, inner.cfg.max_backoff, hint);
                tracing::warn!(
                    parts = again.len(),
                    round,
                    wait_ms = wait.as_millis() as u64,
                    "google batch parts failed transiently, resending"
                );
                Counters::add(&inner.counters.retries, again.len() as u64);
                tokio::time::sleep(wait).await;
                round += 1;
            }
            pending = again;
        }
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.ok_or_else(|| GoogleError::Decode(format!("batch request {i} got no result")))
            })
            .collect()
    }

    /// One batch call for `chunk` (indices into `reqs`), retried as a whole
    /// on transient failures. Answers per index, plus the token used.
    async fn send_batch(
        &self,
        chunk: &[usize],
        reqs: &[ApiRequest],
    ) -> Result<(Secret, Vec<(usize, Outcome)>), GoogleError> {
        let inner = &self.inner;
        let parts: Vec<(usize, &ApiRequest)> = chunk.iter().map(|&i| (i, &reqs[i])).collect();
        let boundary = batch::new_boundary();
        let body = batch::encode(&parts, &boundary);
        let content_type = format!("multipart/mixed; boundary={boundary}");
        let writes = parts.iter().filter(|(_, r)| r.method.is_write()).count() as u64;
        let all = |f: &dyn Fn() -> GoogleError| -> Vec<(usize, Outcome)> {
            chunk.iter().map(|&i| (i, Outcome::Final(f()))).collect()
        };
        let mut token = inner.tokens.token().await?;
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            inner.limiter.acquire(chunk.len() as u32).await;
            let c = &inner.counters;
            Counters::add(&c.api_calls, 1);
            Counters::add(&c.batch_calls, 1);
            Counters::add(&c.batched_parts, chunk.len() as u64);
            Counters::add(&c.writes, writes);
            let started = Instant::now();
            let sent = inner
                .http
                .post(&inner.batch_url)
                .bearer_auth(token.expose())
                .header(header::CONTENT_TYPE, &content_type)
                .timeout(inner.cfg.timeout)
                .body(body.clone())
                .send()
                .await;
            let outcome = match sent {
                Err(e) => Outcome::Retry {
                    error: format!("transport: {}", error_chain(&e)),
                    retry_after: None,
                },
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    // See `send_once`: no `&str` closure across an await.
                    let (ct, retry_after) = {
                        let hdr = |name: &str| {
                            resp.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        (hdr("content-type").unwrap_or_default(), retry_after_of(hdr))
                    };
                    match resp.bytes().await {
                        Err(e) => Outcome::Retry {
                            error: format!("transport (body): {}", error_chain(&e)),
                            retry_after: None,
                        },
                        Ok(bytes) => {
                            tracing::debug!(
                                parts = chunk.len(),
                                status,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "google batch call"
                            );
                            if status == 200 {
                                let decoded = batch::decode(&ct, &bytes);
                                return Ok((
                                    token,
                                    match decoded {
                                        Ok(answers) => assign(chunk, answers),
                                        Err(e) => all(&|| e.clone()),
                                    },
                                ));
                            }
                            classify(status, None, retry_after, &bytes)
                        }
                    }
                }
            };
            match outcome {
                Outcome::Done(_) => {
                    return Ok((
                        token,
                        all(&|| GoogleError::Decode("batch answer is not multipart".into())),
                    ));
                }
                Outcome::Final(e) => return Ok((token, all(&|| e.clone()))),
                Outcome::Quota(m) => return Err(GoogleError::Quota(m)),
                Outcome::Unauthorized(m) => {
                    if renewed {
                        let e = GoogleError::Api {
                            status: 401,
                            reason: "authError".into(),
                            message: m,
                        };
                        return Ok((token, all(&|| e.clone())));
                    }
                    renewed = true;
                    c.retry();
                    token = inner.tokens.renew(&token).await?;
                }
                Outcome::Retry { error, retry_after } => {
                    if attempt >= inner.cfg.max_retries {
                        let e = GoogleError::Unavailable(error);
                        return Ok((token, all(&|| e.clone())));
                    }
                    let wait = backoff(attempt, inner.cfg.max_backoff, retry_after);
                    tracing::warn!(
                        parts = chunk.len(), attempt, wait_ms = wait.as_millis() as u64,
                        %error, "google batch call failed, retrying"
                    );
                    c.retry();
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Every item of a listing (`events.list`, `calendarList.list`, …),
    /// following `nextPageToken` with `maxResults=2500` unless `query` sets
    /// `maxResults`. A page that still fails after retries fails the whole
    /// listing (never a partial list).
    pub async fn list_all(
        &self,
        path: &str,
        query: Vec<(String, String)>,
    ) -> Result<Vec<Value>, GoogleError> {
        Ok(self.list(path, query).await?.items)
    }

    /// [`Self::list_all`] plus the `nextSyncToken` of the last page.
    pub async fn list(
        &self,
        path: &str,
        mut query: Vec<(String, String)>,
    ) -> Result<Listing, GoogleError> {
        if !query.iter().any(|(k, _)| k == "maxResults") {
            query.push(("maxResults".into(), LIST_PAGE_SIZE.to_string()));
        }
        let mut items = Vec::new();
        let mut page_token: Option<String> = None;
        let mut pages = 0u32;
        loop {
            let mut req = ApiRequest::new(Method::Get, path);
            req.query = query.clone();
            if let Some(t) = &page_token {
                req.query.push(("pageToken".into(), t.clone()));
            }
            let resp = self.execute(req).await?;
            pages += 1;
            match resp.body.get("items") {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => items.extend(a.iter().cloned()),
                Some(_) => {
                    return Err(GoogleError::Decode(format!(
                        "{path}: page {pages} has non-array items"
                    )));
                }
            }
            match resp.body.get("nextPageToken").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => {
                    if page_token.as_deref() == Some(next) {
                        return Err(GoogleError::Decode(format!(
                            "{path}: page token repeats after page {pages}"
                        )));
                    }
                    page_token = Some(next.to_owned());
                }
                _ => {
                    let next_sync_token = resp
                        .body
                        .get("nextSyncToken")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    tracing::debug!(path, pages, items = items.len(), "google listing complete");
                    return Ok(Listing {
                        items,
                        next_sync_token,
                    });
                }
            }
        }
    }
}

/// Pairs decoded parts with the chunk's indices: by `Content-ID`
/// (`response-item-N`), else by position.
fn assign(chunk: &[usize], answers: Vec<batch::PartResponse>) -> Vec<(usize, Outcome)> {
    let mut slots: Vec<Option<Outcome>> = chunk.iter().map(|_| None).collect();
    let mut unnamed = Vec::new();
    for (pos, part) in answers.into_iter().enumerate() {
        let slot = part
            .content_id
            .as_deref()
            .and_then(batch::item_index)
            .and_then(|idx| chunk.iter().position(|&c| c == idx))
            .filter(|&s| slots[s].is_none());
        let outcome = classify(
            part.status,
            part.header("etag").map(str::to_owned),
            retry_after_of(|n| part.header(n).map(str::to_owned)),
            &part.body,
        );
        match slot {
            Some(s) => slots[s] = Some(outcome),
            None => unnamed.push((pos, outcome)),
        }
    }
    for (pos, outcome) in unnamed {
        if let Some(slot) = slots.get_mut(pos).filter(|s| s.is_none()) {
            *slot = Some(outcome);
        }
    }
    chunk
        .iter()
        .zip(slots)
        .map(|(&idx, o)| {
            (
                idx,
                o.unwrap_or_else(|| {
                    Outcome::Final(GoogleError::Decode(format!(
                        "batch answer has no part for request {idx}"
                    )))
                }),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(
            event_path("abc@group.calendar.google.com", "xyz"),
            "/calendars/abc%40group.calendar.google.com/events/xyz"
        );
        assert_eq!(calendar_path("a/b c#d"), "/calendars/a%2Fb%20c%23d");
        assert_eq!(events_path("primary"), "/calendars/primary/events");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(32);
        let b0 = backoff(0, max, None);
        assert!(b0 >= Duration::from_secs(1) && b0 < Duration::from_secs(2));
        let b3 = backoff(3, max, None);
        assert!(b3 >= Duration::from_secs(8) && b3 < Duration::from_secs(9));
        assert_eq!(backoff(10, max, None), max);
        assert_eq!(
            backoff(0, max, Some(Duration::from_secs(20))),
            Duration::from_secs(20)
        );
        assert_eq!(backoff(0, max, Some(Duration::from_secs(100))), max);
        assert_eq!(
            backoff(40, Duration::from_millis(5), None),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn answers_are_classified() {
        let err = |code: u16, reason: &str| {
            serde_json::json!({"error": {"code": code, "message": "m",
                "errors": [{"domain": "usageLimits", "reason": reason, "message": "m"}]}})
            .to_string()
        };
        assert!(matches!(
            classify(403, None, None, err(403, "quotaExceeded").as_bytes()),
            Outcome::Quota(_)
        ));
        assert!(matches!(
            classify(403, None, None, err(403, "rateLimitExceeded").as_bytes()),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(429, None, Some(Duration::from_secs(3)), b"slow down"),
            Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(502, None, None, b"<html>bad gateway</html>"),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(401, None, None, err(401, "authError").as_bytes()),
            Outcome::Unauthorized(_)
        ));
        match classify(412, None, None, err(412, "conditionNotMet").as_bytes()) {
            Outcome::Final(GoogleError::Api { status, reason, .. }) => {
                assert_eq!((status, reason.as_str()), (412, "conditionNotMet"));
            }
            other => panic!("{other:?}"),
        }
        match classify(200, None, None, br#"{"id":"a","etag":"\"e\""}"#) {
            Outcome::Done(r) => assert_eq!(r.etag.as_deref(), Some("\"e\"")),
            other => panic!("{other:?}"),
        }
        match classify(204, None, None, b"") {
            Outcome::Done(r) => assert_eq!(r.body, Value::Null),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(200, None, None, b"{nope"),
            Outcome::Final(GoogleError::Decode(_))
        ));
    }

    #[test]
    fn parts_are_matched_by_content_id_then_position() {
        let part = |cid: Option<&str>, status: u16| batch::PartResponse {
            content_id: cid.map(str::to_owned),
            status,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let out = assign(
            &[4, 5, 6],
            vec![
                part(Some("<response-item-6>"), 204),
                part(None, 200),
                part(Some("<response-item-4>"), 201),
            ],
        );
        let statuses: Vec<(usize, u16)> = out
            .iter()
            .map(|(i, o)| match o {
                Outcome::Done(r) => (*i, r.status),
                _ => (*i, 0),
            })
            .collect();
        assert_eq!(statuses, vec![(4, 201), (5, 200), (6, 204)]);
        let missing = assign(&[1, 2], vec![part(Some("<response-item-1>"), 200)]);
        assert!(matches!(
            missing[1].1,
            Outcome::Final(GoogleError::Decode(_))
        ));
    }
}
