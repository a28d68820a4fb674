//! `feishu-bridge auth feishu`: authorize a Feishu user (code flow with PKCE
//! through a loopback redirect) and store the tokens.
//!
//! `feishu-bridge auth <kind> [--sink NAME]` (`auth google`): the same for a
//! sink whose kind has an authorization capability (a Google sink with an
//! installed-app OAuth client); the sink's module runs the consent, and its
//! token goes to the store (or, while the daemon holds the store, to the
//! daemon's admin endpoint, which stores it and resumes the sink).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bridge_feishu::auth::{FileTokenStore, OauthApp, TokenStore, receive_redirect};
use bridge_sinks::config::Authorization;

use crate::app;
use crate::config::Loaded;
use crate::sinks::{KINDS, Target};

/// Scopes needed to read calendars and subscribe to their changes.
const SCOPES: [&str; 2] = ["calendar:calendar:readonly", "calendar:calendar.event:read"];

/// The loopback port of `auth feishu` when `--port` is not given (the one
/// the README asks to allow in the Feishu app's console).
const FEISHU_PORT: u16 = 8788;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which service to authorize: feishu, or a kind of sink that needs it.
    #[arg(value_parser = services())]
    service: String,
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
    /// Which sink of that kind (its `name`; needed when there are several).
    #[arg(long)]
    sink: Option<String>,
}

/// `feishu` and every kind of sink with an authorization capability.
fn services() -> clap::builder::PossibleValuesParser {
    let kinds = KINDS.iter().filter(|k| k.auth).map(|k| k.name);
    clap::builder::PossibleValuesParser::new(std::iter::once("feishu").chain(kinds))
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.service.as_str() {
        "feishu" => feishu(args).await,
        kind => {
            let kind = kind.to_owned();
            sink(args, &kind).await
        }
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

/// The sink of `kind` that `--sink` names (`NAME` or `<kind>:NAME`), or
/// the only one.
fn select_sink<'a>(
    loaded: &'a Loaded,
    kind: &str,
    wanted: Option<&str>,
) -> anyhow::Result<&'a Target> {
    let all: Vec<&Target> = loaded
        .sinks
        .iter()
        .map(|c| &c.target)
        .filter(|t| t.kind() == kind)
        .collect();
    let names = || {
        all.iter()
            .filter_map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) => {
            let name = w.strip_prefix(&format!("{kind}:")).unwrap_or(w);
            all.iter()
                .find(|t| t.name() == Some(name))
                .copied()
                .ok_or_else(|| {
                    if all.is_empty() {
                        anyhow::anyhow!("no sink named {w:?}: the configuration has no {kind} sink")
                    } else {
                        anyhow::anyhow!("no {kind} sink named {w:?} (configured: {})", names())
                    }
                })
        }
        None => match all.as_slice() {
            [] => {
                anyhow::bail!("the configuration has no {kind} sink ([[sinks]] kind = \"{kind}\")")
            }
            [one] => Ok(one),
            _ => anyhow::bail!(
                "several {kind} sinks are configured ({}); choose one with --sink NAME",
                names()
            ),
        },
    }
}

/// `auth <kind>`: the consent of the sink's module in the browser; the
/// token goes to the store, or to the running daemon holding it.
#[allow(clippy::print_stdout)]
async fn sink(args: Args, kind: &str) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let target = select_sink(&loaded, kind, args.sink.as_deref())?;
    let id = target.id();
    let (token_name, mut consent) = match target.authorization() {
        None => {
            println!("Sink {id} needs no authorization.");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Authorization::NotNeeded(why)) => {
            println!("{why}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Authorization::Browser {
            token_name,
            consent,
        }) => (token_name, consent),
    };
    let port = args.port.unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let port = listener.local_addr()?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (url, state) = consent.start(&redirect);
    println!("Open this URL in a browser and approve access:\n\n  {url}\n");
    println!("Waiting for the redirect to {redirect} ...");
    let code = receive_redirect(listener, &state, Duration::from_secs(args.timeout))
        .await
        .with_context(|| format!("{} authorization", service_title(kind)))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let token = consent
        .finish(&http, &code)
        .await
        .map_err(anyhow::Error::msg)?;
    let title = service_title(kind);
    match app::open_store(&loaded).await {
        Ok(store) => {
            store
                .put_token(&token_name, &token)
                .await
                .context("cannot store the token")?;
            println!("{title} authorization stored for sink {id}");
        }
        Err(e) if app::is_locked(&e) => {
            let url = via_daemon(&loaded, &id, &token, &http).await?;
            println!("{title} authorization stored for sink {id}");
            println!("(handed to the running daemon at {url}; the sink resumes without a restart)");
        }
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

/// `google` -> `Google`.
fn service_title(kind: &str) -> String {
    let mut c = kind.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The store is held by the daemon: `POST /admin/token`.
async fn via_daemon(
    loaded: &Loaded,
    sink: &str,
    token: &str,
    _http: &reqwest::Client,
) -> anyhow::Result<String> {
    let token: serde_json::Value =
        serde_json::from_str(token).context("the sink's token is not JSON")?;
    let (url, request) = app::admin_request(
        loaded,
        reqwest::Method::POST,
        "/admin/token",
        std::time::Duration::from_secs(60),
    )?;
    let resp = request
        .json(&serde_json::json!({"sink": sink, "token": token}))
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
