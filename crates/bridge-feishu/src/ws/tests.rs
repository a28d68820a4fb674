//! The client against a small in-process fake of the long-connection
//! service (bootstrap + WebSocket), so that the protocol logic is covered
//! without the emulator. End-to-end tests against the emulator live in
//! `tests/it/ws.rs`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Json, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use tokio::sync::broadcast;

use super::frame::{
    HEADER_BIZ_RT, HEADER_MESSAGE_ID, HEADER_SEQ, HEADER_SUM, HEADER_TYPE, METHOD_DATA, TYPE_CARD,
    TYPE_EVENT, TYPE_PING,
};
use super::*;

/// (HTTP status, Handshake-Status, Handshake-Autherrcode)
type Refusal = (u16, Option<i64>, Option<i64>);

#[derive(Default)]
struct Fake {
    addr: Mutex<String>,
    bootstrap_codes: Mutex<VecDeque<i64>>,
    refusals: Mutex<VecDeque<Refusal>>,
    client_config: Mutex<serde_json::Value>,
    pong_config: Mutex<Option<serde_json::Value>>,
    received: Mutex<Vec<Frame>>,
    bootstraps: AtomicUsize,
    connections: AtomicUsize,
    live: AtomicUsize,
    secrets_seen: Mutex<Vec<String>>,
    push: Mutex<Option<broadcast::Sender<Push>>>,
}

#[derive(Clone)]
enum Push {
    Frame(Frame),
    Text(String),
    Drop,
}

impl Fake {
    fn sender(&self) -> broadcast::Sender<Push> {
        self.push
            .lock()
            .unwrap()
            .get_or_insert_with(|| broadcast::channel(64).0)
            .clone()
    }

    fn send(&self, p: Push) {
        let _ = self.sender().send(p);
    }

    fn received(&self) -> Vec<Frame> {
        self.received.lock().unwrap().clone()
    }

    fn acks(&self) -> Vec<Frame> {
        self.received()
            .into_iter()
            .filter(|f| f.method == METHOD_DATA)
            .collect()
    }

    fn pings(&self) -> usize {
        self.received()
            .iter()
            .filter(|f| f.frame_type() == Some(TYPE_PING))
            .count()
    }
}

async fn bootstrap(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    assert_eq!(headers.get("locale").unwrap(), "zh");
    fake.bootstraps.fetch_add(1, Ordering::SeqCst);
    fake.secrets_seen
        .lock()
        .unwrap()
        .push(body["AppSecret"].as_str().unwrap_or("").to_owned());
    let code = fake
        .bootstrap_codes
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(0);
    if code == -500 {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    if code != 0 {
        return Json(serde_json::json!({"code": code, "msg": "app secret invalid"}))
            .into_response();
    }
    let n = fake.bootstraps.load(Ordering::SeqCst);
    let url = format!(
        "ws://{}/ws/v2?device_id=dev{n}&service_id=33&ticket=t{n}",
        fake.addr.lock().unwrap()
    );
    Json(serde_json::json!({
        "code": 0, "msg": "ok",
        "data": {"URL": url, "ClientConfig": fake.client_config.lock().unwrap().clone()}
    }))
    .into_response()
}

async fn upgrade(State(fake): State<Arc<Fake>>, ws: WebSocketUpgrade) -> Response {
    if let Some((status, hs, auth)) = fake.refusals.lock().unwrap().pop_front() {
        let mut h = HeaderMap::new();
        if let Some(hs) = hs {
            h.insert("Handshake-Status", HeaderValue::from(hs));
        }
        if let Some(a) = auth {
            h.insert("Handshake-Autherrcode", HeaderValue::from(a));
        }
        h.insert("Handshake-Msg", HeaderValue::from_static("refused by fake"));
        return (StatusCode::from_u16(status).unwrap(), h).into_response();
    }
    let rx = fake.sender().subscribe();
    ws.on_upgrade(move |socket| serve(fake, socket, rx))
}

async fn serve(fake: Arc<Fake>, mut socket: WebSocket, mut rx: broadcast::Receiver<Push>) {
    fake.connections.fetch_add(1, Ordering::SeqCst);
    fake.live.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(AxMessage::Binary(b))) => {
                    let f = Frame::from_bytes(&b).unwrap();
                    let is_ping = f.frame_type() == Some(TYPE_PING);
                    let service = f.service;
                    fake.received.lock().unwrap().push(f);
                    if is_ping {
                        let mut pong = Frame {
                            service,
                            method: 0,
                            headers: vec![Header::new(HEADER_TYPE, "pong")],
                            ..Frame::default()
                        };
                        if let Some(cfg) = fake.pong_config.lock().unwrap().clone() {
                            pong.payload = Some(serde_json::to_vec(&cfg).unwrap());
                        }
                        if socket.send(AxMessage::Binary(pong.to_bytes().into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            p = rx.recv() => match p {
                Ok(Push::Frame(f)) => {
                    if socket.send(AxMessage::Binary(f.to_bytes().into())).await.is_err() {
                        break;
                    }
                }
                Ok(Push::Text(t)) => {
                    let _ = socket.send(AxMessage::Text(t.into())).await;
                }
                Ok(Push::Drop) | Err(_) => break,
            },
        }
    }
    fake.live.fetch_sub(1, Ordering::SeqCst);
}

async fn start_fake(client_config: serde_json::Value) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        client_config: Mutex::new(client_config),
        ..Fake::default()
    });
    let app = axum::Router::new()
        .route("/callback/ws/endpoint", post(bootstrap))
        .route("/ws/v2", any(upgrade))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    *fake.addr.lock().unwrap() = addr.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, format!("http://{addr}"))
}

