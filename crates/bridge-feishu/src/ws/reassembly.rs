//! Reassembly of split long-connection messages (`feishu-api.md` §9.5):
//! parts share a `message_id`, carry `sum` (part count) and `seq` (0-based
//! index), and are concatenated in `seq` order once all have arrived.
//! Incomplete messages expire after a TTL, and all of them together hold at
//! most a byte budget: a peer that opens many split messages and never
//! finishes them cannot make the daemon buffer without bound.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Default lifetime of an incomplete message (the Node SDK sweeps after 10 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Largest accepted `sum`.
pub const MAX_PARTS: usize = 1024;
/// Default budget of the bytes held by all incomplete messages together.
/// Feishu's change events are a few KB; a message split into parts is far
/// below this.
pub const DEFAULT_MAX_BUFFERED: usize = 32 * 1024 * 1024;

/// Why a part was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    #[error("part {seq} of message {message_id} is outside 0..{sum}")]
    SeqOutOfRange {
        message_id: String,
        seq: usize,
        sum: usize,
    },
    #[error("message {message_id} claims {sum} parts (limit {MAX_PARTS})")]
    TooManyParts { message_id: String, sum: usize },
    #[error("split message has no message_id")]
    MissingMessageId,
    #[error(
        "part {seq} of message {message_id} would buffer more than {limit} bytes of incomplete messages; the message is dropped"
    )]
    BufferFull {
        message_id: String,
        seq: usize,
        limit: usize,
    },
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    filled: usize,
    /// Bytes of the parts held.
    bytes: usize,
    expires: Instant,
}

impl Partial {
    fn new(sum: usize, expires: Instant) -> Self {
        Partial {
            parts: vec![None; sum],
            filled: 0,
            bytes: 0,
            expires,
        }
    }
}

/// Buffers parts of split messages.
#[derive(Debug)]
pub struct Reassembler {
    ttl: Duration,
    max_buffered: usize,
    /// Bytes held by all incomplete messages.
    buffered: usize,
    partial: HashMap<String, Partial>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(DEFAULT_TTL)
    }
}

impl Reassembler {
    pub fn new(ttl: Duration) -> Self {
        Self::with_budget(ttl, DEFAULT_MAX_BUFFERED)
    }

    /// With another budget of buffered bytes (see [`DEFAULT_MAX_BUFFERED`]).
    pub fn with_budget(ttl: Duration, max_buffered: usize) -> Self {
        Reassembler {
            ttl,
            max_buffered,
            buffered: 0,
            partial: HashMap::new(),
        }
    }

