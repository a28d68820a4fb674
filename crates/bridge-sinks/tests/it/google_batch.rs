//! The batch endpoint: chunking, order, per-part errors, resent parts,
//! whole-batch retries, quota.

use bridge_emulators::google::{FaultKind, Faults};
use bridge_sinks::google::{ApiRequest, GoogleClient, GoogleError, Method, event_path};

use crate::google_common::*;

#[tokio::test]
async fn one_hundred_twenty_inserts_take_three_batch_calls_in_order() {
    let (emu, client) = setup().await;
    let reqs: Vec<ApiRequest> = (0..120).map(|n| insert("primary", n)).collect();
    let results = client.execute_batch(reqs).await.unwrap();
    assert_eq!(results.len(), 120);
    for (n, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body["id"], id(n));
        assert!(r.etag.is_some());
    }
    let s = client.stats();
    assert_eq!((s.batch_calls, s.api_calls, s.batched_parts), (3, 3, 120));
    assert_eq!((s.writes, s.retries, s.token_calls), (120, 0, 1));
    assert_eq!(emu.batch_count(), 3);
    assert_eq!(emu.events(ALICE).len(), 120);
    assert_eq!(emu.write_count(), 120);
}

#[tokio::test]
async fn per_part_errors_are_surfaced_in_place() {
    let (emu, client) = setup().await;
    client.execute(insert("primary", 1)).await.unwrap();
    let etag = client
        .execute(get_event("primary", 1))
        .await
        .unwrap()
        .etag
        .unwrap();
    let update = |if_match: &str| ApiRequest {
        method: Method::Put,
        path: event_path("primary", &id(1)),
        query: Vec::new(),
        body: Some(timed(&id(1), "renamed")),
        if_match: Some(if_match.to_owned()),
    };
    let reqs = vec![
        insert("primary", 0),
        insert("primary", 1),     // exists: 409 duplicate
        get_event("primary", 99), // 404
        update("\"stale\""),      // 412
        update(&etag),
        ApiRequest::new(Method::Delete, event_path("primary", &id(0))),
    ];
    let results = client.execute_batch(reqs).await.unwrap();
    assert_eq!(results[0].as_ref().unwrap().status, 200);
    let e = results[1].as_ref().unwrap_err();
    assert!(
        matches!(e, GoogleError::Api { status: 409, reason, .. } if reason == "duplicate"),
        "{e:?}"
    );
    assert_eq!(results[2].as_ref().unwrap_err().status(), Some(404));
    assert_eq!(results[3].as_ref().unwrap_err().status(), Some(412));
    let updated = results[4].as_ref().unwrap();
    assert_eq!(updated.body["summary"], "renamed");
    assert_ne!(updated.etag.as_deref(), Some(etag.as_str()));
    let deleted = results[5].as_ref().unwrap();
    assert_eq!(
        (deleted.status, &deleted.body),
        (204, &serde_json::Value::Null)
    );
    assert_eq!(client.stats().retries, 0, "final answers are not retried");
    assert_eq!(emu.batch_count(), 1);
}

#[tokio::test]
async fn transient_part_failures_are_resent_and_converge() {
    let (emu, client) = setup().await;
    emu.fail_next(
        "/events",
        3,
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    emu.fail_next("/events", 2, FaultKind::BackendError { status: 503 });
    emu.fail_next("/events", 2, FaultKind::RateLimitExceeded);
    emu.fail_next("/events", 1, FaultKind::UserRateLimitExceeded);
    let reqs: Vec<ApiRequest> = (0..20).map(|n| insert("primary", n)).collect();
    let results = client.execute_batch(reqs).await.unwrap();
    for (n, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().body["id"], id(n));
    }
    let s = client.stats();
    assert_eq!(s.batched_parts, 28, "8 parts were resent");
    assert_eq!(s.batch_calls, 2);
    assert_eq!(s.retries, 8);
    assert_eq!(emu.events(ALICE).len(), 20);
}

#[tokio::test]
async fn random_faults_converge() {
    let (emu, client) = setup().await;
    emu.set_faults(Faults {
        rate_429: 0.1,
        rate_5xx: 0.1,
        rate_403: 0.1,
        seed: Some(7),
        ..Faults::default()
    });
    let client = GoogleClient::new(
        bridge_sinks::google::GoogleClientConfig {
            max_retries: 12,
            ..client.config().clone()
        },
        refresh_credentials(
            &emu,
            &emu.issue_refresh_token(ALICE, bridge_emulators::google::SCOPE_CALENDAR),
        ),
    )
    .unwrap();
    let reqs: Vec<ApiRequest> = (0..150).map(|n| insert("primary", n)).collect();
    let results = client.execute_batch(reqs).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert!(client.stats().retries > 0);
    emu.set_faults(Faults::default());
    assert_eq!(emu.events(ALICE).len(), 150);
}

