//! [`HttpClient`]: one request with the limiter, the bearer token, a
//! timeout, counters, and retries; the service decides what an answer means
//! through its [`Exchange`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::limit::Limiter;
use crate::retry::{Backoff, Jitter, RetryPolicy, ServerWait, server_wait};
use crate::secret::Secret;
use crate::stats::{CallStats, ServiceStats};

/// Building the client failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP client: {0}")]
    Build(String),
}

/// An answer read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The wait the server announced: the first of `reset_headers` (seconds
    /// until the window resets), else `Retry-After` (seconds or HTTP-date).
    pub fn server_wait(&self, reset_headers: &[&str]) -> Option<Duration> {
        server_wait(|n| self.header(n), reset_headers, SystemTime::now())
    }
}

/// No answer, or an answer cut short: reqwest's error, or the error of a
/// transport of a client's own (hyper, TLS, I/O, a timeout: EWS's NTLM
/// sessions own their connections).
#[derive(Debug)]
pub struct TransportError {
    pub error: Box<dyn std::error::Error + Send + Sync>,
    /// The status when the headers came but the body failed.
    pub status: Option<u16>,
    timeout: bool,
}

impl TransportError {
    /// `error` (with its sources) after `status` came, or without an
    /// answer. It is a timeout when an error of its chain says so: reqwest's
    /// [`reqwest::Error::is_timeout`], tokio's `Elapsed`, or an I/O
    /// `TimedOut`.
    pub fn new(
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        status: Option<u16>,
    ) -> Self {
        let error = error.into();
        let mut timeout = false;
        let root: &(dyn std::error::Error + 'static) = &*error;
        let mut cur = Some(root);
        while let Some(e) = cur {
            if e.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout)
                || e.is::<tokio::time::error::Elapsed>()
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                timeout = true;
                break;
            }
            cur = e.source();
        }
        Self {
            error,
            status,
            timeout,
        }
    }

    pub fn is_timeout(&self) -> bool {
        self.timeout
    }

    /// `error: cause: cause …` (reqwest and hyper keep the interesting part
    /// in their sources).
    pub fn detail(&self) -> String {
        error_chain(&*self.error)
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "answer {s} cut short: {}", self.detail()),
            None => f.write_str(&self.detail()),
        }
    }
}

/// `e: cause: cause …`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What one answer means, as the service reads it.
#[derive(Debug)]
pub enum Verdict<T, E> {
    /// Success.
    Done(T),
    /// A final failure.
    Fail(E),
    /// The token was refused (401, or a service's "token expired" code):
    /// renew it and try again, once per call; a second refusal is `E`.
    Renew(E),
    /// Worth another try after a wait: the server's (`server_wait`) or the
    /// backoff's. `E` is returned when the retries or the wait budget run out.
    Retry {
        error: E,
        server_wait: Option<Duration>,
    },
}

/// Where bearer tokens come from: the hook that renews one after a 401.
pub trait Auth: Sync {
    type Error;
    /// The token of the next attempt (`None`: no `Authorization` header).
    fn token(&self) -> impl Future<Output = Result<Option<Secret>, Self::Error>> + Send;
    /// `rejected` was refused: make the next [`Auth::token`] a fresh one.
    fn renew(
        &self,
        rejected: Option<&Secret>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// No token.
pub struct NoAuth<E>(PhantomData<fn() -> E>);

impl<E> NoAuth<E> {
    pub const fn new() -> Self {
        NoAuth(PhantomData)
    }
}

impl<E> Default for NoAuth<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> fmt::Debug for NoAuth<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoAuth")
    }
}

impl<E> Auth for NoAuth<E> {
    type Error = E;
    async fn token(&self) -> Result<Option<Secret>, E> {
        Ok(None)
    }
    async fn renew(&self, _: Option<&Secret>) -> Result<(), E> {
        Ok(())
    }
}

/// A retry about to happen.
#[derive(Debug)]
pub struct Retrying<'a, E> {
    pub error: &'a E,
    /// Retries made so far (token renewals not counted).
    pub attempt: u32,
    /// The wait before it; `None` for a token renewal (no wait).
    pub wait: Option<Duration>,
}

/// One call as the service sees it: the request of each attempt, and what
/// each answer means.
pub trait Exchange {
    type Output;
    type Error: fmt::Display;
    /// The request of one attempt, without the bearer token (added from
    /// [`Auth`]; `token` is the one it will carry).
    fn request(
        &mut self,
        http: &reqwest::Client,
        token: Option<&Secret>,
    ) -> reqwest::RequestBuilder;
    fn classify(
        &mut self,
        answer: Result<Answer, TransportError>,
    ) -> Verdict<Self::Output, Self::Error>;
    /// Told before every retry (for the service's own accounting).
    fn retrying(&mut self, _retry: Retrying<'_, Self::Error>) {}
}

/// The HTTP client of one service. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct HttpClient {
    http: reqwest::Client,
    stats: ServiceStats,
    policy: RetryPolicy,
    limiter: Limiter,
    timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Five retries, 0.5 s doubling to 30 s with equal jitter, server waits
    /// honoured up to 60 s, at most 5 minutes of waiting per call.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(30),
                jitter: Jitter::Equal,
            },
            server_wait: ServerWait::Instead {
                cap: Duration::from_secs(60),
                jitter: Duration::from_millis(50),
            },
            max_total_wait: Duration::from_secs(300),
        }
    }
}

/// Settings of an [`HttpClient`].
#[derive(Debug)]
pub struct HttpClientBuilder {
    service: String,
    policy: RetryPolicy,
    limiter: Limiter,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    http: Option<reqwest::Client>,
    stats: Option<Arc<CallStats>>,
    roots: Vec<Vec<u8>>,
}

