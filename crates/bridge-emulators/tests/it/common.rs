//! Shared helpers: a test-speed emulator, an HTTP client, token helpers and a
//! recording webhook receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bridge_core::feishu::{Event, TimeInfo, UnixSeconds};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};
use serde_json::{Value, json};

/// Defaults with test-speed timings and no rate limit.
pub(crate) fn fast_config() -> FeishuConfig {
    FeishuConfig {
        aggregation_window: Duration::ZERO,
        webhook_retry_schedule: vec![
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(400),
            Duration::from_millis(800),
        ],
        ws_ack_timeout: Duration::from_millis(300),
        rate_limit: None,
        room_booking_delay: Duration::from_millis(50),
        ..FeishuConfig::default()
    }
}

pub(crate) async fn start() -> FeishuEmulator {
    start_with(fast_config()).await
}

pub(crate) async fn start_with(cfg: FeishuConfig) -> FeishuEmulator {
    FeishuEmulator::start(cfg).await.expect("emulator starts")
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// A parsed answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    pub(crate) fn code(&self) -> i64 {
        self.body["code"].as_i64().expect("code present")
    }
}

pub(crate) async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("JSON body ({e}): {}", String::from_utf8_lossy(&bytes)));
    Answer {
        status,
        headers,
        body,
    }
}

pub(crate) async fn get(emu: &FeishuEmulator, token: &str, path_and_query: &str) -> Answer {
    send(
        client()
            .get(format!("{}{path_and_query}", emu.base_url()))
            .bearer_auth(token),
    )
    .await
}

pub(crate) async fn post(emu: &FeishuEmulator, token: &str, path: &str, body: Value) -> Answer {
    send(
        client()
            .post(format!("{}{path}", emu.base_url()))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

pub(crate) async fn tenant_token(emu: &FeishuEmulator) -> String {
    let a = send(
        client()
            .post(format!(
                "{}/open-apis/auth/v3/tenant_access_token/internal",
                emu.base_url()
            ))
            .json(&json!({"app_id": "cli_test_app", "app_secret": "test_app_secret"})),
    )
    .await;
    assert_eq!(a.code(), 0, "{:?}", a.body);
    a.body["tenant_access_token"].as_str().unwrap().to_owned()
}

/// A timed event of `len` seconds.
pub(crate) fn timed(summary: &str, start: i64, len: i64) -> Event {
    Event {
        summary: Some(summary.into()),
        start_time: Some(TimeInfo {
            timestamp: Some(UnixSeconds(start)),
            timezone: Some("Asia/Shanghai".into()),
            date: None,
        }),
        end_time: Some(TimeInfo {
            timestamp: Some(UnixSeconds(start + len)),
            timezone: Some("Asia/Shanghai".into()),
            date: None,
        }),
        ..Event::default()
    }
}

/// A recurring master.
pub(crate) fn recurring(summary: &str, start: i64, len: i64, rule: &str) -> Event {
    Event {
        recurrence: Some(rule.into()),
        ..timed(summary, start, len)
    }
}

pub(crate) fn path_events(cal: &str) -> String {
    format!("/open-apis/calendar/v4/calendars/{cal}/events")
}

/// One request seen by the [`Receiver`].
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

#[derive(Default)]
struct ReceiverState {
    seen: Vec<Received>,
    /// Statuses to answer with, in order; 200 once exhausted.
    script: Vec<u16>,
    echo_challenge: bool,
}

/// A webhook receiver on 127.0.0.1:0 that records every POST.
#[derive(Clone)]
pub(crate) struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub(crate) url: String,
}

async fn receive(
    State(st): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut s = st.lock().unwrap();
    s.seen.push(Received {
        headers,
        body: body.clone(),
    });
    let status = if s.script.is_empty() {
        200
    } else {
        s.script.remove(0)
    };
    let reply = if s.echo_challenge {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        json!({ "challenge": v["challenge"] }).to_string()
    } else {
        json!({"msg": "success"}).to_string()
    };
    (StatusCode::from_u16(status).unwrap(), reply)
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .route("/webhook/event", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook/event", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { state, url }
    }

    pub(crate) fn script(&self, statuses: &[u16]) {
        self.state.lock().unwrap().script = statuses.to_vec();
    }

    pub(crate) fn echo_challenge(&self) {
        self.state.lock().unwrap().echo_challenge = true;
    }

    pub(crate) fn seen(&self) -> Vec<Received> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Waits until at least `n` requests arrived (or 5 s passed).
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.seen()
    }
}
