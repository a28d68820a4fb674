//! `feishu-bridge run`: the daemon. Change events (webhook, long connection
//! or a poll timer) mark calendars dirty; a worker syncs them; a full
//! reconcile repairs everything on a schedule. Serves `/healthz`, `/metrics`
//! and the webhook on `server.listen`, and the admin endpoint on a loopback
//! address.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bridge_engine::daemon::{Hub, Metrics, Worker};
use bridge_engine::{CalendarReport, Engine};
use bridge_feishu::client::FeishuClient;
use bridge_feishu::webhook::{DeliverySink, WebhookConfig};
use bridge_feishu::ws::{SinkHandler, WsConfig};
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::{Calendars, Delivery, Loaded};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "feishu-bridge.toml")]
    config: PathBuf,
    /// Apply deletions beyond the deletion budget.
    #[arg(long)]
    allow_mass_delete: bool,
}

#[derive(Debug, Clone)]
struct Shared {
    engine: Arc<Engine>,
    worker: Arc<Worker>,
    hub: Arc<Hub>,
    client: Arc<FeishuClient>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    user_token_file: PathBuf,
    sinks: Arc<Vec<crate::sinks::Handle>>,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics_text(s: &Shared) -> String {
    let m = &s.metrics;
    let mut out = String::new();
    let counters = [
        (
            "feishu_bridge_passes_total",
            "Calendar sync passes completed.",
            &m.passes,
        ),
        (
            "feishu_bridge_events_written_total",
            "Events created, updated or deleted in sinks.",
            &m.events_written,
        ),
        (
            "feishu_bridge_item_failures_total",
            "Sink writes that failed (retried later).",
            &m.item_failures,
        ),
        (
            "feishu_bridge_pass_errors_total",
            "Passes that stopped because Feishu could not be read.",
            &m.pass_errors,
        ),
        (
            "feishu_bridge_hints_total",
            "Change hints accepted.",
            &m.hints,
        ),
        (
            "feishu_bridge_duplicate_hints_total",
            "Change events received again and ignored.",
            &m.duplicate_hints,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let depth = s.engine.store().dirty().await.map(|d| d.len()).unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP feishu_bridge_queue_depth Calendars waiting to be synced.\n# TYPE feishu_bridge_queue_depth gauge\nfeishu_bridge_queue_depth {depth}"
    );
    if let Ok(st) = s.engine.store().stats().await {
        let _ = writeln!(
            out,
            "# HELP feishu_bridge_dedupe_entries Delivery ids kept to drop repeated change events (expired ones are purged every 15 min).\n# TYPE feishu_bridge_dedupe_entries gauge\nfeishu_bridge_dedupe_entries {}\n# HELP feishu_bridge_items_waiting_retry Sink writes that failed and wait for their retry.\n# TYPE feishu_bridge_items_waiting_retry gauge\nfeishu_bridge_items_waiting_retry {}",
            st.dedupe, st.failures
        );
    }
    let now = app::unix_now();
    let _ = writeln!(
        out,
        "# HELP feishu_bridge_sync_lag_seconds Seconds since the calendar was last synced.\n# TYPE feishu_bridge_sync_lag_seconds gauge"
    );
    let last = m
        .last_sync
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut last: Vec<_> = last.into_iter().collect();
    last.sort();
    for (cal, at) in last {
        let _ = writeln!(
            out,
            "feishu_bridge_sync_lag_seconds{{calendar=\"{}\"}} {}",
            label(&cal),
            now - at
        );
    }
    let _ = writeln!(
        out,
        "# HELP feishu_bridge_feishu_api_calls_total Feishu API calls by endpoint and HTTP status (0 = no answer).\n# TYPE feishu_bridge_feishu_api_calls_total counter"
    );
    for ((endpoint, status), n) in s.client.stats().snapshot() {
        let _ = writeln!(
            out,
            "feishu_bridge_feishu_api_calls_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
            label(&endpoint)
        );
    }
    let _ = writeln!(
        out,
        "# HELP feishu_bridge_token_expiry_seconds Seconds until a token expires (user_refresh: until `auth feishu` is needed again).\n# TYPE feishu_bridge_token_expiry_seconds gauge"
    );
    if let Some(left) = s.client.tenant_token_expires_in().await {
        let _ = writeln!(
            out,
            "feishu_bridge_token_expiry_seconds{{token=\"tenant_access\"}} {}",
            left.as_secs()
        );
    }
    if let Ok(Some(t)) = bridge_feishu::auth::TokenStore::load(
        &bridge_feishu::auth::FileTokenStore::new(&s.user_token_file),
    )
    .await
    {
        let _ = writeln!(
            out,
            "feishu_bridge_token_expiry_seconds{{token=\"user_access\"}} {}",
            t.access_expires_at - now
        );
        if t.refresh_expires_at > 0 {
            let _ = writeln!(
                out,
                "feishu_bridge_token_expiry_seconds{{token=\"user_refresh\"}} {}",
                t.refresh_expires_at - now
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP feishu_bridge_ready Whether the daemon is ready (config, store, source).\n# TYPE feishu_bridge_ready gauge\nfeishu_bridge_ready {}",
        u8::from(s.ready.load(Ordering::Relaxed))
    );
    out
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "starting: Feishu not reachable yet"})),
        )
    }
}

