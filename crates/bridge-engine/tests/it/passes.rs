//! Whole passes of the engine with the in-memory replica and the ICS
//! projection side by side: creates, updates, exceptions and cancellations,
//! the deletion budget, a paused replica and a transient failure retried.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bridge_core::feishu::{Event, EventStatus, TimeInfo, UnixSeconds};
use bridge_core::plan::Rules;
use bridge_core::{EventKey, Privacy};
use bridge_engine::{
    CalendarMeta, CalendarReport, Engine, EngineConfig, Listing, Mode, Sink, Source, SourceError,
};
use bridge_sinks::ics::{IcsSink, file_name};
use bridge_sinks::memory::{Held, MemoryReplica};
use bridge_store::Store;

const BASE: i64 = 1_790_000_000;

#[derive(Debug, Default)]
struct Scripted(Mutex<Vec<Event>>);

fn cal() -> CalendarMeta {
    CalendarMeta {
        id: "cal1".into(),
        name: "Team".into(),
        timezone: Some("Asia/Shanghai".into()),
    }
}

#[async_trait]
impl Source for Scripted {
    async fn calendars(&self) -> Result<Vec<CalendarMeta>, SourceError> {
        Ok(vec![cal()])
    }
    async fn list(&self, _: &str, _: Option<&str>) -> Result<Listing, SourceError> {
        Ok(Listing {
            events: self.0.lock().unwrap().clone(),
            sync_token: Some("t".into()),
            complete: true,
            calls: 1,
        })
    }
}

fn at(t: i64) -> Option<TimeInfo> {
    Some(TimeInfo {
        timestamp: Some(UnixSeconds(t)),
        timezone: Some("Asia/Shanghai".into()),
        date: None,
    })
}

fn single(uid: &str, summary: &str, start: i64) -> Event {
    Event {
        event_id: Some(format!("{uid}_0")),
        summary: Some(summary.into()),
        start_time: at(start),
        end_time: at(start + 1800),
        status: Some(EventStatus::Confirmed),
        ..Event::default()
    }
}

fn master(uid: &str, start: i64) -> Event {
    Event {
        recurrence: Some("FREQ=DAILY;COUNT=10".into()),
        ..single(uid, "Standup", start)
    }
}

fn occurrence(uid: &str, original: i64, status: EventStatus) -> Event {
    Event {
        event_id: Some(format!("{uid}_{original}")),
        summary: Some("Standup (moved)".into()),
        start_time: at(original + 3600),
        end_time: at(original + 5400),
        status: Some(status),
        is_exception: Some(true),
        recurring_event_id: Some(format!("{uid}_0")),
        ..Event::default()
    }
}

struct Setup {
    source: Arc<Scripted>,
    memory: Arc<MemoryReplica>,
    engine: Engine,
    dir: tempfile::TempDir,
}

async fn setup(events: Vec<Event>, rules: Rules) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(Scripted(Mutex::new(events)));
    let memory = Arc::new(MemoryReplica::new("test", Privacy::Full));
    let ics: Arc<dyn Sink> = Arc::new(IcsSink::new(dir.path(), Privacy::Full));
    let engine = Engine::new(
        source.clone(),
        vec![memory.clone() as Arc<dyn Sink>, ics],
        Store::in_memory().await.unwrap(),
        EngineConfig {
            rules,
            ..EngineConfig::default()
        },
    );
    Setup {
        source,
        memory,
        engine,
        dir,
    }
}

impl Setup {
    async fn pass(&self, now: i64) -> CalendarReport {
        self.engine
            .sync_calendar(&cal(), Mode::Full, false, now)
            .await
            .unwrap()
    }

    fn ics(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(file_name(&cal().id))).unwrap()
    }
}

fn vevents(ics: &str) -> usize {
    ics.matches("BEGIN:VEVENT").count()
}

fn key(uid: &str, t: i64) -> EventKey {
    EventKey::new(uid, t).unwrap()
}

fn summary(h: Option<&Held>) -> Option<&str> {
    match h {
        Some(Held::Event(e)) => Some(e.summary.as_str()),
        _ => None,
    }
}

fn counts(r: &CalendarReport, sink: usize) -> (usize, usize, usize, usize) {
    let s = &r.sinks[sink];
    (s.created, s.updated, s.deleted, s.failed)
}

#[tokio::test]
async fn creates_then_updates_then_nothing() {
    let s = setup(
        vec![single("a", "One", BASE), single("b", "Two", BASE + 7200)],
        Rules::default(),
    )
    .await;
    let r = s.pass(BASE).await;
    assert_eq!(counts(&r, 0), (2, 0, 0, 0));
    assert_eq!(counts(&r, 1), (2, 0, 0, 0));
    assert_eq!(vevents(&s.ics()), 2);

    s.source.0.lock().unwrap()[0].summary = Some("One, renamed".into());
    let r = s.pass(BASE + 60).await;
    assert_eq!(counts(&r, 0), (0, 1, 0, 0));
    assert_eq!(
        summary(s.memory.items().get(&key("a", 0))),
        Some("One, renamed")
    );
    assert!(s.ics().contains("SUMMARY:One\\, renamed"));
    assert!(s.ics().contains("SEQUENCE:1"));

    let writes = s.memory.writes();
    let r = s.pass(BASE + 120).await;
    assert_eq!(counts(&r, 0), (0, 0, 0, 0));
    assert_eq!(r.sinks[0].unchanged, 2);
    assert_eq!(
        s.memory.writes(),
        writes,
        "a pass with nothing to do writes nothing"
    );
}

