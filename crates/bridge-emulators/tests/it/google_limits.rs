//! Google rate limits, usage limits, injected faults, call recording and
//! the control API.

use std::time::{Duration, Instant};

use bridge_emulators::google::{FaultKind, Faults, GoogleConfig, RateLimit, SCOPE_CALENDAR};
use serde_json::{Value, json};

use crate::google_common::*;

fn insert_body(i: usize) -> Value {
    timed(
        &format!("limit{i:05}"),
        "x",
        "2024-01-01T10:00:00Z",
        "2024-01-01T11:00:00Z",
    )
}

#[tokio::test]
async fn per_user_rate_limit_answers_403_rate_limit_exceeded() {
    let emu = start_with(GoogleConfig {
        rate_limit: Some(RateLimit {
            per_user_per_second: 0.5,
            per_user_burst: 5,
            ..RateLimit::default()
        }),
        ..GoogleConfig::default()
    })
    .await;
    emu.add_user(ALICE);
    emu.add_user("bob@example.com");
    let alice = Api::new(&emu, &emu.issue_access_token(ALICE, SCOPE_CALENDAR));
    let bob = Api::new(
        &emu,
        &emu.issue_access_token("bob@example.com", SCOPE_CALENDAR),
    );
    let mut statuses = Vec::new();
    let mut throttled = None;
    for _ in 0..8 {
        let a = alice.get(&events("primary")).await;
        statuses.push(a.status);
        if a.status != 200 {
            throttled.get_or_insert(a);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    let t = throttled.expect("throttled");
    assert_eq!(t.status, 403);
    assert_eq!(t.reason(), "rateLimitExceeded");
    assert_eq!(t.body["error"]["errors"][0]["domain"], "usageLimits");
    assert_eq!(t.body["error"]["message"], "Rate Limit Exceeded");
    // Another user has their own budget; the bucket refills at 0.5/s.
    assert_eq!(bob.get(&events("primary")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(alice.get(&events("primary")).await.status, 200);
    let throttled_calls = emu
        .calls()
        .iter()
        .filter(|c| c.reason.as_deref() == Some("rateLimitExceeded"))
        .count();
    assert_eq!(throttled_calls, 3);
}

#[tokio::test]
async fn per_user_minute_quota_answers_user_rate_limit_exceeded() {
    let emu = start_with(GoogleConfig {
        rate_limit: Some(RateLimit {
            per_user_per_minute: 3,
            ..RateLimit::default()
        }),
        ..GoogleConfig::default()
    })
    .await;
    emu.add_user(ALICE);
    let api = Api::new(&emu, &emu.issue_access_token(ALICE, SCOPE_CALENDAR));
    for _ in 0..3 {
        assert_eq!(api.get("/calendars/primary").await.status, 200);
    }
    let a = api.get("/calendars/primary").await;
    assert_eq!((a.status, a.reason()), (403, "userRateLimitExceeded"));

    // The 429 variant carries Retry-After.
    emu.update_config(|c| {
        c.rate_limit = Some(RateLimit {
            per_user_per_minute: 3,
            answer_429: true,
            ..RateLimit::default()
        });
    });
    let a = api.get("/calendars/primary").await;
    assert_eq!(a.status, 429);
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
}

#[tokio::test]
async fn injected_429_carries_retry_after() {
    let (emu, api) = setup().await;
    emu.fail_next(
        "/events",
        1,
        FaultKind::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let a = api.get(&events("primary")).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.headers["retry-after"], "7");
    assert_eq!(a.reason(), "rateLimitExceeded");
    assert_eq!(a.body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(
        api.get(&events("primary")).await.status,
        200,
        "one shot only"
    );

    emu.fail_next("/events", 2, FaultKind::BackendError { status: 500 });
    for _ in 0..2 {
        let a = api.get(&events("primary")).await;
        assert_eq!((a.status, a.reason()), (500, "backendError"));
    }
    emu.fail_next("/events", 1, FaultKind::UserRateLimitExceeded);
    assert_eq!(
        api.get(&events("primary")).await.reason(),
        "userRateLimitExceeded"
    );
    emu.fail_next(
        "/events",
        1,
        FaultKind::Error {
            status: 410,
            domain: "global".into(),
            reason: "updatedMinTooLongAgo".into(),
            message: "The requested minimum modification time lies too far in the past.".into(),
        },
    );
    assert_eq!(
        api.get(&events("primary")).await.reason(),
        "updatedMinTooLongAgo"
    );

    emu.fail_next("/events", 1, FaultKind::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(api.get(&events("primary")).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn random_faults_hit_a_fraction_of_calls() {
    let (emu, api) = setup().await;
    emu.set_faults(Faults {
        rate_5xx: 0.5,
        seed: Some(42),
        ..Faults::default()
    });
    let mut failed = 0;
    for _ in 0..60 {
        let a = api.get(&events("primary")).await;
        if a.status == 503 {
            assert_eq!(a.reason(), "backendError");
            failed += 1;
        } else {
            assert_eq!(a.status, 200);
        }
    }
    assert!((10..=50).contains(&failed), "{failed} of 60 failed");
    // The token endpoint is not subject to random faults.
    emu.set_faults(Faults {
        rate_5xx: 1.0,
        ..Faults::default()
    });
    let cfg = emu.config();
    let refresh = emu.issue_refresh_token(ALICE, SCOPE_CALENDAR);
    let t = send(client().post(emu.token_url()).form(&[
        ("grant_type", "refresh_token"),
        ("client_id", cfg.client_id.as_str()),
        ("client_secret", cfg.client_secret.as_str()),
        ("refresh_token", refresh.as_str()),
    ]))
    .await;
    assert_eq!(t.status, 200);
    assert_eq!(api.get(&events("primary")).await.status, 503);
    emu.set_faults(Faults::default());
    assert_eq!(api.get(&events("primary")).await.status, 200);
}

#[tokio::test]
async fn quota_exceeded_persists_until_reset() {
    let (emu, api) = setup().await;
    assert_eq!(
        api.post(&events("primary"), &insert_body(0)).await.status,
        200
    );
    emu.exhaust_daily_quota(ALICE);
    for i in 1..=3 {
        let a = api.post(&events("primary"), &insert_body(i)).await;
        assert_eq!((a.status, a.reason()), (403, "quotaExceeded"));
        assert_eq!(
            a.body["error"]["message"],
            "Calendar usage limits exceeded."
        );
    }
    let p = api
        .patch(&event("primary", "limit00000"), &json!({"summary": "y"}))
        .await;
    assert_eq!(p.reason(), "quotaExceeded", "every write is refused");
    assert_eq!(
        api.get(&events("primary")).await.status,
        200,
        "reads still work"
    );
    emu.reset_daily_quota();
    assert_eq!(
        api.post(&events("primary"), &insert_body(4)).await.status,
        200
    );

    // The automatic limit: N creations, then quotaExceeded.
    emu.update_config(|c| c.daily_event_creations = Some(2));
    emu.reset_daily_quota();
    assert_eq!(
        api.post(&events("primary"), &insert_body(5)).await.status,
        200
    );
    assert_eq!(
        api.post(&events("primary"), &insert_body(6)).await.status,
        200
    );
    assert_eq!(
        api.post(&events("primary"), &insert_body(7)).await.reason(),
        "quotaExceeded"
    );
    assert_eq!(
        api.post(&events("primary"), &insert_body(8)).await.reason(),
        "quotaExceeded"
    );
}

#[tokio::test]
async fn calls_are_recorded() {
    let (emu, api) = setup().await;
    api.get(&format!("{}?maxResults=5", events("primary")))
        .await;
    api.post(
        &format!("{}?sendUpdates=none", events("primary")),
        &insert_body(1),
    )
    .await;
    Api::new(&emu, "ya29.bad").get("/calendars/primary").await;
    let calls = emu.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, "/calendar/v3/calendars/primary/events");
    assert_eq!(calls[0].query, "maxResults=5");
    assert_eq!((calls[0].status, calls[0].write), (200, false));
    assert_eq!(calls[0].user.as_deref(), Some(ALICE));
    assert_eq!(calls[1].method, "POST");
    assert!(calls[1].write && !calls[1].batch_part);
    assert_eq!(calls[1].send_updates.as_deref(), Some("none"));
    assert_eq!(calls[2].status, 401);
    assert_eq!(calls[2].reason.as_deref(), Some("authError"));
    assert_eq!(calls[2].user, None);
    assert_eq!(emu.write_count(), 1);
    assert_eq!(emu.call_count("/events"), 2);
    emu.reset_calls();
    assert!(emu.calls().is_empty());
    let unknown = api.get("/nothing/here").await;
    assert_eq!((unknown.status, unknown.reason()), (404, "notFound"));
}

#[tokio::test]
async fn control_api_drives_the_emulator() {
    let emu = start_with(fast_config()).await;
    let base = format!("{}/_emulator", emu.base_url());
    let c = client();
    let post = |path: &str, body: Value| {
        let c = c.clone();
        let url = format!("{base}{path}");
        async move {
            let r = c.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, user) = post(
        "/users",
        json!({"email": "dora@example.com", "time_zone": "Europe/Berlin"}),
    )
    .await;
    assert_eq!(s, 200);
    let cal = user["primary_calendar_id"].as_str().unwrap().to_owned();
    let (_, tokens) = post("/users/dora@example.com/tokens", json!({})).await;
    let api = Api::new(&emu, tokens["access_token"].as_str().unwrap());
    let (s, seeded) = post(
        &format!("/calendars/{cal}/events"),
        json!({
            "id": "seeded001",
            "summary": "weekly",
            "start": {"dateTime": "2024-03-25T10:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2024-03-25T11:00:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=2"],
        }),
    )
    .await;
    assert_eq!((s, seeded["id"].as_str()), (200, Some("seeded001")));
    let listed = api.get(&events("primary")).await;
    assert_eq!(listed.ids(), ["seeded001"]);
    let instances: Value = c
        .get(format!(
            "{base}/calendars/{cal}/instances?timeMin=2024-03-01T00:00:00Z&timeMax=2024-05-01T00:00:00Z"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    // Berlin is UTC+1 until 2024-03-31, UTC+2 after.
    assert_eq!(
        ids,
        ["seeded001_20240325T090000Z", "seeded001_20240401T080000Z"]
    );
    let r = c
        .patch(format!("{base}/calendars/{cal}/events/seeded001"))
        .json(&json!({"summary": "edited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.events(&cal)[0].summary.as_deref(), Some("edited"));
    let (s, _) = post(
        "/fail_next",
        json!({"path_contains": "/events", "fault": "too_many_requests", "retry_after_secs": 3}),
    )
    .await;
    assert_eq!(s, 200);
    let a = api.get(&events("primary")).await;
    assert_eq!(
        (a.status, a.headers["retry-after"].to_str().unwrap()),
        (429, "3")
    );
    let (s, _) = post("/tokens/expire", json!({"kind": "access"})).await;
    assert_eq!(s, 200);
    assert_eq!(api.get(&events("primary")).await.status, 401);
    let (_, revoked) = post("/tokens/revoke", json!({"email": "dora@example.com"})).await;
    assert_eq!(revoked["revoked"], 1);
    let missing = c
        .delete(format!("{base}/calendars/{cal}/events/nothere01"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let state: Value = c
        .get(format!("{base}/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["write_count"], 0);
    assert_eq!(state["batch_count"], 0);
    let sa: Value = c
        .get(format!("{base}/service_account"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sa["type"], "service_account");
    assert_eq!(sa["token_uri"], emu.token_url());
    let calls: Vec<Value> = c
        .get(format!("{base}/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls.len(), 3, "control calls are not recorded");
}
