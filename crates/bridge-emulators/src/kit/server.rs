//! Binding `127.0.0.1:0`, serving an axum router in the background, tasks
//! tied to the server's lifetime, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

use super::lock;

/// How long `shutdown` waits for open requests before aborting the server.
const DRAIN: Duration = Duration::from_secs(5);

/// A loopback listener and everything that must stop with it.
#[derive(Debug)]
pub(crate) struct Server {
    name: &'static str,
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    /// The bound listener until [`Self::serve`] takes it.
    listener: Mutex<Option<TcpListener>>,
    tasks: Mutex<Vec<AbortHandle>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    served: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Binds `127.0.0.1:0` on the current tokio runtime; nothing is served
    /// until [`Self::serve`], so the address can go into the state first.
    pub(crate) async fn bind(name: &'static str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Ok(Self {
            name,
            addr: listener.local_addr()?,
            runtime: tokio::runtime::Handle::current(),
            listener: Mutex::new(Some(listener)),
            tasks: Mutex::new(Vec::new()),
            stop: Mutex::new(None),
            served: Mutex::new(None),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `app` in a background task until [`Self::shutdown`]. A second
    /// call does nothing (the listener is gone).
    pub(crate) fn serve(&self, app: Router) {
        let Some(listener) = lock(&self.listener).take() else {
            return;
        };
        let (tx, rx) = oneshot::channel::<()>();
        let name = self.name;
        let served = self.runtime.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(emulator = name, error = %e, "emulator server stopped");
            }
        });
        *lock(&self.stop) = Some(tx);
        *lock(&self.served) = Some(served);
        tracing::info!(emulator = name, addr = %self.addr, "emulator listening");
    }

    /// [`Self::serve`] with a `ConnectInfo<C>` per accepted connection.
    pub(crate) fn serve_with_connect_info<C>(&self, app: Router)
    where
        C: for<'a> axum::extract::connect_info::Connected<
                axum::serve::IncomingStream<'a, TcpListener>,
            > + Clone
            + Send
            + Sync
            + 'static,
    {
        let Some(listener) = lock(&self.listener).take() else {
            return;
        };
        let (tx, rx) = oneshot::channel::<()>();
        let name = self.name;
        let served = self.runtime.spawn(async move {
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<C>())
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(emulator = name, error = %e, "emulator server stopped");
            }
        });
        *lock(&self.stop) = Some(tx);
        *lock(&self.served) = Some(served);
        tracing::info!(emulator = name, addr = %self.addr, "emulator listening");
    }

    /// Spawns a background task that [`Self::shutdown`] aborts.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = self.runtime.spawn(fut).abort_handle();
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Aborts the background tasks, stops accepting, lets open requests
    /// finish for up to 5 s, then aborts the server.
    pub(crate) async fn shutdown(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
        let served = lock(&self.served).take();
        if let Some(served) = served {
            let abort = served.abort_handle();
            if tokio::time::timeout(DRAIN, served).await.is_err() {
                abort.abort();
            }
        }
    }
}
