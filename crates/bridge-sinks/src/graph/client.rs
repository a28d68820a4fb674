//! The Graph client of one sink (one mailbox): every request carries
//! `Prefer: IdType="ImmutableId"`; ids are percent-encoded in paths; at most
//! four requests are in flight for the mailbox (a `$batch` holds all four
//! slots, since Graph runs up to four of its parts at once); 429 / 503 / 504
//! are retried after their `Retry-After` by bridge-http's retry loop, and
//! the parts of a batch that answer them are sent again in a new batch
//! after the longest `Retry-After` (bounded by the same policy).

use std::sync::Arc;
use std::time::Duration;

use bridge_http::{
    Answer, CallStats, Exchange, HttpClient, Limiter, RetryPolicy, Secret, TransportError, Verdict,
    Window,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::auth::{Credentials, TokenSource};
use super::error::{GraphError, classify};

/// Graph's host.
pub const DEFAULT_BASE_URL: &str = "https://graph.microsoft.com";
/// Most parts of one `$batch`.
pub const BATCH_MAX: usize = 20;
/// Requests in flight per mailbox (Outlook's MailboxConcurrency).
pub const MAILBOX_CONCURRENCY: u32 = 4;
/// Requests per app and mailbox in any ten minutes (graph.md §6); each part
/// of a `$batch` counts as one, as Graph counts them.
pub const MAILBOX_REQUESTS: (u32, Duration) = (10_000, Duration::from_secs(600));

/// Characters left alone in a path segment (ids keep `-` and `_`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// One path segment, percent-encoded (`/`, `+`, `=` in ids).
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// HTTP methods used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// One request, relative to `/v1.0` (`/users/{m}/events/...`, segments
/// already encoded with [`seg`]).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub if_match: Option<String>,
    /// `Prefer` preferences sent besides `IdType="ImmutableId"`
    /// (`odata.maxpagesize=…`, `outlook.body-content-type="text"`).
    pub prefer: Vec<String>,
}

impl Request {
    pub fn new(method: Method, path: String) -> Self {
        Self {
            method,
            path,
            query: Vec::new(),
            body: None,
            if_match: None,
            prefer: Vec::new(),
        }
    }

    /// One more `Prefer` preference.
    pub fn prefer(mut self, p: impl Into<String>) -> Self {
        self.prefer.push(p.into());
        self
    }

    /// The `Prefer` header value.
    fn prefer_header(&self) -> String {
        std::iter::once("IdType=\"ImmutableId\"")
            .chain(self.prefer.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_owned(), v.into()));
        self
    }

    pub fn body(mut self, b: Value) -> Self {
        self.body = Some(b);
        self
    }

    pub fn if_match(mut self, e: Option<String>) -> Self {
        self.if_match = e;
        self
    }

    /// Path and query as one relative URL.
    fn url(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.query)
            .finish();
        // Graph reads `%20` in OData expressions; `+` would be kept literally by some gateways.
        format!("{}?{}", self.path, q.replace('+', "%20"))
    }

    /// The endpoint label of the counters (the path without ids).
    fn endpoint(&self) -> String {
        let shape: Vec<&str> = self
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| {
                if i % 2 == 1
                    && !matches!(
                        s,
                        "events" | "calendars" | "calendar" | "instances" | "calendarView"
                    )
                {
                    "{}"
                } else {
                    s
                }
            })
            .collect();
        format!("{} /{}", self.method.as_str(), shape.join("/"))
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    /// `@odata.etag` of the answered event.
    pub fn etag(&self) -> Option<String> {
        self.body["@odata.etag"].as_str().map(str::to_owned)
    }
}

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Host root (`https://graph.microsoft.com`).
    pub base_url: String,
    pub token_url: String,
    /// The mailbox (user id or UPN), as written in paths.
    pub mailbox: String,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

/// The Graph client of one mailbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GraphClient {
    cfg: Arc<ClientConfig>,
    http: Arc<HttpClient>,
    tokens: Arc<TokenSource>,
    slots: Arc<Semaphore>,
}

struct Call<'a> {
    base: &'a str,
    req: &'a Request,
    mailbox: &'a str,
}

