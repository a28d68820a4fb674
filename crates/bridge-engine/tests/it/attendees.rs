//! Attendees through the engine: read for new or changed events only, kept
//! with the snapshot, refreshed for upcoming events on a full reconcile
//! within a budget, a failed read kept as it was and tried again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bridge_core::Privacy;
use bridge_core::feishu::{Attendee, Event};
use bridge_engine::{
    AttendeeMode, AttendeeSync, Attendees, CalendarMeta, Engine, EngineConfig, Listing, Mode, Sink,
    Source, SourceError,
};
use bridge_sinks::ics::{IcsSink, file_name};
use bridge_store::Store;

const NOW: i64 = 1_790_000_000;
const DAY: i64 = 86_400;

fn cal() -> CalendarMeta {
    CalendarMeta {
        id: "feishu_cal_1".into(),
        name: "Team".into(),
        timezone: Some("UTC".into()),
    }
}

/// Events and their attendees, changeable between passes; counts attendee
/// calls and can fail them.
#[derive(Debug, Default)]
pub(crate) struct AttSource {
    events: Mutex<Vec<Event>>,
    attendees: Mutex<BTreeMap<String, Vec<Attendee>>>,
    calls: Mutex<Vec<String>>,
    fail: Mutex<bool>,
}

impl AttSource {
    fn set_attendees(&self, id: &str, a: serde_json::Value) {
        self.attendees
            .lock()
            .unwrap()
            .insert(id.to_owned(), serde_json::from_value(a).unwrap());
    }
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
    fn patch(&self, id: &str, f: impl FnOnce(&mut Event)) {
        let mut evs = self.events.lock().unwrap();
        f(evs
            .iter_mut()
            .find(|e| e.event_id.as_deref() == Some(id))
            .unwrap());
    }
}

#[async_trait]
impl Source for AttSource {
    async fn calendars(&self) -> Result<Vec<CalendarMeta>, SourceError> {
        Ok(vec![cal()])
    }
    async fn list(&self, _: &str, _: Option<&str>) -> Result<Listing, SourceError> {
        Ok(Listing {
            events: self.events.lock().unwrap().clone(),
            sync_token: None,
            complete: true,
            calls: 1,
        })
    }
    async fn attendees(&self, _: &str, event_id: &str) -> Result<Attendees, SourceError> {
        self.calls.lock().unwrap().push(event_id.to_owned());
        if *self.fail.lock().unwrap() {
            return Err(SourceError::Unavailable("503".into()));
        }
        let items = self
            .attendees
            .lock()
            .unwrap()
            .get(event_id)
            .cloned()
            .unwrap_or_default();
        Ok(Attendees {
            calls: (items.len().div_ceil(100)).max(1) as u64,
            items,
            truncated: false,
        })
    }
}

pub(crate) fn event(uid: &str, start: i64, summary: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "event_id": format!("{uid}_0"),
        "summary": summary,
        "start_time": {"timestamp": start.to_string(), "timezone": "UTC"},
        "end_time": {"timestamp": (start + 3600).to_string(), "timezone": "UTC"},
        "status": "confirmed",
    }))
    .unwrap()
}

fn people(room_status: &str) -> serde_json::Value {
    serde_json::json!([
        {"type": "user", "attendee_id": "user_1", "user_id": "ou_alice", "display_name": "Alice", "rsvp_status": "accept", "is_organizer": true},
        {"type": "third_party", "attendee_id": "third_party_1", "third_party_email": "bob@example.com", "display_name": "Bob", "rsvp_status": "tentative"},
        {"type": "resource", "attendee_id": "resource_1", "room_id": "omm_a", "display_name": "Room A", "rsvp_status": room_status},
    ])
}

