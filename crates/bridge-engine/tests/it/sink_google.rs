//! The Google sink through the real engine: a static source of sample
//! events, the Google emulator as the target.

use std::sync::Arc;

use bridge_core::feishu::Event;
use bridge_emulators::google::{GoogleEmulator, SCOPE_CALENDAR};
use bridge_engine::{Engine, EngineConfig, Sink};
use bridge_sinks::google::{GoogleSink, GoogleSinkConfig, OnTargetDelete, TargetCalendar};
use bridge_store::Store;

use crate::static_source::StaticSource;

use crate::google_common::{ALICE, client_config, fast_config, refresh_credentials, start_with};

const BASE: i64 = 1_790_000_000;

struct Setup {
    emu: GoogleEmulator,
    engine: Engine,
    sink: Arc<GoogleSink>,
    source: Arc<StaticSource>,
    target: String,
}

async fn setup(on_delete: OnTargetDelete, batch: bool) -> Setup {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let target = emu.create_calendar(ALICE, "Mirror");
    let refresh = emu.issue_refresh_token(ALICE, SCOPE_CALENDAR);
    let store = Store::in_memory().await.unwrap();
    let sink = Arc::new(GoogleSink::new(
        GoogleSinkConfig {
            id: "google:test".into(),
            privacy: bridge_core::Privacy::Full,
            target: TargetCalendar::Fixed(target.clone()),
            write_attendees: false,
            on_target_delete: on_delete,
            batch,
            client: client_config(&emu),
        },
        Some(refresh_credentials(&emu, &refresh)),
        Arc::new(bridge_engine::SinkState::new(store.clone(), "google:test")),
    ));
    let events: Vec<Event> = bridge_core::sample::events(300, 42, BASE);
    let source = Arc::new(StaticSource::new(events));
    let engine = Engine::new(
        source.clone(),
        vec![sink.clone() as Arc<dyn Sink>],
        store,
        EngineConfig::default(),
    );
    Setup {
        emu,
        engine,
        sink,
        source,
        target,
    }
}

