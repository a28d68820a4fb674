//! The long-connection (WebSocket) client (`feishu-api.md` §9).
//!
//! [`run`] keeps one connection open until cancelled:
//!
//! 1. **bootstrap** `POST {base_url}/callback/ws/endpoint` with
//!    `{"AppID","AppSecret"}` and `locale: zh`; code 0 is OK, codes 1 and
//!    1000040343, non-200 answers and an empty URL are retried, any other
//!    code is fatal ([`WsError::BootstrapRejected`], e.g. a wrong secret);
//!    the answer's `ClientConfig` (capitalised keys, seconds) is applied;
//! 2. **handshake** to the returned URL; a refusal carries
//!    `Handshake-Status` / `Handshake-Msg` / `Handshake-Autherrcode`: 403, and
//!    514 with 1000040350 (connection limit), are fatal, the rest retried;
//! 3. **session**: a ping (method 0, `type=ping`, service = the URL's
//!    `service_id`) at once and every `PingInterval`; pongs may carry a new
//!    `ClientConfig`; data frames (method 1) are reassembled by
//!    `message_id` / `sum` / `seq` ([`reassembly`]), `type=event` payloads
//!    go to the [`PayloadHandler`] and are acknowledged with the same frame
//!    plus `biz_rt` and payload `{"code":200}` (or `{"code":500}` when the
//!    handler fails); `type=card` frames and text messages are ignored;
//! 4. **reconnect** after a read error or close: the first attempt after a
//!    random delay in `[0, ReconnectNonce)`, then every `ReconnectInterval`,
//!    at most `ReconnectCount` attempts (negative = unlimited), bootstrapping
//!    again each time. An initial connection failure that is retryable
//!    enters the same sequence.
//!
//! Payloads on the socket are plaintext event envelopes (no signature, no
//! encryption); the handler typically runs [`crate::hint::parse_event`] and
//! hands the delivery to the same dedupe sink as the webhook, which is what
//! [`SinkHandler`] does.
//!
//! Logs carry the connection's `device_id` and `service_id`, never the
//! endpoint URL (it holds a ticket), the app secret or payloads.

mod endpoint;
pub mod frame;
pub mod reassembly;
mod session;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::webhook::DeliverySink;

pub use endpoint::{
    AUTH_EXCEED_CONN_LIMIT, CODE_INTERNAL_ERROR, CODE_OK, CODE_SYSTEM_BUSY, ENDPOINT_PATH,
    HANDSHAKE_AUTH_FAILED, HANDSHAKE_FORBIDDEN,
};
pub use frame::{Frame, Header};
pub use reassembly::Reassembler;

use endpoint::AttemptError;
use session::{SessionCtx, SessionEnd};

/// Receives the plaintext payload of every complete `type=event` message.
/// An `Err` is acknowledged with `{"code":500}` (Feishu may redeliver).
/// Feishu expects an answer within 3 seconds.
#[async_trait]
pub trait PayloadHandler: Send + Sync {
    async fn handle(&self, payload: Vec<u8>) -> Result<(), String>;
}

/// The usual [`PayloadHandler`]: parses the payload with
/// [`crate::hint::parse_event`] and hands it to a
/// [`crate::webhook::DeliverySink`] with the same deduplication as the
/// webhook. A payload that cannot be parsed, and a sink failure, are
/// acknowledged with `{"code":500}` (the failure then shows in Feishu's
/// push monitoring; a sink failure is redelivered).
#[derive(Clone)]
pub struct SinkHandler {
    sink: Arc<dyn DeliverySink>,
}

impl SinkHandler {
    pub fn new(sink: Arc<dyn DeliverySink>) -> Self {
        SinkHandler { sink }
    }
}

impl fmt::Debug for SinkHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkHandler").finish_non_exhaustive()
    }
}

