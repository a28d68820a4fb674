//! `feishu-bridge feeds list|show|rotate`: the secret addresses of the
//! served feeds (`[[sinks]] kind = "feed"`).
//!
//! While the daemon holds the store, the commands go through its admin
//! endpoint (`GET /admin/feeds`, `POST /admin/feeds/rotate`, with the bearer
//! token of `daemon-admin.token`), so a rotation takes effect in the running
//! daemon at once; otherwise they read and write the store themselves. Both
//! ways build the same entries with the same code ([`lines`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bridge_sinks::config::privacy_name;
use bridge_sinks::feed::{FeedEntry, FeedSink};
use serde::{Deserialize, Serialize};

use crate::app;
use crate::cmd::status::{Opened, open_existing};
use crate::config::Loaded;
use crate::sinks::Handle;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "feishu-bridge.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: FeedsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FeedsCommand {
    /// Every feed address: name, calendar, privacy, URL.
    List {
        /// As a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// The https and webcal:// URLs of a feed, optionally as a QR code.
    Show {
        name: String,
        #[arg(long)]
        calendar: Option<String>,
        /// A QR code of the webcal:// URL in the terminal (for a phone).
        #[arg(long)]
        qr: bool,
    },
    /// A new secret address; the old one answers 404 at once.
    Rotate {
        name: String,
        /// Only this calendar's address (default: every calendar of the feed).
        #[arg(long)]
        calendar: Option<String>,
    },
}

/// One address, as printed and as the admin endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FeedLine {
    pub(crate) name: String,
    pub(crate) calendar_id: String,
    pub(crate) privacy: String,
    pub(crate) url: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FeedLines {
    pub(crate) feeds: Vec<FeedLine>,
}

/// What `POST /admin/feeds/rotate` takes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RotateRequest {
    pub(crate) name: String,
    pub(crate) calendar: Option<String>,
}

/// The root of the feed URLs: `[server] public_url`, else `http://<addr>`
/// with `bound` (the daemon's real address) or the configured `listen`.
pub(crate) fn base_url(loaded: &Loaded, bound: Option<std::net::SocketAddr>) -> String {
    match &loaded.config.server.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!(
            "http://{}",
            bound.map_or_else(|| loaded.config.server.listen.clone(), |a| a.to_string())
        ),
    }
}

pub(crate) fn line(base: &str, e: &FeedEntry) -> FeedLine {
    FeedLine {
        name: e.name.clone(),
        calendar_id: e.calendar_id.clone(),
        privacy: privacy_name(e.privacy).to_owned(),
        url: format!("{base}/feeds/{}.ics", e.token),
    }
}

/// Every address of every feed sink in `handles`.
pub(crate) async fn lines(handles: &[Handle], base: &str) -> anyhow::Result<Vec<FeedLine>> {
    let mut out = Vec::new();
    for f in handles.iter().filter_map(Handle::feed) {
        let entries = f
            .entries()
            .await
            .with_context(|| format!("feed {}", f.name()))?;
        out.extend(entries.iter().map(|e| line(base, e)));
    }
    Ok(out)
}

/// The feed sink named `name` among `handles`.
pub(crate) fn find(handles: &[Handle], name: &str) -> anyhow::Result<Arc<FeedSink>> {
    let feeds: Vec<Arc<FeedSink>> = handles.iter().filter_map(Handle::feed).collect();
    feeds
        .iter()
        .find(|f| f.name() == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = feeds.iter().map(|f| f.name()).collect();
            anyhow::anyhow!(
                "no feed named {name:?} in the configuration (feeds: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )
        })
}

fn webcal(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    format!("webcal://{rest}")
}

/// Where the commands get their answers.
enum Via {
    /// The store, opened here, with the sinks built on it.
    Store(Vec<Handle>),
    /// The running daemon's admin endpoint.
    Daemon,
    /// No store yet: nothing was ever published.
    Nothing,
}

async fn via(loaded: &Loaded) -> anyhow::Result<Via> {
    Ok(match open_existing(&loaded.config.store.path).await? {
        Opened::Store(store) => Via::Store(app::build_sinks(loaded, &store).await?),
        Opened::Locked(_) => Via::Daemon,
        Opened::Missing => Via::Nothing,
    })
}

async fn admin_json<T: serde::de::DeserializeOwned>(
    loaded: &Loaded,
    method: reqwest::Method,
    path: &str,
    body: Option<&RotateRequest>,
) -> anyhow::Result<T> {
    let (url, mut request) = app::admin_request(loaded, method, path, Duration::from_secs(30))?;
    if let Some(b) = body {
        request = request.json(b);
    }
    let res = request
        .send()
        .await
        .with_context(|| format!("the daemon holds the store but {url} does not answer"))?;
    let status = res.status();
    if !status.is_success() {
        let text = res.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("the daemon answered {status}: {}", msg.trim());
    }
    res.json()
        .await
        .with_context(|| format!("unreadable answer from {url}"))
}

