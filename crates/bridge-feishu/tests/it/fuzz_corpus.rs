//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`, minimized
//! with `cargo fuzz cmin`) through the same harnesses the fuzzers run, on
//! stable. The webhook harness asserts that every refusal is a typed 4xx
//! `WebhookError` (garbage is `Malformed`, a wrong signature `BadSignature`)
//! and that accepted events are signed, carry the token and are fresh; the
//! long-connection harness asserts frame re-encoding, sane server timings and
//! that the reassembler stays within its bounds and agrees with a model.

use std::path::PathBuf;

use bridge_feishu::fuzzing;

/// Feeds every file of `fuzz/corpus/<target>` to `harness`; returns how many.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| harness(&data));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
    }
    files.len()
}

#[test]
fn webhook_corpus() {
    assert!(replay("webhook", fuzzing::webhook) >= 10);
}

#[test]
fn ws_frames_corpus() {
    assert!(replay("ws_frames", fuzzing::ws_frames) >= 10);
}