#[tokio::test]
async fn exceptions_and_cancellations_reach_both_kinds_of_target() {
    let day = 86_400;
    let s = setup(
        vec![
            master("m", BASE),
            occurrence("m", BASE + day, EventStatus::Confirmed),
            occurrence("m", BASE + 2 * day, EventStatus::Cancelled),
            // An exception whose master is not listed: a standalone event.
            occurrence("orphan", BASE, EventStatus::Confirmed),
        ],
        Rules::default(),
    )
    .await;
    let r = s.pass(BASE).await;
    assert_eq!(counts(&r, 0), (4, 0, 0, 0));
    let held = s.memory.items();
    assert!(matches!(held.get(&key("m", 0)), Some(Held::Event(e)) if e.rrule.is_some()));
    assert_eq!(
        summary(held.get(&key("m", BASE + day))),
        Some("Standup (moved)")
    );
    assert_eq!(held.get(&key("m", BASE + 2 * day)), Some(&Held::Cancelled));
    assert!(summary(held.get(&key("orphan", BASE))).is_some());
    let ics = s.ics();
    assert_eq!(vevents(&ics), 3, "master, override, standalone orphan");
    assert!(ics.contains("EXDATE;TZID=Asia/Shanghai:"), "{ics}");
    assert!(ics.contains("RECURRENCE-ID;TZID=Asia/Shanghai:"), "{ics}");
    assert!(ics.contains(&format!("UID:orphan_{BASE}")), "{ics}");

    // The cancellation is withdrawn: the replica forgets it, the EXDATE goes.
    s.source.0.lock().unwrap().remove(2);
    let r = s.pass(BASE + 60).await;
    assert_eq!(counts(&r, 0), (0, 0, 1, 0));
    assert!(!s.memory.items().contains_key(&key("m", BASE + 2 * day)));
    assert!(!s.ics().contains("EXDATE"));
}

#[tokio::test]
async fn the_deletion_budget_holds_back_every_target_until_allowed() {
    let events: Vec<Event> = (0..100)
        .map(|i| single(&format!("e{i}"), "Meeting", BASE + i * 3600))
        .collect();
    let s = setup(events, Rules::default()).await;
    s.pass(BASE).await;
    s.source.0.lock().unwrap().drain(..30);
    let r = s.pass(BASE + 60).await;
    let blocked = r.blocked.clone().unwrap();
    assert!(blocked.contains("30 of 100"), "{blocked}");
    assert!(blocked.contains("--allow-mass-delete"), "{blocked}");
    assert_eq!((counts(&r, 0).2, counts(&r, 1).2), (0, 0));
    assert_eq!(s.memory.items().len(), 100);
    assert_eq!(vevents(&s.ics()), 100, "the file keeps what is held back");
    assert_eq!(r.items, 100, "the held-back snapshots stay");

    let allowed = Engine::new(
        s.source.clone(),
        vec![
            s.memory.clone() as Arc<dyn Sink>,
            Arc::new(IcsSink::new(s.dir.path(), Privacy::Full)),
        ],
        s.engine.store().clone(),
        EngineConfig {
            rules: Rules {
                allow_mass_delete: true,
                ..Rules::default()
            },
            ..EngineConfig::default()
        },
    );
    let r = allowed
        .sync_calendar(&cal(), Mode::Full, false, BASE + 120)
        .await
        .unwrap();
    assert!(r.blocked.is_none());
    assert_eq!((counts(&r, 0).2, counts(&r, 1).2), (30, 30));
    assert_eq!(s.memory.items().len(), 70);
    assert_eq!(vevents(&s.ics()), 70);
}

#[tokio::test]
async fn a_paused_replica_keeps_its_queue_while_the_projection_goes_on() {
    let s = setup(vec![single("a", "One", BASE)], Rules::default()).await;
    s.memory.set_paused(Some("credentials revoked"));
    let r = s.pass(BASE).await;
    assert_eq!(r.sinks[0].paused.as_deref(), Some("credentials revoked"));
    assert_eq!(
        counts(&r, 0),
        (0, 0, 0, 0),
        "nothing failed, nothing recorded"
    );
    assert_eq!(counts(&r, 1), (1, 0, 0, 0));
    assert!(s.memory.items().is_empty());

    s.memory.set_paused(None);
    let r = s.pass(BASE + 1).await;
    assert_eq!(counts(&r, 0), (1, 0, 0, 0), "planned again, no backoff");
    assert_eq!(s.memory.items().len(), 1);
}

#[tokio::test]
async fn a_transient_failure_is_retried_after_its_backoff() {
    let s = setup(
        vec![single("a", "One", BASE), single("b", "Two", BASE)],
        Rules::default(),
    )
    .await;
    s.memory.fail_next(1);
    let r = s.pass(BASE).await;
    assert_eq!(counts(&r, 0), (1, 0, 0, 1));
    assert_eq!(r.sinks[0].errors.len(), 1);
    assert!(r.sinks[0].errors[0].contains("injected failure"));

    // Before its retry time the failed item waits.
    let r = s.pass(BASE + 1).await;
    assert_eq!(r.sinks[0].deferred, 1);
    assert_eq!(counts(&r, 0), (0, 0, 0, 0));

    let r = s.pass(BASE + 86_400).await;
    assert_eq!(counts(&r, 0), (1, 0, 0, 0));
    assert_eq!(s.memory.items().len(), 2);
}
