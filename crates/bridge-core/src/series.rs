//! A calendar's items grouped into series, the shape every target writes
//! (see ARCHITECTURE.md, "Identity"):
//!
//! - a base item `<uid>_0` that is live is the series' base: a recurring
//!   master (it has a rule) or a single event;
//! - a live occurrence of a recurring master is one of its overrides
//!   (modified occurrences); a cancelled occurrence is one of its
//!   cancellations (EXDATE);
//! - a live occurrence whose master is absent, deleted or not recurring is an
//!   orphan: every target writes it as a standalone event of its own;
//! - deleted bases and cancellations of no master produce nothing to show.
//!
//! One [`Series`] per uid, in uid order; overrides, cancellations and
//! orphans in original-time order.

use std::collections::BTreeMap;

use crate::key::EventKey;
use crate::map::Warning;
use crate::model::{CanonicalEvent, Item};

/// Every item of one uid, grouped.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    pub uid: &'a str,
    /// The live base item (`<uid>_0`): a recurring master or a single event.
    pub base: Option<&'a CanonicalEvent>,
    /// Modified occurrences of a recurring base.
    pub overrides: Vec<&'a CanonicalEvent>,
    /// Original times (Unix seconds) of the cancelled occurrences of the uid
    /// (meaningful as EXDATEs only when the base recurs).
    pub cancelled: Vec<i64>,
    /// Live occurrences without a recurring master: standalone events.
    pub orphans: Vec<&'a CanonicalEvent>,
}

impl<'a> Series<'a> {
    /// The base when it is a recurring master.
    pub fn master(&self) -> Option<&'a CanonicalEvent> {
        self.base.filter(|b| b.rrule.is_some())
    }

    /// What a target that writes wall-clock time plus a zone must write
    /// instead of the master, when its local DTSTART would not resolve to
    /// Feishu's instants (see [`crate::instant::fix_series`]). Feishu lists
    /// the first occurrence itself when an override or a cancellation has
    /// the master's start as its original time.
    pub fn wall_clock_fix(&self) -> Option<crate::instant::SeriesFix> {
        let m = self.master()?;
        let first = m.start.instant();
        let listed = self.cancelled.contains(&first)
            || self
                .overrides
                .iter()
                .any(|o| o.key.original_time() == first);
        crate::instant::fix_series(m, listed)
    }

    /// The live item of `key` in this series.
    pub fn event(&self, key: &EventKey) -> Option<&'a CanonicalEvent> {
        if key.uid() != self.uid {
            return None;
        }
        if key.is_base() {
            return self.base;
        }
        self.overrides
            .iter()
            .chain(&self.orphans)
            .find(|e| e.key == *key)
            .copied()
    }

    /// Whether `key` is a cancelled occurrence of this series.
    pub fn is_cancelled(&self, key: &EventKey) -> bool {
        key.uid() == self.uid && !key.is_base() && self.cancelled.contains(&key.original_time())
    }

    /// Every live event of the series: base, overrides, orphans.
    pub fn events(&self) -> impl Iterator<Item = &'a CanonicalEvent> + '_ {
        self.base
            .into_iter()
            .chain(self.overrides.iter().copied())
            .chain(self.orphans.iter().copied())
    }
}

#[derive(Default)]
struct Slot<'a> {
    base: Option<&'a Item>,
    occurrences: BTreeMap<i64, &'a Item>,
}

/// Groups items into series; see the module docs.
pub fn group<'a>(items: impl IntoIterator<Item = &'a Item>) -> Vec<Series<'a>> {
    group_noting(items, &mut Vec::new())
}

/// [`group`], noting items that appear more than once (the last one wins).
pub fn group_noting<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    warnings: &mut Vec<Warning>,
) -> Vec<Series<'a>> {
    let mut slots: BTreeMap<&'a str, Slot<'a>> = BTreeMap::new();
    for item in items {
        let key = item.key();
        let slot = slots.entry(key.uid()).or_default();
        let previous = if key.is_base() {
            slot.base.replace(item)
        } else {
            slot.occurrences.insert(key.original_time(), item)
        };
        if previous.is_some() {
            warnings.push(Warning {
                event_id: Some(key.to_string()),
                message: "appears more than once in the input; the last one is used".to_owned(),
            });
        }
    }
    slots
        .into_iter()
        .map(|(uid, slot)| {
            let base = match slot.base {
                Some(Item::Event(e)) => Some(e.as_ref()),
                _ => None,
            };
            let recurring = base.is_some_and(|b| b.rrule.is_some());
            let mut s = Series {
                uid,
                base,
                overrides: Vec::new(),
                cancelled: Vec::new(),
                orphans: Vec::new(),
            };
            for (t, item) in slot.occurrences {
                match item {
                    Item::Event(e) if recurring => s.overrides.push(e),
                    Item::Event(e) => s.orphans.push(e),
                    Item::Cancelled(_) => s.cancelled.push(t),
                }
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventTime;

    fn ev(uid: &str, t: i64, rule: bool) -> Item {
        Item::Event(Box::new(CanonicalEvent {
            key: EventKey::new(uid, t).unwrap(),
            start: EventTime::Utc(1_700_000_000 + t),
            end: EventTime::Utc(1_700_003_600 + t),
            rrule: rule.then(|| "FREQ=DAILY".to_owned()),
            rrule_bound: None,
            summary: String::new(),
            description: String::new(),
            location: None,
            geo: None,
            url: None,
            conference: None,
            status: None,
            class: None,
            transparent: false,
            alarms: Vec::new(),
            organizer: None,
            attendees: Vec::new(),
            created: None,
        }))
    }

    fn gone(uid: &str, t: i64) -> Item {
        Item::Cancelled(EventKey::new(uid, t).unwrap())
    }

    #[test]
    fn a_master_with_overrides_and_cancellations() {
        let items = [ev("a", 0, true), ev("a", 200, false), gone("a", 100)];
        let s = group(&items);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].master().map(|m| m.key.to_string()), Some("a_0".into()));
        assert_eq!(s[0].overrides.len(), 1);
        assert_eq!(s[0].cancelled, vec![100]);
        assert!(s[0].orphans.is_empty());
        assert!(s[0].is_cancelled(&EventKey::new("a", 100).unwrap()));
        assert_eq!(s[0].events().count(), 2);
    }

    #[test]
    fn exceptions_without_a_recurring_master_are_orphans() {
        // Absent master, deleted master, single-event base.
        let items = [
            ev("a", 100, false),
            gone("b", 0),
            ev("b", 100, false),
            ev("c", 0, false),
            ev("c", 100, false),
            gone("c", 200),
        ];
        let s = group(&items);
        assert_eq!(
            s.iter()
                .map(|s| (s.uid, s.orphans.len()))
                .collect::<Vec<_>>(),
            vec![("a", 1), ("b", 1), ("c", 1)]
        );
        assert!(s[0].base.is_none() && s[1].base.is_none());
        assert!(s[2].base.is_some() && s[2].master().is_none());
        assert_eq!(s[2].cancelled, vec![200]);
    }

    #[test]
    fn duplicates_are_noted_and_the_last_one_wins() {
        let items = [ev("a", 0, false), ev("a", 0, true)];
        let mut w = Vec::new();
        let s = group_noting(&items, &mut w);
        assert_eq!(w.len(), 1);
        assert!(s[0].master().is_some());
    }
}
