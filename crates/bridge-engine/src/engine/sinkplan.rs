//! Phase: plan one sink against its records (pure). The planner
//! (`bridge_core::plan`) decides, the deletion budget included; this adds
//! what the engine knows around it: drift rewrites, tombstones, retry times
//! and the revisions (SEQUENCE / LAST-MODIFIED) the ops lead to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bridge_core::hash::ContentHash;
use bridge_core::plan::{
    BudgetExceeded, Decision, Op, RecordView, Rules, SourceState, SourceView, decide, plan,
};
use bridge_core::{EventKey, Revision};
use bridge_store::Record;

use super::assemble::Entry;

/// What the planner decided for one sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SinkPlan {
    /// The ops to apply now (creates and updates first, then deletes).
    pub(crate) ops: Vec<Op>,
    /// Ops waiting for the retry time of their last failure.
    pub(crate) deferred: usize,
    /// Those ops, with their retry time.
    pub(crate) waiting: Vec<(Op, i64)>,
    pub(crate) unchanged: usize,
    /// Set when the deletion budget held deletions back.
    pub(crate) blocked: Option<BudgetExceeded>,
    /// SEQUENCE / LAST-MODIFIED of every item after the ops.
    pub(crate) revisions: HashMap<EventKey, Revision>,
}

/// What the pass knows when it plans a sink.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanContext<'a> {
    pub(crate) next: &'a BTreeMap<EventKey, Entry>,
    /// Whether each item of `next` is inside the sync window.
    pub(crate) windowed: &'a BTreeMap<&'a EventKey, bool>,
    pub(crate) window_configured: bool,
    pub(crate) rules: &'a Rules,
    pub(crate) now: i64,
}

const NEVER_APPLIED: ContentHash = ContentHash([0; 32]);

/// Plans one sink: `rewrite` are items drift repair wants written again,
/// `retry_at` the retry time of an item's last failure.
pub(crate) fn plan_sink(
    cx: PlanContext<'_>,
    records: &BTreeMap<EventKey, Record>,
    rewrite: &BTreeSet<EventKey>,
    retry_at: &dyn Fn(&EventKey) -> Option<i64>,
) -> SinkPlan {
    let src: BTreeMap<EventKey, SourceState> = cx
        .next
        .iter()
        .map(|(k, e)| (k.clone(), SourceState::Live(e.hash)))
        .collect();
    let recorded: BTreeMap<EventKey, RecordView> = records
        .iter()
        .map(|(k, r)| (k.clone(), record_view(cx, rewrite, k, r)))
        .collect();
    let in_win = |k: &EventKey| in_window(cx, records, k);
    let p = plan(SourceView::Complete(&src), &recorded, &in_win, cx.rules);
    let mut out = SinkPlan {
        unchanged: p.unchanged,
        blocked: p.blocked,
        ..SinkPlan::default()
    };
    for op in p.ops {
        match retry_at(op.key()) {
            Some(at) if at > cx.now => {
                out.deferred += 1;
                out.waiting.push((op, at));
            }
            _ => out.ops.push(op),
        }
    }
    out.revisions = revisions(records, &out.ops, cx.now);
    out
}

/// What the planner sees of a record: the hash last applied (none for a
/// rewrite drift repair wants; a tombstone counts as holding the current
/// version: deleted on the target and to stay so, never rewritten, only
/// forgotten once the source drops it).
fn record_view(
    cx: PlanContext<'_>,
    rewrite: &BTreeSet<EventKey>,
    k: &EventKey,
    r: &Record,
) -> RecordView {
    let applied_hash = if rewrite.contains(k) {
        NEVER_APPLIED
    } else if r.tombstone {
        cx.next.get(k).map_or(NEVER_APPLIED, |e| e.hash)
    } else {
        r.applied_hash.parse().unwrap_or(NEVER_APPLIED)
    };
    RecordView { applied_hash }
}

/// Whether the planner may touch `k`: recorded items outside the window are
/// left alone, never deleted.
fn in_window(cx: PlanContext<'_>, records: &BTreeMap<EventKey, Record>, k: &EventKey) -> bool {
    cx.windowed
        .get(k)
        .copied()
        .unwrap_or(!cx.window_configured || !records.contains_key(k))
}

