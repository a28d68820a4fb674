//! Webhook delivery ("send events to the developer server", `feishu-api.md` §8):
//! signature check, AES-256-CBC decryption, URL verification, verification
//! token and staleness checks, deduplication, and an axum route.
//!
//! [`process`] is the pure part: bytes and headers in, a [`Outcome`] or a
//! [`WebhookError`] (with its HTTP status) out, in this order:
//!
//! 1. body size limit ([`WebhookConfig::max_body_bytes`]) → 413;
//! 2. with an Encrypt Key: when the `X-Lark-Signature` headers are present
//!    the signature over the exact body bytes is verified (constant time)
//!    → 401 when wrong;
//! 3. decryption of `{"encrypt": …}` bodies → 400 when the base64, the
//!    ciphertext or the padding is bad;
//! 4. parsing ([`crate::hint`]) → 400 when malformed;
//! 5. URL verification challenges are answered here (token checked, no
//!    signature needed, as the official SDKs do);
//! 6. an event that arrived *unsigned* although an Encrypt Key is configured
//!    is refused → 401;
//! 7. verification token (v2 `header.token`, v1 `token`) → 401 when wrong;
//! 8. staleness → **401** (a stale signed request is treated as a replay):
//!    `X-Lark-Request-Timestamp` (seconds or milliseconds, the unit is
//!    undocumented) must be within [`WebhookConfig::max_skew`] (default
//!    **5 minutes**) of now, and the event's own `create_time` must not be
//!    older than [`WebhookConfig::max_event_age`] (default **8 hours**, longer
//!    than Feishu's 15 s / 5 min / 1 h / 6 h retry schedule, so that
//!    legitimate retries are not refused) nor more than `max_skew` in the
//!    future.
//!
//! [`router`] serves `POST /webhook/event` on top of it and deduplicates
//! through a [`DeliverySink`]: accepted and duplicate deliveries answer 200
//! `{"msg":"success"}`; a sink that cannot make the hint durable right now
//! ([`DeliveryError::Unavailable`], e.g. a full disk) answers 503, any other
//! sink failure 500, so that Feishu retries either way. Nothing is recorded
//! for a rejected request.
//!
//! The route bounds what a client can hold: a body must arrive within
//! [`WebhookConfig::body_timeout`] (else 408 and the connection is closed),
//! and bodies being read share a memory budget
//! ([`WebhookConfig::max_inflight_body_bytes`], reserved by their declared
//! length; a request that does not fit gets 503 at once).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::hint::{self, ChangeHint, Delivery, HintError, Inbound};

/// The route Feishu's own samples use.
pub const WEBHOOK_PATH: &str = "/webhook/event";
/// Request timestamp header.
pub const HEADER_TIMESTAMP: &str = "x-lark-request-timestamp";
/// Request nonce header.
pub const HEADER_NONCE: &str = "x-lark-request-nonce";
/// Signature header: lowercase hex SHA-256 of timestamp‖nonce‖key‖body.
pub const HEADER_SIGNATURE: &str = "x-lark-signature";

/// Default body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default tolerance on `X-Lark-Request-Timestamp`: 5 minutes either way.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// Default maximum age of an event's `create_time`: 8 hours (Feishu retries
/// for up to ~7.1 hours).
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(8 * 3600);
/// Default time a client has to send the whole body: 10 s (Feishu itself
/// gives up after 3 s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default memory budget of all bodies being read at once: 16 MiB.
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 16 * 1024 * 1024;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// How the webhook authenticates and bounds requests.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The app's Encrypt Key; when set, bodies are `{"encrypt": …}` and
    /// events must be signed.
    pub encrypt_key: Option<String>,
    /// The app's Verification Token; when set, every payload must carry it.
    pub verification_token: Option<String>,
    /// Largest accepted body (413 above).
    pub max_body_bytes: usize,
    /// Tolerance on `X-Lark-Request-Timestamp` in both directions, and on an
    /// event `create_time` in the future.
    pub max_skew: Duration,
    /// Oldest accepted event `create_time`.
    pub max_event_age: Duration,
    /// Time a client has to send the body (408 and close after).
    pub body_timeout: Duration,
    /// Bodies being read at once, by their declared length (the full
    /// `max_body_bytes` when none is declared); above it, 503 at once.
    pub max_inflight_body_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            encrypt_key: None,
            verification_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_skew: DEFAULT_MAX_SKEW,
            max_event_age: DEFAULT_MAX_EVENT_AGE,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("WebhookConfig")
            .field("encrypt_key", &redact(&self.encrypt_key))
            .field("verification_token", &redact(&self.verification_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_skew", &self.max_skew)
            .field("max_event_age", &self.max_event_age)
            .field("body_timeout", &self.body_timeout)
            .field("max_inflight_body_bytes", &self.max_inflight_body_bytes)
            .finish()
    }
}

