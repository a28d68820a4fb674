use std::time::Duration;

use bridge_store::{Backoff, DEFAULT_DEDUPE_TTL, MIN_DEDUPE_TTL, SinkItemKey};

use crate::temp_store;

const H8: i64 = 8 * 3600;

#[tokio::test]
async fn dirty_queue_is_idempotent_and_ordered_by_since() {
    let (_dir, store) = temp_store().await;
    store.mark_dirty("b", "webhook", 200).await.unwrap();
    store.mark_dirty("a", "poll", 300).await.unwrap();
    let e = store.mark_dirty("b", "long_connection", 250).await.unwrap();
    assert_eq!((e.since, e.last_hint_at, e.hints), (200, 250, 2));
    assert_eq!(e.reason, "long_connection");
    // An older hint arriving late lowers `since` but keeps the newest reason.
    let e = store.mark_dirty("b", "late", 100).await.unwrap();
    assert_eq!((e.since, e.last_hint_at, e.hints), (100, 250, 3));
    assert_eq!(e.reason, "long_connection");

    let dirty = store.dirty().await.unwrap();
    let order: Vec<(&str, i64)> = dirty
        .iter()
        .map(|e| (e.calendar_id.as_str(), e.since))
        .collect();
    assert_eq!(order, [("b", 100), ("a", 300)]);
    assert_eq!(store.stats().await.unwrap().dirty, 2);
}

#[tokio::test]
async fn clear_dirty_keeps_an_entry_with_a_newer_hint() {
    let (_dir, store) = temp_store().await;
    store.mark_dirty("cal", "webhook", 100).await.unwrap();
    // The worker starts a sync at 105 and will clear up to 104; meanwhile
    // another hint arrives at 106.
    store.mark_dirty("cal", "webhook", 106).await.unwrap();
    assert!(!store.clear_dirty("cal", 104).await.unwrap());
    let entry = store.dirty().await.unwrap().pop().unwrap();
    assert_eq!(
        (entry.calendar_id.as_str(), entry.last_hint_at, entry.hints),
        ("cal", 106, 2)
    );

    // The next sync covers it; a hint at exactly `up_to` counts as covered.
    assert!(store.clear_dirty("cal", 106).await.unwrap());
    assert!(store.dirty().await.unwrap().is_empty());
    assert!(!store.clear_dirty("cal", 1_000).await.unwrap());
    assert!(!store.clear_dirty("never", 1_000).await.unwrap());
}

#[tokio::test]
async fn concurrent_hints_are_all_counted() {
    let (_dir, store) = temp_store().await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.mark_dirty("cal", "webhook", 1000 + i).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let e = store.dirty().await.unwrap().pop().unwrap();
    assert_eq!((e.since, e.last_hint_at, e.hints), (1000, 1031, 32));
}

