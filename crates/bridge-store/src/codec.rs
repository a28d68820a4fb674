//! Value encoding.
//!
//! Every value is `format_version:u8` followed by the body. Format version
//! 1 (the only one so far) is a UTF-8 JSON object whose field names and
//! types are fixed by the private `*V1` structs below, for example
//!
//! ```text
//! cursor   01 {"sync_token":"st","obtained_at":5,"last_full_sync":null,"last_sync":null}
//! snapshot 01 {"event_json":"{...}","content_hash":"v1:ab..","updated_at":5}
//! record   01 {"remote_id":"r","etag":null,"applied_hash":"v1:..","applied_at":5,"sequence":0,"tombstone":false}
//! dirty    01 {"since":5,"last_hint_at":7,"hints":2,"reason":"webhook"}
//! seen     01 {"seen_at":5,"expires_at":28805}
//! failure  01 {"attempts":1,"next_retry_at":65,"last_error":"..","first_failed_at":5}
//! token    01 <the token JSON text, verbatim>
//! ```
//!
//! Every field is always written (options as `null`); reading refuses
//! unknown fields and missing non-optional ones. The structs are frozen: changing one means a new
//! format version byte for that value type, a decoder that accepts both, and
//! a schema migration if old values must be rewritten. A value whose
//! version byte is unknown is reported as `StoreError::Corrupt`, never
//! guessed at. The domain types in `model` carry no serde derives, so a
//! change to them cannot silently change what is on disk.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::{Cursor, DirtyEntry, Failure, MAX_ERROR_LEN, Record, Snapshot};
use crate::redact::redact;

/// The value format written today.
pub(crate) const FORMAT_V1: u8 = 1;

/// A value with a stored form.
pub(crate) trait Codec: Sized {
    /// What the value is, for error messages.
    const WHAT: &'static str;
    fn encode(&self) -> Vec<u8>;
    /// `key` is the table key the value was read under (some values take
    /// part of their content from it).
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError>;
}

fn corrupt(what: &'static str, key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what,
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn body<'b>(what: &'static str, key: &str, bytes: &'b [u8]) -> Result<&'b [u8], StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => Ok(body),
        Some((v, _)) => Err(corrupt(
            what,
            key,
            format!("unknown value format version {v} (this feishu-bridge writes {FORMAT_V1})"),
        )),
        None => Err(corrupt(what, key, "empty value")),
    }
}

fn to_v1<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_V1);
    // Invariant: the V1 structs hold only strings, integers, booleans and
    // options of those; serializing them into a Vec cannot fail.
    serde_json::to_writer(&mut out, value).expect("V1 value structs always serialize");
    out
}

fn from_v1<T: DeserializeOwned>(
    what: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(body(what, key, bytes)?).map_err(|e| corrupt(what, key, e.to_string()))
}

fn owned(s: Cow<'_, str>) -> String {
    s.into_owned()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorV1<'a> {
    sync_token: Option<Cow<'a, str>>,
    obtained_at: i64,
    last_full_sync: Option<i64>,
    last_sync: Option<i64>,
}

impl Codec for Cursor {
    const WHAT: &'static str = "cursor";

