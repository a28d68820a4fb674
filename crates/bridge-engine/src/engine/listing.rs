//! Phase: list a calendar page by page, mapping each event as it arrives
//! and writing the snapshots of new or changed items ahead of the records.

use std::collections::BTreeMap;
use std::sync::Arc;

use bridge_core::feishu::Event;
use bridge_core::hash::ContentHash;
use bridge_core::{EventKey, Item, content_hash, map_event};
use bridge_store::{Batch, Snapshot, Store, StoreError};
use tokio::sync::mpsc;

use super::EngineError;
use super::assemble::{Entry, Seen};
use super::attendees::{Mark, Want};
use crate::traits::{CalendarMeta, Source, SourceError};

/// Pages of snapshots queued for the store writer at most: the listing
/// waits for the store beyond that, so a slow disk never makes a large
/// calendar pile up in memory.
const SNAPSHOT_QUEUE: usize = 4;

/// Maps one event; `None` when it cannot be mapped (logged).
pub(crate) fn map_entry(ev: &Event) -> Option<(EventKey, ContentHash, Item)> {
    let mut warnings = Vec::new();
    match map_event(ev, &mut warnings) {
        Ok(item) => {
            for w in warnings {
                tracing::debug!("{w}");
            }
            let hash = content_hash(&item);
            Some((item.key().clone(), hash, item))
        }
        Err(e) => {
            tracing::warn!("{e}; left as it was");
            None
        }
    }
}

/// An entry from a stored snapshot (unchanged, so no JSON is kept).
pub(crate) fn entry_from_snapshot(key: &str, json: &str) -> Option<(EventKey, Entry)> {
    let Ok(ev) = serde_json::from_str::<Event>(json) else {
        tracing::warn!(key, "unreadable snapshot; it will be listed again");
        return None;
    };
    let (k, hash, item) = map_entry(&ev)?;
    Some((k, Entry { hash, item }))
}

/// What one listing gave.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) seen: Vec<Seen>,
    pub(crate) sync_token: Option<String>,
    pub(crate) complete: bool,
    pub(crate) listed: usize,
    pub(crate) calls: u64,
    pub(crate) cursor_expired: bool,
    /// Events whose attendees are to be fetched (their snapshots are written
    /// with the attendees, by the attendee phase).
    pub(crate) want: Vec<Want>,
}

/// What the listing compares with.
pub(crate) struct Compare<'a> {
    /// The stored hashes of the listed content.
    pub(crate) prev: &'a BTreeMap<EventKey, ContentHash>,
    /// The stored attendee marks.
    pub(crate) prev_att: &'a BTreeMap<EventKey, Mark>,
    /// `sync.attendees = "changed"`.
    pub(crate) attendees: bool,
}

/// What the listing collected so far.
#[derive(Default)]
struct PageState {
    seen: Vec<Seen>,
    listed: usize,
    want: Vec<Want>,
    /// The listing is a delta: everything in it changed at the source.
    delta: bool,
    /// Snapshots the writer had no room for yet (only on a current-thread
    /// runtime, where the listing cannot wait for the writer without
    /// stopping it); sent with the next page.
    carry: Vec<(String, Snapshot)>,
}

impl PageState {
    fn page(
        &mut self,
        page: Vec<Event>,
        cmp: &Compare<'_>,
        now: i64,
        dry_run: bool,
        tx: &mpsc::Sender<Vec<(String, Snapshot)>>,
    ) {
        self.listed += page.len();
        let mut snaps = std::mem::take(&mut self.carry);
        for ev in page {
            if let Some(s) = see(ev, cmp, self.delta, now, &mut snaps, &mut self.want) {
                self.seen.push(s);
            }
        }
        if dry_run || snaps.is_empty() {
            return;
        }
        match tx.try_send(snaps) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(snaps)) => {
                match tokio::runtime::Handle::current().runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::MultiThread => {
                        // Back-pressure: the listing waits for the store.
                        let _ = tokio::task::block_in_place(|| tx.blocking_send(snaps));
                    }
                    _ => self.carry = snaps,
                }
            }
            // The writer stopped on a store error, reported by the caller.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Classifies one listed event; snapshots of new or changed items go to
