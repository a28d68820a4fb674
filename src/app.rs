//! Wiring: a loaded configuration becomes a store, a Feishu client and
//! source, the sinks and the engine.

use std::sync::Arc;

use anyhow::Context;
use bridge_core::plan::Rules;
use bridge_engine::feishu_source::{FeishuSource, Selection};
use bridge_engine::{AttendeeMode, AttendeeSync, Engine, EngineConfig, Window};
use bridge_feishu::auth::{FileTokenStore, OauthApp, UserAuth};
use bridge_feishu::client::{ClientConfig, FeishuClient, Identity};
use bridge_feishu::ratelimit::RateLimits;
use bridge_store::Store;

use crate::config::{Calendars, IdentityConfig, Loaded};
use crate::sinks::Handle;

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) engine: Arc<Engine>,
    pub(crate) client: Arc<FeishuClient>,
    /// The engine's source, for the calendars it had to skip.
    pub(crate) source: Arc<FeishuSource>,
    /// The engine's sinks, by kind: to hand them tokens (`auth <kind>`
    /// through the daemon) and read their state.
    pub(crate) sinks: Vec<Handle>,
}

/// A configured sink, as the store names it (no I/O, nothing built).
#[derive(Debug, Clone)]
pub(crate) struct ConfiguredSink {
    id: String,
}

impl ConfiguredSink {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

pub(crate) fn identity(loaded: &Loaded) -> Identity {
    match loaded.config.feishu.identity {
        IdentityConfig::Tenant => Identity::Tenant,
        IdentityConfig::User => Identity::User,
    }
}

/// The configured sinks in file order, by the ids their records carry.
pub(crate) fn sinks(loaded: &Loaded) -> Vec<ConfiguredSink> {
    loaded
        .sinks
        .iter()
        .map(|c| ConfiguredSink { id: c.target.id() })
        .collect()
}

/// Builds the sinks of the configuration (file order), each by its kind's
/// module; a sink without the credentials it needs is built paused.
pub(crate) async fn build_sinks(loaded: &Loaded, store: &Store) -> anyhow::Result<Vec<Handle>> {
    let mut out = Vec::with_capacity(loaded.sinks.len());
    // One book for every feed sink: the daemon serves it.
    let feeds = bridge_sinks::feed::FeedBook::new();
    for c in &loaded.sinks {
        out.push(c.target.build(store, &feeds).await?);
    }
    Ok(out)
}

/// Where a running daemon writes the address of its admin endpoint (next to
/// the store), so that the CLI finds it even when the port was chosen by the OS.
pub(crate) fn admin_addr_file(loaded: &Loaded) -> std::path::PathBuf {
    let store = &loaded.config.store.path;
    store
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("daemon-admin.addr")
}

/// The admin endpoint's bearer token of a running daemon (0600, next to the
/// store, written anew at every start): only the store's owner can read it.
pub(crate) fn admin_token_file(loaded: &Loaded) -> std::path::PathBuf {
    admin_addr_file(loaded).with_file_name("daemon-admin.token")
}

/// A request to the running daemon's admin endpoint `path`, with its token
/// and a connect timeout of 5 s and a total timeout of `timeout`. Returns
/// the URL too, for messages.
pub(crate) fn admin_request(
    loaded: &Loaded,
    method: reqwest::Method,
    path: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<(String, reqwest::RequestBuilder)> {
    let url = format!("http://{}{path}", daemon_admin_addr(loaded));
    let token_file = admin_token_file(loaded);
    let token = std::fs::read_to_string(&token_file).with_context(|| {
        format!(
            "the store is in use (a daemon?) but its admin token {} cannot be read \
             (only the store's owner can talk to the daemon)",
            token_file.display()
        )
    })?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(timeout)
        .build()
        .context("HTTP client")?;
    let request = http.request(method, &url).bearer_auth(token.trim());
    Ok((url, request))
}

/// The admin address of a running daemon.
pub(crate) fn daemon_admin_addr(loaded: &Loaded) -> String {
    std::fs::read_to_string(admin_addr_file(loaded))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| loaded.config.server.admin_listen.clone())
}

/// Whether an error comes from a store held by another process.
pub(crate) fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<bridge_store::StoreError>(),
            Some(bridge_store::StoreError::Locked { .. })
        )
    })
}

pub(crate) async fn open_store(loaded: &Loaded) -> anyhow::Result<Store> {
    if let Some(store) = daemon_store() {
        return Ok(store);
    }
    let path = &loaded.config.store.path;
    Store::open_refusing_empty(path)
        .await
        .with_context(|| format!("cannot open the store {}", path.display()))
}

/// The Feishu client settings of a configuration (rate limits included).
pub(crate) fn client_config(loaded: &Loaded) -> ClientConfig {
    let f = &loaded.feishu;
    let mut cfg = ClientConfig::new(&f.base_url, &f.app_id, f.app_secret.clone());
    cfg.rate_limits = RateLimits {
        per_second: loaded.config.feishu.rate_limit_per_second,
        per_minute: loaded.config.feishu.rate_limit_per_minute,
    };
    cfg
}

