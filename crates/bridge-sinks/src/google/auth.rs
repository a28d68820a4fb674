//! OAuth 2.0 for the Google target (sinks-api.md A.13): credentials, the
//! installed-app authorization (PKCE, loopback redirect), and the token
//! source that caches access tokens and mints new ones with the refresh-token
//! grant (through the `oauth2` crate) or a service account's RS256 JWT.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;

use bridge_http::{RetryPolicy, error_chain};

use super::error::GoogleError;

/// The full Calendar scope.
pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";
/// Google's token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Google's authorization endpoint (installed apps).
pub const DEFAULT_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
/// The service-account grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Access tokens are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// The secret type of every credential (shared with the other services;
/// `Debug` shows `[redacted]`).
pub use bridge_http::Secret;

/// The parts of a Google service-account key file the bridge uses.
#[derive(Debug, Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_key: Secret,
    pub token_uri: Option<String>,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccountKey {
    /// Reads Google's key-file JSON (`"type": "service_account"`,
    /// `client_email`, `private_key`, `token_uri`) and checks that the key
    /// parses.
    pub fn from_json(s: &str) -> Result<Self, GoogleError> {
        let f: KeyFile = serde_json::from_str(s)
            .map_err(|e| GoogleError::Config(format!("service account key file: {e}")))?;
        if f.kind.as_deref() != Some("service_account") {
            return Err(GoogleError::Config(format!(
                "service account key file: \"type\" is {:?}, expected \"service_account\"",
                f.kind.unwrap_or_default()
            )));
        }
        let missing = |field: &str| {
            GoogleError::Config(format!("service account key file: missing \"{field}\""))
        };
        let key = Self {
            client_email: f
                .client_email
                .filter(|e| !e.is_empty())
                .ok_or_else(|| missing("client_email"))?,
            private_key: Secret::new(
                f.private_key
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| missing("private_key"))?,
            ),
            token_uri: f.token_uri.filter(|u| !u.is_empty()),
        };
        key.signing_key()?;
        Ok(key)
    }

    fn signing_key(&self) -> Result<SigningKey<Sha256>, GoogleError> {
        let key = RsaPrivateKey::from_pkcs8_pem(self.private_key.expose().trim()).map_err(|e| {
            GoogleError::Config(format!(
                "service account {}: private_key is not a PKCS#8 PEM RSA key: {e}",
                self.client_email
            ))
        })?;
        Ok(SigningKey::<Sha256>::new(key))
    }
}

/// How the client obtains access tokens.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A user's consent, from [`InstalledApp::exchange_code`].
    RefreshToken {
        client_id: String,
        client_secret: Option<Secret>,
        refresh_token: Secret,
    },
    /// A service account, optionally impersonating `subject` (domain-wide
    /// delegation).
    ServiceAccount {
        key: ServiceAccountKey,
        subject: Option<String>,
    },
}

/// An installed (desktop) OAuth client: loopback redirect plus PKCE.
#[derive(Debug, Clone)]
pub struct InstalledApp {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub auth_url: String,
    pub token_url: String,
}

/// One authorization attempt: open `url`, wait for the redirect to
/// `redirect_uri`, check `state`, then [`InstalledApp::exchange_code`].
#[derive(Debug, Clone)]
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub redirect_uri: String,
    verifier: Secret,
}

