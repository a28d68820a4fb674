//! Tokens: `auth/v3` tenant/app tokens, the OAuth v2 authorize page and
//! token endpoint (authorization code + PKCE, refresh-token rotation), and the
//! lookup every OpenAPI call goes through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::http::{ApiError, FeishuCode, bearer, ok_data, raw_json};
use super::util::{rand_alnum, rand_urlsafe};
use super::{Inner, lock};

/// Tenant/app tokens with at least this much left are handed out again.
const REUSE_THRESHOLD: Duration = Duration::from_secs(30 * 60);
/// After a refresh the previous access token keeps working this long.
const REFRESH_GRACE: Duration = Duration::from_secs(60);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    Tenant,
    User { open_id: String },
}

/// Does a user token's scope cover the calendar APIs? An empty scope (no
/// `scope` on the authorize URL) stands for the app's enabled scopes.
fn covers_calendar(scope: &str) -> bool {
    scope.trim().is_empty() || scope.split_whitespace().any(|s| s.starts_with("calendar:"))
}

#[derive(Debug, Clone)]
struct UserToken {
    open_id: String,
    scope: String,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshState {
    Active,
    Used,
    Revoked,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    open_id: String,
    scope: String,
    client_id: String,
    expires: Instant,
    state: RefreshState,
    access_token: String,
}

#[derive(Debug, Clone)]
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    scope: String,
    challenge: Option<(String, String)>,
    open_id: String,
    expires: Instant,
    used: bool,
}

/// All issued tokens.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    tenant: HashMap<String, Instant>,
    app: HashMap<String, Instant>,
    current_tenant: Option<String>,
    current_app: Option<String>,
    access: HashMap<String, UserToken>,
    refresh: HashMap<String, RefreshToken>,
    codes: HashMap<String, AuthCode>,
}

fn remaining(exp: Instant, now: Instant) -> Duration {
    exp.saturating_duration_since(now)
}

fn user_token() -> String {
    format!(
        "eyJhbGciOiJFUzI1NiIs{}.{}.{}",
        rand_urlsafe(24),
        rand_urlsafe(96),
        rand_urlsafe(43)
    )
}

impl TokenStore {
    fn issue(
        map: &mut HashMap<String, Instant>,
        current: &mut Option<String>,
        prefix: &str,
        ttl: Duration,
        now: Instant,
    ) -> (String, u64) {
        if let Some(cur) = current.as_ref()
            && let Some(exp) = map.get(cur)
            && remaining(*exp, now) >= REUSE_THRESHOLD
        {
            return (cur.clone(), remaining(*exp, now).as_secs());
        }
        let token = format!("{prefix}{}", rand_alnum(41).to_uppercase());
        map.insert(token.clone(), now + ttl);
        *current = Some(token.clone());
        (token, ttl.as_secs())
    }

    fn tenant_token(&mut self, ttl: Duration, now: Instant) -> (String, u64) {
        Self::issue(&mut self.tenant, &mut self.current_tenant, "t-g", ttl, now)
    }

    fn app_token(&mut self, ttl: Duration, now: Instant) -> (String, u64) {
        Self::issue(&mut self.app, &mut self.current_app, "a-g", ttl, now)
    }

    /// Scope of a user access token.
    fn scope_of(&self, token: &str) -> Option<&str> {
        self.access.get(token).map(|t| t.scope.as_str())
    }

    /// Resolves a bearer token to an identity or the documented error.
    pub(crate) fn lookup(&self, token: &str, now: Instant) -> Result<Identity, ApiError> {
        let invalid_tenant = || {
            ApiError::new(
                400,
                99991663,
                "Invalid access token for authorization. Please make a request with token attached.",
            )
        };
        if token.starts_with("t-") {
            return match self.tenant.get(token) {
                Some(exp) if *exp > now => Ok(Identity::Tenant),
                _ => Err(invalid_tenant()),
            };
        }
        if token.starts_with("a-") {
            let mut e = invalid_tenant();
            e.msg.push_str(" (app access token not support)");
            return Err(e);
        }
        if token.starts_with("eyJ") || token.starts_with("u-") {
            return match self.access.get(token) {
                Some(t) if t.expires > now => Ok(Identity::User {
                    open_id: t.open_id.clone(),
                }),
                Some(_) => Err(ApiError::new(400, 99991677, "token expire")),
                None => Err(ApiError::new(
                    400,
                    99991668,
                    "Invalid access token for authorization. Please make a request with token attached.",
                )),
            };
        }
        Err(ApiError::new(
            400,
            99991671,
            "Invalid token: must start with t-/u-",
        ))
    }

