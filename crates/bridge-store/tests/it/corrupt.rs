//! Damaged and foreign files in place of a store: each is refused with a
//! clear error that says what to do, nothing panics, and what cannot be
//! a store is left exactly as it was (never re-created).

use std::path::{Path, PathBuf};

use bridge_store::{Batch, Cursor, Record, SinkItemKey, Snapshot, Store, StoreError};

use crate::temp_store_path;

/// A store with enough content to span many pages, closed cleanly.
async fn populated(path: &Path) {
    let store = Store::open(path).await.unwrap();
    let mut batch = Batch::new();
    for i in 0..1500 {
        let key = format!("uid{i:05}_0");
        batch.put_snapshot(
            "cal-a",
            key.clone(),
            Snapshot {
                event_json: format!(
                    "{{\"event_id\":\"{key}\",\"summary\":\"{}\"}}",
                    "x".repeat(300)
                ),
                content_hash: format!("v1:{i:064x}"),
                updated_at: 1_700_000_000 + i,
            },
        );
        batch.put_record(
            SinkItemKey::new("ics:out", "cal-a", key),
            Record {
                remote_id: format!("file#{i}"),
                etag: None,
                applied_hash: format!("v1:{i:064x}"),
                applied_at: 1_700_000_000,
                sequence: 0,
                tombstone: false,
            },
        );
    }
    batch.put_cursor(
        "cal-a",
        Cursor {
            sync_token: Some("token".into()),
            obtained_at: 1_700_000_000,
            last_full_sync: Some(1_700_000_000),
            last_sync: Some(1_700_000_000),
        },
    );
    store.apply_batch(batch).await.unwrap();
    store.put_token("feishu", "{\"t\":1}").await.unwrap();
    store
        .mark_dirty("cal-a", "hint", 1_700_000_000)
        .await
        .unwrap();
}

/// Reads everything a command may read.
async fn read_all(store: &Store) -> Result<(), StoreError> {
    store.stats().await?;
    for (cal, _) in store.list_cursors().await? {
        store.list_snapshots(&cal).await?;
        store.list_records("ics:out", &cal).await?;
    }
    store.dirty().await?;
    store.due_failures(i64::MAX).await?;
    store.get_token("feishu").await?;
    Ok(())
}

/// Simple deterministic bytes (no randomness in tests).
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

enum Kind {
    ZeroBytes,
    Truncated,
    RandomBytes,
    ZeroedHeader,
    FlippedDataPage,
    Text,
    Sqlite,
    Directory,
}

const KINDS: [(&str, Kind); 8] = [
    ("0-byte file", Kind::ZeroBytes),
    ("truncated", Kind::Truncated),
    ("random bytes", Kind::RandomBytes),
    ("zeroed header", Kind::ZeroedHeader),
    ("flipped bits in data pages", Kind::FlippedDataPage),
    ("a text file", Kind::Text),
    ("an SQLite file", Kind::Sqlite),
    ("a directory", Kind::Directory),
];

fn damage(path: &Path, good: &[u8], kind: &Kind) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = match kind {
        Kind::ZeroBytes => Vec::new(),
        Kind::Truncated => good[..good.len() / 2].to_vec(),
        Kind::RandomBytes => noise(good.len(), 0x9e37_79b9_7f4a_7c15),
        Kind::ZeroedHeader => {
            let mut b = good.to_vec();
            b[..512].fill(0);
            b
        }
        Kind::FlippedDataPage => {
            // Every 4 KiB page from the second quarter of the file on gets
            // a few bits flipped in its middle: B-tree pages of the tables.
            let mut b = good.to_vec();
            let mut at = b.len() / 4;
            while at + 4096 < b.len() {
                for j in [1024, 2048, 3000] {
                    b[at + j] ^= 0x5a;
                }
                at += 4096;
            }
            b
        }
        Kind::Text => b"[store]\npath = \"state/bridge.redb\"\n# not a database at all\n".to_vec(),
        Kind::Sqlite => {
            let mut b = b"SQLite format 3\0".to_vec();
            b.extend_from_slice(&[0x10, 0x00, 0x01, 0x01, 0x00, 0x40, 0x20, 0x20]);
            b.resize(8192, 0);
            b
        }
        Kind::Directory => {
            std::fs::create_dir_all(path.join("inside")).unwrap();
            std::fs::write(path.join("inside/file"), "kept").unwrap();
            return;
        }
    };
    std::fs::write(path, bytes).unwrap();
}

fn snapshot_of(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn assert_clear(kind: &str, e: &StoreError) {
    let msg = e.to_string();
    assert!(e.is_damaged(), "{kind}: not reported as damage: {e:?}");
    assert!(!e.is_transient(), "{kind}: {e:?}");
    assert!(
        msg.contains("restore") && msg.contains("feishu-bridge reconcile"),
        "{kind}: no way out in {msg:?}"
    );
    assert!(!msg.contains('\n'), "{kind}: one line: {msg:?}");
}

/// Opening, reading and checking a damaged file ends in a clear error for
/// every kind of damage; nothing panics (a panic in the blocking pool
/// would surface as `StoreError::Task`).
#[tokio::test]
async fn every_kind_of_damage_is_reported_with_what_to_do() {
    let (_dir, good_path) = temp_store_path();
    populated(&good_path).await;
    let good = std::fs::read(&good_path).unwrap();
    assert!(good.len() > 64 * 1024, "{} bytes", good.len());

    for (i, (name, kind)) in KINDS.iter().enumerate() {
        let path: PathBuf = good_path.with_file_name(format!("damaged-{i}.redb"));
        damage(&path, &good, kind);
        let before = snapshot_of(&path);
        let err = match Store::open_refusing_empty(&path).await {
            Err(e) => e,
            Ok(store) => match read_all(&store).await {
                Err(e) => e,
                Ok(()) => match store.check_integrity().await {
                    Err(e) => e,
                    Ok(_) => panic!("{name}: the damage went unnoticed"),
                },
            },
        };
        assert_clear(name, &err);
        // A file that is no store at all is left exactly as it was.
        if matches!(
            kind,
            Kind::ZeroBytes | Kind::Text | Kind::Sqlite | Kind::RandomBytes
        ) {
            assert_eq!(snapshot_of(&path), before, "{name}: the file was changed");
        }
        if matches!(kind, Kind::Directory) {
            assert!(path.join("inside/file").is_file());
        }
    }
}

#[tokio::test]
async fn the_integrity_check_passes_a_sound_store() {
    let (_dir, path) = temp_store_path();
    populated(&path).await;
    let store = Store::open_refusing_empty(&path).await.unwrap();
    let store = store.check_integrity().await.unwrap();
    assert_eq!(store.count_snapshots("cal-a").await.unwrap(), 1500);
    // Another handle alive: refused, not blocked.
    let clone = store.clone();
    let err = store.check_integrity().await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    drop(clone);
}

#[tokio::test]
async fn open_refusing_empty_still_creates_a_missing_store() {
    let (_dir, path) = temp_store_path();
    let store = Store::open_refusing_empty(&path).await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().schema_version,
        bridge_store::SCHEMA_VERSION
    );
    drop(store);
    // And reopens it.
    Store::open_refusing_empty(&path).await.unwrap();
}
