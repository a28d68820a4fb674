//! Phase: hand a sink's plan to its target, replica or projection.

use std::collections::BTreeMap;

use bridge_core::plan::Op;
use bridge_core::{EventKey, Series};
use bridge_store::Record;
use bridge_target::{
    ItemOutcome, ProjectionInput, Recorded, RemoteRef, ReplicaInput, SeriesOps, Sink, SinkError,
    Target,
};

use super::sinkplan::SinkPlan;
use crate::traits::CalendarMeta;

/// What a target answered.
#[derive(Debug)]
pub(crate) enum Outcomes {
    /// One outcome per op (a replica's per-series answers flattened, or a
    /// published projection: every op is where the calendar went).
    Items(Vec<ItemOutcome>),
    /// A projection could not publish the calendar: one failure for all.
    Failed(SinkError),
}

/// The records of a sink as the target seam shows them.
pub(crate) fn recorded_refs(records: &BTreeMap<EventKey, Record>) -> BTreeMap<EventKey, Recorded> {
    records
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                Recorded {
                    remote: RemoteRef {
                        id: r.remote_id.clone(),
                        etag: r.etag.clone(),
                    },
                    tombstone: r.tombstone,
                },
            )
        })
        .collect()
}

/// The planner's ops grouped per uid (in uid order, ops in plan order),
/// each with its series as it stands.
pub(crate) fn series_ops<'a>(series: &'a [Series<'a>], ops: &'a [Op]) -> Vec<SeriesOps<'a>> {
    let mut by_uid: BTreeMap<&'a str, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_uid.entry(op.key().uid()).or_default().push(op.clone());
    }
    by_uid
        .into_iter()
        .map(|(uid, ops)| SeriesOps {
            uid,
            series: series
                .binary_search_by(|s| s.uid.cmp(uid))
                .ok()
                .map(|i| &series[i]),
            ops,
        })
        .collect()
}

/// Applies `p` to `sink`; `series` is what the sink shows.
pub(crate) async fn apply(
    sink: &dyn Sink,
    cal: &CalendarMeta,
    series: &[Series<'_>],
    records: &BTreeMap<EventKey, Record>,
    p: &SinkPlan,
    now: i64,
) -> Outcomes {
    match sink.target() {
        Target::Replica(replica) => {
            if p.ops.is_empty() {
                return Outcomes::Items(Vec::new());
            }
            let refs = recorded_refs(records);
            let ops = series_ops(series, &p.ops);
            let answered = replica
                .apply(ReplicaInput {
                    calendar: cal,
                    series,
                    ops: &ops,
                    records: &refs,
                    now,
                })
                .await;
            Outcomes::Items(answered.into_iter().flat_map(|s| s.items).collect())
        }
        Target::Projection(projection) => {
            let published = projection
                .publish(ProjectionInput {
                    calendar: cal,
                    series,
                    revisions: &p.revisions,
                    changed: !p.ops.is_empty(),
                    now,
                })
                .await;
            match published {
                Ok(published) => {
                    let at = RemoteRef {
                        id: published.location,
                        etag: None,
                    };
                    Outcomes::Items(
                        p.ops
                            .iter()
                            .map(|op| ItemOutcome {
                                op: op.clone(),
                                result: Ok(at.clone()),
                            })
                            .collect(),
                    )
                }
                Err(e) => Outcomes::Failed(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::Item;

    #[test]
    fn ops_are_grouped_per_series() {
        let k = |u: &str, t| EventKey::new(u, t).unwrap();
        let items = [Item::Cancelled(k("a", 100))];
        let series = bridge_core::series::group(&items);
        let ops = [
            Op::Create(k("a", 100)),
            Op::Create(k("b", 0)),
            Op::Delete(k("a", 0)),
        ];
        let so = series_ops(&series, &ops);
        assert_eq!(so.len(), 2);
        assert_eq!(so[0].uid, "a");
        assert_eq!(so[0].ops, [Op::Create(k("a", 100)), Op::Delete(k("a", 0))]);
        assert!(so[0].series.is_some());
        assert!(so[1].series.is_none());
    }
}
