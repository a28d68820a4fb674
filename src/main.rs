//! `feishu-bridge`: mirror Feishu / Lark calendars into other calendars.

/// Every `println!` / `print!` of this binary goes through [`stdout::write`]
/// (these macros shadow std's in every module declared below): std's panic
/// when stdout is a closed pipe (`feishu-bridge status | head -3`), because
/// Rust ignores SIGPIPE. Restoring SIGPIPE would need `unsafe` and would
/// also apply to the daemon; this way a one-shot command ends quietly and
/// the daemon carries on.
macro_rules! println {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

mod app;
mod cmd;
mod config;
#[cfg(test)]
mod fuzz_config;
mod sinks;
mod stdout;

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
    #[cfg(feature = "demo")]
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
    /// The secret addresses of the served ICS feeds: list, show (with a QR code), rotate.
    Feeds(cmd::feeds::Args),
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

/// redb trusts the pages of a file that was closed cleanly and can panic on
/// a damaged one. The store catches such a panic and reports the damage,
/// with what to do, as one error line; the default hook would first print
/// the panic and a backtrace note. Panics anywhere else are printed as usual.
fn quiet_store_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_redb = info.location().is_some_and(|l| {
            let file = l.file().replace('\\', "/");
            file.contains("/redb-") || file.starts_with("redb-")
        });
        if in_redb {
            tracing::debug!("the database engine panicked (reported as store damage): {info}");
        } else {
            default(info);
        }
    }));
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
    quiet_store_panics();
    // The daemon keeps running when nobody reads its stdout.
    stdout::exit_on_broken_pipe(!matches!(cli.command, Command::Run(_)));
    let result = match cli.command {
        Command::Convert(args) => cmd::convert::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => block_on(cmd::demo::run(args)),
        Command::Reconcile(args) => block_on(cmd::reconcile::run(args)),
        Command::Run(args) => block_on(cmd::run::run(args)),
        Command::Status(args) => block_on(cmd::status::run(args)),
        Command::Check(args) => block_on(cmd::check::run(args)),
        Command::Explain(args) => block_on(cmd::explain::run(args)),
        Command::Auth(args) => block_on(cmd::auth::run(args)),
        Command::Subscribe(args) => block_on(cmd::subscribe::run(args)),
        Command::Feeds(args) => block_on(cmd::feeds::run(args)),
    };
    match result {
        Ok(code) => code,
        // A report written into a closed pipe (`convert | head`): quiet, as above.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            cmd::report_error(&e);
            ExitCode::from(EXIT_USAGE)
        }
    }
}
