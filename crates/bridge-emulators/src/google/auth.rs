//! OAuth 2.0 (sinks-api.md A.13): the token endpoint with the refresh-token,
//! JWT-bearer (service account, RS256) and authorization-code (installed
//! app, PKCE S256) grants, the consent endpoint that auto-approves, issued
//! access tokens with an expiry, and the scope rules of the Calendar API.
//!
//! Token endpoint errors use the OAuth shape `{"error","error_description"}`
//! with Google's texts (`invalid_grant` "Token has been expired or
//! revoked.", "Invalid JWT Signature.", …).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::error::ErrorReason;
use super::util::{now, rand_urlsafe};
use super::{Inner, lock};

/// The JWT-bearer grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's token endpoint; accepted as JWT `aud` besides the emulator's own.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The full Calendar scope.
pub const SCOPE_CALENDAR: &str = "https://www.googleapis.com/auth/calendar";

/// A service account whose JWTs the token endpoint accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// `iss` of its JWTs (`…@….iam.gserviceaccount.com`).
    pub client_email: String,
    /// `kid` of its JWTs (checked when present).
    pub private_key_id: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// Domain-wide delegation: may impersonate users with `sub`.
    pub domain_wide_delegation: bool,
}

/// Email of the built-in test service account.
pub const TEST_SERVICE_ACCOUNT_EMAIL: &str =
    "bridge-test@feishu-bridge-test.iam.gserviceaccount.com";
/// Key id of the built-in test service account.
pub const TEST_SERVICE_ACCOUNT_KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
/// PKCS#8 private key of the built-in test service account. **Publicly
/// known test material**: it only opens this emulator.
pub const TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM: &str =
    include_str!("keys/test_service_account.pem");
/// SPKI public key matching [`TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM`].
pub const TEST_SERVICE_ACCOUNT_PUBLIC_KEY_PEM: &str =
    include_str!("keys/test_service_account.pub.pem");

impl ServiceAccount {
    /// The built-in test account (key pair shipped with the emulator),
    /// with domain-wide delegation.
    pub fn test_account() -> Self {
        Self {
            client_email: TEST_SERVICE_ACCOUNT_EMAIL.into(),
            private_key_id: TEST_SERVICE_ACCOUNT_KEY_ID.into(),
            public_key_pem: TEST_SERVICE_ACCOUNT_PUBLIC_KEY_PEM.into(),
            domain_wide_delegation: true,
        }
    }
}

/// A service account with its parsed key.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedAccount {
    pub(crate) account: ServiceAccount,
    key: VerifyingKey<Sha256>,
}

/// Parses a service account's public key.
pub(crate) fn load_account(account: ServiceAccount) -> Result<VerifiedAccount, String> {
    let key = RsaPublicKey::from_public_key_pem(account.public_key_pem.trim()).map_err(|e| {
        format!(
            "service account {}: bad public key: {e}",
            account.client_email
        )
    })?;
    Ok(VerifiedAccount {
        account,
        key: VerifyingKey::new(key),
    })
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) email: String,
    pub(crate) scopes: Vec<String>,
}

/// What an endpoint needs from the token's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    CalendarsRead,
    CalendarsWrite,
    EventsRead,
    EventsWrite,
}

/// Does any of `scopes` allow `need`? (discovery-document scope lists)
pub(crate) fn allows(scopes: &[String], need: Need) -> bool {
    scopes.iter().any(|s| {
        let Some(short) = s.strip_prefix("https://www.googleapis.com/auth/") else {
            return false;
        };
        match short {
            "calendar" | "calendar.app.created" => true,
            "calendar.readonly" => matches!(need, Need::CalendarsRead | Need::EventsRead),
            "calendar.events" | "calendar.events.owned" => {
                matches!(need, Need::EventsRead | Need::EventsWrite)
            }
            "calendar.events.readonly" | "calendar.events.owned.readonly" => {
                need == Need::EventsRead
            }
            "calendar.calendars" => matches!(need, Need::CalendarsRead | Need::CalendarsWrite),
            "calendar.calendars.readonly" => need == Need::CalendarsRead,
            _ => false,
        }
    })
}

