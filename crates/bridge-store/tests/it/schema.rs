//! Schema versions. These tests write databases with redb directly, the
//! way an older (or newer) feishu-bridge would have, byte for byte.

use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};

use bridge_store::{Cursor, Record, SCHEMA_VERSION, SinkItemKey, Snapshot, Store, StoreError};

use crate::temp_store_path;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BYTES_CURSOR: TableDefinition<&str, &[u8]> = TableDefinition::new("calendar_to_cursor");
const BYTES_SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("event_to_snapshot");
const BYTES_RECORD: TableDefinition<&str, &[u8]> = TableDefinition::new("sink_event_to_record");
const V1_DIRTY: TableDefinition<&str, i64> = TableDefinition::new("calendar_to_dirty");
const V1_SEEN: TableDefinition<&str, i64> = TableDefinition::new("event_id_to_seen");

const H8: i64 = 8 * 3600;

/// Writes a schema-1 database as the first layout stored it.
fn write_v1(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 1)
            .unwrap();
        txn.open_table(BYTES_CURSOR)
            .unwrap()
            .insert(
                "cal-a",
                &b"\x01{\"sync_token\":\"st-1\",\"obtained_at\":500,\"last_full_sync\":400,\"last_sync\":null}"[..],
            )
            .unwrap();
        txn.open_table(BYTES_SNAPSHOT)
            .unwrap()
            .insert(
                "cal-a\u{1f}u_0",
                &b"\x01{\"event_json\":\"{\\\"event_id\\\":\\\"u_0\\\"}\",\"content_hash\":\"v1:ab\",\"updated_at\":450}"[..],
            )
            .unwrap();
        txn.open_table(BYTES_RECORD)
            .unwrap()
            .insert(
                "google\u{1f}cal-a\u{1f}u_0",
                &b"\x01{\"remote_id\":\"g1\",\"etag\":\"\\\"e1\\\"\",\"applied_hash\":\"v1:ab\",\"applied_at\":460,\"sequence\":2,\"tombstone\":false}"[..],
            )
            .unwrap();
        let mut dirty = txn.open_table(V1_DIRTY).unwrap();
        dirty.insert("cal-a", 100).unwrap();
        dirty.insert("cal-b", 50).unwrap();
        txn.open_table(V1_SEEN)
            .unwrap()
            .insert("ev-1", 1000)
            .unwrap();
    }
    txn.commit().unwrap();
}

fn table_names(path: &std::path::Path) -> Vec<String> {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect()
}

fn meta_version(path: &std::path::Path) -> u64 {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    txn.open_table(META)
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap()
        .value()
}

#[tokio::test]
async fn a_hand_made_schema_1_database_is_migrated() {
    let (_dir, path) = temp_store_path();
    write_v1(&path);

    let store = Store::open(&path).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.schema_version, SCHEMA_VERSION);
    assert_eq!(
        (
            stats.cursors,
            stats.snapshots,
            stats.records,
            stats.dirty,
            stats.dedupe,
            stats.failures,
            stats.tokens
        ),
        (1, 1, 1, 2, 1, 0, 0)
    );

    // Unchanged tables read as before.
    assert_eq!(
        store.get_cursor("cal-a").await.unwrap(),
        Some(Cursor {
            sync_token: Some("st-1".into()),
            obtained_at: 500,
            last_full_sync: Some(400),
            last_sync: None,
        })
    );
    assert_eq!(
        store.get_snapshot("cal-a", "u_0").await.unwrap(),
        Some(Snapshot {
            event_json: r#"{"event_id":"u_0"}"#.into(),
            content_hash: "v1:ab".into(),
            updated_at: 450,
        })
    );
    assert_eq!(
        store
            .get_record(&SinkItemKey::new("google", "cal-a", "u_0"))
            .await
            .unwrap(),
        Some(Record {
            remote_id: "g1".into(),
            etag: Some("\"e1\"".into()),
            applied_hash: "v1:ab".into(),
            applied_at: 460,
            sequence: 2,
            tombstone: false,
        })
    );

    // Rewritten tables: dirty times became entries, receive times got an expiry.
    let dirty = store.dirty().await.unwrap();
    let got: Vec<(&str, i64, i64, u64)> = dirty
        .iter()
        .map(|e| (e.calendar_id.as_str(), e.since, e.last_hint_at, e.hints))
        .collect();
    assert_eq!(got, [("cal-b", 50, 50, 1), ("cal-a", 100, 100, 1)]);
    assert!(store.clear_dirty("cal-b", 50).await.unwrap());
    let ttl = bridge_store::DEFAULT_DEDUPE_TTL;
    assert!(
        store
            .seen_or_insert("ev-1", 1000 + H8 - 1, ttl)
            .await
            .unwrap()
    );
    assert_eq!(store.purge_expired(1000 + H8).await.unwrap(), 1);

    // New tables are usable.
    store.put_token("feishu_user", "{}").await.unwrap();
    drop(store);

    let names = table_names(&path);
    assert!(!names.iter().any(|n| n == "event_id_to_seen"), "{names:?}");
    for t in [
        "dedupe_key_to_seen",
        "sink_event_to_failure",
        "name_to_token",
    ] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }
    // Opening again is a no-op.
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.dirty().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_newer_schema_is_refused_without_writing() {
    let (_dir, path) = temp_store_path();
    let store = Store::open(&path).await.unwrap();
    store.mark_dirty("cal", "webhook", 1).await.unwrap();
    drop(store);
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();

    let err = Store::open(&path).await.unwrap_err();
    let StoreError::NewerSchema {
        found, supported, ..
    } = &err
    else {
        panic!("expected NewerSchema, got {err:?}");
    };
    assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
    let msg = err.to_string();
    assert!(
        msg.contains("upgrade feishu-bridge") && msg.contains("not modified"),
        "{msg}"
    );
    assert!(!err.is_transient());

    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the refused open wrote to the file"
    );
    assert_eq!(meta_version(&path), SCHEMA_VERSION + 1);
    // The refused open released the file.
    drop(Database::open(&path).unwrap());
}

#[tokio::test]
async fn a_foreign_redb_file_is_refused() {
    let (_dir, path) = temp_store_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("someone_else"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotAStore { reason, .. } if reason.contains("someone_else")),
        "{err:?}"
    );
    assert_eq!(table_names(&path), ["someone_else"]);
}
