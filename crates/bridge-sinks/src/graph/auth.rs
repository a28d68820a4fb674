//! Tokens from the Microsoft identity platform (v2.0 endpoints): client
//! credentials with a client secret or a certificate (an RS256 client
//! assertion), or a delegated refresh token from `auth graph` (authorization
//! code with PKCE, see [`super::authorize`]). Token requests go through the
//! shared HTTP client (retries, counters); tokens are cached until five
//! minutes before they expire and renewed once after a 401.
//!
//! The identity platform rotates delegated refresh tokens: an answer may
//! carry a new `refresh_token`, and the one redeemed may stop working. The
//! newest is kept in the sink's state ([`ROTATED_STATE`]) with the hash of
//! the token `auth graph` stored (its origin), so a restart redeems the
//! newest; a new `auth graph` (another origin) makes the kept one moot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridge_http::{Answer, Exchange, HttpClient, NoAuth, Secret, TransportError, Verdict};
use bridge_target::StateStore;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::GraphError;

/// Microsoft's authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// App-only scope.
pub const APP_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Delegated scopes of `auth graph`.
pub const DELEGATED_SCOPE: &str = "offline_access https://graph.microsoft.com/Calendars.ReadWrite";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const MARGIN: Duration = Duration::from_secs(300);
/// The sink state holding the newest delegated refresh token.
pub const ROTATED_STATE: &str = "graph_refresh_rotated";
const ROTATED_KEY: &str = "refresh_token";

/// A certificate credential: the thumbprints of the certificate and its key.
#[derive(Clone)]
pub struct Certificate {
    /// base64url SHA-1 of the DER certificate (`x5t`).
    pub x5t: String,
    /// base64url SHA-256 of it (`x5t#S256`).
    pub x5t_s256: String,
    key: Arc<SigningKey<Sha256>>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// From a PEM certificate and a PKCS#8 PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let (label, der) = pem_rfc7468::decode_vec(cert_pem.trim().as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        if label != "CERTIFICATE" {
            return Err(format!("expected a CERTIFICATE PEM block, found {label}"));
        }
        let key = RsaPrivateKey::from_pkcs8_pem(key_pem.trim())
            .map_err(|e| format!("not a PKCS#8 PEM RSA private key: {e}"))?;
        Ok(Self {
            x5t: URL_SAFE_NO_PAD.encode(<sha1::Sha1 as sha1::Digest>::digest(&der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
            key: Arc::new(SigningKey::<Sha256>::new(key)),
        })
    }

    /// The client assertion for `token_url`, valid ten minutes from `now`.
    pub fn assertion(&self, client_id: &str, token_url: &str, now: i64) -> String {
        let header =
            json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t, "x5t#S256": self.x5t_s256});
        let jti = hex::encode(rand::random::<[u8; 16]>());
        let claims = json!({"aud": token_url, "iss": client_id, "sub": client_id, "jti": jti, "nbf": now, "iat": now, "exp": now + 600});
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signing = format!("{}.{}", enc(&header), enc(&claims));
        let sig = self.key.sign(signing.as_bytes());
        format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

/// How the sink gets its tokens.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// App-only, with a client secret.
    Secret { client_id: String, secret: Secret },
    /// App-only, with a certificate.
    Certificate {
        client_id: String,
        certificate: Certificate,
    },
    /// Delegated: the refresh token `auth graph` stored.
    Delegated {
        client_id: String,
        secret: Option<Secret>,
        refresh_token: Secret,
    },
}

