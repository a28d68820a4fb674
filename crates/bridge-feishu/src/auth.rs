//! Tokens: the app's tenant_access_token (cached until 3 minutes before it
//! expires) and a user's access / refresh tokens (authorization code with
//! PKCE through a loopback redirect, refresh with single-use rotation).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{FeishuError, REAUTH_CODES, log_id, transport_error};

/// Tokens are refreshed this long before they expire.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(180);

/// The secret type of every credential (shared with the other services).
pub use bridge_http::Secret;

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The cached tenant_access_token.
#[derive(Debug, Default)]
pub(crate) struct TenantToken {
    cached: Mutex<Option<(Secret, Instant)>>,
}

#[derive(Deserialize)]
struct TenantTokenResponse {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    tenant_access_token: Option<String>,
    #[serde(default)]
    expire: Option<u64>,
}

impl TenantToken {
    /// The cached token, or a new one from
    /// `POST /open-apis/auth/v3/tenant_access_token/internal`.
    pub(crate) async fn get(
        &self,
        http: &reqwest::Client,
        base: &str,
        app_id: &str,
        app_secret: &Secret,
    ) -> Result<Secret, FeishuError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let endpoint = "POST /open-apis/auth/v3/tenant_access_token/internal";
        let resp = http
            .post(format!(
                "{base}/open-apis/auth/v3/tenant_access_token/internal"
            ))
            .json(&serde_json::json!({"app_id": app_id, "app_secret": app_secret.expose()}))
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let status = resp.status().as_u16();
        let log_id = log_id(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let parsed: TenantTokenResponse =
            serde_json::from_slice(&body).map_err(|e| FeishuError::Decode {
                endpoint: endpoint.to_owned(),
                status,
                detail: e.to_string(),
                log_id: log_id.clone(),
            })?;
        match (parsed.code, parsed.tenant_access_token) {
            (0, Some(token)) if !token.is_empty() => {
                let ttl = Duration::from_secs(parsed.expire.unwrap_or(7200));
                let until = Instant::now() + ttl.saturating_sub(EXPIRY_MARGIN);
                let token = Secret::new(token);
                *cached = Some((token.clone(), until));
                Ok(token)
            }
            (code, _) => Err(FeishuError::Api {
                endpoint: endpoint.to_owned(),
                code,
                msg: parsed.msg,
                status,
                log_id,
                retry_after: None,
            }),
        }
    }

    /// How long the cached token stays valid (`None` when none is cached).
    pub(crate) async fn expires_in(&self) -> Option<Duration> {
        let cached = self.cached.lock().await;
        cached
            .as_ref()
            .map(|(_, until)| (*until + EXPIRY_MARGIN).saturating_duration_since(Instant::now()))
    }

    /// Forgets the cached token (after 99991663 and friends).
    pub(crate) async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

/// A user's tokens as persisted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTokens {
    pub access_token: Secret,
    /// Unix seconds.
    pub access_expires_at: i64,
    pub refresh_token: Secret,
    /// Unix seconds; 0 when unknown.
    pub refresh_expires_at: i64,
    #[serde(default)]
    pub scope: String,
}

impl fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTokens")
            .field("access_token", &self.access_token)
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token", &self.refresh_token)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Where user tokens live. The store crate implements it; until then
/// [`FileTokenStore`] keeps them in a 0600 file.
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    async fn load(&self) -> Result<Option<UserTokens>, FeishuError>;
    /// Must be durable when it returns: the old refresh token is already dead.
    async fn save(&self, tokens: &UserTokens) -> Result<(), FeishuError>;
}

/// User tokens in a JSON file created with mode 0600, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileTokenStore {
    path: PathBuf,
}

