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
pub(crate) struct Cli {
    /// Log filter (wins over -v, -q and RUST_LOG): a level (`error`, `warn`, `info`, `debug`, `trace`,
    /// `off`) or `target=level` directives, comma-separated (`warn,bridge_engine=debug`).
    #[arg(long, global = true, value_parser = parse_log_filter)]
    log: Option<String>,

    /// More log output: -v info, -vv debug, -vvv trace (wins over RUST_LOG).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Errors only (wins over RUST_LOG).
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Log line format on stderr: `text` (coloured only on a terminal, never with NO_COLOR) or
    /// `json` (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run everything against an emulated Feishu tenant and show the result (no account needed).
    #[cfg(feature = "demo")]
    Demo(cmd::demo::Args),
    /// Start an emulated Feishu tenant (and target emulators) with a ready configuration, to try
    /// every command against; runs until Ctrl-C.
    #[cfg(feature = "demo")]
    Sandbox(cmd::sandbox::Args),
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
    /// Write a commented starter configuration for the sinks asked for.
    Init(cmd::init::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `feishu-bridge man > feishu-bridge.1`.
    Man,
    /// The secret addresses of the served ICS feeds: list, show (with a QR code), rotate.
    Feeds(cmd::feeds::Args),
    /// Meeting rooms: mapped rooms and their rules, bookings, decisions; approve or decline.
    Rooms(cmd::rooms::Args),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `--log`: what `EnvFilter` accepts, minus the silent surprise that a bare
/// word is a *target* name (`--log verbose` would enable every level of a
/// target called "verbose", so nothing visible). A bare word must be a
/// level; targets are named with `target=level`.
fn parse_log_filter(value: &str) -> Result<String, String> {
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.split_once('=') {
            Some((_, level)) => {
                if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "{directive:?}: {level:?} is not a level (one of {})",
                        LEVELS.join(", ")
                    ));
                }
            }
            None if LEVELS.contains(&directive.to_ascii_lowercase().as_str()) => {}
            None => {
                return Err(format!(
                    "{directive:?} is not a level (one of {}); name a target as target=level",
                    LEVELS.join(", ")
                ));
            }
        }
    }
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|e| e.to_string())
}

/// Whether log lines on stderr get ANSI colours: only on a terminal, and
/// never with `NO_COLOR` set to anything non-empty (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(cli: &Cli) {
    // Explicit beats implicit: --log, then -v / -q, then RUST_LOG, then warn.
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => Some("error"),
        (false, 0) => None,
        (false, 1) => Some("info"),
        (false, 2) => Some("debug"),
        _ => Some("trace"),
    };
    let filter = match (&cli.log, level) {
        (Some(log), _) => tracing_subscriber::EnvFilter::try_new(log),
        (None, Some(level)) => tracing_subscriber::EnvFilter::try_new(level),
        (None, None) => tracing_subscriber::EnvFilter::try_from_default_env()
            .or_else(|_| tracing_subscriber::EnvFilter::try_new("warn")),
    }
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk, or past
        // a file-size limit) is lost; reporting it with `eprintln!`, the
        // default, would panic the task that logged it.
        .log_internal_errors(false);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
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
    init_tracing(&cli);
    let json = cli.command.json();
    quiet_store_panics();
    // The daemon keeps running when nobody reads its stdout.
    stdout::exit_on_broken_pipe(!matches!(cli.command, Command::Run(_)));
    let result = match cli.command {
        Command::Convert(args) => cmd::convert::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => block_on(cmd::demo::run(args)),
        #[cfg(feature = "demo")]
        Command::Sandbox(args) => block_on(cmd::sandbox::run(args)),
        Command::Reconcile(args) => block_on(cmd::reconcile::run(args)),
        Command::Run(args) => block_on(cmd::run::run(args)),
        Command::Status(args) => block_on(cmd::status::run(args)),
        Command::Check(args) => block_on(cmd::check::run(args)),
        Command::Explain(args) => block_on(cmd::explain::run(args)),
        Command::Auth(args) => block_on(cmd::auth::run(args)),
        Command::Subscribe(args) => block_on(cmd::subscribe::run(args)),
        Command::Init(args) => cmd::init::run(args),
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        Command::Feeds(args) => block_on(cmd::feeds::run(args)),
        Command::Rooms(args) => block_on(cmd::rooms::run(args)),
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
            cmd::report_error(&e, json);
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "feishu-bridge", &mut out);
    print!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}

fn man() -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    // The page lists every subcommand in its SUBCOMMANDS section.
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    print!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}

impl Command {
    /// Whether the command was asked for `--json` output (its errors then
    /// also go to stdout as a JSON object).
    fn json(&self) -> bool {
        match self {
            Self::Reconcile(a) => a.json,
            Self::Status(a) => a.json,
            Self::Explain(a) => a.json,
            Self::Rooms(a) => a.json,
            _ => false,
        }
    }
}
