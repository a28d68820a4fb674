//! One module per subcommand.

pub(crate) mod auth;
pub(crate) mod check;
pub(crate) mod convert;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod init;
pub(crate) mod reconcile;
pub(crate) mod run;
pub(crate) mod sandbox;
pub(crate) mod status;
pub(crate) mod subscribe;

/// Prints an error and its causes on stderr, one line; with `--json`, also
/// a JSON object on stdout (`{"error": "...", "causes": [...]}`), so a
/// script reading stdout always gets JSON.
#[allow(clippy::print_stderr)]
pub(crate) fn report_error(e: &anyhow::Error, json: bool) {
    if !crate::stdout::capture(crate::stdout::Stream::Err, format_args!("error: {e:#}\n")) {
        eprintln!("error: {e:#}");
    }
    if json {
        println!("{}", error_json(e));
    }
}

/// The JSON object of an error: its message and each cause.
pub(crate) fn error_json(e: &anyhow::Error) -> serde_json::Value {
    serde_json::json!({
        "error": format!("{e:#}"),
        "causes": e.chain().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// Prints a warning on stderr.
#[allow(clippy::print_stderr)]
pub(crate) fn report_warning(w: &dyn std::fmt::Display) {
    if !crate::stdout::capture(crate::stdout::Stream::Err, format_args!("warning: {w}\n")) {
        eprintln!("warning: {w}");
    }
}