impl InstalledApp {
    /// A client on Google's endpoints.
    pub fn new(client_id: impl Into<String>, client_secret: Option<Secret>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret,
            auth_url: DEFAULT_AUTH_URL.into(),
            token_url: DEFAULT_TOKEN_URL.into(),
        }
    }

    /// The consent URL: `response_type=code`, the scopes, a random `state`,
    /// a PKCE S256 challenge, `access_type=offline` and `prompt=consent`
    /// (so Google hands out a refresh token every time).
    pub fn authorize(&self, redirect_uri: &str, scopes: &[&str]) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random();
        let extra = [("access_type", "offline"), ("prompt", "consent")];
        let url = match (
            AuthUrl::new(self.auth_url.clone()),
            RedirectUrl::new(redirect_uri.to_owned()),
        ) {
            (Ok(auth_url), Ok(redirect)) => {
                let client = BasicClient::new(ClientId::new(self.client_id.clone()))
                    .set_auth_uri(auth_url)
                    .set_redirect_uri(redirect);
                let mut req = client
                    .authorize_url(|| state.clone())
                    .add_scopes(scopes.iter().map(|s| Scope::new((*s).to_owned())))
                    .set_pkce_challenge(challenge);
                for (k, v) in extra {
                    req = req.add_extra_param(k, v);
                }
                req.url().0.to_string()
            }
            // Not URLs the `url` crate accepts: the same query by hand, so
            // the caller sees the bad address instead of a panic.
            _ => {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("response_type", "code")
                    .append_pair("client_id", &self.client_id)
                    .append_pair("state", state.secret())
                    .append_pair("code_challenge", challenge.as_str())
                    .append_pair("code_challenge_method", "S256")
                    .append_pair("redirect_uri", redirect_uri)
                    .append_pair("scope", &scopes.join(" "));
                for (k, v) in extra {
                    q.append_pair(k, v);
                }
                format!("{}?{}", self.auth_url, q.finish())
            }
        };
        Authorization {
            url,
            state: state.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
            verifier: Secret::new(verifier.secret().clone()),
        }
    }

    /// Trades the code of the redirect for tokens (with the PKCE verifier)
    /// and returns the refresh token. A refused code is
    /// `Api { status: 400, reason: "invalid_grant" }`.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        auth: &Authorization,
        code: &str,
    ) -> Result<Secret, GoogleError> {
        let token_url = TokenUrl::new(self.token_url.clone())
            .map_err(|e| GoogleError::Config(format!("token URL {:?}: {e}", self.token_url)))?;
        let redirect = RedirectUrl::new(auth.redirect_uri.clone()).map_err(|e| {
            GoogleError::Config(format!("redirect URI {:?}: {e}", auth.redirect_uri))
        })?;
        let client = oauth_client(&self.client_id, self.client_secret.as_ref(), token_url)
            .set_redirect_uri(redirect);
        let status = AtomicU16::new(0);
        let send = OauthHttp {
            http,
            status: &status,
            calls: None,
        };
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(auth.verifier.expose().to_owned()))
            .request_async(&send)
            .await;
        match answer {
            Ok(t) => t
                .refresh_token()
                .map(|r| Secret::new(r.secret().clone()))
                .ok_or_else(|| {
                    GoogleError::Decode(
                        "the token endpoint answered without a refresh_token (was \
                         access_type=offline dropped?)"
                            .into(),
                    )
                }),
            Err(e) => Err(match oauth_error(e, status.load(Ordering::Relaxed)) {
                TokenFailure::Final(GoogleError::Revoked(m)) => GoogleError::Api {
                    status: 400,
                    reason: "invalid_grant".into(),
                    message: m,
                },
                TokenFailure::Final(e) => e,
                TokenFailure::Transient(m) => GoogleError::Unavailable(m),
            }),
        }
    }
}

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn oauth_client(client_id: &str, secret: Option<&Secret>, token_url: TokenUrl) -> TokenClient {
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token_url);
    match secret {
        Some(s) => client.set_client_secret(ClientSecret::new(s.expose().to_owned())),
        None => client,
    }
}

/// The HTTP client handed to the oauth2 crate: counts token calls and keeps
/// the HTTP status for error mapping (so 5xx pages that `oauth2` cannot
/// parse still count as transient). A struct rather than a closure, so the
/// futures that use it stay `Send` for every lifetime.
struct OauthHttp<'a> {
    http: &'a reqwest::Client,
    status: &'a AtomicU16,
    calls: Option<&'a AtomicU64>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for OauthHttp<'_> {
    type Error = oauth2::HttpClientError<reqwest::Error>;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c,
        >,
    >;

    fn call(&'c self, req: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            if let Some(c) = self.calls {
                c.fetch_add(1, Ordering::Relaxed);
            }
            self.status.store(0, Ordering::Relaxed);
            let resp = self.http.call(req).await?;
            self.status.store(resp.status().as_u16(), Ordering::Relaxed);
            Ok(resp)
        })
    }
}

