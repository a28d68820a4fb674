//! The Calendar v3 HTTP client on the shared HTTP layer (`bridge-http`):
//! bearer tokens from the [`TokenSource`], a client-side token bucket,
//! retries with exponential backoff and jitter for 429 / 5xx / rate-limit
//! 403s (at least `Retry-After`), one token refresh on 401, the batch
//! endpoint and paged listings (sinks-api.md A.1, A.6, A.9–A.11). What an
//! answer means is decided here ([`classify`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bridge_http::{
    Answer, Backoff, Bucket, Exchange, HttpClient, Jitter, Limiter, RetryPolicy, Retrying,
    ServerWait, ServiceStats, TransportError, Verdict, error_chain,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header;
use serde_json::Value;
use tokio::time::Instant;

use super::auth::{Credentials, DEFAULT_TOKEN_URL, Secret, TokenSource};
use super::batch;
use super::error::{GoogleError, is_quota, is_transient_answer};
pub use super::request::{ApiRequest, ApiResponse, Method};

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

/// The live counters behind [`CallStats`] (the token endpoint's are kept
/// by the [`TokenSource`]).
#[derive(Debug, Default)]
struct Counters {
    api_calls: AtomicU64,
    batch_calls: AtomicU64,
    batched_parts: AtomicU64,
    writes: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn retry(&self) {
        Self::add(&self.retries, 1);
    }