async fn all_lines(loaded: &Loaded) -> anyhow::Result<Vec<FeedLine>> {
    match via(loaded).await? {
        Via::Store(handles) => lines(&handles, &base_url(loaded, None)).await,
        Via::Daemon => {
            Ok(
                admin_json::<FeedLines>(loaded, reqwest::Method::GET, "/admin/feeds", None)
                    .await?
                    .feeds,
            )
        }
        Via::Nothing => Ok(Vec::new()),
    }
}

fn check_name(loaded: &Loaded, name: &str) -> anyhow::Result<()> {
    let names: Vec<&str> = loaded
        .sinks
        .iter()
        .filter(|c| c.target.kind() == "feed")
        .filter_map(|c| c.target.name())
        .collect();
    if names.contains(&name) {
        return Ok(());
    }
    bail!(
        "no feed named {name:?} in the configuration (feeds: {})",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
}

#[allow(clippy::print_stdout)]
fn print_lines(lines: &[FeedLine]) {
    for l in lines {
        println!("{}\t{}\t{}\t{}", l.name, l.calendar_id, l.privacy, l.url);
    }
}

/// A QR code of `text` in the terminal, two modules per character cell.
fn qr(text: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).context("QR code")?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    match args.command {
        FeedsCommand::List { json } => {
            let lines = all_lines(&loaded).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else if lines.is_empty() {
                println!(
                    "no feed address yet (an address is created when the daemon or `reconcile` first publishes a calendar)"
                );
            } else {
                print_lines(&lines);
            }
        }
        FeedsCommand::Show {
            name,
            calendar,
            qr: with_qr,
        } => {
            check_name(&loaded, &name)?;
            let mine: Vec<FeedLine> = all_lines(&loaded)
                .await?
                .into_iter()
                .filter(|l| l.name == name)
                .collect();
            let chosen: Vec<&FeedLine> = match &calendar {
                Some(c) => mine.iter().filter(|l| &l.calendar_id == c).collect(),
                None => mine.iter().collect(),
            };
            if chosen.is_empty() {
                bail!(
                    "feed {name:?} has no address{} yet (calendars with one: {})",
                    calendar
                        .as_ref()
                        .map(|c| format!(" for calendar {c:?}"))
                        .unwrap_or_default(),
                    if mine.is_empty() {
                        "none".to_owned()
                    } else {
                        mine.iter()
                            .map(|l| l.calendar_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
            }
            for l in chosen {
                println!(
                    "feed {} of calendar {} (privacy {})",
                    l.name, l.calendar_id, l.privacy
                );
                println!("  {}", l.url);
                println!("  {}", webcal(&l.url));
                if with_qr {
                    println!("{}", qr(&webcal(&l.url))?);
                }
            }
        }
        FeedsCommand::Rotate { name, calendar } => {
            check_name(&loaded, &name)?;
            let lines = match via(&loaded).await? {
                Via::Store(handles) => {
                    let f = find(&handles, &name)?;
                    let rotated = f
                        .rotate(calendar.as_deref(), app::unix_now())
                        .await
                        .with_context(|| format!("feed {name}"))?;
                    let base = base_url(&loaded, None);
                    rotated.iter().map(|e| line(&base, e)).collect()
                }
                Via::Daemon => {
                    admin_json::<FeedLines>(
                        &loaded,
                        reqwest::Method::POST,
                        "/admin/feeds/rotate",
                        Some(&RotateRequest {
                            name: name.clone(),
                            calendar,
                        }),
                    )
                    .await?
                    .feeds
                }
                Via::Nothing => Vec::new(),
            };
            if lines.is_empty() {
                bail!("feed {name:?} has no address yet: nothing to rotate");
            }
            println!("new addresses (the old ones answer 404 now):");
            print_lines(&lines);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webcal_urls_and_qr_codes() {
        assert_eq!(
            webcal("https://cal.example.com/feeds/x.ics"),
            "webcal://cal.example.com/feeds/x.ics"
        );
        assert_eq!(
            webcal("http://127.0.0.1:8787/feeds/x.ics"),
            "webcal://127.0.0.1:8787/feeds/x.ics"
        );
        let q = qr("webcal://cal.example.com/feeds/abc.ics").unwrap();
        assert!(q.lines().count() > 10);
        assert!(q.contains('█') || q.contains('▀') || q.contains('▄'));
    }
}