#[derive(Debug, Clone)]
struct AccessToken {
    email: String,
    scopes: Vec<String>,
    expires: Instant,
    refresh: Option<String>,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    email: String,
    scopes: Vec<String>,
    client_id: String,
    revoked: bool,
}

/// Why a presented access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    Missing,
    Invalid,
}

/// An authorization code waiting for its token request.
#[derive(Debug, Clone)]
struct AuthCode {
    email: String,
    scopes: Vec<String>,
    client_id: String,
    redirect_uri: String,
    /// S256 `code_challenge`.
    challenge: String,
    /// `access_type=offline`: the exchange also yields a refresh token.
    offline: bool,
    expires: Instant,
}

/// How long an authorization code stays valid (Google: minutes).
const CODE_TTL: Duration = Duration::from_secs(600);

/// Issued tokens.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    codes: HashMap<String, AuthCode>,
}

impl TokenStore {
    pub(crate) fn issue_access(
        &mut self,
        email: &str,
        scopes: &[String],
        ttl: Duration,
        refresh: Option<&str>,
    ) -> String {
        let token = format!("ya29.{}", rand_urlsafe(120));
        self.access.insert(
            token.clone(),
            AccessToken {
                email: email.to_owned(),
                scopes: scopes.to_vec(),
                expires: Instant::now() + ttl,
                refresh: refresh.map(str::to_owned),
            },
        );
        token
    }

    pub(crate) fn issue_refresh(
        &mut self,
        email: &str,
        scopes: &[String],
        client_id: &str,
    ) -> String {
        let token = format!("1//0{}", rand_urlsafe(100));
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                email: email.to_owned(),
                scopes: scopes.to_vec(),
                client_id: client_id.to_owned(),
                revoked: false,
            },
        );
        token
    }

    /// The caller of a live access token.
    pub(crate) fn check(&self, token: Option<&str>) -> Result<Caller, TokenRejection> {
        let token = token.ok_or(TokenRejection::Missing)?;
        let t = self.access.get(token).ok_or(TokenRejection::Invalid)?;
        if Instant::now() >= t.expires {
            return Err(TokenRejection::Invalid);
        }
        Ok(Caller {
            email: t.email.clone(),
            scopes: t.scopes.clone(),
        })
    }

    pub(crate) fn expire_access(&mut self, token: &str) {
        if let Some(t) = self.access.get_mut(token) {
            t.expires = Instant::now();
        }
    }

    pub(crate) fn expire_all_access(&mut self) {
        let now = Instant::now();
        for t in self.access.values_mut() {
            t.expires = t.expires.min(now);
        }
    }

    /// Revokes refresh tokens (of one user, or all) and the access tokens
    /// minted from them. Returns how many were revoked.
    pub(crate) fn revoke_refresh(&mut self, email: Option<&str>) -> usize {
        let mut revoked = Vec::new();
        for (tok, r) in &mut self.refresh {
            if !r.revoked && email.is_none_or(|e| e == r.email) {
                r.revoked = true;
                revoked.push(tok.clone());
            }
        }
        let now = Instant::now();
        for a in self.access.values_mut() {
            if a.refresh.as_ref().is_some_and(|r| revoked.contains(r)) {
                a.expires = a.expires.min(now);
            }
        }
        revoked.len()
    }

    /// Revokes one refresh token; false when unknown.
    pub(crate) fn revoke_one(&mut self, token: &str) -> bool {
        match self.refresh.get_mut(token) {
            Some(r) => {
                r.revoked = true;
                let now = Instant::now();
                for a in self.access.values_mut() {
                    if a.refresh.as_deref() == Some(token) {
                        a.expires = a.expires.min(now);
                    }
                }
                true
            }
            None => false,
        }
    }
}

/// An OAuth error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            error,
            description: description.into(),
        }
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json; charset=utf-8"),
                (
                    header::CACHE_CONTROL,
                    "no-cache, no-store, max-age=0, must-revalidate",
                ),
            ],
            serde_json::to_string_pretty(&json!({
                "error": self.error,
                "error_description": self.description,
            }))
            .unwrap_or_default(),
        )
            .into_response();
        resp.extensions_mut()
            .insert(ErrorReason(self.error.to_owned()));
        resp
    }
}

