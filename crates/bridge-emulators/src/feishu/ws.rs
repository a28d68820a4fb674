//! Long-connection (WebSocket) delivery (§9): the endpoint bootstrap, the
//! handshake with its failure headers, `pbbp2` protobuf frames, ping/pong,
//! cluster-mode delivery to one random connection, split payloads, acks and
//! redelivery.
//!
//! [`Frame`] and [`Header`] are public so tests and clients can speak the
//! protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::http::raw_json;
use super::outbox::{OutMsg, log_attempt, update_delivery};
use super::util::{now_ms, rand_alnum, rand_hex};
use super::{Inner, WsClientConfig, lock};

/// Frame `method`: control (ping/pong).
pub const METHOD_CONTROL: i32 = 0;
/// Frame `method`: data (events and their acks).
pub const METHOD_DATA: i32 = 1;
/// Handshake auth error code for "too many connections".
pub const ERR_CONNECTION_LIMIT: &str = "1000040350";
/// Handshake auth error code this emulator uses for a bad or used ticket.
pub const ERR_BAD_TICKET: &str = "1000040351";

const TICKET_TTL: Duration = Duration::from_secs(300);
const MAX_RETRIES: usize = 4;

/// `pbbp2.Header`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// `pbbp2.Frame` (proto2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

