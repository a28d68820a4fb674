//! `feishu-bridge sandbox`: the emulated Feishu tenant (and the target
//! emulators) as a standing local service, with a ready configuration, so a
//! user can try `reconcile`, `run`, `status`, `explain` and a change made in
//! "Feishu" before pointing the bridge at a real tenant. Runs until Ctrl-C.
//! `demo` stays the one-shot tour.
//!
//! Only with the `demo` feature, like `demo`: the emulators are linked
//! nowhere else in the binary.

#![cfg(feature = "demo")]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bridge_core::feishu::EventListResponse;
use bridge_emulators::ews::{EwsConfig, EwsEmulator};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WsClientConfig};
use bridge_emulators::google::{GoogleConfig, GoogleEmulator};
use bridge_emulators::graph::{
    GraphConfig, GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_TENANT,
};
use bridge_feishu::auth::{FileTokenStore, Secret, TokenStore, UserTokens};

use super::demo::{EXAMPLE, Refusal, prepare_dir_marked};
use crate::app::unix_now;

const MARKER: &str = ".feishu-bridge-sandbox";
/// The Google user whose calendar receives the mirror (the sandbox's
/// service account acts for it by domain-wide delegation).
const GOOGLE_OWNER: &str = "you@example.com";
/// The Exchange mailboxes (EWS on premises, Graph for Exchange Online).
const EWS_MAILBOX: &str = "alice@example.com";
const GRAPH_MAILBOX: &str = "you@example.com";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the configuration, store and mirrors go. Cleared first if an
    /// earlier sandbox created it; any other non-empty directory is refused.
    #[arg(long, default_value = "feishu-bridge-sandbox")]
    dir: PathBuf,
    /// Sample events in the team calendar.
    #[arg(long, default_value_t = 200)]
    events: usize,
}

