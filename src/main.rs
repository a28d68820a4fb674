//! `feishu-bridge`: mirror Feishu / Lark calendars into other calendars.

mod app;
mod cmd;
mod config;
#[cfg(test)]
mod fuzz_config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad input, configuration or usage.
pub(crate) const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "feishu-bridge", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `feishu_bridge=debug`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything against an emulated Feishu tenant and show the result (no account needed).
    Demo(cmd::demo::Args),
    /// Convert a Feishu list-events response (or a JSON array of events) to one VCALENDAR on stdout.
    Convert(cmd::convert::Args),
    /// One full pass: list every configured calendar, plan, apply, report.
    Reconcile(cmd::reconcile::Args),
    /// The daemon: change events (webhook, long connection or polling), periodic full reconcile,
    /// /healthz, /metrics, a loopback admin endpoint.
    Run(cmd::run::Args),
    /// Per calendar: last sync, lag, cursor age, pending hints, failures.
    Status(cmd::status::Args),
    /// Check the configuration, credentials, reachability and the store.
    Check(cmd::check::Args),
    /// Show one event: the source, its mapping, its records per sink, the last decision.
    Explain(cmd::explain::Args),
    /// Authorize a user account (code flow with PKCE through a loopback redirect).
    Auth(cmd::auth::Args),
    /// Ask Feishu to push change events for the configured calendars (user token).
    Subscribe(cmd::subscribe::Args),
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?
        .block_on(f)
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Convert(args) => cmd::convert::run(args),
        Command::Demo(args) => block_on(cmd::demo::run(args)),
        Command::Reconcile(args) => block_on(cmd::reconcile::run(args)),
        Command::Run(args) => block_on(cmd::run::run(args)),
        Command::Status(args) => block_on(cmd::status::run(args)),
        Command::Check(args) => block_on(cmd::check::run(args)),
        Command::Explain(args) => block_on(cmd::explain::run(args)),
        Command::Auth(args) => block_on(cmd::auth::run(args)),
        Command::Subscribe(args) => block_on(cmd::subscribe::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            cmd::report_error(&e);
            ExitCode::from(EXIT_USAGE)
        }
    }
}