/// `snaps`, or, when their attendees are to be fetched, to `want`.
fn see(
    ev: Event,
    cmp: &Compare<'_>,
    delta: bool,
    now: i64,
    snaps: &mut Vec<(String, Snapshot)>,
    want: &mut Vec<Want>,
) -> Option<Seen> {
    Some(match map_entry(&ev) {
        None => Seen::Unmappable(EventKey::parse(ev.event_id.as_deref()?).ok()?),
        Some((key, _, Item::Cancelled(_))) if key.is_base() => Seen::Deleted(key),
        Some((key, hash, item)) => {
            let changed = cmp.prev.get(&key) != Some(&hash);
            if cmp.attendees
                && matches!(item, Item::Event(_))
                && (changed
                    || delta
                    || !matches!(cmp.prev_att.get(&key), Some(Mark::Fetched { .. })))
            {
                want.push(Want {
                    event: ev,
                    listed: hash,
                });
                return Some(Seen::Entry(key, Entry { hash, item }));
            }
            if changed && let Ok(json) = serde_json::to_string(&ev) {
                snaps.push((
                    key.to_string(),
                    Snapshot {
                        event_json: json,
                        content_hash: hash.to_string(),
                        updated_at: now,
                    },
                ));
            }
            Seen::Entry(key, Entry { hash, item })
        }
    })
}

/// Lists `cal` (a delta with `token`, in full without one or when it
/// expired). Each event is mapped as it arrives; the source JSON of new or
/// changed items goes straight to the store as its snapshot (a snapshot only
/// states what the source holds now, so it is safe ahead of the records and
/// of a complete listing; the cursor moves only in the final transaction).
/// Nothing but the mapped items stays in memory.
pub(crate) async fn list_and_snapshot(
    source: &Arc<dyn Source>,
    store: &Store,
    cal: &CalendarMeta,
    token: Option<&str>,
    cmp: &Compare<'_>,
    dry_run: bool,
    now: i64,
) -> Result<Listed, EngineError> {
    let (snap_tx, mut snap_rx) = mpsc::channel::<Vec<(String, Snapshot)>>(SNAPSHOT_QUEUE);
    let writer = (!dry_run).then(|| {
        let store = store.clone();
        let cal_id = cal.id.clone();
        tokio::spawn(async move {
            while let Some(page) = snap_rx.recv().await {
                let mut b = Batch::new();
                for (k, s) in page {
                    b.put_snapshot(cal_id.as_str(), k, s);
                }
                store.apply_batch(b).await?;
            }
            Ok::<(), StoreError>(())
        })
    });
    let mut st = PageState {
        delta: token.is_some(),
        ..PageState::default()
    };
    let first = {
        let mut on_page = |page: Vec<Event>| st.page(page, cmp, now, dry_run, &snap_tx);
        source.list_pages(&cal.id, token, &mut on_page).await
    };
    let mut cursor_expired = false;
    let result = match first {
        Err(SourceError::CursorExpired) => {
            tracing::info!(calendar = %cal.id, "sync token expired; listing in full");
            cursor_expired = true;
            st.seen.clear();
            st.want.clear();
            st.listed = 0;
            st.delta = false;
            let mut on_page = |page: Vec<Event>| st.page(page, cmp, now, dry_run, &snap_tx);
            source.list_pages(&cal.id, None, &mut on_page).await
        }
        other => other,
    };
    if !st.carry.is_empty() {
        let _ = snap_tx.send(std::mem::take(&mut st.carry)).await;
    }
    drop(snap_tx);
    if let Some(w) = writer {
        match w.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(EngineError::Store(StoreError::Task(format!(
                    "snapshot writer: {e}"
                ))));
            }
        }
    }
    let listing = result.map_err(|source| EngineError::Source {
        calendar: cal.id.clone(),
        source,
    })?;
    Ok(Listed {
        seen: st.seen,
        sync_token: listing.sync_token,
        complete: listing.complete,
        listed: st.listed,
        calls: listing.calls,
        cursor_expired,
        want: st.want,
    })
}
