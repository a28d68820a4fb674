//! Phase: the attendees of listed events.
//!
//! Feishu's list events carries no attendees (feishu-api.md §4.2), so they
//! come from the attendees endpoint, one event at a time (pages of 100, at
//! most 3,000). They are kept in the snapshot's event JSON, so an unchanged
//! event costs no call:
//!
//! - an event is fetched when its listed content is new or changed, when it
//!   comes in a delta (Feishu lists an event in a delta when anything of it
//!   changed, a reply included), or when its attendees were never fetched or
//!   the last fetch failed;
//! - a full reconcile also refreshes the events starting within
//!   `refresh_days` (room bookings are asynchronous: `needs_action`, then
//!   `accept` or `decline`), those fetched longest ago first, at most
//!   `refresh_budget` per calendar and pass. Every call goes through the
//!   client's rate limiter.
//!
//! The stored `content_hash` stays the hash of the *listed* content (what
//! the next listing is compared with), followed by a mark of the attendees:
//! `v1:<hex> attendees=<n>@<unix time of the fetch>` or
//! `v1:<hex> attendees=pending` (the fetch failed; the previous attendees
//! are kept meanwhile). The entry the sinks see is mapped with the
//! attendees, and its hash (the applied hash of sink records) covers them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bridge_core::feishu::Event;
use bridge_core::hash::ContentHash;
use bridge_core::{EventKey, Item};
use bridge_store::{Batch, Snapshot, Store};
use futures_util::StreamExt;

use super::assemble::{Entry, Seen};
use super::listing::{entry_from_snapshot, map_entry};
use super::{AttendeeSync, EngineError};
use crate::traits::{CalendarMeta, Source, SourceError};

/// Stored bodies read one by one up to this many; beyond, the calendar's
/// snapshots are scanned once.
const SCAN_ABOVE: usize = 64;
/// Snapshots written per store transaction.
const WRITE_CHUNK: usize = 1024;
/// Attendee reads in flight at once.
const IN_FLIGHT: usize = 8;

/// What the snapshot says about an event's attendees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// The last fetch failed: fetch again.
    Pending,
    /// `n` attendees fetched at `at`.
    Fetched { at: i64, n: u32 },
}

/// Splits a stored `content_hash` into the listed content's hash and the
/// attendee mark (none: never fetched, or stored without attendees).
pub(crate) fn split_stored(s: &str) -> (Option<ContentHash>, Option<Mark>) {
    let (hash, rest) = s.split_once(' ').unwrap_or((s, ""));
    let mark = rest.strip_prefix("attendees=").and_then(|m| {
        if m == "pending" {
            return Some(Mark::Pending);
        }
        let (n, at) = m.split_once('@')?;
        Some(Mark::Fetched {
            at: at.parse().ok()?,
            n: n.parse().ok()?,
        })
    });
    (hash.parse().ok(), mark)
}

/// The stored `content_hash` of a listed hash and a mark.
pub(crate) fn stored_hash(listed: &ContentHash, mark: Mark) -> String {
    match mark {
        Mark::Pending => format!("{listed} attendees=pending"),
        Mark::Fetched { at, n } => format!("{listed} attendees={n}@{at}"),
    }
}

/// A listed event whose attendees are to be fetched.
#[derive(Debug)]
pub(crate) struct Want {
    pub(crate) event: Event,
    /// The hash of the listed content (without attendees).
    pub(crate) listed: ContentHash,
}

/// Whether an item starts within `days` from `now` (or is going on): a
/// single event by its own times, a series while its rule still reaches
/// `now`.
pub(crate) fn upcoming(item: &Item, now: i64, days: u32) -> bool {
    let Item::Event(e) = item else { return false };
    let to = now.saturating_add(i64::from(days) * 86_400);
    let start = e.start.instant();
    if e.rrule.is_some() {
        start < to && e.rrule_bound.is_none_or(|b| b >= now)
    } else {
        start < to && e.end.instant() >= now
    }
}

/// What the phase did.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// Attendee calls (pages) made.
    pub(crate) calls: u64,
    /// Events whose attendees were fetched because they were new or changed.
    pub(crate) fetched: usize,
    /// Unchanged upcoming events whose attendees were fetched again.
    pub(crate) refreshed: usize,
    /// Fetches that failed (the event keeps its previous attendees, marked
    /// pending).
    pub(crate) failed: usize,
}