/// Why a webhook request was refused. [`WebhookError::status`] gives the
/// HTTP answer. Messages never contain secrets or payloads.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is larger than `max_body_bytes`.
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// An encrypted event arrived without `X-Lark-Signature` /
    /// `X-Lark-Request-Timestamp` / `X-Lark-Request-Nonce`.
    #[error("an Encrypt Key is configured but the request carries no signature headers")]
    MissingSignature,
    /// The signature does not match the body.
    #[error("X-Lark-Signature does not match the request")]
    BadSignature,
    /// `X-Lark-Request-Timestamp` is not an integer.
    #[error("X-Lark-Request-Timestamp is not a number of seconds or milliseconds")]
    BadTimestamp,
    /// The body is encrypted but no Encrypt Key is configured.
    #[error("the body is encrypted but no Encrypt Key is configured")]
    NoEncryptKey,
    /// The `encrypt` value cannot be decrypted.
    #[error("cannot decrypt the body: {0}")]
    Decrypt(String),
    /// The (decrypted) payload is malformed.
    #[error(transparent)]
    Malformed(#[from] HintError),
    /// No verification token in the payload although one is configured.
    #[error("the payload carries no verification token")]
    MissingToken,
    /// The payload's verification token is not the configured one.
    #[error("the payload's verification token does not match")]
    BadToken,
    /// The request or the event is too old (or too far in the future).
    #[error("stale request: {what} is {skew_s} s away from now (limit {limit_s} s)")]
    Stale {
        what: &'static str,
        skew_s: i64,
        limit_s: u64,
    },
}

impl WebhookError {
    /// The HTTP status the webhook answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingSignature
            | Self::BadSignature
            | Self::MissingToken
            | Self::BadToken
            | Self::Stale { .. } => StatusCode::UNAUTHORIZED,
            Self::BadTimestamp | Self::NoEncryptKey | Self::Decrypt(_) | Self::Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

/// What a valid request is.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived value, moved once; boxing buys nothing"
)]
pub enum Outcome {
    /// URL verification: answer `{"challenge": <this>}`.
    Challenge(String),
    /// An authenticated event.
    Event(Delivery),
}

// ---------------------------------------------------------------------------
// Crypto

fn aes_key(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// Decrypts an `encrypt` value: base64 of IV‖AES-256-CBC ciphertext, key =
/// SHA-256 of the Encrypt Key, PKCS#7 padding.
pub fn decrypt(encrypt_key: &str, b64: &str) -> Result<Vec<u8>, WebhookError> {
    let raw = BASE64
        .decode(b64.trim())
        .map_err(|e| WebhookError::Decrypt(format!("invalid base64: {e}")))?;
    if raw.len() < 32 || raw.len() % 16 != 0 {
        return Err(WebhookError::Decrypt(format!(
            "{} bytes is not an IV followed by whole AES blocks",
            raw.len()
        )));
    }
    let (iv, ciphertext) = raw.split_at(16);
    let key = aes_key(encrypt_key);
    Aes256CbcDec::new(&key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| WebhookError::Decrypt("bad padding (wrong key or tampered ciphertext)".into()))
}

/// Encrypts like Feishu does, with a random IV (for tests, benches and the emulator).
pub fn encrypt(encrypt_key: &str, plaintext: &[u8]) -> String {
    let mut iv = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut iv[..]);
    encrypt_with_iv(encrypt_key, &iv, plaintext)
}

/// Encrypts with a given IV (deterministic output).
pub fn encrypt_with_iv(encrypt_key: &str, iv: &[u8; 16], plaintext: &[u8]) -> String {
    let key = aes_key(encrypt_key);
    let ct = Aes256CbcEnc::new(&key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut out = Vec::with_capacity(16 + ct.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&ct);
    BASE64.encode(out)
}

fn signature_digest(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    h.finalize().into()
}

/// `X-Lark-Signature`: lowercase hex SHA-256 of timestamp‖nonce‖key‖body.
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    hex::encode(signature_digest(timestamp, nonce, encrypt_key, body))
}

