//! `feishu-bridge run`: the daemon. Change events (webhook, long connection
//! or a poll timer) mark calendars dirty; a worker syncs them; a full
//! reconcile repairs everything on a schedule. Serves `/healthz`, `/metrics`
//! and the webhook on `server.listen`, and the admin endpoint on a loopback
//! address.
//!
//! Both listeners serve as soon as they are bound, before Feishu has
//! answered: `/healthz` says "starting" (503) and webhooks are made durable
//! meanwhile. The admin endpoint requires the bearer token of
//! `daemon-admin.token` (0600, next to the store, new at every start). A
//! store that cannot write (a full disk) does not stop the daemon: webhooks
//! answer 503, `/healthz` says "degraded", and the worker is restarted once
//! the store takes writes again.

pub(crate) mod listener;
mod metrics;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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
    /// Set once Feishu answered with the calendar list.
    worker: Arc<OnceLock<Arc<Worker>>>,
    hub: Arc<Hub>,
    client: Arc<FeishuClient>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    user_token_file: PathBuf,
    sinks: Arc<Vec<crate::sinks::Handle>>,
    /// What `/admin/run` gives the commands it runs.
    in_daemon: app::InDaemon,
    /// The root of the feed URLs (`[server] public_url` or the bound address).
    feeds_base: Arc<String>,
    /// The meeting-room system, when `[rooms]` is configured.
    rooms: Option<Arc<bridge_rooms::Rooms>>,
}

const STARTING: &str = "starting: Feishu not reachable yet";

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    let status = if !s.ready.load(Ordering::Relaxed) {
        STARTING
    } else if s.metrics.store_degraded.load(Ordering::Relaxed) {
        "degraded: the store cannot write (disk full?); change events are refused with 503 until it can"
    } else {
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        );
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "status": status })),
    )
}

/// The admin answer while Feishu has not answered yet.
fn starting() -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "error": STARTING })),
    )
        .into_response()
}

