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
//! - bodies are bounded by the routes themselves (the webhook's body
//!   timeout and memory budget); an unread body is drained once by hyper
//!   and the connection closed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
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
            let conn = builder.serve_connection(TokioIo::new(stream), service);
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
            }
        });
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(limits.shutdown_grace * 2, drain).await;
    Ok(())
}
