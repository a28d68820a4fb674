//! The SOAP transport on `bridge-http`: one POST per operation, Basic, NTLM
//! (`super::ntlm`: one authenticated connection per session) or OAuth
//! (client-credentials grant through the `oauth2` crate, renewed once
//! after a 401), `ExchangeImpersonation` + `X-AnchorMailbox` when writing
//! into another mailbox, retries of `ErrorServerBusy` after
//! `BackOffMilliseconds`, of 503 / `Connection: close` / transport errors
//! with backoff, and a bound on the requests in flight per mailbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_http::{
    Answer, Auth as HttpAuth, CallStats, Exchange, HttpClient, RetryPolicy, Secret, TransportError,
    Verdict,
};
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};

use super::ntlm;
use super::xml::{El, M_NS, SOAP_NS, T_NS, esc, parse};

/// Codes that name an account or mailbox problem: the sink pauses.
const DENIED: &[&str] = &[
    "ErrorImpersonateUserDenied",
    "ErrorImpersonationDenied",
    "ErrorImpersonationFailed",
    "ErrorNonExistentMailbox",
    "ErrorAccessDenied",
    "ErrorInvalidExchangeImpersonationHeaderData",
];

/// Codes worth another try.
pub(crate) const TRANSIENT: &[&str] = &[
    "ErrorServerBusy",
    "ErrorInternalServerTransientError",
    "ErrorTooManyObjectsOpened",
    "ErrorExceededConnectionCount",
    "ErrorTimeoutExpired",
    "ErrorMailboxMoveInProgress",
    "ErrorMailboxStoreUnavailable",
    "ErrorConnectionFailed",
];

/// What went wrong talking to EWS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EwsError {
    /// 401: the credentials are wrong (or the token stays refused).
    #[error("{0}")]
    Unauthorized(String),
    /// An account or mailbox problem (impersonation denied, no mailbox).
    #[error("{code}: {message}")]
    Denied { code: String, message: String },
    /// A request-level refusal (SOAP fault).
    #[error("{code}: {message}")]
    Fault { code: String, message: String },
    /// Still throttled or unavailable after the retries.
    #[error("{0}")]
    Unavailable(String),
    /// An answer that is not what EWS answers.
    #[error("unreadable answer: {0}")]
    Decode(String),
    /// The token endpoint refused the client.
    #[error("token endpoint: {0}")]
    Token(String),
}

impl EwsError {
    /// Whether the sink pauses for it (only a person can fix it).
    pub fn pauses(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized(_) | Self::Denied { .. } | Self::Token(_)
        )
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// How the sink authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    Basic {
        username: String,
        password: Secret,
    },
    /// NTLMv2 (on premises): `username` as configured, `account` as the
    /// handshake sends it.
    Ntlm {
        username: String,
        account: ntlm::Account,
        password: Secret,
    },
    /// OAuth 2.0 client-credentials grant (app-only; needs impersonation).
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        scope: String,
    },
}

/// The transport's settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `…/EWS/Exchange.asmx`.
    pub url: String,
    /// The mailbox written into.
    pub mailbox: String,
    pub impersonation: bool,
    /// `RequestServerVersion`.
    pub version: String,
    /// Requests in flight at once (per sink, i.e. per mailbox).
    pub max_concurrency: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Root certificates (DER) trusted besides the built-in ones: an
    /// internal CA's (`ca_file`).
    pub extra_roots: Vec<Vec<u8>>,
}

struct TokenCache {
    client: oauth2::Client<
        oauth2::basic::BasicErrorResponse,
        oauth2::basic::BasicTokenResponse,
        oauth2::basic::BasicTokenIntrospectionResponse,
        oauth2::StandardRevocableToken,
        oauth2::basic::BasicRevocationErrorResponse,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    >,
    scope: String,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

/// The auth of each attempt: Basic adds its header itself, OAuth hands its
/// bearer token to `bridge-http` (which renews it once after a 401).
struct AuthSource {
    oauth: Option<TokenCache>,
}

impl HttpAuth for AuthSource {
    type Error = EwsError;