/// A target emulator the sandbox runs: the `[[sinks]]` table that points a
/// sink at it, its line of the banner, and how it stops.
struct Running {
    table: String,
    banner: String,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

type Start = fn(PathBuf) -> Pin<Box<dyn Future<Output = anyhow::Result<Running>> + Send>>;

/// The target emulators the sandbox runs, one line each; their sinks go
/// between the ICS and the feed sinks, in this order.
const TARGETS: &[Start] = &[
    |dir| Box::pin(google(dir)),
    |dir| Box::pin(ews(dir)),
    |dir| Box::pin(graph(dir)),
];

/// Google: a service account acting for the calendar owner; its key is
/// written into `dir`.
async fn google(dir: PathBuf) -> anyhow::Result<Running> {
    let google = GoogleEmulator::start(GoogleConfig {
        rate_limit: None,
        ..GoogleConfig::default()
    })
    .await
    .context("cannot start the Google emulator")?;
    google.add_user(GOOGLE_OWNER);
    let gcal = google.create_calendar(GOOGLE_OWNER, "Feishu mirror");
    std::fs::write(
        dir.join("google-service-account.json"),
        serde_json::to_vec_pretty(&google.service_account_key_json())?,
    )?;
    Ok(Running {
        table: format!(
            r#"[[sinks]]
kind = "google"
name = "sandbox"
calendar_id = "{gcal}"
service_account_key_file = "google-service-account.json"
subject = "{GOOGLE_OWNER}"
base_url = "{gbase}"
token_url = "{gtoken}"
auth_url = "{gauth}"
requests_per_second = 0.0
"#,
            gbase = google.base_url(),
            gtoken = google.token_url(),
            gauth = google.auth_url(),
        ),
        banner: format!("Google (emulated)  {}   calendar {gcal}", google.base_url()),
        stop: Box::pin(google.shutdown()),
    })
}

/// Exchange on premises.
async fn ews(_dir: PathBuf) -> anyhow::Result<Running> {
    let ews = EwsEmulator::start(EwsConfig::default())
        .await
        .context("cannot start the EWS emulator")?;
    Ok(Running {
        table: format!(
            r#"[[sinks]]
kind = "ews"                    # Exchange on premises (the emulated EWS endpoint)
name = "exchange"
url = "{ews_url}"
mailbox = "{EWS_MAILBOX}"
auth = "basic"
username = "svc-bridge"
password = "correct horse"
impersonation = true
"#,
            ews_url = ews.ews_url(),
        ),
        banner: format!(
            "EWS (emulated)     {}   mailbox {EWS_MAILBOX}",
            ews.ews_url()
        ),
        stop: Box::pin(ews.shutdown()),
    })
}

/// Exchange Online.
async fn graph(_dir: PathBuf) -> anyhow::Result<Running> {
    let graph = GraphEmulator::start_with(GraphConfig {
        rate_limit: None,
        ..GraphConfig::default()
    })
    .await
    .context("cannot start the Graph emulator")?;
    graph.add_mailbox(GRAPH_MAILBOX, MailboxAccess::Enabled);
    Ok(Running {
        table: format!(
            r#"[[sinks]]
kind = "graph"                  # Exchange Online (the emulated Microsoft Graph)
name = "m365"
tenant_id = "{TEST_TENANT}"
client_id = "{TEST_CLIENT_ID}"
client_secret = "{TEST_CLIENT_SECRET}"
mailbox = "{GRAPH_MAILBOX}"
calendar = "Feishu mirror"
create_calendar = true
base_url = "{graph_base}"
token_url = "{graph_token}"
"#,
            graph_base = graph.base_url(),
            graph_token = graph.token_url(),
        ),
        banner: format!(
            "Graph (emulated)   {}   mailbox {GRAPH_MAILBOX}, calendar \"Feishu mirror\"",
            graph.base_url()
        ),
        stop: Box::pin(async move { graph.shutdown().await }),
    })
}

fn config_text(
    dir: &Path,
    feishu: &FeishuEmulator,
    calendars: &[&str],
    targets: &[Running],
    listen: &str,
) -> String {
    let c = feishu.config();
    let list: Vec<String> = calendars.iter().map(|c| format!("{c:?}")).collect();
    let tables: String = targets.iter().map(|t| format!("\n{}", t.table)).collect();
    format!(
        r#"# Written by `feishu-bridge sandbox` for its emulated tenant ({dir}).
# Relative paths are relative to this file.

[store]
path = "state/bridge.redb"

[feishu]
base_url = "{base}"             # the emulated Feishu
app_id = "{app_id}"
app_secret = "{app_secret}"
calendars = [{list}]
delivery = "long_connection"    # change events arrive over the emulator's long connection

[server]
listen = "{listen}"       # /healthz, /metrics, /feeds/<secret>.ics
admin_listen = "127.0.0.1:0"    # found by the CLI through state/daemon-admin.addr

[sync]
debounce_ms = 200

[[sinks]]
kind = "ics"
dir = "out/ics"
{tables}
[[sinks]]
kind = "feed"                   # served by `run` at /feeds/<secret>.ics; `feeds list` shows the URLs
name = "team"
calendars = "all"
privacy = "busy"
"#,
        dir = dir.display(),
        base = feishu.base_url(),
        app_id = c.app_id,
        app_secret = c.app_secret,
        list = list.join(", "),
    )
}

/// A loopback address with a port free now, for `run`'s listener: a fixed
/// port (not 0) so that the feed URLs `feeds list` prints before `run`
/// starts are the ones `run` serves.
fn free_loopback_port() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?.to_string())
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    if let Err(why) = prepare_dir_marked(
        dir,
        MARKER,
        "Created by `feishu-bridge sandbox`, which clears this directory when it runs again.\n",
    )? {
        let what = match why {
            Refusal::NotADirectory => "is not a directory (or is a symbolic link)",
            Refusal::NotOurs => "is not empty and was not created by `feishu-bridge sandbox`",
        };
        anyhow::bail!(
            "{} {what}; choose another with --dir. Nothing was deleted.",
            dir.display()
        );
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;

    let feishu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(100),
        long_connection: true,
        ws_client_config: WsClientConfig {
            reconnect_count: -1,
            reconnect_interval: 1,
            reconnect_nonce: 1,
            ping_interval: 30,
        },
        ..FeishuConfig::default()
    })
    .await
    .context("cannot start the Feishu emulator")?;
    let mut targets = Vec::with_capacity(TARGETS.len());
    for start in TARGETS {
        targets.push(start(dir.clone()).await?);
    }

    // A tenant: a user with a primary calendar (every mapping case) and a
    // team calendar (sample events around today).
    let user = feishu.add_user("Li Lei");
    let primary = feishu.primary_calendar(&user);
    feishu.update_calendar(&primary, |c| c.summary = Some("Li Lei".into()));
    let team = feishu.create_calendar("Team calendar");
    let example: EventListResponse = serde_json::from_str(EXAMPLE).context("example events")?;
    feishu.bulk_load(&primary, example.data.map(|d| d.items).unwrap_or_default());
    feishu.bulk_load(
        &team,
        bridge_core::sample::events(args.events, 7, unix_now() - 30 * 86_400),
    );
    feishu.subscribe_events(&user, &primary);
    feishu.subscribe_events(&user, &team);
    // The user token `subscribe` and `identity = "user"` would use, as
    // `auth feishu` leaves it.
    let (access, refresh) =
        feishu.issue_user_token(&user, "calendar:calendar:readonly offline_access");
    std::fs::create_dir_all(dir.join("state"))?;
    FileTokenStore::new(dir.join("state/feishu-user-token.json"))
        .save(&UserTokens {
            access_token: Secret::new(access),
            access_expires_at: unix_now() + 7000,
            refresh_token: Secret::new(refresh.unwrap_or_default()),
            refresh_expires_at: unix_now() + 604_800,
            scope: "calendar:calendar:readonly offline_access".into(),
        })
        .await?;
    let config = dir.join("feishu-bridge.toml");
    std::fs::write(
        &config,
        config_text(
            &dir,
            &feishu,
            &[&primary, &team],
            &targets,
            &free_loopback_port()?,
        ),
    )?;

    // An event to explain, and a change to make.
    let some_event = feishu
        .events(&team)
        .into_iter()
        .find_map(|e| e.event_id)
        .unwrap_or_default();
    let start = unix_now() + 86_400;
    let new_event = serde_json::json!({
        "summary": "Added in the sandbox",
        "start_time": {"timestamp": start.to_string(), "timezone": "Asia/Shanghai"},
        "end_time": {"timestamp": (start + 3600).to_string(), "timezone": "Asia/Shanghai"},
    });
    let cfg = config.display();
    println!(
        "feishu-bridge sandbox: an emulated tenant is running (Ctrl-C stops it).\n\n\
         Feishu (emulated)  {feishu_url}   user Li Lei, calendars \"Li Lei\" ({primary})\n\
         {pad}   and \"Team calendar\" ({team})\n\
         {banners}\
         Configuration      {cfg}\n\n\
         Try, in another terminal:\n\
         \x20 feishu-bridge check     --config {cfg}\n\
         \x20 feishu-bridge reconcile --config {cfg} --dry-run\n\
         \x20 feishu-bridge reconcile --config {cfg}\n\
         \x20 feishu-bridge status    --config {cfg}\n\
         \x20 feishu-bridge explain   --config {cfg} {some_event}\n\
         \x20 feishu-bridge run       --config {cfg}      # the daemon; then, in a third terminal:\n\
         \x20 curl -s -X POST -H 'content-type: application/json' \\\n\
         \x20   {feishu_url}/_emulator/calendars/{team}/events \\\n\
         \x20   -d '{new_event}'\n\
         \x20 # the new event reaches {ics}/ and the Google calendar within a second;\n\
         \x20 feishu-bridge status    --config {cfg}      # works while `run` holds the store\n\
         \x20 feishu-bridge feeds list --config {cfg}    # the served feeds, to subscribe to\n\n\
         The emulators' control API: {feishu_url}/_emulator/state (everything), .../calls, .../fail_next (faults).\n\
         ready",
        feishu_url = feishu.base_url(),
        banners = targets
            .iter()
            .map(|t| format!("{}\n", t.banner))
            .collect::<String>(),
        pad = " ".repeat(feishu.base_url().len() + 18),
        ics = dir.join("out/ics").display(),
    );

    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("stopping the emulators; {} is kept", dir.display());
    feishu.shutdown().await;
    for t in targets {
        t.stop.await;
    }
    Ok(ExitCode::SUCCESS)
}