impl Credentials {
    fn form(&self, token_url: &str) -> Vec<(String, String)> {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        match self {
            Self::Secret { client_id, secret } => vec![
                p("grant_type", "client_credentials"),
                p("client_id", client_id),
                p("client_secret", secret.expose()),
                p("scope", APP_SCOPE),
            ],
            Self::Certificate {
                client_id,
                certificate,
            } => vec![
                p("grant_type", "client_credentials"),
                p("client_id", client_id),
                p("client_assertion_type", ASSERTION_TYPE),
                p(
                    "client_assertion",
                    &certificate.assertion(client_id, token_url, chrono::Utc::now().timestamp()),
                ),
                p("scope", APP_SCOPE),
            ],
            Self::Delegated {
                client_id,
                secret,
                refresh_token,
            } => {
                let mut f = vec![
                    p("grant_type", "refresh_token"),
                    p("client_id", client_id),
                    p("refresh_token", refresh_token.expose()),
                    p("scope", DELEGATED_SCOPE),
                ];
                if let Some(s) = secret {
                    f.push(p("client_secret", s.expose()));
                }
                f
            }
        }
    }
}

/// One token request: a form POST, read as the identity platform answers.
pub(crate) struct TokenCall {
    pub(crate) url: String,
    pub(crate) form: Vec<(String, String)>,
}

/// An answer of the token endpoint.
#[derive(Debug)]
pub(crate) struct TokenAnswer {
    pub(crate) access_token: Secret,
    pub(crate) expires_in: u64,
    /// A new refresh token (delegated grants).
    pub(crate) refresh_token: Option<Secret>,
}

impl Exchange for TokenCall {
    type Output = TokenAnswer;
    type Error = GraphError;

    fn request(&mut self, http: &reqwest::Client, _: Option<&Secret>) -> reqwest::RequestBuilder {
        http.post(&self.url).form(&self.form)
    }

    fn classify(
        &mut self,
        answer: Result<Answer, TransportError>,
    ) -> Verdict<TokenAnswer, GraphError> {
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                return Verdict::Retry {
                    error: GraphError::Transport(format!("token endpoint {}: {e}", self.url)),
                    server_wait: None,
                };
            }
        };
        let body: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        if a.status == 200 {
            let Some(t) = body["access_token"].as_str() else {
                return Verdict::Fail(GraphError::Decode(
                    "the token endpoint answered no access_token".into(),
                ));
            };
            return Verdict::Done(TokenAnswer {
                access_token: Secret::new(t),
                expires_in: body["expires_in"].as_u64().unwrap_or(3600),
                refresh_token: body["refresh_token"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                    .map(Secret::new),
            });
        }
        let error = body["error"].as_str().unwrap_or("");
        let desc = body["error_description"]
            .as_str()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        if matches!(a.status, 429 | 500 | 502 | 503 | 504) {
            return Verdict::Retry {
                error: GraphError::Transport(format!("token endpoint answered {}", a.status)),
                server_wait: a.server_wait(&[]),
            };
        }
        let hint = if desc.contains("AADSTS7000215") || desc.contains("AADSTS7000222") {
            "the client secret is wrong or expired: create a new secret in the app registration (Certificates & secrets) and put its value (not its id) in client_secret"
        } else if desc.contains("AADSTS700027") || desc.contains("AADSTS700024") {
            "the certificate assertion was refused: upload certificate_file's certificate to the app registration and check the machine clock"
        } else if desc.contains("AADSTS700016") || desc.contains("AADSTS90002") {
            "check tenant_id and client_id against the app registration"
        } else if error == "invalid_grant" {
            "the refresh token is no longer valid: run `feishu-bridge auth graph` again"
        } else {
            "check the app registration and the sink's credentials"
        };
        Verdict::Fail(GraphError::Credentials(format!(
            "the token endpoint refused the credentials ({error}: {desc}); {hint}"
        )))
    }
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    renew_at: Instant,
}

/// Access tokens of one sink (bridge-http's [`bridge_http::Auth`]).
pub struct TokenSource {
    http: Arc<HttpClient>,
    token_url: String,
    creds: std::sync::Mutex<Credentials>,
    /// Hash of the delegated refresh token the credentials came with.
    origin: Option<String>,
    /// Where a rotated refresh token is kept.
    keeper: std::sync::Mutex<Option<Arc<dyn StateStore>>>,
    cache: tokio::sync::Mutex<Tokens>,
}