    async fn token(&self) -> Result<Option<Secret>, EwsError> {
        let Some(t) = &self.oauth else {
            return Ok(None);
        };
        let mut cached = t.cached.lock().await;
        if let Some((tok, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(Some(tok.clone()));
        }
        let answer = t
            .client
            .exchange_client_credentials()
            .add_scope(Scope::new(t.scope.clone()))
            .request_async(&t.http)
            .await
            .map_err(|e| EwsError::Token(bridge_http::error_chain(&e)))?;
        let tok = Secret::new(answer.access_token().secret().clone());
        // Renewed a minute before it expires.
        let life = answer
            .expires_in()
            .unwrap_or(Duration::from_secs(3600))
            .saturating_sub(Duration::from_secs(60));
        *cached = Some((tok.clone(), Instant::now() + life));
        Ok(Some(tok))
    }

    async fn renew(&self, rejected: Option<&Secret>) -> Result<(), EwsError> {
        if let Some(t) = &self.oauth {
            let mut cached = t.cached.lock().await;
            if cached.as_ref().map(|c| &c.0) == rejected {
                *cached = None;
            }
        }
        Ok(())
    }
}

/// An EWS client for one mailbox.
pub struct EwsClient {
    cfg: ClientConfig,
    http: HttpClient,
    auth: AuthSource,
    /// Basic or NTLM credentials; the password can be replaced while
    /// running (a fixed `password_file` resumes a paused sink without a
    /// restart).
    basic: std::sync::Mutex<Option<(String, Secret)>>,
    /// NTLM's sessions (authenticated connections), with `basic` holding
    /// the password.
    ntlm: Option<ntlm::Sessions>,
    slots: tokio::sync::Semaphore,
    stats: Arc<CallStats>,
}

impl std::fmt::Debug for EwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EwsClient")
            .field("url", &self.cfg.url)
            .field("mailbox", &self.cfg.mailbox)
            .finish_non_exhaustive()
    }
}

struct SoapCall<'a> {
    url: &'a str,
    body: &'a str,
    basic: Option<(String, Secret)>,
    anchor: Option<&'a str>,
    oauth: bool,
    /// The NTLM account (`DOMAIN\user`), for the 401's message.
    ntlm: Option<String>,
}

fn fault_of(root: &El) -> Option<(String, String, Option<u64>)> {
    let fault = root.path(&["Body", "Fault"])?;
    let detail = fault.child("detail");
    let code = detail
        .and_then(|d| d.text_of("ResponseCode"))
        .map(str::to_owned)
        .or_else(|| {
            fault
                .text_of("faultcode")
                .map(|c| c.rsplit(':').next().unwrap_or(c).to_owned())
        })
        .unwrap_or_default();
    let message = detail
        .and_then(|d| d.text_of("Message"))
        .or_else(|| fault.text_of("faultstring"))
        .unwrap_or_default()
        .to_owned();
    let back_off = detail
        .and_then(|d| d.child("MessageXml"))
        .and_then(|m| {
            m.children
                .iter()
                .find(|v| v.attr("Name") == Some("BackOffMilliseconds"))
        })
        .and_then(|v| v.text.trim().parse().ok());
    Some((code, message, back_off))
}

impl Exchange for SoapCall<'_> {
    type Output = El;
    type Error = EwsError;

    fn request(
        &mut self,
        http: &reqwest::Client,
        _token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        let mut rb = http
            .post(self.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(self.body.to_owned());
        if let Some((u, p)) = &self.basic {
            rb = rb.basic_auth(u, Some(p.expose()));
        }
        if let Some(a) = self.anchor {
            rb = rb.header("X-AnchorMailbox", a);
        }
        rb
    }

    fn classify(&mut self, answer: Result<Answer, TransportError>) -> Verdict<El, EwsError> {
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                let text = e.to_string();
                // rustls's words for a chain no trusted root signed.
                let hint = if text.contains("UnknownIssuer") {
                    " (if the server's certificate comes from an internal CA, set ca_file to its root certificate)"
                } else {
                    ""
                };
                return Verdict::Retry {
                    error: EwsError::Unavailable(format!("EWS did not answer: {text}{hint}")),
                    server_wait: None,
                };
            }
        };
        let text = String::from_utf8_lossy(&a.body);
        match a.status {
            200 => match parse(&text) {
                Ok(root) => Verdict::Done(root),
                Err(e) => Verdict::Fail(EwsError::Decode(e)),
            },
            401 if self.oauth => Verdict::Renew(EwsError::Unauthorized(
                "the access token was refused (401)".into(),
            )),
            401 => Verdict::Fail(EwsError::Unauthorized(match &self.ntlm {
                Some(account) => {
                    format!("the NTLM credentials of {account} were refused (401)")
                }
                None => "the username or password was refused (401)".into(),
            })),
            408 | 429 | 502 | 503 | 504 => Verdict::Retry {
                error: EwsError::Unavailable(format!("EWS answered {}", a.status)),
                server_wait: a.server_wait(&[]),
            },
            500 => match parse(&text).ok().as_ref().and_then(fault_of) {
                Some((code, message, back_off)) if TRANSIENT.contains(&code.as_str()) => {
                    Verdict::Retry {
                        error: EwsError::Unavailable(format!("{code}: {message}")),
                        server_wait: back_off.map(Duration::from_millis),
                    }
                }
                Some((code, message, _)) if DENIED.contains(&code.as_str()) => {
                    Verdict::Fail(EwsError::Denied { code, message })
                }
                Some((code, message, _)) => Verdict::Fail(EwsError::Fault { code, message }),
                None => Verdict::Retry {
                    error: EwsError::Unavailable("EWS answered 500 without a SOAP fault".into()),
                    server_wait: None,
                },
            },
            s => Verdict::Fail(EwsError::Fault {
                code: format!("HTTP {s}"),
                message: text.chars().take(200).collect(),
            }),
        }
    }
}

