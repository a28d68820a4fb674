//! Model-based property test: a fake source and a fake sink that fail at
//! random. Whatever the sequence of changes and failures, the engine never
//! creates an item twice in the sink, never writes a stale version over a
//! newer one without correcting it, and converges to the source once the
//! failures stop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bridge_core::feishu::{Event, EventStatus, TimeInfo, UnixSeconds};
use bridge_core::plan::{Op, Rules};
use bridge_core::{Item, content_hash, map_event};
use bridge_engine::{
    CalendarMeta, Engine, EngineConfig, ItemOutcome, Listing, Mode, RemoteRef, Replica,
    ReplicaInput, SeriesOutcome, Sink, SinkError, Source, SourceError, Target,
};
use bridge_store::{Backoff, Store};
use proptest::prelude::*;

#[derive(Debug, Default)]
struct SourceState {
    /// event_id -> (event, version); deleted events stay as cancelled.
    events: BTreeMap<String, (Event, u64)>,
    version: u64,
    fail_next: u32,
    expire_next: bool,
    calls: u64,
}

#[derive(Debug, Default, Clone)]
struct FakeSource(Arc<Mutex<SourceState>>);

fn event(id: u32, rev: u32) -> Event {
    Event {
        event_id: Some(format!("uid{id}_0")),
        summary: Some(format!("event {id} rev {rev}")),
        start_time: Some(TimeInfo {
            timestamp: Some(UnixSeconds(1_750_000_000 + i64::from(id) * 3600)),
            timezone: Some("Asia/Shanghai".into()),
            date: None,
        }),
        end_time: Some(TimeInfo {
            timestamp: Some(UnixSeconds(1_750_001_800 + i64::from(id) * 3600)),
            timezone: Some("Asia/Shanghai".into()),
            date: None,
        }),
        status: Some(EventStatus::Confirmed),
        ..Event::default()
    }
}

impl FakeSource {
    fn upsert(&self, id: u32, rev: u32) {
        let mut s = self.0.lock().unwrap();
        s.version += 1;
        let v = s.version;
        s.events.insert(format!("uid{id}_0"), (event(id, rev), v));
    }

    fn delete(&self, id: u32) {
        let mut s = self.0.lock().unwrap();
        s.version += 1;
        let v = s.version;
        let key = format!("uid{id}_0");
        if s.events.contains_key(&key) {
            let gone = Event {
                event_id: Some(key.clone()),
                status: Some(EventStatus::Cancelled),
                ..Event::default()
            };
            s.events.insert(key, (gone, v));
        }
    }

    /// event_id -> content hash of every live event.
    fn live(&self) -> BTreeMap<String, String> {
        let s = self.0.lock().unwrap();
        s.events
            .values()
            .filter(|(e, _)| e.status != Some(EventStatus::Cancelled))
            .map(|(e, _)| {
                let item = map_event(e, &mut Vec::new()).unwrap();
                (e.event_id.clone().unwrap(), content_hash(&item).to_string())
            })
            .collect()
    }
}

#[async_trait]
impl Source for FakeSource {
    async fn calendars(&self) -> Result<Vec<CalendarMeta>, SourceError> {
        Ok(vec![cal()])
    }

    async fn list(&self, _: &str, sync_token: Option<&str>) -> Result<Listing, SourceError> {
        let mut s = self.0.lock().unwrap();
        s.calls += 1;
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(SourceError::Unavailable("injected 503".into()));
        }
        if sync_token.is_some() && std::mem::take(&mut s.expire_next) {
            return Err(SourceError::CursorExpired);
        }
        let since: u64 = sync_token.map_or(0, |t| t.parse().unwrap());
        let events = s
            .events
            .values()
            .filter(|(e, v)| {
                if sync_token.is_some() {
                    *v > since
                } else {
                    e.status != Some(EventStatus::Cancelled)
                }
            })
            .map(|(e, _)| e.clone())
            .collect();
        Ok(Listing {
            events,
            sync_token: Some(s.version.to_string()),
            complete: sync_token.is_none(),
            calls: 1,
        })
    }
}

#[derive(Debug, Default)]
struct Remote {
    /// Server-assigned id -> (event key, hash); a real calendar, so a second
    /// create of the same key is a second item.
    items: BTreeMap<u64, (String, String)>,
    next_id: u64,
    fail: Vec<bool>,
    creates: u64,
}

#[derive(Debug, Default, Clone)]
struct FakeSink(Arc<Mutex<Remote>>);

impl Sink for FakeSink {
    fn target(&self) -> Target<'_> {
        Target::Replica(self)
    }
}

#[async_trait]
impl Replica for FakeSink {
    fn id(&self) -> &str {
        "fake"
    }