impl FileTokenStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = dir {
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[async_trait]
impl TokenStore for FileTokenStore {
    async fn load(&self) -> Result<Option<UserTokens>, FeishuError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                FeishuError::TokenStore(format!("{} is not a token file: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FeishuError::TokenStore(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        })
        .await
        .map_err(|e| FeishuError::TokenStore(e.to_string()))?
    }

    async fn save(&self, tokens: &UserTokens) -> Result<(), FeishuError> {
        let path = self.path.clone();
        let bytes = serde_json::to_vec_pretty(tokens)
            .map_err(|e| FeishuError::TokenStore(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            write_private(&path, &bytes).map_err(|e| {
                FeishuError::TokenStore(format!("cannot write {}: {e}", path.display()))
            })
        })
        .await
        .map_err(|e| FeishuError::TokenStore(e.to_string()))?
    }
}

/// `POST /open-apis/authen/v2/oauth/token` answer (top-level, OAuth style).
#[derive(Deserialize)]
struct OauthTokenResponse {
    #[serde(default)]
    code: i64,
    access_token: Option<String>,
    expires_in: Option<i64>,
    refresh_token: Option<String>,
    refresh_token_expires_in: Option<i64>,
    #[serde(default)]
    scope: String,
    error: Option<String>,
    error_description: Option<String>,
}

/// What the app needs to talk to the OAuth endpoints.
#[derive(Debug, Clone)]
pub struct OauthApp {
    /// API host, e.g. `https://open.feishu.cn`.
    pub base_url: String,
    /// Accounts host for the browser authorize page, e.g. `https://accounts.feishu.cn`.
    pub accounts_url: String,
    pub app_id: String,
    pub app_secret: Secret,
}

/// A prepared authorization: the URL to open and what to check / send back.
#[derive(Debug)]
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub redirect_uri: String,
    verifier: oauth2::PkceCodeVerifier,
}

impl OauthApp {
    /// The authorize URL (PKCE S256) for `redirect_uri` with `offline_access`
    /// added so that a refresh token is issued.
    pub fn authorize(&self, redirect_uri: &str, scopes: &[&str]) -> Authorization {
        let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
        let state = oauth2::CsrfToken::new_random().secret().clone();
        let mut scope: Vec<&str> = scopes.to_vec();
        if !scope.contains(&"offline_access") {
            scope.push("offline_access");
        }
        let mut url = url::Url::parse(&format!(
            "{}/open-apis/authen/v1/authorize",
            self.accounts_url.trim_end_matches('/')
        ))
        .unwrap_or_else(|_| url::Url::parse("https://accounts.feishu.cn/").expect("static URL"));
        url.query_pairs_mut()
            .append_pair("client_id", &self.app_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scope.join(" "))
            .append_pair("state", &state)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", challenge.method().as_str());
        Authorization {
            url: url.to_string(),
            state,
            redirect_uri: redirect_uri.to_owned(),
            verifier,
        }
    }

    async fn token_call(
        &self,
        http: &reqwest::Client,
        body: serde_json::Value,
    ) -> Result<UserTokens, FeishuError> {
        let endpoint = "POST /open-apis/authen/v2/oauth/token";
        let resp = http
            .post(format!(
                "{}/open-apis/authen/v2/oauth/token",
                self.base_url.trim_end_matches('/')
            ))
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let status = resp.status().as_u16();
        let log_id = log_id(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let r: OauthTokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| FeishuError::Decode {
                endpoint: endpoint.to_owned(),
                status,
                detail: e.to_string(),
                log_id: log_id.clone(),
            })?;
        let msg = || {
            let mut m = r.error.clone().unwrap_or_default();
            if let Some(d) = &r.error_description {
                if !m.is_empty() {
                    m.push_str(": ");
                }
                m.push_str(d);
            }
            m
        };
        if REAUTH_CODES.contains(&r.code) {
            return Err(FeishuError::ReauthRequired {
                code: r.code,
                msg: msg(),
            });
        }
        match (r.code, &r.access_token, &r.refresh_token) {
            (0, Some(access), refresh) => {
                let now = unix_now();
                Ok(UserTokens {
                    access_token: Secret::new(access.clone()),
                    access_expires_at: now + r.expires_in.unwrap_or(7200),
                    refresh_token: Secret::new(refresh.clone().unwrap_or_default()),
                    refresh_expires_at: r.refresh_token_expires_in.map_or(0, |s| now + s),
                    scope: r.scope.clone(),
                })
            }
            (code, _, _) => Err(FeishuError::Api {
                endpoint: endpoint.to_owned(),
                code,
                msg: msg(),
                status,
                log_id,
                retry_after: None,
            }),
        }
    }

    /// Exchanges the code from the redirect for tokens.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        auth: &Authorization,
        code: &str,
    ) -> Result<UserTokens, FeishuError> {
        self.token_call(
            http,
            serde_json::json!({
                "grant_type": "authorization_code",
                "client_id": self.app_id,
                "client_secret": self.app_secret.expose(),
                "code": code,
                "redirect_uri": auth.redirect_uri,
                "code_verifier": auth.verifier.secret(),
            }),
        )
        .await
    }

    /// Trades a refresh token for new tokens (the old refresh token dies).
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh_token: &Secret,
    ) -> Result<UserTokens, FeishuError> {
        self.token_call(
            http,
            serde_json::json!({
                "grant_type": "refresh_token",
                "client_id": self.app_id,
                "client_secret": self.app_secret.expose(),
                "refresh_token": refresh_token.expose(),
            }),
        )
        .await
    }
}

/// A user identity: tokens from the store, refreshed with rotation. The new
/// tokens are saved before they are used, so a crash never leaves us holding
/// only a dead refresh token.
#[derive(Debug)]
pub struct UserAuth {
    app: OauthApp,
    store: Arc<dyn TokenStore>,
    cached: Mutex<Option<UserTokens>>,
}

impl UserAuth {
    pub fn new(app: OauthApp, store: Arc<dyn TokenStore>) -> Self {
        Self {
            app,
            store,
            cached: Mutex::new(None),
        }
    }

    /// A valid access token, refreshing (and persisting) when needed.
    pub async fn access_token(&self, http: &reqwest::Client) -> Result<Secret, FeishuError> {
        self.token(http, false).await
    }