#[derive(Default)]
struct Tokens {
    access: Option<Cached>,
    /// The kept refresh token was looked up.
    restored: bool,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

fn origin_of(refresh_token: &str) -> String {
    hex::encode(&Sha256::digest(refresh_token.as_bytes())[..16])
}

impl TokenSource {
    pub fn new(http: Arc<HttpClient>, token_url: String, creds: Credentials) -> Self {
        let origin = match &creds {
            Credentials::Delegated { refresh_token, .. } => Some(origin_of(refresh_token.expose())),
            _ => None,
        };
        Self {
            http,
            token_url,
            creds: std::sync::Mutex::new(creds),
            origin,
            keeper: std::sync::Mutex::new(None),
            cache: tokio::sync::Mutex::new(Tokens::default()),
        }
    }

    /// Keeps rotated refresh tokens in `state` (and redeems the one kept
    /// there for the same origin).
    pub fn keep_in(&self, state: Arc<dyn StateStore>) {
        *self.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
    }

    fn keeper(&self) -> Option<Arc<dyn StateStore>> {
        self.keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_refresh(&self, new: Secret) {
        if let Credentials::Delegated { refresh_token, .. } =
            &mut *self.creds.lock().unwrap_or_else(|e| e.into_inner())
        {
            *refresh_token = new;
        }
    }

    /// The refresh token kept for this origin, once per source.
    async fn restore(&self, t: &mut Tokens) {
        if t.restored {
            return;
        }
        let (Some(origin), Some(keeper)) = (&self.origin, self.keeper()) else {
            return;
        };
        t.restored = true;
        match keeper.get(ROTATED_STATE, ROTATED_KEY).await {
            Ok(Some(json)) => {
                let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
                if v["origin"].as_str() == Some(origin.as_str())
                    && let Some(r) = v["refresh_token"].as_str()
                {
                    self.set_refresh(Secret::new(r));
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the kept Graph refresh token"),
        }
    }

    /// Keeps a rotated refresh token (durable before the access token is used).
    async fn rotated(&self, new: Secret) {
        let current = match &*self.creds.lock().unwrap_or_else(|e| e.into_inner()) {
            Credentials::Delegated { refresh_token, .. } => refresh_token.expose().to_owned(),
            _ => return,
        };
        if current == new.expose() {
            return;
        }
        if let (Some(origin), Some(keeper)) = (&self.origin, self.keeper()) {
            let json = json!({"refresh_token": new.expose(), "origin": origin}).to_string();
            if let Err(e) = keeper.put(ROTATED_STATE, ROTATED_KEY, &json).await {
                tracing::warn!(error = %e, "cannot keep the rotated Graph refresh token; a restart may need `feishu-bridge auth graph`");
            }
        }
        self.set_refresh(new);
    }

    /// A valid token (cached, or fetched now).
    pub async fn token(&self) -> Result<Secret, GraphError> {
        let mut c = self.cache.lock().await;
        if let Some(t) = c.access.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.token.clone());
        }
        self.restore(&mut c).await;
        let form = self
            .creds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .form(&self.token_url);
        let mut call = TokenCall {
            url: self.token_url.clone(),
            form,
        };
        let a = self
            .http
            .execute("token", 1, &NoAuth::<GraphError>::new(), &mut call)
            .await?;
        if let Some(r) = a.refresh_token {
            self.rotated(r).await;
        }
        let life = Duration::from_secs(a.expires_in);
        c.access = Some(Cached {
            token: a.access_token.clone(),
            renew_at: Instant::now() + life.saturating_sub(MARGIN),
        });
        Ok(a.access_token)
    }

    async fn drop_token(&self, rejected: Option<&Secret>) {
        let mut c = self.cache.lock().await;
        if rejected.is_none()
            || c.access.as_ref().map(|t| t.token.expose()) == rejected.map(Secret::expose)
        {
            c.access = None;
        }
    }
}

impl bridge_http::Auth for TokenSource {
    type Error = GraphError;

    async fn token(&self) -> Result<Option<Secret>, GraphError> {
        TokenSource::token(self).await.map(Some)
    }