    /// Bytes held by incomplete messages.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    fn drop_message(&mut self, message_id: &str) {
        if let Some(p) = self.partial.remove(message_id) {
            self.buffered -= p.bytes;
        }
    }

    /// Number of incomplete messages buffered.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Adds one part. Returns the whole message when this part completes it
    /// (at once when `sum <= 1`), `None` while parts are missing.
    pub fn push(
        &mut self,
        message_id: &str,
        sum: usize,
        seq: usize,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        self.expire(now);
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
        let ttl = self.ttl;
        if self
            .partial
            .get(message_id)
            .is_some_and(|p| p.parts.len() != sum)
        {
            // A different split of the same id: start over with this one.
            self.drop_message(message_id);
        }
        let replaced = self
            .partial
            .get(message_id)
            .and_then(|p| p.parts[seq].as_ref())
            .map_or(0, Vec::len);
        if self.buffered - replaced + payload.len() > self.max_buffered {
            self.drop_message(message_id);
            return Err(ReassemblyError::BufferFull {
                message_id: message_id.to_owned(),
                seq,
                limit: self.max_buffered,
            });
        }
        let entry = self
            .partial
            .entry(message_id.to_owned())
            .or_insert_with(|| Partial::new(sum, now + ttl));
        if entry.parts[seq].is_none() {
            entry.filled += 1;
        }
        entry.bytes = entry.bytes - replaced + payload.len();
        self.buffered = self.buffered - replaced + payload.len();
        entry.parts[seq] = Some(payload);
        entry.expires = now + ttl;
        if entry.filled < sum {
            return Ok(None);
        }
        let done = self.partial.remove(message_id).map(|p| {
            self.buffered -= p.bytes;
            p.parts.into_iter().flatten().flatten().collect()
        });
        Ok(done)
    }

    /// Drops incomplete messages whose TTL passed; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.partial.len();
        let mut freed = 0;
        self.partial.retain(|id, p| {
            let keep = p.expires > now;
            if !keep {
                freed += p.bytes;
                tracing::warn!(message_id = %id, received = p.filled, sum = p.parts.len(), "incomplete long-connection message expired");
            }
            keep
        });
        self.buffered -= freed;
        before - self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_part_passes_through() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert_eq!(
            r.push("", 1, 0, b"x".to_vec(), now),
            Ok(Some(b"x".to_vec()))
        );
        assert_eq!(
            r.push("m", 0, 0, b"y".to_vec(), now),
            Ok(Some(b"y".to_vec()))
        );
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn out_of_order_parts_are_joined_in_seq_order() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert_eq!(r.push("m", 3, 2, b"c".to_vec(), now), Ok(None));
        assert_eq!(r.push("m", 3, 0, b"a".to_vec(), now), Ok(None));
        // a duplicate part does not complete the message
        assert_eq!(r.push("m", 3, 0, b"a".to_vec(), now), Ok(None));
        assert_eq!(r.pending(), 1);
        assert_eq!(
            r.push("m", 3, 1, b"b".to_vec(), now),
            Ok(Some(b"abc".to_vec()))
        );
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn empty_parts_count() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert_eq!(r.push("m", 2, 0, Vec::new(), now), Ok(None));
        assert_eq!(
            r.push("m", 2, 1, b"z".to_vec(), now),
            Ok(Some(b"z".to_vec()))
        );
    }

    #[test]
    fn interleaved_messages_stay_apart() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert_eq!(r.push("a", 2, 0, b"a0".to_vec(), now), Ok(None));
        assert_eq!(r.push("b", 2, 1, b"b1".to_vec(), now), Ok(None));
        assert_eq!(
            r.push("a", 2, 1, b"a1".to_vec(), now),
            Ok(Some(b"a0a1".to_vec()))
        );
        assert_eq!(
            r.push("b", 2, 0, b"b0".to_vec(), now),
            Ok(Some(b"b0b1".to_vec()))
        );
    }

    #[test]
    fn incomplete_messages_expire() {
        let mut r = Reassembler::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.push("m", 2, 0, b"a".to_vec(), t0), Ok(None));
        assert_eq!(r.expire(t0 + Duration::from_secs(9)), 0);
        // the late part starts a new buffer instead of completing the old one
        assert_eq!(
            r.push("m", 2, 1, b"b".to_vec(), t0 + Duration::from_secs(11)),
            Ok(None)
        );
        assert_eq!(r.pending(), 1);
        assert_eq!(r.expire(t0 + Duration::from_secs(30)), 1);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn incomplete_messages_share_a_byte_budget() {
        let mut r = Reassembler::with_budget(DEFAULT_TTL, 10);
        let now = Instant::now();
        assert_eq!(r.push("a", 2, 0, b"aaaa".to_vec(), now), Ok(None));
        assert_eq!(r.push("b", 2, 0, b"bbbb".to_vec(), now), Ok(None));
        assert_eq!(r.buffered(), 8);
        // A part that does not fit drops its own message, not the others.
        assert!(matches!(
            r.push("b", 2, 1, b"bbb".to_vec(), now),
            Err(ReassemblyError::BufferFull { limit: 10, .. })
        ));
        assert_eq!((r.pending(), r.buffered()), (1, 4));
        // Completing a message frees its bytes.
        assert_eq!(
            r.push("a", 2, 1, b"aaaaaa".to_vec(), now),
            Ok(Some(b"aaaaaaaaaa".to_vec()))
        );
        assert_eq!((r.pending(), r.buffered()), (0, 0));
        // A resent part replaces the old bytes instead of adding to them.
        assert_eq!(r.push("c", 3, 0, b"cccccc".to_vec(), now), Ok(None));
        assert_eq!(r.push("c", 3, 0, b"cccccc".to_vec(), now), Ok(None));
        assert_eq!(r.buffered(), 6);
        // Expiry frees them too.
        assert_eq!(r.expire(now + DEFAULT_TTL + Duration::from_secs(1)), 1);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn bad_parts_are_errors() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert!(matches!(
            r.push("m", 2, 2, vec![], now),
            Err(ReassemblyError::SeqOutOfRange { .. })
        ));
        assert!(matches!(
            r.push("m", MAX_PARTS + 1, 0, vec![], now),
            Err(ReassemblyError::TooManyParts { .. })
        ));
        assert_eq!(
            r.push("", 2, 0, vec![], now),
            Err(ReassemblyError::MissingMessageId)
        );
        // a different sum for the same id restarts the buffer
        assert_eq!(r.push("m", 2, 0, b"x".to_vec(), now), Ok(None));
        assert_eq!(r.push("m", 3, 0, b"a".to_vec(), now), Ok(None));
        assert_eq!(r.push("m", 3, 1, b"b".to_vec(), now), Ok(None));
        assert_eq!(
            r.push("m", 3, 2, b"c".to_vec(), now),
            Ok(Some(b"abc".to_vec()))
        );
    }
}