/// The planner's rule for one item, with the inputs [`plan_sink`] gives it
/// (`explain`); the deletion budget and retry times are the plan's.
pub(crate) fn decide_key(
    cx: PlanContext<'_>,
    records: &BTreeMap<EventKey, Record>,
    key: &EventKey,
) -> Decision {
    let source = cx.next.get(key).map(|e| SourceState::Live(e.hash));
    let recorded = records
        .get(key)
        .map(|r| record_view(cx, &BTreeSet::new(), key, r));
    decide(source, recorded.as_ref(), in_window(cx, records, key), true)
}

/// SEQUENCE / LAST-MODIFIED after `ops`: recorded ones stay, a create starts
/// at 0, an update bumps the sequence; both take `now`.
pub(crate) fn revisions(
    records: &BTreeMap<EventKey, Record>,
    ops: &[Op],
    now: i64,
) -> HashMap<EventKey, Revision> {
    let mut revisions: HashMap<EventKey, Revision> = records
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                Revision {
                    sequence: r.sequence,
                    last_modified: r.applied_at,
                },
            )
        })
        .collect();
    for op in ops {
        let sequence = match op {
            Op::Create(_) => 0,
            Op::Update(k) => records.get(k).map_or(0, |r| r.sequence.saturating_add(1)),
            Op::Delete(_) => continue,
        };
        revisions.insert(
            op.key().clone(),
            Revision {
                sequence,
                last_modified: now,
            },
        );
    }
    revisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::Item;

    fn key(i: u32) -> EventKey {
        EventKey::new(format!("u{i}"), 0).unwrap()
    }

    fn entry(i: u32, h: u8) -> (EventKey, Entry) {
        (
            key(i),
            Entry {
                hash: ContentHash([h; 32]),
                item: Item::Cancelled(key(i)),
            },
        )
    }

    fn record(h: u8, sequence: u32) -> Record {
        Record {
            remote_id: "r".into(),
            etag: None,
            applied_hash: ContentHash([h; 32]).to_string(),
            applied_at: 10,
            sequence,
            tombstone: false,
        }
    }

    fn cx<'a>(
        next: &'a BTreeMap<EventKey, Entry>,
        windowed: &'a BTreeMap<&'a EventKey, bool>,
        rules: &'a Rules,
    ) -> PlanContext<'a> {
        PlanContext {
            next,
            windowed,
            window_configured: false,
            rules,
            now: 100,
        }
    }

    #[test]
    fn creates_updates_and_revisions() {
        let next: BTreeMap<_, _> = [entry(1, 1), entry(2, 2)].into();
        let windowed = next.keys().map(|k| (k, true)).collect();
        let records: BTreeMap<_, _> = [(key(2), record(9, 4))].into();
        let rules = Rules::default();
        let p = plan_sink(
            cx(&next, &windowed, &rules),
            &records,
            &BTreeSet::new(),
            &|_| None,
        );
        assert_eq!(p.ops, [Op::Create(key(1)), Op::Update(key(2))]);
        assert_eq!(
            p.revisions[&key(1)],
            Revision {
                sequence: 0,
                last_modified: 100
            }
        );
        assert_eq!(
            p.revisions[&key(2)],
            Revision {
                sequence: 5,
                last_modified: 100
            }
        );
    }

    #[test]
    fn failures_wait_for_their_retry_time_and_drift_rewrites() {
        let next: BTreeMap<_, _> = [entry(1, 1), entry(2, 2)].into();
        let windowed = next.keys().map(|k| (k, true)).collect();
        let records: BTreeMap<_, _> = [(key(2), record(2, 0))].into();
        let rules = Rules::default();
        let rewrite: BTreeSet<_> = [key(2)].into();
        let later = |k: &EventKey| (*k == key(1)).then_some(500);
        let p = plan_sink(cx(&next, &windowed, &rules), &records, &rewrite, &later);
        assert_eq!(p.ops, [Op::Update(key(2))]);
        assert_eq!(p.deferred, 1);
        assert_eq!(p.waiting, [(Op::Create(key(1)), 500)]);
    }

    #[test]
    fn the_budget_is_the_planners() {
        let next: BTreeMap<_, _> = (20..100).map(|i| entry(i, 0)).collect();
        let windowed = next.keys().map(|k| (k, true)).collect();
        let records: BTreeMap<_, _> = (0..100).map(|i| (key(i), record(0, 0))).collect();
        let rules = Rules::default();
        let p = plan_sink(
            cx(&next, &windowed, &rules),
            &records,
            &BTreeSet::new(),
            &|_| None,
        );
        assert!(p.ops.is_empty());
        let b = p.blocked.unwrap();
        assert_eq!((b.deletions, b.recorded), (20, 100));
        assert!(b.message.contains("--allow-mass-delete"));
    }
}
