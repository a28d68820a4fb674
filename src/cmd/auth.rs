//! `feishu-bridge auth feishu`: authorize a Feishu user (code flow with PKCE
//! through a loopback redirect) and store the tokens.
//!
//! `feishu-bridge auth google [--sink NAME]`: the same for a Google sink with
//! an installed-app OAuth client; the refresh token goes to the store (or,
//! while the daemon holds the store, to the daemon's admin endpoint, which
//! stores it and resumes the sink).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bridge_feishu::auth::{FileTokenStore, OauthApp, TokenStore, receive_redirect};
use bridge_sinks::google::{self, CALENDAR_SCOPE, InstalledApp};

use crate::app;
use crate::config::{GoogleAuth, GoogleResolved, Loaded};

/// Scopes needed to read calendars and subscribe to their changes.
const SCOPES: [&str; 2] = ["calendar:calendar:readonly", "calendar:calendar.event:read"];

/// The loopback port of `auth feishu` when `--port` is not given (the one
/// the README asks to allow in the Feishu app's console).
const FEISHU_PORT: u16 = 8788;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which service to authorize.
    #[arg(value_enum)]
    service: Service,
    #[arg(long, default_value = "feishu-bridge.toml")]
    config: PathBuf,
    /// Loopback port of the redirect (the redirect URL
    /// http://127.0.0.1:<port>/callback must be allowed in the app's console); 0 picks one.
    /// Default: 8788 for feishu, 0 for google (Google accepts any loopback port).
    #[arg(long)]
    port: Option<u16>,
    /// How long to wait for the browser, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// google: which Google sink (its `name`; needed when there are several).
    #[arg(long)]
    sink: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Service {
    Feishu,
    Google,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.service {
        Service::Feishu => feishu(args).await,
        Service::Google => google(args).await,
    }
}

#[allow(clippy::print_stdout)]
async fn feishu(args: Args) -> anyhow::Result<ExitCode> {
    if args.sink.is_some() {
        anyhow::bail!("--sink is for `auth google`");
    }
    let loaded = crate::config::load(&args.config)?;
    let f = &loaded.feishu;
    let app = OauthApp {
        base_url: f.base_url.clone(),
        accounts_url: f.accounts_url.clone(),
        app_id: f.app_id.clone(),
        app_secret: f.app_secret.clone(),
    };
    let port = args.port.unwrap_or(FEISHU_PORT);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let port = listener.local_addr()?.port();
    let auth = app.authorize(&format!("http://127.0.0.1:{port}/callback"), &SCOPES);
    println!(
        "Open this URL in a browser and approve access:\n\n  {}\n",
        auth.url
    );
    println!("Waiting for the redirect to http://127.0.0.1:{port}/callback ...");
    let code = receive_redirect(listener, &auth.state, Duration::from_secs(args.timeout)).await?;
    let client = bridge_feishu::client::FeishuClient::new(
        bridge_feishu::client::ClientConfig::new(&f.base_url, &f.app_id, f.app_secret.clone()),
    )?;
    let http = client.http().clone();
    let tokens = app.exchange_code(&http, &auth, &code).await?;
    let store: Arc<dyn TokenStore> = Arc::new(FileTokenStore::new(&f.user_token_file));
    store.save(&tokens).await?;
    println!(
        "Authorized. Tokens saved to {} (mode 0600); the refresh token {}.",
        f.user_token_file.display(),
        if tokens.refresh_token.is_empty() {
            "is missing: enable offline_access for the app"
        } else {
            "is rotated automatically on every refresh"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The Google sink `--sink` names (`NAME` or `google:NAME`), or the only one.
fn select_sink<'a>(loaded: &'a Loaded, wanted: Option<&str>) -> anyhow::Result<&'a GoogleResolved> {
    let all = &loaded.google;
    let names = || {
        all.iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) => {
            let name = w.strip_prefix("google:").unwrap_or(w);
            all.iter().find(|g| g.name == name).ok_or_else(|| {
                if all.is_empty() {
                    anyhow::anyhow!("no sink named {w:?}: the configuration has no google sink")
                } else {
                    anyhow::anyhow!("no google sink named {w:?} (configured: {})", names())
                }
            })
        }
        None => match all.as_slice() {
            [] => {
                anyhow::bail!("the configuration has no google sink ([[sinks]] kind = \"google\")")
            }
            [one] => Ok(one),
            _ => anyhow::bail!(
                "several google sinks are configured ({}); choose one with --sink NAME",
                names()
            ),
        },
    }
}

#[allow(clippy::print_stdout)]
async fn google(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let g = select_sink(&loaded, args.sink.as_deref())?;
    let (client_id, client_secret) = match &g.auth {
        GoogleAuth::ServiceAccount { key, .. } => {
            println!(
                "Sink {} uses the service account {}: no interactive authorization is needed.",
                g.id, key.client_email
            );
            return Ok(ExitCode::SUCCESS);
        }
        GoogleAuth::Installed {
            client_id,
            client_secret,
        } => (client_id, client_secret),
    };
    let installed = InstalledApp {
        client_id: client_id.clone(),
        client_secret: Some(client_secret.clone()),
        auth_url: g.auth_url.clone(),
        token_url: g.client.token_url.clone(),
    };
    let port = args.port.unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let port = listener.local_addr()?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let auth = installed.authorize(&redirect, &[CALENDAR_SCOPE]);
    println!(
        "Open this URL in a browser and approve access:\n\n  {}\n",
        auth.url
    );
    println!("Waiting for the redirect to {redirect} ...");
    let code = receive_redirect(listener, &auth.state, Duration::from_secs(args.timeout))
        .await
        .context("Google authorization")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let refresh_token = installed
        .exchange_code(&http, &auth, &code)
        .await
        .with_context(|| format!("cannot exchange the code at {}", installed.token_url))?;
    let json = serde_json::json!({"refresh_token": refresh_token.expose()}).to_string();
    match app::open_store(&loaded).await {
        Ok(store) => {
            store
                .put_token(&google::token_name(&g.id), &json)
                .await
                .context("cannot store the refresh token")?;
            println!("Google authorization stored for sink {}", g.id);
        }
        Err(e) if app::is_locked(&e) => {
            let url = via_daemon(&loaded, &g.id, refresh_token.expose(), &http).await?;
            println!("Google authorization stored for sink {}", g.id);
            println!("(handed to the running daemon at {url}; the sink resumes without a restart)");
        }
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

/// The store is held by the daemon: `POST /admin/google-token`.
async fn via_daemon(
    loaded: &Loaded,
    sink: &str,
    refresh_token: &str,
    _http: &reqwest::Client,
) -> anyhow::Result<String> {
    let (url, request) = app::admin_request(
        loaded,
        reqwest::Method::POST,
        "/admin/google-token",
        std::time::Duration::from_secs(60),
    )?;
    let resp = request
        .json(&serde_json::json!({"sink": sink, "refresh_token": refresh_token}))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the store is in use (a daemon?) but its admin endpoint {url} does not answer: {e}"
            )
        })?;
    let status = resp.status();
    if !status.is_success() {
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        anyhow::bail!(
            "the daemon did not take the token ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(url)
}
