//! Microsoft identity platform v2.0 endpoints of the tenant: the token
//! endpoint (client credentials with a secret or an RS256 client assertion,
//! authorization code with PKCE, refresh token) and the authorization
//! endpoint of `auth graph`.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::kit::ids::{now_secs, rand_urlsafe};

/// The scope of app-only Graph tokens.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The client assertion type of a certificate credential.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The private key (PKCS#8 PEM) of the built-in test certificate.
pub const TEST_CERT_PRIVATE_KEY_PEM: &str = include_str!("testdata/test-key.pem");
/// The built-in test certificate (PEM).
pub const TEST_CERT_PEM: &str = include_str!("testdata/test-cert.pem");
/// Its public key (SPKI PEM).
pub const TEST_CERT_PUBLIC_KEY_PEM: &str = include_str!("testdata/test-public-key.pem");

/// An app registration of the tenant.
#[derive(Debug, Clone)]
pub struct ClientApp {
    pub client_id: String,
    /// Its client secret (`None`: none registered).
    pub secret: Option<String>,
    /// The secret expired: `invalid_client` / `AADSTS7000222`.
    pub secret_expired: bool,
    /// The certificate registered for client assertions (PEM); its SHA-1
    /// (`x5t`) or SHA-256 (`x5t#S256`) thumbprint must head the assertion.
    pub certificate_pem: Option<String>,
    /// The certificate's public key (SPKI PEM).
    pub public_key_pem: Option<String>,
}

/// What an access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// App-only: every mailbox (subject to access policies).
    App { client_id: String },
    /// Delegated: the signed-in user's mailbox only.
    User { client_id: String, upn: String },
}

#[derive(Debug)]
struct Token {
    grant: Grant,
    expires: i64,
}

#[derive(Debug)]
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    upn: String,
    scope: String,
}

/// Tokens, codes and refresh tokens issued.
#[derive(Debug, Default)]
pub(crate) struct Auth {
    access: HashMap<String, Token>,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, (String, String, String)>,
    pub(crate) issued: u64,
}

/// An OAuth error answer: status, `error`, AADSTS description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) status: u16,
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, code: &str, text: &str) -> Self {
        Self {
            status,
            error,
            description: format!(
                "{code}: {text} Trace ID: 00000000-0000-0000-0000-000000000000 Correlation ID: 00000000-0000-0000-0000-000000000000 Timestamp: 2026-01-01 00:00:00Z"
            ),
        }
    }

    pub(crate) fn body(&self) -> Value {
        let code: u64 = self
            .description
            .trim_start_matches("AADSTS")
            .split(':')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        json!({"error": self.error, "error_description": self.description, "error_codes": [code]})
    }
}

/// What the token endpoint was given.
pub(crate) type Form = HashMap<String, String>;

impl Auth {
    fn issue(&mut self, grant: Grant, ttl: Duration) -> String {
        let t = format!("eyJ0eXAiOiJKV1Qi.{}", rand_urlsafe(48));
        self.access.insert(
            t.clone(),
            Token {
                grant,
                expires: now_secs() + ttl.as_secs() as i64,
            },
        );
        self.issued += 1;
        t
    }

    /// The grant of a bearer token; `Err(true)` expired, `Err(false)` unknown.
    pub(crate) fn check(&self, token: &str) -> Result<Grant, bool> {
        match self.access.get(token) {
            Some(t) if t.expires > now_secs() => Ok(t.grant.clone()),
            Some(_) => Err(true),
            None => Err(false),
        }
    }

    /// Every token expires now.
    pub(crate) fn expire_all(&mut self) {
        for t in self.access.values_mut() {
            t.expires = 0;
        }
    }

    pub(crate) fn expire(&mut self, token: &str) {
        if let Some(t) = self.access.get_mut(token) {
            t.expires = 0;
        }
    }