fn error_of(status: u16, body: &[u8], mailbox: &str, retry_after: Option<Duration>) -> GraphError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("");
    let message = v["error"]["message"].as_str().unwrap_or("");
    classify(status, code, message, mailbox, retry_after)
}

fn verdict<T>(
    status: u16,
    e: GraphError,
    wait: Option<Duration>,
    ok: impl FnOnce() -> T,
) -> Verdict<T, GraphError> {
    match status {
        200..=299 => Verdict::Done(ok()),
        401 => Verdict::Renew(e),
        408 | 429 | 500 | 502 | 503 | 504 => Verdict::Retry {
            error: e,
            server_wait: wait,
        },
        _ => Verdict::Fail(e),
    }
}

impl Exchange for Call<'_> {
    type Output = Response;
    type Error = GraphError;

    fn request(&mut self, http: &reqwest::Client, _: Option<&Secret>) -> reqwest::RequestBuilder {
        let url = format!("{}/v1.0{}", self.base, self.req.url());
        let m = reqwest::Method::from_bytes(self.req.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut rb = http
            .request(m, url)
            .header("Prefer", self.req.prefer_header());
        if let Some(e) = &self.req.if_match {
            rb = rb.header("If-Match", e);
        }
        if let Some(b) = &self.req.body {
            rb = rb.json(b);
        }
        rb
    }

    fn classify(
        &mut self,
        answer: Result<Answer, TransportError>,
    ) -> Verdict<Response, GraphError> {
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                return Verdict::Retry {
                    error: GraphError::Transport(e.to_string()),
                    server_wait: None,
                };
            }
        };
        let wait = a.server_wait(&[]);
        let e = error_of(a.status, &a.body, self.mailbox, wait);
        let body = a.body.clone();
        let status = a.status;
        match verdict(status, e, wait, || Response {
            status,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }) {
            Verdict::Done(r)
                if (200..300).contains(&status)
                    && status != 204
                    && r.body.is_null()
                    && !body.is_empty() =>
            {
                Verdict::Retry {
                    error: GraphError::Decode("a cut JSON answer".into()),
                    server_wait: None,
                }
            }
            v => v,
        }
    }
}

struct BatchCall<'a> {
    base: &'a str,
    body: Value,
}

impl Exchange for BatchCall<'_> {
    type Output = Value;
    type Error = GraphError;

    fn request(&mut self, http: &reqwest::Client, _: Option<&Secret>) -> reqwest::RequestBuilder {
        http.post(format!("{}/v1.0/$batch", self.base))
            .header("Prefer", "IdType=\"ImmutableId\"")
            .json(&self.body)
    }

    fn classify(&mut self, answer: Result<Answer, TransportError>) -> Verdict<Value, GraphError> {
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                return Verdict::Retry {
                    error: GraphError::Transport(e.to_string()),
                    server_wait: None,
                };
            }
        };
        let wait = a.server_wait(&[]);
        let e = error_of(a.status, &a.body, "", wait);
        match verdict(a.status, e, wait, || {
            serde_json::from_slice::<Value>(&a.body)
        }) {
            Verdict::Done(Ok(v)) if v["responses"].is_array() => Verdict::Done(v),
            Verdict::Done(_) => Verdict::Retry {
                error: GraphError::Decode("a $batch answer without responses".into()),
                server_wait: None,
            },
            Verdict::Fail(e) => Verdict::Fail(e),
            Verdict::Renew(e) => Verdict::Renew(e),
            Verdict::Retry { error, server_wait } => Verdict::Retry { error, server_wait },
        }
    }
}

