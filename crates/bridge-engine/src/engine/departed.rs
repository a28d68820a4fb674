//! What the engine remembers of events that left the source, so that
//! `explain` can say when and why an event went instead of "never seen".
//!
//! Kept as named state per calendar (`departed:<calendar id>`, a JSON list,
//! newest last), written after the pass that removed the snapshots. A crash
//! between the two loses only this memory, never a mirror decision: it is a
//! diagnostic, so it does not widen the pass's transaction.

use serde::{Deserialize, Serialize};

/// How long a departure is remembered.
pub const RETENTION_SECONDS: i64 = 30 * 86_400;
/// At most this many departures are kept per calendar (the newest).
pub const MAX_PER_CALENDAR: usize = 2_000;

/// One event that left the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departed {
    /// `<uid>_<original_time>`.
    pub key: String,
    pub title: String,
    /// Its start (Unix seconds), when known.
    pub start: Option<i64>,
    /// Unix seconds.
    pub at: i64,
    /// Why it went, in words.
    pub why: String,
}

/// The state name of a calendar's departures.
pub fn state_name(calendar_id: &str) -> String {
    format!("departed:{calendar_id}")
}

/// `list` with `new` appended, without entries older than the retention
/// (relative to `now`), at most [`MAX_PER_CALENDAR`] (the newest kept). A
/// key that departs again replaces its older entry.
pub fn merged(mut list: Vec<Departed>, new: Vec<Departed>, now: i64) -> Vec<Departed> {
    list.retain(|d| now - d.at <= RETENTION_SECONDS && !new.iter().any(|n| n.key == d.key));
    list.extend(new);
    if list.len() > MAX_PER_CALENDAR {
        list.drain(..list.len() - MAX_PER_CALENDAR);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(key: &str, at: i64) -> Departed {
        Departed {
            key: key.into(),
            title: "t".into(),
            start: None,
            at,
            why: "w".into(),
        }
    }

    #[test]
    fn old_entries_expire_and_repeats_replace() {
        let now = 100 * 86_400;
        let list = vec![d("a_0", now - RETENTION_SECONDS - 1), d("b_0", now - 10)];
        let out = merged(list, vec![d("b_0", now), d("c_0", now)], now);
        assert_eq!(
            out.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(),
            ["b_0", "c_0"]
        );
        assert_eq!(out[0].at, now);
    }

    #[test]
    fn the_newest_are_kept() {
        let now = 10_000;
        let new: Vec<Departed> = (0..MAX_PER_CALENDAR + 5)
            .map(|i| d(&format!("k{i}_0"), now))
            .collect();
        let out = merged(Vec::new(), new, now);
        assert_eq!(out.len(), MAX_PER_CALENDAR);
        assert_eq!(out[0].key, "k5_0");
    }
}
