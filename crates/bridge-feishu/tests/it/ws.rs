//! The long-connection client against the Feishu emulator: split frames,
//! acks as the server records them, reconnects without losing events,
//! redelivery after a failed handler, fatal bootstrap errors, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::feishu::{Event, TimeInfo, UnixSeconds};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, Transport, WsClientConfig};
use bridge_feishu::hint::{ChangeHint, ChangeType};
use bridge_feishu::webhook::{DeliverySink, MemoryDeliveries};
use bridge_feishu::ws::{self, ClientConfig, PayloadHandler, SinkHandler, WsConfig, WsError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(15);

fn emulator_config() -> FeishuConfig {
    FeishuConfig {
        aggregation_window: Duration::from_millis(100),
        long_connection: true,
        webhook_retry_schedule: vec![Duration::from_millis(300); 4],
        // Every event payload (~400 bytes) is split into several frames.
        ws_split_threshold: 64,
        ws_client_config: WsClientConfig {
            reconnect_count: -1,
            reconnect_interval: 1,
            reconnect_nonce: 0,
            ping_interval: 1,
        },
        rate_limit: None,
        ..FeishuConfig::default()
    }
}

struct Setup {
    emu: FeishuEmulator,
    calendar_id: String,
}

async fn setup() -> Setup {
    let emu = FeishuEmulator::start(emulator_config()).await.unwrap();
    let user = emu.add_user("Alice");
    let calendar_id = emu.primary_calendar(&user);
    emu.subscribe_events(&user, &calendar_id);
    Setup { emu, calendar_id }
}

fn event(summary: &str, start: i64) -> Event {
    Event {
        summary: Some(summary.into()),
        start_time: Some(TimeInfo {
            timestamp: Some(UnixSeconds(start)),
            timezone: Some("Asia/Shanghai".into()),
            date: None,
        }),
        end_time: Some(TimeInfo {
            timestamp: Some(UnixSeconds(start + 1800)),
            timezone: Some("Asia/Shanghai".into()),
            date: None,
        }),
        ..Event::default()
    }
}

fn client_config(emu: &FeishuEmulator, secret: &str) -> WsConfig {
    let mut cfg = WsConfig::new(emu.base_url(), emu.config().app_id, secret);
    cfg.initial = ClientConfig {
        reconnect_count: -1,
        reconnect_interval: Duration::from_millis(200),
        reconnect_nonce: Duration::ZERO,
        ping_interval: Duration::from_secs(1),
    };
    cfg.connect_timeout = Duration::from_secs(5);
    cfg
}

fn start(
    emu: &FeishuEmulator,
    handler: Arc<dyn PayloadHandler>,
) -> (CancellationToken, JoinHandle<Result<(), WsError>>) {
    let cancel = CancellationToken::new();
    let cfg = client_config(emu, &emu.config().app_secret);
    let task = tokio::spawn(ws::run(cfg, handler, cancel.clone()));
    (cancel, task)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(cancel: CancellationToken, task: JoinHandle<Result<(), WsError>>) {
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("client stops on cancellation")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test]
async fn split_event_is_reassembled_handled_and_acked() {
    let s = setup().await;
    let sink = Arc::new(MemoryDeliveries::new());
    let (cancel, task) = start(
        &s.emu,
        Arc::new(SinkHandler::new(Arc::clone(&sink) as Arc<dyn DeliverySink>)),
    );
    wait_until("connection", || s.emu.ws_connections() == 1).await;

    let event_id = s
        .emu
        .create_event(&s.calendar_id, event("Standup", 1_767_225_600));
    let deliveries = s.emu.wait_for_deliveries(1, SETTLE).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let d = &deliveries[0];
    assert_eq!(d.transport, Transport::Ws);
    assert!(d.delivered_ok, "{d:?}");
    assert!(d.parts > 1, "the payload was split: {d:?}");
    assert_eq!(d.acks, vec![serde_json::json!({"code": 200})]);
    assert_eq!(d.biz_rt.len(), 1);
    assert!(
        d.biz_rt[0].parse::<i64>().is_ok_and(|ms| ms >= 0),
        "{:?}",
        d.biz_rt
    );

    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].dedupe_key, d.event_id);
    match &accepted[0].hint {
        ChangeHint::CalendarEventChanged {
            calendar_id,
            event_id: changed,
            change_type,
            user_ids,
            ..
        } => {
            assert_eq!(calendar_id, &s.calendar_id);
            assert_eq!(changed.as_deref(), Some(event_id.as_str()));
            assert_eq!(change_type, &Some(ChangeType::Create));
            assert_eq!(user_ids.len(), 1);
        }
        other => panic!("unexpected hint {other:?}"),
    }
    stop(cancel, task).await;
    wait_until("socket closed", || s.emu.ws_connections() == 0).await;
}

