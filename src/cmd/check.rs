//! `feishu-bridge check`: is this configuration ready to run? One line per
//! check, `ok` / `warn` / `FAIL` with the reason:
//!
//! - the configuration (every problem with its key path; exit 2),
//! - the store (locked by a running daemon is a warning),
//! - every sink, by its kind's health check (ICS: the directory, created, a
//!   file written and removed; Google: credentials, an access token, the
//!   target calendar),
//! - Feishu reachable at `base_url`, the app credentials (a tenant token),
//! - the user token when the identity or the delivery needs one,
//! - every configured calendar readable (`primary` / `all` resolved).
//!
//! Exit 0 when nothing failed, 1 when something did, 2 for an invalid
//! configuration.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bridge_feishu::FeishuError;
use bridge_feishu::auth::{EXPIRY_MARGIN, FileTokenStore, TokenStore};
use bridge_feishu::client::{FeishuClient, Identity};

use crate::app;
use crate::cmd::status::{Opened, count, fmt_span, fmt_time, open_existing};
use crate::config::{Calendars, Delivery, IdentityConfig, Loaded};
use bridge_sinks::config::{Check, Level, Writable};

/// Exit code when a check failed.
const EXIT_FAILED: u8 = 1;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "feishu-bridge.toml")]
    config: PathBuf,
    /// Create the missing directories (the store's, the sinks') before checking; without it
    /// `check` changes nothing and says what the first sync would create.
    #[arg(long)]
    fix: bool,
}

/// Prints the lines as they are decided and remembers whether one failed.
#[derive(Debug, Default)]
struct Report {
    failed: bool,
}

impl Report {
    #[allow(clippy::print_stdout)]
    fn line(&mut self, level: Level, what: &str, detail: impl std::fmt::Display) {
        let tag = match level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => {
                self.failed = true;
                "FAIL"
            }
        };
        println!("{tag:<5} {what}: {detail}");
        let _ = std::io::stdout().flush();
    }

    #[allow(clippy::print_stdout)]
    fn note(&mut self, text: impl std::fmt::Display) {
        println!("      {text}");
    }
}

/// The Feishu client of the configuration, with few retries: `check` must
/// answer quickly, and a failure is what it reports.
pub(crate) fn client(loaded: &Loaded) -> Result<FeishuClient, FeishuError> {
    let mut cfg = crate::app::client_config(loaded);
    cfg.max_retries = 1;
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(15);
    cfg.backoff_max = Duration::from_secs(2);
    cfg.max_throttle_wait = Duration::from_secs(5);
    crate::app::feishu_client(loaded, cfg)
}

const TOKEN_ENDPOINT: &str = "tenant_access_token";

/// What the first call (a tenant token, then the app's primary calendar)
/// says about reachability and the app credentials.
#[derive(Debug)]
enum Probe {
    /// A tenant token was obtained.
    Authenticated,
    /// Feishu answered the token request with an error code.
    BadCredentials(FeishuError),
    /// Something answered, but not as Feishu does.
    NotFeishu(FeishuError),
    /// No connection.
    Unreachable(FeishuError),
}

async fn probe(client: &FeishuClient) -> Probe {
    match client.primary_calendars(Identity::Tenant).await {
        Ok(_) => Probe::Authenticated,
        Err(e) => match &e {
            FeishuError::Transport { .. } => Probe::Unreachable(e),
            FeishuError::Api { endpoint, .. } if endpoint.contains(TOKEN_ENDPOINT) => {
                Probe::BadCredentials(e)
            }
            FeishuError::Decode { endpoint, .. } | FeishuError::Http { endpoint, .. }
                if endpoint.contains(TOKEN_ENDPOINT) =>
            {
                Probe::NotFeishu(e)
            }
            // The token was issued; what the app may read is checked per calendar.
            _ => Probe::Authenticated,
        },
    }
}

/// `--fix`: creates the directories the first sync would create.
fn fix(r: &mut Report, loaded: &Loaded) {
    let store_dir = loaded.config.store.path.parent().map(Path::to_owned);
    let dirs = store_dir.into_iter().chain(
        loaded
            .sinks
            .iter()
            .flat_map(|s| s.target.config().directories()),
    );
    for dir in dirs {
        if dir.as_os_str().is_empty() || dir.is_dir() {
            continue;
        }
        match std::fs::create_dir_all(&dir) {
            Ok(()) => r.line(Level::Ok, "fix", format!("created {}", dir.display())),
            Err(e) => r.line(
                Level::Fail,
                "fix",
                format!("cannot create {}: {e}", dir.display()),
            ),
        }
    }
}

