//! Phase: the new snapshot set of a calendar from what was stored and what
//! the listing said (pure).

use std::collections::BTreeMap;

use bridge_core::hash::ContentHash;
use bridge_core::{EventKey, Item};

/// One entry of the snapshot set.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) hash: ContentHash,
    pub(crate) item: Item,
}

/// One listed event, as the pass keeps it.
#[derive(Debug)]
pub(crate) enum Seen {
    Entry(EventKey, Entry),
    /// A deleted event or series (`cancelled` with original_time 0).
    Deleted(EventKey),
    /// Could not be mapped: its stored version stays.
    Unmappable(EventKey),
}

/// The snapshot set after a listing, before the bodies of stored items the
/// pass still needs are loaded.
#[derive(Debug, Default)]
pub(crate) struct Assembled {
    /// The items the source holds now.
    pub(crate) next: BTreeMap<EventKey, Entry>,
    /// Items removed by an explicit deletion of their series.
    pub(crate) taken: BTreeMap<EventKey, Entry>,
    /// Unmappable items whose stored version stays.
    pub(crate) keep_stored: Vec<EventKey>,
    /// Stored items neither listed nor taken (gone from a complete listing).
    pub(crate) vanished: Vec<EventKey>,
}

/// A full listing replaces the stored set, a delta patches `stored` (the
/// stored entries, empty for a complete listing). A deleted series takes
/// its exceptions with it; an unmappable item never deletes what was stored.
pub(crate) fn assemble(
    prev: &BTreeMap<EventKey, ContentHash>,
    stored: BTreeMap<EventKey, Entry>,
    seen: Vec<Seen>,
    complete: bool,
) -> Assembled {
    let mut a = Assembled {
        next: if complete { BTreeMap::new() } else { stored },
        ..Assembled::default()
    };
    for s in seen {
        match s {
            Seen::Entry(key, e) => {
                a.next.insert(key, e);
            }
            Seen::Deleted(key) => {
                let gone: Vec<EventKey> = a
                    .next
                    .keys()
                    .filter(|k| k.uid() == key.uid())
                    .cloned()
                    .collect();
                for k in gone {
                    if let Some(e) = a.next.remove(&k) {
                        a.taken.insert(k, e);
                    }
                }
            }
            Seen::Unmappable(k) if complete && prev.contains_key(&k) => a.keep_stored.push(k),
            Seen::Unmappable(_) => {}
        }
    }
    a.vanished = prev
        .keys()
        .filter(|k| !a.next.contains_key(*k) && !a.taken.contains_key(*k))
        .cloned()
        .collect();
    a
}

impl Assembled {
    /// Completes the set with the stored bodies (of `keep_stored` and
    /// `vanished`): returns the items now and the items removed by this pass.
    pub(crate) fn finish(
        mut self,
        prev: &BTreeMap<EventKey, ContentHash>,
        mut stored: BTreeMap<EventKey, Entry>,
    ) -> (BTreeMap<EventKey, Entry>, BTreeMap<EventKey, Entry>) {
        for k in std::mem::take(&mut self.keep_stored) {
            if let Some(e) = stored.remove(&k) {
                self.next.insert(k, e);
            }
        }
        let mut removed = BTreeMap::new();
        for k in prev.keys().filter(|k| !self.next.contains_key(*k)) {
            if let Some(e) = self.taken.remove(k).or_else(|| stored.remove(k)) {
                removed.insert(k.clone(), e);
            }
        }
        (self.next, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str, t: i64) -> EventKey {
        EventKey::new(uid, t).unwrap()
    }

    fn entry(k: &EventKey, h: u8) -> Entry {
        Entry {
            hash: ContentHash([h; 32]),
            item: Item::Cancelled(k.clone()),
        }
    }

    #[test]
    fn a_complete_listing_replaces_and_names_what_vanished() {
        let prev: BTreeMap<_, _> = [
            (key("a", 0), ContentHash([1; 32])),
            (key("b", 0), ContentHash([2; 32])),
        ]
        .into();
        let seen = vec![Seen::Entry(key("a", 0), entry(&key("a", 0), 9))];
        let a = assemble(&prev, BTreeMap::new(), seen, true);
        assert_eq!(a.next.keys().collect::<Vec<_>>(), [&key("a", 0)]);
        assert_eq!(a.vanished, [key("b", 0)]);
        let stored: BTreeMap<_, _> = [(key("b", 0), entry(&key("b", 0), 2))].into();
        let (next, removed) = a.finish(&prev, stored);
        assert_eq!(next.len(), 1);
        assert_eq!(removed.keys().collect::<Vec<_>>(), [&key("b", 0)]);
    }

    #[test]
    fn a_delta_patches_and_a_deleted_series_takes_its_exceptions() {
        let (m, x, s) = (key("a", 0), key("a", 100), key("b", 0));
        let prev: BTreeMap<_, _> = [
            (m.clone(), ContentHash([1; 32])),
            (x.clone(), ContentHash([1; 32])),
            (s.clone(), ContentHash([1; 32])),
        ]
        .into();
        let stored: BTreeMap<_, _> = prev.keys().map(|k| (k.clone(), entry(k, 1))).collect();
        let a = assemble(&prev, stored, vec![Seen::Deleted(m.clone())], false);
        assert_eq!(a.next.keys().collect::<Vec<_>>(), [&s]);
        assert_eq!(a.taken.len(), 2);
        assert!(a.vanished.is_empty());
        let (next, removed) = a.finish(&prev, BTreeMap::new());
        assert_eq!(next.len(), 1);
        assert_eq!(removed.keys().collect::<Vec<_>>(), [&m, &x]);
    }

    #[test]
    fn an_unmappable_item_keeps_its_stored_version() {
        let k = key("a", 0);
        let prev: BTreeMap<_, _> = [(k.clone(), ContentHash([1; 32]))].into();
        let a = assemble(
            &prev,
            BTreeMap::new(),
            vec![Seen::Unmappable(k.clone())],
            true,
        );
        assert_eq!(a.keep_stored.len(), 1);
        assert_eq!(a.keep_stored[0], k);
        let stored: BTreeMap<_, _> = [(k.clone(), entry(&k, 1))].into();
        let (next, removed) = a.finish(&prev, stored);
        assert!(next.contains_key(&k) && removed.is_empty());
    }
}