impl HttpClientBuilder {
    /// Also trust these root certificates (DER) for `https://`, besides the
    /// built-in ones: a private CA's. Applies to the client this builder
    /// makes; a caller-built one (`http`) brings its own roots.
    pub fn extra_roots(mut self, ders: &[Vec<u8>]) -> Self {
        self.roots.extend(ders.iter().cloned());
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// Timeout of one attempt (connect, send, read the whole answer).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// A caller-built `reqwest::Client` (proxies, roots); it should not
    /// follow redirects. The timeout still applies per attempt.
    pub fn http(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Record calls into `stats` (shared with other clients) instead of a
    /// registry of this client's own.
    pub fn stats(mut self, stats: Arc<CallStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    pub fn build(self) -> Result<HttpClient, HttpError> {
        let http = match self.http {
            Some(h) => h,
            None => {
                let mut b = reqwest::Client::builder()
                    // No API we call redirects; a redirect on a token
                    // endpoint would hand a secret to another host.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("feishu-bridge/", env!("CARGO_PKG_VERSION")));
                if let Some(t) = self.connect_timeout {
                    b = b.connect_timeout(t);
                }
                if let Some(t) = self.timeout {
                    b = b.timeout(t);
                }
                for der in &self.roots {
                    let cert = reqwest::Certificate::from_der(der).map_err(|e| {
                        HttpError::Build(format!("a trusted root: {}", error_chain(&e)))
                    })?;
                    b = b.add_root_certificate(cert);
                }
                b.build().map_err(|e| HttpError::Build(error_chain(&e)))?
            }
        };
        Ok(HttpClient {
            http,
            stats: ServiceStats::new(&self.service, self.stats.unwrap_or_default()),
            policy: self.policy,
            limiter: self.limiter,
            timeout: self.timeout,
        })
    }
}

impl HttpClient {
    /// A client for `service` (the name its counters carry).
    pub fn builder(service: &str) -> HttpClientBuilder {
        HttpClientBuilder {
            service: service.to_owned(),
            policy: RetryPolicy::default(),
            limiter: Limiter::Unlimited,
            timeout: None,
            connect_timeout: None,
            http: None,
            stats: None,
            roots: Vec::new(),
        }
    }

    /// The underlying client (for calls outside [`Self::execute`], such as
    /// OAuth token endpoints).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// One call: for every attempt the token from `auth`, `permits` from the
    /// limiter for `endpoint` (a template, also the counters' label), the
    /// request with the timeout, one count, then `x`'s verdict. Retries
    /// follow the policy; a refused token is renewed once.
    pub async fn execute<A, X>(
        &self,
        endpoint: &str,
        permits: u32,
        auth: &A,
        x: &mut X,
    ) -> Result<X::Output, X::Error>
    where
        A: Auth,
        A::Error: Into<X::Error>,
        X: Exchange,
    {
        let service = self.stats.service();
        let mut attempt = 0u32;
        let mut renewed = false;
        let mut waited = Duration::ZERO;
        loop {
            let token = auth.token().await.map_err(Into::into)?;
            self.limiter.acquire(endpoint, permits).await;
            let mut rb = x.request(&self.http, token.as_ref());
            if let Some(t) = &token {
                rb = rb.bearer_auth(t.expose());
            }
            if let Some(t) = self.timeout {
                rb = rb.timeout(t);
            }
            let answer = self.send(endpoint, rb).await;
            let (error, server_wait) = match x.classify(answer) {
                Verdict::Done(v) => return Ok(v),
                Verdict::Fail(e) => return Err(e),
                Verdict::Renew(e) => {
                    if renewed {
                        return Err(e);
                    }
                    renewed = true;
                    tracing::info!(service, endpoint, error = %e, "token refused; renewing it");
                    x.retrying(Retrying {
                        error: &e,
                        attempt,
                        wait: None,
                    });
                    auth.renew(token.as_ref()).await.map_err(Into::into)?;
                    continue;
                }
                Verdict::Retry { error, server_wait } => (error, server_wait),
            };
            let wait = self.policy.delay(attempt, server_wait);
            if attempt >= self.policy.max_retries || waited + wait > self.policy.max_total_wait {
                return Err(error);
            }
            tracing::warn!(
                service, endpoint, attempt, wait_ms = wait.as_millis() as u64,
                error = %error, "transient failure; retrying"
            );
            x.retrying(Retrying {
                error: &error,
                attempt,
                wait: Some(wait),
            });
            tokio::time::sleep(wait).await;
            waited += wait;
            attempt += 1;
        }
    }

    async fn send(
        &self,
        endpoint: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<Answer, TransportError> {
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(error) => {
                self.stats.record(endpoint, 0);
                return Err(TransportError::new(error, None));
            }
        };
        let status = resp.status().as_u16();
        self.stats.record(endpoint, status);
        let headers = resp.headers().clone();
        match resp.bytes().await {
            Ok(body) => Ok(Answer {
                status,
                headers,
                body,
            }),
            Err(error) => Err(TransportError::new(error, Some(status))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transport_errors_of_any_transport_say_whether_they_timed_out() {
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        assert!(TransportError::new(elapsed, None).is_timeout());
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        assert!(TransportError::new(io, None).is_timeout());
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = TransportError::new(refused, Some(200));
        assert!(!e.is_timeout());
        assert_eq!(e.to_string(), "answer 200 cut short: refused");
        let e = TransportError::new("the server closed the connection", None);
        assert_eq!(e.detail(), "the server closed the connection");
    }
}
