//! `Engine::explain`: the planner's own decision for one event per sink,
//! from what the store holds, without applying anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use bridge_core::feishu::Event;
use bridge_core::plan::{Decision, Op, Rules};
use bridge_core::view::{Filter, View};
use bridge_core::{EventKey, Privacy};
use bridge_engine::{Engine, EngineConfig, Sink, Verdict, Window};
use bridge_sinks::memory::MemoryReplica;
use bridge_store::Store;

// The scripted source, calendar and clock of the views tests.
use crate::views::{DAY, NOW, StaticSource, cal};

fn ev(uid: &str, start: i64, visibility: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "event_id": format!("{uid}_0"),
        "summary": uid,
        "start_time": {"timestamp": start.to_string(), "timezone": "UTC"},
        "end_time": {"timestamp": (start + 3600).to_string(), "timezone": "UTC"},
        "status": "confirmed",
        "visibility": visibility,
    }))
    .unwrap()
}

struct Setup {
    source: Arc<StaticSource>,
    filtered: Arc<MemoryReplica>,
    plain: Arc<MemoryReplica>,
    store: Store,
}

impl Setup {
    async fn new() -> Self {
        Self {
            source: Arc::new(StaticSource::in_calendar(
                cal(),
                vec![
                    ev("plain", NOW + DAY, "default"),
                    ev("private", NOW + DAY, "private"),
                    ev("old", NOW - 100 * DAY, "default"),
                ],
            )),
            filtered: Arc::new(MemoryReplica::new("filtered", Privacy::Full)),
            plain: Arc::new(MemoryReplica::new("plain", Privacy::Full)),
            store: Store::in_memory().await.unwrap(),
        }
    }

    /// The filtered sink skips private events; `window` as the sync window.
    fn engine(&self, window: Option<Window>) -> Engine {
        let views = BTreeMap::from([(
            self.filtered.id().to_owned(),
            View {
                filter: Filter {
                    skip_private: true,
                    ..Filter::default()
                },
                ..View::default()
            },
        )]);
        Engine::new(
            self.source.clone(),
            vec![
                self.filtered.clone() as Arc<dyn Sink>,
                self.plain.clone() as Arc<dyn Sink>,
            ],
            self.store.clone(),
            EngineConfig {
                rules: Rules::default(),
                window,
                views,
                ..EngineConfig::default()
            },
        )
    }
}

fn key(uid: &str) -> EventKey {
    EventKey::new(uid, 0).unwrap()
}

fn planned(d: Decision) -> Verdict {
    Verdict::Planned {
        decision: d,
        waiting_until: None,
    }
}

#[tokio::test]
async fn written_events_are_up_to_date_and_a_filter_names_itself() {
    let s = Setup::new().await;
    let engine = s.engine(None);
    engine.reconcile(None, false, NOW).await.unwrap();

    let x = engine
        .explain("cal1", &key("plain"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert!(x.in_store);
    assert_eq!(x.in_window, None, "no window configured");
    assert_eq!(x.last_sync, Some(NOW));
    assert_eq!(x.sinks.len(), 2);
    for sink in &x.sinks {
        assert_eq!(sink.verdict, planned(Decision::Unchanged), "{}", sink.sink);
        let record = sink.record.as_ref().unwrap();
        assert_eq!(record.applied_hash, sink.hash.unwrap().to_string());
        assert!(sink.failure.is_none());
    }

    let x = engine
        .explain("cal1", &key("private"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.sinks[0].verdict, Verdict::LeftOut("skip_private"));
    assert_eq!(x.sinks[0].hash, None);
    assert!(x.sinks[0].record.is_none());
    assert_eq!(x.sinks[1].verdict, planned(Decision::Unchanged));

    // Unknown to the store: nothing to explain.
    assert!(
        engine
            .explain("cal1", &key("nope"), NOW)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_change_not_yet_synced_is_planned_as_the_pass_would() {
    let s = Setup::new().await;
    let engine = s.engine(None);
    engine.reconcile(None, false, NOW).await.unwrap();
    // A dry run lists nothing into the store; the source changed since the
    // last pass: nothing changes for explain either.
    s.source.0.lock().unwrap()[0] = ev("plain", NOW + 2 * DAY, "default");
    engine.reconcile(None, true, NOW).await.unwrap();
    let x = engine
        .explain("cal1", &key("plain"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.sinks[1].verdict, planned(Decision::Unchanged));

    // The snapshot is newer than the record: an update.
    let snap = s
        .store
        .get_snapshot("cal1", "plain_0")
        .await
        .unwrap()
        .unwrap();
    let mut changed: serde_json::Value = serde_json::from_str(&snap.event_json).unwrap();
    changed["summary"] = "renamed".into();
    let mut b = bridge_store::Batch::new();
    b.put_snapshot(
        "cal1",
        "plain_0",
        bridge_store::Snapshot {
            event_json: changed.to_string(),
            ..snap
        },
    );
    s.store.apply_batch(b).await.unwrap();
    let x = engine
        .explain("cal1", &key("plain"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.sinks[1].verdict, planned(Decision::Update));
    assert_eq!(
        x.sinks[1].verdict.op(&key("plain")),
        Some(Op::Update(key("plain")))
    );
    assert_ne!(
        x.sinks[1].record.as_ref().unwrap().applied_hash,
        x.sinks[1].hash.unwrap().to_string()
    );
}

#[tokio::test]
async fn a_failed_write_waits_for_its_retry_time() {
    let s = Setup::new().await;
    let engine = s.engine(None);
    s.plain.fail_next(100);
    engine.reconcile(None, false, NOW).await.unwrap();
    let x = engine
        .explain("cal1", &key("plain"), NOW)
        .await
        .unwrap()
        .unwrap();
    let plain = &x.sinks[1];
    let failure = plain.failure.as_ref().expect("the write failed");
    assert!(plain.record.is_none());
    assert_eq!(
        plain.verdict,
        Verdict::Planned {
            decision: Decision::Create,
            waiting_until: Some(failure.next_retry_at),
        }
    );
    assert!(failure.next_retry_at > NOW);
    // Once the retry time has come, the next pass writes it.
    let later = failure.next_retry_at + 1;
    let x = engine
        .explain("cal1", &key("plain"), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.sinks[1].verdict, planned(Decision::Create));
}

#[tokio::test]
async fn outside_the_window_nothing_is_written() {
    let s = Setup::new().await;
    let window = Some(Window {
        past_days: 30,
        future_days: 365,
    });
    let engine = s.engine(window);
    engine.reconcile(None, false, NOW).await.unwrap();
    assert!(!s.plain.items().contains_key(&key("old")));
    let x = engine
        .explain("cal1", &key("old"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.in_window, Some(false));
    assert_eq!(x.sinks[1].verdict, planned(Decision::OutsideWindow));
    let x = engine
        .explain("cal1", &key("plain"), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.in_window, Some(true));
}