    /// Expires one presented token (fault injection).
    pub(crate) fn expire_token(&mut self, token: &str) {
        let past = Instant::now();
        if let Some(exp) = self.tenant.get_mut(token) {
            *exp = past;
        }
        if let Some(exp) = self.app.get_mut(token) {
            *exp = past;
        }
        if let Some(t) = self.access.get_mut(token) {
            t.expires = past;
        }
    }

    pub(crate) fn expire_tenant_tokens(&mut self) {
        let past = Instant::now();
        self.tenant.values_mut().for_each(|e| *e = past);
        self.app.values_mut().for_each(|e| *e = past);
    }

    pub(crate) fn expire_user_tokens(&mut self) {
        let past = Instant::now();
        self.access.values_mut().for_each(|t| t.expires = past);
    }

    pub(crate) fn revoke_refresh_tokens(&mut self) {
        for r in self.refresh.values_mut() {
            if r.state == RefreshState::Active {
                r.state = RefreshState::Revoked;
            }
        }
    }

    /// Issues a user token pair directly (test setup without the browser dance).
    pub(crate) fn issue_user(
        &mut self,
        open_id: &str,
        scope: &str,
        client_id: &str,
        access_ttl: Duration,
        refresh_ttl: Duration,
        now: Instant,
    ) -> (String, Option<String>) {
        let access = user_token();
        self.access.insert(
            access.clone(),
            UserToken {
                open_id: open_id.to_owned(),
                scope: scope.to_owned(),
                expires: now + access_ttl,
            },
        );
        let refresh = scope
            .split_whitespace()
            .any(|s| s == "offline_access")
            .then(|| {
                let r = user_token();
                self.refresh.insert(
                    r.clone(),
                    RefreshToken {
                        open_id: open_id.to_owned(),
                        scope: scope.to_owned(),
                        client_id: client_id.to_owned(),
                        expires: now + refresh_ttl,
                        state: RefreshState::Active,
                        access_token: access.clone(),
                    },
                );
                r
            });
        (access, refresh)
    }
}

/// Resolves the caller of an OpenAPI request (any scope).
pub(crate) fn identify_any(inner: &Inner, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            400,
            99991661,
            "Missing access token for authorization. Please make a request with token attached.",
        )
    })?;
    lock(&inner.auth).lookup(token, Instant::now())
}

/// Resolves the caller of a calendar API; a user token must carry a
/// `calendar:` scope (99991679 otherwise).
pub(crate) fn identify(inner: &Inner, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let ident = identify_any(inner, headers)?;
    if matches!(ident, Identity::User { .. }) {
        let auth = lock(&inner.auth);
        let scope = bearer(headers)
            .and_then(|t| auth.scope_of(t))
            .unwrap_or_default();
        if !covers_calendar(scope) {
            return Err(ApiError::new(
                400,
                99991679,
                "Unauthorized. You do not have permission to perform the requested operation on the resource. Please request user re-authorization and try again.",
            ));
        }
    }
    Ok(ident)
}

/// Endpoints that only take a user_access_token answer a tenant token with
/// 99991663 ("API doesn't accept tenant token", §2.4).
pub(crate) fn require_user(ident: Identity) -> Result<String, ApiError> {
    match ident {
        Identity::User { open_id } => Ok(open_id),
        Identity::Tenant => Err(ApiError::new(
            400,
            99991663,
            "Invalid access token for authorization. Please make a request with token attached. (tenant access token not support)",
        )),
    }
}

// ----- auth/v3 ------------------------------------------------------------------

fn credentials_error(inner: &Inner, body: &Bytes) -> Option<Response> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let (Some(app_id), Some(secret)) = (field("app_id"), field("app_secret")) else {
        return Some(raw_json(
            StatusCode::BAD_REQUEST,
            10003,
            &json!({"code": 10003, "msg": "invalid param"}),
        ));
    };
    let cfg = inner.config();
    if app_id != cfg.app_id || secret != cfg.app_secret {
        return Some(raw_json(
            StatusCode::BAD_REQUEST,
            99991543,
            &json!({"code": 99991543, "msg": "app_id or app_secret is invalid"}),
        ));
    }
    None
}

