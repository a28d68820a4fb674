//! `feishu-bridge subscribe`: ask Feishu to push change events for the
//! configured calendars (user identity, as Feishu requires).

use std::path::PathBuf;
use std::process::ExitCode;

use bridge_feishu::FeishuError;
use bridge_feishu::client::{FeishuClient, Identity};

use crate::config::{Calendars, Loaded};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long, default_value = "feishu-bridge.toml")]
    config: PathBuf,
    /// Stop the pushes instead.
    #[arg(long)]
    unsubscribe: bool,
}

/// The calendar ids the configuration names.
pub(crate) async fn resolve_calendars(
    client: &FeishuClient,
    loaded: &Loaded,
    identity: Identity,
) -> Result<Vec<String>, FeishuError> {
    Ok(match &loaded.config.feishu.calendars {
        Calendars::List(ids) => ids.clone(),
        Calendars::Primary => client
            .primary_calendars(identity)
            .await?
            .into_iter()
            .filter_map(|c| c.calendar_id)
            .collect(),
        Calendars::All => client
            .list_calendars(identity, None)
            .await?
            .calendars
            .into_iter()
            .filter(|c| c.is_deleted != Some(true))
            .filter_map(|c| c.calendar_id)
            .collect(),
    })
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::config::load(&args.config)?;
    let client = crate::app::feishu_client(&loaded, crate::app::client_config(&loaded))?;
    let calendars = resolve_calendars(&client, &loaded, Identity::User).await?;
    let verb = if args.unsubscribe {
        "unsubscribed"
    } else {
        "subscribed"
    };
    let mut failed = 0;
    for id in &calendars {
        let r = if args.unsubscribe {
            client.unsubscribe_events(id).await
        } else {
            client.subscribe_events(id).await
        };
        match r {
            Ok(()) => println!("{verb}: event changes of {id}"),
            Err(e @ (FeishuError::ReauthRequired { .. } | FeishuError::NotAuthorized)) => {
                return Err(e.into());
            }
            Err(e) => {
                failed += 1;
                crate::cmd::report_error(
                    &anyhow::Error::new(e).context(format!("calendar {id}")),
                    false,
                );
            }
        }
    }
    if loaded.config.feishu.calendars == Calendars::All {
        let r = if args.unsubscribe {
            client.unsubscribe_calendar_list().await
        } else {
            client.subscribe_calendar_list().await
        };
        match r {
            Ok(()) => println!("{verb}: calendar list changes"),
            Err(e) => {
                failed += 1;
                crate::cmd::report_error(&anyhow::Error::new(e).context("calendar list"), false);
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