/// Checks a signature in constant time (hex case-insensitive).
pub fn verify_signature(
    timestamp: &str,
    nonce: &str,
    encrypt_key: &str,
    body: &[u8],
    provided: &str,
) -> bool {
    let expected = signature_digest(timestamp, nonce, encrypt_key, body);
    let mut given = [0u8; 32];
    if hex::decode_to_slice(provided.trim(), &mut given).is_err() {
        return false;
    }
    expected.ct_eq(&given).into()
}

fn ct_eq_str(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

// ---------------------------------------------------------------------------
// Processing

#[derive(Deserialize)]
struct EncryptedBody<'a> {
    #[serde(borrow, default)]
    encrypt: Option<std::borrow::Cow<'a, str>>,
}

struct SignatureHeaders<'a> {
    timestamp: &'a str,
    nonce: &'a str,
    signature: &'a str,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Parses `X-Lark-Request-Timestamp` (seconds or milliseconds) into Unix ms.
fn parse_request_timestamp(raw: &str) -> Result<i64, WebhookError> {
    let v: i64 = raw.trim().parse().map_err(|_| WebhookError::BadTimestamp)?;
    // `unsigned_abs`: `abs` overflows on i64::MIN.
    Ok(if v.unsigned_abs() < 100_000_000_000 {
        v.saturating_mul(1000)
    } else {
        v
    })
}

/// Verifies, decrypts and parses one webhook request. See the module docs for
/// the order of checks and the status of each error.
pub fn process(
    config: &WebhookConfig,
    headers: &HeaderMap,
    raw_body: &[u8],
    now: SystemTime,
) -> Result<Outcome, WebhookError> {
    if raw_body.len() > config.max_body_bytes {
        return Err(WebhookError::TooLarge {
            size: raw_body.len(),
            limit: config.max_body_bytes,
        });
    }

    let sig_headers = match (
        header(headers, HEADER_TIMESTAMP),
        header(headers, HEADER_NONCE),
        header(headers, HEADER_SIGNATURE),
    ) {
        (Some(timestamp), Some(nonce), Some(signature)) => Some(SignatureHeaders {
            timestamp,
            nonce,
            signature,
        }),
        _ => None,
    };
    let encrypt_key = config.encrypt_key.as_deref().filter(|k| !k.is_empty());

    // 2. signature
    let mut signed = false;
    if let (Some(key), Some(sig)) = (encrypt_key, &sig_headers) {
        if !verify_signature(sig.timestamp, sig.nonce, key, raw_body, sig.signature) {
            return Err(WebhookError::BadSignature);
        }
        signed = true;
    }

    // 3. decryption
    let probe: EncryptedBody<'_> = serde_json::from_slice(raw_body)
        .map_err(|e| WebhookError::Malformed(HintError::InvalidJson(e)))?;
    let decrypted;
    let plaintext: &[u8] = match probe.encrypt {
        Some(ciphertext) => {
            let key = encrypt_key.ok_or(WebhookError::NoEncryptKey)?;
            decrypted = decrypt(key, &ciphertext)?;
            &decrypted
        }
        None => raw_body,
    };

    // 4. parsing
    let inbound = hint::parse_inbound(plaintext)?;
    let delivery = match inbound {
        // 5. URL verification
        Inbound::Challenge { challenge, token } => {
            check_token(config, token.as_deref())?;
            return Ok(Outcome::Challenge(challenge));
        }
        Inbound::Event(d) => d,
    };

    // 6. events must be signed when an Encrypt Key is configured
    if encrypt_key.is_some() && !signed {
        return Err(WebhookError::MissingSignature);
    }

    // 7. verification token
    check_token(config, delivery.token.as_deref())?;

    // 8. staleness
    let now_ms = unix_ms(now);
    let skew_ms = config.max_skew.as_millis().min(i64::MAX as u128) as i64;
    if let (true, Some(sig)) = (signed, &sig_headers) {
        let ts_ms = parse_request_timestamp(sig.timestamp)?;
        // Saturating: both values come from the request and may be extreme.
        let skew = now_ms.saturating_sub(ts_ms);
        if skew.saturating_abs() > skew_ms {
            return Err(WebhookError::Stale {
                what: "X-Lark-Request-Timestamp",
                skew_s: skew / 1000,
                limit_s: config.max_skew.as_secs(),
            });
        }
    }
    if let Some(created) = delivery.create_time_ms {
        let age = now_ms.saturating_sub(created);
        let max_age_ms = config.max_event_age.as_millis().min(i64::MAX as u128) as i64;
        if age > max_age_ms {
            return Err(WebhookError::Stale {
                what: "the event's create_time",
                skew_s: age / 1000,
                limit_s: config.max_event_age.as_secs(),
            });
        }
        if age.saturating_neg() > skew_ms {
            return Err(WebhookError::Stale {
                what: "the event's create_time",
                skew_s: age / 1000,
                limit_s: config.max_skew.as_secs(),
            });
        }
    }

    Ok(Outcome::Event(delivery))
}