/// The Feishu client with `cfg`, and the user identity backed by the token file.
pub(crate) fn feishu_client(
    loaded: &Loaded,
    cfg: ClientConfig,
) -> Result<FeishuClient, bridge_feishu::FeishuError> {
    let f = &loaded.feishu;
    let user = UserAuth::new(
        OauthApp {
            base_url: f.base_url.clone(),
            accounts_url: f.accounts_url.clone(),
            app_id: f.app_id.clone(),
            app_secret: f.app_secret.clone(),
        },
        Arc::new(FileTokenStore::new(&f.user_token_file)),
    );
    Ok(FeishuClient::new(cfg)?.with_user(Arc::new(user)))
}

/// What a command finds when the daemon runs it for a client (its admin
/// endpoint's `/admin/run`): the daemon's own wiring, so the command works on
/// the daemon's open store and engine (whose per-calendar locks keep a pass
/// from overlapping the daemon's), and prints what it would have printed
/// itself.
#[derive(Debug, Clone)]
pub(crate) struct InDaemon {
    pub(crate) app: App,
    /// The daemon's configuration file (it replaces the client's `--config`).
    pub(crate) config: std::path::PathBuf,
}

tokio::task_local! {
    pub(crate) static IN_DAEMON: InDaemon;
}

/// The daemon's store, when a command runs inside the daemon.
pub(crate) fn daemon_store() -> Option<Store> {
    IN_DAEMON.try_with(|d| d.app.engine.store().clone()).ok()
}

/// The engine's settings from the configuration (`explain` plans with
/// them too).
pub(crate) fn engine_config(loaded: &Loaded, allow_mass_delete: bool) -> EngineConfig {
    let sync = &loaded.config.sync;
    EngineConfig {
        rules: Rules {
            max_delete_count: sync.max_delete_count,
            max_delete_fraction: sync.max_delete_percent / 100.0,
            allow_mass_delete,
            ..Rules::default()
        },
        window: match (sync.window_past_days, sync.window_future_days) {
            (Some(past_days), Some(future_days)) => Some(Window {
                past_days,
                future_days,
            }),
            _ => None,
        },
        failure_backoff: bridge_store::Backoff {
            base: std::time::Duration::from_secs(sync.retry_base_seconds),
            ..bridge_store::Backoff::default()
        },
        attendees: AttendeeSync {
            mode: match sync.attendees {
                crate::config::AttendeesSetting::Changed => AttendeeMode::Changed,
                crate::config::AttendeesSetting::None => AttendeeMode::None,
            },
            refresh_days: sync.attendee_refresh_days,
            refresh_budget: sync.attendee_refresh_budget,
        },
        views: loaded
            .sinks
            .iter()
            .map(|c| (c.target.id(), c.view.clone()))
            .collect(),
    }
}

pub(crate) async fn build(loaded: &Loaded, allow_mass_delete: bool) -> anyhow::Result<App> {
    if let Ok(app) = IN_DAEMON.try_with(|d| d.app.clone()) {
        // `allow_mass_delete` goes with each pass (`sync_calendar_with`).
        return Ok(app);
    }
    let store = open_store(loaded).await?;
    let client = Arc::new(feishu_client(loaded, client_config(loaded))?);
    let selection = match &loaded.config.feishu.calendars {
        Calendars::Primary => Selection::Primary,
        Calendars::All => Selection::All,
        Calendars::List(ids) => Selection::List(ids.clone()),
    };
    let source = Arc::new(
        FeishuSource::new(client.clone(), identity(loaded), selection).with_cache(store.clone()),
    );
    let cfg = engine_config(loaded, allow_mass_delete);
    let handles = build_sinks(loaded, &store).await?;
    let sinks = handles.iter().map(Handle::sink).collect();
    let engine = Arc::new(Engine::new(source.clone(), sinks, store, cfg));
    Ok(App {
        engine,
        client,
        source,
        sinks: handles,
    })
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How long the CLI waits for a command the daemon runs for it (a full
/// reconcile of many calendars can take minutes).
const DAEMON_RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The store is held by a running daemon: the daemon runs this very command
/// line (`status`, `explain`, `reconcile` with any flag, ...) on its own
/// store and engine, and its output and exit code become ours, so the
/// output and the `--json` schema are the same either way.
#[allow(clippy::print_stderr)]
pub(crate) async fn run_in_daemon(
    loaded: &Loaded,
    locked: &(dyn std::fmt::Display + Sync),
) -> anyhow::Result<std::process::ExitCode> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (url, request) = admin_request(
        loaded,
        reqwest::Method::POST,
        "/admin/run",
        DAEMON_RUN_TIMEOUT,
    )
    .map_err(|e| anyhow::anyhow!("{locked}; {e:#}"))?;
    tracing::info!(%url, "the store is in use by the daemon; asking it to run the command");
    let resp = request
        .json(&serde_json::json!({ "argv": argv }))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!("{locked}; no daemon answers on its admin endpoint {url}: {e}")
        })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "the daemon could not run the command ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    print!("{}", body["stdout"].as_str().unwrap_or_default());
    eprint!("{}", body["stderr"].as_str().unwrap_or_default());
    let code = body["code"]
        .as_u64()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1);
    Ok(std::process::ExitCode::from(code))
}

/// The number of an exit code (std keeps it opaque).
pub(crate) fn exit_number(code: std::process::ExitCode) -> u8 {
    (0..=u8::MAX)
        .find(|n| std::process::ExitCode::from(*n) == code)
        .unwrap_or(1)
}
