//! The public HTTP listener, bounded against slow and idle clients.
//!
//! `axum::serve` has no header-read timeout and no connection limit, so the
//! listener is hyper's HTTP/1 connection builder driven by a small accept
//! loop (HTTP/1 only: Feishu, Prometheus and health checkers speak it, and
//! hyper's protocol auto-detection would wait for the first bytes without a
//! timeout):
//!
//! - a connection slot (a semaphore permit) is taken before `accept`, so at
//!   most [`Limits::max_connections`] connections are open; the cap follows
//!   the process's file-descriptor limit;
//! - a request head must arrive within [`Limits::header_timeout`], which is
//!   also the idle time of a keep-alive connection (hyper starts the timer
//!   whenever it waits for a head), after which the connection is closed;
//!   a client that had started a request (or never had one answered) first
//!   gets `408 Request Timeout` ([`HeadWatch`]: hyper closes without a word);
//! - bodies are bounded by the routes themselves (the webhook's body
//!   timeout and memory budget); an unread body is drained once by hyper
//!   and the connection closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Bounds of the public listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time to send a request head; also the keep-alive idle time.
    pub(crate) header_timeout: Duration,
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// How long in-flight requests get to finish at shutdown.
    pub(crate) shutdown_grace: Duration,
}

/// Connections at most, whatever the descriptor limit.
const MAX_CONNECTIONS: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: connection_cap(),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Half the soft descriptor limit (the store, the admin endpoint, Feishu and
/// sink connections need the rest), at most [`MAX_CONNECTIONS`].
fn connection_cap() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, MAX_CONNECTIONS)
}

/// Serves `router` on `listener` until `cancel`, within `limits`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => p?,
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // A second descriptor of the socket, to answer 408 after hyper has
        // given the connection up on a header timeout.
        let (stream, spare) = match duplicate(stream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%peer, "cannot duplicate the connection's socket: {e}");
                continue;
            }
        };
        let watch = Arc::new(HeadState::default());
        // The peer address, for routes that judge clients by it (the feed
        // routes slow down repeated misses).
        let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(
            router.clone(),
            axum::extract::ConnectInfo(peer),
        ));
        let builder = builder.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _permit = permit;
            let io = HeadWatch {
                inner: stream,
                state: watch.clone(),
            };
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(limits.shutdown_grace, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection closed: {e}");
                if e.is_timeout() && watch.owes_408() {
                    request_timeout(spare).await;
                }
            }
        });
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(limits.shutdown_grace * 2, drain).await;
    Ok(())
}

/// What a connection has said since its last answer, to tell a slow client
/// (408) from an idle keep-alive one (closed quietly) when hyper's header
/// timer fires.
#[derive(Debug, Default)]
struct HeadState {
    /// Bytes arrived since the last answer was written.
    started: AtomicBool,
    /// An answer has been written on this connection.
    answered: AtomicBool,
}

impl HeadState {
    /// Bytes of an answer went out: what came before is answered.
    fn wrote(&self) {
        self.started.store(false, Ordering::Relaxed);
        self.answered.store(true, Ordering::Relaxed);
    }

    /// A request was begun and not finished, or none was ever answered.
    fn owes_408(&self) -> bool {
        self.started.load(Ordering::Relaxed) || !self.answered.load(Ordering::Relaxed)
    }
}

/// The connection's stream, noting reads and writes in a [`HeadState`].
/// Written here because hyper's header timeout only closes the connection
/// and no maintained layer answers 408 at that point.
struct HeadWatch {
    inner: TcpStream,
    state: Arc<HeadState>,
}

impl AsyncRead for HeadWatch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.started.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for HeadWatch {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Two descriptors of one socket.
fn duplicate(stream: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let std = stream.into_std()?;
    let spare = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, TcpStream::from_std(spare)?))
}

/// Answers 408 on a connection hyper has given up, then closes it after
/// reading what the client still sends for a moment (closing with unread
/// bytes would reset the connection and lose the answer).
async fn request_timeout(mut stream: TcpStream) {
    const ANSWER: &[u8] =
        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    let sent = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(ANSWER).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 64 * 1024 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}