/// Whether the store is locked by another process, and the store when it
/// opened.
async fn check_store(r: &mut Report, loaded: &Loaded) -> (bool, Option<bridge_store::Store>) {
    let path = &loaded.config.store.path;
    match open_existing(path).await {
        Ok(Opened::Store(store)) => {
            let store = match store.check_integrity().await {
                Ok(store) => store,
                Err(e) => {
                    r.line(Level::Fail, "store", e);
                    return (false, None);
                }
            };
            match store.stats().await {
                Ok(s) => r.line(
                    Level::Ok,
                    "store",
                    format!(
                        "{} opens (schema {}, {} synced, {}, {})",
                        path.display(),
                        s.schema_version,
                        count(s.cursors, "calendar"),
                        count(s.snapshots, "snapshot"),
                        count(s.failures, "failing item"),
                    ),
                ),
                Err(e) => r.line(Level::Fail, "store", format!("{}: {e}", path.display())),
            }
            return (false, Some(store));
        }
        Ok(Opened::Locked(e)) => {
            r.line(Level::Warn, "store", e);
            return (true, None);
        }
        Ok(Opened::Missing) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match bridge_sinks::config::writable_dir(dir) {
                Ok(Writable::Exists) => r.line(
                    Level::Ok,
                    "store",
                    format!(
                        "{} does not exist yet; it will be created by the first sync ({} is writable)",
                        path.display(),
                        dir.display()
                    ),
                ),
                Ok(Writable::WouldCreate(parent)) => r.line(
                    Level::Ok,
                    "store",
                    format!(
                        "{} does not exist yet; the first sync creates it and {} ({} is writable)",
                        path.display(),
                        dir.display(),
                        parent.display()
                    ),
                ),
                Err(e) => r.line(
                    Level::Fail,
                    "store",
                    format!(
                        "{} cannot be created: {}: {e}",
                        path.display(),
                        dir.display()
                    ),
                ),
            }
        }
        Err(e) => r.line(Level::Fail, "store", format!("{e:#}")),
    }
    (false, None)
}

/// Every sink, in file order, through its kind's health check.
async fn check_sinks(
    r: &mut Report,
    loaded: &Loaded,
    store: Option<&bridge_store::Store>,
    store_locked: bool,
) {
    if loaded.sinks.is_empty() {
        r.line(
            Level::Warn,
            "sinks",
            "none configured: a sync reads Feishu and writes nowhere",
        );
    }
    for sink in &loaded.sinks {
        let what = sink.what();
        for check in sink.target.healthcheck(store, store_locked).await {
            match check {
                Check::Line(level, detail) => r.line(level, &what, detail),
                Check::Note(text) => r.note(text),
            }
        }
    }
}

/// The user token: present, not expired, accepted. A refresh is avoided
/// while another process holds the store (it may hold the same refresh
/// token, which is single-use).
async fn check_user_token(
    r: &mut Report,
    loaded: &Loaded,
    client: &FeishuClient,
    store_locked: bool,
    now: i64,
) {
    let f = &loaded.config.feishu;
    let mut needed_by = Vec::new();
    if f.identity == IdentityConfig::User {
        needed_by.push("identity = \"user\" reads the calendars with it".to_owned());
    }
    match f.delivery {
        Delivery::Webhook | Delivery::LongConnection => needed_by.push(format!(
            "delivery = \"{}\" needs `feishu-bridge subscribe`, which uses it",
            if f.delivery == Delivery::Webhook {
                "webhook"
            } else {
                "long_connection"
            }
        )),
        Delivery::Poll => {}
    }
    let file = &loaded.feishu.user_token_file;
    let tokens = match FileTokenStore::new(file).load().await {
        Ok(t) => t,
        Err(e) => {
            r.line(Level::Fail, "user token", e);
            return;
        }
    };
    let Some(tokens) = tokens else {
        if needed_by.is_empty() {
            r.line(
                Level::Ok,
                "user token",
                "not needed (identity = \"tenant\", delivery = \"poll\")",
            );
        } else {
            r.line(
                Level::Warn,
                "user token",
                format!(
                    "none at {}; run `feishu-bridge auth feishu` ({})",
                    file.display(),
                    needed_by.join("; ")
                ),
            );
        }
        return;
    };
    if tokens.refresh_expires_at != 0 && tokens.refresh_expires_at <= now {
        r.line(
            Level::Fail,
            "user token",
            format!(
                "the refresh token expired at {}; run `feishu-bridge auth feishu` again",
                fmt_time(tokens.refresh_expires_at)
            ),
        );
        return;
    }
    let margin = i64::try_from(EXPIRY_MARGIN.as_secs()).unwrap_or(0);
    let fresh = tokens.access_expires_at - margin > now;
    if !fresh && store_locked {
        r.line(
            Level::Ok,
            "user token",
            format!(
                "present; the access token expired at {} and is refreshed by the running daemon \
                 (not here: a refresh token is single-use)",
                fmt_time(tokens.access_expires_at)
            ),
        );
        return;
    }
    match client.primary_calendars(Identity::User).await {
        Ok(_) => r.line(
            Level::Ok,
            "user token",
            format!(
                "accepted by Feishu ({}; refresh token {})",
                if fresh {
                    format!(
                        "access token valid for {}",
                        fmt_span(tokens.access_expires_at - now)
                    )
                } else {
                    "access token refreshed".to_owned()
                },
                if tokens.refresh_expires_at == 0 {
                    "expiry unknown".to_owned()
                } else {
                    format!("valid until {}", fmt_time(tokens.refresh_expires_at))
                }
            ),
        ),
        Err(e) => r.line(Level::Fail, "user token", e),
    }
}

