//! The content hash of a canonical item, for change detection.
//!
//! Specification (version 1): SHA-256 over
//!
//! ```text
//! "feishu-bridge/canonical-event/v1" 0x00
//! field*          where field = tag:u8 len:u32-big-endian bytes[len]
//! ```
//!
//! Fields appear in tag order; an absent optional field is not written; a
//! list writes one field per element (same tag) after a count field. Nested
//! values (parties, conference) are themselves encoded as fields and wrapped.
//! Times are text: `D:YYYY-MM-DD`, `U:<unix>` or `Z:<tzid>:<unix>`; numbers are
//! decimal ASCII; floats use 7 decimals. The hash is shown as `v1:<64 hex>`.
//! Any change to this encoding must bump the version tag, so that stored
//! hashes of the old version simply compare unequal (one rewrite, no loss).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::model::{CanonicalEvent, CuType, EventTime, Item, PartStat, Party, Role};

/// Version tag of the encoding.
pub const HASH_VERSION: &str = "feishu-bridge/canonical-event/v1";

/// A versioned SHA-256 content hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v1:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for ContentHash {
    type Err = String;

    /// Parses `v1:<64 hex>`; any other version is an error (and so compares
    /// unequal to every current hash, causing one rewrite).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s
            .strip_prefix("v1:")
            .ok_or_else(|| format!("content hash {s:?} is not version 1"))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|e| format!("content hash {s:?}: {e}"))?;
        Ok(ContentHash(out))
    }
}

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.0.push(tag);
        self.0
            .extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn str(&mut self, tag: u8, s: &str) {
        self.field(tag, s.as_bytes());
    }

    fn opt(&mut self, tag: u8, s: Option<&str>) {
        if let Some(s) = s {
            self.str(tag, s);
        }
    }

    fn time(&mut self, tag: u8, t: &EventTime) {
        let s = match t {
            EventTime::Date(d) => format!("D:{}", d.format("%Y-%m-%d")),
            EventTime::Utc(at) => format!("U:{at}"),
            EventTime::Zoned { at, tz } => format!("Z:{}:{at}", tz.name()),
        };
        self.str(tag, &s);
    }

    fn party(&mut self, tag: u8, p: &Party) {
        let mut inner = Enc::default();
        inner.str(1, &p.address);
        inner.opt(2, p.name.as_deref());
        inner.str(
            3,
            match p.cutype {
                CuType::Individual => "INDIVIDUAL",
                CuType::Group => "GROUP",
                CuType::Room => "ROOM",
                CuType::Unknown => "UNKNOWN",
            },
        );
        inner.str(
            4,
            match p.partstat {
                PartStat::NeedsAction => "NEEDS-ACTION",
                PartStat::Accepted => "ACCEPTED",
                PartStat::Tentative => "TENTATIVE",
                PartStat::Declined => "DECLINED",
            },
        );
        inner.str(
            5,
            match p.role {
                Role::Required => "REQ-PARTICIPANT",
                Role::Optional => "OPT-PARTICIPANT",
            },
        );
        self.field(tag, &inner.0);
    }
}

fn encode_event(e: &CanonicalEvent, enc: &mut Enc) {
    enc.str(1, "event");
    enc.str(2, e.key.uid());
    enc.str(3, &e.key.original_time().to_string());
    enc.time(4, &e.start);
    enc.time(5, &e.end);
    enc.opt(6, e.rrule.as_deref());
    enc.str(7, &e.summary);
    enc.str(8, &e.description);
    enc.opt(9, e.location.as_deref());
    if let Some((lat, lon)) = e.geo {
        enc.str(10, &format!("{lat:.7};{lon:.7}"));
    }
    enc.opt(11, e.url.as_deref());
    if let Some(c) = &e.conference {
        let mut inner = Enc::default();
        inner.str(1, &c.uri);
        inner.str(2, &c.label);
        enc.field(12, &inner.0);
    }
    enc.opt(13, e.status.map(|s| format!("{s:?}")).as_deref());
    enc.opt(14, e.class.map(|c| format!("{c:?}")).as_deref());
    enc.str(
        15,
        if e.transparent {
            "transparent"
        } else {
            "opaque"
        },
    );
    enc.str(16, &e.alarms.len().to_string());
    for a in &e.alarms {
        enc.str(17, &a.to_string());
    }
    if let Some(o) = &e.organizer {
        enc.party(18, o);
    }
    enc.str(19, &e.attendees.len().to_string());
    for a in &e.attendees {
        enc.party(20, a);
    }
    enc.opt(21, e.created.map(|c| c.to_string()).as_deref());
}

/// The content hash of a mapped item.
pub fn content_hash(item: &Item) -> ContentHash {
    let mut enc = Enc(Vec::with_capacity(512));
    enc.0.extend_from_slice(HASH_VERSION.as_bytes());
    enc.0.push(0);
    match item {
        Item::Event(e) => encode_event(e, &mut enc),
        Item::Cancelled(key) => {
            enc.str(1, "cancelled");
            enc.str(2, key.uid());
            enc.str(3, &key.original_time().to_string());
        }
    }
    ContentHash(Sha256::digest(&enc.0).into())
}

/// The first 8 hex digits of SHA-256, for short, stable names.
pub fn short_digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::EventKey;

    #[test]
    fn stable_and_sensitive() {
        let cancelled = Item::Cancelled(EventKey::parse("u_0").unwrap());
        let h = content_hash(&cancelled);
        assert_eq!(h, content_hash(&cancelled.clone()));
        assert!(h.to_string().starts_with("v1:"));
        assert_eq!(h.to_string().len(), 3 + 64);
        // Pinned: a change here means stored hashes change; bump HASH_VERSION.
        assert_eq!(
            h.to_string(),
            "v1:".to_owned()
                + &hex::encode(Sha256::digest(
                    [
                        HASH_VERSION.as_bytes(),
                        &[0],
                        &[1, 0, 0, 0, 9],
                        b"cancelled",
                        &[2, 0, 0, 0, 1],
                        b"u",
                        &[3, 0, 0, 0, 1],
                        b"0",
                    ]
                    .concat()
                ))
        );
        assert_eq!(h.to_string().parse::<ContentHash>(), Ok(h));
        assert!("v0:00".parse::<ContentHash>().is_err());
        let other = Item::Cancelled(EventKey::parse("u_1").unwrap());
        assert_ne!(h, content_hash(&other));
    }
}