impl EwsClient {
    pub fn new(cfg: ClientConfig, creds: Credentials) -> Result<Self, EwsError> {
        let stats = Arc::new(CallStats::default());
        let http = HttpClient::builder("ews")
            .retry(cfg.retry)
            .timeout(cfg.timeout)
            .stats(Arc::clone(&stats))
            .extra_roots(&cfg.extra_roots)
            .build()
            .map_err(|e| EwsError::Decode(e.to_string()))?;
        let mut sessions = None;
        let (auth, basic) = match creds {
            Credentials::Basic { username, password } => {
                (AuthSource { oauth: None }, Some((username, password)))
            }
            Credentials::Ntlm {
                username,
                account,
                password,
            } => {
                sessions = Some(
                    ntlm::Sessions::new(account, &cfg.url, cfg.timeout)
                        .and_then(|s| s.trusting(&cfg.extra_roots))
                        .map_err(|e| EwsError::Decode(format!("NTLM: {e}")))?,
                );
                (AuthSource { oauth: None }, Some((username, password)))
            }
            Credentials::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let url = TokenUrl::new(token_url.clone())
                    .map_err(|e| EwsError::Token(format!("{token_url:?}: {e}")))?;
                let client = BasicClient::new(ClientId::new(client_id))
                    .set_client_secret(ClientSecret::new(client_secret.expose().to_owned()))
                    .set_auth_type(AuthType::RequestBody)
                    .set_token_uri(url);
                let mut token_http = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(cfg.timeout);
                for der in &cfg.extra_roots {
                    let cert = reqwest::Certificate::from_der(der)
                        .map_err(|e| EwsError::Token(format!("a trusted root: {e}")))?;
                    token_http = token_http.add_root_certificate(cert);
                }
                let token_http = token_http
                    .build()
                    .map_err(|e| EwsError::Token(e.to_string()))?;
                (
                    AuthSource {
                        oauth: Some(TokenCache {
                            client,
                            scope,
                            http: token_http,
                            cached: tokio::sync::Mutex::new(None),
                        }),
                    },
                    None,
                )
            }
        };
        Ok(Self {
            slots: tokio::sync::Semaphore::new(cfg.max_concurrency.max(1)),
            cfg,
            http,
            auth,
            basic: std::sync::Mutex::new(basic),
            ntlm: sessions,
            stats,
        })
    }

    fn basic(&self) -> std::sync::MutexGuard<'_, Option<(String, Secret)>> {
        self.basic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The Basic or NTLM password in use (`None` with OAuth).
    pub fn password(&self) -> Option<Secret> {
        self.basic().as_ref().map(|b| b.1.clone())
    }

    /// Replaces the Basic or NTLM password (no effect with OAuth); NTLM
    /// connections authenticated with the old one are dropped.
    pub fn set_password(&self, password: Secret) {
        if let Some(b) = self.basic().as_mut() {
            b.1 = password;
        }
        if let Some(s) = &self.ntlm {
            s.reset();
        }
    }

    pub fn mailbox(&self) -> &str {
        &self.cfg.mailbox
    }

    /// Requests made, by operation and status.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// Requests made: `(operation, status) -> count`.
    pub fn calls(&self) -> std::collections::BTreeMap<(String, u16), u64> {
        self.http.stats().snapshot()
    }

    /// The SOAP envelope of one operation.
    pub fn envelope(&self, body: &str) -> String {
        let imp = if self.cfg.impersonation {
            format!(
                "<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>",
                esc(&self.cfg.mailbox)
            )
        } else {
            String::new()
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{SOAP_NS}\" xmlns:m=\"{M_NS}\" xmlns:t=\"{T_NS}\"><soap:Header><t:RequestServerVersion Version=\"{}\"/>{imp}</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>",
            esc(&self.cfg.version)
        )
    }

    /// One operation (`op` names it for the counters); the `soap:Body`'s
    /// answer element.
    pub async fn call(&self, op: &str, body: &str) -> Result<El, EwsError> {
        let root = self.envelope_call(op, body).await?;
        root.child("Body")
            .and_then(|b| b.children.first())
            .cloned()
            .ok_or_else(|| EwsError::Decode("no operation answer in the SOAP body".into()))
    }

    /// One operation; the whole answer envelope (its header carries
    /// `ServerVersionInfo`).
    pub async fn envelope_call(&self, op: &str, body: &str) -> Result<El, EwsError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| EwsError::Unavailable("client closed".into()))?;
        let envelope = self.envelope(body);
        let mut x = SoapCall {
            url: &self.cfg.url,
            body: &envelope,
            basic: if self.ntlm.is_none() {
                self.basic().clone()
            } else {
                None
            },
            anchor: self.cfg.impersonation.then_some(self.cfg.mailbox.as_str()),
            oauth: self.auth.oauth.is_some(),
            ntlm: self.ntlm.as_ref().map(|s| s.account.display()),
        };
        let root = match &self.ntlm {
            Some(sessions) => self.ntlm_execute(op, sessions, &mut x).await?,
            None => self.http.execute(op, 1, &self.auth, &mut x).await?,
        };
        if let Some((code, message, _)) = fault_of(&root) {
            return Err(EwsError::Fault { code, message });
        }
        Ok(root)
    }
}