    fn encode(&self) -> Vec<u8> {
        to_v1(&CursorV1 {
            sync_token: self.sync_token.as_deref().map(Cow::Borrowed),
            obtained_at: self.obtained_at,
            last_full_sync: self.last_full_sync,
            last_sync: self.last_sync,
        })
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let v: CursorV1<'static> = from_v1(Self::WHAT, key, bytes)?;
        Ok(Cursor {
            sync_token: v.sync_token.map(owned),
            obtained_at: v.obtained_at,
            last_full_sync: v.last_full_sync,
            last_sync: v.last_sync,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotV1<'a> {
    event_json: Cow<'a, str>,
    content_hash: Cow<'a, str>,
    updated_at: i64,
}

impl Codec for Snapshot {
    const WHAT: &'static str = "snapshot";

    fn encode(&self) -> Vec<u8> {
        to_v1(&SnapshotV1 {
            event_json: Cow::Borrowed(&self.event_json),
            content_hash: Cow::Borrowed(&self.content_hash),
            updated_at: self.updated_at,
        })
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let v: SnapshotV1<'static> = from_v1(Self::WHAT, key, bytes)?;
        Ok(Snapshot {
            event_json: owned(v.event_json),
            content_hash: owned(v.content_hash),
            updated_at: v.updated_at,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordV1<'a> {
    remote_id: Cow<'a, str>,
    etag: Option<Cow<'a, str>>,
    applied_hash: Cow<'a, str>,
    applied_at: i64,
    sequence: u32,
    tombstone: bool,
}

impl Codec for Record {
    const WHAT: &'static str = "record";

    fn encode(&self) -> Vec<u8> {
        to_v1(&RecordV1 {
            remote_id: Cow::Borrowed(&self.remote_id),
            etag: self.etag.as_deref().map(Cow::Borrowed),
            applied_hash: Cow::Borrowed(&self.applied_hash),
            applied_at: self.applied_at,
            sequence: self.sequence,
            tombstone: self.tombstone,
        })
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let v: RecordV1<'static> = from_v1(Self::WHAT, key, bytes)?;
        Ok(Record {
            remote_id: owned(v.remote_id),
            etag: v.etag.map(owned),
            applied_hash: owned(v.applied_hash),
            applied_at: v.applied_at,
            sequence: v.sequence,
            tombstone: v.tombstone,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirtyV1<'a> {
    since: i64,
    last_hint_at: i64,
    hints: u64,
    reason: Cow<'a, str>,
}

/// The calendar id is the table key, so it is not stored in the value.
impl Codec for DirtyEntry {
    const WHAT: &'static str = "dirty entry";

    fn encode(&self) -> Vec<u8> {
        to_v1(&DirtyV1 {
            since: self.since,
            last_hint_at: self.last_hint_at,
            hints: self.hints,
            reason: Cow::Borrowed(&self.reason),
        })
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let v: DirtyV1<'static> = from_v1(Self::WHAT, key, bytes)?;
        Ok(DirtyEntry {
            calendar_id: key.to_owned(),
            since: v.since,
            last_hint_at: v.last_hint_at,
            hints: v.hints,
            reason: owned(v.reason),
        })
    }
}

/// A delivery dedupe entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Seen {
    pub(crate) seen_at: i64,
    pub(crate) expires_at: i64,
}

impl Codec for Seen {
    const WHAT: &'static str = "dedupe entry";

    fn encode(&self) -> Vec<u8> {
        to_v1(self)
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        from_v1(Self::WHAT, key, bytes)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailureV1<'a> {
    attempts: u32,
    next_retry_at: i64,
    last_error: Cow<'a, str>,
    first_failed_at: i64,
}

/// Redacts `error` and bounds it to [`MAX_ERROR_LEN`] bytes.
pub(crate) fn clean_error(error: &str) -> String {
    let mut s = redact(error);
    if s.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN - '…'.len_utf8();
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// `last_error` is redacted on the way in, whatever path the failure took.
impl Codec for Failure {
    const WHAT: &'static str = "failure";

    fn encode(&self) -> Vec<u8> {
        to_v1(&FailureV1 {
            attempts: self.attempts,
            next_retry_at: self.next_retry_at,
            last_error: Cow::Owned(clean_error(&self.last_error)),
            first_failed_at: self.first_failed_at,
        })
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let v: FailureV1<'static> = from_v1(Self::WHAT, key, bytes)?;
        Ok(Failure {
            attempts: v.attempts,
            next_retry_at: v.next_retry_at,
            last_error: owned(v.last_error),
            first_failed_at: v.first_failed_at,
        })
    }
}

/// A token: opaque JSON text, stored verbatim after the version byte.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenJson(pub(crate) String);

impl std::fmt::Debug for TokenJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenJson(<redacted>)")
    }
}

impl Codec for TokenJson {
    const WHAT: &'static str = "token";

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.0.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(self.0.as_bytes());
        out
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let body = body(Self::WHAT, key, bytes)?;
        String::from_utf8(body.to_vec())
            .map(TokenJson)
            .map_err(|_| corrupt(Self::WHAT, key, "not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Codec + PartialEq + std::fmt::Debug>(v: &T, key: &str) {
        let bytes = v.encode();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(&T::decode(key, &bytes).unwrap(), v);
    }

    #[test]
    fn every_value_round_trips() {
        round_trip(
            &Cursor {
                sync_token: Some("st".into()),
                obtained_at: 5,
                last_full_sync: None,
                last_sync: Some(7),
            },
            "c",
        );
        round_trip(
            &Snapshot {
                event_json: r#"{"event_id":"u_0","summary":"\"q\" ü"}"#.into(),
                content_hash: "v1:00ff".into(),
                updated_at: -3,
            },
            "c\u{1f}u_0",
        );
        round_trip(
            &Record {
                remote_id: "r".into(),
                etag: Some("\"3\"".into()),
                applied_hash: "v1:aa".into(),
                applied_at: 1,
                sequence: u32::MAX,
                tombstone: true,
            },
            "s\u{1f}c\u{1f}u_0",
        );
        round_trip(
            &DirtyEntry {
                calendar_id: "cal".into(),
                since: 1,
                last_hint_at: 2,
                hints: 3,
                reason: "webhook".into(),
            },
            "cal",
        );
        round_trip(
            &Seen {
                seen_at: 1,
                expires_at: 2,
            },
            "k",
        );
        round_trip(
            &Failure {
                attempts: 2,
                next_retry_at: 9,
                last_error: "HTTP 500".into(),
                first_failed_at: 1,
            },
            "s\u{1f}c\u{1f}u_0",
        );
        round_trip(&TokenJson(r#"{"a":1}"#.into()), "feishu_user");
    }

    /// Pins the bytes of format version 1: if this fails, the on-disk
    /// format changed and needs a new version byte.
    #[test]
    fn format_v1_is_pinned() {
        let c = Cursor {
            sync_token: Some("st".into()),
            obtained_at: 5,
            last_full_sync: None,
            last_sync: Some(7),
        };
        assert_eq!(
            c.encode(),
            b"\x01{\"sync_token\":\"st\",\"obtained_at\":5,\"last_full_sync\":null,\"last_sync\":7}"
        );
        let d = DirtyEntry {
            calendar_id: "cal".into(),
            since: 1,
            last_hint_at: 2,
            hints: 3,
            reason: "r".into(),
        };
        assert_eq!(
            d.encode(),
            b"\x01{\"since\":1,\"last_hint_at\":2,\"hints\":3,\"reason\":\"r\"}"
        );
    }

    #[test]
    fn unknown_versions_and_fields_are_corrupt_not_guessed() {
        let err = Cursor::decode("c", b"\x02{}").unwrap_err();
        assert!(
            err.to_string().contains("unknown value format version 2"),
            "{err}"
        );
        assert!(Cursor::decode("c", b"").is_err());
        let extra = b"\x01{\"sync_token\":null,\"obtained_at\":5,\"last_full_sync\":null,\"last_sync\":null,\"x\":1}";
        assert!(matches!(
            Cursor::decode("c", extra),
            Err(StoreError::Corrupt { what: "cursor", .. })
        ));
        // A missing required field is an error; an absent option reads as null.
        let missing = b"\x01{\"sync_token\":null,\"last_sync\":null}";
        assert!(Cursor::decode("c", missing).is_err());
    }

    #[test]
    fn failures_are_redacted_and_bounded_on_encode() {
        let f = Failure {
            attempts: 1,
            next_retry_at: 0,
            last_error: format!(
                "Authorization: Bearer t-abcdefghijklmnopqrstuvwx\n{}",
                "é".repeat(3000)
            ),
            first_failed_at: 0,
        };
        let back = Failure::decode("k", &f.encode()).unwrap();
        assert!(!back.last_error.contains("t-abcdefghijklmnopqrstuvwx"));
        assert!(back.last_error.len() <= MAX_ERROR_LEN);
        assert!(back.last_error.ends_with('…'));
    }
}
