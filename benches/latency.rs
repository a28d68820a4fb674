//! Change latency: from a change in Feishu (the emulator, aggregation window
//! zero) through the signed, encrypted webhook push, the durable dirty mark,
//! the delta listing and the ICS render, to the ICS file on disk.
//!
//! `cargo bench --bench latency` prints p50 / p90 / p99 / max over N changes
//! on a calendar of 1,000 events.

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_core::Privacy;
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget};
use bridge_engine::daemon::{Hub, Metrics, Worker};
use bridge_engine::feishu_source::{FeishuSource, Selection};
use bridge_engine::{Engine, EngineConfig, Sink};
use bridge_feishu::auth::Secret;
use bridge_feishu::client::{ClientConfig, FeishuClient, Identity};
use bridge_feishu::webhook::{DeliverySink, WebhookConfig};
use bridge_sinks::ics::IcsSink;
use bridge_store::Store;
use tokio_util::sync::CancellationToken;

const CHANGES: usize = 200;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn wait_for(file: &Path, needle: &str) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(text) = tokio::fs::read_to_string(file).await
            && text.contains(needle)
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "timeout");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("fb-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let emu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::ZERO,
        rate_limit: None,
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = emu.add_user("Bench");
    let cal = emu.create_calendar("Bench calendar");
    emu.bulk_load(&cal, bridge_core::sample::events(1000, 3, now()));
    emu.subscribe_events(&user, &cal);

    let c = emu.config();
    let client = Arc::new(
        FeishuClient::new(ClientConfig::new(
            &emu.base_url(),
            &c.app_id,
            Secret::new(c.app_secret.clone()),
        ))
        .unwrap(),
    );
    let source = FeishuSource::new(client, Identity::Tenant, Selection::List(vec![cal.clone()]));
    let ics = dir.join("ics");
    let sink: Arc<dyn Sink> = Arc::new(IcsSink::new(&ics, Privacy::Full));
    let store = Store::open(dir.join("bridge.redb")).await.unwrap();
    let engine = Arc::new(Engine::new(
        Arc::new(source),
        vec![sink],
        store.clone(),
        EngineConfig::default(),
    ));
    engine.reconcile(None, false, now()).await.unwrap();

    let hub = Arc::new(Hub::new(store, Arc::new(Metrics::default())));
    let calendars = bridge_engine::Source::calendars(engine.source().as_ref())
        .await
        .unwrap();
    let worker = Arc::new(Worker::new(
        engine.clone(),
        hub.clone(),
        calendars,
        Duration::ZERO,
        false,
    ));
    let cancel = CancellationToken::new();
    tokio::spawn(worker.run(cancel.clone()));
    let key = "bench-encrypt-key";
    let sink: Arc<dyn DeliverySink> = hub.clone();
    let router = bridge_feishu::webhook::router(
        WebhookConfig {
            encrypt_key: Some(key.into()),
            verification_token: Some("bench-token".into()),
            ..WebhookConfig::default()
        },
        sink,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    emu.set_webhook(Some(WebhookTarget {
        url: format!("http://{addr}/webhook/event"),
        encrypt_key: Some(key.into()),
        verification_token: "bench-token".into(),
    }));

    let file = ics.join(bridge_sinks::ics::file_name(&cal));
    let target = emu
        .events(&cal)
        .into_iter()
        .find_map(|e| e.event_id.filter(|id| id.ends_with("_0")))
        .unwrap();
    let mut samples = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let summary = format!("latency probe {i}");
        let t = Instant::now();
        emu.update_event(&cal, &target, |e| e.summary = Some(summary.clone()));
        wait_for(&file, &format!("SUMMARY:latency probe {i}\r\n")).await;
        samples.push(t.elapsed());
    }
    cancel.cancel();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "change latency, Feishu change -> webhook (AES, signed) -> delta -> ICS file, {CHANGES} changes, 1,000-event calendar:"
    );
    println!(
        "  p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
