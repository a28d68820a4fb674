//! `init`: a commented starter configuration for the sinks asked for.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A sink kind to include (repeat for several): see `sinks` kinds in README.
    #[arg(long = "sink", value_name = "KIND")]
    sinks: Vec<String>,
    /// Where to write the configuration.
    #[arg(long, short, default_value = "feishu-bridge.toml")]
    output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

const HEAD: &str = r#"# feishu-bridge configuration (written by `feishu-bridge init`).
# Every string may use ${ENV}; every secret has a *_file variant. Relative paths
# are relative to this file's directory. Check it with:
#   feishu-bridge check --config THIS_FILE

[store]
path = "state/bridge.redb"        # cursors, records, queue, tokens (one process at a time)

[feishu]
# Feishu open platform: a self-built app with calendar read scopes.
app_id = "cli_replace_me"
app_secret = "replace-me"         # or app_secret_file = "feishu-app-secret"
calendars = "primary"             # "primary", "all", or a list of calendar ids
identity = "tenant"               # "tenant" (the app's bot) or "user" (`feishu-bridge auth feishu`)
delivery = "poll"                 # "poll", "webhook" or "long_connection"
# base_url = "https://open.feishu.cn"   # Lark: "https://open.larksuite.com"

[sync]
# full_reconcile_hours = 6
# max_delete_count = 50           # the deletion budget of one pass
# max_delete_percent = 20
"#;

#[allow(clippy::print_stdout)]
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut text = HEAD.to_owned();
    let kinds: Vec<&str> = if args.sinks.is_empty() {
        vec!["ics"]
    } else {
        args.sinks.iter().map(String::as_str).collect()
    };
    for kind in &kinds {
        let starter = crate::sinks::starter(kind).ok_or_else(|| {
            let known: Vec<&str> = crate::sinks::KINDS.iter().map(|k| k.name).collect();
            anyhow::anyhow!(
                "--sink {kind:?} is not a sink kind (one of {})",
                known.join(", ")
            )
        })?;
        text.push('\n');
        text.push_str(starter);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&args.output).with_context(|| {
        if args.output.exists() && !args.force {
            format!(
                "{} exists; pass --force to replace it",
                args.output.display()
            )
        } else {
            format!("cannot write {}", args.output.display())
        }
    })?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "wrote {} ({}); edit the values marked replace-me, then run:\n  feishu-bridge check --config {}",
        args.output.display(),
        kinds.join(", "),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
