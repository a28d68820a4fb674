//! The worker's clock (tokio's paused time): the debounce has a maximum
//! delay under a steady stream of hints, and expired delivery-dedupe
//! entries are purged on a schedule.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bridge_engine::daemon::{DEDUPE_PURGE_EVERY, Hub, Metrics, Worker};
use bridge_engine::{CalendarMeta, Engine, EngineConfig, Listing, Source, SourceError};
use bridge_store::Store;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A source with one empty calendar that notes when it is listed.
#[derive(Debug, Default, Clone)]
struct Counting(Arc<Mutex<Vec<Instant>>>);

fn cal() -> CalendarMeta {
    CalendarMeta {
        id: "cal".into(),
        name: "Cal".into(),
        timezone: None,
    }
}

#[async_trait]
impl Source for Counting {
    async fn calendars(&self) -> Result<Vec<CalendarMeta>, SourceError> {
        Ok(vec![cal()])
    }

    async fn list(&self, _: &str, _: Option<&str>) -> Result<Listing, SourceError> {
        self.0.lock().unwrap().push(Instant::now());
        Ok(Listing {
            complete: true,
            sync_token: Some("t".into()),
            ..Listing::default()
        })
    }
}

async fn worker(
    source: Counting,
    debounce: Duration,
    max_delay: Duration,
) -> (Store, Arc<Hub>, Arc<Worker>) {
    let store = Store::in_memory().await.unwrap();
    let engine = Arc::new(Engine::new(
        Arc::new(source),
        Vec::new(),
        store.clone(),
        EngineConfig::default(),
    ));
    let hub = Arc::new(Hub::new(store.clone(), Arc::new(Metrics::default())));
    let worker = Arc::new(
        Worker::new(engine, hub.clone(), vec![cal()], debounce, false).with_max_delay(max_delay),
    );
    (store, hub, worker)
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_of_hints_still_syncs_every_max_delay() {
    let source = Counting::default();
    let max_delay = Duration::from_secs(2);
    let (_store, hub, worker) = worker(source.clone(), Duration::from_millis(250), max_delay).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(worker.run(cancel.clone()));

    // 5 hints a second for 20 s: never 250 ms of quiet.
    let start = Instant::now();
    for _ in 0..100 {
        hub.hint_calendar("cal", "test").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end = Instant::now();
    cancel.cancel();
    task.await.unwrap().unwrap();

    let calls = source.0.lock().unwrap().clone();
    assert!(
        calls.len() >= 8,
        "{} syncs in 20 s of hints (max delay 2 s)",
        calls.len()
    );
    // No gap (from the first hint to the first sync, between syncs, from the
    // last sync to the end of the stream) is longer than the maximum delay
    // plus a generous margin for the pass itself.
    let mut edges = vec![start];
    edges.extend(&calls);
    for w in edges.windows(2) {
        assert!(
            w[1] - w[0] <= max_delay + Duration::from_millis(500),
            "a gap of {:?}",
            w[1] - w[0]
        );
    }
    assert!(end - *calls.last().unwrap() <= max_delay + Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_single_hint_still_waits_for_the_debounce_only() {
    let source = Counting::default();
    let (_store, hub, worker) = worker(
        source.clone(),
        Duration::from_millis(250),
        Duration::from_secs(2),
    )
    .await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(worker.run(cancel.clone()));
    let start = Instant::now();
    hub.hint_calendar("cal", "test").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    let calls = source.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "one hint, one sync");
    let after = calls[0] - start;
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(1),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_dedupe_entries_are_purged_on_a_schedule() {
    let (store, _hub, worker) = worker(
        Counting::default(),
        Duration::from_millis(10),
        Duration::from_secs(2),
    )
    .await;
    let now = chrono_now();
    let ttl = bridge_store::DEFAULT_DEDUPE_TTL;
    let old = now - 9 * 3600;
    for i in 0..10 {
        assert!(
            !store
                .seen_or_insert(&format!("old-{i}"), old, ttl)
                .await
                .unwrap()
        );
    }
    assert!(!store.seen_or_insert("fresh", now, ttl).await.unwrap());
    assert_eq!(store.stats().await.unwrap().dedupe, 11);

    let cancel = CancellationToken::new();
    let task = tokio::spawn(worker.run(cancel.clone()));
    // At start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.stats().await.unwrap().dedupe, 1, "purged at start");

    // And later, on the schedule.
    for i in 0..5 {
        assert!(
            !store
                .seen_or_insert(&format!("later-{i}"), old, ttl)
                .await
                .unwrap()
        );
    }
    assert_eq!(store.stats().await.unwrap().dedupe, 6);
    tokio::time::sleep(DEDUPE_PURGE_EVERY + Duration::from_secs(1)).await;
    assert_eq!(store.stats().await.unwrap().dedupe, 1, "purged again");
    cancel.cancel();
    task.await.unwrap().unwrap();
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A change event for a calendar whose id cannot be mirrored is answered
/// (so that Feishu does not retry it for hours) and marks nothing.
#[tokio::test]
async fn a_hint_for_an_unusable_calendar_id_is_accepted_and_ignored() {
    use bridge_feishu::hint::{ChangeHint, Delivery};
    use bridge_feishu::webhook::DeliverySink;
    let (store, hub, _worker) = worker(
        Counting::default(),
        Duration::from_millis(10),
        Duration::from_secs(2),
    )
    .await;
    for id in ["odd\u{1f}id", "", "line\nbreak"] {
        let delivery = Delivery {
            dedupe_key: format!("ev-{id:?}"),
            event_type: "calendar.calendar.event.changed_v4".into(),
            create_time_ms: None,
            token: None,
            hint: ChangeHint::CalendarEventChanged {
                calendar_id: id.into(),
                event_id: None,
                change_type: None,
                rsvp_infos: Vec::new(),
                user_ids: Vec::new(),
            },
        };
        hub.accept(delivery).await.unwrap();
    }
    assert!(store.dirty().await.unwrap().is_empty());
}