impl GraphClient {
    pub fn new(
        cfg: ClientConfig,
        creds: Credentials,
        stats: Option<Arc<CallStats>>,
    ) -> Result<Self, GraphError> {
        let mut b = HttpClient::builder("graph")
            .limiter(Limiter::Window(Window::new(
                MAILBOX_REQUESTS.0,
                MAILBOX_REQUESTS.1,
            )))
            .retry(cfg.retry)
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(10));
        if let Some(s) = stats {
            b = b.stats(s);
        }
        let http = Arc::new(b.build().map_err(|e| GraphError::Config(e.to_string()))?);
        url::Url::parse(&cfg.token_url)
            .map_err(|e| GraphError::Config(format!("token_url {:?}: {e}", cfg.token_url)))?;
        let tokens = Arc::new(TokenSource::new(http.clone(), cfg.token_url.clone(), creds));
        Ok(Self {
            cfg: Arc::new(cfg),
            http,
            tokens,
            slots: Arc::new(Semaphore::new(MAILBOX_CONCURRENCY as usize)),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The calls made so far (endpoint, status) -> count.
    pub fn stats(&self) -> &bridge_http::ServiceStats {
        self.http.stats()
    }

    /// `/users/{mailbox}`.
    pub fn user_path(&self) -> String {
        format!("/users/{}", seg(&self.cfg.mailbox))
    }

    /// Keeps rotated delegated refresh tokens in the sink's state.
    pub fn keep_tokens_in(&self, state: Arc<dyn bridge_target::StateStore>) {
        self.tokens.keep_in(state);
    }

    /// A token now (for `check`).
    pub async fn access_token(&self) -> Result<Secret, GraphError> {
        self.tokens.token().await
    }

    /// One request, with retries.
    pub async fn execute(&self, req: &Request) -> Result<Response, GraphError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| GraphError::Transport(e.to_string()))?;
        let mut call = Call {
            base: &self.cfg.base_url,
            req,
            mailbox: &self.cfg.mailbox,
        };
        self.http
            .execute(&req.endpoint(), 1, self.tokens.as_ref(), &mut call)
            .await
    }

    /// Requests sent one by one (not in a `$batch`), at most the mailbox's
    /// 4 at once; each result is its own, in order. For reads a pass that
    /// writes nothing makes: they stay plain GETs, as Graph and its
    /// throttling see them.
    pub async fn each(&self, reqs: Vec<Request>) -> Vec<Result<Response, GraphError>> {
        let mut set = tokio::task::JoinSet::new();
        let n = reqs.len();
        for (i, r) in reqs.into_iter().enumerate() {
            let c = self.clone();
            set.spawn(async move { (i, c.execute(&r).await) });
        }
        let mut out: Vec<Option<Result<Response, GraphError>>> = vec![None; n];
        while let Some(j) = set.join_next().await {
            match j {
                Ok((i, r)) => out[i] = Some(r),
                Err(e) => tracing::warn!(error = %e, "a Graph read task failed"),
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(GraphError::Transport("the read did not run".into()))))
            .collect()
    }

    /// Every page of a listing (`@odata.nextLink` followed).
    pub async fn list_all(&self, req: Request) -> Result<Vec<Value>, GraphError> {
        Ok(self.pages(req, "a listing").await?.0)
    }

    /// One round of a delta query (`calendarView/delta`, graph.md §7):
    /// every page (`@odata.nextLink` followed) and the `@odata.deltaLink`
    /// the round ends with, to start the next round from. A round without a
    /// delta link is an error (it was cut: nothing may be concluded).
    pub async fn delta_round(&self, req: Request) -> Result<(Vec<Value>, String), GraphError> {
        match self.pages(req, "a delta round").await? {
            (out, Some(link)) => Ok((out, link)),
            (_, None) => Err(GraphError::Decode(
                "a delta round ended without @odata.deltaLink".into(),
            )),
        }
    }

