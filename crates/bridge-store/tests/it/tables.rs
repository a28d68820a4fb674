use bridge_store::{Backoff, Batch, Cursor, Failure, Record, SinkItemKey, Snapshot, StoreError};

use crate::temp_store;

fn snap(n: i64) -> Snapshot {
    Snapshot {
        event_json: format!(r#"{{"event_id":"u{n}_0","summary":"s{n}"}}"#),
        content_hash: format!("v1:{n:064x}"),
        updated_at: n,
    }
}

fn rec(n: u32) -> Record {
    Record {
        remote_id: format!("remote-{n}"),
        etag: n.is_multiple_of(2).then(|| format!("\"etag-{n}\"")),
        applied_hash: format!("v1:{n:064x}"),
        applied_at: i64::from(n),
        sequence: n,
        tombstone: n.is_multiple_of(3),
    }
}

#[tokio::test]
async fn cursors_round_trip() {
    let (_dir, store) = temp_store().await;
    assert_eq!(store.get_cursor("cal").await.unwrap(), None);
    let c = Cursor {
        sync_token: Some("sync-token-1".into()),
        obtained_at: 1_700_000_000,
        last_full_sync: Some(1_699_000_000),
        last_sync: None,
    };
    store.put_cursor("cal", c.clone()).await.unwrap();
    assert_eq!(store.get_cursor("cal").await.unwrap(), Some(c.clone()));
    let c2 = Cursor {
        sync_token: None,
        last_sync: Some(5),
        ..c
    };
    store.put_cursor("cal", c2.clone()).await.unwrap();
    assert_eq!(store.get_cursor("cal").await.unwrap(), Some(c2));
    assert_eq!(store.get_cursor("other").await.unwrap(), None);
    assert!(store.clear_cursor("cal").await.unwrap());
    assert!(!store.clear_cursor("cal").await.unwrap());
    assert_eq!(store.get_cursor("cal").await.unwrap(), None);
}

#[tokio::test]
async fn snapshots_round_trip_ordered_and_per_calendar() {
    let (_dir, store) = temp_store().await;
    // Calendars whose ids are prefixes of each other, or differ by a space
    // (the character right after the key separator), must not mix.
    for (cal, keys) in [
        ("c", &["u_9", "u_10", "a_0"][..]),
        ("c2", &["u_0"][..]),
        ("c ", &["x_0"][..]),
    ] {
        for (i, key) in keys.iter().enumerate() {
            store.put_snapshot(cal, key, snap(i as i64)).await.unwrap();
        }
    }
    let listed = store.list_snapshots("c").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a_0", "u_10", "u_9"]);
    assert_eq!(listed[2].1, snap(0));
    assert_eq!(store.count_snapshots("c").await.unwrap(), 3);
    assert_eq!(store.count_snapshots("c2").await.unwrap(), 1);
    assert_eq!(store.count_snapshots("c ").await.unwrap(), 1);
    assert_eq!(store.count_snapshots("nope").await.unwrap(), 0);
    assert_eq!(
        store.get_snapshot("c", "u_10").await.unwrap(),
        Some(snap(1))
    );
    assert_eq!(store.get_snapshot("c2", "u_10").await.unwrap(), None);

    store.put_snapshot("c", "u_10", snap(7)).await.unwrap();
    assert_eq!(
        store.get_snapshot("c", "u_10").await.unwrap(),
        Some(snap(7))
    );
    assert!(store.delete_snapshot("c", "u_10").await.unwrap());
    assert!(!store.delete_snapshot("c", "u_10").await.unwrap());
    assert_eq!(store.count_snapshots("c").await.unwrap(), 2);
    assert_eq!(store.stats().await.unwrap().snapshots, 4);
}

#[tokio::test]
async fn records_round_trip_list_and_delete() {
    let (_dir, store) = temp_store().await;
    let k = |sink: &str, cal: &str, ev: &str| SinkItemKey::new(sink, cal, ev);
    store
        .put_record(&k("google", "c", "b_0"), rec(1))
        .await
        .unwrap();
    store
        .put_record(&k("google", "c", "a_0"), rec(2))
        .await
        .unwrap();
    store
        .put_record(&k("google", "c2", "a_0"), rec(3))
        .await
        .unwrap();
    store
        .put_record(&k("ews", "c", "a_0"), rec(4))
        .await
        .unwrap();

    assert_eq!(
        store.get_record(&k("google", "c", "a_0")).await.unwrap(),
        Some(rec(2))
    );
    assert_eq!(store.get_record(&k("ews", "c", "b_0")).await.unwrap(), None);
    let listed = store.list_records("google", "c").await.unwrap();
    assert_eq!(
        listed,
        vec![("a_0".to_owned(), rec(2)), ("b_0".to_owned(), rec(1))]
    );
    assert_eq!(
        store.list_records("ews", "c").await.unwrap(),
        vec![("a_0".to_owned(), rec(4))]
    );
    assert!(store.list_records("ews", "c2").await.unwrap().is_empty());

    assert!(store.delete_record(&k("google", "c", "a_0")).await.unwrap());
    assert!(!store.delete_record(&k("google", "c", "a_0")).await.unwrap());
    assert_eq!(store.list_records("google", "c").await.unwrap().len(), 1);
    assert_eq!(store.stats().await.unwrap().records, 3);
}

#[tokio::test]
async fn tokens_round_trip_and_refuse_non_json_without_echoing_it() {
    let (_dir, store) = temp_store().await;
    assert_eq!(store.get_token("feishu_user").await.unwrap(), None);
    let json = r#"{"access_token":"u-x","refresh_token":"ur-y","refresh_expires_at":9}"#;
    store.put_token("feishu_user", json).await.unwrap();
    assert_eq!(
        store.get_token("feishu_user").await.unwrap().as_deref(),
        Some(json)
    );

    let err = store
        .put_token("feishu_user", "ur-secret-not-json")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidInput {
            what: "token value",
            ..
        }
    ));
    assert!(!err.to_string().contains("ur-secret"), "{err}");
    assert_eq!(
        store.get_token("feishu_user").await.unwrap().as_deref(),
        Some(json)
    );

    assert_eq!(store.stats().await.unwrap().tokens, 1);
    assert!(store.delete_token("feishu_user").await.unwrap());
    assert!(!store.delete_token("feishu_user").await.unwrap());
    assert_eq!(store.get_token("feishu_user").await.unwrap(), None);
}