impl EwsClient {
    /// [`HttpClient::execute`] for NTLM: its handshake takes several HTTP
    /// exchanges on one connection per attempt, which `execute`'s one
    /// request per attempt cannot express; the retries, waits and counters
    /// follow the same policy.
    async fn ntlm_execute(
        &self,
        op: &str,
        sessions: &ntlm::Sessions,
        x: &mut SoapCall<'_>,
    ) -> Result<El, EwsError> {
        let policy = self.http.policy();
        let stats = self.http.stats();
        let record = |status: u16| stats.record(op, status);
        let mut headers = Vec::new();
        if let Some(a) = x.anchor {
            headers.push(("X-AnchorMailbox", a));
        }
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            let password = self.password().unwrap_or_else(|| Secret::new(""));
            let outcome = sessions.post(x.body, &headers, &password, &record).await;
            let (error, server_wait) = match outcome {
                ntlm::Outcome::Answer(a) => match x.classify(a) {
                    Verdict::Done(v) => return Ok(v),
                    Verdict::Fail(e) | Verdict::Renew(e) => return Err(e),
                    Verdict::Retry { error, server_wait } => (error, server_wait),
                },
                ntlm::Outcome::Protocol(m) => {
                    return Err(EwsError::Unauthorized(format!("NTLM: {m}")));
                }
                ntlm::Outcome::Dropped => (
                    EwsError::Unavailable(
                        "NTLM: the server closed the connection between its CHALLENGE and the \
                         AUTHENTICATE (it did not keep the connection for the NTLM handshake)"
                            .into(),
                    ),
                    None,
                ),
            };
            let wait = policy.delay(attempt, server_wait);
            if attempt >= policy.max_retries || waited + wait > policy.max_total_wait {
                return Err(error);
            }
            tracing::warn!(
                service = "ews", endpoint = op, attempt, wait_ms = wait.as_millis() as u64,
                error = %error, "transient failure; retrying"
            );
            tokio::time::sleep(wait).await;
            waited += wait;
            attempt += 1;
        }
    }
}

/// One ResponseMessage of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    pub code: String,
    pub message: String,
    pub element: El,
}

impl ItemResult {
    pub fn ok(&self) -> bool {
        self.code == "NoError"
    }

    /// The first `t:ItemId` of the answer: `(Id, ChangeKey)`.
    pub fn item_id(&self) -> Option<(String, String)> {
        let mut ids = Vec::new();
        self.element.descendants("ItemId", &mut ids);
        let id = ids.first()?;
        Some((
            id.attr("Id")?.to_owned(),
            id.attr("ChangeKey").unwrap_or_default().to_owned(),
        ))
    }
}

/// The ResponseMessages of an answer, in order.
pub fn messages(answer: &El) -> Vec<ItemResult> {
    answer
        .child("ResponseMessages")
        .map(|r| {
            r.children
                .iter()
                .map(|m| ItemResult {
                    code: m.text_of("ResponseCode").unwrap_or_default().to_owned(),
                    message: m.text_of("MessageText").unwrap_or_default().to_owned(),
                    element: m.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}