async fn metrics_route(State(s): State<Shared>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics_text(&s).await,
    )
}

fn report_json(r: &CalendarReport) -> serde_json::Value {
    serde_json::json!({
        "calendar": r.calendar,
        "listed": r.listed,
        "items": r.items,
        "blocked": r.blocked,
        "sinks": r.sinks.iter().map(|s| serde_json::json!({
            "sink": s.sink, "created": s.created, "updated": s.updated,
            "deleted": s.deleted, "unchanged": s.unchanged, "failed": s.failed,
            "deferred": s.deferred,
            "paused": s.paused, "orphans_deleted": s.orphans_deleted,
            "drift_rewrites": s.drift_rewrites, "tombstoned": s.tombstoned,
        })).collect::<Vec<_>>(),
    })
}

async fn admin_status(State(s): State<Shared>) -> impl IntoResponse {
    let dirty = s.engine.store().dirty().await.unwrap_or_default();
    let last = s
        .metrics
        .last_sync
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let calendars: Vec<_> = s
        .worker
        .calendars()
        .await
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id, "name": c.name, "last_sync": last.get(&c.id),
                "pending": dirty.iter().any(|d| d.calendar_id == c.id),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "ready": s.ready.load(Ordering::Relaxed),
        "calendars": calendars,
        "queue_depth": dirty.len(),
    }))
}

async fn admin_reconcile(State(s): State<Shared>) -> impl IntoResponse {
    match s.worker.full_pass().await {
        Ok(reports) => (
            StatusCode::OK,
            axum::Json(
                serde_json::json!({"calendars": reports.iter().map(report_json).collect::<Vec<_>>()}),
            ),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        ),
    }
}

#[derive(serde::Deserialize)]
struct SyncQuery {
    calendar: String,
}

async fn admin_sync(State(s): State<Shared>, Query(q): Query<SyncQuery>) -> impl IntoResponse {
    match s.hub.hint_calendar(&q.calendar, "admin request").await {
        Ok(()) => (StatusCode::ACCEPTED, "queued\n".to_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[derive(serde::Deserialize)]
struct SinkToken {
    sink: String,
    /// The token as the sink's kind keeps it in the store (a JSON document).
    token: serde_json::Value,
}

/// `POST /admin/token`: `auth <kind>` while the daemon holds the store. The
/// sink's module checks the token; it is stored and handed to the sink,
/// which resumes if it was paused for authorization.
async fn admin_token(
    State(s): State<Shared>,
    axum::Json(t): axum::Json<SinkToken>,
) -> impl IntoResponse {
    use bridge_sinks::config::TokenRefused;
    let fail = |status: StatusCode, error: String| {
        (status, axum::Json(serde_json::json!({"error": error})))
    };
    let Some(h) = s.sinks.iter().find(|h| h.id() == t.sink) else {
        return fail(
            StatusCode::NOT_FOUND,
            format!("no sink {:?} in the daemon's configuration", t.sink),
        );
    };
    if let Err(e) = h.hand_over(s.engine.store(), &t.token.to_string()).await {
        let status = match e {
            TokenRefused::Invalid(_) => StatusCode::BAD_REQUEST,
            TokenRefused::NotUsed(_) => StatusCode::CONFLICT,
            TokenRefused::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return fail(status, e.to_string());
    }
    tracing::info!(sink = %t.sink, "authorization received through the admin endpoint");
    if let Err(e) = s.worker.hint_all("sink authorization").await {
        tracing::warn!(
            "cannot mark calendars dirty after the authorization of {}: {e}",
            t.sink
        );
    }
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"sink": t.sink, "paused": h.paused()})),
    )
}

async fn shutdown_signal(cancel: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
        _ = cancel.cancelled() => {}
    }
    cancel.cancel();
}

