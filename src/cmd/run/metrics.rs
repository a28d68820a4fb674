//! `/metrics`: the Prometheus exposition, encoded by `prometheus-client`.
//!
//! The daemon's counters live where they are counted (the engine's
//! [`Metrics`](bridge_engine::daemon::Metrics), the HTTP clients' call
//! stats, the store); a scrape gathers them once into a fresh registry and
//! encodes it in the Prometheus text format (0.0.4). Building the registry
//! per scrape keeps one source of truth per number and costs microseconds
//! next to the store reads a scrape needs anyway.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::Shared;
use crate::app;

/// The content type of the exposition.
pub(super) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn gauge_seconds(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let family = Family::<Labels, Gauge>::default();
    for (l, v) in rows {
        family.get_or_create(&l).set(v);
    }
    registry.register_with_unit(name, help, Unit::Seconds, family);
}

fn counter_family(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let family = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        family.get_or_create(&l).inc_by(v);
    }
    registry.register(name, help, family);
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let family = Family::<Labels, Gauge>::default();
    for (l, v) in rows {
        family.get_or_create(&l).set(v);
    }
    registry.register(name, help, family);
}

/// The whole exposition. Metric names follow Prometheus conventions
/// (`feishu_bridge_` prefix, `_total` on counters, `_seconds` units; README
/// lists them); labels carry ids and names, never a token.
pub(super) async fn render(s: &Shared) -> String {
    let m = &s.metrics;
    let store = s.engine.store();
    let now = app::unix_now();
    let mut r = Registry::default();

    gauge_family(
        &mut r,
        "feishu_bridge_build_info",
        "The running build (always 1).",
        vec![(labels(&[("version", env!("CARGO_PKG_VERSION"))]), 1)],
    );
    for (name, help, v) in [
        (
            "feishu_bridge_passes",
            "Calendar sync passes completed.",
            &m.passes,
        ),
        (
            "feishu_bridge_events_written",
            "Events created, updated or deleted in sinks.",
            &m.events_written,
        ),
        (
            "feishu_bridge_item_failures",
            "Sink writes that failed (retried later).",
            &m.item_failures,
        ),
        (
            "feishu_bridge_pass_errors",
            "Passes that stopped because Feishu could not be read.",
            &m.pass_errors,
        ),
        ("feishu_bridge_hints", "Change hints accepted.", &m.hints),
        (
            "feishu_bridge_duplicate_hints",
            "Change events received again and ignored.",
            &m.duplicate_hints,
        ),
    ] {
        counter(&mut r, name, help, v.load(Ordering::Relaxed));
    }

    // Per sink: written, failed, waiting for a retry, paused.
    let totals = m.per_sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let waiting = store.due_failures(i64::MAX).await.unwrap_or_default();
    let mut written = Vec::new();
    let mut failed = Vec::new();
    let mut waits = Vec::new();
    let mut paused = Vec::new();
    let mut target_calls = Vec::new();
    for h in s.sinks.iter() {
        let id = h.id();
        let l = labels(&[("sink", &id)]);
        let t = totals.get(&id).copied().unwrap_or_default();
        written.push((l.clone(), t.written));
        failed.push((l.clone(), t.failed));
        let n = waiting.iter().filter(|(k, _)| k.sink_id == id).count();
        waits.push((l.clone(), i64::try_from(n).unwrap_or(i64::MAX)));
        paused.push((l, i64::from(h.paused().is_some())));
        for ((endpoint, status), n) in h.calls() {
            target_calls.push((
                labels(&[
                    ("sink", &id),
                    ("endpoint", &endpoint),
                    ("status", &status.to_string()),
                ]),
                n,
            ));
        }
    }
    counter_family(
        &mut r,
        "feishu_bridge_sink_events_written",
        "Events created, updated or deleted, per sink.",
        written,
    );
    counter_family(
        &mut r,
        "feishu_bridge_sink_write_failures",
        "Writes that failed (retried later), per sink.",
        failed,
    );
    gauge_family(
        &mut r,
        "feishu_bridge_sink_items_waiting_retry",
        "Items whose last write failed and that wait for their retry, per sink.",
        waits,
    );
    gauge_family(
        &mut r,
        "feishu_bridge_sink_paused",
        "Whether the sink is paused (authorization, quota): 1 = paused.",
        paused,
    );
    counter_family(
        &mut r,
        "feishu_bridge_target_api_calls",
        "Target API calls by sink, endpoint template and HTTP status (0 = no answer).",
        target_calls,
    );

    let depth = store.dirty().await.map(|d| d.len()).unwrap_or(0);
    gauge(
        &mut r,
        "feishu_bridge_queue_depth",
        "Calendars waiting to be synced.",
        i64::try_from(depth).unwrap_or(i64::MAX),
    );
    if let Ok(st) = store.stats().await {
        gauge(
            &mut r,
            "feishu_bridge_dedupe_entries",
            "Delivery ids kept to drop repeated change events (expired ones are purged every 15 min).",
            i64::try_from(st.dedupe).unwrap_or(i64::MAX),
        );
        gauge(
            &mut r,
            "feishu_bridge_items_waiting_retry",
            "Sink writes that failed and wait for their retry.",
            i64::try_from(st.failures).unwrap_or(i64::MAX),
        );
    }

    let mut last: Vec<(String, i64)> = m
        .last_sync
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .into_iter()
        .collect();
    last.sort();
    gauge_seconds(
        &mut r,
        "feishu_bridge_sync_lag",
        "Seconds since the calendar was last synced.",
        last.iter()
            .map(|(cal, at)| (labels(&[("calendar", cal)]), now - at))
            .collect(),
    );
    gauge_family(
        &mut r,
        "feishu_bridge_last_sync_timestamp_seconds",
        "Unix time of the calendar's last successful sync (alert on time() - this).",
        last.iter()
            .map(|(cal, at)| (labels(&[("calendar", cal)]), *at))
            .collect(),
    );
    counter_family(
        &mut r,
        "feishu_bridge_feishu_api_calls",
        "Feishu API calls by endpoint and HTTP status (0 = no answer).",
        s.client
            .stats()
            .snapshot()
            .into_iter()
            .map(|((endpoint, status), n)| {
                (
                    labels(&[("endpoint", &endpoint), ("status", &status.to_string())]),
                    n,
                )
            })
            .collect(),
    );

    let mut expiry = Vec::new();
    if let Some(left) = s.client.tenant_token_expires_in().await {
        expiry.push((
            labels(&[("token", "tenant_access")]),
            i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        ));
    }
    if let Ok(Some(t)) = bridge_feishu::auth::TokenStore::load(
        &bridge_feishu::auth::FileTokenStore::new(&s.user_token_file),
    )
    .await
    {
        expiry.push((
            labels(&[("token", "user_access")]),
            t.access_expires_at - now,
        ));
        if t.refresh_expires_at > 0 {
            expiry.push((
                labels(&[("token", "user_refresh")]),
                t.refresh_expires_at - now,
            ));
        }
    }
    gauge_seconds(
        &mut r,
        "feishu_bridge_token_expiry",
        "Seconds until a token expires (user_refresh: until `auth feishu` is needed again).",
        expiry,
    );
    gauge(
        &mut r,
        "feishu_bridge_ready",
        "Whether the daemon is ready (config, store, source).",
        i64::from(s.ready.load(Ordering::Relaxed)),
    );
    gauge(
        &mut r,
        "feishu_bridge_store_degraded",
        "Whether the store refuses writes (change events answered 503).",
        i64::from(m.store_degraded.load(Ordering::Relaxed)),
    );

    let mut out = String::new();
    if let Err(e) = prometheus_text::encode(&mut out, &r) {
        tracing::warn!("cannot encode the metrics: {e}");
    }
    out
}
