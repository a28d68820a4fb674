//! Shared helpers: an emulator without rate limits, a user, and clients with
//! millisecond backoff.

use std::time::Duration;

use bridge_emulators::google::{GoogleConfig, GoogleEmulator, SCOPE_CALENDAR};
use bridge_sinks::google::{
    ApiRequest, Credentials, GoogleClient, GoogleClientConfig, Method, Secret, event_path,
    events_path,
};
use serde_json::{Value, json};

pub(crate) const ALICE: &str = "alice@example.com";

/// Emulator defaults without the rate limiter.
pub(crate) fn fast_config() -> GoogleConfig {
    GoogleConfig {
        rate_limit: None,
        ..GoogleConfig::default()
    }
}

pub(crate) async fn start_with(cfg: GoogleConfig) -> GoogleEmulator {
    GoogleEmulator::start(cfg).await.expect("emulator starts")
}

/// Client settings for the emulator: no client-side limit, 5 ms backoff.
pub(crate) fn client_config(emu: &GoogleEmulator) -> GoogleClientConfig {
    GoogleClientConfig {
        base_url: emu.base_url(),
        token_url: emu.token_url(),
        requests_per_second: 0.0,
        max_retries: 5,
        max_backoff: Duration::from_millis(5),
        timeout: Duration::from_secs(20),
        batch_size: 50,
    }
}

/// Refresh-token credentials of the emulator's OAuth client.
pub(crate) fn refresh_credentials(emu: &GoogleEmulator, refresh_token: &str) -> Credentials {
    let cfg = emu.config();
    Credentials::RefreshToken {
        client_id: cfg.client_id,
        client_secret: Some(Secret::new(cfg.client_secret)),
        refresh_token: Secret::new(refresh_token),
    }
}

/// An emulator with Alice and a client holding her refresh token.
pub(crate) async fn setup() -> (GoogleEmulator, GoogleClient) {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let refresh = emu.issue_refresh_token(ALICE, SCOPE_CALENDAR);
    let client =
        GoogleClient::new(client_config(&emu), refresh_credentials(&emu, &refresh)).unwrap();
    (emu, client)
}

/// A valid deterministic event id (base32hex).
pub(crate) fn id(n: usize) -> String {
    format!("bridge{n:06}")
}

pub(crate) fn timed(id: &str, summary: &str) -> Value {
    json!({
        "id": id,
        "summary": summary,
        "start": {"dateTime": "2024-03-01T10:00:00Z"},
        "end": {"dateTime": "2024-03-01T11:00:00Z"},
    })
}

/// `events.insert` of [`timed`] in `cal`.
pub(crate) fn insert(cal: &str, n: usize) -> ApiRequest {
    ApiRequest {
        method: Method::Post,
        path: events_path(cal),
        query: vec![("sendUpdates".into(), "none".into())],
        body: Some(timed(&id(n), &format!("event {n}"))),
        if_match: None,
    }
}

pub(crate) fn get_event(cal: &str, n: usize) -> ApiRequest {
    ApiRequest::new(Method::Get, event_path(cal, &id(n)))
}