/// `POST /open-apis/auth/v3/tenant_access_token/internal`.
pub(crate) async fn tenant_access_token(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if let Some(err) = credentials_error(&inner, &body) {
        return err;
    }
    let ttl = inner.config().tenant_token_ttl;
    let (token, expire) = lock(&inner.auth).tenant_token(ttl, Instant::now());
    raw_json(
        StatusCode::OK,
        0,
        &json!({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire}),
    )
}

/// `POST /open-apis/auth/v3/app_access_token/internal`.
pub(crate) async fn app_access_token(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if let Some(err) = credentials_error(&inner, &body) {
        return err;
    }
    let ttl = inner.config().tenant_token_ttl;
    let now = Instant::now();
    let mut auth = lock(&inner.auth);
    let (app, expire) = auth.app_token(ttl, now);
    let (tenant, _) = auth.tenant_token(ttl, now);
    raw_json(
        StatusCode::OK,
        0,
        &json!({"code": 0, "msg": "ok", "app_access_token": app, "expire": expire,
                "tenant_access_token": tenant}),
    )
}

// ----- OAuth v2 -----------------------------------------------------------------

fn page_error(code: i64, msg: &str) -> Response {
    raw_json(
        StatusCode::BAD_REQUEST,
        code,
        &json!({"code": code, "error": "invalid_request", "error_description": msg}),
    )
}

fn with_params(base: &url::Url, params: &[(&str, &str)]) -> String {
    let mut u = base.clone();
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

/// `GET /open-apis/authen/v1/authorize`: "logs in" as the auto-login user and
/// redirects to `redirect_uri?code=…&state=…`.
pub(crate) async fn authorize(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(client_id), Some(response_type), Some(redirect_uri)) =
        (get("client_id"), get("response_type"), get("redirect_uri"))
    else {
        return page_error(
            20001,
            "client_id, response_type and redirect_uri are required",
        );
    };
    let cfg = inner.config();
    if client_id != cfg.app_id {
        return page_error(20048, "app does not exist");
    }
    let Ok(target) = url::Url::parse(redirect_uri) else {
        return page_error(20063, "redirect_uri is not an absolute URL");
    };
    if !matches!(target.scheme(), "http" | "https") {
        return page_error(20063, "redirect_uri must be http(s)");
    }
    let state = get("state").unwrap_or_default();
    if response_type != "code" {
        return redirect(&with_params(
            &target,
            &[("error", "unsupported_response_type"), ("state", state)],
        ));
    }
    let scope = get("scope").unwrap_or_default();
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() > 50 {
        return redirect(&with_params(
            &target,
            &[("error", "invalid_scope"), ("state", state)],
        ));
    }
    let challenge = match get("code_challenge") {
        None => None,
        Some(c) => {
            let method = get("code_challenge_method").unwrap_or("plain");
            if !matches!(method, "S256" | "plain") {
                return page_error(20063, "code_challenge_method must be S256 or plain");
            }
            Some((c.to_owned(), method.to_owned()))
        }
    };
    let user = {
        let store = lock(&inner.store);
        let candidate = store
            .auto_login
            .clone()
            .or_else(|| store.users.keys().next().cloned());
        candidate.filter(|u| store.users.contains_key(u))
    };
    let Some(open_id) = user else {
        return redirect(&with_params(
            &target,
            &[("error", "access_denied"), ("state", state)],
        ));
    };
    let code = rand_urlsafe(64);
    lock(&inner.auth).codes.insert(
        code.clone(),
        AuthCode {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scopes.join(" "),
            challenge,
            open_id,
            expires: Instant::now() + cfg.auth_code_ttl,
            used: false,
        },
    );
    let mut params = vec![("code", code.as_str())];
    if !state.is_empty() {
        params.push(("state", state));
    }
    redirect(&with_params(&target, &params))
}

struct OAuthError {
    status: StatusCode,
    code: i64,
    error: &'static str,
    description: String,
}

