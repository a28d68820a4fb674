//! The emulator kit: the scaffold every emulator stands on, so that an
//! emulator is only its model, its routes and its error shapes.
//!
//! * [`Server`]: binds `127.0.0.1:0`, serves in the background, owns the
//!   background tasks (retries, delayed pushes) and shuts all of it down.
//! * The call log: one service-defined record per API request, kept by
//!   [`observe`] and read through [`Kit::calls`].
//! * Faults: seeded dice for random faults and `fail_next` one-shots
//!   matched by path ([`FaultState`]); the kit applies delays and truncation,
//!   the service answers every other fault in its own error shape.
//! * [`Cursors`]: signed page and sync tokens around any serde position
//!   ([`Cursor<T>`]), with per-lane expiry.
//! * [`control::router`]: the common `/_emulator` routes (calls, faults,
//!   `fail_next`, reset).
//! * [`Window`]: sliding windows for the services' documented rate limits.
//!
//! # How to add an emulator (EWS, Graph, CalDAV, …)
//!
//! 1. A module `src/<name>/` with its public config struct, its model and
//!    its handlers, and a state type `Inner` holding `kit: Kit<Inner>` next
//!    to the model.
//! 2. Its public `Faults` (random settings, `#[serde(default)]`) implements
//!    [`RandomFaults`], its public `FaultKind` implements [`Fault`] (which
//!    faults are delays or truncations; the rest are answered by
//!    [`Service::fault_answer`]), its public `CallRecord` implements [`Call`].
//! 3. `impl Service for Inner`: the name, how a request is noted before the
//!    handler runs ([`Service::see`]), which paths random faults hit, the
//!    fault answers in the service's error shape (SOAP fault, Graph
//!    `{"error":{…}}`, WebDAV status) and the call record of an answered
//!    request. Its `FaultSpec` (the `fault` part of a `fail_next` body)
//!    converts into its `FaultKind`; its model error implements
//!    [`control::ModelError`] (404 or 400 on the control routes).
//! 4. The router: API routes under
//!    `.layer(from_fn_with_state(inner.clone(), kit::observe::<Inner>))`, and
//!    `.nest("/_emulator", kit::control::router::<Inner>().route(…own…))`.
//! 5. The public handle `struct XEmulator { inner: Arc<Inner> }` gets
//!    `kit::handle_api!(XEmulator, Faults, FaultKind, CallRecord)` (`Debug`,
//!    `base_url`, `set_faults`, `fail_next`, `calls`, `call_count`,
//!    `reset_calls`); its `start` is `Kit::bind(token_lifetime)`, build
//!    `Inner`, `inner.kit.serve(router)`; `shutdown` calls [`Kit::shutdown`].
//!    Listings seal their positions with `inner.kit.cursors` and map a
//!    [`CursorError`] to the service's "bad / expired token" answer.

pub(crate) mod control;
mod cursor;
mod faults;
pub(crate) mod ids;
mod limits;
mod observe;
mod server;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use cursor::{Cursors, Lane};
pub(crate) use faults::{Dice, Effect, Fault, RandomFaults, duration_ms};
pub(crate) use limits::{Window, ceil_secs};
pub(crate) use observe::{bearer, observe};

#[cfg(doc)]
use cursor::{Cursor, CursorError};
use faults::FaultState;
use server::Server;

/// The public handle API every emulator shares (`Debug`, `base_url`, faults
/// and the call log), for a handle `struct $handle { inner: Arc<Inner> }`
/// whose `Inner` holds `kit`. A macro rather than a generic handle type so
/// that each emulator keeps its own public handle, config and fault types.
macro_rules! handle_api {
    ($handle:ident, $faults:ty, $fault:ty, $call:ty) => {
        impl std::fmt::Debug for $handle {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($handle))
                    .field("addr", &self.inner.kit.addr())
                    .finish_non_exhaustive()
            }
        }

        impl $handle {
            /// `http://127.0.0.1:<port>`: the host of every endpoint.
            pub fn base_url(&self) -> String {
                self.inner.kit.base_url()
            }

            /// Sets the random faults (and re-seeds their dice).
            pub fn set_faults(&self, f: $faults) {
                self.inner.kit.set_faults(f);
            }

            /// The next `n` requests whose path contains `path_contains` get
            /// `kind` (batch parts match on their own path).
            pub fn fail_next(&self, path_contains: &str, n: usize, kind: $fault) {
                self.inner.kit.fail_next(path_contains, n, kind);
            }

            /// Every recorded request so far.
            pub fn calls(&self) -> Vec<$call> {
                self.inner.kit.calls()
            }

            /// Recorded requests whose path contains `path_contains`.
            pub fn call_count(&self, path_contains: &str) -> usize {
                self.inner.kit.call_count(path_contains)
            }

            /// Forgets recorded calls.
            pub fn reset_calls(&self) {
                self.inner.kit.reset_calls();
            }
        }
    };
}
pub(crate) use handle_api;

/// Locks a mutex, ignoring poisoning (a panicked test must not cascade).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One recorded request (an emulator's public `CallRecord`).
pub(crate) trait Call: Clone + Serialize + Send + Sync + 'static {
    /// The path without the query.
    fn path(&self) -> &str;
}