    /// With the token source's `(calls, retries)`.
    fn snapshot(&self, (token_calls, token_retries): (u64, u64)) -> CallStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallStats {
            api_calls: get(&self.api_calls),
            batch_calls: get(&self.batch_calls),
            batched_parts: get(&self.batched_parts),
            token_calls,
            writes: get(&self.writes),
            retries: get(&self.retries) + token_retries,
        }
    }

    fn reset(&self) {
        for c in [
            &self.api_calls,
            &self.batch_calls,
            &self.batched_parts,
            &self.writes,
            &self.retries,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Google's backoff (sinks-api.md A.9: "2^n s + random ms", capped):
/// `2^attempt` s plus up to 1 s of jitter, at least `Retry-After`, at most
/// `max_backoff`. `GoogleClientConfig` has no total-wait setting: every wait
/// is at most `max_backoff`, so `max_retries × max_backoff` bounds it.
fn retry_policy(cfg: &GoogleClientConfig) -> RetryPolicy {
    RetryPolicy {
        max_retries: cfg.max_retries,
        backoff: Backoff {
            base: Duration::from_secs(1),
            max: cfg.max_backoff,
            jitter: Jitter::Add(Duration::from_secs(1)),
        },
        server_wait: ServerWait::AtLeast,
        max_total_wait: cfg.max_backoff.saturating_mul(cfg.max_retries.max(1)),
    }
}

/// The endpoint template of a request, for the limiter and the counters:
/// `GET /calendar/v3/calendars/:calendarId/events/:eventId`.
fn endpoint_of(method: Method, path: &str) -> String {
    let mut out = format!("{} {}", method.as_str(), batch::API_PREFIX);
    let mut prev = "";
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let name = match prev {
            "calendars" | "calendarList" => ":calendarId",
            "events" if !matches!(seg, "import" | "quickAdd" | "watch") => ":eventId",
            "acl" => ":ruleId",
            _ => seg,
        };
        out.push('/');
        out.push_str(name);
        prev = seg;
    }
    out
}

/// The label of batch calls.
const BATCH_ENDPOINT: &str = "POST /batch/calendar/v3";

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

/// `Retry-After` (seconds or an HTTP-date) of an answer or a batch part.
fn retry_after_of<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Duration> {
    bridge_http::retry::server_wait(header, &[], SystemTime::now())
}

struct Inner {
    cfg: GoogleClientConfig,
    http: HttpClient,
    api_base: String,
    batch_url: String,
    tokens: TokenSource,
    counters: Counters,
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
        let policy = retry_policy(&cfg);
        let tokens = TokenSource::new(http.clone(), creds, &cfg.token_url, policy)?;
        let http = HttpClient::builder("google")
            .http(http)
            .timeout(cfg.timeout)
            .retry(policy)
            .limiter(Limiter::Bucket(Bucket::new(cfg.requests_per_second)))
            .build()
            .map_err(|e| GoogleError::Config(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                api_base: format!("{}{}", cfg.base_url, batch::API_PREFIX),
                batch_url: format!("{}/batch{}", cfg.base_url, batch::API_PREFIX),
                cfg,
                http,
                tokens,
                counters: Counters::default(),
            }),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &GoogleClientConfig {
        &self.inner.cfg
    }

    /// Counters since creation or the last [`Self::reset_stats`].
    pub fn stats(&self) -> CallStats {
        self.inner.counters.snapshot(self.inner.tokens.counts())
    }

    /// API calls by endpoint template and HTTP status (0: no answer), as
    /// every service counts them; batch calls count once, token calls not.
    pub fn calls(&self) -> &ServiceStats {
        self.inner.http.stats()
    }

    pub fn reset_stats(&self) {
        self.inner.counters.reset();
        self.inner.tokens.reset_counts();
        self.inner.http.stats().reset();
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
        let mut call = ApiCall {
            req: &req,
            url: format!("{}{}", inner.api_base, req.path),
            counters: &inner.counters,
            started: Instant::now(),
        };
        let endpoint = endpoint_of(req.method, &req.path);
        inner
            .http
            .execute(&endpoint, 1, &inner.tokens, &mut call)
            .await
            .map_err(Failure::into_error)
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
                inner.tokens.renew(Some(&t)).await?;
            }
            if !again.is_empty() {
                let wait = inner.http.policy().delay(round, hint);
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
        let mut call = BatchCall {
            url: &inner.batch_url,
            chunk,
            body: batch::encode(&parts, &boundary),
            content_type: format!("multipart/mixed; boundary={boundary}"),
            writes: parts.iter().filter(|(_, r)| r.method.is_write()).count() as u64,
            counters: &inner.counters,
            token: None,
            started: Instant::now(),
        };
        let outcome = inner
            .http
            .execute(BATCH_ENDPOINT, chunk.len() as u32, &inner.tokens, &mut call)
            .await;
        let answers = match outcome {
            Ok(answers) => answers,
            Err(Failure::Stop(e)) => return Err(e),
            // Final for the whole call: every part gets the error.
            Err(f) => {
                let e = f.into_error();
                chunk
                    .iter()
                    .map(|&i| (i, Outcome::Final(e.clone())))
                    .collect()
            }
        };
        Ok((call.token.unwrap_or_default(), answers))
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

/// Why a call (or a batch call) did not succeed.
#[derive(Debug)]
enum Failure {
    /// Stops everything, batch included: quota, no token.
    Stop(GoogleError),
    /// Final for this call (for a batch call: for each of its parts).
    Final(GoogleError),
    /// Transient; reported as `Unavailable` once the retries ran out.
    Transient(String),
}

impl Failure {
    fn into_error(self) -> GoogleError {
        match self {
            Failure::Stop(e) | Failure::Final(e) => e,
            Failure::Transient(m) => GoogleError::Unavailable(m),
        }
    }
}

impl From<GoogleError> for Failure {
    /// Token failures (revoked, token endpoint unavailable) stop everything.
    fn from(e: GoogleError) -> Self {
        Failure::Stop(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Stop(e) | Failure::Final(e) => e.fmt(f),
            Failure::Transient(m) => f.write_str(m),
        }
    }
}

/// No answer (or one cut short): transient.
fn transport_retry<T>(e: &TransportError) -> Verdict<T, Failure> {
    let error = match e.status {
        Some(_) => format!("transport (body): {}", e.detail()),
        None => format!("transport: {}", e.detail()),
    };
    Verdict::Retry {
        error: Failure::Transient(error),
        server_wait: None,
    }
}

/// One API request.
struct ApiCall<'a> {
    req: &'a ApiRequest,
    url: String,
    counters: &'a Counters,
    started: Instant,
}

impl Exchange for ApiCall<'_> {
    type Output = ApiResponse;
    type Error = Failure;

    fn request(
        &mut self,
        http: &reqwest::Client,
        _token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        let req = self.req;
        Counters::add(&self.counters.api_calls, 1);
        if req.method.is_write() {
            Counters::add(&self.counters.writes, 1);
        }
        self.started = Instant::now();
        let mut rb = http.request(req.method.to_reqwest(), &self.url);
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(etag) = &req.if_match {
            rb = rb.header(header::IF_MATCH, etag);
        }
        if let Some(body) = &req.body {
            rb = rb.json(body);
        }
        rb
    }

    fn classify(
        &mut self,
        answer: Result<Answer, TransportError>,
    ) -> Verdict<ApiResponse, Failure> {
        let a = match answer {
            Ok(a) => a,
            Err(e) => return transport_retry(&e),
        };
        tracing::debug!(
            method = self.req.method.as_str(), path = %self.req.path, status = a.status,
            elapsed_ms = self.started.elapsed().as_millis() as u64, "google call"
        );
        let etag = a.header("etag").map(str::to_owned);
        let retry_after = retry_after_of(|n| a.header(n));
        verdict(classify(a.status, etag, retry_after, &a.body), |r| r)
    }

    fn retrying(&mut self, _retry: Retrying<'_, Failure>) {
        self.counters.retry();
    }
}

/// What the answer of a whole call means for the retry loop; `done` makes
/// the output of a success.
fn verdict<T>(outcome: Outcome, done: impl FnOnce(ApiResponse) -> T) -> Verdict<T, Failure> {
    match outcome {
        Outcome::Done(r) => Verdict::Done(done(r)),
        Outcome::Final(e) => Verdict::Fail(Failure::Final(e)),
        Outcome::Quota(m) => Verdict::Fail(Failure::Stop(GoogleError::Quota(m))),
        Outcome::Unauthorized(m) => Verdict::Renew(Failure::Final(unauthorized(m))),
        Outcome::Retry { error, retry_after } => Verdict::Retry {
            error: Failure::Transient(error),
            server_wait: retry_after,
        },
    }
}

/// A 401 that a fresh token did not cure.
fn unauthorized(message: String) -> GoogleError {
    GoogleError::Api {
        status: 401,
        reason: "authError".into(),
        message,
    }
}

/// One batch call: its parts are answered in the multipart body.
struct BatchCall<'a> {
    url: &'a str,
    chunk: &'a [usize],
    body: Vec<u8>,
    content_type: String,
    writes: u64,
    counters: &'a Counters,
    /// The token of the last attempt (a part's 401 renews it).
    token: Option<Secret>,
    started: Instant,
}