    /// Refreshes even if the cached token looks valid (after 99991677).
    pub async fn force_refresh(&self, http: &reqwest::Client) -> Result<Secret, FeishuError> {
        self.token(http, true).await
    }

    async fn token(&self, http: &reqwest::Client, force: bool) -> Result<Secret, FeishuError> {
        // One refresh at a time: a refresh token is single-use.
        let mut cached = self.cached.lock().await;
        if cached.is_none() {
            *cached = self.store.load().await?;
        }
        let Some(tokens) = cached.clone() else {
            return Err(FeishuError::NotAuthorized);
        };
        let margin = EXPIRY_MARGIN.as_secs() as i64;
        if !force && tokens.access_expires_at - margin > unix_now() {
            return Ok(tokens.access_token);
        }
        if tokens.refresh_token.is_empty() {
            return Err(FeishuError::ReauthRequired {
                code: 20_026,
                msg: "no refresh token was issued (offline_access missing)".to_owned(),
            });
        }
        let fresh = match self.app.refresh(http, &tokens.refresh_token).await {
            Ok(t) => t,
            Err(e @ FeishuError::ReauthRequired { .. }) => {
                *cached = None;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.store.save(&fresh).await?;
        tracing::info!("refreshed the Feishu user access token");
        let token = fresh.access_token.clone();
        *cached = Some(fresh);
        Ok(token)
    }
}

/// Serves the loopback redirect once: waits for
/// `GET /callback?code=…&state=…` on `listener`, checks `state`, answers the
/// browser with a short page and returns the code.
pub async fn receive_redirect(
    listener: tokio::net::TcpListener,
    expected_state: &str,
    timeout: Duration,
) -> Result<String, FeishuError> {
    use axum::extract::Query;
    use axum::response::Html;
    use std::collections::HashMap;

    type Outcome = Result<String, String>;
    let (tx, rx) = tokio::sync::oneshot::channel::<Outcome>();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let expected = expected_state.to_owned();
    let handler = move |Query(q): Query<HashMap<String, String>>| {
        let tx = tx.clone();
        let expected = expected.clone();
        async move {
            let outcome: Outcome = match (q.get("code"), q.get("state"), q.get("error")) {
                (_, _, Some(err)) => Err(format!("authorization refused: {err}")),
                (Some(code), Some(state), None) if *state == expected => Ok(code.clone()),
                (Some(_), _, None) => {
                    Err("the redirect's state does not match; ignored".to_owned())
                }
                _ => Err("the redirect has no code".to_owned()),
            };
            let page = match &outcome {
                Ok(_) => "feishu-bridge: authorized. You can close this window.".to_owned(),
                Err(e) => format!("feishu-bridge: {e}"),
            };
            if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(outcome);
            }
            Html(format!(
                "<!doctype html><title>feishu-bridge</title><p>{page}</p>"
            ))
        }
    };
    let app = axum::Router::new().route("/callback", axum::routing::get(handler));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    let result = tokio::time::timeout(timeout, rx).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    match result {
        Err(_) => Err(FeishuError::Config(format!(
            "no redirect arrived within {} s",
            timeout.as_secs()
        ))),
        Ok(Err(_)) => Err(FeishuError::Config(
            "the redirect listener stopped".to_owned(),
        )),
        Ok(Ok(Ok(code))) => Ok(code),
        Ok(Ok(Err(e))) => Err(FeishuError::Config(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let t = UserTokens {
            access_token: Secret::new("u-abc"),
            access_expires_at: 1,
            refresh_token: Secret::new("ur-def"),
            refresh_expires_at: 2,
            scope: "calendar:calendar".into(),
        };
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("u-abc") && !shown.contains("ur-def"),
            "{shown}"
        );
    }

    #[test]
    fn authorize_url_has_pkce_and_offline_access() {
        let app = OauthApp {
            base_url: "http://127.0.0.1:1".into(),
            accounts_url: "http://127.0.0.1:1".into(),
            app_id: "cli_a".into(),
            app_secret: Secret::new("s"),
        };
        let a = app.authorize(
            "http://127.0.0.1:9/callback",
            &["calendar:calendar:readonly"],
        );
        let url = url::Url::parse(&a.url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["client_id"], "cli_a");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:9/callback");
        assert_eq!(q["scope"], "calendar:calendar:readonly offline_access");
        assert_eq!(q["state"], a.state);
        assert!(q["code_challenge"].len() >= 43);
    }

    #[tokio::test]
    async fn file_store_is_private_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("fb-tokens-{}", std::process::id()));
        let store = FileTokenStore::new(dir.join("feishu-user.json"));
        assert!(store.load().await.unwrap().is_none());
        let t = UserTokens {
            access_token: Secret::new("a"),
            access_expires_at: 10,
            refresh_token: Secret::new("r"),
            refresh_expires_at: 20,
            scope: String::new(),
        };
        store.save(&t).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(t));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