#[tokio::test]
async fn other_event_types_arrive_over_the_long_connection() {
    let s = setup().await;
    let sink = Arc::new(MemoryDeliveries::new());
    let (cancel, task) = start(
        &s.emu,
        Arc::new(SinkHandler::new(Arc::clone(&sink) as Arc<dyn DeliverySink>)),
    );
    wait_until("connection", || s.emu.ws_connections() == 1).await;
    let user = s.emu.add_user("Bob");
    s.emu.emit_third_party_room_event(
        bridge_emulators::feishu::RoomEventKind::Updated,
        "uid-room-1",
        1_767_225_600,
        1_767_225_600_000,
        1_767_229_200_000,
        &["omm_room_a"],
        &user,
    );
    s.emu
        .emit_v2("im.message.receive_v1", serde_json::json!({"message": {}}));
    let deliveries = s.emu.wait_for_deliveries(2, SETTLE).await;
    assert!(deliveries.iter().all(|d| d.delivered_ok), "{deliveries:?}");
    let hints: Vec<ChangeHint> = sink.accepted().into_iter().map(|d| d.hint).collect();
    assert_eq!(hints.len(), 2);
    assert!(hints.iter().any(|h| matches!(h,
        ChangeHint::ThirdPartyRoomEvent { uid, original_time: 1_767_225_600, room_ids, start_ms: Some(1_767_225_600_000), .. }
            if uid == "uid-room-1" && room_ids == &["omm_room_a".to_owned()])), "{hints:?}");
    assert!(
        hints.iter().any(|h| matches!(h,
        ChangeHint::Unknown { event_type } if event_type == "im.message.receive_v1")),
        "{hints:?}"
    );
    stop(cancel, task).await;
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_socket_without_losing_events() {
    let s = setup().await;
    let sink = Arc::new(MemoryDeliveries::new());
    let (cancel, task) = start(
        &s.emu,
        Arc::new(SinkHandler::new(Arc::clone(&sink) as Arc<dyn DeliverySink>)),
    );
    wait_until("connection", || s.emu.ws_connections() == 1).await;

    s.emu
        .create_event(&s.calendar_id, event("before", 1_767_225_600));
    s.emu.wait_for_deliveries(1, SETTLE).await;
    assert_eq!(sink.accepted_count(), 1);
    let bootstraps = s.emu.call_count("/callback/ws/endpoint");

    s.emu.drop_ws_connections();
    // Changes while the client is away are queued by the server.
    s.emu
        .create_event(&s.calendar_id, event("during-1", 1_767_229_200));
    s.emu
        .create_event(&s.calendar_id, event("during-2", 1_767_232_800));
    wait_until("reconnection", || s.emu.ws_connections() == 1).await;
    s.emu
        .create_event(&s.calendar_id, event("after", 1_767_236_400));

    let deliveries = s.emu.wait_for_deliveries(4, SETTLE).await;
    assert_eq!(deliveries.len(), 4);
    assert!(deliveries.iter().all(|d| d.delivered_ok), "{deliveries:?}");
    wait_until("all four accepted", || sink.accepted_count() == 4).await;
    let mut keys: Vec<String> = sink.accepted().into_iter().map(|d| d.dedupe_key).collect();
    keys.sort();
    let mut want: Vec<String> = deliveries.iter().map(|d| d.event_id.clone()).collect();
    want.sort();
    assert_eq!(keys, want, "every pushed event accepted exactly once");
    assert!(
        s.emu.call_count("/callback/ws/endpoint") > bootstraps,
        "the client bootstraps again for the new connection"
    );
    assert!(!task.is_finished());
    stop(cancel, task).await;
}

/// Fails the first `n` payloads, then behaves like the sink handler.
struct Flaky {
    inner: SinkHandler,
    failures_left: AtomicUsize,
}

#[async_trait]
impl PayloadHandler for Flaky {
    async fn handle(&self, payload: Vec<u8>) -> Result<(), String> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("store unavailable".into());
        }
        self.inner.handle(payload).await
    }
}

