//! Deterministic Google event ids.
//!
//! A client-chosen id must use base32hex characters (`0-9a-v`) and be 5 to
//! 1024 characters long (sinks-api.md A.4). The bridge derives it from the
//! source identity: the first 20 bytes of SHA-256 over
//! `"<calendar_id>\u{1f}<uid>"`, base32hex-encoded (lowercase, 32 characters).
//! Instance ids of a series follow Google's own format:
//! `<masterId>_<YYYYMMDDTHHMMSSZ>` (original start in UTC) for timed series
//! and `<masterId>_<YYYYMMDD>` for all-day series.

use bridge_core::EventTime;
use bridge_core::model::{ical_date, ical_utc};
use sha2::{Digest, Sha256};

/// Bytes of the digest kept: 160 bits, exactly 32 base32hex characters.
const ID_BYTES: usize = 20;
/// Length of every id [`event_id`] returns.
pub const EVENT_ID_LEN: usize = ID_BYTES * 8 / 5;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// Lowercase, unpadded base32hex (RFC 4648 §7).
fn base32hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The Google id of a Feishu series or single event (`uid`) in a source calendar.
/// A standalone exception (its master absent) passes its Feishu event id
/// `<uid>_<original_time>` as `uid`.
pub fn event_id(calendar_id: &str, uid: &str) -> String {
    let mut h = Sha256::new();
    h.update(calendar_id.as_bytes());
    h.update([0x1f]);
    h.update(uid.as_bytes());
    let digest = h.finalize();
    base32hex(&digest[..ID_BYTES])
}

/// The id Google gives the occurrence of a series whose master has id
/// `master_id` and start `master_start`, originally starting at
/// `original_time` (Unix seconds). All-day series use the same date rule as
/// [`EventTime::same_form`] (UTC date of `original_time + 12h`).
pub fn instance_id(master_id: &str, master_start: &EventTime, original_time: i64) -> String {
    let suffix = match master_start.same_form(original_time) {
        EventTime::Date(d) => ical_date(d),
        EventTime::Utc(at) | EventTime::Zoned { at, .. } => ical_utc(at),
    };
    format!("{master_id}_{suffix}")
}

/// Whether `id` is acceptable as a client-chosen Google event id.
pub fn is_valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'v'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use proptest::prelude::*;

    #[test]
    fn base32hex_rfc4648_vectors() {
        // RFC 4648 §10, lowercased, without padding.
        for (input, want) in [
            ("", ""),
            ("f", "co"),
            ("fo", "cpng"),
            ("foo", "cpnmu"),
            ("foob", "cpnmuog"),
            ("fooba", "cpnmuoj1"),
            ("foobar", "cpnmuoj1e8"),
        ] {
            assert_eq!(base32hex(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn event_ids_are_stable_and_valid() {
        let id = event_id("feishu.cn_abc@group.calendar.feishu.cn", "c32537e6-e0a8");
        assert_eq!(id.len(), EVENT_ID_LEN);
        assert!(is_valid_event_id(&id));
        assert_eq!(
            id,
            event_id("feishu.cn_abc@group.calendar.feishu.cn", "c32537e6-e0a8")
        );
        // Pinned: changing the derivation would orphan every mirrored event.
        let mut h = Sha256::new();
        h.update(b"cal\x1fuid");
        assert_eq!(event_id("cal", "uid"), base32hex(&h.finalize()[..20]));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(event_id("ab", "c"), event_id("a", "bc"));
    }

    #[test]
    fn instance_ids() {
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        // 2024-03-15 09:00 New York (EDT) = 13:00 UTC.
        let at = 1_710_507_600;
        let zoned = EventTime::Zoned { at, tz };
        assert_eq!(instance_id("abc12", &zoned, at), "abc12_20240315T130000Z");
        assert_eq!(
            instance_id("abc12", &EventTime::Utc(0), at),
            "abc12_20240315T130000Z"
        );
        let day = EventTime::Date(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap());
        // Feishu stores all-day times at 00:00 UTC ...
        assert_eq!(instance_id("abc12", &day, 1_710_460_800), "abc12_20240315");
        // ... and a midnight east of UTC (UTC+8: 2024-03-14T16:00Z) reads as the same date.
        assert_eq!(
            instance_id("abc12", &day, 1_710_460_800 - 8 * 3600),
            "abc12_20240315"
        );
    }

    #[test]
    fn validity() {
        assert!(is_valid_event_id("0123456789abcdefghijklmnopqrstuv"));
        assert!(!is_valid_event_id("abcd"));
        assert!(!is_valid_event_id("abcdw"));
        assert!(!is_valid_event_id("ABCDE"));
        assert!(!is_valid_event_id("abc_de"));
        assert!(!is_valid_event_id(&"a".repeat(1025)));
        assert!(is_valid_event_id(&"a".repeat(1024)));
    }

    proptest! {
        #[test]
        fn ids_are_valid_base32hex(cal in "\\PC{0,60}", uid in "\\PC{0,80}") {
            let id = event_id(&cal, &uid);
            prop_assert_eq!(id.len(), EVENT_ID_LEN);
            prop_assert!(is_valid_event_id(&id));
        }

        #[test]
        fn distinct_inputs_give_distinct_ids(
            a in ("\\PC{0,20}", "\\PC{1,30}"),
            b in ("\\PC{0,20}", "\\PC{1,30}"),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(event_id(&a.0, &a.1), event_id(&b.0, &b.1));
        }

        #[test]
        fn base32hex_length(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(base32hex(&bytes).len(), (bytes.len() * 8).div_ceil(5));
        }
    }
}