async fn metrics_route(State(s): State<Shared>) -> impl IntoResponse {
    (
        [("content-type", metrics::CONTENT_TYPE)],
        metrics::render(&s).await,
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

async fn admin_status(State(s): State<Shared>) -> axum::response::Response {
    let Some(worker) = s.worker.get().cloned() else {
        return starting();
    };
    let dirty = s.engine.store().dirty().await.unwrap_or_default();
    let last = s
        .metrics
        .last_sync
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let calendars: Vec<_> = worker
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
    .into_response()
}

async fn admin_reconcile(State(s): State<Shared>) -> axum::response::Response {
    let Some(worker) = s.worker.get().cloned() else {
        return starting();
    };
    match worker.full_pass().await {
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
    .into_response()
}

#[derive(serde::Deserialize)]
struct RunRequest {
    /// The client's command line, without the program name.
    argv: Vec<String>,
}

/// `POST /admin/run`: a client's `status`, `explain` or `reconcile` (any
/// flags) while the daemon holds the store. The command runs here, on the
/// daemon's store and engine, with this daemon's configuration file in
/// place of the client's `--config`; what it prints and its exit code go
/// back as `{"stdout", "stderr", "code"}`. Other commands are refused.
async fn admin_run(
    State(s): State<Shared>,
    axum::Json(req): axum::Json<RunRequest>,
) -> axum::response::Response {
    use clap::Parser;
    let bad = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": msg })),
        )
            .into_response()
    };
    let cli = match crate::Cli::try_parse_from(
        std::iter::once("feishu-bridge".to_owned()).chain(req.argv),
    ) {
        Ok(cli) => cli,
        Err(e) => return bad(e.to_string()),
    };
    let config = s.in_daemon.config.clone();
    // A pass needs the calendar list the daemon has not got yet: say so, as
    // `/admin/reconcile` does, instead of trying Feishu a second time.
    if let crate::Command::Reconcile(a) = &cli.command
        && s.worker.get().is_none()
    {
        let e = anyhow::anyhow!("the daemon cannot reconcile yet: {STARTING}");
        let ((), out) =
            crate::stdout::captured(async { crate::cmd::report_error(&e, a.json) }).await;
        return axum::Json(serde_json::json!({
            "stdout": out.stdout,
            "stderr": out.stderr,
            "code": crate::cmd::reconcile::EXIT_SOURCE_UNAVAILABLE,
        }))
        .into_response();
    }
    let (json, run): (bool, std::pin::Pin<Box<dyn Future<Output = _> + Send>>) = match cli.command {
        crate::Command::Status(mut a) => {
            a.config = config;
            (a.json, Box::pin(crate::cmd::status::run(a)))
        }
        crate::Command::Explain(mut a) => {
            a.config = config;
            (a.json, Box::pin(crate::cmd::explain::run(a)))
        }
        crate::Command::Reconcile(mut a) => {
            a.config = config;
            (a.json, Box::pin(crate::cmd::reconcile::run(a)))
        }
        _ => {
            return bad(
                "the daemon runs status, explain and reconcile for clients; stop it for anything else"
                    .to_owned(),
            );
        }
    };
    tracing::info!("running a client's command through the admin endpoint");
    let (result, out) =
        crate::stdout::captured(app::IN_DAEMON.scope(s.in_daemon.clone(), run)).await;
    let code = match result {
        Ok(code) => app::exit_number(code),
        Err(e) => {
            // What `main` prints for a failed command, into the capture.
            let ((), err) =
                crate::stdout::captured(async { crate::cmd::report_error(&e, json) }).await;
            return axum::Json(serde_json::json!({
                "stdout": format!("{}{}", out.stdout, err.stdout),
                "stderr": format!("{}{}", out.stderr, err.stderr),
                "code": crate::EXIT_USAGE,
            }))
            .into_response();
        }
    };
    axum::Json(serde_json::json!({ "stdout": out.stdout, "stderr": out.stderr, "code": code }))
        .into_response()
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
    if let Some(w) = s.worker.get()
        && let Err(e) = w.hint_all("sink authorization").await
    {
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

/// `GET /admin/feeds`: what `feeds list` prints.
async fn admin_feeds(State(s): State<Shared>) -> axum::response::Response {
    match crate::cmd::feeds::lines(&s.sinks, &s.feeds_base).await {
        Ok(feeds) => axum::Json(crate::cmd::feeds::FeedLines { feeds }).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": format!("{e:#}")})),
        )
            .into_response(),
    }
}

/// `POST /admin/feeds/rotate`: `feeds rotate` while the daemon runs; the
/// old address answers 404 as soon as this returns.
async fn admin_feeds_rotate(
    State(s): State<Shared>,
    axum::Json(r): axum::Json<crate::cmd::feeds::RotateRequest>,
) -> axum::response::Response {
    let fail = |status: StatusCode, error: String| {
        (status, axum::Json(serde_json::json!({"error": error}))).into_response()
    };
    let feed = match crate::cmd::feeds::find(&s.sinks, &r.name) {
        Ok(f) => f,
        Err(e) => return fail(StatusCode::NOT_FOUND, e.to_string()),
    };
    match feed.rotate(r.calendar.as_deref(), app::unix_now()).await {
        Ok(rotated) => axum::Json(crate::cmd::feeds::FeedLines {
            feeds: rotated
                .iter()
                .map(|e| crate::cmd::feeds::line(&s.feeds_base, e))
                .collect(),
        })
        .into_response(),
        Err(e) => fail(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn rooms_answer(r: anyhow::Result<serde_json::Value>) -> axum::response::Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            let status = match e.downcast_ref::<bridge_rooms::RoomsError>() {
                Some(
                    bridge_rooms::RoomsError::NotFound(_) | bridge_rooms::RoomsError::BadId(_),
                ) => StatusCode::NOT_FOUND,
                Some(bridge_rooms::RoomsError::NotPending { .. }) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                status,
                axum::Json(serde_json::json!({"error": format!("{e:#}")})),
            )
                .into_response()
        }
    }
}

fn no_rooms() -> axum::response::Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "no [rooms] in the daemon's configuration"})),
    )
        .into_response()
}

/// `GET /admin/rooms`: `rooms list`.
async fn admin_rooms(State(s): State<Shared>) -> axum::response::Response {
    let Some(rooms) = s.rooms.clone() else {
        return no_rooms();
    };
    rooms_answer(crate::cmd::rooms::list_json(&rooms).await)
}