fn fast_config() -> serde_json::Value {
    serde_json::json!({"ReconnectCount": -1, "ReconnectInterval": 0, "ReconnectNonce": 0, "PingInterval": 60})
}

#[derive(Default)]
struct Recorder {
    payloads: Mutex<Vec<Vec<u8>>>,
    fail_first: AtomicUsize,
}

#[async_trait]
impl PayloadHandler for Recorder {
    async fn handle(&self, payload: Vec<u8>) -> Result<(), String> {
        self.payloads.lock().unwrap().push(payload);
        let left = self.fail_first.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_first.store(left - 1, Ordering::SeqCst);
            return Err("store unavailable".into());
        }
        Ok(())
    }
}

impl Recorder {
    fn payloads(&self) -> Vec<Vec<u8>> {
        self.payloads.lock().unwrap().clone()
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start_client(
    base: &str,
    secret: &str,
    handler: Arc<Recorder>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), WsError>>,
) {
    let cancel = CancellationToken::new();
    let mut cfg = WsConfig::new(base, "cli_test", secret);
    cfg.connect_timeout = Duration::from_secs(5);
    // Used until the first successful bootstrap brings the server's values.
    cfg.initial = ClientConfig {
        reconnect_count: -1,
        reconnect_interval: Duration::from_millis(50),
        reconnect_nonce: Duration::ZERO,
        ping_interval: Duration::from_secs(60),
    };
    let task = tokio::spawn(run(cfg, handler, cancel.clone()));
    (cancel, task)
}

fn event_frame(seq_id: u64, message_id: &str, sum: usize, seq: usize, part: &[u8]) -> Frame {
    Frame {
        seq_id,
        log_id: seq_id + 1000,
        service: 33,
        method: METHOD_DATA,
        headers: vec![
            Header::new(HEADER_TYPE, TYPE_EVENT),
            Header::new(HEADER_MESSAGE_ID, message_id),
            Header::new(HEADER_SUM, sum.to_string()),
            Header::new(HEADER_SEQ, seq.to_string()),
            Header::new("trace_id", "tr"),
        ],
        payload: Some(part.to_vec()),
        ..Frame::default()
    }
}

#[tokio::test]
async fn pings_at_once_with_the_service_id_and_cancels_cleanly() {
    let (fake, base) = start_fake(fast_config()).await;
    let handler = Arc::new(Recorder::default());
    let (cancel, task) = start_client(&base, "secret", handler);
    wait_for("first ping", || fake.pings() >= 1).await;
    let ping = &fake.received()[0];
    assert_eq!(ping.service, 33);
    assert_eq!(ping.method, 0);
    assert_eq!((ping.seq_id, ping.log_id), (0, 0));
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    wait_for("socket closed", || fake.live.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test]
async fn pong_client_config_changes_the_ping_interval() {
    let (fake, base) = start_fake(fast_config()).await;
    *fake.pong_config.lock().unwrap() = Some(serde_json::json!({"PingInterval": 1}));
    let (cancel, _task) = start_client(&base, "secret", Arc::new(Recorder::default()));
    // 60 s from the bootstrap would allow one ping only; the pong says 1 s.
    wait_for("three pings", || fake.pings() >= 3).await;
    cancel.cancel();
}

#[tokio::test]
async fn split_events_are_reassembled_and_acked() {
    let (fake, base) = start_fake(fast_config()).await;
    let handler = Arc::new(Recorder::default());
    let (cancel, _task) = start_client(&base, "secret", Arc::clone(&handler));
    wait_for("connection", || fake.pings() >= 1).await;

    fake.send(Push::Text("ignored".into()));
    fake.send(Push::Frame(event_frame(1, "m1", 3, 2, b"ghi")));
    fake.send(Push::Frame(event_frame(2, "m1", 3, 0, b"abc")));
    let mut card = event_frame(3, "c1", 1, 0, b"{}");
    card.headers[0].value = TYPE_CARD.into();
    fake.send(Push::Frame(card));
    fake.send(Push::Frame(event_frame(4, "m1", 3, 1, b"def")));
    fake.send(Push::Frame(event_frame(5, "m2", 1, 0, b"single")));

    wait_for("two acks", || fake.acks().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut payloads = handler.payloads();
    payloads.sort();
    assert_eq!(payloads, vec![b"abcdefghi".to_vec(), b"single".to_vec()]);

    let acks = fake.acks();
    assert_eq!(
        acks.len(),
        2,
        "card frames and buffered parts are not acked"
    );
    let ack = acks
        .iter()
        .find(|a| a.seq_id == 4)
        .expect("ack of the completing part");
    assert_eq!(
        (ack.log_id, ack.service, ack.method),
        (1004, 33, METHOD_DATA)
    );
    assert_eq!(ack.header(HEADER_MESSAGE_ID), Some("m1"));
    assert_eq!(ack.header(HEADER_SEQ), Some("1"));
    assert!(ack.header_int(HEADER_BIZ_RT).is_some_and(|ms| ms >= 0));
    assert_eq!(ack.headers.len(), 6);
    assert_eq!(ack.payload.as_deref(), Some(&br#"{"code":200}"#[..]));
    cancel.cancel();
}

#[tokio::test]
async fn handler_failure_is_acked_with_500() {
    let (fake, base) = start_fake(fast_config()).await;
    let handler = Arc::new(Recorder::default());
    handler.fail_first.store(1, Ordering::SeqCst);
    let (cancel, _task) = start_client(&base, "secret", Arc::clone(&handler));
    wait_for("connection", || fake.pings() >= 1).await;
    fake.send(Push::Frame(event_frame(9, "m9", 1, 0, b"x")));
    wait_for("ack", || !fake.acks().is_empty()).await;
    assert_eq!(
        fake.acks()[0].payload.as_deref(),
        Some(&br#"{"code":500}"#[..])
    );
    // Redelivery succeeds.
    fake.send(Push::Frame(event_frame(10, "m9", 1, 0, b"x")));
    wait_for("second ack", || fake.acks().len() >= 2).await;
    assert_eq!(
        fake.acks()[1].payload.as_deref(),
        Some(&br#"{"code":200}"#[..])
    );
    cancel.cancel();
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_socket() {
    let (fake, base) = start_fake(fast_config()).await;
    let handler = Arc::new(Recorder::default());
    let (cancel, task) = start_client(&base, "secret", Arc::clone(&handler));
    wait_for("connection", || {
        fake.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    fake.send(Push::Frame(event_frame(1, "a", 1, 0, b"before")));
    wait_for("ack", || fake.acks().len() == 1).await;

    fake.send(Push::Drop);
    wait_for("reconnection", || {
        fake.connections.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(
        fake.bootstraps.load(Ordering::SeqCst),
        2,
        "bootstraps again"
    );
    wait_for("ping on the new socket", || fake.pings() >= 2).await;
    fake.send(Push::Frame(event_frame(2, "b", 1, 0, b"after")));
    wait_for("ack", || fake.acks().len() == 2).await;
    assert_eq!(
        handler.payloads(),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
    assert!(!task.is_finished());
    cancel.cancel();
    assert!(task.await.unwrap().is_ok());
}

#[tokio::test]
async fn wrong_secret_is_fatal_with_a_clear_message() {
    let (fake, base) = start_fake(fast_config()).await;
    fake.bootstrap_codes.lock().unwrap().push_back(10_014);
    let (_cancel, task) = start_client(&base, "wrong", Arc::new(Recorder::default()));
    let err = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(
        err,
        WsError::BootstrapRejected { code: 10_014, .. }
    ));
    let msg = err.to_string();
    assert!(msg.contains("10014") && msg.contains("app_secret"), "{msg}");
    assert!(!msg.contains("wrong"), "the secret must not appear: {msg}");
    assert_eq!(fake.secrets_seen.lock().unwrap()[0], "wrong");
    assert_eq!(fake.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn busy_bootstrap_and_http_errors_are_retried() {
    let (fake, base) = start_fake(fast_config()).await;
    fake.bootstrap_codes
        .lock()
        .unwrap()
        .extend([CODE_SYSTEM_BUSY, CODE_INTERNAL_ERROR, -500]);
    let (cancel, _task) = start_client(&base, "secret", Arc::new(Recorder::default()));
    // The initial failure enters the reconnect sequence (with
    // `WsConfig::initial` delays until a bootstrap succeeds).
    wait_for("connection", || {
        fake.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(fake.bootstraps.load(Ordering::SeqCst), 4);
    cancel.cancel();
}

#[tokio::test]
async fn handshake_refusals_are_classified() {
    // 514 without the connection-limit code: retried; then success.
    let (fake, base) = start_fake(fast_config()).await;
    fake.refusals
        .lock()
        .unwrap()
        .push_back((400, Some(514), Some(1)));
    fake.refusals.lock().unwrap().push_back((502, None, None));
    let (cancel, _task) = start_client(&base, "secret", Arc::new(Recorder::default()));
    wait_for("connection", || {
        fake.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(fake.bootstraps.load(Ordering::SeqCst), 3);
    cancel.cancel();

    for (status, hs, auth) in [
        (403, None, None),
        (400, Some(514), Some(AUTH_EXCEED_CONN_LIMIT)),
    ] {
        let (fake, base) = start_fake(fast_config()).await;
        fake.refusals.lock().unwrap().push_back((status, hs, auth));
        let (_cancel, task) = start_client(&base, "secret", Arc::new(Recorder::default()));
        let err = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, WsError::HandshakeRejected { .. }), "{err}");
        assert!(err.to_string().contains("refused by fake"), "{err}");
    }
}

#[tokio::test]
async fn reconnect_count_bounds_the_attempts() {
    let (fake, base) = start_fake(serde_json::json!({
        "ReconnectCount": 2, "ReconnectInterval": 0, "ReconnectNonce": 0, "PingInterval": 60
    }))
    .await;
    let (_cancel, task) = start_client(&base, "secret", Arc::new(Recorder::default()));
    wait_for("connection", || {
        fake.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    fake.bootstrap_codes.lock().unwrap().extend([
        CODE_SYSTEM_BUSY,
        CODE_SYSTEM_BUSY,
        CODE_SYSTEM_BUSY,
    ]);
    fake.send(Push::Drop);
    let err = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, WsError::ReconnectExhausted { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("code 1"), "{err}");
}

#[test]
fn client_config_merge_and_defaults() {
    let mut c = ClientConfig::default();
    assert_eq!(c.reconnect_count, -1);
    assert_eq!(c.ping_interval, Duration::from_secs(120));
    let raw: RawClientConfig =
        serde_json::from_str(r#"{"PingInterval":0,"ReconnectNonce":5,"Other":1}"#).unwrap();
    c.merge(&raw);
    assert_eq!(c.ping_interval, MIN_PING_INTERVAL);
    assert_eq!(c.reconnect_nonce, Duration::from_secs(5));
    assert_eq!(c.reconnect_interval, Duration::from_secs(120));
}

#[test]
fn debug_redacts_the_secret() {
    let dbg = format!("{:?}", WsConfig::new("http://x", "cli", "s3cr3t"));
    assert!(
        !dbg.contains("s3cr3t") && dbg.contains("<redacted>"),
        "{dbg}"
    );
}

#[test]
fn random_delay_stays_below_the_nonce() {
    assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
    for _ in 0..100 {
        assert!(random_below(Duration::from_secs(1)) < Duration::from_secs(1));
    }
}
