//! The kit's common `/_emulator` routes, the same on every emulator.

use std::time::Duration;

use bridge_emulators::feishu::{FeishuConfig, WebhookTarget};
use serde_json::{Value, json};

use crate::common;
use crate::google_common;

/// `POST {base}{path}` with a JSON body: status and JSON answer.
async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = common::client()
        .post(format!("{base}/_emulator{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn reset_forgets_calls_and_queued_faults_on_google() {
    let (emu, api) = google_common::setup().await;
    let base = emu.base_url();
    let (s, _) = post(
        &base,
        "/fail_next",
        json!({"path_contains": "/calendars/", "fault": "backend_error", "n": 5}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(api.get("/calendars/primary").await.status, 503);
    assert_eq!(emu.calls().len(), 1);
    let (s, body) = post(&base, "/reset", json!({})).await;
    assert_eq!((s, body), (200, json!({})));
    assert!(emu.calls().is_empty());
    assert_eq!(api.get("/calendars/primary").await.status, 200);
    let (s, body) = post(
        &base,
        "/fail_next",
        json!({"path_contains": "/", "fault": "nonsense"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(body["error"], "unknown fault \"nonsense\"");
}

#[tokio::test]
async fn reset_forgets_calls_and_queued_faults_on_feishu() {
    let emu = common::start().await;
    let base = emu.base_url();
    let t = common::tenant_token(&emu).await;
    let cals = "/open-apis/calendar/v4/calendars";
    let (s, _) = post(
        &base,
        "/fail_next",
        json!({"path_contains": cals, "fault": "status5xx", "n": 3}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(common::get(&emu, &t, cals).await.code(), 190003);
    let (s, _) = post(&base, "/reset", json!({})).await;
    assert_eq!(s, 200);
    assert!(emu.calls().is_empty());
    assert_eq!(common::get(&emu, &t, cals).await.code(), 0);
    assert_eq!(emu.call_count(cals), 1);
    let (s, body) = post(
        &base,
        "/fail_next",
        json!({"path_contains": cals, "fault": "status5xx", "n": 0}),
    )
    .await;
    assert_eq!((s, body), (200, json!({})));
    assert_eq!(
        common::get(&emu, &t, cals).await.code(),
        0,
        "n = 0 queues nothing"
    );
}

#[tokio::test]
async fn tampered_page_tokens_get_each_services_own_error() {
    let (emu, api) = google_common::setup().await;
    let cal = "primary";
    for i in 0..3 {
        let body = google_common::timed(
            &format!("kittoken{i}"),
            "x",
            "2030-01-01T10:00:00Z",
            "2030-01-01T11:00:00Z",
        );
        assert_eq!(
            api.post(&google_common::events(cal), &body).await.status,
            200
        );
    }
    let page = api
        .get(&format!("{}?maxResults=1", google_common::events(cal)))
        .await;
    let token = page.body["nextPageToken"].as_str().unwrap().to_owned();
    let mut tampered = token.clone();
    tampered.insert(2, 'A');
    let bad = api
        .get(&format!(
            "{}?maxResults=1&pageToken={tampered}",
            google_common::events(cal)
        ))
        .await;
    assert_eq!((bad.status, bad.reason()), (400, "invalid"));
    let good = api
        .get(&format!(
            "{}?maxResults=1&pageToken={token}",
            google_common::events(cal)
        ))
        .await;
    assert_eq!(good.status, 200);
    drop(emu);

    let emu = common::start().await;
    let t = common::tenant_token(&emu).await;
    for name in ["a", "b", "c"] {
        emu.add_user(name);
    }
    let cals = "/open-apis/calendar/v4/calendars";
    let page = common::get(&emu, &t, &format!("{cals}?page_size=50")).await;
    let sync = page.body["data"]["sync_token"].as_str().unwrap().to_owned();
    let mut tampered = sync.clone();
    tampered.insert(tampered.len() - 3, '0');
    let bad = common::get(&emu, &t, &format!("{cals}?sync_token={tampered}")).await;
    assert_eq!(bad.code(), 190008);
    let good = common::get(&emu, &t, &format!("{cals}?sync_token={sync}")).await;
    assert_eq!(good.code(), 0);
}

#[tokio::test]
async fn shutdown_closes_the_port_and_aborts_background_tasks() {
    let emu = common::start_with(FeishuConfig {
        webhook: Some(WebhookTarget {
            // Nothing listens there: every attempt fails and is retried.
            url: "http://127.0.0.1:9/hook".into(),
            encrypt_key: None,
            verification_token: "v".into(),
        }),
        ..common::fast_config()
    })
    .await;
    let addr = emu.base_url().trim_start_matches("http://").to_owned();
    emu.emit_v2("kit.test_v1", json!({}));
    let observer = emu.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while observer.deliveries()[0].attempts == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    emu.shutdown().await;
    let attempts = observer.deliveries()[0].attempts;
    assert!(attempts >= 1);
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    // The retry schedule is 100, 200, 400, 800 ms: a live retry task would
    // have tried again by now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = &observer.deliveries()[0];
    assert_eq!(d.attempts, attempts, "no retry after shutdown");
    assert!(!d.gave_up);
}
