//! A room whose bookings go to a replica: a Google calendar, an EWS or a
//! Graph room mailbox.
//!
//! Each accepted booking instance is a standalone busy event of the room's
//! calendar, keyed `<uid>-<instant>_0` under the room id as the source
//! calendar. The replica's own identity rules (deterministic Google ids, the
//! EWS and Graph key tags) make every write repeatable: a create whose
//! record was lost in a crash lands on, and adopts, the event written
//! before it. The records of what was written (remote id, etag, content
//! hash, times) are kept in the replica's [`StateStore`] under the room id,
//! so a publish with nothing new makes no write at all.
//!
//! Deletions come only from the ledger (the complete set of accepted
//! bookings, read from the store: a failed read is an error before any
//! write) against the records: a booking that is no longer held is removed,
//! nothing else is. The planner's deletion budget is off here: the ledger
//! is the bridge's own, not a remote listing that could come back short.
//!
//! The room calendar's own busy times come from a [`BusyQuery`] (Google
//! `freeBusy`, EWS `GetUserAvailability`, Graph `getSchedule`), minus the
//! periods of the bookings written here.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::plan::{self, Op, RecordView, SourceState, SourceView};
use bridge_core::{ContentHash, EventKey};
use bridge_target::{Recorded, RemoteRef, Replica, ReplicaInput, SeriesOps, StateStore};
use serde::{Deserialize, Serialize};

use crate::decide::Busy;
use crate::target::{Booked, RoomCalendar, busy_calendar};

/// The room calendar's busy periods, as its service reports them.
#[async_trait]
pub trait BusyQuery: Send + Sync + std::fmt::Debug {
    /// Busy periods `(start, end)` in Unix seconds over `[from, to)`.
    async fn busy(&self, from: i64, to: i64) -> Result<Vec<(i64, i64)>, String>;
}

/// What a [`BusyFn`] returns.
pub type BusyFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<(i64, i64)>, String>> + Send>>;

/// A [`BusyQuery`] made of a function (how the binary plugs in each
/// service's client).
#[derive(Clone)]
pub struct BusyFn {
    what: String,
    f: Arc<dyn Fn(i64, i64) -> BusyFuture + Send + Sync>,
}

impl BusyFn {
    pub fn new(
        what: impl Into<String>,
        f: impl Fn(i64, i64) -> BusyFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            what: what.into(),
            f: Arc::new(f),
        }
    }
}

impl std::fmt::Debug for BusyFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusyFn").field("what", &self.what).finish()
    }
}

#[async_trait]
impl BusyQuery for BusyFn {
    async fn busy(&self, from: i64, to: i64) -> Result<Vec<(i64, i64)>, String> {
        (self.f)(from, to).await
    }
}

/// The longest window asked of a [`BusyQuery`] at once (seconds).
const WINDOW: i64 = 30 * 86_400;

/// The state name the records are kept under.
const STATE: &str = "room-bookings";

/// What was written for one booking instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    remote: String,
    #[serde(default)]
    etag: Option<String>,
    hash: String,
    start: i64,
    end: i64,
}

/// A room written to a replica.
#[derive(Debug, Clone)]
pub struct ReplicaRoom {
    replica: Arc<dyn Replica>,
    state: Arc<dyn StateStore>,
    busy: Option<Arc<dyn BusyQuery>>,
    what: String,
}

impl ReplicaRoom {
    /// `replica` writes into this room's calendar only (the binary builds
    /// one per room, with the mailbox or calendar id of the mapping);
    /// `state` keeps the records.
    pub fn new(
        replica: Arc<dyn Replica>,
        state: Arc<dyn StateStore>,
        busy: Option<Arc<dyn BusyQuery>>,
        what: impl Into<String>,
    ) -> Self {
        Self {
            replica,
            state,
            busy,
            what: what.into(),
        }
    }

    async fn records(&self, room_id: &str) -> Result<BTreeMap<String, Record>, String> {
        match self.state.get(STATE, room_id).await {
            Ok(None) => Ok(BTreeMap::new()),
            Ok(Some(j)) => serde_json::from_str(&j)
                .map_err(|e| format!("the records of room {room_id} cannot be read: {e}")),
            Err(e) => Err(format!("the records of room {room_id} cannot be read: {e}")),
        }
    }

