//! Paged listings: every page followed, never a partial list.

use std::time::Duration;

use bridge_emulators::google::FaultKind;
use bridge_sinks::google::{GoogleError, events_path};
use serde_json::Value;

use crate::google_common::*;

fn seed(emu: &bridge_emulators::google::GoogleEmulator, n: usize) {
    emu.seed_events(ALICE, (0..n).map(|i| timed(&id(i), "seeded")).collect());
}

fn ids(items: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn list_all_follows_page_tokens() {
    let (emu, client) = setup().await;
    seed(&emu, 60);
    let q = vec![("maxResults".to_owned(), "25".to_owned())];
    let listing = client
        .list(&events_path("primary"), q.clone())
        .await
        .unwrap();
    assert_eq!(ids(&listing.items), (0..60).map(id).collect::<Vec<_>>());
    assert!(listing.next_sync_token.is_some());
    assert_eq!(client.stats().api_calls, 3);
    let items = client.list_all(&events_path("primary"), q).await.unwrap();
    assert_eq!(items.len(), 60);
}

#[tokio::test]
async fn list_all_uses_pages_of_2500() {
    let (emu, client) = setup().await;
    seed(&emu, 2600);
    let items = client
        .list_all(&events_path("primary"), Vec::new())
        .await
        .unwrap();
    assert_eq!(items.len(), 2600);
    assert_eq!(client.stats().api_calls, 2);
    let calls = emu.calls();
    assert!(calls.iter().any(|c| c.query.contains("maxResults=2500")));
}

#[tokio::test]
async fn a_page_failing_past_retries_fails_the_listing() {
    let (emu, client) = setup().await;
    seed(&emu, 60);
    // Page 1 goes through; page 2 fails 1 + max_retries times.
    emu.fail_next("/events", 1, FaultKind::Slow(Duration::ZERO));
    emu.fail_next("/events", 6, FaultKind::BackendError { status: 503 });
    let q = vec![("maxResults".to_owned(), "25".to_owned())];
    let err = client
        .list_all(&events_path("primary"), q.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::Unavailable(_)), "{err:?}");
    assert_eq!(client.stats().api_calls, 7);
    // Transient failures below the limit are absorbed.
    emu.fail_next("/events", 1, FaultKind::Slow(Duration::ZERO));
    emu.fail_next(
        "/events",
        3,
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    assert_eq!(
        client
            .list_all(&events_path("primary"), q)
            .await
            .unwrap()
            .len(),
        60
    );
}

#[tokio::test]
async fn expired_sync_tokens_are_410() {
    let (emu, client) = setup().await;
    seed(&emu, 3);
    let listing = client
        .list(&events_path("primary"), Vec::new())
        .await
        .unwrap();
    let token = listing.next_sync_token.unwrap();
    emu.expire_sync_tokens();
    let err = client
        .list_all(&events_path("primary"), vec![("syncToken".into(), token)])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(410), "{err:?}");
    assert_eq!(err.reason(), Some("fullSyncRequired"));
    assert!(!err.is_transient());
}