/// What the kit knows of every answered request; the service adds its own
/// fields in [`Service::record`].
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) method: String,
    /// Path without the query.
    pub(crate) path: String,
    /// Raw query string (empty when absent).
    pub(crate) query: String,
    pub(crate) status: u16,
    pub(crate) at_ms: i64,
}

/// What an emulator plugs into the kit (implemented by its shared state).
pub(crate) trait Service: Sized + Send + Sync + 'static {
    /// Names the emulator in logs.
    const NAME: &'static str;
    /// The public random-fault settings.
    type Faults: RandomFaults<Fault = Self::Fault>;
    /// The public deterministic fault kind.
    type Fault: Fault;
    /// The service's part of a `POST /_emulator/fail_next` body (`fault`
    /// and its parameters); a spec that is no fault says why (answered 400).
    type FaultSpec: DeserializeOwned + Send + TryInto<Self::Fault, Error = String>;
    /// The public call record.
    type Call: Call;
    /// What [`Service::see`] notes of a request before the handler runs.
    type Seen: Send;

    fn kit(&self) -> &Kit<Self>;

    /// Notes what the record or a fault answer needs of the request.
    fn see(&self, req: &Request) -> Self::Seen;

    /// Whether random faults hit requests to `path`.
    fn random_faults_apply(&self, path: &str) -> bool;

    /// The answer to an [`Effect::Answer`] fault, with its side effects
    /// (an expired token stays expired).
    fn fault_answer(&self, fault: &Self::Fault, seen: &Self::Seen) -> Response;

    /// The record of an answered request; may add headers to `resp`.
    fn record(&self, seen: Self::Seen, exchange: Exchange, resp: &mut Response) -> Self::Call;
}

/// The harness state of one emulator: server, call log, faults, cursors.
pub(crate) struct Kit<S: Service> {
    server: Server,
    calls: Mutex<Vec<S::Call>>,
    faults: Mutex<FaultState<S::Faults>>,
    pub(crate) cursors: Cursors,
}

impl<S: Service> std::fmt::Debug for Kit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kit")
            .field("name", &S::NAME)
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl<S: Service> Kit<S> {
    /// Binds `127.0.0.1:0` (see [`Server::bind`]); page and sync tokens
    /// older than `token_lifetime` expire.
    pub(crate) async fn bind(token_lifetime: Option<Duration>) -> std::io::Result<Self> {
        Ok(Self {
            server: Server::bind(S::NAME).await?,
            calls: Mutex::new(Vec::new()),
            faults: Mutex::new(FaultState::default()),
            cursors: Cursors::new(token_lifetime),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Starts serving `app`.
    pub(crate) fn serve(&self, app: Router) {
        self.server.serve(app);
    }

    /// Starts serving `app` with a `ConnectInfo<C>` made once per accepted
    /// connection (state that belongs to a connection, such as NTLM's).
    pub(crate) fn serve_with_connect_info<C>(&self, app: Router)
    where
        C: for<'a> axum::extract::connect_info::Connected<
                axum::serve::IncomingStream<'a, tokio::net::TcpListener>,
            > + Clone
            + Send
            + Sync
            + 'static,
    {
        self.server.serve_with_connect_info::<C>(app);
    }

    /// Spawns a background task that [`Self::shutdown`] aborts.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.server.spawn(fut);
    }

    /// Stops the server and its background tasks.
    pub(crate) async fn shutdown(&self) {
        self.server.shutdown().await;
    }

    pub(crate) fn record(&self, call: S::Call) {
        lock(&self.calls).push(call);
    }

    /// Every recorded request so far.
    pub(crate) fn calls(&self) -> Vec<S::Call> {
        lock(&self.calls).clone()
    }

    /// Recorded requests matching `f`.
    pub(crate) fn count_calls(&self, f: impl Fn(&S::Call) -> bool) -> usize {
        lock(&self.calls).iter().filter(|c| f(c)).count()
    }

    /// Recorded requests whose path contains `path_contains`.
    pub(crate) fn call_count(&self, path_contains: &str) -> usize {
        self.count_calls(|c| c.path().contains(path_contains))
    }

    /// Forgets recorded calls.
    pub(crate) fn reset_calls(&self) {
        lock(&self.calls).clear();
    }

    /// Sets the random faults (and re-seeds the dice).
    pub(crate) fn set_faults(&self, faults: S::Faults) {
        lock(&self.faults).set(faults);
    }

    /// No random faults, no queued one-shots.
    pub(crate) fn clear_faults(&self) {
        *lock(&self.faults) = FaultState::default();
    }

    /// The next `n` requests whose path contains `path_contains` get `kind`.
    pub(crate) fn fail_next(&self, path_contains: &str, n: usize, kind: S::Fault) {
        lock(&self.faults).fail_next(path_contains, n, kind);
    }

    /// Rolls the dice with a probability taken from the random faults.
    pub(crate) fn roll(&self, p: impl FnOnce(&S::Faults) -> f64) -> bool {
        lock(&self.faults).roll(p)
    }

    /// The fault of a request to `path` (see [`FaultState::pick`]).
    pub(crate) fn pick_fault(&self, path: &str, random_eligible: bool) -> Option<S::Fault> {
        lock(&self.faults).pick(path, random_eligible)
    }
}