    /// The items of every page from `req` on (`@odata.nextLink` followed),
    /// and the `@odata.deltaLink` of the last page, if it has one.
    async fn pages(
        &self,
        req: Request,
        what: &str,
    ) -> Result<(Vec<Value>, Option<String>), GraphError> {
        let mut out = Vec::new();
        let mut next = Some(req);
        let mut pages = 0;
        while let Some(r) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(GraphError::Decode(format!(
                    "{what} of more than 10,000 pages"
                )));
            }
            let resp = self.execute(&r).await?;
            let items = resp.body["value"]
                .as_array()
                .ok_or_else(|| GraphError::Decode(format!("a page of {what} without value")))?;
            out.extend(items.iter().cloned());
            if let Some(link) = resp.body["@odata.nextLink"].as_str() {
                next = Some(self.relative(link, &r)?);
            } else if let Some(link) = resp.body["@odata.deltaLink"].as_str() {
                return Ok((out, Some(link.to_owned())));
            }
        }
        Ok((out, None))
    }

    /// A `deltaLink` kept from an earlier round as a request on our base.
    pub fn follow(&self, link: &str, prefer: &[String]) -> Result<Request, GraphError> {
        let like = Request {
            prefer: prefer.to_vec(),
            ..Request::new(Method::Get, String::new())
        };
        self.relative(link, &like)
    }

    /// A `nextLink` as a request on our base.
    fn relative(&self, link: &str, like: &Request) -> Result<Request, GraphError> {
        let u = url::Url::parse(link)
            .map_err(|e| GraphError::Decode(format!("nextLink {link:?}: {e}")))?;
        let path = u
            .path()
            .strip_prefix("/v1.0")
            .ok_or_else(|| GraphError::Decode(format!("nextLink {link:?} is not a v1.0 URL")))?;
        Ok(Request {
            method: Method::Get,
            path: path.to_owned(),
            query: u.query_pairs().into_owned().collect(),
            body: None,
            if_match: like.if_match.clone(),
            prefer: like.prefer.clone(),
        })
    }

    /// Runs requests in `$batch`es of at most 20 (one batch in flight per
    /// mailbox); each result is the part's own. `Err` only when a batch
    /// could not be sent at all (credentials, transport after retries).
    pub async fn batch(
        &self,
        reqs: &[Request],
    ) -> Result<Vec<Result<Response, GraphError>>, GraphError> {
        let mut out: Vec<Option<Result<Response, GraphError>>> = vec![None; reqs.len()];
        let mut pending: Vec<usize> = (0..reqs.len()).collect();
        let mut round = 0u32;
        while !pending.is_empty() {
            let mut retry: Vec<usize> = Vec::new();
            let mut wait: Option<Duration> = None;
            for chunk in pending.chunks(BATCH_MAX) {
                let answers = self.batch_once(reqs, chunk).await?;
                for (i, res) in chunk.iter().copied().zip(answers) {
                    match res {
                        Err(e) if e.is_transient() && round < self.cfg.retry.max_retries => {
                            wait = wait.max(Some(self.cfg.retry.delay(round, e.retry_after())));
                            out[i] = Some(Err(e));
                            retry.push(i);
                        }
                        other => out[i] = Some(other),
                    }
                }
            }
            if let Some(w) = wait.filter(|_| !retry.is_empty()) {
                tracing::warn!(
                    parts = retry.len(),
                    wait_ms = w.as_millis() as u64,
                    "Graph batch parts throttled or failed; retrying them"
                );
                tokio::time::sleep(w).await;
            }
            pending = retry;
            round += 1;
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(GraphError::Decode("no answer".into()))))
            .collect())
    }

    async fn batch_once(
        &self,
        reqs: &[Request],
        idx: &[usize],
    ) -> Result<Vec<Result<Response, GraphError>>, GraphError> {
        if let [one] = idx {
            return match self.execute(&reqs[*one]).await {
                Err(e) if e.is_fatal() => Err(e),
                r => Ok(vec![r]),
            };
        }
        let parts: Vec<Value> = idx
            .iter()
            .enumerate()
            .map(|(n, i)| {
                let r = &reqs[*i];
                let mut headers = json!({"Prefer": r.prefer_header()});
                if let Some(e) = &r.if_match {
                    headers["If-Match"] = json!(e);
                }
                let mut p = json!({"id": (n + 1).to_string(), "method": r.method.as_str(), "url": r.url(), "headers": headers});
                if let Some(b) = &r.body {
                    p["body"] = b.clone();
                    p["headers"]["Content-Type"] = json!("application/json");
                }
                p
            })
            .collect();
        let _slots = self
            .slots
            .acquire_many(MAILBOX_CONCURRENCY)
            .await
            .map_err(|e| GraphError::Transport(e.to_string()))?;
        let mut call = BatchCall {
            base: &self.cfg.base_url,
            body: json!({"requests": parts}),
        };
        let answer = self
            .http
            .execute(
                "POST /$batch",
                idx.len() as u32,
                self.tokens.as_ref(),
                &mut call,
            )
            .await?;
        let mut by_id: std::collections::HashMap<String, &Value> = std::collections::HashMap::new();
        for r in answer["responses"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                by_id.insert(id.to_owned(), r);
            }
        }
        let mut out = Vec::with_capacity(idx.len());
        let mut renew = false;
        for n in 0..idx.len() {
            let Some(r) = by_id.get(&(n + 1).to_string()) else {
                out.push(Err(GraphError::Transport(
                    "the batch answered no response for a part".into(),
                )));
                continue;
            };
            let status = r["status"].as_u64().unwrap_or(0) as u16;
            self.http
                .stats()
                .record(&format!("{} (batch part)", reqs[idx[n]].endpoint()), status);
            let body = r.get("body").cloned().unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                out.push(Ok(Response { status, body }));
                continue;
            }
            let wait = r["headers"]["Retry-After"]
                .as_str()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let code = body["error"]["code"].as_str().unwrap_or("");
            let message = body["error"]["message"].as_str().unwrap_or("");
            let e = classify(status, code, message, &self.cfg.mailbox, wait);
            if e.is_fatal() {
                return Err(e);
            }
            if status == 401 {
                renew = true;
                // Sent again with a fresh token.
                out.push(Err(GraphError::Api {
                    status: 503,
                    code: code.to_owned(),
                    message: "token refused in a batch".into(),
                    retry_after: Some(Duration::ZERO),
                }));
                continue;
            }
            out.push(Err(e));
        }
        if renew {
            bridge_http::Auth::renew(self.tokens.as_ref(), None).await?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_emulators::graph::{
        GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
    };

    #[tokio::test]
    async fn the_mailbox_window_counts_every_batch_part() {
        let emu = GraphEmulator::start().await.unwrap();
        emu.add_mailbox("w@contoso.example", MailboxAccess::Enabled);
        let client = GraphClient::new(
            ClientConfig {
                base_url: emu.base_url(),
                token_url: emu.token_url(),
                mailbox: "w@contoso.example".into(),
                retry: RetryPolicy::default(),
                timeout: Duration::from_secs(20),
            },
            Credentials::Secret {
                client_id: TEST_CLIENT_ID.into(),
                secret: Secret::new(TEST_CLIENT_SECRET),
            },
            None,
        )
        .unwrap();
        let Limiter::Window(w) = client.http.limiter() else {
            panic!("the Graph client has no mailbox window");
        };
        assert_eq!(w.limit(), MAILBOX_REQUESTS);
        let user = client.user_path();
        client
            .execute(&Request::new(Method::Get, format!("{user}/calendar")))
            .await
            .unwrap();
        // The token request and the read.
        let before = w.in_window();
        assert_eq!(before, 2);
        let reqs: Vec<Request> = (0..45)
            .map(|_| Request::new(Method::Get, format!("{user}/calendar")))
            .collect();
        let answers = client.batch(&reqs).await.unwrap();
        assert!(answers.iter().all(Result::is_ok));
        // Three batches (20 + 20 + 5): 45 requests as Graph counts them.
        assert_eq!(w.in_window() - before, 45);
        emu.shutdown().await;
    }

    #[test]
    fn ids_are_encoded_in_segments_and_queries_use_percent_20() {
        assert_eq!(seg("AAMk+/x=="), "AAMk%2B%2Fx%3D%3D");
        assert_eq!(seg("a-b_c.d"), "a-b_c.d");
        let r = Request::new(Method::Get, "/users/x/events".into()).query("$filter", "a eq 'b c'");
        assert_eq!(r.url(), "/users/x/events?%24filter=a%20eq%20%27b%20c%27");
        assert_eq!(
            Request::new(Method::Patch, "/users/m%40x/events/AAMk%2B".into()).endpoint(),
            "PATCH /users/{}/events/{}"
        );
    }
}