    async fn apply(&self, input: ReplicaInput<'_>) -> Vec<SeriesOutcome> {
        let mut r = self.0.lock().unwrap();
        let mut series_out = Vec::new();
        for so in input.ops {
            let mut out = Vec::new();
            for op in &so.ops {
                let fail = if r.fail.is_empty() {
                    false
                } else {
                    r.fail.remove(0)
                };
                if fail {
                    out.push(ItemOutcome {
                        op: op.clone(),
                        result: Err(SinkError::transient("injected 500")),
                    });
                    continue;
                }
                let key = op.key().to_string();
                let hash = so
                    .series
                    .and_then(|s| s.event(op.key()))
                    .map(|e| content_hash(&Item::Event(Box::new(e.clone()))).to_string());
                let existing: Vec<u64> = r
                    .items
                    .iter()
                    .filter(|(_, (k, _))| *k == key)
                    .map(|(id, _)| *id)
                    .collect();
                let result = match op {
                    Op::Create(_) => {
                        r.next_id += 1;
                        r.creates += 1;
                        let id = r.next_id;
                        r.items.insert(id, (key.clone(), hash.unwrap()));
                        Ok(RemoteRef {
                            id: id.to_string(),
                            etag: None,
                        })
                    }
                    Op::Update(_) => match existing.first() {
                        Some(id) => {
                            r.items.insert(*id, (key.clone(), hash.unwrap()));
                            Ok(RemoteRef {
                                id: id.to_string(),
                                etag: None,
                            })
                        }
                        None => Err(SinkError::Permanent("update of a missing item".into())),
                    },
                    Op::Delete(_) => {
                        for id in existing {
                            r.items.remove(&id);
                        }
                        Ok(RemoteRef {
                            id: String::new(),
                            etag: None,
                        })
                    }
                };
                out.push(ItemOutcome {
                    op: op.clone(),
                    result,
                });
            }
            series_out.push(SeriesOutcome {
                uid: so.uid.to_owned(),
                items: out,
            });
        }
        series_out
    }
}

fn cal() -> CalendarMeta {
    CalendarMeta {
        id: "cal1".into(),
        name: "Calendar".into(),
        timezone: None,
    }
}

#[derive(Debug, Clone)]
enum Step {
    Upsert(u32, u32),
    Delete(u32),
    Sync {
        full: bool,
        sink_failures: Vec<bool>,
        source_fails: u32,
        expire: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u32..12, 0u32..5).prop_map(|(i, r)| Step::Upsert(i, r)),
        2 => (0u32..12).prop_map(Step::Delete),
        3 => (any::<bool>(), prop::collection::vec(prop::bool::weighted(0.3), 0..8), 0u32..2, prop::bool::weighted(0.1))
            .prop_map(|(full, sink_failures, source_fails, expire)| Step::Sync { full, sink_failures, source_fails, expire }),
    ]
}

fn remote_view(sink: &FakeSink) -> BTreeMap<String, String> {
    sink.0.lock().unwrap().items.values().cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn converges_and_never_creates_twice(steps in prop::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let source = FakeSource::default();
            let sink = FakeSink::default();
            let store = Store::in_memory().await.unwrap();
            let cfg = EngineConfig {
                rules: Rules { allow_mass_delete: true, ..Rules::default() },
                // Failed items are retried on the next pass.
                failure_backoff: Backoff { base: std::time::Duration::ZERO, max: std::time::Duration::ZERO },
                ..EngineConfig::default()
            };
            let engine = Engine::new(Arc::new(source.clone()), vec![Arc::new(sink.clone())], store, cfg);
            let mut now = 1_760_000_000;
            for s in &steps {
                match s {
                    Step::Upsert(i, r) => source.upsert(*i, *r),
                    Step::Delete(i) => source.delete(*i),
                    Step::Sync { full, sink_failures, source_fails, expire } => {
                        sink.0.lock().unwrap().fail = sink_failures.clone();
                        {
                            let mut st = source.0.lock().unwrap();
                            st.fail_next = *source_fails;
                            st.expire_next = *expire;
                        }
                        now += 60;
                        let mode = if *full { Mode::Full } else { Mode::Incremental };
                        // A failed listing changes nothing.
                        let before = remote_view(&sink);
                        match engine.sync_calendar(&cal(), mode, false, now).await {
                            Ok(_) => {}
                            Err(e) => {
                                prop_assert!(e.is_source(), "{e}");
                                prop_assert_eq!(remote_view(&sink), before);
                            }
                        }
                        // Never two remote items for one key.
                        let r = sink.0.lock().unwrap();
                        let mut keys: Vec<&String> = r.items.values().map(|(k, _)| k).collect();
                        let n = keys.len();
                        keys.dedup();
                        prop_assert_eq!(keys.len(), n, "duplicate remote item: {:?}", r.items);
                    }
                }
            }
            // Failures stop: a couple of passes converge.
            sink.0.lock().unwrap().fail.clear();
            source.0.lock().unwrap().fail_next = 0;
            for _ in 0..2 {
                now += 60;
                engine.sync_calendar(&cal(), Mode::Incremental, false, now).await.unwrap();
            }
            prop_assert_eq!(remote_view(&sink), source.live());
            // And a full reconcile then has nothing to do.
            now += 60;
            let report = engine.sync_calendar(&cal(), Mode::Full, false, now).await.unwrap();
            let s = &report.sinks[0];
            prop_assert_eq!((s.created, s.updated, s.deleted, s.failed), (0, 0, 0, 0));
            Ok(())
        })?;
    }
}
