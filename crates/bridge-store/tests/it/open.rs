use std::process::Command;

use bridge_store::{Snapshot, Store, StoreError};

use crate::temp_store_path;

fn snap() -> Snapshot {
    Snapshot {
        event_json: "{}".into(),
        content_hash: "v1:00".into(),
        updated_at: 1,
    }
}

fn assert_locked(err: &StoreError, path: &std::path::Path) {
    let StoreError::Locked { path: p } = err else {
        panic!("expected Locked, got {err:?}");
    };
    assert_eq!(p, path);
    let msg = err.to_string();
    assert!(msg.contains("another feishu-bridge process"), "{msg}");
    assert!(msg.contains("daemon"), "{msg}");
    assert!(msg.contains("admin endpoint"), "{msg}");
    assert!(msg.contains("stop it"), "{msg}");
}

#[tokio::test]
async fn reopening_after_drop_keeps_the_data() {
    let (_dir, path) = temp_store_path();
    let store = Store::open(&path).await.unwrap();
    store.put_snapshot("c", "u_0", snap()).await.unwrap();
    store.mark_dirty("c", "webhook", 5).await.unwrap();
    store.put_token("t", "{}").await.unwrap();
    let clone = store.clone();
    drop(store);
    // A clone keeps the database open.
    assert_locked(&Store::open(&path).await.unwrap_err(), &path);
    drop(clone);

    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.get_snapshot("c", "u_0").await.unwrap(), Some(snap()));
    assert_eq!(store.dirty().await.unwrap().len(), 1);
    assert_eq!(store.get_token("t").await.unwrap().as_deref(), Some("{}"));
}

#[tokio::test]
async fn a_second_open_in_the_same_process_is_locked() {
    let (_dir, path) = temp_store_path();
    let first = Store::open(&path).await.unwrap();
    assert_locked(&Store::open(&path).await.unwrap_err(), &path);
    // Through another spelling of the same path, too.
    let other = path.parent().unwrap().join(".").join("bridge.redb");
    assert_locked(&Store::open(&other).await.unwrap_err(), &other);
    // The refused opens changed nothing: the first store still works.
    first.put_snapshot("c", "u_0", snap()).await.unwrap();
    drop(first);
    let again = Store::open(&path).await.unwrap();
    assert_eq!(again.count_snapshots("c").await.unwrap(), 1);
}

/// The parent holds the store; the same test binary, started again as a
/// child with `STORE_LOCK_CHILD` set, must be refused with `Locked`.
#[tokio::test]
async fn a_second_process_is_locked() {
    if let Some(path) = std::env::var_os("STORE_LOCK_CHILD") {
        let path = std::path::PathBuf::from(path);
        assert_locked(&Store::open(&path).await.unwrap_err(), &path);
        return;
    }
    let (_dir, path) = temp_store_path();
    let _held = Store::open(&path).await.unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["open::a_second_process_is_locked", "--exact", "--nocapture"])
        .env("STORE_LOCK_CHILD", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let (_dir, path) = temp_store_path();
    let store = Store::open(&path).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    drop(store);

    // An existing file readable by others is tightened before use.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&path).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    drop(store);

    // So is an empty file someone created in advance.
    let fresh = path.with_file_name("precreated.redb");
    std::fs::write(&fresh, b"").unwrap();
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o666)).unwrap();
    let store = Store::open(&fresh).await.unwrap();
    assert_eq!(mode(&fresh), 0o600);
    assert_eq!(
        store.stats().await.unwrap().schema_version,
        bridge_store::SCHEMA_VERSION
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let (_dir, path) = temp_store_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        b"not a redb file, just some text that is long enough to matter",
    )
    .unwrap();
    let err = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotAStore { reason, .. } if reason.contains("Not a redb database")),
        "{err:?}"
    );
    assert!(!err.is_transient());
    // Nothing was overwritten.
    assert!(
        std::fs::read(&path)
            .unwrap()
            .starts_with(b"not a redb file")
    );
}

/// redb's own file lock, underneath the store's in-process check: a raw
/// open of a file the store holds is refused too.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn redb_itself_refuses_a_second_handle() {
    let (_dir, path) = temp_store_path();
    let _store = Store::open(&path).await.unwrap();
    assert!(matches!(
        redb::Database::open(&path),
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
    ));
}