/// Everything the phase needs.
pub(crate) struct Phase<'a> {
    pub(crate) source: &'a Arc<dyn Source>,
    pub(crate) store: &'a Store,
    pub(crate) cal: &'a CalendarMeta,
    pub(crate) prev_att: &'a BTreeMap<EventKey, Mark>,
    pub(crate) sync: AttendeeSync,
    /// A full reconcile of a complete listing: refresh upcoming events.
    pub(crate) refresh: bool,
    pub(crate) dry_run: bool,
    pub(crate) now: i64,
}

impl Phase<'_> {
    /// Fetches the attendees of `want` (and of the upcoming events chosen
    /// for a refresh), writes their snapshots, and puts every entry with
    /// attendees into `seen` in place of its listed (attendee-less) entry.
    pub(crate) async fn run(
        &self,
        seen: &mut [Seen],
        want: Vec<Want>,
    ) -> Result<Resolved, EngineError> {
        let mut out = Resolved::default();
        let wanted: BTreeSet<EventKey> = want
            .iter()
            .filter_map(|w| EventKey::parse(w.event.event_id.as_deref()?).ok())
            .collect();

        // Unchanged events: those with attendees need their stored body;
        // the upcoming ones are candidates for a refresh.
        let mut with_body: BTreeSet<EventKey> = BTreeSet::new();
        let mut candidates: Vec<(i64, EventKey, ContentHash)> = Vec::new();
        for s in seen.iter() {
            let Seen::Entry(k, e) = s else { continue };
            if wanted.contains(k) {
                continue;
            }
            if let Some(Mark::Fetched { at, n }) = self.prev_att.get(k) {
                if *n > 0 {
                    with_body.insert(k.clone());
                }
                if self.refresh && upcoming(&e.item, self.now, self.sync.refresh_days) {
                    candidates.push((*at, k.clone(), e.hash));
                }
            }
        }
        // Those fetched longest ago first, so a budget smaller than the
        // upcoming events still reaches every one in turn.
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        candidates.truncate(self.sync.refresh_budget);
        // A changed event keeps its previous attendees when the fetch fails.
        let fallback: BTreeSet<EventKey> = wanted
            .iter()
            .filter(|k| matches!(self.prev_att.get(*k), Some(Mark::Fetched { n, .. }) if *n > 0))
            .cloned()
            .collect();
        let needed: BTreeSet<EventKey> = with_body
            .iter()
            .chain(candidates.iter().map(|c| &c.1))
            .chain(&fallback)
            .cloned()
            .collect();
        let mut bodies = self.bodies(&needed).await?;

        let mut work: Vec<(Want, bool)> = want.into_iter().map(|w| (w, false)).collect();
        for (_, k, listed) in &candidates {
            if let Some(ev) = bodies.get(k) {
                work.push((
                    Want {
                        event: ev.clone(),
                        listed: *listed,
                    },
                    true,
                ));
            }
        }

        let mut replace: HashMap<EventKey, Entry> = HashMap::new();
        let mut batch = Batch::new();
        // A few reads in flight (the client's rate limiter paces them), in
        // order, each handled as it arrives.
        let source = self.source;
        let cal_id = self.cal.id.as_str();
        let mut answers = futures_util::stream::iter(work)
            .map(|(w, refresh)| async move {
                let answer = match w.event.event_id.as_deref() {
                    Some(id) => Some(source.attendees(cal_id, id).await),
                    None => None,
                };
                (w, refresh, answer)
            })
            .buffered(IN_FLIGHT);
        while let Some((w, refresh, answer)) = answers.next().await {
            let Want { mut event, listed } = w;
            let (Some(event_id), Some(answer)) = (event.event_id.clone(), answer) else {
                continue;
            };
            let key = EventKey::parse(&event_id).ok();
            let mark = match answer {
                Ok(a) => {
                    out.calls += a.calls;
                    if a.truncated {
                        tracing::warn!(calendar = %self.cal.id, event = %event_id, kept = a.items.len(), "more attendees than Feishu lists; the rest are left out");
                    }
                    let n = u32::try_from(a.items.len()).unwrap_or(u32::MAX);
                    event.attendees = Some(a.items);
                    Mark::Fetched { at: self.now, n }
                }
                Err(SourceError::Refused(m)) => {
                    // Feishu shows attendees to the organizer and to
                    // attendees allowed to see others only: a refusal is
                    // an answer (none visible), not a reason to retry.
                    out.calls += 1;
                    tracing::info!(calendar = %self.cal.id, event = %event_id, "attendees not readable ({m}); mirrored without them");
                    event.attendees = Some(Vec::new());
                    Mark::Fetched { at: self.now, n: 0 }
                }
                Err(e) => {
                    out.calls += 1;
                    out.failed += 1;
                    tracing::warn!(calendar = %self.cal.id, event = %event_id, error = %e, "attendees could not be read; kept as they were, read again next pass");
                    event.attendees = key
                        .as_ref()
                        .and_then(|k| bodies.get(k))
                        .and_then(|b| b.attendees.clone());
                    Mark::Pending
                }
            };
            if refresh {
                out.refreshed += 1;
            } else {
                out.fetched += 1;
            }
            let Some((key, hash, item)) = map_entry(&event) else {
                continue;
            };
            bodies.remove(&key);
            if !self.dry_run
                && let Ok(json) = serde_json::to_string(&event)
            {
                batch.put_snapshot(
                    self.cal.id.as_str(),
                    key.to_string(),
                    Snapshot {
                        event_json: json,
                        content_hash: stored_hash(&listed, mark),
                        updated_at: self.now,
                    },
                );
                if batch.len() >= WRITE_CHUNK {
                    self.store.apply_batch(std::mem::take(&mut batch)).await?;
                }
            }
            replace.insert(key, Entry { hash, item });
        }
        if !batch.is_empty() {
            self.store.apply_batch(batch).await?;
        }
        for k in &with_body {
            if replace.contains_key(k) {
                continue;
            }
            if let Some(ev) = bodies.get(k)
                && let Some((key, hash, item)) = map_entry(ev)
            {
                replace.insert(key, Entry { hash, item });
            }
        }
        for s in seen.iter_mut() {
            if let Seen::Entry(k, e) = s
                && let Some(r) = replace.remove(k)
            {
                *e = r;
            }
        }
        Ok(out)
    }

    /// The stored events of `keys`.
    async fn bodies(
        &self,
        keys: &BTreeSet<EventKey>,
    ) -> Result<BTreeMap<EventKey, Event>, EngineError> {
        let mut out = BTreeMap::new();
        let mut keep = |k: &str, json: &str| {
            if let Ok(key) = EventKey::parse(k)
                && let Ok(ev) = serde_json::from_str::<Event>(json)
            {
                out.insert(key, ev);
            }
        };
        if keys.len() > SCAN_ABOVE {
            let wanted: BTreeSet<String> = keys.iter().map(ToString::to_string).collect();
            for (k, snap) in self.store.list_snapshots(&self.cal.id).await? {
                if wanted.contains(&k) {
                    keep(&k, &snap.event_json);
                }
            }
        } else {
            for k in keys {
                let k = k.to_string();
                if let Some(snap) = self.store.get_snapshot(&self.cal.id, &k).await? {
                    keep(&k, &snap.event_json);
                }
            }
        }
        Ok(out)
    }
}

/// The entry of a stored snapshot, with its attendees or without them
/// (`sync.attendees = "none"`).
pub(crate) fn stored_entry(key: &str, json: &str, attendees: bool) -> Option<(EventKey, Entry)> {
    if attendees {
        return entry_from_snapshot(key, json);
    }
    let Ok(mut ev) = serde_json::from_str::<Event>(json) else {
        tracing::warn!(key, "unreadable snapshot; it will be listed again");
        return None;
    };
    ev.attendees = None;
    let (k, hash, item) = map_entry(&ev)?;
    Some((k, Entry { hash, item }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_round_trips_with_its_mark() {
        let h = ContentHash([7; 32]);
        for mark in [
            Mark::Pending,
            Mark::Fetched {
                at: 1_700_000_000,
                n: 9,
            },
        ] {
            let s = stored_hash(&h, mark);
            assert_eq!(split_stored(&s), (Some(h), Some(mark)), "{s}");
        }
        assert_eq!(split_stored(&h.to_string()), (Some(h), None));
        assert_eq!(split_stored("v1:zz attendees=3@x").1, None);
    }
}
