//! What the engine decides for one event, per sink, without applying
//! anything (`feishu-bridge explain`). It runs the pass's own phases over
//! what the store holds: read the cursor, take the stored snapshots as the
//! snapshot set (a complete one: what the last passes listed), give each
//! sink its set through its filters and transforms and the sync window, and
//! plan the sink with the planner, deletion budget and retry times
//! included. The planner's decision for the event is the answer; nothing is
//! derived a second time.

use std::collections::{BTreeMap, BTreeSet};

use bridge_core::EventKey;
use bridge_core::hash::ContentHash;
use bridge_core::plan::{Decision, Op};
use bridge_store::{Failure, Record, SinkItemKey, Store};

use super::assemble::Entry;
use super::attendees::stored_entry;
use super::sinkplan::{PlanContext, decide_key, plan_sink};
use super::{AttendeeMode, EngineConfig, EngineError, in_window, view};

/// What the engine decides for one event of one calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub calendar: String,
    /// When the calendar was last synced (its cursor), if ever.
    pub last_sync: Option<i64>,
    /// The store holds a snapshot of the event.
    pub in_store: bool,
    /// Whether the event is inside the sync window (`None`: no window, or
    /// nothing to judge).
    pub in_window: Option<bool>,
    /// Set when the deletion budget holds this calendar's deletions back.
    pub blocked: Option<String>,
    /// Per sink, in the order given.
    pub sinks: Vec<SinkExplanation>,
}

/// What one sink holds of the event and what the planner decides for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkExplanation {
    pub sink: String,
    /// The content hash of the event as this sink gets it (its transforms
    /// applied); `None` when it gets nothing (left out, unmappable, gone).
    pub hash: Option<ContentHash>,
    pub record: Option<Record>,
    pub failure: Option<Failure>,
    pub verdict: Verdict,
}

/// The planner's answer for one event and one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The stored snapshot cannot be mapped: the sink keeps what it has.
    Unmappable,
    /// A filter of the sink leaves it out (the filter's key under
    /// `[sinks.filter]`).
    LeftOut(&'static str),
    /// The planner's decision; `waiting_until` is set when its op waits for
    /// the retry time of its last failure.
    Planned {
        decision: Decision,
        waiting_until: Option<i64>,
    },
    /// A deletion the deletion budget holds back (its message).
    HeldBack(String),
}

impl Verdict {
    /// The op the next pass applies, if any.
    pub fn op(&self, key: &EventKey) -> Option<Op> {
        match self {
            Verdict::Planned {
                decision: Decision::Create,
                ..
            } => Some(Op::Create(key.clone())),
            Verdict::Planned {
                decision: Decision::Update,
                ..
            } => Some(Op::Update(key.clone())),
            Verdict::Planned {
                decision: Decision::Delete,
                ..
            } => Some(Op::Delete(key.clone())),
            _ => None,
        }
    }
}

/// Explains `key` of calendar `calendar` for the sinks `sinks` (ids; a sink
/// no longer configured is planned without filters), as the engine
/// configured with `cfg` would plan them at `now`. `None` when the store
/// knows nothing of the event: no snapshot, record or failure.
pub async fn explain(
    store: &Store,
    cfg: &EngineConfig,
    sinks: &[String],
    calendar: &str,
    key: &EventKey,
    now: i64,
) -> Result<Option<Explanation>, EngineError> {
    // Read the cursor.
    let cursor = store.get_cursor(calendar).await?;
    // The snapshot set, as the last passes left it.
    let with_attendees = cfg.attendees.mode == AttendeeMode::Changed;
    let id = key.to_string();
    let mut next: BTreeMap<EventKey, Entry> = BTreeMap::new();
    let mut in_store = false;
    let mut mappable = false;
    for (k, snap) in store.list_snapshots(calendar).await? {
        let mine = k == id;
        in_store |= mine;
        if let Some((ek, e)) = stored_entry(&k, &snap.event_json, with_attendees) {
            mappable |= mine;
            next.insert(ek, e);
        }
    }
    let removed = BTreeMap::new();
    let failing: BTreeMap<(String, String), i64> = store
        .due_failures(i64::MAX)
        .await?
        .into_iter()
        .filter(|(k, _)| k.calendar_id == calendar)
        .map(|(k, f)| ((k.sink_id, k.event_key), f.next_retry_at))
        .collect();

    let mut out = Explanation {
        calendar: calendar.to_owned(),
        last_sync: cursor.and_then(|c| c.last_sync),
        in_store,
        in_window: match (cfg.window, next.get(key)) {
            (Some(w), Some(e)) => Some(in_window(Some(w), now, &e.item)),
            _ => None,
        },
        blocked: None,
        sinks: Vec::with_capacity(sinks.len()),
    };
    let mut known = in_store;
    for sink in sinks {
        // What the sink sees: its filters and transforms, the window.
        let v = cfg.views.get(sink).filter(|v| !v.is_identity());
        let set = v.map(|v| view::apply(v, &next, &removed));
        let sink_next = set.as_ref().map_or(&next, |s| &s.next);
        let windowed: BTreeMap<&EventKey, bool> = sink_next
            .iter()
            .map(|(k, e)| {
                (
                    k,
                    in_window(cfg.window, now, &e.item) && view::in_frame(v, now, &e.item),
                )
            })
            .collect();
        let cx = PlanContext {
            next: sink_next,
            windowed: &windowed,
            window_configured: cfg.window.is_some() || v.and_then(|v| v.frame()).is_some(),
            rules: &cfg.rules,
            now,
        };
        let records: BTreeMap<EventKey, Record> = store
            .list_records(sink, calendar)
            .await?
            .into_iter()
            .filter_map(|(k, r)| EventKey::parse(&k).ok().map(|k| (k, r)))
            .collect();
        let retry_at = |k: &EventKey| failing.get(&(sink.clone(), k.to_string())).copied();
        // The whole calendar is planned: the deletion budget counts every
        // deletion of the sink.
        let plan = plan_sink(cx, &records, &BTreeSet::new(), &retry_at);
        if let Some(b) = &plan.blocked {
            out.blocked.get_or_insert_with(|| b.message.clone());
        }
        let excluded = set.as_ref().and_then(|s| s.excluded.get(key).copied());
        let verdict = if in_store && !mappable {
            Verdict::Unmappable
        } else if let Some(filter) = excluded {
            Verdict::LeftOut(filter)
        } else if let Some(b) = plan.blocked.as_ref().filter(|b| b.held.contains(key)) {
            Verdict::HeldBack(b.message.clone())
        } else {
            Verdict::Planned {
                decision: decide_key(cx, &records, key),
                waiting_until: plan
                    .waiting
                    .iter()
                    .find(|(op, _)| op.key() == key)
                    .map(|(_, at)| *at),
            }
        };
        let failure = store
            .get_failure(&SinkItemKey::new(sink.as_str(), calendar, id.as_str()))
            .await?;
        let record = records.get(key).cloned();
        known |= record.is_some() || failure.is_some();
        out.sinks.push(SinkExplanation {
            sink: sink.clone(),
            hash: match excluded {
                Some(_) => None,
                None => sink_next.get(key).map(|e| e.hash),
            },
            record,
            failure,
            verdict,
        });
    }
    Ok(known.then_some(out))
}