/// Form or JSON body fields.
fn fields(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    }
}

/// Client credentials from the body or HTTP Basic.
fn client_credentials(
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        && let Some((id, secret)) = basic.split_once(':')
    {
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return (Some(dec(id)), Some(dec(secret)));
    }
    (f.get("client_id").cloned(), f.get("client_secret").cloned())
}

fn scopes_of(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn token_answer(
    access: &str,
    ttl: Duration,
    scopes: Option<&[String]>,
    refresh: Option<&str>,
) -> Response {
    let mut body = json!({
        "access_token": access,
        "expires_in": ttl.as_secs(),
        "token_type": "Bearer",
    });
    if let Some(s) = scopes {
        body["scope"] = json!(s.join(" "));
    }
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (
                header::CACHE_CONTROL,
                "no-cache, no-store, max-age=0, must-revalidate",
            ),
        ],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

/// `POST /token`.
pub(crate) async fn token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match grant(&inner, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn grant(inner: &Arc<Inner>, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let f = fields(headers, body);
    let grant_type = f.get("grant_type").ok_or_else(|| {
        OAuthError::new(
            400,
            "invalid_request",
            "Missing required parameter: grant_type",
        )
    })?;
    match grant_type.as_str() {
        "refresh_token" => refresh_grant(inner, headers, &f),
        "authorization_code" => code_grant(inner, headers, &f),
        JWT_BEARER => jwt_grant(inner, &f),
        other => Err(OAuthError::new(
            400,
            "unsupported_grant_type",
            format!("Invalid grant_type: {other}"),
        )),
    }
}

/// The configured OAuth client, authenticated (body or HTTP Basic).
fn check_client(
    cfg: &super::GoogleConfig,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<String, OAuthError> {
    let (client_id, client_secret) = client_credentials(headers, f);
    let client_id = client_id.ok_or_else(|| {
        OAuthError::new(
            400,
            "invalid_request",
            "Could not determine client ID from request.",
        )
    })?;
    if client_id != cfg.client_id {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "The OAuth client was not found.",
        ));
    }
    if client_secret.as_deref() != Some(cfg.client_secret.as_str()) {
        return Err(OAuthError::new(401, "invalid_client", "Unauthorized"));
    }
    Ok(client_id)
}

fn refresh_grant(
    inner: &Arc<Inner>,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let cfg = inner.config();
    let client_id = check_client(&cfg, headers, f)?;
    let token = f.get("refresh_token").ok_or_else(|| {
        OAuthError::new(
            400,
            "invalid_request",
            "Missing required parameter: refresh_token",
        )
    })?;
    let mut auth = lock(&inner.auth);
    let r = auth
        .refresh
        .get(token)
        .filter(|r| !r.revoked && r.client_id == client_id)
        .cloned()
        .ok_or_else(|| OAuthError::invalid_grant("Token has been expired or revoked."))?;
    let access = auth.issue_access(&r.email, &r.scopes, cfg.access_token_ttl, Some(token));
    Ok(token_answer(
        &access,
        cfg.access_token_ttl,
        Some(&r.scopes),
        None,
    ))
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 S256).
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The `authorization_code` grant: single-use code, same `redirect_uri`,
/// PKCE S256 verifier.
fn code_grant(
    inner: &Arc<Inner>,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let cfg = inner.config();
    let client_id = check_client(&cfg, headers, f)?;
    let code = f.get("code").ok_or_else(|| {
        OAuthError::new(400, "invalid_request", "Missing required parameter: code")
    })?;
    let mut auth = lock(&inner.auth);
    // Single use: the code is gone whatever happens next.
    let c = auth
        .codes
        .remove(code)
        .ok_or_else(|| OAuthError::invalid_grant("Malformed auth code."))?;
    if Instant::now() >= c.expires || c.client_id != client_id {
        return Err(OAuthError::invalid_grant("Bad Request"));
    }
    if f.get("redirect_uri") != Some(&c.redirect_uri) {
        return Err(OAuthError::invalid_grant("Bad Request"));
    }
    let verifier = f
        .get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_grant("Missing code verifier."))?;
    if s256(verifier) != c.challenge {
        return Err(OAuthError::invalid_grant("Invalid code verifier."));
    }
    let refresh = c
        .offline
        .then(|| auth.issue_refresh(&c.email, &c.scopes, &client_id));
    let access = auth.issue_access(
        &c.email,
        &c.scopes,
        cfg.access_token_ttl,
        refresh.as_deref(),
    );
    Ok(token_answer(
        &access,
        cfg.access_token_ttl,
        Some(&c.scopes),
        refresh.as_deref(),
    ))
}