    async fn renew(&self, rejected: Option<&Secret>) -> Result<(), GraphError> {
        self.drop_token(rejected).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_emulators::graph::{GraphEmulator, TEST_CLIENT_ID};
    use bridge_target::StateError;
    use std::collections::HashMap;

    /// A sink state in memory (the engine's is over the store).
    #[derive(Debug, Default)]
    struct MemState(std::sync::Mutex<HashMap<(String, String), String>>);

    #[async_trait::async_trait]
    impl StateStore for MemState {
        async fn get(&self, name: &str, key: &str) -> Result<Option<String>, StateError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&(name.into(), key.into()))
                .cloned())
        }
        async fn put(&self, name: &str, key: &str, value: &str) -> Result<(), StateError> {
            self.0
                .lock()
                .unwrap()
                .insert((name.into(), key.into()), value.into());
            Ok(())
        }
        async fn delete(&self, name: &str, key: &str) -> Result<bool, StateError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .remove(&(name.into(), key.into()))
                .is_some())
        }
    }

    fn delegated(emu: &GraphEmulator, refresh: &str) -> TokenSource {
        let http = Arc::new(HttpClient::builder("graph").build().unwrap());
        TokenSource::new(
            http,
            emu.token_url(),
            Credentials::Delegated {
                client_id: TEST_CLIENT_ID.into(),
                secret: None,
                refresh_token: Secret::new(refresh),
            },
        )
    }

    #[tokio::test]
    async fn a_rotated_refresh_token_is_kept_and_redeemed_after_a_restart() {
        let emu = GraphEmulator::start().await.unwrap();
        let stored = emu.grant_refresh_token(TEST_CLIENT_ID, "me@contoso.example");
        let state: Arc<dyn StateStore> = Arc::new(MemState::default());
        let first = delegated(&emu, &stored);
        first.keep_in(state.clone());
        first.token().await.unwrap();
        let kept = state
            .get(ROTATED_STATE, ROTATED_KEY)
            .await
            .unwrap()
            .unwrap();
        let kept: Value = serde_json::from_str(&kept).unwrap();
        assert_ne!(kept["refresh_token"], stored.as_str(), "a new one was kept");
        // Expired access token: the running source redeems the newest.
        first.drop_token(None).await;
        first.token().await.unwrap();
        // A restart with what `auth graph` stored: the redeemed one is
        // refused, the kept one works.
        let without = delegated(&emu, &stored);
        let e = without.token().await.unwrap_err();
        assert!(e.to_string().contains("invalid_grant"), "{e}");
        let restarted = delegated(&emu, &stored);
        restarted.keep_in(state.clone());
        restarted.token().await.unwrap();
        // A new `auth graph` (another origin) ignores the kept token.
        let fresh = emu.grant_refresh_token(TEST_CLIENT_ID, "me@contoso.example");
        let reauthorized = delegated(&emu, &fresh);
        reauthorized.keep_in(state.clone());
        reauthorized.token().await.unwrap();
        let kept: Value = serde_json::from_str(
            &state
                .get(ROTATED_STATE, ROTATED_KEY)
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(kept["origin"], origin_of(&fresh));
        emu.shutdown().await;
    }

    const KEY: &str = include_str!("../../../bridge-emulators/src/graph/testdata/test-key.pem");
    const CERT: &str = include_str!("../../../bridge-emulators/src/graph/testdata/test-cert.pem");

    #[test]
    fn assertions_are_rs256_jwts_naming_the_certificate() {
        let c = Certificate::from_pem(CERT, KEY).unwrap();
        let jwt = c.assertion("app", "https://login/t/oauth2/v2.0/token", 1000);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(h["alg"], "RS256");
        assert_eq!(h["x5t"], c.x5t);
        assert_eq!(claims["aud"], "https://login/t/oauth2/v2.0/token");
        assert_eq!(claims["exp"], 1600);
        assert!(Certificate::from_pem(KEY, KEY).is_err());
    }
}
