//! `feishu-bridge demo`: the whole product on a local, emulated Feishu
//! tenant. Starts the Feishu emulator in-process, loads a few hundred events
//! covering every mapping case, mirrors them to ICS files, then makes live
//! changes in "Feishu" and shows each one arrive through a signed, encrypted
//! webhook push and the change-driven sync path.
//!
//! Only with the `demo` feature (on by default): this is the one module of
//! the binary that uses the emulators.

#![cfg(feature = "demo")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bridge_core::feishu::{Event, EventListResponse, TimeInfo, UnixSeconds};
use bridge_core::plan::Rules;
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget};
use bridge_engine::SinkState;
use bridge_engine::daemon::{Hub, Metrics, Worker};
use bridge_engine::feishu_source::{FeishuSource, Selection};
use bridge_engine::{Engine, EngineConfig, Sink};
use bridge_feishu::auth::{FileTokenStore, OauthApp, Secret, TokenStore, UserAuth, UserTokens};
use bridge_feishu::client::{ClientConfig, FeishuClient, Identity};
use bridge_feishu::webhook::{DeliverySink, WebhookConfig};
use bridge_sinks::feed::{self, FeedBook};
use bridge_sinks::ics::IcsSink;
use bridge_store::Store;
use tokio_util::sync::CancellationToken;

use crate::app::unix_now;

/// Every mapping case of the golden fixtures, as a Feishu list response.
pub(crate) const EXAMPLE: &str = include_str!("../../examples/feishu-events.json");
const ENCRYPT_KEY: &str = "demo-encrypt-key";
/// The file that marks a directory as one `demo` created: only such a
/// directory (or an empty one) is ever cleared.
pub(crate) const MARKER: &str = ".feishu-bridge-demo";
const VERIFICATION_TOKEN: &str = "demo-verification-token";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the ICS files and the demo's state go. Cleared first if an
    /// earlier demo created it; any other non-empty directory is refused.
    #[arg(long, default_value = "feishu-bridge-demo")]
    dir: PathBuf,
    /// Sample events in the team calendar.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// After the scripted changes, keep serving the feeds (and syncing
    /// Feishu changes) until Ctrl-C, to subscribe from a calendar app.
    #[arg(long)]
    keep_serving: bool,
}

fn timed(at: i64, tz: &str) -> TimeInfo {
    TimeInfo {
        timestamp: Some(UnixSeconds(at)),
        timezone: Some(tz.into()),
        date: None,
    }
}

async fn wait_for(file: &Path, what: impl Fn(&str) -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok(text) = tokio::fs::read_to_string(file).await
            && what(&text)
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the change did not reach {} within 20 s", file.display());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Why `dir` may not be used by the demo.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotADirectory,
    NotOurs,
}

/// Makes `dir` the demo's: creates it, or clears it when an earlier demo
/// created it (its marker file is there), or takes it when it is empty.
/// Anything else (a non-empty directory without the marker, such as `.` or
/// someone's documents, or a file) is refused and nothing is deleted.
pub(crate) fn prepare_dir(dir: &Path) -> anyhow::Result<Result<(), Refusal>> {
    prepare_dir_marked(
        dir,
        MARKER,
        "Created by `feishu-bridge demo`, which clears this directory when it runs again.\n",
    )
}

