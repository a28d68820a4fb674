//! One module per subcommand.

pub(crate) mod auth;
pub(crate) mod check;
pub(crate) mod convert;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod feeds;
pub(crate) mod reconcile;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod subscribe;

/// Prints an error and its causes on stderr, one line.
#[allow(clippy::print_stderr)]
pub(crate) fn report_error(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
}

/// Prints a warning on stderr.
#[allow(clippy::print_stderr)]
pub(crate) fn report_warning(w: &dyn std::fmt::Display) {
    eprintln!("warning: {w}");
}