fn check_token(config: &WebhookConfig, token: Option<&str>) -> Result<(), WebhookError> {
    let Some(expected) = config
        .verification_token
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return Ok(());
    };
    match token {
        None => Err(WebhookError::MissingToken),
        Some(t) if ct_eq_str(t, expected) => Ok(()),
        Some(_) => Err(WebhookError::BadToken),
    }
}

// ---------------------------------------------------------------------------
// Dedupe and hand-off

/// Why a [`DeliverySink`] did not take a delivery. Either way nothing is
/// recorded and Feishu retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The hint cannot be made durable right now (store I/O trouble such as
    /// a full disk): the webhook answers 503.
    #[error("{0}")]
    Unavailable(String),
    /// Any other failure: the webhook answers 500.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for DeliveryError {
    fn from(s: String) -> Self {
        DeliveryError::Failed(s)
    }
}

impl From<&str> for DeliveryError {
    fn from(s: &str) -> Self {
        DeliveryError::Failed(s.to_owned())
    }
}

/// Where accepted deliveries go. The store implements it; it must make the
/// dirty mark durable in [`DeliverySink::accept`] before returning, because
/// the webhook answers 200 right after.
///
/// Protocol per delivery: [`seen_or_insert`](DeliverySink::seen_or_insert);
/// if not seen, [`accept`](DeliverySink::accept); if `accept` fails,
/// [`forget`](DeliverySink::forget) so that Feishu's retry (triggered by the
/// 500 answer) is processed instead of being taken for a duplicate.
#[async_trait]
pub trait DeliverySink: Send + Sync {
    /// Records the dedupe key; returns true when it was already recorded.
    async fn seen_or_insert(&self, dedupe_key: &str) -> Result<bool, DeliveryError>;
    /// Takes a new delivery (marks the calendar dirty, durably).
    async fn accept(&self, delivery: Delivery) -> Result<(), DeliveryError>;
    /// Removes a dedupe key recorded by `seen_or_insert` whose `accept` failed.
    async fn forget(&self, dedupe_key: &str) -> Result<(), DeliveryError>;
}

/// An in-memory [`DeliverySink`] for tests: remembers keys and accepted
/// deliveries, and can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryDeliveries {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    seen: HashSet<String>,
    accepted: Vec<Delivery>,
    failing_accepts: usize,
    fail_seen: bool,
}

impl MemoryDeliveries {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every accepted delivery, in order.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.lock().accepted.clone()
    }

    /// How many deliveries were accepted.
    pub fn accepted_count(&self) -> usize {
        self.lock().accepted.len()
    }

    /// How many dedupe keys are recorded.
    pub fn seen_count(&self) -> usize {
        self.lock().seen.len()
    }

    /// The next `n` calls of `accept` fail.
    pub fn fail_next_accepts(&self, n: usize) {
        self.lock().failing_accepts = n;
    }

    /// Makes `seen_or_insert` fail (store down) until called with `false`.
    pub fn fail_seen(&self, fail: bool) {
        self.lock().fail_seen = fail;
    }
}

#[async_trait]
impl DeliverySink for MemoryDeliveries {
    async fn seen_or_insert(&self, dedupe_key: &str) -> Result<bool, DeliveryError> {
        let mut inner = self.lock();
        if inner.fail_seen {
            return Err("dedupe store unavailable (injected)".into());
        }
        Ok(!inner.seen.insert(dedupe_key.to_owned()))
    }