fn oauth_err(code: i64, description: impl Into<String>) -> OAuthError {
    let (status, error) = match code {
        20001 | 20063 | 20070 => (StatusCode::BAD_REQUEST, "invalid_request"),
        20002 | 20048 => (StatusCode::BAD_REQUEST, "invalid_client"),
        20036 => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        20067 | 20068 => (StatusCode::BAD_REQUEST, "invalid_scope"),
        20050 => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        20072 => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        _ => (StatusCode::BAD_REQUEST, "invalid_grant"),
    };
    OAuthError {
        status,
        code,
        error,
        description: description.into(),
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = raw_json(
            self.status,
            self.code,
            &json!({"code": self.code, "error": self.error, "error_description": self.description}),
        );
        resp.extensions_mut().insert(FeishuCode(self.code));
        resp
    }
}

/// Reads a JSON or form body into string fields.
fn read_fields(headers: &HeaderMap, body: &Bytes) -> Result<HashMap<String, String>, OAuthError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let from_json = |body: &Bytes| -> Option<HashMap<String, String>> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        Some(
            obj.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    Value::Null => None,
                    other => Some((k.clone(), other.to_string())),
                })
                .collect(),
        )
    };
    let from_form = |body: &Bytes| -> HashMap<String, String> {
        url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    if ctype.starts_with("application/x-www-form-urlencoded") {
        return Ok(from_form(body));
    }
    if let Some(m) = from_json(body) {
        return Ok(m);
    }
    if ctype.starts_with("application/json") {
        return Err(oauth_err(20063, "malformed JSON body"));
    }
    Ok(from_form(body))
}

fn pkce_ok(challenge: &(String, String), verifier: Option<&str>) -> bool {
    let Some(verifier) = verifier else {
        return false;
    };
    match challenge.1.as_str() {
        "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge.0,
        _ => verifier == challenge.0,
    }
}

/// Narrows the granted scope to the requested one (20067 duplicates, 20068
/// not granted).
fn narrow_scope(granted: &str, requested: Option<&str>) -> Result<String, OAuthError> {
    let Some(req) = requested.filter(|s| !s.trim().is_empty()) else {
        return Ok(granted.to_owned());
    };
    let wanted: Vec<&str> = req.split_whitespace().collect();
    let mut seen = std::collections::HashSet::new();
    for s in &wanted {
        if !seen.insert(*s) {
            return Err(oauth_err(20067, format!("duplicate scope {s}")));
        }
        if !granted.split_whitespace().any(|g| g == *s) {
            return Err(oauth_err(20068, format!("scope {s} was not granted")));
        }
    }
    Ok(wanted.join(" "))
}

/// `POST /open-apis/authen/v2/oauth/token` (JSON or form body).
pub(crate) async fn oauth_token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match oauth_token_inner(&inner, &headers, &body) {
        Ok(v) => raw_json(StatusCode::OK, 0, &v),
        Err(e) => e.into_response(),
    }
}