    /// `POST /{tenant}/oauth2/v2.0/token`.
    pub(crate) fn token(
        &mut self,
        apps: &[ClientApp],
        token_url: &str,
        form: &Form,
        ttl: Duration,
    ) -> Result<Value, OAuthError> {
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let client_id = get("client_id");
        let Some(app) = apps.iter().find(|a| a.client_id == client_id) else {
            return Err(OAuthError::new(
                400,
                "unauthorized_client",
                "AADSTS700016",
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory 'feishu-bridge-test'."
                ),
            ));
        };
        match get("grant_type") {
            "client_credentials" => {
                authenticate(app, token_url, form, true)?;
                let scope = get("scope");
                if scope != GRAPH_DEFAULT_SCOPE {
                    return Err(OAuthError::new(
                        400,
                        "invalid_scope",
                        "AADSTS1002012",
                        &format!(
                            "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                        ),
                    ));
                }
                let t = self.issue(
                    Grant::App {
                        client_id: client_id.to_owned(),
                    },
                    ttl,
                );
                Ok(
                    json!({"token_type": "Bearer", "expires_in": ttl.as_secs(), "ext_expires_in": ttl.as_secs(), "access_token": t}),
                )
            }
            "authorization_code" => {
                authenticate(app, token_url, form, false)?;
                let code = self.codes.remove(get("code")).ok_or_else(|| OAuthError::new(400, "invalid_grant", "AADSTS70008", "The provided authorization code or refresh token has expired due to inactivity."))?;
                if code.client_id != client_id || code.redirect_uri != get("redirect_uri") {
                    return Err(OAuthError::new(
                        400,
                        "invalid_grant",
                        "AADSTS50148",
                        "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
                    ));
                }
                let verifier = get("code_verifier");
                let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                if verifier.is_empty() || challenge != code.challenge {
                    return Err(OAuthError::new(
                        400,
                        "invalid_grant",
                        "AADSTS501481",
                        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    ));
                }
                Ok(self.user_tokens(client_id, &code.upn, &code.scope, ttl))
            }
            "refresh_token" => {
                authenticate(app, token_url, form, false)?;
                // Redeemed once: the answer carries a new refresh token and
                // the one sent is no longer accepted (a client must keep
                // the newest; Microsoft identity platform rotates them).
                let (cid, upn, scope) =
                    self.refresh.remove(get("refresh_token")).ok_or_else(|| {
                        OAuthError::new(
                            400,
                            "invalid_grant",
                            "AADSTS9002313",
                            "Invalid request. Request is malformed or invalid.",
                        )
                    })?;
                if cid != client_id {
                    return Err(OAuthError::new(
                        400,
                        "invalid_grant",
                        "AADSTS700005",
                        "Provided Authorization Code is intended to use against other tenant, thus rejected.",
                    ));
                }
                Ok(self.user_tokens(client_id, &upn, &scope, ttl))
            }
            other => Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                "AADSTS70003",
                &format!("The app requested an unsupported grant type '{other}'."),
            )),
        }
    }

    /// A refresh token of `upn` for `client_id` (as a consent would give).
    pub(crate) fn grant_refresh(&mut self, client_id: &str, upn: &str) -> String {
        let r = rand_urlsafe(64);
        self.refresh.insert(
            r.clone(),
            (
                client_id.to_owned(),
                upn.to_owned(),
                "https://graph.microsoft.com/Calendars.ReadWrite offline_access".to_owned(),
            ),
        );
        r
    }

    fn user_tokens(&mut self, client_id: &str, upn: &str, scope: &str, ttl: Duration) -> Value {
        let t = self.issue(
            Grant::User {
                client_id: client_id.to_owned(),
                upn: upn.to_owned(),
            },
            ttl,
        );
        let r = rand_urlsafe(64);
        self.refresh.insert(
            r.clone(),
            (client_id.to_owned(), upn.to_owned(), scope.to_owned()),
        );
        json!({"token_type": "Bearer", "scope": scope, "expires_in": ttl.as_secs(), "access_token": t, "refresh_token": r})
    }

    /// `GET /{tenant}/oauth2/v2.0/authorize`: the redirect URL with a code
    /// for `upn`, or the error redirect.
    pub(crate) fn authorize(
        &mut self,
        apps: &[ClientApp],
        q: &Form,
        upn: Option<&str>,
    ) -> Result<String, String> {
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        let redirect = get("redirect_uri");
        let loopback = redirect.starts_with("http://127.0.0.1:")
            || redirect.starts_with("http://localhost:")
            || redirect.starts_with("http://localhost/")
            || redirect.starts_with("http://127.0.0.1/");
        if !loopback {
            return Err(format!(
                "AADSTS50011: The redirect URI '{redirect}' does not match the redirect URIs configured for the application."
            ));
        }
        if !apps.iter().any(|a| a.client_id == get("client_id")) {
            return Err("AADSTS700016: Application not found in the directory.".into());
        }
        let state = get("state");
        let sep = if redirect.contains('?') { '&' } else { '?' };
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        if get("response_type") != "code"
            || get("code_challenge_method") != "S256"
            || get("code_challenge").is_empty()
        {
            return Ok(format!(
                "{redirect}{sep}error=invalid_request&error_description={}&state={}",
                enc(
                    "AADSTS9002325: Proof Key for Code Exchange is required for cross-origin authorization code redemption."
                ),
                enc(state)
            ));
        }
        let Some(upn) = upn else {
            return Ok(format!(
                "{redirect}{sep}error=access_denied&error_description={}&state={}",
                enc("AADSTS65004: User declined to consent to access the app."),
                enc(state)
            ));
        };
        let code = rand_urlsafe(40);
        self.codes.insert(
            code.clone(),
            Code {
                client_id: get("client_id").to_owned(),
                redirect_uri: redirect.to_owned(),
                challenge: get("code_challenge").to_owned(),
                upn: upn.to_owned(),
                scope: get("scope").to_owned(),
            },
        );
        Ok(format!(
            "{redirect}{sep}code={}&state={}",
            enc(&code),
            enc(state)
        ))
    }
}