    async fn accept(&self, delivery: Delivery) -> Result<(), DeliveryError> {
        let mut inner = self.lock();
        if inner.failing_accepts > 0 {
            inner.failing_accepts -= 1;
            return Err("accept failed (injected)".into());
        }
        inner.accepted.push(delivery);
        Ok(())
    }

    async fn forget(&self, dedupe_key: &str) -> Result<(), DeliveryError> {
        self.lock().seen.remove(dedupe_key);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Router

struct RouteState {
    config: WebhookConfig,
    sink: Arc<dyn DeliverySink>,
    /// The in-flight body budget in KiB (semaphore permits are `u32`).
    body_budget: Arc<tokio::sync::Semaphore>,
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

/// `POST /webhook/event`, answering as described in the module docs.
pub fn router(config: WebhookConfig, sink: Arc<dyn DeliverySink>) -> Router {
    if config.encrypt_key.as_deref().is_none_or(str::is_empty)
        && config
            .verification_token
            .as_deref()
            .is_none_or(str::is_empty)
    {
        tracing::warn!(
            "webhook has neither an Encrypt Key nor a Verification Token: every request is trusted"
        );
    }
    let limit = config.max_body_bytes;
    let budget = kib(config.max_inflight_body_bytes.max(limit)) as usize;
    let body_budget = Arc::new(tokio::sync::Semaphore::new(
        budget.min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    Router::new()
        .route(WEBHOOK_PATH, post(handle))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(RouteState {
            config,
            sink,
            body_budget,
        }))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn success() -> Response {
    json_response(StatusCode::OK, serde_json::json!({"msg": "success"}))
}

/// A refusal that also closes the connection (the rest of the body, if
/// any, is not read).
fn closing(status: StatusCode, msg: &str) -> Response {
    let mut r = json_response(status, serde_json::json!({ "msg": msg }));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads the body within the budget and the time limit; `Err` is the answer.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response, returned at once"
)]
async fn read_body(state: &RouteState, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let limit = state.config.max_body_bytes;
    let declared = header(headers, header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(size) = declared.filter(|&n| n > limit) {
        let e = WebhookError::TooLarge { size, limit };
        return Err(closing(e.status(), &e.to_string()));
    }
    let Ok(_permit) = state
        .body_budget
        .try_acquire_many(kib(declared.unwrap_or(limit)))
    else {
        tracing::debug!("webhook request refused: too many request bodies in flight");
        let mut r = closing(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    };
    match tokio::time::timeout(state.config.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                let e = WebhookError::TooLarge {
                    size: limit + 1,
                    limit,
                };
                Err(closing(e.status(), &e.to_string()))
            } else {
                Err(closing(
                    StatusCode::BAD_REQUEST,
                    "cannot read the request body",
                ))
            }
        }
        Err(_) => {
            tracing::debug!(
                timeout_s = state.config.body_timeout.as_secs(),
                "webhook request body not received in time"
            );
            Err(closing(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ))
        }
    }
}

async fn handle(State(state): State<Arc<RouteState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let body = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let delivery = match process(&state.config, &headers, &body, SystemTime::now()) {
        Ok(Outcome::Challenge(challenge)) => {
            tracing::info!("answered webhook URL verification");
            return json_response(StatusCode::OK, serde_json::json!({"challenge": challenge}));
        }
        Ok(Outcome::Event(d)) => d,
        Err(e) => {
            let status = e.status();
            tracing::warn!(status = status.as_u16(), error = %e, "webhook request refused");
            return json_response(status, serde_json::json!({"msg": e.to_string()}));
        }
    };

    match hand_off(state.sink.as_ref(), delivery).await {
        Ok(_) => success(),
        Err(DeliveryError::Unavailable(_)) => {
            let mut r = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"msg": "delivery not recorded: storage unavailable"}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("15"));
            r
        }
        Err(DeliveryError::Failed(_)) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"msg": "delivery not recorded"}),
        ),
    }
}

/// What [`hand_off`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// New: the sink accepted it.
    Accepted,
    /// Already seen: not passed to the sink again.
    Duplicate,
}

