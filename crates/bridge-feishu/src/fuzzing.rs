//! Fuzz harnesses: one plain function per target, shared by the cargo-fuzz
//! crate (`fuzz/`, nightly) and the stable corpus replay in `tests/it`.
//!
//! Each harness takes arbitrary bytes, drives the code under test and
//! asserts its invariants; a panic is a finding. Not part of the API.

use std::collections::HashMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode};

use crate::hint;
use crate::webhook::{
    self, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Outcome, WebhookConfig, WebhookError,
};
use crate::ws::frame::{Frame, Header, METHOD_CONTROL, METHOD_DATA, TYPE_EVENT, TYPE_PONG};
use crate::ws::reassembly::{MAX_PARTS, Reassembler, ReassemblyError};
use crate::ws::{ClientConfig, RawClientConfig};

/// The Encrypt Key and Verification Token of the fuzzed webhook.
pub const KEY: &str = "fuzz-encrypt-key";
pub const TOKEN: &str = "fuzz-verification-token";
/// "Now" of the fuzzed webhook: 2024-01-01T00:00:00Z.
pub const NOW_S: u64 = 1_704_067_200;

/// A reader of fuzz bytes that never fails: past the end it yields zeros.
struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (s, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        s
    }

    fn raw(&mut self) -> String {
        let n = usize::from(self.byte() % 32);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    fn u16(&mut self) -> usize {
        usize::from(u16::from_le_bytes([self.byte(), self.byte()]))
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}

fn request_timestamp(b: &mut Bytes<'_>) -> String {
    match b.byte() % 8 {
        0 => NOW_S.to_string(),
        1 => (NOW_S * 1000 + 123).to_string(),
        2 => (NOW_S - 3600).to_string(),
        3 => i64::MIN.to_string(),
        4 => i64::MAX.to_string(),
        5 => "-99999999999".to_owned(),
        6 => b.raw(),
        _ => (NOW_S + u64::from(b.byte())).to_string(),
    }
}

/// The webhook envelope: `process` over a body that the harness may encrypt
/// and sign correctly (so that parsing and the staleness checks are reached)
/// or not, under four configurations.
///
/// Byte 0 picks the configuration and what to do with the body, byte 1 the
/// request timestamp; the rest is the plaintext body.
///
/// Invariants: never a panic; every refusal is a typed [`WebhookError`] with a
/// 4xx status; a body that is not JSON is `Malformed`; with an Encrypt Key a
/// wrong signature is `BadSignature`; an accepted event with a configured
/// token carries that token; an accepted event is not stale.
pub fn webhook(data: &[u8]) {
    let mut b = Bytes { data };
    let mode = b.byte();
    let with_key = mode & 1 != 0;
    let with_token = mode & 2 != 0;
    let encrypt_body = mode & 4 != 0;
    let sign = (mode >> 3) & 3; // 0 none, 1 right, 2 wrong, 3 right but other headers missing
    let ts = request_timestamp(&mut b);
    let plaintext = b.rest();

    let config = WebhookConfig {
        encrypt_key: with_key.then(|| KEY.to_owned()),
        verification_token: with_token.then(|| TOKEN.to_owned()),
        ..WebhookConfig::default()
    };
    let body: Vec<u8> = if encrypt_body {
        let iv = [7u8; 16];
        let enc = webhook::encrypt_with_iv(KEY, &iv, plaintext);
        format!("{{\"encrypt\":\"{enc}\"}}").into_bytes()
    } else {
        plaintext.to_vec()
    };
    let mut headers = HeaderMap::new();
    let nonce = "fuzz-nonce";
    let mut sent = false; // all three signature headers went out
    if sign != 0
        && let Ok(ts_value) = HeaderValue::from_str(&ts)
    {
        // The webhook reads header values that are visible ASCII only.
        sent = sign != 3 && ts_value.to_str().is_ok();
        headers.insert(HEADER_TIMESTAMP, ts_value);
        if sign != 3 {
            headers.insert(HEADER_NONCE, HeaderValue::from_static(nonce));
        }
        let sig = if sign == 2 {
            webhook::signature(&ts, nonce, "another key", &body)
        } else {
            webhook::signature(&ts, nonce, KEY, &body)
        };
        headers.insert(
            HEADER_SIGNATURE,
            HeaderValue::from_str(&sig).expect("hex is a header value"),
        );
    }
    let now = UNIX_EPOCH + Duration::from_secs(NOW_S);

    let result = webhook::process(&config, &headers, &body, now);

    match &result {
        Err(e) => {
            let status = e.status();
            assert!(status.is_client_error(), "{e} answers {status}");
            assert_ne!(status, StatusCode::NOT_FOUND);
            // Parse errors may quote the payload, never the configuration.
            if !String::from_utf8_lossy(&body).contains(KEY)
                && !String::from_utf8_lossy(plaintext).contains(KEY)
            {
                assert!(!e.to_string().contains(KEY), "the key leaks into {e}");
            }
        }
        Ok(Outcome::Challenge(c)) => assert!(!c.trim().is_empty()),
        Ok(Outcome::Event(d)) => {
            assert!(!d.dedupe_key.trim().is_empty());
            assert!(!d.event_type.trim().is_empty());
            if with_token {
                assert_eq!(d.token.as_deref(), Some(TOKEN));
            }
            if with_key {
                assert!(sent && sign == 1, "an unsigned event was accepted");
            }
            if let Some(created) = d.create_time_ms {
                let now_ms = i64::try_from(NOW_S * 1000).expect("fits");
                let age = now_ms.saturating_sub(created);
                assert!(
                    (-5 * 60 * 1000..=8 * 3600 * 1000).contains(&age),
                    "age {age}"
                );
            }
            // Debug redacts the token (other fields may quote it; they are the sender's).
            if let Some(token) = d.token.as_deref().filter(|t| !t.is_empty()) {
                let without = hint::Delivery {
                    token: None,
                    ..d.clone()
                };
                if !format!("{without:?}").contains(token) {
                    assert!(!format!("{d:?}").contains(token), "Debug shows the token");
                }
            }
        }
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        if with_key && sent && sign == 2 {
            assert!(matches!(result, Err(WebhookError::BadSignature)));
        } else {
            assert!(
                matches!(result, Err(WebhookError::Malformed(_))),
                "{result:?}"
            );
        }
    }
    if with_key && sent && sign == 2 {
        assert!(matches!(result, Err(WebhookError::BadSignature)));
    }
    // The parser alone, on the plaintext, never panics either.
    let _ = hint::parse_event(plaintext);
}

/// The reassembler's byte budget under fuzzing: small, so that inputs reach it.
const FUZZ_BUDGET: usize = 2048;

/// What the reassembler should hold for one message (a model of it).
struct ModelMessage {
    parts: Vec<Option<Vec<u8>>>,
    expires: Instant,
}

const MESSAGE_IDS: &[&str] = &["m1", "m2", "m3", ""];
const NUMBERS: &[&str] = &["0", "1", "2", "3", "1024", "1025", "-1", " 2 ", "x", ""];

/// A frame built from fuzz bytes: data or control, with the split headers
/// drawn from small pools so that parts of one message meet.
fn built_frame(b: &mut Bytes<'_>) -> Frame {
    let pick =
        |b: &mut Bytes<'_>, from: &[&str]| from[usize::from(b.byte()) % from.len()].to_owned();
    let method = match b.byte() % 4 {
        0 => METHOD_CONTROL,
        3 => i32::from(b.byte()),
        _ => METHOD_DATA,
    };
    let mut headers = Vec::new();
    let kind = b.byte();
    if !kind.is_multiple_of(5) {
        let t = [TYPE_EVENT, TYPE_PONG, "card", "ping"][usize::from(kind) % 4];
        headers.push(Header::new("type", t));
    }
    let flags = b.byte();
    if flags & 1 != 0 {
        headers.push(Header::new("message_id", pick(b, MESSAGE_IDS)));
    }
    if flags & 2 != 0 {
        headers.push(Header::new("sum", pick(b, NUMBERS)));
    }
    if flags & 4 != 0 {
        headers.push(Header::new("seq", pick(b, NUMBERS)));
    }
    if flags & 8 != 0 {
        headers.push(Header::new(b.raw(), b.raw()));
    }
    let payload = match b.byte() % 4 {
        0 => None,
        1 => {
            // A ClientConfig as the server sends it, with numbers from the bytes.
            let mut n = || match b.byte() % 4 {
                0 => i64::from(b.byte()),
                1 => -1,
                2 => {
                    i64::from_le_bytes([b.byte(), b.byte(), b.byte(), b.byte(), 0, 0, 0, b.byte()])
                }
                _ => i64::MAX,
            };
            Some(
                format!(
                    r#"{{"PingInterval":{},"ReconnectCount":{},"ReconnectInterval":{},"ReconnectNonce":{}}}"#,
                    n(),
                    n(),
                    n(),
                    n()
                )
                .into_bytes(),
            )
        }
        _ => {
            let n = b.u16() % 512;
            Some(b.take(n).to_vec())
        }
    };
    Frame {
        seq_id: u64::from(b.byte()),
        log_id: u64::from(b.byte()),
        service: 1,
        method,
        headers,
        payload,
        ..Frame::default()
    }
}

/// Long-connection frames and reassembly. The input is a sequence of
/// operations: decode raw protobuf bytes as a frame, build a frame from
/// bytes, or let time pass. Every frame goes through what the session does
/// with it: pongs update the `ClientConfig`, data frames are reassembled and
/// complete events parsed.
///
/// Invariants: decoding never panics and a decoded frame re-encodes to an
/// equal frame; the ping interval stays at least 1 s and every deadline the
/// session derives from the `ClientConfig` is representable; the
/// reassembler refuses parts outside its bounds (`sum` above [`MAX_PARTS`],
/// `seq >= sum`, no message id, a part beyond its byte budget) and returns
/// exactly the concatenation a model of it predicts, and holds as many
/// incomplete messages and bytes as the model, never more than the budget.
pub fn ws_frames(data: &[u8]) {
    let mut b = Bytes { data };
    let ttl = Duration::from_secs(10);
    let t0 = Instant::now();
    let mut now = t0;
    let mut reassembler = Reassembler::with_budget(ttl, FUZZ_BUDGET);
    let mut model: HashMap<String, ModelMessage> = HashMap::new();
    let mut client_config = ClientConfig::default();

    for _ in 0..64 {
        if b.data.is_empty() {
            break;
        }
        let frame = match b.byte() % 4 {
            0 => {
                let n = b.u16();
                let raw = b.take(n);
                match Frame::from_bytes(raw) {
                    Ok(f) => f,
                    Err(_) => continue,
                }
            }
            1 => {
                now += Duration::from_millis(u64::from(b.byte()) * 100);
                continue;
            }
            _ => built_frame(&mut b),
        };
        assert_eq!(
            Frame::from_bytes(&frame.to_bytes()).as_ref(),
            Ok(&frame),
            "re-encoding changes the frame"
        );

        match frame.method {
            METHOD_CONTROL if frame.frame_type() == Some(TYPE_PONG) => {
                let Some(payload) = frame.payload.as_deref().filter(|p| !p.is_empty()) else {
                    continue;
                };
                if let Ok(raw) = serde_json::from_slice::<RawClientConfig>(payload) {
                    client_config.merge(&raw);
                }
                assert!(client_config.ping_interval >= Duration::from_secs(1));
                let idle = client_config.default_idle_timeout();
                let base = tokio::time::Instant::now();
                assert!(base.checked_add(client_config.ping_interval).is_some());
                assert!(base.checked_add(idle).is_some());
            }
            METHOD_DATA => {
                let (message_id, sum, seq) = frame.split_part();
                let part = frame.payload.clone().unwrap_or_default();
                let got = reassembler.push(message_id, sum, seq, part.clone(), now);
                let want = model_push(&mut model, message_id, sum, seq, part, now, ttl);
                assert_eq!(got, want, "message {message_id:?} sum {sum} seq {seq}");
                assert_eq!(reassembler.pending(), model.len());
                let held: usize = model
                    .values()
                    .flat_map(|m| m.parts.iter().flatten())
                    .map(Vec::len)
                    .sum();
                assert_eq!(reassembler.buffered(), held);
                assert!(held <= FUZZ_BUDGET);
                if let Ok(Some(payload)) = got
                    && frame.frame_type() == Some(TYPE_EVENT)
                {
                    let _ = hint::parse_event(&payload);
                }
            }
            _ => {}
        }
    }
}

fn model_push(
    model: &mut HashMap<String, ModelMessage>,
    message_id: &str,
    sum: usize,
    seq: usize,
    payload: Vec<u8>,
    now: Instant,
    ttl: Duration,
) -> Result<Option<Vec<u8>>, ReassemblyError> {
    model.retain(|_, m| m.expires > now);
    if sum <= 1 {
        return Ok(Some(payload));
    }
    if message_id.is_empty() {
        return Err(ReassemblyError::MissingMessageId);
    }
    if sum > MAX_PARTS {
        return Err(ReassemblyError::TooManyParts {
            message_id: message_id.to_owned(),
            sum,
        });
    }
    if seq >= sum {
        return Err(ReassemblyError::SeqOutOfRange {
            message_id: message_id.to_owned(),
            seq,
            sum,
        });
    }
    let m = model
        .entry(message_id.to_owned())
        .or_insert_with(|| ModelMessage {
            parts: vec![None; sum],
            expires: now + ttl,
        });
    if m.parts.len() != sum {
        m.parts = vec![None; sum];
    }
    let held: usize = model
        .values()
        .flat_map(|m| m.parts.iter().flatten())
        .map(Vec::len)
        .sum();
    let m = model.get_mut(message_id).expect("inserted above");
    let replaced = m.parts[seq].as_ref().map_or(0, Vec::len);
    if held - replaced + payload.len() > FUZZ_BUDGET {
        model.remove(message_id);
        return Err(ReassemblyError::BufferFull {
            message_id: message_id.to_owned(),
            seq,
            limit: FUZZ_BUDGET,
        });
    }
    m.parts[seq] = Some(payload);
    m.expires = now + ttl;
    if m.parts.iter().all(Option::is_some) {
        let m = model.remove(message_id).expect("present");
        return Ok(Some(m.parts.into_iter().flatten().flatten().collect()));
    }
    Ok(None)
}