/// The client's credential: a secret or a certificate assertion (public
/// clients of the delegated flow may send none).
fn authenticate(
    app: &ClientApp,
    token_url: &str,
    form: &Form,
    confidential: bool,
) -> Result<(), OAuthError> {
    if let Some(secret) = form.get("client_secret") {
        if app.secret.as_deref() != Some(secret.as_str()) {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "AADSTS7000215",
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            ));
        }
        if app.secret_expired {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "AADSTS7000222",
                "The provided client secret keys for app are expired. Visit the Azure portal to create new keys for your app.",
            ));
        }
        return Ok(());
    }
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::new(
                400,
                "invalid_request",
                "AADSTS700025",
                "Client assertion type is not supported.",
            ));
        }
        return verify_assertion(app, token_url, assertion);
    }
    if confidential {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "AADSTS7000218",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    Ok(())
}

fn bad_assertion(why: &str) -> OAuthError {
    OAuthError::new(
        401,
        "invalid_client",
        "AADSTS700027",
        &format!("Client assertion failed signature validation. {why}"),
    )
}

/// An RS256 JWT: `iss` = `sub` = client id, `aud` = the token URL, a
/// current `exp`, a `jti`, and the registered certificate's thumbprint.
fn verify_assertion(app: &ClientApp, token_url: &str, jwt: &str) -> Result<(), OAuthError> {
    let (Some(cert), Some(public)) = (&app.certificate_pem, &app.public_key_pem) else {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "AADSTS700027",
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        ));
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err(bad_assertion("Malformed JWT."));
    };
    let dec = |p: &str| -> Result<Value, OAuthError> {
        let b = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| bad_assertion("Malformed JWT."))?;
        serde_json::from_slice(&b).map_err(|_| bad_assertion("Malformed JWT."))
    };
    let (header, claims) = (dec(h)?, dec(c)?);
    if header["alg"] != "RS256" {
        return Err(bad_assertion("The algorithm must be RS256."));
    }
    let der = cert_der(cert).ok_or_else(|| bad_assertion("Registered certificate unreadable."))?;
    let s256 = URL_SAFE_NO_PAD.encode(Sha256::digest(&der));
    let s1 = URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der));
    let thumb_ok = header["x5t#S256"].as_str() == Some(s256.as_str())
        || header["x5t"].as_str() == Some(s1.as_str());
    if !thumb_ok {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "AADSTS700027",
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        ));
    }
    let key = RsaPublicKey::from_public_key_pem(public.trim())
        .map_err(|_| bad_assertion("Registered key unreadable."))?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad_assertion("Malformed signature."))?;
    let sig =
        Signature::try_from(sig.as_slice()).map_err(|_| bad_assertion("Malformed signature."))?;
    VerifyingKey::<Sha256>::new(key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| bad_assertion("Signature invalid."))?;
    if claims["iss"] != app.client_id.as_str() || claims["sub"] != app.client_id.as_str() {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "AADSTS700023",
            "Client assertion audience claim does not match Realm issuer.",
        ));
    }
    if claims["aud"] != token_url {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "AADSTS700021",
            &format!(
                "Client assertion application identifier doesn't match 'client_id' parameter. The audience must be {token_url}."
            ),
        ));
    }
    let now = now_secs();
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if exp <= now || exp > now + 3600 * 24 || claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "AADSTS700024",
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}

/// The DER bytes of a PEM certificate.
fn cert_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body.trim()).ok()
}
