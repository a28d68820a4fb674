//! `feishu-bridge auth feishu`: authorize a Feishu user (code flow with PKCE
//! through a loopback redirect) and store the tokens.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bridge_feishu::auth::{FileTokenStore, OauthApp, TokenStore, receive_redirect};

/// Scopes needed to read calendars and subscribe to their changes.
const SCOPES: [&str; 2] = ["calendar:calendar:readonly", "calendar:calendar.event:read"];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which service to authorize.
    #[arg(value_enum)]
    service: Service,
    #[arg(long, default_value = "feishu-bridge.toml")]
    config: PathBuf,
    /// Loopback port of the redirect (the redirect URL
    /// http://127.0.0.1:<port>/callback must be allowed in the app's console); 0 picks one.
    #[arg(long, default_value_t = 8788)]
    port: u16,
    /// How long to wait for the browser, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Service {
    Feishu,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Service::Feishu = args.service;
    let loaded = crate::config::load(&args.config)?;
    let f = &loaded.feishu;
    let app = OauthApp {
        base_url: f.base_url.clone(),
        accounts_url: f.accounts_url.clone(),
        app_id: f.app_id.clone(),
        app_secret: f.app_secret.clone(),
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
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
