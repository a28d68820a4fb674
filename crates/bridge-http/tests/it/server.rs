//! A scripted loopback server and a test exchange.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bridge_http::{
    Answer, Auth, Backoff, Exchange, HttpClient, Jitter, RetryPolicy, Retrying, Secret, ServerWait,
    TransportError, Verdict,
};

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Status(u16, Vec<(&'static str, String)>),
    /// Answers 200 after this long.
    Slow(Duration),
    /// 401 unless the bearer token is this one.
    Requires(&'static str),
}

#[derive(Debug, Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    /// Authorization headers of every request, in order.
    seen: Mutex<Vec<Option<String>>>,
}

pub(crate) struct Server {
    pub(crate) url: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Answers `script` in order, then 200 `ok`.
    pub(crate) async fn start(script: Vec<Reply>) -> Server {
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            seen: Mutex::default(),
        });
        let s = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let s = s.clone();
            async move { answer(&s, &headers).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Server {
            url,
            state,
            stop: Some(tx),
        }
    }

    /// Requests received so far.
    pub(crate) fn calls(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub(crate) fn authorizations(&self) -> Vec<Option<String>> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn answer(state: &State, headers: &HeaderMap) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.seen.lock().unwrap().push(auth.clone());
    let next = state.script.lock().unwrap().pop_front();
    match next {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Reply::Status(status, hdrs)) => {
            let mut r = (
                StatusCode::from_u16(status).unwrap(),
                format!("status {status}"),
            )
                .into_response();
            for (k, v) in hdrs {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            r
        }
        Some(Reply::Slow(d)) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "late").into_response()
        }
        Some(Reply::Requires(token)) => {
            if auth.as_deref() == Some(&format!("Bearer {token}")) {
                (StatusCode::OK, "ok").into_response()
            } else {
                // Stays in the script until the right token comes.
                state
                    .script
                    .lock()
                    .unwrap()
                    .push_front(Reply::Requires(token));
                (StatusCode::UNAUTHORIZED, "who are you").into_response()
            }
        }
    }
}

/// Millisecond backoff; server waits honoured up to 10 s, no jitter.
pub(crate) fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        backoff: Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
            jitter: Jitter::Equal,
        },
        server_wait: ServerWait::Instead {
            cap: Duration::from_secs(10),
            jitter: Duration::ZERO,
        },
        max_total_wait: Duration::from_secs(30),
    }
}

pub(crate) fn client(policy: RetryPolicy) -> HttpClient {
    HttpClient::builder("test")
        .retry(policy)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `url`: 2xx is done, 401 renews, 429 / 5xx / transport retry (with
/// the `x-reset` header or `Retry-After`), anything else fails.
#[derive(Debug)]
pub(crate) struct Get {
    pub(crate) url: String,
    pub(crate) retries: Vec<Option<Duration>>,
}

impl Get {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            retries: Vec::new(),
        }
    }
}

impl Exchange for Get {
    type Output = String;
    type Error = String;

    fn request(
        &mut self,
        http: &reqwest::Client,
        _token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        http.get(&self.url)
    }

    fn classify(&mut self, answer: Result<Answer, TransportError>) -> Verdict<String, String> {
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                return Verdict::Retry {
                    error: format!("{kind}: {e}"),
                    server_wait: None,
                };
            }
        };
        let text = String::from_utf8_lossy(&a.body).into_owned();
        match a.status {
            200..=299 => Verdict::Done(text),
            401 => Verdict::Renew(format!("401 {text}")),
            429 | 500..=599 => Verdict::Retry {
                error: format!("{} {text}", a.status),
                server_wait: a.server_wait(&["x-reset"]),
            },
            s => Verdict::Fail(format!("{s} {text}")),
        }
    }

    fn retrying(&mut self, retry: Retrying<'_, String>) {
        self.retries.push(retry.wait);
    }
}

/// A token that becomes `fresh` after a renewal.
#[derive(Debug)]
pub(crate) struct Tokens {
    current: Mutex<&'static str>,
    pub(crate) renewals: AtomicU32,
}

impl Tokens {
    pub(crate) fn new(initial: &'static str) -> Self {
        Self {
            current: Mutex::new(initial),
            renewals: AtomicU32::new(0),
        }
    }

    pub(crate) fn renewals(&self) -> u32 {
        self.renewals.load(Ordering::SeqCst)
    }
}

impl Auth for Tokens {
    type Error = String;

    async fn token(&self) -> Result<Option<Secret>, String> {
        Ok(Some(Secret::new(*self.current.lock().unwrap())))
    }

    async fn renew(&self, rejected: Option<&Secret>) -> Result<(), String> {
        assert!(rejected.is_some());
        self.renewals.fetch_add(1, Ordering::SeqCst);
        *self.current.lock().unwrap() = "fresh";
        Ok(())
    }
}