/// A token endpoint failure: worth another try, or final.
#[derive(Debug)]
enum TokenFailure {
    Transient(String),
    Final(GoogleError),
}

fn transient_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// Maps an OAuth error answer (`error`, `error_description`).
fn oauth_answer(status: u16, error: &str, description: &str) -> TokenFailure {
    let text = if description.is_empty() {
        error.to_owned()
    } else {
        format!("{error}: {description}")
    };
    match error {
        "invalid_grant" => TokenFailure::Final(GoogleError::Revoked(text)),
        "invalid_client" | "unauthorized_client" | "invalid_scope" => {
            TokenFailure::Final(GoogleError::Config(format!("token endpoint: {text}")))
        }
        "temporarily_unavailable" | "server_error" => TokenFailure::Transient(text),
        _ if transient_status(status) => TokenFailure::Transient(text),
        _ => TokenFailure::Final(GoogleError::Api {
            status,
            reason: error.to_owned(),
            message: description.to_owned(),
        }),
    }
}

fn oauth_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, BasicErrorResponse>,
    status: u16,
) -> TokenFailure {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = match r.error() {
                BasicErrorResponseType::Extension(s) => s.clone(),
                other => other.to_string(),
            };
            oauth_answer(
                status,
                &code,
                r.error_description()
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
        }
        RequestTokenError::Request(e) => {
            TokenFailure::Transient(format!("token endpoint unreachable: {}", error_chain(&e)))
        }
        RequestTokenError::Parse(e, body) if transient_status(status) => {
            let _ = e;
            TokenFailure::Transient(format!(
                "token endpoint answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }
        RequestTokenError::Other(m) if transient_status(status) => {
            TokenFailure::Transient(format!("token endpoint answered {status}: {m}"))
        }
        RequestTokenError::Parse(e, _) => TokenFailure::Final(GoogleError::Decode(format!(
            "token endpoint answer ({status}): {e}"
        ))),
        RequestTokenError::Other(m) => TokenFailure::Final(GoogleError::Decode(format!(
            "token endpoint answer ({status}): {m}"
        ))),
    }
}

/// How a [`TokenSource`] mints tokens.
enum Grant {
    Refresh {
        client: Box<TokenClient>,
        refresh_token: Secret,
    },
    Service {
        email: String,
        key: Box<SigningKey<Sha256>>,
        subject: Option<String>,
        token_url: String,
    },
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    renew_at: Instant,
}

/// Hands out access tokens, cached until [`EXPIRY_MARGIN`] before expiry.
/// One refresh at a time (the cache lock is held while fetching). It counts
/// its own calls to the token endpoint and their retries; the client adds
/// them to its statistics.
pub(crate) struct TokenSource {
    http: reqwest::Client,
    grant: Grant,
    cache: tokio::sync::Mutex<Option<Cached>>,
    /// The client's retry policy, for the token endpoint's transient failures.
    retry: RetryPolicy,
    calls: AtomicU64,
    retries: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.grant {
            Grant::Refresh { .. } => "refresh_token",
            Grant::Service { .. } => "service_account",
        };
        f.debug_struct("TokenSource")
            .field("grant", &kind)
            .finish_non_exhaustive()
    }
}

/// The access token of every API call, renewed once after a 401.
impl bridge_http::Auth for TokenSource {
    type Error = GoogleError;

    async fn token(&self) -> Result<Option<Secret>, GoogleError> {
        TokenSource::token(self).await.map(Some)
    }

    async fn renew(&self, rejected: Option<&Secret>) -> Result<(), GoogleError> {
        TokenSource::renew(self, rejected).await.map(|_| ())
    }
}

impl TokenSource {
    /// `token_url` is the client's; a service account uses its key file's
    /// `token_uri` instead when the client keeps Google's default.
    pub(crate) fn new(
        http: reqwest::Client,
        creds: Credentials,
        token_url: &str,
        retry: RetryPolicy,
    ) -> Result<Self, GoogleError> {
        let grant = match creds {
            Credentials::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let url = TokenUrl::new(token_url.to_owned())
                    .map_err(|e| GoogleError::Config(format!("token URL {token_url:?}: {e}")))?;
                Grant::Refresh {
                    client: Box::new(oauth_client(&client_id, client_secret.as_ref(), url)),
                    refresh_token,
                }
            }
            Credentials::ServiceAccount { key, subject } => {
                let url = match &key.token_uri {
                    Some(u) if token_url == DEFAULT_TOKEN_URL => u.clone(),
                    _ => token_url.to_owned(),
                };
                url::Url::parse(&url)
                    .map_err(|e| GoogleError::Config(format!("token URL {url:?}: {e}")))?;
                Grant::Service {
                    key: Box::new(key.signing_key()?),
                    email: key.client_email,
                    subject: subject.filter(|s| !s.is_empty()),
                    token_url: url,
                }
            }
        };
        Ok(Self {
            http,
            grant,
            cache: tokio::sync::Mutex::new(None),
            retry,
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    /// `(token endpoint calls, retries)` since creation or the last reset.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn reset_counts(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.retries.store(0, Ordering::Relaxed);
    }

    /// A live access token (cached or freshly minted).
    pub(crate) async fn token(&self) -> Result<Secret, GoogleError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    /// The API refused `rejected` (401): drop it and mint a new one, unless
    /// another task already replaced it.
    pub(crate) async fn renew(&self, rejected: Option<&Secret>) -> Result<Secret, GoogleError> {
        {
            let mut cache = self.cache.lock().await;
            if let Some(c) = cache.as_ref()
                && Some(&c.token) != rejected
                && Instant::now() < c.renew_at
            {
                return Ok(c.token.clone());
            }
            *cache = None;
        }
        self.token().await
    }

    /// Mints a token, retrying transient failures of the token endpoint.
    async fn fetch(&self) -> Result<Cached, GoogleError> {
        let mut attempt = 0u32;
        loop {
            match self.fetch_once().await {
                Ok(c) => return Ok(c),
                Err(TokenFailure::Final(e)) => return Err(e),
                Err(TokenFailure::Transient(m)) => {
                    if attempt >= self.retry.max_retries {
                        return Err(GoogleError::Unavailable(m));
                    }
                    let wait = self.retry.delay(attempt, None);
                    tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %m,
                        "google token endpoint failed, retrying");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn fetch_once(&self) -> Result<Cached, TokenFailure> {
        let started = Instant::now();
        let (token, expires_in) = match &self.grant {
            Grant::Refresh {
                client,
                refresh_token,
            } => {
                let status = AtomicU16::new(0);
                let send = OauthHttp {
                    http: &self.http,
                    status: &status,
                    calls: Some(&self.calls),
                };
                let answer = client
                    .exchange_refresh_token(&RefreshToken::new(refresh_token.expose().to_owned()))
                    .request_async(&send)
                    .await
                    .map_err(|e| oauth_error(e, status.load(Ordering::Relaxed)))?;
                (answer.access_token().secret().clone(), answer.expires_in())
            }
            Grant::Service {
                email,
                key,
                subject,
                token_url,
            } => {
                self.service_grant(email, key, subject.as_deref(), token_url)
                    .await?
            }
        };
        let lifetime = expires_in.unwrap_or(Duration::from_secs(3600));
        tracing::debug!(
            lifetime_s = lifetime.as_secs(),
            "google access token minted"
        );
        Ok(Cached {
            token: Secret::new(token),
            renew_at: started + lifetime.saturating_sub(EXPIRY_MARGIN),
        })
    }

    async fn service_grant(
        &self,
        email: &str,
        key: &SigningKey<Sha256>,
        subject: Option<&str>,
        token_url: &str,
    ) -> Result<(String, Option<Duration>), TokenFailure> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = sign_jwt(key, email, CALENDAR_SCOPE, token_url, iat, subject);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .http
            .post(token_url)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| {
                TokenFailure::Transient(format!("token endpoint unreachable: {}", error_chain(&e)))
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| {
            TokenFailure::Transient(format!("token endpoint answer cut: {}", error_chain(&e)))
        })?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status != 200 {
            return Err(match json.as_ref().and_then(|j| j["error"].as_str()) {
                Some(error) => oauth_answer(
                    status,
                    error,
                    json.as_ref()
                        .and_then(|j| j["error_description"].as_str())
                        .unwrap_or_default(),
                ),
                None if transient_status(status) => {
                    TokenFailure::Transient(format!("token endpoint answered {status}"))
                }
                None => TokenFailure::Final(GoogleError::Decode(format!(
                    "token endpoint answered {status} without an OAuth error"
                ))),
            });
        }
        let json = json.ok_or_else(|| {
            TokenFailure::Final(GoogleError::Decode("token answer is not JSON".into()))
        })?;
        let token = json["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                TokenFailure::Final(GoogleError::Decode(
                    "token answer without access_token".into(),
                ))
            })?;
        Ok((
            token.to_owned(),
            json["expires_in"].as_u64().map(Duration::from_secs),
        ))
    }
}

/// An RS256 JWT for the service-account grant (`exp` = `iat` + 1 h).
fn sign_jwt(
    key: &SigningKey<Sha256>,
    email: &str,
    scope: &str,
    aud: &str,
    iat: u64,
    subject: Option<&str>,
) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let mut claims = json!({
        "iss": email,
        "scope": scope,
        "aud": aud,
        "iat": iat,
        "exp": iat + 3600,
    });
    if let Some(sub) = subject {
        claims["sub"] = json!(sub);
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let c = Credentials::RefreshToken {
            client_id: "id".into(),
            client_secret: Some(Secret::new("s3cr3t")),
            refresh_token: Secret::new("1//0token"),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("1//0token"),
            "{shown}"
        );
        assert!(shown.contains("[redacted]"));
        let app = InstalledApp::new("id", None);
        let auth = app.authorize("http://127.0.0.1:8080/cb", &[CALENDAR_SCOPE]);
        assert!(!format!("{auth:?}").contains(auth.verifier.expose()));
    }

    #[test]
    fn authorize_url_carries_pkce_offline_and_state() {
        let app = InstalledApp::new("client.apps.googleusercontent.com", None);
        let a = app.authorize("http://127.0.0.1:8080/cb", &[CALENDAR_SCOPE]);
        let url = url::Url::parse(&a.url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "client.apps.googleusercontent.com");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:8080/cb");
        assert_eq!(q["scope"], CALENDAR_SCOPE);
        assert_eq!(q["state"], a.state);
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        let digest = <Sha256 as sha2::Digest>::digest(a.verifier.expose().as_bytes());
        assert_eq!(q["code_challenge"], URL_SAFE_NO_PAD.encode(digest));
        assert!(a.url.starts_with(DEFAULT_AUTH_URL));
    }

    #[test]
    fn key_file_errors_are_config_errors() {
        assert!(matches!(
            ServiceAccountKey::from_json("{}"),
            Err(GoogleError::Config(_))
        ));
        let bad = json!({"type": "service_account", "client_email": "a@b", "private_key": "x"});
        let e = ServiceAccountKey::from_json(&bad.to_string()).unwrap_err();
        assert!(e.to_string().contains("PKCS#8"), "{e}");
        let user = json!({"type": "authorized_user"});
        assert!(ServiceAccountKey::from_json(&user.to_string()).is_err());
    }

    #[test]
    fn oauth_answers_map_to_errors() {
        assert!(matches!(
            oauth_answer(400, "invalid_grant", "Token has been expired or revoked."),
            TokenFailure::Final(GoogleError::Revoked(_))
        ));
        assert!(matches!(
            oauth_answer(401, "invalid_client", "Unauthorized"),
            TokenFailure::Final(GoogleError::Config(_))
        ));
        assert!(matches!(
            oauth_answer(503, "backendError", ""),
            TokenFailure::Transient(_)
        ));
    }
}