    async fn save(&self, room_id: &str, records: &BTreeMap<String, Record>) -> Result<(), String> {
        let j = serde_json::to_string(records).map_err(|e| e.to_string())?;
        self.state
            .put(STATE, room_id, &j)
            .await
            .map_err(|e| format!("the records of room {room_id} cannot be saved: {e}"))
    }
}

/// The source key of a booking instance: a uid of its own, base item.
fn key_of(b: &Booked) -> Result<EventKey, String> {
    EventKey::new(b.id.replace('_', "-"), 0).map_err(|e| format!("booking {}: {e}", b.id))
}

/// `busy` minus every period of `own` (interval subtraction).
pub(crate) fn subtract(busy: &[(i64, i64)], own: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for &(s, e) in busy {
        let mut parts = vec![(s, e)];
        for &(os, oe) in own {
            parts = parts
                .into_iter()
                .flat_map(|(a, b)| {
                    if oe <= a || os >= b {
                        vec![(a, b)]
                    } else {
                        [(a, os.max(a)), (oe.min(b), b)]
                            .into_iter()
                            .filter(|(x, y)| x < y)
                            .collect()
                    }
                })
                .collect();
        }
        out.extend(parts);
    }
    out
}

#[async_trait]
impl RoomCalendar for ReplicaRoom {
    fn describe(&self) -> String {
        self.what.clone()
    }

