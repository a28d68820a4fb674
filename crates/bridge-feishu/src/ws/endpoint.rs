//! Bootstrap (`POST /callback/ws/endpoint`, §9.1) and the WebSocket
//! handshake (§9.2), with the SDKs' classification of failures into
//! retryable and fatal.

use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

use super::{ClientConfig, RawClientConfig, WsConfig, WsError};

/// Bootstrap path.
pub const ENDPOINT_PATH: &str = "/callback/ws/endpoint";
/// Bootstrap code: OK.
pub const CODE_OK: i64 = 0;
/// Bootstrap code: system busy (retryable).
pub const CODE_SYSTEM_BUSY: i64 = 1;
/// Bootstrap code: internal error (retryable).
pub const CODE_INTERNAL_ERROR: i64 = 1_000_040_343;
/// Handshake status: auth failed.
pub const HANDSHAKE_AUTH_FAILED: i64 = 514;
/// Handshake status: forbidden (fatal).
pub const HANDSHAKE_FORBIDDEN: i64 = 403;
/// Handshake auth error code: connection limit exceeded (fatal with 514).
pub const AUTH_EXCEED_CONN_LIMIT: i64 = 1_000_040_350;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A failed connection attempt.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Worth another attempt after the reconnect delay.
    Retryable(String),
    /// Stop: retrying cannot help.
    Fatal(WsError),
}

/// The endpoint handed out by the bootstrap.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: url::Url,
    pub(crate) service_id: i32,
    pub(crate) device_id: String,
    pub(crate) client_config: Option<RawClientConfig>,
}

#[derive(Deserialize)]
struct BootstrapResponse {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    data: Option<BootstrapData>,
}

#[derive(Deserialize)]
struct BootstrapData {
    #[serde(default, rename = "URL", alias = "url")]
    url: Option<String>,
    #[serde(default, rename = "ClientConfig", alias = "client_config")]
    client_config: Option<RawClientConfig>,
}

/// `POST {base_url}/callback/ws/endpoint` with `{"AppID","AppSecret"}`.
pub(crate) async fn bootstrap(
    http: &reqwest::Client,
    config: &WsConfig,
) -> Result<Endpoint, AttemptError> {
    let url = format!("{}{ENDPOINT_PATH}", config.base_url.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .header("locale", "zh")
        .json(&serde_json::json!({"AppID": config.app_id, "AppSecret": config.app_secret}))
        .send()
        .await
        .map_err(|e| AttemptError::Retryable(format!("bootstrap request failed: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| AttemptError::Retryable(format!("bootstrap answer unreadable: {e}")))?;
    if status != reqwest::StatusCode::OK {
        return Err(AttemptError::Retryable(format!(
            "bootstrap answered HTTP {status}"
        )));
    }
    let parsed: BootstrapResponse = serde_json::from_slice(&body).map_err(|e| {
        AttemptError::Retryable(format!("bootstrap answer is not the documented JSON: {e}"))
    })?;
    let code = parsed.code.unwrap_or(CODE_OK);
    let msg = parsed.msg.unwrap_or_default();
    match code {
        CODE_OK => {}
        CODE_SYSTEM_BUSY | CODE_INTERNAL_ERROR => {
            return Err(AttemptError::Retryable(format!(
                "bootstrap: server unavailable (code {code}: {msg})"
            )));
        }
        _ => {
            return Err(AttemptError::Fatal(WsError::BootstrapRejected {
                code,
                msg,
            }));
        }
    }
    let data = parsed.data.unwrap_or(BootstrapData {
        url: None,
        client_config: None,
    });
    let raw_url = data
        .url
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| AttemptError::Retryable("bootstrap returned no URL".into()))?;
    let url = url::Url::parse(raw_url.trim()).map_err(|e| {
        AttemptError::Fatal(WsError::Config(format!(
            "bootstrap returned an invalid URL: {e}"
        )))
    })?;
    let mut service_id = 0;
    let mut device_id = String::new();
    for (k, v) in url.query_pairs() {
        match &*k {
            "service_id" => match v.parse() {
                Ok(id) => service_id = id,
                Err(_) => {
                    tracing::warn!(value = %v, "service_id of the endpoint URL is not an int32")
                }
            },
            "device_id" => device_id = v.into_owned(),
            _ => {}
        }
    }
    Ok(Endpoint {
        url,
        service_id,
        device_id,
        client_config: data.client_config,
    })
}

/// Applies a bootstrap / pong ClientConfig.
pub(crate) fn apply(current: &mut ClientConfig, raw: Option<&RawClientConfig>) {
    if let Some(raw) = raw {
        current.merge(raw);
    }
}

/// Opens the WebSocket.
pub(crate) async fn handshake(url: &url::Url, timeout: Duration) -> Result<Socket, AttemptError> {
    let connect = tokio_tungstenite::connect_async(url.as_str());
    let (socket, _resp) = match tokio::time::timeout(timeout, connect).await {
        Err(_) => {
            return Err(AttemptError::Retryable(format!(
                "WebSocket handshake timed out after {timeout:?}"
            )));
        }
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => return Err(classify_handshake_error(e)),
    };
    Ok(socket)
}

fn header_str<'a>(headers: &'a tungstenite::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn classify_handshake_error(e: tungstenite::Error) -> AttemptError {
    match e {
        tungstenite::Error::Http(resp) => {
            let headers = resp.headers();
            let status = header_str(headers, "Handshake-Status")
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|s| *s != 0)
                .unwrap_or_else(|| i64::from(resp.status().as_u16()));
            let auth_code =
                header_str(headers, "Handshake-Autherrcode").and_then(|s| s.parse::<i64>().ok());
            let msg = header_str(headers, "Handshake-Msg")
                .unwrap_or_default()
                .to_owned();
            let fatal = status == HANDSHAKE_FORBIDDEN
                || (status == HANDSHAKE_AUTH_FAILED && auth_code == Some(AUTH_EXCEED_CONN_LIMIT));
            if fatal {
                AttemptError::Fatal(WsError::HandshakeRejected {
                    status,
                    auth_code,
                    msg,
                })
            } else {
                AttemptError::Retryable(format!(
                    "WebSocket handshake refused: status {status}, auth code {}, {msg}",
                    auth_code.map_or_else(|| "-".to_owned(), |c| c.to_string())
                ))
            }
        }
        // The URL carries a ticket: keep it out of messages.
        tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(_)) => {
            AttemptError::Retryable("WebSocket connect failed: unable to connect".into())
        }
        tungstenite::Error::Url(tungstenite::error::UrlError::TlsFeatureNotEnabled) => {
            AttemptError::Fatal(WsError::Config(
                "the endpoint is wss:// but this build has no TLS support for WebSockets \
                 (enable a rustls feature of tokio-tungstenite)"
                    .into(),
            ))
        }
        tungstenite::Error::Url(u) => AttemptError::Fatal(WsError::Config(format!(
            "unusable long-connection URL: {u}"
        ))),
        other => AttemptError::Retryable(format!("WebSocket connect failed: {other}")),
    }
}