async fn check_calendars(r: &mut Report, loaded: &Loaded, client: &FeishuClient) {
    let identity = app::identity(loaded);
    let who = match identity {
        Identity::Tenant => "the app",
        Identity::User => "the user",
    };
    match &loaded.config.feishu.calendars {
        Calendars::List(ids) => {
            for id in ids {
                let what = format!("calendar {id}");
                match client.get_calendar(identity, id).await {
                    Ok(c) => r.line(
                        Level::Ok,
                        &what,
                        format!(
                            "readable by {who} ({:?}, role {})",
                            c.summary_alias
                                .filter(|s| !s.is_empty())
                                .or(c.summary)
                                .unwrap_or_default(),
                            c.role.as_deref().unwrap_or("unknown")
                        ),
                    ),
                    Err(e) => r.line(Level::Fail, &what, e),
                }
            }
        }
        Calendars::Primary => match client.primary_calendars(identity).await {
            Ok(cals) => {
                let ids: Vec<String> = cals.into_iter().filter_map(|c| c.calendar_id).collect();
                if ids.is_empty() {
                    r.line(
                        Level::Fail,
                        "calendars = \"primary\"",
                        format!("Feishu names no primary calendar for {who}"),
                    );
                } else {
                    r.line(
                        Level::Ok,
                        "calendars = \"primary\"",
                        format!("{who}'s primary calendar: {}", ids.join(", ")),
                    );
                }
            }
            Err(e) => r.line(Level::Fail, "calendars = \"primary\"", e),
        },
        Calendars::All => match client.list_calendars(identity, None).await {
            Ok(l) => {
                let n = l
                    .calendars
                    .iter()
                    .filter(|c| c.is_deleted != Some(true))
                    .count();
                r.line(
                    if n == 0 { Level::Warn } else { Level::Ok },
                    "calendars = \"all\"",
                    format!("{n} calendars listed for {who}"),
                );
            }
            Err(e) => r.line(Level::Fail, "calendars = \"all\"", e),
        },
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut r = Report::default();
    let loaded = match crate::config::load(&args.config) {
        Ok(l) => l,
        Err(e) => {
            r.line(
                Level::Fail,
                "config",
                format!("{} is invalid:", e.file.display()),
            );
            for p in &e.problems {
                r.note(format!("- {p}"));
            }
            return Ok(ExitCode::from(crate::EXIT_USAGE));
        }
    };
    let f = &loaded.config.feishu;
    r.line(
        Level::Ok,
        "config",
        format!(
            "{} is valid ({}, {}, identity {}, delivery {})",
            args.config.display(),
            match &f.calendars {
                Calendars::List(ids) => count(ids.len() as u64, "calendar"),
                Calendars::Primary => "calendars = \"primary\"".to_owned(),
                Calendars::All => "calendars = \"all\"".to_owned(),
            },
            count(loaded.sinks.len() as u64, "sink"),
            match f.identity {
                IdentityConfig::Tenant => "tenant",
                IdentityConfig::User => "user",
            },
            match f.delivery {
                Delivery::LongConnection => "long_connection",
                Delivery::Webhook => "webhook",
                Delivery::Poll => "poll",
            }
        ),
    );
    if args.fix {
        fix(&mut r, &loaded);
    }
    let (store_locked, store) = check_store(&mut r, &loaded).await;
    check_sinks(&mut r, &loaded, store.as_ref(), store_locked).await;
    drop(store);

    let now = app::unix_now();
    let client = client(&loaded)?;
    let base = &loaded.feishu.base_url;
    let mut unreachable = false;
    let authenticated = match probe(&client).await {
        Probe::Authenticated => {
            r.line(Level::Ok, "feishu", format!("{base} reachable"));
            r.line(
                Level::Ok,
                "credentials",
                format!("app {} got a tenant access token", loaded.feishu.app_id),
            );
            true
        }
        Probe::BadCredentials(e) => {
            r.line(Level::Ok, "feishu", format!("{base} reachable"));
            let detail = match &e {
                FeishuError::Api { code, msg, .. } => format!(
                    "Feishu refused app {}: code {code}: {msg} (check feishu.app_id and feishu.app_secret)",
                    loaded.feishu.app_id
                ),
                other => other.to_string(),
            };
            r.line(Level::Fail, "credentials", detail);
            false
        }
        Probe::NotFeishu(e) => {
            r.line(
                Level::Fail,
                "feishu",
                format!(
                    "{base} answered, but not as the Feishu API does (check feishu.base_url): {e}"
                ),
            );
            false
        }
        Probe::Unreachable(e) => {
            r.line(Level::Fail, "feishu", format!("cannot reach {base}: {e}"));
            unreachable = true;
            false
        }
    };
    if authenticated {
        check_user_token(&mut r, &loaded, &client, store_locked, now).await;
        check_calendars(&mut r, &loaded, &client).await;
    } else {
        r.note("(the user token and the calendars were not checked)");
    }
    Ok(if unreachable {
        // The same code as `reconcile` when Feishu cannot be reached.
        ExitCode::from(crate::cmd::reconcile::EXIT_SOURCE_UNAVAILABLE)
    } else if r.failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