#[tokio::test]
async fn whole_batch_failures_resend_the_whole_batch() {
    let (emu, client) = setup().await;
    emu.fail_next(
        "/batch/calendar/v3",
        2,
        FaultKind::BackendError { status: 502 },
    );
    let reqs: Vec<ApiRequest> = (0..10).map(|n| insert("primary", n)).collect();
    let results = client.execute_batch(reqs).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    let s = client.stats();
    assert_eq!((s.batch_calls, s.batched_parts, s.retries), (3, 30, 2));
    assert_eq!(emu.events(ALICE).len(), 10);

    // Past max_retries every part reports Unavailable (not an Err of the
    // whole call).
    emu.fail_next(
        "/batch/calendar/v3",
        6,
        FaultKind::BackendError { status: 503 },
    );
    let results = client
        .execute_batch(vec![insert("primary", 50), insert("primary", 51)])
        .await
        .unwrap();
    for r in &results {
        assert!(matches!(r, Err(GoogleError::Unavailable(_))), "{r:?}");
    }
}

#[tokio::test]
async fn parts_past_their_retries_are_unavailable() {
    let (emu, client) = setup().await;
    // Part 0's path fails every time; part 1 is fine.
    emu.fail_next(&id(0), 6, FaultKind::BackendError { status: 500 });
    let reqs = vec![
        ApiRequest::new(Method::Get, event_path("primary", &id(0))),
        insert("primary", 1),
    ];
    let results = client.execute_batch(reqs).await.unwrap();
    assert!(
        matches!(&results[0], Err(GoogleError::Unavailable(m)) if m.contains("500")),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok());
    assert_eq!(client.stats().batch_calls, 6);
}

#[tokio::test]
async fn quota_exceeded_stops_everything() {
    let (emu, client) = setup().await;
    emu.exhaust_daily_quota(ALICE);
    let err = client
        .execute_batch((0..5).map(|n| insert("primary", n)).collect())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::Quota(_)), "{err:?}");
    assert!(err.to_string().contains("daily quota exceeded"));
    let err = client.execute(insert("primary", 9)).await.unwrap_err();
    assert!(matches!(err, GoogleError::Quota(_)), "{err:?}");
    assert_eq!(client.stats().retries, 0, "quota is never retried");
    // Reads still work.
    emu.reset_daily_quota();
    emu.fail_next("/events", 1, FaultKind::QuotaExceeded);
    let err = client.execute(insert("primary", 9)).await.unwrap_err();
    assert!(matches!(err, GoogleError::Quota(_)), "{err:?}");
    client.execute(insert("primary", 9)).await.unwrap();
}

#[tokio::test]
async fn expired_tokens_inside_a_batch_are_renewed() {
    let (emu, client) = setup().await;
    client.execute(get_event("primary", 0)).await.ok();
    emu.expire_access_tokens();
    let results = client
        .execute_batch((0..3).map(|n| insert("primary", n)).collect())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    // The emulator checks tokens per part (not on the envelope): every part
    // answered 401, the token was renewed once, the parts were resent.
    let s = client.stats();
    assert_eq!((s.token_calls, s.batch_calls), (2, 2));
    // A part whose token dies mid-batch (the shared token, so the parts
    // after it too) is resent with a fresh one.
    emu.fail_next(&id(1), 1, FaultKind::TokenExpired);
    let results = client
        .execute_batch((0..3).map(|n| get_event("primary", n)).collect())
        .await
        .unwrap();
    for (n, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().body["id"], id(n));
    }
    let s = client.stats();
    assert_eq!((s.token_calls, s.batch_calls), (3, 4));
}

#[tokio::test]
async fn batch_size_is_respected_and_emulator_limit_never_hit() {
    let (emu, client) = setup().await;
    let small = GoogleClient::new(
        bridge_sinks::google::GoogleClientConfig {
            batch_size: 7,
            ..client.config().clone()
        },
        refresh_credentials(
            &emu,
            &emu.issue_refresh_token(ALICE, bridge_emulators::google::SCOPE_CALENDAR),
        ),
    )
    .unwrap();
    let results = small
        .execute_batch((0..20).map(|n| insert("primary", n)).collect())
        .await
        .unwrap();
    assert_eq!(results.len(), 20);
    assert_eq!(small.stats().batch_calls, 3);
    let big = GoogleClient::new(
        bridge_sinks::google::GoogleClientConfig {
            batch_size: 500,
            ..client.config().clone()
        },
        refresh_credentials(
            &emu,
            &emu.issue_refresh_token(ALICE, bridge_emulators::google::SCOPE_CALENDAR),
        ),
    )
    .unwrap();
    assert_eq!(big.config().batch_size, 50);
    assert!(big.execute_batch(Vec::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_rate_limited_client_goes_through_its_bucket() {
    let (emu, client) = setup().await;
    // A bucket large enough never to make the test wait: only the code path
    // is exercised here; the arithmetic is unit-tested in `limit`.
    let limited = GoogleClient::new(
        bridge_sinks::google::GoogleClientConfig {
            requests_per_second: 500.0,
            ..client.config().clone()
        },
        refresh_credentials(
            &emu,
            &emu.issue_refresh_token(ALICE, bridge_emulators::google::SCOPE_CALENDAR),
        ),
    )
    .unwrap();
    let results = limited
        .execute_batch((0..60).map(|n| insert("primary", n)).collect())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(limited.stats().batch_calls, 2);
}