impl BatchCall<'_> {
    fn all(&self, e: &GoogleError) -> Vec<(usize, Outcome)> {
        self.chunk
            .iter()
            .map(|&i| (i, Outcome::Final(e.clone())))
            .collect()
    }
}

impl Exchange for BatchCall<'_> {
    type Output = Vec<(usize, Outcome)>;
    type Error = Failure;

    fn request(
        &mut self,
        http: &reqwest::Client,
        token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        let c = self.counters;
        Counters::add(&c.api_calls, 1);
        Counters::add(&c.batch_calls, 1);
        Counters::add(&c.batched_parts, self.chunk.len() as u64);
        Counters::add(&c.writes, self.writes);
        self.token = token.cloned();
        self.started = Instant::now();
        http.post(self.url)
            .header(header::CONTENT_TYPE, &self.content_type)
            .body(self.body.clone())
    }

    fn classify(
        &mut self,
        answer: Result<Answer, TransportError>,
    ) -> Verdict<Vec<(usize, Outcome)>, Failure> {
        let a = match answer {
            Ok(a) => a,
            Err(e) => return transport_retry(&e),
        };
        tracing::debug!(
            parts = self.chunk.len(),
            status = a.status,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "google batch call"
        );
        if a.status == 200 {
            let ct = a.header("content-type").unwrap_or_default();
            return Verdict::Done(match batch::decode(ct, &a.body) {
                Ok(answers) => assign(self.chunk, answers),
                Err(e) => self.all(&e),
            });
        }
        let retry_after = retry_after_of(|n| a.header(n));
        verdict(classify(a.status, None, retry_after, &a.body), |_| {
            self.all(&GoogleError::Decode("batch answer is not multipart".into()))
        })
    }

    fn retrying(&mut self, _retry: Retrying<'_, Failure>) {
        self.counters.retry();
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
            retry_after_of(|n| part.header(n)),
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

    /// The client's policy with `max_backoff = max`.
    fn backoff(attempt: u32, max: Duration, retry_after: Option<Duration>) -> Duration {
        let cfg = GoogleClientConfig {
            max_backoff: max,
            ..GoogleClientConfig::default()
        };
        retry_policy(&cfg).delay(attempt, retry_after)
    }

    #[test]
    fn endpoints_name_their_ids() {
        assert_eq!(
            endpoint_of(Method::Put, &event_path("a@b", "xyz")),
            "PUT /calendar/v3/calendars/:calendarId/events/:eventId"
        );
        assert_eq!(
            endpoint_of(Method::Get, &format!("{}/instances", event_path("a", "b"))),
            "GET /calendar/v3/calendars/:calendarId/events/:eventId/instances"
        );
        assert_eq!(
            endpoint_of(Method::Post, "/calendars/a/events/import"),
            "POST /calendar/v3/calendars/:calendarId/events/import"
        );
        assert_eq!(
            endpoint_of(Method::Get, "/users/me/calendarList"),
            "GET /calendar/v3/users/me/calendarList"
        );
        assert_eq!(
            endpoint_of(Method::Post, "/calendars"),
            "POST /calendar/v3/calendars"
        );
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
