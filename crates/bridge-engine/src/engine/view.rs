//! Phase: what one sink sees of the snapshot set, through its filters and
//! transforms (`bridge_core::view`), before it is planned. The entries are
//! hashed after the transform, so a changed transform rewrites exactly the
//! events whose output changes; an event a filter leaves out is absent from
//! the sink's set, so the planner deletes it like a source deletion, under
//! the same deletion budget.

use std::collections::{BTreeMap, HashMap};

use bridge_core::view::View;
use bridge_core::{EventKey, Item, content_hash};

use super::{Window, in_window};
use crate::engine::assemble::Entry;

/// The sink's set.
#[derive(Debug, Default)]
pub(crate) struct SinkSet {
    pub(crate) next: BTreeMap<EventKey, Entry>,
    /// Removed by this pass for the sink: the pass's removed items and the
    /// ones its filters leave out (shown while the budget holds the
    /// deletions back).
    pub(crate) removed: BTreeMap<EventKey, Entry>,
    /// Items left out, with the filter (config key) that did it.
    pub(crate) excluded: BTreeMap<EventKey, &'static str>,
}

fn shown(view: &View, e: &Entry) -> Entry {
    match &e.item {
        Item::Event(ev) => {
            let item = Item::Event(Box::new(view.transform.apply(ev)));
            Entry {
                hash: content_hash(&item),
                item,
            }
        }
        Item::Cancelled(_) => e.clone(),
    }
}

/// The set of a sink with `view`. A series whose master (or a single event)
/// a filter leaves out goes with its exceptions; an exception left out of
/// a series that stays is hidden as a cancelled occurrence.
pub(crate) fn apply(
    view: &View,
    next: &BTreeMap<EventKey, Entry>,
    removed: &BTreeMap<EventKey, Entry>,
) -> SinkSet {
    let mut out = SinkSet::default();
    let mut by_uid: HashMap<&str, &'static str> = HashMap::new();
    for (k, e) in next {
        if k.is_base()
            && let Item::Event(ev) = &e.item
            && let Some(why) = view.filter.excludes(ev)
        {
            by_uid.insert(k.uid(), why);
        }
    }
    for (k, e) in next {
        let why = by_uid.get(k.uid()).copied().or_else(|| match &e.item {
            Item::Event(ev) => view.filter.excludes(ev),
            Item::Cancelled(_) => None,
        });
        match why {
            None => {
                out.next.insert(k.clone(), shown(view, e));
            }
            Some(why) => {
                let master_stays =
                    !k.is_base() && !by_uid.contains_key(k.uid()) && next.contains_key(&k.master());
                if master_stays {
                    let item = Item::Cancelled(k.clone());
                    out.next.insert(
                        k.clone(),
                        Entry {
                            hash: content_hash(&item),
                            item,
                        },
                    );
                } else {
                    out.removed.insert(k.clone(), shown(view, e));
                }
                out.excluded.insert(k.clone(), why);
            }
        }
    }
    for (k, e) in removed {
        out.removed.insert(k.clone(), shown(view, e));
    }
    out
}

/// Whether `item` is inside the sink's own time frame (none: everywhere).
pub(crate) fn in_frame(view: Option<&View>, now: i64, item: &Item) -> bool {
    match view.and_then(View::frame) {
        None => true,
        Some((past, future)) => in_window(
            Some(Window {
                past_days: past.unwrap_or(u32::MAX),
                future_days: future.unwrap_or(u32::MAX),
            }),
            now,
            item,
        ),
    }
}
