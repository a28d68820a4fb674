//! Standard output that tolerates a reader going away (see the `println!`
//! macro in `main.rs`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static ONE_SHOT: AtomicBool = AtomicBool::new(true);

/// Whether a closed stdout ends the process (one-shot commands: the reader
/// has what it wanted, like `head`) or is ignored (the daemon).
pub(crate) fn exit_on_broken_pipe(exit: bool) {
    ONE_SHOT.store(exit, Ordering::Relaxed);
}

/// Writes to stdout. When the reader has gone away (EPIPE), a one-shot
/// command exits at once with status 0 and says nothing: everything it did
/// is already committed, only the report had no reader. Any other write
/// error (a full disk under `> file`) ends a one-shot command with the
/// error and exit code 2, as every other error does; the daemon logs it.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let result = out.write_fmt(args).and_then(|()| out.flush());
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            if ONE_SHOT.load(Ordering::Relaxed) {
                std::process::exit(0);
            }
        }
        Err(e) => {
            if ONE_SHOT.load(Ordering::Relaxed) {
                crate::cmd::report_error(&anyhow::anyhow!("cannot write to stdout: {e}"), false);
                std::process::exit(i32::from(crate::EXIT_USAGE));
            }
            tracing::warn!("cannot write to stdout: {e}");
        }
    }
}