/// An error of the consent endpoint that Google shows as a page (no
/// redirect: the client or the redirect URI cannot be trusted).
fn consent_page_error(status: u16, error: &'static str, description: &str) -> Response {
    OAuthError::new(status, error, description).into_response()
}

/// Loopback redirect URIs only (installed apps): `http://127.0.0.1:<port>/…`,
/// `http://[::1]…` or `http://localhost…`.
fn loopback_redirect(uri: &str) -> Option<url::Url> {
    let u = url::Url::parse(uri).ok()?;
    let loopback = match u.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    (u.scheme() == "http" && loopback && u.fragment().is_none()).then_some(u)
}

fn redirect_to(mut target: url::Url, pairs: &[(&str, &str)]) -> Response {
    {
        let mut q = target.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, target.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// `GET /o/oauth2/v2/auth`: the consent screen, approved at once for the
/// user named by `login_hint`, else [`super::GoogleConfig::consent_user`];
/// answers 302 to `redirect_uri?code=…&scope=…&state=…` (or
/// `?error=…&state=…`).
pub(crate) async fn authorize(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
) -> Response {
    let cfg = inner.config();
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    match get("client_id") {
        None => {
            return consent_page_error(
                400,
                "invalid_request",
                "Missing required parameter: client_id",
            );
        }
        Some(id) if id != cfg.client_id => {
            return consent_page_error(401, "invalid_client", "The OAuth client was not found.");
        }
        Some(_) => {}
    }
    let Some(redirect_uri) = get("redirect_uri") else {
        return consent_page_error(
            400,
            "invalid_request",
            "Missing required parameter: redirect_uri",
        );
    };
    let Some(target) = loopback_redirect(redirect_uri) else {
        return consent_page_error(
            400,
            "redirect_uri_mismatch",
            "redirect_uri must be a loopback address (http://127.0.0.1:<port>/… or \
             http://localhost…) for installed apps.",
        );
    };
    let state = get("state");
    let fail = |error: &str| {
        let mut pairs = vec![("error", error)];
        if let Some(s) = state {
            pairs.push(("state", s));
        }
        redirect_to(target.clone(), &pairs)
    };
    if get("response_type") != Some("code") {
        return fail("unsupported_response_type");
    }
    let Some(scope) = get("scope") else {
        return fail("invalid_request");
    };
    let (Some(challenge), Some("S256")) = (get("code_challenge"), get("code_challenge_method"))
    else {
        return fail("invalid_request");
    };
    let known = |email: &str| lock(&inner.store).users.contains_key(email);
    let email = match get("login_hint").filter(|e| known(e)) {
        Some(e) => e.to_owned(),
        None => match cfg.consent_user.as_deref().filter(|e| known(e)) {
            Some(e) => e.to_owned(),
            None => return fail("access_denied"),
        },
    };
    let code = format!("4/0{}", rand_urlsafe(70));
    lock(&inner.auth).codes.insert(
        code.clone(),
        AuthCode {
            email,
            scopes: scopes_of(scope),
            client_id: cfg.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            offline: get("access_type") == Some("offline"),
            expires: Instant::now() + CODE_TTL,
        },
    );
    let mut pairs = vec![("code", code.as_str()), ("scope", scope)];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    redirect_to(target, &pairs)
}

fn b64_json(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?).ok()
}

fn jwt_grant(inner: &Arc<Inner>, f: &HashMap<String, String>) -> Result<Response, OAuthError> {
    let cfg = inner.config();
    let assertion = f.get("assertion").ok_or_else(|| {
        OAuthError::new(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        )
    })?;
    let bad_sig = || OAuthError::invalid_grant("Invalid JWT Signature.");
    let mut parts = assertion.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OAuthError::invalid_grant("Invalid JWT: Malformed."));
    };
    let header = b64_json(h).ok_or_else(|| OAuthError::invalid_grant("Invalid JWT: Malformed."))?;
    let claims = b64_json(p).ok_or_else(|| OAuthError::invalid_grant("Invalid JWT: Malformed."))?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(bad_sig());
    }
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let account = lock(&inner.accounts)
        .get(iss)
        .cloned()
        .ok_or_else(|| OAuthError::invalid_grant("Invalid grant: account not found"))?;
    if let Some(kid) = header.get("kid").and_then(Value::as_str)
        && kid != account.account.private_key_id
    {
        return Err(bad_sig());
    }
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad_sig())?;
    let signature = Signature::try_from(sig_bytes.as_slice()).map_err(|_| bad_sig())?;
    let signed = &assertion[..h.len() + 1 + p.len()];
    account
        .key
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| bad_sig())?;

    let own = format!("{}/token", inner.base_url());
    let aud = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if aud != own && aud != GOOGLE_TOKEN_URL {
        return Err(OAuthError::invalid_grant(
            "Invalid JWT: Failed audience check. The expected audience is the token endpoint.",
        ));
    }
    let iat = claims.get("iat").and_then(Value::as_i64);
    let exp = claims.get("exp").and_then(Value::as_i64);
    let now = now().timestamp();
    let timely = match (iat, exp) {
        (Some(iat), Some(exp)) => exp > iat && exp - iat <= 3600 && exp > now && iat <= now + 300,
        _ => false,
    };
    if !timely {
        return Err(OAuthError::invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let scopes = scopes_of(
        claims
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    if scopes.is_empty() {
        return Err(OAuthError::new(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| *s != iss);
    let email = match subject {
        None => iss.to_owned(),
        Some(sub) => {
            if !account.account.domain_wide_delegation {
                return Err(OAuthError::new(
                    401,
                    "unauthorized_client",
                    "Client is unauthorized to retrieve access tokens using this method, or \
                     client not authorized for any of the scopes requested.",
                ));
            }
            if !lock(&inner.store).users.contains_key(sub) {
                return Err(OAuthError::invalid_grant("Invalid email or User ID"));
            }
            sub.to_owned()
        }
    };
    let access = lock(&inner.auth).issue_access(&email, &scopes, cfg.access_token_ttl, None);
    Ok(token_answer(&access, cfg.access_token_ttl, None, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_rules() {
        let s = |x: &str| vec![format!("https://www.googleapis.com/auth/{x}")];
        assert!(allows(&s("calendar"), Need::CalendarsWrite));
        assert!(allows(&s("calendar.events"), Need::EventsWrite));
        assert!(!allows(&s("calendar.events"), Need::CalendarsRead));
        assert!(allows(&s("calendar.readonly"), Need::EventsRead));
        assert!(!allows(&s("calendar.readonly"), Need::EventsWrite));
        assert!(!allows(&["email".to_owned()], Need::EventsRead));
    }

    #[test]
    fn test_key_parses() {
        load_account(ServiceAccount::test_account()).unwrap();
        let mut bad = ServiceAccount::test_account();
        bad.public_key_pem = "nope".into();
        assert!(load_account(bad).is_err());
    }

    #[test]
    fn revocation_kills_minted_access_tokens() {
        let mut t = TokenStore::default();
        let scopes = vec![SCOPE_CALENDAR.to_owned()];
        let r = t.issue_refresh("a@x.test", &scopes, "c");
        let a = t.issue_access("a@x.test", &scopes, Duration::from_secs(60), Some(&r));
        let other = t.issue_access("a@x.test", &scopes, Duration::from_secs(60), None);
        assert_eq!(t.check(Some(&a)).unwrap().email, "a@x.test");
        assert_eq!(t.revoke_refresh(Some("a@x.test")), 1);
        assert_eq!(t.check(Some(&a)), Err(TokenRejection::Invalid));
        assert!(t.check(Some(&other)).is_ok());
        assert_eq!(t.check(None), Err(TokenRejection::Missing));
    }
}
