//! Ids in Google's shapes, base32hex, RFC 3339 times (the generic ids come
//! from the kit).

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;

pub(crate) use crate::kit::ids::{now_ms, rand_hex, rand_urlsafe};

/// The base32hex alphabet (RFC 4648 §7), lowercase: Google's event id alphabet.
const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// `n` random base32hex characters (server-generated event ids).
pub(crate) fn rand_base32hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(BASE32HEX[rng.random_range(0..32)]))
        .collect()
}

/// Lowercase, unpadded base32hex of `bytes` (ids of id-less imports are
/// `"_" + base32hex(iCalUID)`, sinks-api.md A.4).
pub(crate) fn base32hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32HEX[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32HEX[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

/// True for a client-settable event id: base32hex characters, 5..=1024 long.
pub(crate) fn valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| BASE32HEX.contains(&b))
}

/// Wall-clock now.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// RFC 3339 with milliseconds and `Z`, as Google writes `created`/`updated`.
pub(crate) fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32hex_matches_rfc4648_vectors() {
        // RFC 4648 §10 test vectors, lowercase and without padding.
        assert_eq!(base32hex(b""), "");
        assert_eq!(base32hex(b"f"), "co");
        assert_eq!(base32hex(b"fo"), "cpng");
        assert_eq!(base32hex(b"foo"), "cpnmu");
        assert_eq!(base32hex(b"foob"), "cpnmuog");
        assert_eq!(base32hex(b"fooba"), "cpnmuoj1");
        assert_eq!(base32hex(b"foobar"), "cpnmuoj1e8");
    }

    #[test]
    fn event_id_rules() {
        assert!(valid_event_id("abcde"));
        assert!(valid_event_id(&"0".repeat(1024)));
        assert!(!valid_event_id("abcd"));
        assert!(!valid_event_id(&"0".repeat(1025)));
        assert!(!valid_event_id("abcdw"));
        assert!(!valid_event_id("ABCDE"));
        assert!(!valid_event_id("abc_de"));
        assert!(valid_event_id(&rand_base32hex(26)));
    }
}