#[async_trait]
impl PayloadHandler for SinkHandler {
    async fn handle(&self, payload: Vec<u8>) -> Result<(), String> {
        let delivery = crate::hint::parse_event(&payload).map_err(|e| {
            tracing::warn!(error = %e, "long-connection payload refused");
            e.to_string()
        })?;
        crate::webhook::hand_off(self.sink.as_ref(), delivery)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Reconnect and ping settings (the server's `ClientConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Reconnect attempts after a connection is lost; negative = unlimited.
    pub reconnect_count: i64,
    /// Delay between reconnect attempts after the first.
    pub reconnect_interval: Duration,
    /// The first reconnect attempt waits a random time in `[0, nonce)`.
    pub reconnect_nonce: Duration,
    /// Ping period.
    pub ping_interval: Duration,
}

impl Default for ClientConfig {
    /// The SDK defaults: unlimited reconnects every 120 s with a 30 s
    /// nonce, ping every 120 s.
    fn default() -> Self {
        ClientConfig {
            reconnect_count: -1,
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
        }
    }
}

/// Shortest ping period accepted from the server.
const MIN_PING_INTERVAL: Duration = Duration::from_secs(1);
/// Longest period or delay accepted from the server: larger values are
/// meaningless, and `i64::MAX` seconds overflowed the session's deadlines.
const MAX_SERVER_DURATION: Duration = Duration::from_secs(24 * 3600);

impl ClientConfig {
    /// How long a session waits for anything from the server when no
    /// `idle_timeout` is configured: twice the ping interval plus 10 s
    /// (pongs answer every ping).
    pub(crate) fn default_idle_timeout(&self) -> Duration {
        self.ping_interval * 2 + Duration::from_secs(10)
    }

    /// Applies the fields the server sent (seconds); absent ones keep their value.
    pub(crate) fn merge(&mut self, raw: &RawClientConfig) {
        let secs =
            |v: i64| Duration::from_secs(u64::try_from(v).unwrap_or(0)).min(MAX_SERVER_DURATION);
        if let Some(v) = raw.reconnect_count {
            self.reconnect_count = v;
        }
        if let Some(v) = raw.reconnect_interval {
            self.reconnect_interval = secs(v);
        }
        if let Some(v) = raw.reconnect_nonce {
            self.reconnect_nonce = secs(v);
        }
        if let Some(v) = raw.ping_interval {
            self.ping_interval = secs(v).max(MIN_PING_INTERVAL);
        }
    }
}

/// `ClientConfig` as sent (capitalised keys, seconds).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawClientConfig {
    #[serde(rename = "ReconnectCount", alias = "reconnect_count")]
    reconnect_count: Option<i64>,
    #[serde(rename = "ReconnectInterval", alias = "reconnect_interval")]
    reconnect_interval: Option<i64>,
    #[serde(rename = "ReconnectNonce", alias = "reconnect_nonce")]
    reconnect_nonce: Option<i64>,
    #[serde(rename = "PingInterval", alias = "ping_interval")]
    ping_interval: Option<i64>,
}

/// How to reach Feishu's long-connection service.
#[derive(Clone)]
pub struct WsConfig {
    /// `https://open.feishu.cn`, `https://open.larksuite.com` or an emulator.
    pub base_url: String,
    pub app_id: String,
    /// Redacted in `Debug`.
    pub app_secret: String,
    /// Settings used until the server sends its own.
    pub initial: ClientConfig,
    /// Lifetime of an incomplete split message.
    pub reassembly_ttl: Duration,
    /// Timeout of the bootstrap request and of the WebSocket handshake.
    pub connect_timeout: Duration,
    /// How long running handlers may finish when a connection ends.
    pub handler_grace: Duration,
    /// Drop a connection that received nothing for this long; `None` =
    /// twice the ping interval plus 10 s (pongs answer every ping).
    pub idle_timeout: Option<Duration>,
}

impl WsConfig {
    pub fn new(
        base_url: impl Into<String>,
        app_id: impl Into<String>,
        app_secret: impl Into<String>,
    ) -> Self {
        WsConfig {
            base_url: base_url.into(),
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            initial: ClientConfig::default(),
            reassembly_ttl: reassembly::DEFAULT_TTL,
            connect_timeout: Duration::from_secs(10),
            handler_grace: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
}

impl fmt::Debug for WsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConfig")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("initial", &self.initial)
            .field("reassembly_ttl", &self.reassembly_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("handler_grace", &self.handler_grace)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Why the long connection stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The bootstrap answered a client-error code (bad app id / secret,
    /// app not allowed to use the long connection…).
    #[error(
        "Feishu refused the long-connection bootstrap: code {code}: {msg} (check app_id / app_secret and that the app may use the long connection)"
    )]
    BootstrapRejected { code: i64, msg: String },
    /// The WebSocket handshake was refused for good (403, or 514 with
    /// auth code 1000040350 = too many connections).
    #[error("Feishu refused the long-connection handshake: status {status}{}: {msg}", auth_code.map(|c| format!(", auth code {c}")).unwrap_or_default())]
    HandshakeRejected {
        status: i64,
        auth_code: Option<i64>,
        msg: String,
    },
    /// `ReconnectCount` attempts failed.
    #[error("long connection lost; {attempts} reconnect attempts failed, last: {last}")]
    ReconnectExhausted { attempts: u64, last: String },
    /// A local mistake (bad URL, missing TLS support).
    #[error("long connection: {0}")]
    Config(String),
}

enum Stop {
    Cancelled,
    Fatal(WsError),
}

/// Runs the long connection until `cancel` fires (`Ok`) or a fatal error
/// (`Err`).
pub async fn run(
    config: WsConfig,
    handler: Arc<dyn PayloadHandler>,
    cancel: CancellationToken,
) -> Result<(), WsError> {
    let http = reqwest::Client::builder()
        .timeout(config.connect_timeout)
        .build()
        .map_err(|e| WsError::Config(format!("cannot build the HTTP client: {e}")))?;
    let mut client_config = config.initial;
    let mut reassembler = Reassembler::new(config.reassembly_ttl);

    let mut pending = match connect(&http, &config, &mut client_config, &cancel).await {
        Ok(c) => Some(c),
        Err(AttemptOutcome::Cancelled) => return Ok(()),
        Err(AttemptOutcome::Failed(AttemptError::Fatal(e))) => {
            tracing::error!(error = %e, "long connection cannot start");
            return Err(e);
        }
        Err(AttemptOutcome::Failed(AttemptError::Retryable(why))) => {
            tracing::warn!(reason = %why, "long connection failed to start; retrying");
            None
        }
    };

    loop {
        let conn = match pending.take() {
            Some(c) => c,
            None => match reconnect(&http, &config, &mut client_config, &cancel).await {
                Ok(c) => c,
                Err(Stop::Cancelled) => return Ok(()),
                Err(Stop::Fatal(e)) => {
                    tracing::error!(error = %e, "long connection stopped");
                    return Err(e);
                }
            },
        };
        tracing::info!(
            device_id = %conn.device_id,
            service_id = conn.service_id,
            "long connection established"
        );
        let ctx = SessionCtx {
            config: &config,
            client_config: &mut client_config,
            reassembler: &mut reassembler,
            handler: &handler,
            cancel: &cancel,
            service_id: conn.service_id,
            device_id: &conn.device_id,
        };
        match session::run(conn.socket, ctx).await {
            SessionEnd::Cancelled => {
                tracing::info!("long connection closed (shutdown)");
                return Ok(());
            }
            SessionEnd::Lost(why) => {
                tracing::warn!(device_id = %conn.device_id, reason = %why, "long connection lost; reconnecting");
            }
        }
    }
}

struct Connection {
    socket: endpoint::Socket,
    service_id: i32,
    device_id: String,
}

enum AttemptOutcome {
    Cancelled,
    Failed(AttemptError),
}

/// One bootstrap + handshake.
async fn connect(
    http: &reqwest::Client,
    config: &WsConfig,
    client_config: &mut ClientConfig,
    cancel: &CancellationToken,
) -> Result<Connection, AttemptOutcome> {
    let attempt = async {
        let ep = endpoint::bootstrap(http, config).await?;
        endpoint::apply(client_config, ep.client_config.as_ref());
        let socket = endpoint::handshake(&ep.url, config.connect_timeout).await?;
        Ok::<_, AttemptError>(Connection {
            socket,
            service_id: ep.service_id,
            device_id: ep.device_id,
        })
    };
    tokio::select! {
        () = cancel.cancelled() => Err(AttemptOutcome::Cancelled),
        res = attempt => res.map_err(AttemptOutcome::Failed),
    }
}

/// The reconnect sequence of §9.6.
async fn reconnect(
    http: &reqwest::Client,
    config: &WsConfig,
    client_config: &mut ClientConfig,
    cancel: &CancellationToken,
) -> Result<Connection, Stop> {
    let mut attempts: u64 = 0;
    let mut last = String::from("connection lost");
    loop {
        let cc = *client_config;
        if cc.reconnect_count >= 0 && attempts >= cc.reconnect_count.unsigned_abs() {
            return Err(Stop::Fatal(WsError::ReconnectExhausted { attempts, last }));
        }
        let delay = if attempts == 0 {
            random_below(cc.reconnect_nonce)
        } else {
            cc.reconnect_interval
        };
        tracing::debug!(
            attempt = attempts + 1,
            ?delay,
            "long connection: waiting before reconnecting"
        );
        tokio::select! {
            () = cancel.cancelled() => return Err(Stop::Cancelled),
            () = tokio::time::sleep(delay) => {}
        }
        attempts += 1;
        match connect(http, config, client_config, cancel).await {
            Ok(c) => return Ok(c),
            Err(AttemptOutcome::Cancelled) => return Err(Stop::Cancelled),
            Err(AttemptOutcome::Failed(AttemptError::Fatal(e))) => return Err(Stop::Fatal(e)),
            Err(AttemptOutcome::Failed(AttemptError::Retryable(why))) => {
                tracing::warn!(attempt = attempts, reason = %why, "long-connection reconnect failed");
                last = why;
            }
        }
    }
}

fn random_below(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..ms))
}

#[cfg(test)]
mod tests;