fn oauth_token_inner(
    inner: &Inner,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, OAuthError> {
    let mut f = read_fields(headers, body)?;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some(basic) = basic {
        if f.contains_key("client_secret") {
            return Err(oauth_err(
                20070,
                "client credentials supplied both in Basic auth and in the body",
            ));
        }
        let (id, secret) = basic.split_once(':').unwrap_or((basic.as_str(), ""));
        f.entry("client_id".into()).or_insert_with(|| id.to_owned());
        f.insert("client_secret".into(), secret.to_owned());
    }
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let grant = get("grant_type").ok_or_else(|| oauth_err(20001, "grant_type is required"))?;
    let client_id = get("client_id").ok_or_else(|| oauth_err(20001, "client_id is required"))?;
    let secret =
        get("client_secret").ok_or_else(|| oauth_err(20001, "client_secret is required"))?;
    let cfg = inner.config();
    if !matches!(grant, "authorization_code" | "refresh_token") {
        return Err(oauth_err(20036, format!("unsupported grant_type {grant}")));
    }
    if client_id != cfg.app_id {
        return Err(oauth_err(20048, "app does not exist"));
    }
    if secret != cfg.app_secret {
        return Err(oauth_err(20002, "client secret is invalid"));
    }
    let now = Instant::now();
    let mut auth = lock(&inner.auth);
    let (open_id, scope) = if grant == "authorization_code" {
        let code = get("code").ok_or_else(|| oauth_err(20001, "code is required"))?;
        let rec = auth
            .codes
            .get(code)
            .cloned()
            .ok_or_else(|| oauth_err(20003, "authorization code not found"))?;
        if rec.used {
            return Err(oauth_err(20065, "authorization code has been used"));
        }
        if rec.expires <= now {
            return Err(oauth_err(20004, "authorization code expired"));
        }
        if rec.client_id != client_id {
            return Err(oauth_err(20024, "code does not belong to this client_id"));
        }
        if let Some(uri) = get("redirect_uri")
            && uri != rec.redirect_uri
        {
            return Err(oauth_err(
                20071,
                "redirect_uri does not match the authorize request",
            ));
        }
        if let Some(ch) = &rec.challenge
            && !pkce_ok(ch, get("code_verifier"))
        {
            return Err(oauth_err(20049, "PKCE verification failed"));
        }
        let scope = narrow_scope(&rec.scope, get("scope"))?;
        if let Some(c) = auth.codes.get_mut(code) {
            c.used = true;
        }
        (rec.open_id, scope)
    } else {
        let token =
            get("refresh_token").ok_or_else(|| oauth_err(20001, "refresh_token is required"))?;
        let rec = auth
            .refresh
            .get(token)
            .cloned()
            .ok_or_else(|| oauth_err(20026, "refresh token is invalid"))?;
        match rec.state {
            RefreshState::Revoked => {
                return Err(oauth_err(20064, "refresh token has been revoked"));
            }
            RefreshState::Used => return Err(oauth_err(20073, "refresh token has been used")),
            RefreshState::Active => {}
        }
        if rec.expires <= now {
            return Err(oauth_err(20037, "refresh token expired"));
        }
        if rec.client_id != client_id {
            return Err(oauth_err(
                20024,
                "refresh token does not belong to this client_id",
            ));
        }
        let scope = narrow_scope(&rec.scope, get("scope"))?;
        if let Some(r) = auth.refresh.get_mut(token) {
            r.state = RefreshState::Used;
        }
        if let Some(old) = auth.access.get_mut(&rec.access_token) {
            old.expires = old.expires.min(now + REFRESH_GRACE);
        }
        (rec.open_id, scope)
    };
    let (access, refresh) = auth.issue_user(
        &open_id,
        &scope,
        client_id,
        cfg.user_token_ttl,
        cfg.refresh_token_ttl,
        now,
    );
    let mut out = json!({
        "code": 0,
        "access_token": access,
        "expires_in": cfg.user_token_ttl.as_secs(),
        "token_type": "Bearer",
        "scope": scope,
    });
    if let Some(r) = refresh {
        out["refresh_token"] = json!(r);
        out["refresh_token_expires_in"] = json!(cfg.refresh_token_ttl.as_secs());
    }
    Ok(out)
}

/// `GET /open-apis/authen/v1/user_info` (user token).
pub(crate) async fn user_info(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let open_id = match identify_any(&inner, &headers).and_then(require_user) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let store = lock(&inner.store);
    let Some(u) = store.users.get(&open_id) else {
        return ApiError::cal(195100).into_response();
    };
    ok_data(json!({
        "name": u.name,
        "en_name": u.name,
        "open_id": u.open_id,
        "union_id": u.union_id,
        "user_id": u.user_id,
        "tenant_key": inner.config().tenant_key,
        "avatar_url": "",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_token_reuse_threshold() {
        let mut s = TokenStore::default();
        let now = Instant::now();
        let (a, e1) = s.tenant_token(Duration::from_secs(7200), now);
        let (b, e2) = s.tenant_token(Duration::from_secs(7200), now + Duration::from_secs(60));
        assert_eq!(a, b);
        assert!(e2 < e1);
        let later = now + Duration::from_secs(7200 - 29 * 60);
        let (c, _) = s.tenant_token(Duration::from_secs(7200), later);
        assert_ne!(a, c);
        assert_eq!(s.lookup(&a, later), Ok(Identity::Tenant));
        assert_eq!(s.lookup(&c, later), Ok(Identity::Tenant));
        assert_eq!(s.lookup("t-nope", later).unwrap_err().code, 99991663);
        assert_eq!(s.lookup("xyz", later).unwrap_err().code, 99991671);
    }

    #[test]
    fn pkce_methods() {
        // RFC 7636 appendix B.
        let ch = (
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
            "S256".to_owned(),
        );
        assert!(pkce_ok(
            &ch,
            Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        ));
        assert!(!pkce_ok(&ch, Some("wrong")));
        assert!(!pkce_ok(&ch, None));
        assert!(pkce_ok(&("abc".into(), "plain".into()), Some("abc")));
    }
}
