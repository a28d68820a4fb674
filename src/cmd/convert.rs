//! `feishu-bridge convert`: Feishu JSON in, one VCALENDAR out.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bridge_core::{Privacy, RenderOptions, feishu_to_ics, input};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Input file; `-` or no flag reads stdin.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Calendar name (NAME / X-WR-CALNAME).
    #[arg(long, default_value = "Feishu")]
    name: String,
    /// Privacy profile: full, redacted (times, summary, status) or busy (times only).
    #[arg(long, default_value = "full", value_parser = parse_privacy)]
    privacy: Privacy,
    /// DTSTAMP of every event, RFC 3339 or Unix seconds (default: now). Fix it
    /// for byte-reproducible output.
    #[arg(long, value_parser = parse_instant)]
    dtstamp: Option<i64>,
    /// X-WR-TIMEZONE (default: the zone most events start in).
    #[arg(long)]
    timezone: Option<String>,
    /// REFRESH-INTERVAL in minutes; 0 leaves it out.
    #[arg(long, default_value_t = 60)]
    refresh_minutes: u32,
}

fn parse_privacy(s: &str) -> Result<Privacy, String> {
    s.parse()
}

fn parse_instant(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp())
        .map_err(|_| format!("{s:?} is neither RFC 3339 (2025-01-01T00:00:00Z) nor Unix seconds"))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (text, source) = match &args.input {
        None => (read_stdin()?, "stdin".to_owned()),
        Some(p) if p.as_os_str() == "-" => (read_stdin()?, "stdin".to_owned()),
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.display().to_string(),
        ),
    };
    if let Some(tz) = &args.timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        bail!("--timezone {tz:?} is not an IANA time zone");
    }
    let parsed = input::parse_events(&text).with_context(|| format!("cannot convert {source}"))?;
    let opts = RenderOptions {
        name: args.name,
        privacy: args.privacy,
        dtstamp: args
            .dtstamp
            .unwrap_or_else(|| chrono::Utc::now().timestamp()),
        refresh_minutes: (args.refresh_minutes > 0).then_some(args.refresh_minutes),
        timezone: args.timezone,
        ..RenderOptions::default()
    };
    for e in &parsed.errors {
        super::report_warning(&format_args!(
            "event {}: not converted: {}",
            e.event_id, e.reason
        ));
    }
    let rendered = feishu_to_ics(&parsed.events, &opts);
    for w in &rendered.warnings {
        super::report_warning(w);
    }
    tracing::info!(
        events = parsed.events.len(),
        vevents = rendered.vevents,
        warnings = rendered.warnings.len() + parsed.errors.len(),
        "converted"
    );
    let mut out = std::io::stdout().lock();
    out.write_all(rendered.text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    if parsed.has_more {
        super::report_warning(&format_args!(
            "{source} is one page of several (\"has_more\": true): the calendar above is \
             incomplete; fetch every page (page_token) and convert them together"
        ));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stderr)]
fn read_stdin() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        // Otherwise a bare `feishu-bridge convert` seems to hang.
        eprintln!(
            "reading a Feishu list-events response from stdin (end with Ctrl-D; --input FILE reads a file)"
        );
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read stdin")?;
    Ok(s)
}
