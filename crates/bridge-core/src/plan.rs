//! The pure planner: what the source says now versus what a sink has
//! recorded, as a list of operations, under the safety rules of
//! architecture.md section 4.
//!
//! - Deletions come only from a **complete** listing (a key recorded but not
//!   listed) or from an explicit `cancelled` item; a delta never deletes by
//!   absence.
//! - Nothing outside the sync window is written or deleted.
//! - A deletion budget stops a mass delete: more than `max_delete_count`
//!   deletions, or more than `max_delete_fraction` of the recorded events when
//!   that is more than `min_delete_for_fraction` deletions, counted in series
//!   (a master and its exceptions are one). The plan then holds
//!   no deletion at all and says why; creations and updates are unaffected.

use std::collections::BTreeMap;

use crate::hash::ContentHash;
use crate::key::EventKey;

/// The source's state of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Live with this content hash.
    Live(ContentHash),
    /// Explicitly deleted or cancelled in the source.
    Cancelled,
}

/// What the source told us about a calendar.
#[derive(Debug, Clone, Copy)]
pub enum SourceView<'a> {
    /// A complete, successful listing: every live item is in the map.
    Complete(&'a BTreeMap<EventKey, SourceState>),
    /// Only what changed since the last sync token.
    Delta(&'a BTreeMap<EventKey, SourceState>),
}

/// What a sink recorded for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    pub applied_hash: ContentHash,
}

/// One operation for a sink.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Create(EventKey),
    Update(EventKey),
    Delete(EventKey),
}

impl Op {
    pub fn key(&self) -> &EventKey {
        match self {
            Op::Create(k) | Op::Update(k) | Op::Delete(k) => k,
        }
    }

    /// The planner's name for the op (`create`, `update`, `delete`).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Create(_) => "create",
            Op::Update(_) => "update",
            Op::Delete(_) => "delete",
        }
    }

    /// Why [`plan`] decided it: the rule that produced each kind of op.
    pub fn reason(&self) -> &'static str {
        match self {
            Op::Create(_) => "live in the source, not recorded for the sink",
            Op::Update(_) => {
                "its content hash differs from the one last applied (or the target changed it)"
            }
            Op::Delete(_) => "recorded for the sink, no longer live in the source",
        }
    }
}

/// Limits of one planning run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub max_delete_count: usize,
    pub max_delete_fraction: f64,
    pub min_delete_for_fraction: usize,
    pub allow_mass_delete: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_delete_count: 50,
            max_delete_fraction: 0.10,
            min_delete_for_fraction: 5,
            allow_mass_delete: false,
        }
    }
}

/// Why deletions were held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// Events (a series counts once) that would be deleted.
    pub deletions: usize,
    /// Events (a series counts once) the sink holds.
    pub recorded: usize,
    /// The items whose deletion was held back, in key order.
    pub held: Vec<EventKey>,
    pub message: String,
}

/// The outcome of planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Creates and updates first (in key order), then deletes.
    pub ops: Vec<Op>,
    pub unchanged: usize,
    /// Items left alone because they are outside the sync window.
    pub outside_window: usize,
    /// Set when the deletion budget held deletions back.
    pub blocked: Option<BudgetExceeded>,
}

impl Plan {
    pub fn count(&self, f: fn(&Op) -> bool) -> usize {
        self.ops.iter().filter(|o| f(o)).count()
    }

    pub fn creates(&self) -> usize {
        self.count(|o| matches!(o, Op::Create(_)))
    }

    pub fn updates(&self) -> usize {
        self.count(|o| matches!(o, Op::Update(_)))
    }

    pub fn deletes(&self) -> usize {
        self.count(|o| matches!(o, Op::Delete(_)))
    }
}

/// What the planner decides for one item, before the deletion budget (which
/// [`plan`] applies to the deletions of the whole calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Live in the source, not recorded for the sink.
    Create,
    /// Live with another content hash than the one last applied.
    Update,
    /// Recorded, and cancelled in the source or missing from a complete
    /// listing.
    Delete,
    /// Recorded with the content hash the source has now.
    Unchanged,
    /// Outside the sync window: neither written nor deleted.
    OutsideWindow,
    /// Nothing to do: not recorded, and not live in the source (or a delta
    /// says nothing of it).
    Absent,
}

