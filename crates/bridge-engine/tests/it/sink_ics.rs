//! The ICS projection through the real engine: a failed file write is one
//! failure for the file and leaves no temporary file behind (issue #10.13).

use std::path::Path;
use std::sync::Arc;

use bridge_core::Privacy;
use bridge_engine::{Engine, EngineConfig, Sink};
use bridge_sinks::ics::{IcsSink, file_name};
use bridge_store::Store;

use crate::static_source::{StaticSource, calendar as cal};

const BASE: i64 = 1_790_000_000;

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

async fn engine(dir: &Path) -> Engine {
    let store = Store::in_memory().await.unwrap();
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(60, 3, BASE)));
    let sink: Arc<dyn Sink> = Arc::new(IcsSink::new(dir, Privacy::Full));
    Engine::new(source, vec![sink], store, EngineConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_one_failure_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // The file's place is taken by a directory: rendering works, the final
    // rename fails.
    std::fs::create_dir(dir.path().join(file_name(&cal().id))).unwrap();
    let engine = engine(dir.path()).await;
    let r = engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(sr.failed, 1, "one failure for the file: {:?}", sr.errors);
    assert_eq!(sr.errors.len(), 1, "{:?}", sr.errors);
    assert!(sr.errors[0].contains("cannot write"), "{:?}", sr.errors);
    assert_eq!(sr.created, 0);
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // Fixed: the next pass after the retry time writes the file.
    std::fs::remove_dir(dir.path().join(file_name(&cal().id))).unwrap();
    let r = engine.reconcile(None, false, BASE + 86_400).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(sr.failed, 0, "{:?}", sr.errors);
    assert!(sr.created > 0);
    assert!(dir.path().join(file_name(&cal().id)).is_file());
    assert!(leftovers(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_only_when_changed_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    engine.reconcile(None, false, BASE).await.unwrap();
    let path = dir.path().join(file_name(&cal().id));
    let first = std::fs::metadata(&path).unwrap().modified().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Nothing changed: the file is not replaced (same inode contents and mtime).
    engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), first);
    assert!(leftovers(dir.path()).is_empty());
}