impl Frame {
    /// A frame shaped like the Go SDK writes them (empty strings for 6, 7, 9).
    pub fn new(
        method: i32,
        service: i32,
        headers: &[(&str, &str)],
        payload: Option<Vec<u8>>,
    ) -> Self {
        Self {
            seq_id: 0,
            log_id: 0,
            service,
            method,
            headers: headers
                .iter()
                .map(|(k, v)| Header {
                    key: (*k).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
            payload_encoding: Some(String::new()),
            payload_type: Some(String::new()),
            payload,
            log_id_new: Some(String::new()),
        }
    }

    /// A client ping for `service`.
    pub fn ping(service: i32) -> Self {
        Self::new(METHOD_CONTROL, service, &[("type", "ping")], None)
    }

    /// The value of header `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    /// Sets (or replaces) header `key`.
    pub fn set_header(&mut self, key: &str, value: &str) {
        match self.headers.iter_mut().find(|h| h.key == key) {
            Some(h) => h.value = value.to_owned(),
            None => self.headers.push(Header {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
        }
    }
}

/// The `ClientConfig` object with Feishu's capitalised keys.
pub(crate) fn client_config_json(c: &WsClientConfig) -> Value {
    json!({
        "ReconnectCount": c.reconnect_count,
        "ReconnectInterval": c.reconnect_interval,
        "ReconnectNonce": c.reconnect_nonce,
        "PingInterval": c.ping_interval,
    })
}

#[derive(Debug)]
enum ConnCmd {
    Send(Vec<u8>),
    Kill,
    /// Send a Close frame with this code, then wait for the client's reply.
    Close(u16),
}

/// Close code recorded when a client's connection ended with a Close frame
/// without a status code (RFC 6455 §7.4.1, 1005).
pub const CLOSE_NO_STATUS: u16 = 1005;
/// Close code recorded when a client's connection ended without a Close
/// frame (RFC 6455 §7.4.1, 1006).
pub const CLOSE_ABNORMAL: u16 = 1006;

#[derive(Debug)]
struct Conn {
    device_id: String,
    service_id: i32,
    tx: mpsc::UnboundedSender<ConnCmd>,
}

#[derive(Debug)]
struct Ticket {
    device_id: String,
    service_id: i32,
    expires: Instant,
}

#[derive(Debug)]
struct Waiter {
    conn: u64,
    tx: oneshot::Sender<i64>,
}

#[derive(Debug, Default)]
struct HubState {
    next_conn: u64,
    next_seq: u64,
    conns: HashMap<u64, Conn>,
    tickets: HashMap<String, Ticket>,
    waiters: HashMap<String, Waiter>,
    /// How each client-side close ended, in order: the Close frame's code,
    /// [`CLOSE_NO_STATUS`] or [`CLOSE_ABNORMAL`].
    client_closes: Vec<u16>,
}

/// Live connections, tickets and ack waiters.
#[derive(Debug)]
pub(crate) struct Hub {
    state: std::sync::Mutex<HubState>,
    changed: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new(HubState::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl Hub {
    pub(crate) fn live(&self) -> usize {
        lock(&self.state).conns.len()
    }

    /// Closes every socket without a close frame.
    pub(crate) fn drop_all(&self) {
        let ids: Vec<u64> = lock(&self.state).conns.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }

    /// Forgets a connection at once (so no new message is routed to it),
    /// tells its task to drop the socket and fails its ack waiters.
    fn kill(&self, id: u64) {
        let mut s = lock(&self.state);
        if let Some(conn) = s.conns.remove(&id) {
            let _ = conn.tx.send(ConnCmd::Kill);
            tracing::debug!(device_id = %conn.device_id, "long connection dropped");
        }
        s.waiters.retain(|_, w| w.conn != id);
    }

    /// Closes every socket with a Close frame carrying `code`.
    fn close_all(&self, code: u16) {
        for conn in lock(&self.state).conns.values() {
            let _ = conn.tx.send(ConnCmd::Close(code));
        }
    }

    fn pick(&self) -> Option<(u64, i32, mpsc::UnboundedSender<ConnCmd>)> {
        let s = lock(&self.state);
        if s.conns.is_empty() {
            return None;
        }
        let n = rand::rng().random_range(0..s.conns.len());
        s.conns
            .iter()
            .nth(n)
            .map(|(id, c)| (*id, c.service_id, c.tx.clone()))
    }

    async fn wait_for_conn(&self) -> (u64, i32, mpsc::UnboundedSender<ConnCmd>) {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(c) = self.pick() {
                return c;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn next_seq(&self) -> u64 {
        let mut s = lock(&self.state);
        s.next_seq += 1;
        s.next_seq
    }
}

fn handshake_fail(status: u16, msg: &str, code: &str) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
        msg.to_owned(),
    )
        .into_response();
    let h = resp.headers_mut();
    for (k, v) in [
        ("handshake-status", status.to_string()),
        ("handshake-msg", msg.to_owned()),
        ("handshake-autherrcode", code.to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    resp
}

/// `POST /callback/ws/endpoint`.
pub(crate) async fn endpoint(
    State(inner): State<Arc<Inner>>,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = inner.config();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if field("AppID").as_deref() != Some(cfg.app_id.as_str())
        || field("AppSecret").as_deref() != Some(cfg.app_secret.as_str())
    {
        return raw_json(
            StatusCode::OK,
            99991543,
            &json!({"code": 99991543, "msg": "app_id or app_secret is invalid", "data": null}),
        );
    }
    let device_id = rand_hex(19);
    let service_id = rand::rng().random_range(10_000..i32::MAX);
    let ticket = rand_alnum(36);
    lock(&inner.ws.state).tickets.insert(
        ticket.clone(),
        Ticket {
            device_id: device_id.clone(),
            service_id,
            expires: Instant::now() + TICKET_TTL,
        },
    );
    let url = format!(
        "ws://{}/ws/v2?fpid=493&aid=552564&device_id={device_id}&access_key={}&service_id={service_id}&ticket={ticket}",
        inner.kit.addr(),
        rand_hex(32)
    );
    raw_json(
        StatusCode::OK,
        0,
        &json!({"code": 0, "msg": "ok", "data": {
            "URL": url,
            "ClientConfig": client_config_json(&cfg.ws_client_config),
        }}),
    )
}

/// `GET /ws/v2?…&ticket=…`: the WebSocket handshake.
pub(crate) async fn upgrade(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ticket = q.get("ticket").cloned().unwrap_or_default();
    let max = inner.config().ws_max_connections;
    let (device_id, service_id) = {
        let mut s = lock(&inner.ws.state);
        let Some(t) = s
            .tickets
            .remove(&ticket)
            .filter(|t| t.expires > Instant::now())
        else {
            return handshake_fail(403, "invalid or used ticket", ERR_BAD_TICKET);
        };
        if s.conns.len() >= max {
            return handshake_fail(514, "exceed connection limit", ERR_CONNECTION_LIMIT);
        }
        (t.device_id, t.service_id)
    };
    let Ok(ws) = ws else {
        return (StatusCode::BAD_REQUEST, "websocket upgrade required").into_response();
    };
    ws.on_upgrade(move |socket| run_conn(inner, socket, device_id, service_id))
}

async fn run_conn(inner: Arc<Inner>, socket: WebSocket, device_id: String, service_id: i32) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = {
        let mut s = lock(&inner.ws.state);
        s.next_conn += 1;
        let id = s.next_conn;
        s.conns.insert(
            id,
            Conn {
                device_id: device_id.clone(),
                service_id,
                tx,
            },
        );
        id
    };
    inner.ws.changed.send_modify(|v| *v += 1);
    tracing::debug!(%device_id, "long connection up");
    let (mut sink, mut stream) = socket.split();
    let code_of = |msg: Option<Result<Message, axum::Error>>| match msg {
        Some(Ok(Message::Close(frame))) => Some(frame.map_or(CLOSE_NO_STATUS, |f| f.code)),
        Some(Err(_)) | None => Some(CLOSE_ABNORMAL),
        Some(Ok(_)) => None,
    };
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Send(bytes)) => {
                    if sink.send(Message::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(ConnCmd::Close(code)) => {
                    let frame = axum::extract::ws::CloseFrame {
                        code,
                        reason: "server closing".into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    // The client's reply (frames still in flight before it are skipped).
                    let reply = tokio::time::timeout(Duration::from_secs(5), async {
                        loop {
                            if let Some(code) = code_of(stream.next().await) {
                                return code;
                            }
                        }
                    })
                    .await
                    .unwrap_or(CLOSE_ABNORMAL);
                    lock(&inner.ws.state).client_closes.push(reply);
                    break;
                }
                Some(ConnCmd::Kill) | None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(reply) = handle_frame(&inner, conn_id, &b)
                        && sink.send(Message::Binary(reply.into())).await.is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(CLOSE_NO_STATUS, |f| f.code);
                    lock(&inner.ws.state).client_closes.push(code);
                    break;
                }
                Some(Err(_)) | None => {
                    lock(&inner.ws.state).client_closes.push(CLOSE_ABNORMAL);
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(sink);
    drop(stream);
    inner.ws.kill(conn_id);
    inner.ws.changed.send_modify(|v| *v += 1);
}

fn handle_frame(inner: &Inner, conn_id: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    let frame = match Frame::decode(bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "undecodable frame ignored");
            return None;
        }
    };
    match (frame.method, frame.header("type")) {
        (METHOD_CONTROL, Some("ping")) => {
            let cfg = inner.config();
            let payload = client_config_json(&cfg.ws_client_config).to_string();
            let mut pong = Frame::new(
                METHOD_CONTROL,
                frame.service,
                &[("type", "pong")],
                Some(payload.into_bytes()),
            );
            pong.seq_id = frame.seq_id;
            pong.log_id = frame.log_id;
            Some(pong.encode_to_vec())
        }
        (METHOD_DATA, _) => {
            let message_id = frame.header("message_id")?.to_owned();
            let ack: Value = frame
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_slice(p).ok())
                .unwrap_or(Value::Null);
            let code = ack.get("code").and_then(Value::as_i64).unwrap_or(0);
            let biz_rt = frame.header("biz_rt").map(str::to_owned);
            let waiter = {
                let mut s = lock(&inner.ws.state);
                match s.waiters.get(&message_id) {
                    Some(w) if w.conn == conn_id => s.waiters.remove(&message_id),
                    _ => None,
                }
            };
            if let Some(slot) = inner.outbox.slot_of(&message_id) {
                update_delivery(inner, slot, |d| {
                    d.acks.push(ack.clone());
                    if let Some(b) = biz_rt {
                        d.biz_rt.push(b);
                    }
                });
            }
            if let Some(w) = waiter {
                let _ = w.tx.send(code);
            }
            None
        }
        _ => None,
    }
}

/// Sends a message as one or more data frames; returns the number of parts.
fn send_frames(
    inner: &Inner,
    msg: &OutMsg,
    service_id: i32,
    tx: &mpsc::UnboundedSender<ConnCmd>,
) -> usize {
    let threshold = inner.config().ws_split_threshold.max(1);
    let parts: Vec<&[u8]> = if msg.body.len() > threshold {
        msg.body.chunks(threshold).collect()
    } else {
        vec![msg.body.as_slice()]
    };
    let sum = parts.len().to_string();
    let trace_id = rand_hex(32);
    let timestamp = now_ms().to_string();
    let log_id = rand::rng().random::<u64>();
    for (i, part) in parts.iter().enumerate() {
        let seq = i.to_string();
        let mut frame = Frame::new(
            METHOD_DATA,
            service_id,
            &[
                ("type", "event"),
                ("message_id", &msg.id),
                ("sum", &sum),
                ("seq", &seq),
                ("trace_id", &trace_id),
                ("timestamp", &timestamp),
                ("instance_id", "emulator-0"),
            ],
            Some(part.to_vec()),
        );
        frame.seq_id = inner.ws.next_seq();
        frame.log_id = log_id;
        let _ = tx.send(ConnCmd::Send(frame.encode_to_vec()));
    }
    parts.len()
}

/// Delivers one message over the long connection: to one random live
/// connection, waiting for its ack; a `{"code":500}` ack or no ack within
/// `ws_ack_timeout` is retried on the retry schedule; a dropped connection
/// re-queues the message for the next connection at once.
pub(crate) async fn deliver(inner: Arc<Inner>, msg: Arc<OutMsg>) {
    let cfg = inner.config();
    let schedule = cfg.webhook_retry_schedule.clone();
    let retries = schedule.len().min(MAX_RETRIES);
    let mut retry = 0;
    loop {
        let (conn_id, service_id, tx) = inner.ws.wait_for_conn().await;
        let (ack_tx, ack_rx) = oneshot::channel();
        lock(&inner.ws.state).waiters.insert(
            msg.id.clone(),
            Waiter {
                conn: conn_id,
                tx: ack_tx,
            },
        );
        let drop_it = inner.kit.roll(|f| f.drop_ws_rate);
        if drop_it {
            inner.ws.kill(conn_id);
            log_attempt(
                &inner,
                msg.slot,
                None,
                Some("connection dropped (fault)".into()),
                false,
            );
            continue;
        }
        let parts = send_frames(&inner, &msg, service_id, &tx);
        update_delivery(&inner, msg.slot, |d| d.parts = parts);
        match tokio::time::timeout(inner.config().ws_ack_timeout, ack_rx).await {
            Ok(Ok(200)) => {
                log_attempt(&inner, msg.slot, Some(200), None, false);
                update_delivery(&inner, msg.slot, |d| d.delivered_ok = true);
                tracing::debug!(event_id = %msg.id, "delivered over long connection");
                let dup = inner.kit.roll(|f| f.duplicate_rate);
                if dup && let Some((_, service, tx)) = inner.ws.pick() {
                    send_frames(&inner, &msg, service, &tx);
                    log_attempt(&inner, msg.slot, None, None, true);
                    update_delivery(&inner, msg.slot, |d| d.last_status = Some(200));
                }
                return;
            }
            Ok(Ok(code)) => {
                let status = u16::try_from(code).ok();
                log_attempt(
                    &inner,
                    msg.slot,
                    status,
                    Some(format!("ack code {code}")),
                    false,
                );
            }
            Ok(Err(_)) => {
                log_attempt(
                    &inner,
                    msg.slot,
                    None,
                    Some("connection closed before ack".into()),
                    false,
                );
                continue;
            }
            Err(_) => {
                let mut s = lock(&inner.ws.state);
                if s.waiters.get(&msg.id).is_some_and(|w| w.conn == conn_id) {
                    s.waiters.remove(&msg.id);
                }
                drop(s);
                log_attempt(&inner, msg.slot, None, Some("ack timeout".into()), false);
            }
        }
        if retry >= retries {
            update_delivery(&inner, msg.slot, |d| d.gave_up = true);
            tracing::warn!(event_id = %msg.id, "long-connection push failed all retries");
            return;
        }
        tokio::time::sleep(schedule[retry]).await;
        retry += 1;
    }
}

impl super::FeishuEmulator {
    /// Closes every long connection with a Close frame carrying `code`
    /// (1000: normal closure) and waits up to 5 s for each client's reply.
    pub fn close_ws_connections(&self, code: u16) {
        self.inner.ws.close_all(code);
    }

    /// How every long connection ended on the client's side, in order: the
    /// code of the client's Close frame, [`CLOSE_NO_STATUS`] (a Close frame
    /// without a code) or [`CLOSE_ABNORMAL`] (no Close frame at all).
    pub fn ws_client_closes(&self) -> Vec<u16> {
        lock(&self.inner.ws.state).client_closes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_encoding_matches_reference_bytes() {
        let bytes = Frame::ping(1).encode_to_vec();
        assert_eq!(
            hex::encode(&bytes),
            "08001000180120002a0c0a0474797065120470696e6732003a004a00"
        );
        let back = Frame::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.header("type"), Some("ping"));
    }

    #[test]
    fn decodes_minimal_frames() {
        // Only SeqID..method and one header; optional fields absent.
        let f = Frame::decode(&[0x08, 0x05, 0x10, 0x00, 0x18, 0x02, 0x20, 0x01][..]).unwrap();
        assert_eq!((f.seq_id, f.service, f.method), (5, 2, 1));
        assert_eq!(f.payload, None);
    }
}
