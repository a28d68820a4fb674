//! Wiring: a loaded configuration becomes a store, a Feishu client and
//! source, the sinks and the engine.

use std::sync::Arc;

use anyhow::Context;
use bridge_core::plan::Rules;
use bridge_engine::feishu_source::{FeishuSource, Selection};
use bridge_engine::{Engine, EngineConfig, Sink, Window};
use bridge_feishu::auth::{FileTokenStore, OauthApp, UserAuth};
use bridge_feishu::client::{ClientConfig, FeishuClient, Identity};
use bridge_feishu::ratelimit::RateLimits;
use bridge_sinks::google::{self, Credentials, GoogleSink, GoogleSinkConfig, TargetCalendar};
use bridge_sinks::ics::IcsSink;
use bridge_store::Store;

use crate::config::{Calendars, GoogleAuth, GoogleResolved, IdentityConfig, Loaded, SinkConfig};

#[derive(Debug)]
pub(crate) struct App {
    pub(crate) engine: Engine,
    pub(crate) client: Arc<FeishuClient>,
    /// The Google sinks among the engine's, to resume them (`auth google`
    /// through the daemon) and read their state.
    pub(crate) google: Vec<GoogleHandle>,
}

/// A Google sink and what it needs to take new credentials.
#[derive(Debug, Clone)]
pub(crate) struct GoogleHandle {
    pub(crate) sink: Arc<GoogleSink>,
    pub(crate) config: GoogleResolved,
}

impl GoogleHandle {
    /// Credentials from a refresh token `auth google` obtained (installed
    /// apps only).
    pub(crate) fn with_refresh_token(&self, refresh_token: &str) -> Option<Credentials> {
        refresh_credentials(&self.config, refresh_token)
    }
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
        .config
        .sinks
        .iter()
        .enumerate()
        .map(|(i, s)| ConfiguredSink {
            id: match s {
                SinkConfig::Ics(ics) => IcsSink::new(&ics.dir, Default::default()).id().to_owned(),
                SinkConfig::Google(g) => loaded
                    .google
                    .iter()
                    .find(|r| r.index == i)
                    .map_or_else(|| format!("google:{}", g.name), |r| r.id.clone()),
            },
        })
        .collect()
}

fn refresh_credentials(g: &GoogleResolved, refresh_token: &str) -> Option<Credentials> {
    match &g.auth {
        GoogleAuth::Installed {
            client_id,
            client_secret,
        } => Some(Credentials::RefreshToken {
            client_id: client_id.clone(),
            client_secret: Some(client_secret.clone()),
            refresh_token: google::Secret::new(refresh_token),
        }),
        GoogleAuth::ServiceAccount { .. } => None,
    }
}

/// The credentials of a Google sink: its service account, or the refresh
/// token `auth google` left in the store (`None`: not authorized yet).
pub(crate) async fn google_credentials(
    g: &GoogleResolved,
    store: &Store,
) -> anyhow::Result<Option<Credentials>> {
    match &g.auth {
        GoogleAuth::ServiceAccount { key, subject, .. } => Ok(Some(Credentials::ServiceAccount {
            key: key.clone(),
            subject: subject.clone(),
        })),
        GoogleAuth::Installed { .. } => {
            let name = google::token_name(&g.id);
            let json = store
                .get_token(&name)
                .await
                .with_context(|| format!("cannot read the token {name} from the store"))?;
            Ok(json
                .as_deref()
                .and_then(google::stored_refresh_token)
                .and_then(|t| refresh_credentials(g, &t)))
        }
    }
}

/// The sink settings of a resolved Google sink.
pub(crate) fn google_sink_config(g: &GoogleResolved) -> GoogleSinkConfig {
    GoogleSinkConfig {
        id: g.id.clone(),
        privacy: g.privacy,
        target: match &g.calendar_id {
            Some(id) => TargetCalendar::Fixed(id.clone()),
            None => TargetCalendar::CreatePerSource,
        },
        write_attendees: g.write_attendees,
        on_target_delete: g.on_target_delete,
        batch: g.batch,
        client: g.client.clone(),
    }
}

/// Builds the sinks of the configuration (file order) and the handles of
/// the Google ones. A Google sink without credentials is built paused.
pub(crate) async fn build_sinks(
    loaded: &Loaded,
    store: &Store,
) -> anyhow::Result<(Vec<Arc<dyn Sink>>, Vec<GoogleHandle>)> {
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    let mut handles = Vec::new();
    for (i, s) in loaded.config.sinks.iter().enumerate() {
        match s {
            SinkConfig::Ics(ics) => sinks.push(Arc::new(IcsSink::new(
                &ics.dir,
                ics.privacy.parse().unwrap_or_default(),
            ))),
            SinkConfig::Google(_) => {
                let Some(g) = loaded.google.iter().find(|g| g.index == i) else {
                    anyhow::bail!("sinks[{i}]: the google sink was not resolved");
                };
                let creds = google_credentials(g, store).await?;
                if creds.is_none() {
                    tracing::warn!(
                        sink = %g.id,
                        "not authorized: run `feishu-bridge auth google --sink {}`",
                        g.name
                    );
                }
                let sink = Arc::new(GoogleSink::new(google_sink_config(g), creds, store.clone()));
                sinks.push(sink.clone());
                handles.push(GoogleHandle {
                    sink,
                    config: g.clone(),
                });
            }
        }
    }
    Ok((sinks, handles))
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
    let path = &loaded.config.store.path;
    Store::open(path)
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

pub(crate) async fn build(loaded: &Loaded, allow_mass_delete: bool) -> anyhow::Result<App> {
    let store = open_store(loaded).await?;
    let client = Arc::new(feishu_client(loaded, client_config(loaded))?);
    let selection = match &loaded.config.feishu.calendars {
        Calendars::Primary => Selection::Primary,
        Calendars::All => Selection::All,
        Calendars::List(ids) => Selection::List(ids.clone()),
    };
    let source =
        FeishuSource::new(client.clone(), identity(loaded), selection).with_cache(store.clone());
    let sync = &loaded.config.sync;
    let cfg = EngineConfig {
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
        ..EngineConfig::default()
    };
    let (sinks, google) = build_sinks(loaded, &store).await?;
    let engine = Engine::new(Arc::new(source), sinks, store, cfg);
    Ok(App {
        engine,
        client,
        google,
    })
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