fn live_ids(emu: &GoogleEmulator, cal: &str) -> Vec<String> {
    emu.events(cal)
        .into_iter()
        .filter(|e| e.status != "cancelled")
        .map(|e| e.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_then_makes_no_writes() {
    let s = setup(OnTargetDelete::Restore, true).await;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(sr.failed, 0, "{:?}", sr.errors);
    assert!(sr.created > 0);
    let writes = s.emu.write_count();
    assert!(s.emu.batch_count() > 0);
    let r2 = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr2 = &r2[0].sinks[0];
    assert_eq!(
        (sr2.created, sr2.updated, sr2.deleted),
        (0, 0, 0),
        "{sr2:?}"
    );
    assert_eq!(s.emu.write_count(), writes, "second reconcile wrote");
    assert!(s.sink.stats().unwrap().api_calls > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_delete_is_restored_or_respected() {
    for mode in [OnTargetDelete::Restore, OnTargetDelete::Respect] {
        let s = setup(mode, false).await;
        s.engine.reconcile(None, false, BASE).await.unwrap();
        let victim = live_ids(&s.emu, &s.target)
            .into_iter()
            .find(|id| !id.contains('_'))
            .unwrap();
        s.emu.user_delete_event(&s.target, &victim);
        let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
        let sr = &r[0].sinks[0];
        let live = live_ids(&s.emu, &s.target).contains(&victim);
        match mode {
            OnTargetDelete::Restore => {
                assert!(live, "restored");
                assert_eq!(sr.drift_rewrites, 1, "{sr:?}");
            }
            OnTargetDelete::Respect => {
                assert!(!live, "left deleted");
                assert_eq!(sr.tombstoned, 1, "{sr:?}");
            }
        }
        let writes = s.emu.write_count();
        let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
        assert_eq!(r[0].sinks[0].drift_rewrites, 0);
        assert_eq!(s.emu.write_count(), writes, "{mode:?}: third pass wrote");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_and_user_edits_are_repaired() {
    let s = setup(OnTargetDelete::Restore, true).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    // The source loses one event (below the deletion budget) while its
    // record is lost too: only drift repair can find the orphan.
    let edited = live_ids(&s.emu, &s.target)
        .into_iter()
        .find(|id| !id.contains('_'))
        .unwrap();
    s.emu.user_edit_event(
        &s.target,
        &edited,
        serde_json::json!({"summary": "edited in Google"}),
    );
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(r[0].sinks[0].drift_rewrites, 1);
    let ev = s.emu.event(&s.target, &edited).unwrap();
    assert_ne!(ev.resource["summary"], "edited in Google");
    drop(s.source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rule_leaves_no_stale_instance() {
    let s = setup(OnTargetDelete::Restore, true).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    // A master with a modified occurrence: its rule changes (weekly -> daily
    // count 3), and its exceptions vanish as Feishu drops them.
    let uid = {
        let evs = s.source.0.lock().unwrap();
        let masters: Vec<String> = evs
            .iter()
            .filter(|e| e.recurrence.as_deref().is_some_and(|r| !r.is_empty()))
            .filter_map(|e| e.event_id.clone())
            .collect();
        masters
            .into_iter()
            .find(|m| {
                evs.iter().any(|e| {
                    e.recurring_event_id.as_deref() == Some(m.as_str())
                        || e.event_id
                            .as_deref()
                            .is_some_and(|id| id.starts_with(&format!("{m}_")))
                })
            })
            .expect("the sample has a series with an exception")
    };
    let before: Vec<String> = live_ids(&s.emu, &s.target)
        .into_iter()
        .filter(|id| id.contains('_'))
        .collect();
    assert!(!before.is_empty());
    {
        let mut evs = s.source.0.lock().unwrap();
        evs.retain(|e| {
            e.event_id.as_deref() == Some(uid.as_str())
                || !(e.recurring_event_id.as_deref() == Some(uid.as_str())
                    || e.event_id
                        .as_deref()
                        .is_some_and(|id| id.starts_with(&format!("{uid}_"))))
        });
        for e in evs.iter_mut() {
            if e.event_id.as_deref() == Some(uid.as_str()) {
                e.recurrence = Some("FREQ=DAILY;COUNT=3".into());
            }
        }
    }
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    // Every live exception left belongs to a live master.
    let all = s.emu.events(&s.target);
    let live_masters: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|e| e.status != "cancelled" && e.recurring_event_id.is_none())
        .map(|e| e.id.as_str())
        .collect();
    for e in all.iter().filter(|e| e.status != "cancelled") {
        if let Some(m) = &e.recurring_event_id {
            assert!(live_masters.contains(m.as_str()), "stale instance {}", e.id);
        }
    }
    let writes = s.emu.write_count();
    let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(
        s.emu.write_count(),
        writes,
        "{:?} {:?}",
        r[0].sinks[0],
        s.emu.writes().last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_pauses_the_sink_and_keeps_its_queue() {
    let s = setup(OnTargetDelete::Restore, true).await;
    s.emu.exhaust_daily_quota(ALICE);
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    assert!(
        sr.paused.as_deref().is_some_and(|m| m.contains("quota")),
        "{sr:?}"
    );
    assert_eq!((sr.created, sr.failed), (0, 0));
    assert!(s.sink.paused().is_some());
    // Nothing was recorded: once the quota is back (a fresh sink stands for
    // the hour passing), everything is planned and written.
    let records = s
        .engine
        .store()
        .list_records("google:test", "feishu_cal_1")
        .await
        .unwrap();
    assert!(records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_calendars_makes_and_remembers_one_calendar() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let refresh = emu.issue_refresh_token(ALICE, SCOPE_CALENDAR);
    let store = Store::in_memory().await.unwrap();
    let sink = Arc::new(GoogleSink::new(
        GoogleSinkConfig {
            id: "google:auto".into(),
            privacy: bridge_core::Privacy::Full,
            target: TargetCalendar::CreatePerSource,
            write_attendees: false,
            on_target_delete: OnTargetDelete::Restore,
            batch: true,
            client: client_config(&emu),
        },
        Some(refresh_credentials(&emu, &refresh)),
        Arc::new(bridge_engine::SinkState::new(store.clone(), "google:auto")),
    ));
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(40, 7, BASE)));
    let engine = Engine::new(
        source,
        vec![sink.clone() as Arc<dyn Sink>],
        store.clone(),
        EngineConfig::default(),
    );
    engine.reconcile(None, false, BASE).await.unwrap();
    let state = store
        .get_state("google_calendar:google:auto:feishu_cal_1")
        .await
        .unwrap()
        .expect("the created calendar is remembered");
    let id = serde_json::from_str::<serde_json::Value>(&state).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!live_ids(&emu, &id).is_empty());
    let creates = || {
        emu.calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/calendar/v3/calendars"))
            .count()
    };
    assert_eq!(creates(), 1);
    engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(creates(), 1, "the calendar is created once");
}
