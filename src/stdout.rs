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
    if capture(Stream::Out, args) {
        return;
    }
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

/// Which stream a captured line was written to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Out,
    Err,
}

/// What a command printed while the daemon ran it for a client.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

tokio::task_local! {
    /// Set while the daemon runs a read-only command for a client through
    /// its admin endpoint (`status`, `explain`, ... while `run` holds the
    /// store): the command's output goes to the client, byte for byte what
    /// it would have printed itself, instead of the daemon's own stdout.
    static CAPTURE: std::cell::RefCell<Captured>;
}

/// Runs `f` with everything it prints captured.
pub(crate) async fn captured<F: std::future::Future>(f: F) -> (F::Output, Captured) {
    CAPTURE
        .scope(std::cell::RefCell::new(Captured::default()), async move {
            let out = f.await;
            let captured = CAPTURE.with(|c| std::mem::take(&mut *c.borrow_mut()));
            (out, captured)
        })
        .await
}

/// Appends to the capture of the current task; false when there is none.
pub(crate) fn capture(stream: Stream, args: std::fmt::Arguments<'_>) -> bool {
    use std::fmt::Write as _;
    CAPTURE
        .try_with(|c| {
            let mut c = c.borrow_mut();
            let buf = match stream {
                Stream::Out => &mut c.stdout,
                Stream::Err => &mut c.stderr,
            };
            let _ = buf.write_fmt(args);
        })
        .is_ok()
}
