//! Tokens from the Microsoft identity platform (v2.0 endpoints): client
//! credentials with a client secret or a certificate (an RS256 client
//! assertion), or a delegated refresh token from `auth graph` (authorization
//! code with PKCE, see [`super::authorize`]). Token requests go through the
//! shared HTTP client (retries, counters); tokens are cached until five
//! minutes before they expire and renewed once after a 401.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridge_http::{Answer, Exchange, HttpClient, NoAuth, Secret, TransportError, Verdict};
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
    creds: Credentials,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(http: Arc<HttpClient>, token_url: String, creds: Credentials) -> Self {
        Self {
            http,
            token_url,
            creds,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token (cached, or fetched now).
    pub async fn token(&self) -> Result<Secret, GraphError> {
        let mut c = self.cache.lock().await;
        if let Some(t) = c.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.token.clone());
        }
        let mut call = TokenCall {
            url: self.token_url.clone(),
            form: self.creds.form(&self.token_url),
        };
        let a = self
            .http
            .execute("token", 1, &NoAuth::<GraphError>::new(), &mut call)
            .await?;
        let life = Duration::from_secs(a.expires_in);
        *c = Some(Cached {
            token: a.access_token.clone(),
            renew_at: Instant::now() + life.saturating_sub(MARGIN),
        });
        Ok(a.access_token)
    }

    async fn drop_token(&self, rejected: Option<&Secret>) {
        let mut c = self.cache.lock().await;
        if rejected.is_none()
            || c.as_ref().map(|t| t.token.expose()) == rejected.map(Secret::expose)
        {
            *c = None;
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
