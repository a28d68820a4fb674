//! Shared helpers of the Google emulator tests: a test-speed emulator with a
//! user and a full-scope token, a small JSON client, event builders and a
//! `multipart/mixed` reader for batch answers.

use bridge_emulators::google::{GoogleConfig, GoogleEmulator, SCOPE_CALENDAR};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub(crate) const ALICE: &str = "alice@example.com";

/// Defaults without the rate limiter.
pub(crate) fn fast_config() -> GoogleConfig {
    GoogleConfig {
        rate_limit: None,
        ..GoogleConfig::default()
    }
}

pub(crate) async fn start_with(cfg: GoogleConfig) -> GoogleEmulator {
    GoogleEmulator::start(cfg).await.expect("emulator starts")
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A parsed answer (`body` is `Null` when empty).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    /// `error.errors[0].reason`.
    pub(crate) fn reason(&self) -> &str {
        self.body["error"]["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default()
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.body["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub(crate) async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A client acting with one access token.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub(crate) emu: GoogleEmulator,
    pub(crate) token: String,
}

impl Api {
    pub(crate) fn new(emu: &GoogleEmulator, token: &str) -> Self {
        Self {
            emu: emu.clone(),
            token: token.to_owned(),
        }
    }

    /// A request to `…/calendar/v3{path}`.
    pub(crate) fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(method, format!("{}{path}", self.emu.api_base()))
            .bearer_auth(&self.token)
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        send(self.req(Method::GET, path)).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Answer {
        send(self.req(Method::POST, path).json(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> Answer {
        send(self.req(Method::PUT, path).json(body)).await
    }

    pub(crate) async fn patch(&self, path: &str, body: &Value) -> Answer {
        send(self.req(Method::PATCH, path).json(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Answer {
        send(self.req(Method::DELETE, path)).await
    }
}

/// An emulator without rate limits, Alice (primary calendar in `zone`) and
/// a full-scope token for her.
pub(crate) async fn setup_in(zone: &str) -> (GoogleEmulator, Api) {
    let emu = start_with(fast_config()).await;
    emu.add_user_in_zone(ALICE, zone);
    let token = emu.issue_access_token(ALICE, SCOPE_CALENDAR);
    let api = Api::new(&emu, &token);
    (emu, api)
}

pub(crate) async fn setup() -> (GoogleEmulator, Api) {
    setup_in("UTC").await
}

pub(crate) fn events(cal: &str) -> String {
    format!("/calendars/{cal}/events")
}

pub(crate) fn event(cal: &str, id: &str) -> String {
    format!("/calendars/{cal}/events/{id}")
}

/// A timed event (RFC 3339 start/end with offsets).
pub(crate) fn timed(id: &str, summary: &str, start: &str, end: &str) -> Value {
    json!({
        "id": id,
        "summary": summary,
        "start": {"dateTime": start},
        "end": {"dateTime": end},
    })
}

/// One part of a `multipart/mixed` batch answer.
#[derive(Debug)]
pub(crate) struct PartAnswer {
    pub(crate) content_id: Option<String>,
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// Reads a batch answer.
pub(crate) fn read_multipart(content_type: &str, body: &str) -> Vec<PartAnswer> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary")
        .trim_matches('"');
    let delim = format!("--{boundary}");
    body.split(delim.as_str())
        .skip(1)
        .take_while(|p| !p.starts_with("--"))
        .map(|part| {
            let part = part.trim_start_matches("\r\n");
            let (head, http) = part.split_once("\r\n\r\n").expect("part head");
            let content_id = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-ID: "))
                .map(str::to_owned);
            let (resp_head, resp_body) = http.split_once("\r\n\r\n").expect("response head");
            let status = resp_head
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .expect("status line");
            let text = resp_body.trim_end_matches("\r\n");
            let body = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(text).expect("part JSON")
            };
            PartAnswer {
                content_id,
                status,
                body,
            }
        })
        .collect()
}
