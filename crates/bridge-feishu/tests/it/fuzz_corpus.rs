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

// Crashes found with the webhook harness, each reduced to its cause.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use bridge_feishu::webhook::{
    self, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookConfig, WebhookError,
};

fn v2_event(create_time: &str) -> Vec<u8> {
    format!(
        r#"{{"schema":"2.0","header":{{"event_id":"e1","event_type":"calendar.calendar.event.changed_v4","create_time":{create_time}}},"event":{{"calendar_id":"cal_1"}}}}"#
    )
    .into_bytes()
}

/// A correctly signed request whose `X-Lark-Request-Timestamp` is
/// `i64::MIN` overflowed in `abs()` (the unit guess) and in the skew.
#[test]
fn signed_request_with_an_extreme_timestamp_is_stale_not_a_panic() {
    let key = "k";
    let config = WebhookConfig {
        encrypt_key: Some(key.into()),
        ..WebhookConfig::default()
    };
    let body = v2_event(&format!("\"{}\"", fuzzing::NOW_S * 1000));
    let now = UNIX_EPOCH + Duration::from_secs(fuzzing::NOW_S);
    for ts in [i64::MIN.to_string(), i64::MAX.to_string()] {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_TIMESTAMP, HeaderValue::from_str(&ts).unwrap());
        headers.insert(HEADER_NONCE, HeaderValue::from_static("n"));
        let sig = webhook::signature(&ts, "n", key, &body);
        headers.insert(HEADER_SIGNATURE, HeaderValue::from_str(&sig).unwrap());
        let err = webhook::process(&config, &headers, &body, now).unwrap_err();
        assert!(matches!(err, WebhookError::Stale { .. }), "{ts}: {err}");
        assert_eq!(err.status(), 401);
    }
}

/// An event whose `create_time` saturates to `i64::MIN` ms (`-1e300`)
/// overflowed the age computation.
#[test]
fn event_with_an_extreme_create_time_is_stale_not_a_panic() {
    let now = UNIX_EPOCH + Duration::from_secs(fuzzing::NOW_S);
    for create_time in ["\"-1e300\"", "-1e300", "1e300", "\"-9223372036854775808\""] {
        let err = webhook::process(
            &WebhookConfig::default(),
            &HeaderMap::new(),
            &v2_event(create_time),
            now,
        )
        .unwrap_err();
        assert!(
            matches!(err, WebhookError::Stale { .. }),
            "{create_time}: {err}"
        );
    }
}

/// `ws_frames`: a pong whose ClientConfig says `PingInterval: i64::MAX`
/// made the session's idle deadline (`ping * 2 + 10 s`) overflow, and
/// `now + ping` was not representable. The harness asserts that the ping
/// interval stays at least 1 s and that every deadline is representable.
#[test]
fn pong_with_an_extreme_ping_interval() {
    // op 2 (built frame), method control, type pong, no split headers,
    // a ClientConfig payload whose four numbers are i64::MAX, ids 0.
    let input = [2, 0, 1, 0, 1, 3, 3, 3, 3, 0, 0];
    fuzzing::ws_frames(&input);
    // The same pong twice, then a ClientConfig of small numbers.
    let mut twice = input.repeat(2);
    twice.extend_from_slice(&[2, 0, 1, 0, 1, 0, 5, 1, 0, 0, 0]);
    fuzzing::ws_frames(&twice);
}