    async fn publish(
        &self,
        room_id: &str,
        room_name: &str,
        timezone: &str,
        booked: &[Booked],
        now: i64,
    ) -> Result<(), String> {
        let mut records = self.records(room_id).await?;
        let mut times = BTreeMap::new();
        for b in booked {
            times.insert(key_of(b)?.to_string(), (b.start, b.end));
        }
        let (calendar, items) = busy_calendar(room_id, room_name, timezone, booked)?;
        let source: BTreeMap<EventKey, SourceState> = items
            .iter()
            .map(|i| {
                (
                    i.key().clone(),
                    SourceState::Live(bridge_core::hash::content_hash(i)),
                )
            })
            .collect();
        let recorded: BTreeMap<EventKey, RecordView> = records
            .iter()
            .filter_map(|(k, r)| {
                Some((
                    EventKey::parse(k).ok()?,
                    RecordView {
                        // A hash that does not parse compares unequal: one rewrite.
                        applied_hash: r.hash.parse().unwrap_or(ContentHash([0; 32])),
                    },
                ))
            })
            .collect();
        let rules = plan::Rules {
            allow_mass_delete: true,
            ..plan::Rules::default()
        };
        let p = plan::plan(SourceView::Complete(&source), &recorded, &|_| true, &rules);
        if p.ops.is_empty() {
            return Ok(());
        }
        let series = bridge_core::series::group(&items);
        let by_uid: BTreeMap<&str, &bridge_core::Series<'_>> =
            series.iter().map(|s| (s.uid, s)).collect();
        let mut grouped: BTreeMap<String, Vec<Op>> = BTreeMap::new();
        for op in &p.ops {
            grouped
                .entry(op.key().uid().to_owned())
                .or_default()
                .push(op.clone());
        }
        let ops: Vec<SeriesOps<'_>> = grouped
            .iter()
            .map(|(uid, ops)| SeriesOps {
                uid,
                series: by_uid.get(uid.as_str()).copied(),
                ops: ops.clone(),
            })
            .collect();
        let engine_records: BTreeMap<EventKey, Recorded> = records
            .iter()
            .filter_map(|(k, r)| {
                Some((
                    EventKey::parse(k).ok()?,
                    Recorded {
                        remote: RemoteRef {
                            id: r.remote.clone(),
                            etag: r.etag.clone(),
                        },
                        tombstone: false,
                    },
                ))
            })
            .collect();
        let outcomes = self
            .replica
            .apply(ReplicaInput {
                calendar: &calendar,
                series: &series,
                ops: &ops,
                records: &engine_records,
                now,
            })
            .await;
        let mut failed = Vec::new();
        for o in outcomes {
            for item in o.items {
                let key = item.op.key().to_string();
                match (item.op, item.result) {
                    (Op::Delete(_), Ok(_)) => {
                        records.remove(&key);
                    }
                    (Op::Create(k) | Op::Update(k), Ok(remote)) => {
                        let (Some(SourceState::Live(h)), Some((start, end))) =
                            (source.get(&k), times.get(&key))
                        else {
                            continue;
                        };
                        records.insert(
                            key,
                            Record {
                                remote: remote.id,
                                etag: remote.etag,
                                hash: h.to_string(),
                                start: *start,
                                end: *end,
                            },
                        );
                    }
                    (op, Err(e)) => failed.push(format!("{} {}: {e}", op.kind(), op.key())),
                }
            }
        }
        // What was written is recorded even when a part failed.
        self.save(room_id, &records).await?;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    async fn busy(&self, room_id: &str, from: i64, to: i64) -> Option<Result<Vec<Busy>, String>> {
        let q = self.busy.as_ref()?;
        let run = async {
            let own: Vec<(i64, i64)> = self
                .records(room_id)
                .await?
                .values()
                .map(|r| (r.start, r.end))
                .collect();
            // Free/busy services bound their window (EWS 42 days, Graph
            // 62): a series' horizon is asked 30 days at a time.
            let mut periods = Vec::new();
            let mut at = from;
            while at < to {
                let end = (at + WINDOW).min(to);
                periods.extend(q.busy(at, end).await?);
                at = end;
            }
            Ok(subtract(&periods, &own)
                .into_iter()
                .map(|(start, end)| Busy {
                    start,
                    end,
                    holder: format!("the room calendar ({})", self.what),
                })
                .collect())
        };
        Some(run.await)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bridge_core::Privacy;
    use bridge_sinks::memory::MemoryReplica;
    use bridge_target::StateError;

    use super::*;

    #[derive(Debug, Default)]
    struct Mem {
        map: Mutex<BTreeMap<(String, String), String>>,
        broken: Mutex<bool>,
    }

    #[async_trait]
    impl StateStore for Mem {
        async fn get(&self, name: &str, key: &str) -> Result<Option<String>, StateError> {
            if *self.broken.lock().unwrap() {
                return Err(StateError("disk on fire".into()));
            }
            Ok(self
                .map
                .lock()
                .unwrap()
                .get(&(name.into(), key.into()))
                .cloned())
        }
        async fn put(&self, name: &str, key: &str, v: &str) -> Result<(), StateError> {
            self.map
                .lock()
                .unwrap()
                .insert((name.into(), key.into()), v.into());
            Ok(())
        }
        async fn delete(&self, name: &str, key: &str) -> Result<bool, StateError> {
            Ok(self
                .map
                .lock()
                .unwrap()
                .remove(&(name.into(), key.into()))
                .is_some())
        }
    }

    #[derive(Debug)]
    struct Fixed(Result<Vec<(i64, i64)>, String>);

    #[async_trait]
    impl BusyQuery for Fixed {
        async fn busy(&self, _from: i64, _to: i64) -> Result<Vec<(i64, i64)>, String> {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn long_windows_are_asked_in_pieces() {
        #[derive(Debug, Default)]
        struct Windows(Mutex<Vec<(i64, i64)>>);
        #[async_trait]
        impl BusyQuery for Windows {
            async fn busy(&self, from: i64, to: i64) -> Result<Vec<(i64, i64)>, String> {
                self.0.lock().unwrap().push((from, to));
                Ok(vec![(from, from + 60)])
            }
        }
        let w = Arc::new(Windows::default());
        let room = ReplicaRoom::new(
            Arc::new(MemoryReplica::new("room", Privacy::Busy)),
            Arc::new(Mem::default()),
            Some(w.clone()),
            "m",
        );
        let busy = room
            .busy("omm_a", T, T + 70 * 86_400)
            .await
            .unwrap()
            .unwrap();
        let asked = w.0.lock().unwrap().clone();
        assert_eq!(
            asked,
            vec![
                (T, T + 30 * 86_400),
                (T + 30 * 86_400, T + 60 * 86_400),
                (T + 60 * 86_400, T + 70 * 86_400)
            ]
        );
        assert_eq!(busy.len(), 3);
    }

    fn booked(id: &str, start: i64) -> Booked {
        Booked {
            id: id.into(),
            start,
            end: start + 3600,
        }
    }

    const T: i64 = 1_800_000_000;

    fn room(r: &Arc<MemoryReplica>, s: &Arc<Mem>, busy: Option<Arc<dyn BusyQuery>>) -> ReplicaRoom {
        ReplicaRoom::new(r.clone(), s.clone(), busy, "memory")
    }

    #[tokio::test]
    async fn bookings_are_written_once_and_freed_slots_removed() {
        let r = Arc::new(MemoryReplica::new("room", Privacy::Busy));
        let s = Arc::new(Mem::default());
        let room = room(&r, &s, None);
        let two = [booked("u1_0", T), booked("u2_0", T + 7200)];
        room.publish("omm_a", "A", "UTC", &two, T).await.unwrap();
        assert_eq!((r.writes(), r.items().len()), (2, 2));
        room.publish("omm_a", "A", "UTC", &two, T).await.unwrap();
        assert_eq!(r.writes(), 2, "a no-op publish makes no write");
        room.publish("omm_a", "A", "UTC", &two[1..], T)
            .await
            .unwrap();
        assert_eq!(
            (r.writes(), r.items().len()),
            (3, 1),
            "the freed slot is removed"
        );
        let moved = [booked("u2_0", T + 9000)];
        room.publish("omm_a", "A", "UTC", &moved, T).await.unwrap();
        assert_eq!(
            (r.writes(), r.items().len()),
            (4, 1),
            "a moved booking is updated in place"
        );
    }

    #[tokio::test]
    async fn lost_records_are_adopted_and_failures_retried() {
        let r = Arc::new(MemoryReplica::new("room", Privacy::Busy));
        let s = Arc::new(Mem::default());
        let room = room(&r, &s, None);
        let one = [booked("u1_0", T)];
        room.publish("omm_a", "A", "UTC", &one, T).await.unwrap();
        // A crash between the write and its record.
        s.map.lock().unwrap().clear();
        room.publish("omm_a", "A", "UTC", &one, T).await.unwrap();
        assert_eq!(
            r.items().len(),
            1,
            "the earlier write is adopted, not duplicated"
        );
        // A failed write is an error and is tried again.
        r.fail_next(1);
        let two = [booked("u1_0", T), booked("u3_0", T + 7200)];
        assert!(room.publish("omm_a", "A", "UTC", &two, T).await.is_err());
        room.publish("omm_a", "A", "UTC", &two, T).await.unwrap();
        assert_eq!(r.items().len(), 2);
        // Unreadable records: nothing is written or deleted.
        *s.broken.lock().unwrap() = true;
        let writes = r.writes();
        assert!(room.publish("omm_a", "A", "UTC", &[], T).await.is_err());
        assert_eq!((r.writes(), r.items().len()), (writes, 2));
    }

    #[tokio::test]
    async fn busy_times_leave_out_our_own_bookings() {
        let r = Arc::new(MemoryReplica::new("room", Privacy::Busy));
        let s = Arc::new(Mem::default());
        let q: Arc<dyn BusyQuery> = Arc::new(Fixed(Ok(vec![(T, T + 3600), (T + 3600, T + 5400)])));
        let room = room(&r, &s, Some(q));
        room.publish("omm_a", "A", "UTC", &[booked("u1_0", T)], T)
            .await
            .unwrap();
        let busy = room.busy("omm_a", T, T + 86_400).await.unwrap().unwrap();
        assert_eq!(
            busy.iter().map(|b| (b.start, b.end)).collect::<Vec<_>>(),
            vec![(T + 3600, T + 5400)]
        );
        let failing = ReplicaRoom::new(r.clone(), s, Some(Arc::new(Fixed(Err("503".into())))), "m");
        assert!(failing.busy("omm_a", T, T + 1).await.unwrap().is_err());
        assert!(
            room_without_query(&r)
                .busy("omm_a", T, T + 1)
                .await
                .is_none()
        );
    }

    fn room_without_query(r: &Arc<MemoryReplica>) -> ReplicaRoom {
        ReplicaRoom::new(r.clone(), Arc::new(Mem::default()), None, "m")
    }

    #[test]
    fn own_bookings_are_left_out_of_busy_times() {
        assert_eq!(subtract(&[(0, 100)], &[(20, 40)]), vec![(0, 20), (40, 100)]);
        assert_eq!(subtract(&[(0, 100)], &[(0, 100)]), vec![]);
        assert_eq!(subtract(&[(10, 20)], &[(30, 40)]), vec![(10, 20)]);
        assert_eq!(
            subtract(&[(0, 10), (50, 60)], &[(5, 55)]),
            vec![(0, 5), (55, 60)]
        );
    }
}