#[tokio::test]
async fn failed_handler_is_acked_500_and_the_redelivery_accepted_once() {
    let s = setup().await;
    let sink = Arc::new(MemoryDeliveries::new());
    let handler = Arc::new(Flaky {
        inner: SinkHandler::new(Arc::clone(&sink) as Arc<dyn DeliverySink>),
        failures_left: AtomicUsize::new(1),
    });
    let (cancel, task) = start(&s.emu, handler);
    wait_until("connection", || s.emu.ws_connections() == 1).await;
    s.emu
        .create_event(&s.calendar_id, event("retry me", 1_767_225_600));
    let deliveries = s.emu.wait_for_deliveries(1, SETTLE).await;
    let d = &deliveries[0];
    assert!(d.delivered_ok, "{d:?}");
    assert_eq!(
        d.acks,
        vec![
            serde_json::json!({"code": 500}),
            serde_json::json!({"code": 200})
        ]
    );
    assert_eq!(sink.accepted_count(), 1);
    stop(cancel, task).await;
}

#[tokio::test]
async fn wrong_secret_stops_with_a_clear_error() {
    let s = setup().await;
    let cfg = client_config(&s.emu, "not-the-secret");
    let handler = Arc::new(SinkHandler::new(
        Arc::new(MemoryDeliveries::new()) as Arc<dyn DeliverySink>
    ));
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        ws::run(cfg, handler, CancellationToken::new()),
    )
    .await
    .expect("a fatal error stops the client at once")
    .unwrap_err();
    assert!(
        matches!(
            err,
            WsError::BootstrapRejected {
                code: 99_991_543,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("99991543") && msg.contains("app_secret"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-secret"), "{msg}");
    assert_eq!(s.emu.ws_connections(), 0);
}

#[tokio::test]
async fn cancellation_during_reconnect_wait_returns_ok() {
    let s = setup().await;
    let handler = Arc::new(SinkHandler::new(
        Arc::new(MemoryDeliveries::new()) as Arc<dyn DeliverySink>
    ));
    let cancel = CancellationToken::new();
    let mut cfg = client_config(&s.emu, &s.emu.config().app_secret);
    // Slow reconnects: the cancellation lands while the client waits.
    s.emu.update_config(|c| {
        c.ws_client_config.reconnect_interval = 60;
        c.ws_client_config.reconnect_nonce = 60;
    });
    cfg.initial.reconnect_nonce = Duration::from_secs(60);
    let task = tokio::spawn(ws::run(cfg, handler, cancel.clone()));
    wait_until("connection", || s.emu.ws_connections() == 1).await;
    s.emu.drop_ws_connections();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished());
    stop(cancel, task).await;
}

/// Issue #10 item 15: a server Close (1000) is answered with Close 1000
/// before the client reconnects (RFC 6455 §5.5.1).
#[tokio::test]
async fn a_server_close_is_answered_with_close_1000_then_the_client_reconnects() {
    let s = setup().await;
    let sink = Arc::new(MemoryDeliveries::new());
    let (cancel, task) = start(
        &s.emu,
        Arc::new(SinkHandler::new(Arc::clone(&sink) as Arc<dyn DeliverySink>)),
    );
    wait_until("connection", || s.emu.ws_connections() == 1).await;
    s.emu.close_ws_connections(1000);
    wait_until("the close to be recorded", || {
        !s.emu.ws_client_closes().is_empty()
    })
    .await;
    assert_eq!(s.emu.ws_client_closes(), vec![1000]);
    wait_until("the reconnection", || s.emu.ws_connections() == 1).await;
    stop(cancel, task).await;
    s.emu.shutdown().await;
}

/// Issue #10 item 15: on shutdown the client sends Close 1000 (with its
/// status code).
#[tokio::test]
async fn shutdown_sends_close_1000() {
    let s = setup().await;
    let sink = Arc::new(MemoryDeliveries::new());
    let (cancel, task) = start(
        &s.emu,
        Arc::new(SinkHandler::new(Arc::clone(&sink) as Arc<dyn DeliverySink>)),
    );
    wait_until("connection", || s.emu.ws_connections() == 1).await;
    stop(cancel, task).await;
    wait_until("the close to be recorded", || {
        !s.emu.ws_client_closes().is_empty()
    })
    .await;
    assert_eq!(s.emu.ws_client_closes(), vec![1000]);
    s.emu.shutdown().await;
}