fn webhook_config(loaded: &Loaded) -> WebhookConfig {
    let f = &loaded.feishu;
    WebhookConfig {
        encrypt_key: f.encrypt_key.as_ref().map(|s| s.expose().to_owned()),
        verification_token: f.verification_token.as_ref().map(|s| s.expose().to_owned()),
        ..WebhookConfig::default()
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let app = app::build(&loaded, args.allow_mass_delete).await?;
    let engine = Arc::new(app.engine);
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(engine.store().clone(), metrics.clone()));
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_signal(cancel.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let sync = &loaded.config.sync;

    let listener = tokio::net::TcpListener::bind(&loaded.config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", loaded.config.server.listen))?;
    let admin = tokio::net::TcpListener::bind(&loaded.config.server.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", loaded.config.server.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let addr_file = app::admin_addr_file(&loaded);
    std::fs::write(&addr_file, admin_addr.to_string())
        .with_context(|| format!("cannot write {}", addr_file.display()))?;

    // The calendars (retried until Feishu answers).
    let calendars = loop {
        match engine.source().calendars().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!("cannot list the Feishu calendars yet: {e}; retrying in 10 s");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(ExitCode::SUCCESS),
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        }
    };
    let follow = loaded.config.feishu.calendars == Calendars::All;
    let worker = Arc::new(
        Worker::new(
            engine.clone(),
            hub.clone(),
            calendars,
            Duration::from_millis(sync.debounce_ms),
            follow,
        )
        .with_max_delay(Duration::from_millis(sync.debounce_max_ms)),
    );
    worker.hint_all("start").await?;
    ready.store(true, Ordering::SeqCst);
    let shared = Shared {
        engine: engine.clone(),
        worker: worker.clone(),
        hub: hub.clone(),
        client: app.client.clone(),
        metrics,
        ready,
        user_token_file: loaded.feishu.user_token_file.clone(),
        sinks: Arc::new(app.sinks.clone()),
    };

    let mut tasks = tokio::task::JoinSet::new();
    {
        let (w, c) = (worker.clone(), cancel.clone());
        tasks.spawn(async move {
            if let Err(e) = w.run(c.clone()).await {
                tracing::error!("the sync worker stopped: {e}");
                c.cancel();
                return Err(anyhow::Error::new(e));
            }
            Ok(())
        });
    }
    {
        let (w, c) = (worker.clone(), cancel.clone());
        let every = Duration::from_secs(sync.full_reconcile_hours * 3600);
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = c.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(every) => {}
                }
                tracing::info!("periodic full reconcile");
                if let Err(e) = w.full_pass().await {
                    tracing::error!("full reconcile stopped: {e}");
                    c.cancel();
                    return Err(anyhow::Error::new(e));
                }
            }
        });
    }
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_route))
        .with_state(shared.clone());
    match loaded.config.feishu.delivery {
        Delivery::Webhook => {
            let sink: Arc<dyn DeliverySink> = hub.clone();
            router = router.merge(bridge_feishu::webhook::router(
                webhook_config(&loaded),
                sink,
            ));
        }
        Delivery::LongConnection => {
            let f = &loaded.feishu;
            let cfg = WsConfig::new(&f.base_url, &f.app_id, f.app_secret.expose());
            let handler = Arc::new(SinkHandler::new(hub.clone()));
            let c = cancel.clone();
            tasks.spawn(async move {
                match bridge_feishu::ws::run(cfg, handler, c.clone()).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        tracing::error!("the long connection stopped: {e}");
                        c.cancel();
                        Err(anyhow::Error::new(e).context("long connection"))
                    }
                }
            });
        }
        Delivery::Poll => {
            let (w, c) = (worker.clone(), cancel.clone());
            let every = Duration::from_secs(sync.poll_seconds);
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = c.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = w.hint_all("poll").await {
                        tracing::error!("cannot mark calendars dirty: {e}");
                    }
                }
            });
        }
    }
    let admin_router = Router::new()
        .route("/admin/status", get(admin_status))
        .route("/admin/reconcile", post(admin_reconcile))
        .route("/admin/sync", post(admin_sync))
        .route("/admin/token", post(admin_token))
        .with_state(shared);
    {
        let c = cancel.clone();
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await
                .context("HTTP server")
        });
    }
    {
        let c = cancel.clone();
        tasks.spawn(async move {
            axum::serve(admin, admin_router)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await
                .context("admin server")
        });
    }
    println!(
        "feishu-bridge running: {} calendar(s), delivery {:?}, http://{addr} (/healthz, /metrics{}), admin http://{admin_addr}",
        worker.calendars().await.len(),
        loaded.config.feishu.delivery,
        if loaded.config.feishu.delivery == Delivery::Webhook {
            ", POST /webhook/event"
        } else {
            ""
        },
    );
    let mut failed = None;
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            failed.get_or_insert(e);
        }
        cancel.cancel();
    }
    let _ = std::fs::remove_file(&addr_file);
    println!("feishu-bridge stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