fn engine(source: Arc<AttSource>, dir: &Path, sync: AttendeeSync) -> Engine {
    let sink: Arc<dyn Sink> = Arc::new(IcsSink::new(dir, Privacy::Full));
    let store = futures_block(Store::in_memory()).unwrap();
    Engine::new(
        source,
        vec![sink],
        store,
        EngineConfig {
            attendees: sync,
            ..EngineConfig::default()
        },
    )
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn changed() -> AttendeeSync {
    AttendeeSync {
        mode: AttendeeMode::Changed,
        ..AttendeeSync::default()
    }
}

fn ics(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(file_name(&cal().id)))
        .unwrap()
        .replace("\r\n ", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_mirror_reads_each_event_once_and_an_unchanged_pass_reads_none() {
    let dir = tempfile::tempdir().unwrap();
    let src = Arc::new(AttSource::default());
    // Ten past events (nothing upcoming), each with attendees.
    for i in 0..10 {
        let uid = format!("u{i}");
        src.events
            .lock()
            .unwrap()
            .push(event(&uid, NOW - 30 * DAY + i * 3600, "Review"));
        src.set_attendees(&format!("{uid}_0"), people("accept"));
    }
    let eng = engine(src.clone(), dir.path(), changed());
    let r = eng.reconcile(None, false, NOW).await.unwrap();
    assert_eq!(r[0].attendee_calls, 10, "one call per event");
    assert_eq!(r[0].attendees_fetched, 10);
    assert_eq!(src.take_calls().len(), 10);
    let text = ics(dir.path());
    assert_eq!(text.matches("ATTENDEE").count(), 30, "{text}");
    assert!(text.contains("CUTYPE=ROOM"), "{text}");

    // A no-op full reconcile: nothing changed, nothing upcoming.
    let r = eng.reconcile(None, false, NOW + 60).await.unwrap();
    assert_eq!(r[0].attendee_calls, 0);
    assert!(src.take_calls().is_empty());
    assert_eq!(r[0].sinks[0].updated + r[0].sinks[0].created, 0);
    // The attendees stay in the mirror (read from the snapshot).
    assert_eq!(ics(dir.path()).matches("ATTENDEE").count(), 30);

    // A changed event (its listed content) is read again, only it.
    src.patch("u3_0", |e| e.summary = Some("Review, moved".into()));
    let r = eng.reconcile(None, false, NOW + 120).await.unwrap();
    assert_eq!(src.take_calls(), ["u3_0"]);
    assert_eq!(r[0].attendees_fetched, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_booking_that_settles_reaches_the_mirror_on_the_next_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let src = Arc::new(AttSource::default());
    src.events
        .lock()
        .unwrap()
        .push(event("soon", NOW + 2 * DAY, "Planning"));
    src.events
        .lock()
        .unwrap()
        .push(event("later", NOW + 60 * DAY, "Offsite"));
    src.set_attendees("soon_0", people("needs_action"));
    src.set_attendees("later_0", people("needs_action"));
    let eng = engine(src.clone(), dir.path(), changed());
    eng.reconcile(None, false, NOW).await.unwrap();
    assert_eq!(src.take_calls().len(), 2);
    assert!(ics(dir.path()).contains("CUTYPE=ROOM;PARTSTAT=NEEDS-ACTION"));

    // The booking settles; the listed content does not change. The full
    // reconcile refreshes the upcoming event only.
    src.set_attendees("soon_0", people("accept"));
    src.set_attendees("later_0", people("accept"));
    let r = eng.reconcile(None, false, NOW + 60).await.unwrap();
    assert_eq!(src.take_calls(), ["soon_0"]);
    assert_eq!(r[0].attendees_refreshed, 1);
    assert_eq!(r[0].sinks[0].updated, 1, "{:?}", r[0].sinks[0]);
    let text = ics(dir.path());
    assert_eq!(
        text.matches("CUTYPE=ROOM;PARTSTAT=ACCEPTED").count(),
        1,
        "{text}"
    );

    // An incremental pass never refreshes.
    let r = eng
        .sync_calendar(&cal(), Mode::Incremental, false, NOW + 120)
        .await
        .unwrap();
    assert_eq!(r.attendee_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_budget_reaches_every_upcoming_event_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let src = Arc::new(AttSource::default());
    for i in 0..5 {
        let uid = format!("s{i}");
        src.events
            .lock()
            .unwrap()
            .push(event(&uid, NOW + DAY + i * 3600, "Standup"));
        src.set_attendees(&format!("{uid}_0"), people("accept"));
    }
    let sync = AttendeeSync {
        refresh_budget: 2,
        ..changed()
    };
    let eng = engine(src.clone(), dir.path(), sync);
    eng.reconcile(None, false, NOW).await.unwrap();
    assert_eq!(src.take_calls().len(), 5);
    let mut seen = std::collections::BTreeSet::new();
    for pass in 1..=3 {
        let r = eng.reconcile(None, false, NOW + pass * 60).await.unwrap();
        assert_eq!(r[0].attendees_refreshed, 2);
        let calls = src.take_calls();
        assert_eq!(calls.len(), 2, "the budget holds: {calls:?}");
        seen.extend(calls);
    }
    assert_eq!(seen.len(), 5, "every upcoming event in turn: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_keeps_the_attendees_and_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = Arc::new(AttSource::default());
    src.events
        .lock()
        .unwrap()
        .push(event("m", NOW - 10 * DAY, "Retro"));
    src.set_attendees("m_0", people("accept"));
    let eng = engine(src.clone(), dir.path(), changed());
    eng.reconcile(None, false, NOW).await.unwrap();
    src.take_calls();

    // The event changes while Feishu's attendees endpoint fails.
    src.patch("m_0", |e| e.summary = Some("Retro (moved)".into()));
    *src.fail.lock().unwrap() = true;
    let r = eng.reconcile(None, false, NOW + 60).await.unwrap();
    assert_eq!(r[0].attendee_failures, 1);
    let text = ics(dir.path());
    assert!(text.contains("Retro (moved)"), "{text}");
    assert_eq!(text.matches("ATTENDEE").count(), 3, "kept: {text}");

    // Next pass: read again (the event is past and unchanged otherwise).
    *src.fail.lock().unwrap() = false;
    src.set_attendees("m_0", people("decline"));
    let r = eng.reconcile(None, false, NOW + 120).await.unwrap();
    assert_eq!(src.take_calls().len(), 2, "the failed read and the retry");
    assert_eq!(r[0].attendees_fetched, 1);
    assert!(ics(dir.path()).contains("CUTYPE=ROOM;PARTSTAT=DECLINED"));
    let r = eng.reconcile(None, false, NOW + 180).await.unwrap();
    assert_eq!(r[0].attendee_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attendees_none_makes_no_call_and_mirrors_none() {
    let dir = tempfile::tempdir().unwrap();
    let src = Arc::new(AttSource::default());
    src.events
        .lock()
        .unwrap()
        .push(event("n", NOW + DAY, "Planning"));
    src.set_attendees("n_0", people("accept"));
    let eng = engine(src.clone(), dir.path(), AttendeeSync::default());
    let r = eng.reconcile(None, false, NOW).await.unwrap();
    assert_eq!(r[0].attendee_calls, 0);
    assert!(src.take_calls().is_empty());
    assert!(!ics(dir.path()).contains("ATTENDEE"));
}