#[tokio::test]
async fn invalid_ids_are_refused() {
    let (_dir, store) = temp_store().await;
    for err in [
        store.get_cursor("").await.unwrap_err(),
        store
            .put_snapshot("c\u{1f}d", "u_0", snap(0))
            .await
            .unwrap_err(),
        store.mark_dirty("", "r", 0).await.unwrap_err(),
        store
            .seen_or_insert("", 0, bridge_store::DEFAULT_DEDUPE_TTL)
            .await
            .unwrap_err(),
        store
            .get_record(&SinkItemKey::new("s", "c", "u\u{1f}0"))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn a_batch_commits_everything_together() {
    let (_dir, store) = temp_store().await;
    let key = |ev: &str| SinkItemKey::new("google", "cal", ev);
    store.put_snapshot("cal", "gone_0", snap(9)).await.unwrap();
    store.put_record(&key("gone_0"), rec(9)).await.unwrap();
    store
        .record_failure(&key("ok_0"), "HTTP 500", 10, Backoff::default())
        .await
        .unwrap();

    let cursor = Cursor {
        sync_token: Some("next".into()),
        obtained_at: 100,
        last_full_sync: None,
        last_sync: Some(100),
    };
    let mut batch = Batch::new();
    batch
        .put_snapshot("cal", "ok_0", snap(1))
        .delete_snapshot("cal", "gone_0")
        .put_record(key("ok_0"), rec(1))
        .delete_record(key("gone_0"))
        .clear_failure(key("ok_0"))
        .record_failure(key("bad_0"), "HTTP 503", 100, Backoff::default())
        .put_failure(
            key("manual_0"),
            Failure {
                attempts: 4,
                next_retry_at: 500,
                last_error: "quota".into(),
                first_failed_at: 50,
            },
        )
        .put_cursor("cal", cursor.clone());
    assert_eq!(batch.len(), 8);
    store.apply_batch(batch).await.unwrap();

    assert_eq!(
        store.get_snapshot("cal", "ok_0").await.unwrap(),
        Some(snap(1))
    );
    assert_eq!(store.get_snapshot("cal", "gone_0").await.unwrap(), None);
    assert_eq!(store.get_record(&key("ok_0")).await.unwrap(), Some(rec(1)));
    assert_eq!(store.get_record(&key("gone_0")).await.unwrap(), None);
    assert_eq!(store.get_failure(&key("ok_0")).await.unwrap(), None);
    assert_eq!(
        store
            .get_failure(&key("bad_0"))
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    assert_eq!(
        store
            .get_failure(&key("manual_0"))
            .await
            .unwrap()
            .unwrap()
            .attempts,
        4
    );
    assert_eq!(store.get_cursor("cal").await.unwrap(), Some(cursor));

    let stats = store.stats().await.unwrap();
    assert_eq!(
        (
            stats.snapshots,
            stats.records,
            stats.failures,
            stats.cursors
        ),
        (1, 1, 2, 1)
    );
    store.apply_batch(Batch::new()).await.unwrap();
}

/// An error in the middle of a batch (here an invalid key, found while the
/// transaction is being written) leaves nothing of the batch behind: not
/// the changes before it, and above all not the cursor.
#[tokio::test]
async fn a_failing_batch_leaves_nothing_behind() {
    let (_dir, store) = temp_store().await;
    let key = |ev: &str| SinkItemKey::new("google", "cal", ev);
    let old_cursor = Cursor {
        sync_token: Some("old".into()),
        obtained_at: 1,
        last_full_sync: None,
        last_sync: None,
    };
    store.put_cursor("cal", old_cursor.clone()).await.unwrap();
    store.put_snapshot("cal", "keep_0", snap(1)).await.unwrap();
    store.put_record(&key("keep_0"), rec(1)).await.unwrap();
    let before = store.stats().await.unwrap();

    let mut batch = Batch::new();
    batch
        .put_snapshot("cal", "new_0", snap(2))
        .delete_snapshot("cal", "keep_0")
        .put_record(key("new_0"), rec(2))
        .delete_record(key("keep_0"))
        .record_failure(key("x_0"), "boom", 5, Backoff::default())
        .put_cursor(
            "cal",
            Cursor {
                sync_token: Some("new".into()),
                obtained_at: 2,
                last_full_sync: None,
                last_sync: None,
            },
        )
        // The fault: a key component containing the separator.
        .put_record(SinkItemKey::new("google", "cal", "bad\u{1f}key"), rec(3));
    let err = store.apply_batch(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");

    assert_eq!(store.get_cursor("cal").await.unwrap(), Some(old_cursor));
    assert_eq!(store.get_snapshot("cal", "new_0").await.unwrap(), None);
    assert_eq!(
        store.get_snapshot("cal", "keep_0").await.unwrap(),
        Some(snap(1))
    );
    assert_eq!(store.get_record(&key("new_0")).await.unwrap(), None);
    assert_eq!(
        store.get_record(&key("keep_0")).await.unwrap(),
        Some(rec(1))
    );
    assert_eq!(store.get_failure(&key("x_0")).await.unwrap(), None);
    assert_eq!(store.stats().await.unwrap(), before);

    // The store is still usable after the aborted transaction.
    store.put_snapshot("cal", "after_0", snap(3)).await.unwrap();
    assert_eq!(store.count_snapshots("cal").await.unwrap(), 2);
}

#[tokio::test]
async fn in_memory_store_works() {
    let store = bridge_store::Store::in_memory().await.unwrap();
    assert_eq!(store.path().to_str(), Some(":memory:"));
    store.put_snapshot("c", "u_0", snap(1)).await.unwrap();
    assert_eq!(store.list_snapshots("c").await.unwrap().len(), 1);
    assert_eq!(
        store.stats().await.unwrap().schema_version,
        bridge_store::SCHEMA_VERSION
    );
}