/// [`prepare_dir`] with another command's marker file.
pub(crate) fn prepare_dir_marked(
    dir: &Path,
    marker: &str,
    note: &str,
) -> anyhow::Result<Result<(), Refusal>> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    match meta {
        None => {}
        Some(m) if !m.is_dir() => return Ok(Err(Refusal::NotADirectory)),
        Some(_) => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
            if entries.next().is_some() {
                if !dir.join(marker).is_file() {
                    return Ok(Err(Refusal::NotOurs));
                }
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("cannot clear {}", dir.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(marker), note)
        .with_context(|| format!("cannot write {}", dir.join(marker).display()))?;
    Ok(Ok(()))
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    match prepare_dir(dir)? {
        Ok(()) => {}
        Err(why) => {
            let what = match why {
                Refusal::NotADirectory => "is not a directory (or is a symbolic link)",
                Refusal::NotOurs => "is not empty and was not created by `feishu-bridge demo`",
            };
            crate::cmd::report_error(
                &anyhow::anyhow!(
                    "{} {what}; the demo clears its directory, so it only uses a new or empty one \
                 (or one it created before): choose another with --dir. Nothing was deleted.",
                    dir.display()
                ),
                false,
            );
            return Ok(ExitCode::from(crate::EXIT_USAGE));
        }
    }
    let ics_dir = dir.join("ics");
    let state = dir.join("state");

    // 1. A Feishu tenant: a user with a primary calendar and a team calendar.
    let emu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(50),
        webhook_retry_schedule: vec![Duration::from_millis(200); 4],
        ..FeishuConfig::default()
    })
    .await
    .context("cannot start the Feishu emulator")?;
    let user = emu.add_user("Li Lei");
    emu.set_auto_login_user(&user);
    let primary = emu.primary_calendar(&user);
    let team = emu.create_calendar("Team calendar");
    emu.update_calendar(&primary, |c| c.summary = Some("Li Lei".into()));
    let example: EventListResponse = serde_json::from_str(EXAMPLE).context("example events")?;
    let cases = example.data.map(|d| d.items).unwrap_or_default();
    let n_cases = cases.len();
    emu.bulk_load(&primary, cases);
    let base = unix_now() - 30 * 86_400;
    emu.bulk_load(&team, bridge_core::sample::events(args.events, 7, base));
    println!(
        "Feishu emulator at {}: user {user}, {n_cases} mapping-case events in the primary calendar, {} sample events in \"Team calendar\"",
        emu.base_url(),
        args.events
    );

    // 2. The bridge: client, source, ICS sink, store, engine.
    let c = emu.config();
    let mut cfg = ClientConfig::new(
        &emu.base_url(),
        &c.app_id,
        Secret::new(c.app_secret.clone()),
    );
    cfg.rate_limits.per_second = 50;
    let app = OauthApp {
        base_url: emu.base_url(),
        accounts_url: emu.base_url(),
        app_id: c.app_id.clone(),
        app_secret: Secret::new(c.app_secret.clone()),
    };
    let tokens = FileTokenStore::new(state.join("feishu-user-token.json"));
    let (access, refresh) =
        emu.issue_user_token(&user, "calendar:calendar:readonly offline_access");
    tokens
        .save(&UserTokens {
            access_token: Secret::new(access),
            access_expires_at: unix_now() + 7000,
            refresh_token: Secret::new(refresh.unwrap_or_default()),
            refresh_expires_at: unix_now() + 604_800,
            scope: String::new(),
        })
        .await?;
    let client =
        Arc::new(FeishuClient::new(cfg)?.with_user(Arc::new(UserAuth::new(app, Arc::new(tokens)))));
    let source = FeishuSource::new(
        client.clone(),
        Identity::Tenant,
        Selection::List(vec![primary.clone(), team.clone()]),
    );
    let sink: Arc<dyn Sink> = Arc::new(IcsSink::new(&ics_dir, bridge_core::Privacy::Full));
    let store = Store::open(state.join("bridge.redb")).await?;
    // The same calendars as served feeds (one per calendar, full details).
    let feed_book = FeedBook::new();
    let feed = Arc::new(
        feed::config::Validated {
            name: "demo".into(),
            calendars: feed::Calendars::All,
            combine: false,
            privacy: bridge_core::Privacy::Full,
            refresh_minutes: Some(60),
        }
        .build(
            Arc::new(SinkState::new(store.clone(), "feed:demo")),
            feed_book.clone(),
            Some(state.join("feeds").join("demo")),
        ),
    );
    let engine = Arc::new(Engine::new(
        Arc::new(source),
        vec![sink, feed.clone()],
        store.clone(),
        EngineConfig {
            rules: Rules::default(),
            ..EngineConfig::default()
        },
    ));

    // 3. The initial mirror.
    let t = Instant::now();
    let reports = engine.reconcile(None, false, unix_now()).await?;
    let elapsed = t.elapsed();
    println!("\nInitial mirror ({} ms):", elapsed.as_millis());
    for r in &reports {
        let s = &r.sinks[0];
        println!(
            "  {:<14} {:>4} items listed in {} call(s) -> {} ({} written)",
            r.name,
            r.listed,
            r.source_calls,
            ics_dir
                .join(bridge_sinks::ics::file_name(&r.calendar))
                .display(),
            s.created + s.updated
        );
    }

    // 4. The change-driven path: subscribe (user token), webhook, worker.
    for cal in [&primary, &team] {
        client.subscribe_events(cal).await?;
    }
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(store.clone(), metrics.clone()));
    let calendars = engine
        .source()
        .calendars()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let worker = Arc::new(Worker::new(
        engine.clone(),
        hub.clone(),
        calendars,
        Duration::from_millis(10),
        false,
    ));
    let cancel = CancellationToken::new();
    let worker_task = tokio::spawn(worker.clone().run(cancel.clone()));
    let sink: Arc<dyn DeliverySink> = hub.clone();
    let router = bridge_feishu::webhook::router(
        WebhookConfig {
            encrypt_key: Some(ENCRYPT_KEY.into()),
            verification_token: Some(VERIFICATION_TOKEN.into()),
            ..WebhookConfig::default()
        },
        sink,
    )
    .merge(bridge_feeds::router(feed_book.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // The daemon's bounded listener (timeouts, 408, connection cap): with
    // --keep-serving the demo's feeds stay up for calendar apps.
    let server = tokio::spawn(crate::cmd::run::listener::serve(
        listener,
        router,
        crate::cmd::run::listener::Limits::default(),
        cancel.clone(),
    ));
    println!(
        "\nServed feeds (subscribe in a calendar app while the demo runs; --keep-serving keeps them up):"
    );
    let feed_urls: Vec<String> = feed
        .entries()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .map(|e| {
            let url = format!("http://{addr}/feeds/{}.ics", e.token);
            println!("  {:<40} {url}", e.calendar_id);
            url
        })
        .collect();
    emu.set_webhook(Some(WebhookTarget {
        url: format!("http://{addr}/webhook/event"),
        encrypt_key: Some(ENCRYPT_KEY.into()),
        verification_token: VERIFICATION_TOKEN.into(),
    }));
    emu.verify_webhook()
        .await
        .map_err(|e| anyhow::anyhow!("webhook verification: {e:?}"))?;
    println!(
        "\nWebhook http://{addr}/webhook/event verified (AES-256-CBC, signed); subscribed to both calendars."
    );
    println!("Live changes in Feishu, each pushed, synced by delta and written:");

    let team_file = ics_dir.join(bridge_sinks::ics::file_name(&team));
    let primary_file = ics_dir.join(bridge_sinks::ics::file_name(&primary));
    let start = unix_now() + 2 * 86_400;
    let created = emu.create_event(
        &team,
        Event {
            summary: Some("Demo: planning, added live".into()),
            start_time: Some(timed(start, "Asia/Shanghai")),
            end_time: Some(timed(start + 3600, "Asia/Shanghai")),
            ..Event::default()
        },
    );
    let d = wait_for(&team_file, |t| {
        t.contains("SUMMARY:Demo: planning\\, added live")
    })
    .await?;
    println!("  created  {created:<50} {:>5} ms", d.as_millis());

    emu.update_event(&team, &created, |e| {
        e.summary = Some("Demo: planning (moved room)".into())
    });
    let d = wait_for(&team_file, |t| {
        t.contains("SUMMARY:Demo: planning (moved room)")
    })
    .await?;
    println!(
        "  renamed  {created:<50} {:>5} ms (SEQUENCE 1)",
        d.as_millis()
    );

    let mut weekly = Event {
        summary: Some("Demo: weekly sync".into()),
        recurrence: Some("FREQ=WEEKLY;COUNT=6".into()),
        start_time: Some(timed(start, "America/New_York")),
        end_time: Some(timed(start + 1800, "America/New_York")),
        ..Event::default()
    };
    weekly.description = Some("Recurring, created live".into());
    let series = emu.create_event(&primary, weekly);
    wait_for(&primary_file, |t| t.contains("SUMMARY:Demo: weekly sync")).await?;
    let second = start + 7 * 86_400;
    emu.move_occurrence(
        &primary,
        &series,
        second,
        second + 3600,
        second + 5400,
        Some("Demo: weekly sync (moved)"),
    );
    let d = wait_for(&primary_file, |t| {
        t.contains("SUMMARY:Demo: weekly sync (moved)")
    })
    .await?;
    println!(
        "  moved    one occurrence of {series:<33} {:>5} ms (RECURRENCE-ID)",
        d.as_millis()
    );
    let third = start + 14 * 86_400;
    let exdates = |t: &str| t.matches("\r\nEXDATE;").count();
    let before = exdates(&tokio::fs::read_to_string(&primary_file).await?);
    emu.cancel_occurrence(&primary, &series, third);
    let d = wait_for(&primary_file, |t| exdates(t) > before).await?;
    println!(
        "  cancelled one occurrence of {series:<28} {:>5} ms (EXDATE)",
        d.as_millis()
    );

    emu.delete_event(&team, &created);
    let d = wait_for(&team_file, |t| !t.contains("Demo: planning")).await?;
    println!("  deleted  {created:<50} {:>5} ms", d.as_millis());

    // 5. A second full reconcile changes nothing.
    let t = Instant::now();
    let reports = engine.reconcile(None, false, unix_now()).await?;
    let writes: usize = reports
        .iter()
        .flat_map(|r| r.sinks.iter())
        .map(|s| s.created + s.updated + s.deleted)
        .sum();
    println!(
        "\nA second full reconcile: {writes} writes, {} ms (everything was already in sync).",
        t.elapsed().as_millis()
    );

    // 6. The feeds over HTTP: the body, its gzip form, a conditional GET.
    let http = reqwest::Client::new();
    for url in &feed_urls {
        let full = http.get(url).send().await?;
        let etag = full
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let size = full.bytes().await?.len();
        let gzip = http
            .get(url)
            .header("accept-encoding", "gzip")
            .send()
            .await?
            .bytes()
            .await?
            .len();
        let again = http
            .get(url)
            .header("if-none-match", &etag)
            .send()
            .await?
            .status();
        println!(
            "Feed check: {size} bytes ({gzip} gzipped), a conditional GET answers {}",
            again.as_u16()
        );
    }
    if args.keep_serving {
        println!(
            "\nServing the feeds above until Ctrl-C (webcal:// works too: replace http:// by webcal://)."
        );
        let _ = tokio::signal::ctrl_c().await;
    }

    cancel.cancel();
    let _ = worker_task.await;
    let _ = server.await;
    let calls: u64 = client.stats().snapshot().values().sum();
    println!(
        "\nFeishu API calls made: {calls}; pushes received: {}.\nThe files in {} open in any calendar app; the emulator is gone, the files stay.",
        metrics.hints.load(std::sync::atomic::Ordering::Relaxed),
        ics_dir.display()
    );
    emu.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_empty_or_own_directories_are_used() {
        let tmp = std::env::temp_dir().join(format!("fb-demo-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();

        // New: created and marked.
        let fresh = tmp.join("fresh");
        assert_eq!(prepare_dir(&fresh).unwrap(), Ok(()));
        assert!(fresh.join(MARKER).is_file());
        // Ours, with content: cleared and marked again.
        std::fs::write(fresh.join("old.ics"), "x").unwrap();
        assert_eq!(prepare_dir(&fresh).unwrap(), Ok(()));
        assert!(!fresh.join("old.ics").exists());
        assert!(fresh.join(MARKER).is_file());

        // Someone's directory: refused, nothing deleted.
        let precious = tmp.join("precious");
        std::fs::create_dir_all(precious.join("sub")).unwrap();
        std::fs::write(precious.join("thesis.tex"), "x").unwrap();
        assert_eq!(prepare_dir(&precious).unwrap(), Err(Refusal::NotOurs));
        assert!(precious.join("thesis.tex").is_file());
        assert!(precious.join("sub").is_dir());
        assert!(!precious.join(MARKER).exists());

        // Empty: taken.
        let empty = tmp.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(prepare_dir(&empty).unwrap(), Ok(()));

        // A file: refused and kept.
        let file = tmp.join("file");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(prepare_dir(&file).unwrap(), Err(Refusal::NotADirectory));
        assert_eq!(std::fs::read(&file).unwrap(), b"x");

        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