#[derive(serde::Deserialize)]
struct BookingsQuery {
    #[serde(default)]
    pending: bool,
}

/// `GET /admin/rooms/bookings?pending=`: `rooms bookings`.
async fn admin_room_bookings(
    State(s): State<Shared>,
    Query(q): Query<BookingsQuery>,
) -> axum::response::Response {
    let Some(rooms) = s.rooms.clone() else {
        return no_rooms();
    };
    rooms_answer(crate::cmd::rooms::bookings_json(&rooms, q.pending).await)
}

#[derive(serde::Deserialize)]
struct BookingQuery {
    booking: String,
}

/// `GET /admin/rooms/booking?booking=`: `rooms explain`.
async fn admin_room_booking(
    State(s): State<Shared>,
    Query(q): Query<BookingQuery>,
) -> axum::response::Response {
    let Some(rooms) = s.rooms.clone() else {
        return no_rooms();
    };
    rooms_answer(
        rooms
            .find(&q.booking)
            .await
            .map(|b| crate::cmd::rooms::booking_json(&b))
            .map_err(anyhow::Error::new),
    )
}

#[derive(serde::Deserialize)]
struct DecideBody {
    booking: String,
    approve: bool,
    #[serde(default)]
    reason: String,
}

/// `POST /admin/rooms/decide`: `rooms approve|decline`.
async fn admin_room_decide(
    State(s): State<Shared>,
    axum::Json(b): axum::Json<DecideBody>,
) -> axum::response::Response {
    let Some(rooms) = s.rooms.clone() else {
        return no_rooms();
    };
    let what = if b.approve {
        bridge_rooms::AdminDecision::Approve
    } else {
        bridge_rooms::AdminDecision::Decline { reason: b.reason }
    };
    rooms_answer(crate::cmd::rooms::decide_json(&rooms, &b.booking, what).await)
}

/// A file-size limit (`ulimit -f`) reached by a store write raises SIGXFSZ,
/// whose default action kills the process. Taking the signal makes the write
/// fail with EFBIG instead, which the daemon survives like a full disk
/// (degraded, then recovered once the limit is raised).
#[cfg(unix)]
fn survive_file_size_limit() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw())) {
        Ok(mut s) => {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    tracing::warn!("a write exceeded the process's file-size limit (ulimit -f)");
                }
            });
        }
        Err(e) => tracing::warn!("cannot take SIGXFSZ: {e}"),
    }
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

/// `Authorization: Bearer <token>` on every admin route; anything else gets
/// 401 before a handler runs. Written here rather than with tower-http's
/// `ValidateRequestHeaderLayer::bearer`, which compares in variable time
/// (and is deprecated).
async fn require_token(
    State(token): State<Arc<String>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        token.as_bytes(),
    )) {
        return next.run(request).await;
    }
    tracing::warn!(path = %request.uri().path(), "admin request without the admin token refused");
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({
            "error": "the admin endpoint needs the token in daemon-admin.token (next to the store) as a bearer token"
        })),
    )
        .into_response()
}

/// A new random admin token in `path`, readable by the owner only.
fn write_admin_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // A stale file may be someone else's (mode, owner): replace it, never reuse.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot replace {}", path.display()));
        }
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(token.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// Removes the admin address and token files when the daemon ends, however
/// it ends (a clean stop, an error, a panic unwinding).
struct RemoveOnExit(Vec<PathBuf>);

impl Drop for RemoveOnExit {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Starts the room system's worker (registry, decisions, targets, replies).
/// How often a degraded store is reopened and probed.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// While the store is degraded (a write failed, e.g. a full disk): reopens
/// it (redb refuses everything after a failed write until reopened) and
/// probes it with a write, until one succeeds.
async fn heal_store(engine: Arc<Engine>, metrics: Arc<Metrics>, cancel: CancellationToken) {
    const PROBE: &str = "feishu-bridge/store-probe";
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(STORE_RETRY) => {}
        }
        if !metrics.store_degraded.load(Ordering::SeqCst) {
            continue;
        }
        let store = engine.store();
        let probe = async {
            store.reopen().await?;
            let now = app::unix_now();
            store
                .seen_or_insert(PROBE, now, bridge_store::DEFAULT_DEDUPE_TTL)
                .await?;
            store.forget_seen(PROBE).await
        };
        match probe.await {
            Ok(_) => {
                metrics.store_degraded.store(false, Ordering::SeqCst);
                tracing::info!("the store takes writes again");
            }
            Err(e) => tracing::warn!("the store still cannot write: {e}"),
        }
    }
}