#[tokio::test]
async fn dedupe_entries_expire_after_the_ttl() {
    let (_dir, store) = temp_store().await;
    let t0 = 1_000_000;
    assert!(
        !store
            .seen_or_insert("ev-1", t0, DEFAULT_DEDUPE_TTL)
            .await
            .unwrap()
    );
    assert!(
        store
            .seen_or_insert("ev-1", t0 + 1, DEFAULT_DEDUPE_TTL)
            .await
            .unwrap()
    );
    // Feishu retries for about 7.1 h: still a duplicate then.
    assert!(
        store
            .seen_or_insert("ev-1", t0 + 7 * 3600 + 600, DEFAULT_DEDUPE_TTL)
            .await
            .unwrap()
    );
    assert!(
        store
            .seen_or_insert("ev-1", t0 + H8 - 1, DEFAULT_DEDUPE_TTL)
            .await
            .unwrap()
    );
    // Expired at exactly t0 + ttl: seen again as new, with a fresh expiry.
    assert!(
        !store
            .seen_or_insert("ev-1", t0 + H8, DEFAULT_DEDUPE_TTL)
            .await
            .unwrap()
    );
    assert!(
        store
            .seen_or_insert("ev-1", t0 + 2 * H8 - 1, DEFAULT_DEDUPE_TTL)
            .await
            .unwrap()
    );

    // A TTL below the minimum is raised to it; a longer one is kept.
    assert!(
        !store
            .seen_or_insert("short", t0, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        store
            .seen_or_insert("short", t0 + 3600, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        store
            .seen_or_insert("short", t0 + H8 - 1, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let day = Duration::from_secs(24 * 3600);
    assert!(!store.seen_or_insert("long", t0, day).await.unwrap());
    assert!(
        store
            .seen_or_insert("long", t0 + H8 + 1, day)
            .await
            .unwrap()
    );
    assert_eq!(MIN_DEDUPE_TTL, Duration::from_secs(H8 as u64));

    assert_eq!(store.stats().await.unwrap().dedupe, 3);
    assert_eq!(store.purge_expired(t0 + H8).await.unwrap(), 1); // "short"
    assert_eq!(store.purge_expired(t0 + H8).await.unwrap(), 0);
    assert_eq!(store.stats().await.unwrap().dedupe, 2);
    assert_eq!(store.purge_expired(t0 + 3 * H8).await.unwrap(), 2);
    assert_eq!(store.stats().await.unwrap().dedupe, 0);
    assert!(
        !store
            .seen_or_insert("long", t0 + 3 * H8, day)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn failure_backoff_grows_exponentially_and_is_capped() {
    let (_dir, store) = temp_store().await;
    let key = SinkItemKey::new("google", "cal", "u_0");
    let backoff = Backoff {
        base: Duration::from_secs(30),
        max: Duration::from_secs(600),
    };
    let mut now = 10_000;
    let mut delays = Vec::new();
    for attempt in 1..=8u32 {
        let f = store
            .record_failure(&key, &format!("HTTP 503 attempt {attempt}"), now, backoff)
            .await
            .unwrap();
        assert_eq!(f.attempts, attempt);
        assert_eq!(f.first_failed_at, 10_000);
        assert_eq!(f.last_error, format!("HTTP 503 attempt {attempt}"));
        delays.push(f.next_retry_at - now);
        now = f.next_retry_at;
    }
    assert_eq!(delays, [30, 60, 120, 240, 480, 600, 600, 600]);
    assert_eq!(store.get_failure(&key).await.unwrap().unwrap().attempts, 8);

    assert!(store.clear_failure(&key).await.unwrap());
    assert!(!store.clear_failure(&key).await.unwrap());
    // A new streak starts over.
    let f = store
        .record_failure(&key, "again", now, backoff)
        .await
        .unwrap();
    assert_eq!(
        (f.attempts, f.first_failed_at, f.next_retry_at),
        (1, now, now + 30)
    );
}

#[tokio::test]
async fn due_failures_are_those_whose_retry_time_has_come() {
    let (_dir, store) = temp_store().await;
    let b = Backoff {
        base: Duration::from_secs(100),
        max: Duration::from_secs(10_000),
    };
    let k1 = SinkItemKey::new("google", "cal", "a_0");
    let k2 = SinkItemKey::new("ews", "cal", "b_0");
    let k3 = SinkItemKey::new("google", "cal2", "c_0");
    store.record_failure(&k1, "e", 1000, b).await.unwrap(); // due 1100
    store.record_failure(&k2, "e", 900, b).await.unwrap(); // due 1000
    store.record_failure(&k3, "e", 1000, b).await.unwrap(); // due 1100
    store.record_failure(&k3, "e", 1100, b).await.unwrap(); // due 1300

    assert!(store.due_failures(999).await.unwrap().is_empty());
    let due: Vec<SinkItemKey> = store
        .due_failures(1100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(due, [k2.clone(), k1.clone()]);
    let due = store.due_failures(5000).await.unwrap();
    assert_eq!(due.len(), 3);
    assert_eq!(due[2].0, k3);
    assert_eq!(due[2].1.attempts, 2);
}

#[tokio::test]
async fn stored_errors_are_redacted() {
    let (_dir, store) = temp_store().await;
    let key = SinkItemKey::new("google", "cal", "u_0");
    let raw = "POST /token failed: Authorization: Bearer ya29.A0ARrdaM-secret\n\
               body {\"refresh_token\":\"1//0gSECRETsecretSECRET\",\"app_secret\":\"abc\"} \
               tenant t-g104ABCDEFGHIJKLMNOPQRST user u-abcdefghijklmnopqrstuv \
               url ?access_token=xyz&page=2 key Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdI";
    let f = store
        .record_failure(&key, raw, 0, Backoff::default())
        .await
        .unwrap();
    let stored = store.get_failure(&key).await.unwrap().unwrap().last_error;
    assert_eq!(f.last_error, stored);
    for secret in [
        "ya29", "1//0g", "abc\"", "t-g104", "u-abcdef", "xyz", "Zm9vYmFy", "SECRET",
    ] {
        assert!(!stored.contains(secret), "{secret:?} survived: {stored}");
    }
    assert!(stored.contains("POST /token failed"), "{stored}");
    assert!(stored.contains("page=2"), "{stored}");
}
