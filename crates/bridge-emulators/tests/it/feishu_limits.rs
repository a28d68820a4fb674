//! Rate limits, injected faults, call recording and the control API.

use std::time::{Duration, Instant};

use bridge_emulators::feishu::{FaultKind, Faults, FeishuConfig, TokenKind};
use serde_json::json;

use crate::common::*;

const CALS: &str = "/open-apis/calendar/v4/calendars";

#[tokio::test]
async fn per_second_limit_answers_429_with_headers() {
    let emu = start_with(FeishuConfig {
        rate_limit: Some((5, 1000)),
        ..fast_config()
    })
    .await;
    let t = tenant_token(&emu).await;
    let mut statuses = Vec::new();
    let mut throttled = None;
    for _ in 0..8 {
        let a = get(&emu, &t, CALS).await;
        statuses.push(a.status);
        if a.status == 429 {
            throttled.get_or_insert(a);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    let a = throttled.expect("throttled");
    assert_eq!(a.code(), 99991400);
    assert_eq!(a.body["msg"], "request trigger frequency limit");
    assert_eq!(a.headers["x-ogw-ratelimit-limit"], "5");
    assert_eq!(a.headers["x-ogw-ratelimit-reset"], "1");
    // Another endpoint has its own budget.
    let cal = emu.create_calendar("x");
    assert_eq!(get(&emu, &t, &format!("{CALS}/{cal}")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&emu, &t, CALS).await.status, 200);
}

#[tokio::test]
async fn one_shot_faults() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    emu.bulk_load(
        &cal,
        (0..10).map(|i| timed("x", 1_700_000_000 + i, 10)).collect(),
    );
    let events = path_events(&cal);

    emu.fail_next("/events", 1, FaultKind::Status429 { reset_secs: 7 });
    let a = get(&emu, &t, &events).await;
    assert_eq!((a.status, a.code()), (429, 99991400));
    assert_eq!(a.headers["x-ogw-ratelimit-reset"], "7");

    emu.fail_next("/events", 2, FaultKind::Status5xx);
    for _ in 0..2 {
        let a = get(&emu, &t, &events).await;
        assert_eq!((a.status, a.code()), (500, 190003));
    }
    assert_eq!(get(&emu, &t, &events).await.code(), 0);

    emu.fail_next("/events", 1, FaultKind::Truncated);
    let resp = client()
        .get(format!("{}{events}", emu.base_url()))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text}"
    );
    assert!(text.starts_with("{\"code\":0"));

    emu.fail_next("/events", 1, FaultKind::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(get(&emu, &t, &events).await.code(), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));

    emu.fail_next("/events", 1, FaultKind::TokenExpired);
    assert_eq!(get(&emu, &t, &events).await.code(), 99991663);
    assert_eq!(
        get(&emu, &t, &events).await.code(),
        99991663,
        "the token really expired"
    );
    let fresh = tenant_token(&emu).await;
    assert_ne!(fresh, t);
    assert_eq!(get(&emu, &fresh, &events).await.code(), 0);
}

#[tokio::test]
async fn random_faults_with_a_seed() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    emu.set_faults(Faults {
        rate_5xx: 1.0,
        seed: Some(7),
        ..Faults::default()
    });
    assert_eq!(get(&emu, &t, CALS).await.code(), 190003);
    // Token endpoints are not subject to random faults.
    tenant_token(&emu).await;
    emu.set_faults(Faults::default());
    assert_eq!(get(&emu, &t, CALS).await.code(), 0);
}

#[tokio::test]
async fn calls_are_recorded() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let ann = emu.add_user("Ann");
    let (ut, _) = emu.issue_user_token(&ann, "calendar:calendar");
    get(&emu, &t, &format!("{CALS}?page_size=50")).await;
    get(&emu, &ut, CALS).await;
    get(&emu, "t-bad", CALS).await;
    let calls = emu.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0].token_kind, TokenKind::None);
    assert_eq!(
        calls[0].path,
        "/open-apis/auth/v3/tenant_access_token/internal"
    );
    assert_eq!(calls[1].query, "page_size=50");
    assert_eq!(calls[1].path, CALS);
    assert_eq!((calls[1].status, calls[1].code), (200, Some(0)));
    assert_eq!(calls[1].token_kind, TokenKind::Tenant);
    assert_eq!(calls[2].token_kind, TokenKind::User);
    assert_eq!((calls[3].status, calls[3].code), (400, Some(99991663)));
    assert!(!calls[3].log_id.is_empty());
    assert_eq!(emu.call_count("/calendar/v4/calendars"), 3);
    emu.reset_calls();
    assert!(emu.calls().is_empty());
    let unknown = get(&emu, &t, "/open-apis/nothing/here").await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn control_api_drives_the_emulator() {
    let emu = start().await;
    let base = format!("{}/_emulator", emu.base_url());
    let c = client();
    let user: serde_json::Value = c
        .post(format!("{base}/users"))
        .json(&json!({"name": "Ann"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cal = user["primary_calendar_id"].as_str().unwrap().to_owned();
    let ev: serde_json::Value = c
        .post(format!("{base}/calendars/{cal}/events"))
        .json(&timed("from control", 1_700_000_000, 600))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ev["event_id"].as_str().unwrap().to_owned();
    let r = c
        .patch(format!("{base}/calendars/{cal}/events/{id}"))
        .json(&json!({"summary": "patched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.events(&cal)[0].summary.as_deref(), Some("patched"));
    let r = c
        .post(format!("{base}/fail_next"))
        .json(&json!({"path_contains": "/calendars", "fault": "status5xx"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = tenant_token(&emu).await;
    assert_eq!(get(&emu, &t, CALS).await.code(), 190003);
    let r = c
        .post(format!("{base}/tokens/expire"))
        .json(&json!({"kind": "tenant"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&emu, &t, CALS).await.code(), 99991663);
    let missing = c
        .delete(format!("{base}/calendars/nope@x/events/u_0"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let calls: Vec<serde_json::Value> = c
        .get(format!("{base}/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls.len(), 3, "control calls are not recorded");
}