/// Runs the worker; a failure (the store cannot write) does not stop the
/// daemon: it is marked degraded, and once the store heals and every
/// calendar is marked dirty again (the missed passes), the worker restarts.
/// A store that cannot write (a full disk) degrades the daemon until it
/// heals; a damaged store (redb damage, undecodable values) does not heal by
/// waiting, so the daemon stops with the store's message (exit 2).
async fn supervise_worker(
    worker: Arc<Worker>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<(), bridge_engine::EngineError> {
    loop {
        match worker.clone().run(cancel.clone()).await {
            Ok(()) => return Ok(()),
            Err(bridge_engine::EngineError::Store(e)) if e.is_damaged() => {
                tracing::error!("the sync worker stopped: {e}");
                cancel.cancel();
                return Err(bridge_engine::EngineError::Store(e));
            }
            Err(e) => {
                metrics.store_degraded.store(true, Ordering::SeqCst);
                tracing::error!("the sync worker stopped: {e}; it restarts when the store heals");
            }
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(STORE_RETRY) => {}
            }
            if metrics.store_degraded.load(Ordering::SeqCst) {
                continue;
            }
            match worker.hint_all("store recovered").await {
                Ok(()) => {
                    tracing::info!("the sync worker resumes");
                    break;
                }
                Err(e) => {
                    metrics.store_degraded.store(true, Ordering::SeqCst);
                    tracing::warn!("the store still cannot write: {e}");
                }
            }
        }
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let app = app::build(&loaded, args.allow_mass_delete).await?;
    let engine = app.engine.clone();
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(engine.store().clone(), metrics.clone()));
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_signal(cancel.clone()));
    #[cfg(unix)]
    survive_file_size_limit();
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
    let token_file = app::admin_token_file(&loaded);
    let _remove = RemoveOnExit(vec![addr_file.clone(), token_file.clone()]);
    let token = write_admin_token(&token_file)?;
    std::fs::write(&addr_file, admin_addr.to_string())
        .with_context(|| format!("cannot write {}", addr_file.display()))?;

    // The feeds serve their stored addresses and last bodies at once.
    let mut feed_book = None;
    for f in app.sinks.iter().filter_map(crate::sinks::Handle::feed) {
        match f.load().await {
            Ok(n) => tracing::info!(feed = f.name(), addresses = n, "feed loaded"),
            Err(e) => tracing::warn!(feed = f.name(), "cannot load the feed's addresses: {e}"),
        }
        feed_book.get_or_insert_with(|| f.book().clone());
    }
    let feeds_base = crate::cmd::feeds::base_url(&loaded, Some(addr));

    let worker_slot: Arc<OnceLock<Arc<Worker>>> = Arc::new(OnceLock::new());
    let rooms = crate::cmd::rooms::build(&loaded, engine.store().clone(), &app.sinks).await?;
    let shared = Shared {
        engine: engine.clone(),
        worker: worker_slot.clone(),
        hub: hub.clone(),
        client: app.client.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        user_token_file: loaded.feishu.user_token_file.clone(),
        sinks: Arc::new(app.sinks.clone()),
        in_daemon: app::InDaemon {
            app: app.clone(),
            config: args.config.clone(),
        },
        feeds_base: Arc::new(feeds_base.clone()),
        rooms: rooms.clone(),
    };
    // Room deliveries go to the room system, the rest to the hub.
    let deliveries: Arc<dyn DeliverySink> = match &rooms {
        Some(r) => Arc::new(bridge_rooms::Dispatch::new(r.clone(), hub.clone())),
        None => hub.clone(),
    };
    // Serve first: /healthz answers "starting" and webhooks are made
    // durable while Feishu is not reachable yet.
    let mut tasks = tokio::task::JoinSet::new();
    // The room worker is one of the daemon's tasks: on shutdown the daemon
    // waits for it, so it never runs on into the runtime's teardown.
    if let Some(r) = &rooms {
        let (r, c) = (r.clone(), cancel.clone());
        tasks.spawn(async move {
            r.run(c).await;
            Ok(())
        });
    }
    {
        let (e, m, c) = (engine.clone(), metrics.clone(), cancel.clone());
        tasks.spawn(async move {
            heal_store(e, m, c).await;
            Ok(())
        });
    }
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_route))
        .with_state(shared.clone());
    if let Some(book) = &feed_book {
        router = router.merge(bridge_feeds::router(book.clone()));
    }
    match loaded.config.feishu.delivery {
        Delivery::Webhook => {
            router = router.merge(bridge_feishu::webhook::router(
                webhook_config(&loaded),
                deliveries.clone(),
            ));
        }
        Delivery::LongConnection => {
            let f = &loaded.feishu;
            let cfg = WsConfig::new(&f.base_url, &f.app_id, f.app_secret.expose());
            let handler = Arc::new(SinkHandler::new(deliveries.clone()));
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
        Delivery::Poll => {}
    }
    let admin_router = Router::new()
        .route("/admin/status", get(admin_status))
        .route("/admin/reconcile", post(admin_reconcile))
        .route("/admin/sync", post(admin_sync))
        .route("/admin/token", post(admin_token))
        .route("/admin/run", post(admin_run))
        .route("/admin/feeds", get(admin_feeds))
        .route("/admin/feeds/rotate", post(admin_feeds_rotate))
        .route("/admin/rooms", get(admin_rooms))
        .route("/admin/rooms/bookings", get(admin_room_bookings))
        .route("/admin/rooms/booking", get(admin_room_booking))
        .route("/admin/rooms/decide", post(admin_room_decide))
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ));
    {
        let c = cancel.clone();
        tasks.spawn(async move {
            listener::serve(listener, router, listener::Limits::default(), c)
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
        "feishu-bridge running: delivery {:?}, http://{addr} (/healthz, /metrics{}), admin http://{admin_addr}",
        loaded.config.feishu.delivery,
        if loaded.config.feishu.delivery == Delivery::Webhook {
            ", POST /webhook/event"
        } else {
            ""
        },
    );

    if feed_book.is_some() {
        println!(
            "feeds served at {feeds_base}/feeds/<token>.ics (`feishu-bridge feeds list` for the addresses)"
        );
    }

    // The calendars (retried until Feishu answers).
    let calendars = loop {
        match engine.source().calendars().await {
            Ok(c) => break Some(c),
            Err(e) => {
                tracing::warn!("cannot list the Feishu calendars yet: {e}; retrying in 10 s");
                tokio::select! {
                    _ = cancel.cancelled() => break None,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        }
    };
    if let Some(calendars) = calendars {
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
        if let Err(e) = worker.hint_all("start").await {
            // The worker's supervision retries until the store can write.
            metrics.store_degraded.store(true, Ordering::SeqCst);
            tracing::error!("cannot mark the calendars dirty at start: {e}");
        }
        let _ = worker_slot.set(worker.clone());
        ready.store(true, Ordering::SeqCst);
        {
            let (w, m, c) = (worker.clone(), metrics.clone(), cancel.clone());
            tasks.spawn(async move { supervise_worker(w, m, c).await.map_err(anyhow::Error::new) });
        }
        {
            let (w, m, c) = (worker.clone(), metrics.clone(), cancel.clone());
            let every = Duration::from_secs(sync.full_reconcile_hours * 3600);
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = c.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(every) => {}
                    }
                    tracing::info!("periodic full reconcile");
                    if let Err(e) = w.full_pass().await {
                        // The store: the worker's supervision notices too.
                        m.store_degraded.store(true, Ordering::SeqCst);
                        tracing::error!("full reconcile stopped: {e}");
                    }
                }
            });
        }
        if loaded.config.feishu.delivery == Delivery::Poll {
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
        tracing::info!(
            calendars = worker.calendars().await.len(),
            "Feishu answered; syncing"
        );
    }
    let mut failed = None;
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            failed.get_or_insert(e);
        }
        cancel.cancel();
    }
    drop(_remove);
    println!("feishu-bridge stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