/// The rule [`plan`] applies to each item: `source` is what the listing
/// says of it (`None`: not listed), `recorded` what the sink holds,
/// `complete` whether the listing was complete (only then is an unlisted
/// record deleted).
pub fn decide(
    source: Option<SourceState>,
    recorded: Option<&RecordView>,
    in_window: bool,
    complete: bool,
) -> Decision {
    match (source, recorded) {
        (Some(_), _) if !in_window => Decision::OutsideWindow,
        (None, None) => Decision::Absent,
        (None, Some(_)) if !complete => Decision::Absent,
        (None, Some(_)) if !in_window => Decision::OutsideWindow,
        (None, Some(_)) => Decision::Delete,
        (Some(SourceState::Live(_)), None) => Decision::Create,
        (Some(SourceState::Live(h)), Some(r)) if r.applied_hash != h => Decision::Update,
        (Some(SourceState::Live(_)), Some(_)) => Decision::Unchanged,
        (Some(SourceState::Cancelled), Some(_)) => Decision::Delete,
        (Some(SourceState::Cancelled), None) => Decision::Absent,
    }
}

/// Plans one sink for one calendar. `in_window` says whether an item may be
/// touched (true for every key when no window is configured).
pub fn plan(
    source: SourceView<'_>,
    recorded: &BTreeMap<EventKey, RecordView>,
    in_window: &dyn Fn(&EventKey) -> bool,
    rules: &Rules,
) -> Plan {
    let mut out = Plan::default();
    let mut deletes = Vec::new();
    let (items, complete) = match source {
        SourceView::Complete(m) => (m, true),
        SourceView::Delta(m) => (m, false),
    };
    for (key, state) in items {
        match decide(Some(*state), recorded.get(key), in_window(key), complete) {
            Decision::Create => out.ops.push(Op::Create(key.clone())),
            Decision::Update => out.ops.push(Op::Update(key.clone())),
            Decision::Delete => deletes.push(key.clone()),
            Decision::Unchanged => out.unchanged += 1,
            Decision::OutsideWindow => out.outside_window += 1,
            Decision::Absent => {}
        }
    }
    if complete {
        for (key, r) in recorded {
            if items.contains_key(key) {
                continue;
            }
            match decide(None, Some(r), in_window(key), complete) {
                Decision::Delete => deletes.push(key.clone()),
                Decision::OutsideWindow => out.outside_window += 1,
                _ => {}
            }
        }
    }
    deletes.sort();
    // Counted in series: a deleted master and its exceptions are one deletion.
    let n = deletes
        .iter()
        .map(EventKey::uid)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let total = recorded
        .keys()
        .map(EventKey::uid)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let over_count = n > rules.max_delete_count;
    let over_fraction =
        n > rules.min_delete_for_fraction && (n as f64) > rules.max_delete_fraction * total as f64;
    if (over_count || over_fraction) && !rules.allow_mass_delete {
        out.blocked = Some(BudgetExceeded {
            deletions: n,
            recorded: total,
            message: format!(
                "{n} of {total} events (a series counts once; {} items) would be deleted, \
                 more than the deletion budget ({} events or {:.0}%); nothing was deleted. \
                 If the source really lost them, run again with --allow-mass-delete",
                deletes.len(),
                rules.max_delete_count,
                rules.max_delete_fraction * 100.0
            ),
            held: deletes,
        });
    } else {
        out.ops.extend(deletes.into_iter().map(Op::Delete));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u32) -> EventKey {
        EventKey::new(format!("u{i}"), 0).unwrap()
    }

    fn hash(v: u8) -> ContentHash {
        ContentHash([v; 32])
    }

    fn all(_: &EventKey) -> bool {
        true
    }

    #[test]
    fn decide_is_the_rule_plan_applies() {
        let r = RecordView {
            applied_hash: hash(1),
        };
        let live = Some(SourceState::Live(hash(1)));
        let changed = Some(SourceState::Live(hash(2)));
        assert_eq!(decide(live, None, true, false), Decision::Create);
        assert_eq!(decide(changed, Some(&r), true, false), Decision::Update);
        assert_eq!(decide(live, Some(&r), true, false), Decision::Unchanged);
        assert_eq!(
            decide(changed, Some(&r), false, true),
            Decision::OutsideWindow
        );
        assert_eq!(
            decide(Some(SourceState::Cancelled), Some(&r), true, false),
            Decision::Delete
        );
        assert_eq!(
            decide(None, Some(&r), true, false),
            Decision::Absent,
            "a delta never deletes by absence"
        );
        assert_eq!(decide(None, Some(&r), true, true), Decision::Delete);
        assert_eq!(decide(None, Some(&r), false, true), Decision::OutsideWindow);
        assert_eq!(decide(None, None, true, true), Decision::Absent);
    }

    #[test]
    fn create_update_keep_delete_from_a_complete_listing() {
        let source: BTreeMap<_, _> = [
            (key(1), SourceState::Live(hash(1))),
            (key(2), SourceState::Live(hash(9))),
            (key(3), SourceState::Live(hash(3))),
        ]
        .into();
        let recorded: BTreeMap<_, _> = [
            (
                key(2),
                RecordView {
                    applied_hash: hash(2),
                },
            ),
            (
                key(3),
                RecordView {
                    applied_hash: hash(3),
                },
            ),
            (
                key(4),
                RecordView {
                    applied_hash: hash(4),
                },
            ),
        ]
        .into();
        let p = plan(
            SourceView::Complete(&source),
            &recorded,
            &all,
            &Rules::default(),
        );
        assert_eq!(
            p.ops,
            vec![Op::Create(key(1)), Op::Update(key(2)), Op::Delete(key(4))]
        );
        assert_eq!(p.unchanged, 1);
    }

    #[test]
    fn a_delta_never_deletes_by_absence() {
        let source: BTreeMap<_, _> = [(key(1), SourceState::Cancelled)].into();
        let recorded: BTreeMap<_, _> = [
            (
                key(1),
                RecordView {
                    applied_hash: hash(1),
                },
            ),
            (
                key(2),
                RecordView {
                    applied_hash: hash(2),
                },
            ),
        ]
        .into();
        let p = plan(
            SourceView::Delta(&source),
            &recorded,
            &all,
            &Rules::default(),
        );
        assert_eq!(p.ops, vec![Op::Delete(key(1))]);
    }

    #[test]
    fn the_window_protects_what_is_outside_it() {
        let source = BTreeMap::new();
        let recorded: BTreeMap<_, _> = [
            (
                key(1),
                RecordView {
                    applied_hash: hash(1),
                },
            ),
            (
                key(2),
                RecordView {
                    applied_hash: hash(2),
                },
            ),
        ]
        .into();
        let p = plan(
            SourceView::Complete(&source),
            &recorded,
            &|k: &EventKey| k.uid() == "u1",
            &Rules::default(),
        );
        assert_eq!(p.ops, vec![Op::Delete(key(1))]);
        assert_eq!(p.outside_window, 1);
    }

    #[test]
    fn the_budget_stops_a_mass_delete() {
        let recorded: BTreeMap<_, _> = (0..100)
            .map(|i| {
                (
                    key(i),
                    RecordView {
                        applied_hash: hash(0),
                    },
                )
            })
            .collect();
        // A listing that suddenly lost 20 of 100 events.
        let source: BTreeMap<_, _> = (20..100)
            .map(|i| (key(i), SourceState::Live(hash(0))))
            .chain([(key(500), SourceState::Live(hash(1)))])
            .collect();
        let p = plan(
            SourceView::Complete(&source),
            &recorded,
            &all,
            &Rules::default(),
        );
        assert_eq!(p.deletes(), 0);
        assert_eq!(p.creates(), 1, "creations still go ahead");
        let b = p.blocked.unwrap();
        assert_eq!((b.deletions, b.recorded), (20, 100));
        assert!(b.message.contains("--allow-mass-delete"), "{}", b.message);
        let rules = Rules {
            allow_mass_delete: true,
            ..Rules::default()
        };
        assert_eq!(
            plan(SourceView::Complete(&source), &recorded, &all, &rules).deletes(),
            20
        );
        // Small calendars can lose a few events without tripping the fraction.
        let small: BTreeMap<_, _> = (0..3)
            .map(|i| {
                (
                    key(i),
                    RecordView {
                        applied_hash: hash(0),
                    },
                )
            })
            .collect();
        let empty = BTreeMap::new();
        assert_eq!(
            plan(
                SourceView::Complete(&empty),
                &small,
                &all,
                &Rules::default()
            )
            .deletes(),
            3
        );
        // Counted in series: a master and its exceptions are one deletion.
        let series: BTreeMap<_, _> = (0..100)
            .flat_map(|i| {
                [0, 1, 2].map(move |t| {
                    (
                        EventKey::new(format!("u{i}"), t).unwrap(),
                        RecordView {
                            applied_hash: hash(0),
                        },
                    )
                })
            })
            .collect();
        let kept: BTreeMap<_, _> = series
            .keys()
            .filter(|k| !["u1", "u2", "u3"].contains(&k.uid()))
            .map(|k| (k.clone(), SourceState::Live(hash(0))))
            .collect();
        let p = plan(
            SourceView::Complete(&kept),
            &series,
            &all,
            &Rules::default(),
        );
        assert!(
            p.blocked.is_none(),
            "3 series (9 items) are within the budget"
        );
        assert_eq!(p.deletes(), 9);
        // More than 50 is always blocked.
        let big: BTreeMap<_, _> = (0..1000)
            .map(|i| {
                (
                    key(i),
                    RecordView {
                        applied_hash: hash(0),
                    },
                )
            })
            .collect();
        let kept: BTreeMap<_, _> = (51..1000)
            .map(|i| (key(i), SourceState::Live(hash(0))))
            .collect();
        assert!(
            plan(SourceView::Complete(&kept), &big, &all, &Rules::default())
                .blocked
                .is_some()
        );
    }

    fn apply(
        recorded: &mut BTreeMap<EventKey, RecordView>,
        source: &BTreeMap<EventKey, SourceState>,
        p: &Plan,
    ) {
        for op in &p.ops {
            match op {
                Op::Create(k) | Op::Update(k) => {
                    let SourceState::Live(h) = source[k] else {
                        panic!("write of a cancelled item")
                    };
                    recorded.insert(k.clone(), RecordView { applied_hash: h });
                }
                Op::Delete(k) => {
                    recorded.remove(k);
                }
            }
        }
    }

    proptest! {
        /// Applying a plan and planning again yields nothing to do.
        #[test]
        fn planning_is_idempotent(
            src in prop::collection::btree_map(0u32..60, prop::option::of(0u8..4), 0..60),
            rec in prop::collection::btree_map(0u32..60, 0u8..4, 0..60),
            complete in any::<bool>(),
        ) {
            let source: BTreeMap<_, _> = src.into_iter().map(|(k, v)| (key(k), v.map_or(SourceState::Cancelled, |h| SourceState::Live(hash(h))))).collect();
            let mut recorded: BTreeMap<_, _> = rec.into_iter().map(|(k, v)| (key(k), RecordView { applied_hash: hash(v) })).collect();
            let rules = Rules { allow_mass_delete: true, ..Rules::default() };
            let view = if complete { SourceView::Complete(&source) } else { SourceView::Delta(&source) };
            let p = plan(view, &recorded, &all, &rules);
            apply(&mut recorded, &source, &p);
            let again = plan(view, &recorded, &all, &rules);
            prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
            // Nothing cancelled stays recorded; nothing live is missing.
            for (k, s) in &source {
                match s {
                    SourceState::Live(h) => prop_assert_eq!(recorded.get(k).map(|r| r.applied_hash), Some(*h)),
                    SourceState::Cancelled => prop_assert!(!recorded.contains_key(k)),
                }
            }
        }
    }
}