/// Deduplicates a delivery and passes it to the sink (the protocol described
/// on [`DeliverySink`]). Used by the webhook route and by
/// [`crate::ws::SinkHandler`]. An `Err` means nothing was recorded and the
/// delivery should be retried by Feishu.
pub async fn hand_off(
    sink: &dyn DeliverySink,
    delivery: Delivery,
) -> Result<HandOff, DeliveryError> {
    let key = delivery.dedupe_key.clone();
    let event_type = delivery.event_type.clone();
    if let ChangeHint::Unknown { .. } = delivery.hint {
        tracing::info!(%event_type, dedupe_key = %key, "event of an unhandled type acknowledged");
    }
    match sink.seen_or_insert(&key).await {
        Ok(true) => {
            tracing::debug!(%event_type, dedupe_key = %key, "duplicate delivery acknowledged");
            Ok(HandOff::Duplicate)
        }
        Ok(false) => match sink.accept(delivery).await {
            Ok(()) => {
                tracing::info!(%event_type, dedupe_key = %key, "delivery accepted");
                Ok(HandOff::Accepted)
            }
            Err(e) => {
                tracing::error!(%event_type, dedupe_key = %key, error = %e, "delivery not recorded; Feishu will retry");
                if let Err(e) = sink.forget(&key).await {
                    tracing::error!(dedupe_key = %key, error = %e, "could not forget the dedupe key of a failed delivery");
                }
                Err(e)
            }
        },
        Err(e) => {
            tracing::error!(%event_type, dedupe_key = %key, error = %e, "dedupe failed; Feishu will retry");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test key";
    const VECTOR: &str = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=";
    const TOKEN: &str = "vtoken";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn config() -> WebhookConfig {
        WebhookConfig {
            encrypt_key: Some(KEY.into()),
            verification_token: Some(TOKEN.into()),
            ..WebhookConfig::default()
        }
    }

    fn event_json(event_id: &str, create_ms: i64, token: &str) -> String {
        format!(
            r#"{{"schema":"2.0","header":{{"event_id":"{event_id}","event_type":"calendar.calendar.event.changed_v4","create_time":"{create_ms}","token":"{token}"}},"event":{{"calendar_id":"cal_1"}}}}"#
        )
    }

    fn signed(ts: &str, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_TIMESTAMP, HeaderValue::from_str(ts).unwrap());
        h.insert(HEADER_NONCE, HeaderValue::from_static("nonce-1"));
        h.insert(
            HEADER_SIGNATURE,
            HeaderValue::from_str(&signature(ts, "nonce-1", KEY, body)).unwrap(),
        );
        h
    }

    fn encrypted_body(plain: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"encrypt": encrypt(KEY, plain.as_bytes())})).unwrap()
    }

    #[test]
    fn official_decrypt_vector() {
        assert_eq!(decrypt(KEY, VECTOR).unwrap(), b"hello world");
        assert_eq!(
            hex::encode(aes_key(KEY)),
            "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
        );
    }

    #[test]
    fn encrypt_round_trips_and_reproduces_the_vector() {
        let raw = BASE64.decode(VECTOR).unwrap();
        let iv: [u8; 16] = raw[..16].try_into().unwrap();
        assert_eq!(encrypt_with_iv(KEY, &iv, b"hello world"), VECTOR);
        let c = encrypt(KEY, b"{\"a\":1}");
        assert_ne!(c, encrypt(KEY, b"{\"a\":1}"), "IV must be random");
        assert_eq!(decrypt(KEY, &c).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn decrypt_errors() {
        for (b64, needle) in [
            ("!!!", "invalid base64"),
            ("AAAA", "not an IV"),
            (&BASE64.encode([0u8; 40]) as &str, "not an IV"),
        ] {
            let e = decrypt(KEY, b64).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let e = decrypt("other key", VECTOR).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn derived_signature_example() {
        let body = br#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#;
        let sig = signature("1700000000", "abc", KEY, body);
        assert_eq!(
            sig,
            "0c09d96c2aef2ad08179b3967ea410bbc91dab24ce3aec05af962cf1935844af"
        );
        assert!(verify_signature("1700000000", "abc", KEY, body, &sig));
        assert!(verify_signature(
            "1700000000",
            "abc",
            KEY,
            body,
            &sig.to_uppercase()
        ));
        assert!(!verify_signature("1700000001", "abc", KEY, body, &sig));
        assert!(!verify_signature("1700000000", "abc", KEY, b"{}", &sig));
        assert!(!verify_signature("1700000000", "abc", KEY, body, "zz"));
        assert!(!verify_signature("1700000000", "abc", KEY, body, ""));
    }

    #[test]
    fn valid_signed_encrypted_event() {
        let plain = event_json("ev1", 1_700_000_000_000, TOKEN);
        let body = encrypted_body(&plain);
        let out = process(
            &config(),
            &signed("1700000000", &body),
            &body,
            at(1_700_000_030),
        )
        .unwrap();
        let Outcome::Event(d) = out else {
            panic!("{out:?}")
        };
        assert_eq!(d.dedupe_key, "ev1");
        assert_eq!(d.hint.calendar_id(), Some("cal_1"));
    }

    #[test]
    fn timestamp_header_in_milliseconds_is_accepted() {
        let body = encrypted_body(&event_json("ev1", 1_700_000_000_000, TOKEN));
        let out = process(
            &config(),
            &signed("1700000000000", &body),
            &body,
            at(1_700_000_010),
        );
        assert!(matches!(out, Ok(Outcome::Event(_))), "{out:?}");
    }

    #[test]
    fn refusals_and_their_statuses() {
        let now = at(1_700_000_000);
        let cfg = config();
        let good = encrypted_body(&event_json("ev1", 1_700_000_000_000, TOKEN));

        // forged signature
        let mut h = signed("1700000000", &good);
        h.insert(HEADER_SIGNATURE, HeaderValue::from_static("00ff"));
        let e = process(&cfg, &h, &good, now).unwrap_err();
        assert!(matches!(e, WebhookError::BadSignature));
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);

        // unsigned encrypted event
        let e = process(&cfg, &HeaderMap::new(), &good, now).unwrap_err();
        assert!(matches!(e, WebhookError::MissingSignature), "{e}");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);

        // tampered ciphertext, correctly signed (signature is over the tampered bytes)
        let v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let mut raw = BASE64.decode(v["encrypt"].as_str().unwrap()).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x5a;
        let tampered =
            serde_json::to_vec(&serde_json::json!({"encrypt": BASE64.encode(&raw)})).unwrap();
        let e = process(&cfg, &signed("1700000000", &tampered), &tampered, now).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");

        // bad base64
        let bad = br#"{"encrypt":"%%%"}"#;
        let e = process(&cfg, &signed("1700000000", bad), bad, now).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);

        // bad JSON (signed)
        let bad = b"{not json";
        let e = process(&cfg, &signed("1700000000", bad), bad, now).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);

        // wrong verification token
        let body = encrypted_body(&event_json("ev1", 1_700_000_000_000, "other"));
        let e = process(&cfg, &signed("1700000000", &body), &body, now).unwrap_err();
        assert!(matches!(e, WebhookError::BadToken));
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);

        // stale request timestamp (6 minutes)
        let e = process(&cfg, &signed("1699999640", &good), &good, now).unwrap_err();
        assert!(matches!(e, WebhookError::Stale { .. }), "{e}");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);

        // bad timestamp header
        let e = process(&cfg, &signed("soon", &good), &good, now).unwrap_err();
        assert!(matches!(e, WebhookError::BadTimestamp), "{e}");

        // too large
        let small = WebhookConfig {
            max_body_bytes: 10,
            ..config()
        };
        let e = process(&small, &signed("1700000000", &good), &good, now).unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn event_age_limits() {
        let cfg = config();
        let now = at(1_700_000_000);
        // a retry six hours later carries the old create_time but a fresh request timestamp
        let body = encrypted_body(&event_json("ev1", 1_700_000_000_000 - 6 * 3_600_000, TOKEN));
        assert!(process(&cfg, &signed("1700000000", &body), &body, now).is_ok());
        // nine hours is too old
        let body = encrypted_body(&event_json("ev1", 1_700_000_000_000 - 9 * 3_600_000, TOKEN));
        let e = process(&cfg, &signed("1700000000", &body), &body, now).unwrap_err();
        assert!(e.to_string().contains("create_time"), "{e}");
        // ten minutes in the future is too far
        let body = encrypted_body(&event_json("ev1", 1_700_000_000_000 + 600_000, TOKEN));
        let e = process(&cfg, &signed("1700000000", &body), &body, now).unwrap_err();
        assert!(matches!(e, WebhookError::Stale { .. }), "{e}");
    }

    #[test]
    fn challenges_plain_and_encrypted() {
        let now = at(1_700_000_000);
        let plain =
            format!(r#"{{"challenge":"c-123","token":"{TOKEN}","type":"url_verification"}}"#);
        // encrypted, unsigned: answered
        let body = encrypted_body(&plain);
        assert_eq!(
            process(&config(), &HeaderMap::new(), &body, now).unwrap(),
            Outcome::Challenge("c-123".into())
        );
        // plaintext without an encrypt key
        let cfg = WebhookConfig {
            encrypt_key: None,
            ..config()
        };
        assert_eq!(
            process(&cfg, &HeaderMap::new(), plain.as_bytes(), now).unwrap(),
            Outcome::Challenge("c-123".into())
        );
        // wrong token
        let bad = r#"{"challenge":"c","token":"nope","type":"url_verification"}"#;
        let e = process(&cfg, &HeaderMap::new(), bad.as_bytes(), now).unwrap_err();
        assert!(matches!(e, WebhookError::BadToken));
        // missing token
        let bad = r#"{"challenge":"c","type":"url_verification"}"#;
        let e = process(&cfg, &HeaderMap::new(), bad.as_bytes(), now).unwrap_err();
        assert!(matches!(e, WebhookError::MissingToken));
        // encrypted challenge without a configured key
        let e = process(&cfg, &HeaderMap::new(), &body, now).unwrap_err();
        assert!(matches!(e, WebhookError::NoEncryptKey));
    }

    #[test]
    fn plaintext_mode_checks_only_the_token_and_create_time() {
        let cfg = WebhookConfig {
            encrypt_key: None,
            ..config()
        };
        let now = at(1_700_000_000);
        let body = event_json("ev1", 1_700_000_000_000, TOKEN);
        // no signature headers needed; stray ones are ignored without a key
        let mut h = HeaderMap::new();
        h.insert(HEADER_SIGNATURE, HeaderValue::from_static("garbage"));
        assert!(matches!(
            process(&cfg, &h, body.as_bytes(), now),
            Ok(Outcome::Event(_))
        ));
        let v1 = r#"{"uuid":"u1","token":"vtoken","ts":"1700000000.5","type":"event_callback","event":{"type":"third_party_meeting_room_event_deleted","uid":"x","original_time":0}}"#;
        let Outcome::Event(d) = process(&cfg, &HeaderMap::new(), v1.as_bytes(), now).unwrap()
        else {
            panic!()
        };
        assert_eq!(d.dedupe_key, "u1");
        let v1_bad = v1.replace("vtoken", "other");
        assert!(matches!(
            process(&cfg, &HeaderMap::new(), v1_bad.as_bytes(), now),
            Err(WebhookError::BadToken)
        ));
        // no token configured at all: anything well-formed goes
        let open = WebhookConfig {
            verification_token: None,
            ..cfg
        };
        let body = event_json("ev1", 1_700_000_000_000, "whatever");
        assert!(process(&open, &HeaderMap::new(), body.as_bytes(), now).is_ok());
    }

    #[test]
    fn signed_plaintext_is_accepted_with_a_key() {
        let body = event_json("ev1", 1_700_000_000_000, TOKEN);
        let out = process(
            &config(),
            &signed("1700000000", body.as_bytes()),
            body.as_bytes(),
            at(1_700_000_000),
        );
        assert!(matches!(out, Ok(Outcome::Event(_))), "{out:?}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let dbg = format!("{:?}", config());
        assert!(!dbg.contains(KEY) && !dbg.contains(TOKEN), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[tokio::test]
    async fn memory_sink_protocol() {
        let sink = MemoryDeliveries::new();
        assert!(!sink.seen_or_insert("a").await.unwrap());
        assert!(sink.seen_or_insert("a").await.unwrap());
        sink.forget("a").await.unwrap();
        assert!(!sink.seen_or_insert("a").await.unwrap());
        sink.fail_next_accepts(1);
        let d = hint::parse_event(event_json("a", 1, "t").as_bytes()).unwrap();
        assert!(sink.accept(d.clone()).await.is_err());
        sink.accept(d).await.unwrap();
        assert_eq!(sink.accepted_count(), 1);
        sink.fail_seen(true);
        assert!(sink.seen_or_insert("b").await.is_err());
    }
}
