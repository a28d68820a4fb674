//! A faithful local Microsoft Graph v1.0 calendar server (Exchange Online),
//! with the Microsoft identity platform's token endpoints, on the emulator
//! kit. Modelled on the shared notes `graph.md` (§10 is its checklist) and
//! the CSDL subset vendored in `tests/graph-csdl/`, not on any client.
//!
//! * **Identity** — `POST /{tenant}/oauth2/v2.0/token`: `client_credentials`
//!   with `client_secret` or an RS256 `client_assertion` (signature checked
//!   against the registered certificate's key, `x5t` or `x5t#S256`
//!   thumbprint, `aud` = the token URL, `iss` = `sub` = client id, a current
//!   `exp`, a `jti`), scope `https://graph.microsoft.com/.default`;
//!   `authorization_code` (PKCE S256 checked, single-use codes) and
//!   `refresh_token` (rotated: each answer has a new refresh token and the
//!   one redeemed is refused afterwards, `invalid_grant`). Errors are AAD's: `invalid_client` `AADSTS7000215`
//!   (wrong secret), `AADSTS7000222` (expired secret), `AADSTS700027` (bad
//!   assertion), `unauthorized_client` `AADSTS700016` (unknown app).
//!   `GET /{tenant}/oauth2/v2.0/authorize` approves at once for
//!   [`GraphConfig::consent_user`] (302 to the loopback `redirect_uri`).
//! * **Calendars** — `GET/POST /v1.0/users/{id|upn}/calendars`,
//!   `GET …/calendars/{id}`, `GET …/calendar`.
//! * **Events** — `POST …/events` (`/users/{u}/events`,
//!   `…/calendar/events`, `…/calendars/{c}/events`), `GET/PATCH/DELETE
//!   …/events/{id}` (also occurrence and exception ids), `GET …/events`
//!   (singles and series masters; `$filter` on one single-value extended
//!   property, `$expand=singleValueExtendedProperties($filter=id eq '…' or
//!   …)`, `$select`, `$top`/`$skip` paging with `@odata.nextLink`),
//!   `GET …/events/{id}/instances` and `GET …/calendarView` (both need
//!   `startDateTime`/`endDateTime`), `GET …/calendarView/delta` (paged by
//!   `Prefer: odata.maxpagesize`, `@odata.nextLink` / `@odata.deltaLink`,
//!   removed instances as `@removed`, 410 for an evicted token; see
//!   `delta.rs`). Recurrence (`patternedRecurrence`) is
//!   expanded with the `rrule` crate in the IANA zone CLDR gives the series'
//!   Windows zone (`recurrenceTimeZone`, else the start's). Occurrences and
//!   exceptions carry `seriesMasterId` and `originalStart`; deleting one puts
//!   `OID.{masterId}.{yyyy-MM-dd}` in the master's `cancelledOccurrences`
//!   (answered with `$select=cancelledOccurrences` on the master).
//! * **Bodies** are checked against the CSDL subset (unknown properties,
//!   enum strings, JSON kinds: 400 `RequestBodyRead`), then Graph's rules:
//!   `timeZone` must be a Windows id or `UTC` (else 400
//!   `TimeZoneNotSupportedException`), all-day events midnight to midnight
//!   in one zone, `range.startDate` the start's date, required pattern
//!   fields (400 `ErrorPropertyValidationFailure`).
//! * **transactionId** (graph.md §4) — per mailbox: a repeated POST with the
//!   same body to the same calendar answers 201 with the event it created;
//!   another body is 400 `ErrorDuplicateTransactionId`; a PATCH carrying it
//!   is 400 `ErrorInvalidRequest`.
//! * **Etags** — `@odata.etag` `W/"<changeKey>"` changes on every write;
//!   a stale `If-Match` is 412 `ErrorIrresolvableConflict`.
//! * **Ids** are base64 with `/`, `+` and `=`: clients must percent-encode
//!   them in paths. Without `Prefer: IdType="ImmutableId"` a request gets
//!   the (move-sensitive) REST form of ids; both forms are accepted.
//! * **`$batch`** — `POST /v1.0/$batch`, at most [`GraphConfig::batch_max`]
//!   parts, unique ids, `dependsOn` (424 when a dependency failed), a
//!   `Content-Type` header on parts with a body; parts run at most 4 at once
//!   and are answered in another order than sent.
//! * **Throttling** — at most [`GraphConfig::mailbox_concurrency`] requests
//!   in flight per mailbox (batch parts count) and
//!   [`GraphConfig::rate_limit`] per mailbox, both 429
//!   `ApplicationThrottled` with `Retry-After`.
//! * **Mailboxes** — [`MailboxAccess`]: 404 `MailboxNotEnabledForRESTAPI` or
//!   403 `ErrorAccessDenied` per mailbox. A delegated token reaches only its
//!   user's mailbox.
//! * **Faults** ([`Faults`], [`FaultKind`]): 429, 503, 504, expired tokens,
//!   slow answers, any Graph error.
//!
//! # Behaviour the shared notes leave open, as chosen here
//!
//! * Changing a master's `recurrence`, `start`, `end` or `isAllDay` drops its
//!   exceptions and deleted occurrences (Exchange rebuilds the series).
//! * The transactionId of a deleted event is forgotten.
//! * Times are answered in UTC; all-day values keep their local midnight.
//! * `$filter` supports `singleValueExtendedProperties/Any(ep: ep/id eq '…'
//!   and ep/value eq '…')` (or `startswith(ep/value,'…')`), nothing else.
//!
//! # Control API (`/_emulator/…`, JSON, no auth, not recorded)
//!
//! | Method + path | Body | Answer |
//! |---|---|---|
//! | `POST /_emulator/mailboxes` | `{upn, access?}` | `{id, calendar_id}` |
//! | `PUT /_emulator/mailboxes/{upn}/access` | `{access: enabled\|no_rest\|denied}` | `{}` |
//! | `GET /_emulator/mailboxes/{upn}/view?start=&end=&calendar=` | — | every instance in the window |
//! | `GET /_emulator/mailboxes/{upn}/events` | — | stored singles and masters (with extended properties) |
//! | `PATCH /_emulator/mailboxes/{upn}/events/{id}` | patch | the event (a user's edit) |
//! | `DELETE /_emulator/mailboxes/{upn}/events/{id}` | — | `{}` (a user's delete) |
//! | `POST /_emulator/tokens/expire` | — | `{}` |
//! | `POST /_emulator/delta/expire` | — | `{}` (delta tokens evicted) |
//! | `GET /_emulator/state` | — | counts, concurrency peak, side effects |
//! | kit: `calls`, `faults`, `fail_next`, `reset` | | |

mod api;
mod auth;
mod csdl;
mod delta;
mod faults;
mod model;
mod schedule;
mod time;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kit::control::{CtlError, CtlResult, ModelError, bad, ok};
pub(crate) use crate::kit::lock;
use crate::kit::{self, Call, Exchange, Kit, Service, bearer};

pub use auth::{
    ClientApp, GRAPH_DEFAULT_SCOPE, JWT_BEARER_ASSERTION, TEST_CERT_PEM, TEST_CERT_PRIVATE_KEY_PEM,
    TEST_CERT_PUBLIC_KEY_PEM,
};
pub use faults::{FaultKind, Faults};
pub use model::MailboxAccess;

/// The tenant id of the default configuration.
pub const TEST_TENANT: &str = "7f3c1a52-0000-4000-8000-00000000feed";
/// The client id of the default app registration.
pub const TEST_CLIENT_ID: &str = "5d2b8c10-1111-4222-8333-444455556666";
/// Its client secret.
pub const TEST_CLIENT_SECRET: &str = "emulator-graph-client-secret";

/// Emulator configuration; `Default` gives Graph's documented limits.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    pub tenant_id: String,
    /// App registrations (default: [`TEST_CLIENT_ID`] with
    /// [`TEST_CLIENT_SECRET`] and the test certificate).
    pub apps: Vec<ClientApp>,
    /// Lifetime of access tokens (3600 s).
    pub access_token_ttl: Duration,
    /// Requests in flight per mailbox before 429 (4).
    pub mailbox_concurrency: usize,
    /// Requests per mailbox and window (10,000 per 10 minutes).
    pub rate_limit: Option<(u32, Duration)>,
    /// Most parts of a `$batch` (20).
    pub batch_max: usize,
    /// Time each API request (and batch part) takes (0).
    pub latency: Duration,
    /// Who approves the authorization endpoint (`None`: access_denied).
    pub consent_user: Option<String>,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            tenant_id: TEST_TENANT.into(),
            apps: vec![ClientApp {
                client_id: TEST_CLIENT_ID.into(),
                secret: Some(TEST_CLIENT_SECRET.into()),
                secret_expired: false,
                certificate_pem: Some(TEST_CERT_PEM.into()),
                public_key_pem: Some(TEST_CERT_PUBLIC_KEY_PEM.into()),
            }],
            access_token_ttl: Duration::from_secs(3600),
            mailbox_concurrency: 4,
            rate_limit: Some((10_000, Duration::from_secs(600))),
            batch_max: 20,
            latency: Duration::ZERO,
            consent_user: None,
        }
    }
}

/// Why a control call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphEmulatorError {
    #[error("unknown mailbox {0}")]
    UnknownMailbox(String),
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

impl ModelError for GraphEmulatorError {
    fn is_unknown(&self) -> bool {
        matches!(self, Self::UnknownMailbox(_)) || matches!(self, Self::Api { status: 404, .. })
    }
}

/// One observed request (API calls, batch parts, batch envelopes, token
/// requests).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub method: String,
    /// Path without the query (batch parts: `/v1.0` + the part's path).
    pub path: String,
    pub query: String,
    pub status: u16,
    /// `error.code` (OAuth `error` at the token endpoint).
    pub code: Option<String>,
    /// The mailbox id reached.
    pub mailbox: Option<String>,
    /// Sent with `Prefer: IdType="ImmutableId"`.
    pub immutable_id: bool,
    /// Its `If-Match`.
    pub if_match: Option<String>,
    /// A part of a `$batch`.
    pub batch_part: bool,
    /// The JSON body of a POST / PATCH to the API.
    pub body: Option<Value>,
    pub at_ms: i64,
}

impl CallRecord {
    /// A POST, PATCH or DELETE of the calendar API.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PATCH" | "DELETE")
            && self.path.starts_with("/v1.0/")
            && !self.path.ends_with("/$batch")
    }
}

impl Call for CallRecord {
    fn path(&self) -> &str {
        &self.path
    }
}

/// Response extension: what the record needs of an API answer.
#[derive(Debug, Clone)]
struct Answered {
    code: Option<String>,
    mailbox: Option<String>,
    body: Option<Value>,
}

/// Shared server state.
pub(crate) struct Inner {
    pub(crate) kit: Kit<Inner>,
    pub(crate) config: GraphConfig,
    pub(crate) model: Mutex<model::Model>,
    pub(crate) auth: Mutex<auth::Auth>,
    pub(crate) inflight: Mutex<HashMap<String, usize>>,
    pub(crate) windows: Mutex<HashMap<String, kit::Window>>,
    pub(crate) deltas: Mutex<delta::Deltas>,
    pub(crate) peak_concurrency: AtomicUsize,
    pub(crate) over_concurrency: AtomicU64,
}

impl Inner {
    fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.kit.base_url(),
            self.config.tenant_id
        )
    }

    /// Records a batch part.
    pub(crate) fn record_part(&self, req: &api::Req, r: &api::Resp) {
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        self.kit.record(CallRecord {
            method: req.method.to_string(),
            path: format!("/v1.0{path}"),
            query: if query.is_empty() {
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&req.query)
                    .finish()
            } else {
                query.to_owned()
            },
            status: r.status,
            code: r.code.clone(),
            mailbox: r.mailbox.clone(),
            immutable_id: api::wants_immutable(&req.headers),
            if_match: req
                .headers
                .get("if-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            batch_part: true,
            body: req.body.clone(),
            at_ms: kit::ids::now_ms(),
        });
    }

    fn mailbox(&self, upn: &str) -> Result<String, GraphEmulatorError> {
        lock(&self.model)
            .mailbox_id(upn)
            .ok_or_else(|| GraphEmulatorError::UnknownMailbox(upn.to_owned()))
    }

    /// A request as the mailbox's user makes it in Outlook (no auth, no
    /// limits, not recorded).
    fn user_call(
        self: &Arc<Self>,
        upn: &str,
        method: Method,
        rest: &[String],
        body: Option<Value>,
        query: Vec<(String, String)>,
    ) -> Result<Value, GraphEmulatorError> {
        let mailbox = self.mailbox(upn)?;
        let mut headers = HeaderMap::new();
        headers.insert("prefer", HeaderValue::from_static("IdType=\"ImmutableId\""));
        let req = api::Req {
            method,
            path: String::new(),
            query,
            headers,
            body,
            batch_part: false,
        };
        let r = api::route(self, &mailbox, rest, &req);
        if r.status >= 400 {
            return Err(GraphEmulatorError::Api {
                status: r.status,
                code: r.code.unwrap_or_default(),
                message: r.body["error"]["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(r.body)
    }
}

pub(crate) struct Seen {
    token: Option<String>,
    immutable: bool,
    if_match: Option<String>,
}

impl Service for Inner {
    const NAME: &'static str = "graph";
    type Faults = Faults;
    type Fault = FaultKind;
    type FaultSpec = faults::FaultSpec;
    type Call = CallRecord;
    type Seen = Seen;

    fn kit(&self) -> &Kit<Self> {
        &self.kit
    }

    fn see(&self, req: &Request) -> Seen {
        Seen {
            token: bearer(req.headers()).map(str::to_owned),
            immutable: api::wants_immutable(req.headers()),
            if_match: req
                .headers()
                .get(header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// API calls only (batch parts are rolled one by one).
    fn random_faults_apply(&self, path: &str) -> bool {
        path.starts_with("/v1.0/") && !path.ends_with("/$batch")
    }

    fn fault_answer(&self, fault: &FaultKind, seen: &Seen) -> Response {
        if *fault == FaultKind::TokenExpired
            && let Some(t) = &seen.token
        {
            lock(&self.auth).expire(t);
        }
        api::Resp::fault(fault)
            .map(into_response)
            .unwrap_or_default()
    }

    fn record(&self, seen: Seen, x: Exchange, resp: &mut Response) -> CallRecord {
        let a = resp.extensions().get::<Answered>().cloned();
        CallRecord {
            method: x.method,
            path: x.path,
            query: x.query,
            status: x.status,
            code: a.as_ref().and_then(|a| a.code.clone()),
            mailbox: a.as_ref().and_then(|a| a.mailbox.clone()),
            immutable_id: seen.immutable,
            if_match: seen.if_match,
            batch_part: false,
            body: a.and_then(|a| a.body),
            at_ms: x.at_ms,
        }
    }
}

fn into_response(r: api::Resp) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if r.body.is_null() {
        status.into_response()
    } else {
        (status, Json(r.body.clone())).into_response()
    };
    for (k, v) in &r.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    if let Some(e) = r
        .body
        .get("@odata.etag")
        .and_then(Value::as_str)
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        resp.headers_mut().insert(header::ETAG, e);
    }
    resp.extensions_mut().insert(Answered {
        code: r.code,
        mailbox: r.mailbox,
        body: None,
    });
    resp
}

/// Every `/v1.0/…` request.
async fn api_handler(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let token = bearer(&parts.headers).map(str::to_owned);
    let json_body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                return into_response(api::Resp::error(
                    400,
                    "BadRequest",
                    &format!("Unable to read JSON request payload: {e}"),
                ));
            }
        }
    };
    if path == "/v1.0/$batch" {
        if parts.method != Method::POST {
            return into_response(api::Resp::error(405, "BadRequest", "Use POST for $batch."));
        }
        let Some(b) = json_body else {
            return into_response(api::Resp::error(
                400,
                "BadRequest",
                "Invalid batch payload format.",
            ));
        };
        return into_response(api::batch(&inner, token.as_deref(), &b).await);
    }
    let Some(rest) = path.strip_prefix("/v1.0") else {
        return into_response(api::Resp::error(400, "BadRequest", "Invalid version."));
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let captured = json_body
        .clone()
        .filter(|_| matches!(parts.method, Method::POST | Method::PATCH));
    let req = api::Req {
        method: parts.method,
        path: rest.to_owned(),
        query,
        headers: parts.headers,
        body: json_body,
        batch_part: false,
    };
    let mut resp = into_response(api::dispatch(&inner, token.as_deref(), req).await);
    if let Some(a) = resp.extensions_mut().get_mut::<Answered>() {
        a.body = captured;
    }
    resp
}

async fn token_handler(
    State(inner): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: auth::Form = url::form_urlencoded::parse(&body).into_owned().collect();
    let answer = if tenant != inner.config.tenant_id {
        Err(auth::OAuthError {
            status: 400,
            error: "invalid_request",
            description: format!("AADSTS90002: Tenant '{tenant}' not found."),
        })
    } else {
        let url = inner.token_url();
        lock(&inner.auth).token(
            &inner.config.apps,
            &url,
            &form,
            inner.config.access_token_ttl,
        )
    };
    match answer {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            let mut r = (
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                Json(e.body()),
            )
                .into_response();
            r.extensions_mut().insert(Answered {
                code: Some(e.error.to_owned()),
                mailbox: None,
                body: None,
            });
            r
        }
    }
}

async fn authorize_handler(
    State(inner): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if tenant != inner.config.tenant_id {
        return (
            StatusCode::BAD_REQUEST,
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        )
            .into_response();
    }
    let upn = inner.config.consent_user.clone();
    match lock(&inner.auth).authorize(&inner.config.apps, &q, upn.as_deref()) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

// ---- control routes ----

#[derive(Deserialize)]
struct MailboxBody {
    upn: String,
    #[serde(default)]
    access: MailboxAccess,
}

async fn ctl_add_mailbox(State(inner): State<Arc<Inner>>, Json(b): Json<MailboxBody>) -> CtlResult {
    let (id, cal) = lock(&inner.model).add_mailbox(&b.upn, b.access);
    ok(json!({"id": id, "calendar_id": cal}))
}

#[derive(Deserialize)]
struct AccessBody {
    access: MailboxAccess,
}

async fn ctl_access(
    State(inner): State<Arc<Inner>>,
    Path(upn): Path<String>,
    Json(b): Json<AccessBody>,
) -> CtlResult {
    let id = inner.mailbox(&upn)?;
    if let Some(m) = lock(&inner.model).mailboxes.get_mut(&id) {
        m.access = b.access;
    }
    ok(json!({}))
}

async fn ctl_view(
    State(inner): State<Arc<Inner>>,
    Path(upn): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> CtlResult {
    let start = q.get("start").ok_or_else(|| bad("start is required"))?;
    let end = q.get("end").ok_or_else(|| bad("end is required"))?;
    let handle = GraphEmulator {
        inner: inner.clone(),
    };
    let v = handle.view(&upn, q.get("calendar").map(String::as_str), start, end)?;
    ok(json!(v))
}

async fn ctl_events(State(inner): State<Arc<Inner>>, Path(upn): Path<String>) -> CtlResult {
    let handle = GraphEmulator { inner };
    ok(json!(handle.events(&upn)?))
}

async fn ctl_edit(
    State(inner): State<Arc<Inner>>,
    Path((upn, id)): Path<(String, String)>,
    Json(b): Json<Value>,
) -> CtlResult {
    let handle = GraphEmulator { inner };
    ok(handle.user_edit(&upn, &id, b)?)
}

async fn ctl_delete(
    State(inner): State<Arc<Inner>>,
    Path((upn, id)): Path<(String, String)>,
) -> CtlResult {
    let handle = GraphEmulator { inner };
    handle.user_delete(&upn, &id)?;
    ok(json!({}))
}

async fn ctl_expire(State(inner): State<Arc<Inner>>) -> CtlResult {
    lock(&inner.auth).expire_all();
    ok(json!({}))
}

async fn ctl_expire_delta(State(inner): State<Arc<Inner>>) -> CtlResult {
    lock(&inner.deltas).evict_all();
    ok(json!({}))
}

async fn ctl_state(State(inner): State<Arc<Inner>>) -> CtlResult {
    let handle = GraphEmulator { inner };
    ok(handle.state())
}

impl From<CtlError> for GraphEmulatorError {
    fn from(e: CtlError) -> Self {
        Self::Api {
            status: e.0.as_u16(),
            code: String::new(),
            message: e.1,
        }
    }
}

/// The running emulator.
pub struct GraphEmulator {
    inner: Arc<Inner>,
}

kit::handle_api!(GraphEmulator, Faults, FaultKind, CallRecord);

impl GraphEmulator {
    /// Starts on `127.0.0.1:0` with the default configuration.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(GraphConfig::default()).await
    }

    pub async fn start_with(config: GraphConfig) -> std::io::Result<Self> {
        let kit = Kit::bind(None).await?;
        let inner = Arc::new(Inner {
            kit,
            config,
            model: Mutex::new(model::Model::default()),
            auth: Mutex::new(auth::Auth::default()),
            inflight: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            deltas: Mutex::new(delta::Deltas::default()),
            peak_concurrency: AtomicUsize::new(0),
            over_concurrency: AtomicU64::new(0),
        });
        let control = kit::control::router::<Inner>()
            .route("/mailboxes", post(ctl_add_mailbox))
            .route("/mailboxes/{upn}/access", put(ctl_access))
            .route("/mailboxes/{upn}/view", get(ctl_view))
            .route("/mailboxes/{upn}/events", get(ctl_events))
            .route(
                "/mailboxes/{upn}/events/{id}",
                axum::routing::patch(ctl_edit).delete(ctl_delete),
            )
            .route("/tokens/expire", post(ctl_expire))
            .route("/delta/expire", post(ctl_expire_delta))
            .route("/state", get(ctl_state));
        let observed = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token_handler))
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize_handler))
            .route("/v1.0/{*rest}", axum::routing::any(api_handler))
            .layer(from_fn_with_state(inner.clone(), kit::observe::<Inner>));
        let app = observed
            .nest("/_emulator", control)
            .with_state(inner.clone());
        inner.kit.serve(app);
        Ok(Self { inner })
    }

    pub async fn shutdown(&self) {
        self.inner.kit.shutdown().await;
    }

    /// `{base}/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url())
    }

    /// The token endpoint of the configured tenant.
    pub fn token_url(&self) -> String {
        self.inner.token_url()
    }

    /// The authorization endpoint of the configured tenant.
    pub fn authorize_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/authorize",
            self.base_url(),
            self.inner.config.tenant_id
        )
    }

    pub fn config(&self) -> &GraphConfig {
        &self.inner.config
    }

    /// Adds (or updates) a mailbox; its id and its default calendar's id.
    pub fn add_mailbox(&self, upn: &str, access: MailboxAccess) -> (String, String) {
        lock(&self.inner.model).add_mailbox(upn, access)
    }

    pub fn set_access(&self, upn: &str, access: MailboxAccess) -> Result<(), GraphEmulatorError> {
        let id = self.inner.mailbox(upn)?;
        if let Some(m) = lock(&self.inner.model).mailboxes.get_mut(&id) {
            m.access = access;
        }
        Ok(())
    }

    /// A delegated refresh token of `upn` for `client_id`, as `auth graph`
    /// would store after the user's consent. Each use answers a new one and
    /// retires the one used.
    pub fn grant_refresh_token(&self, client_id: &str, upn: &str) -> String {
        lock(&self.inner.auth).grant_refresh(client_id, upn)
    }

    /// Every `calendarView/delta` token is evicted: its next use answers
    /// 410 `SyncStateNotFound` (a full sync starts again).
    pub fn expire_delta_tokens(&self) {
        lock(&self.inner.deltas).evict_all();
    }

    /// Every access token expires now.
    pub fn expire_tokens(&self) {
        lock(&self.inner.auth).expire_all();
    }

    /// Every instance of the calendar (default: the mailbox's default) in
    /// `[start, end)` (RFC 3339): singles, occurrences and exceptions, as
    /// `calendarView` answers them, with extended properties.
    pub fn view(
        &self,
        upn: &str,
        calendar: Option<&str>,
        start: &str,
        end: &str,
    ) -> Result<Vec<Value>, GraphEmulatorError> {
        let bad = |what: &str, v: &str| GraphEmulatorError::Api {
            status: 400,
            code: "ErrorInvalidParameter".into(),
            message: format!("{what} {v:?} is not a date-time"),
        };
        let from = time::parse_query_instant(start).ok_or_else(|| bad("start", start))?;
        let to = time::parse_query_instant(end).ok_or_else(|| bad("end", end))?;
        let id = self.inner.mailbox(upn)?;
        let m = lock(&self.inner.model);
        let shape = model::Shape {
            select: Vec::new(),
            expand: Some(Vec::new()),
            exceptions: false,
            immutable: true,
        };
        Ok(api::view_items(
            &m.mailboxes[&id],
            calendar,
            from,
            to,
            &shape,
        ))
    }

    /// The id of a mailbox's calendar by name (case-insensitive).
    pub fn calendar_id(&self, upn: &str, name: &str) -> Option<String> {
        let id = self.inner.mailbox(upn).ok()?;
        let m = lock(&self.inner.model);
        m.mailboxes[&id]
            .calendars
            .values()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .map(|c| c.id.clone())
    }

    /// The stored singles and series masters of a mailbox (every calendar),
    /// with extended properties and `cancelledOccurrences`.
    pub fn events(&self, upn: &str) -> Result<Vec<Value>, GraphEmulatorError> {
        let id = self.inner.mailbox(upn)?;
        let m = lock(&self.inner.model);
        let mb = &m.mailboxes[&id];
        let shape = model::Shape {
            select: Vec::new(),
            expand: Some(Vec::new()),
            exceptions: false,
            immutable: true,
        };
        Ok(mb
            .events
            .values()
            .map(|e| {
                let mut v = e.view(&shape, &mb.upn);
                v["calendarId"] = json!(e.calendar);
                v["cancelledOccurrences"] = json!(
                    e.cancelled
                        .iter()
                        .map(|d| format!("OID.{}.{}", e.id, time::date_str(*d)))
                        .collect::<Vec<_>>()
                );
                v
            })
            .collect())
    }

    /// A user's edit in Outlook (an occurrence id makes an exception).
    pub fn user_edit(
        &self,
        upn: &str,
        id: &str,
        patch: Value,
    ) -> Result<Value, GraphEmulatorError> {
        self.inner.user_call(
            upn,
            Method::PATCH,
            &["events".into(), id.into()],
            Some(patch),
            Vec::new(),
        )
    }

    /// A user's delete in Outlook.
    pub fn user_delete(&self, upn: &str, id: &str) -> Result<(), GraphEmulatorError> {
        self.inner
            .user_call(
                upn,
                Method::DELETE,
                &["events".into(), id.into()],
                None,
                Vec::new(),
            )
            .map(|_| ())
    }

    /// A user's new event (not ours) in the default calendar.
    pub fn user_create(&self, upn: &str, event: Value) -> Result<Value, GraphEmulatorError> {
        self.inner.user_call(
            upn,
            Method::POST,
            &["events".into()],
            Some(event),
            Vec::new(),
        )
    }

    /// Most requests seen in flight at once for one mailbox.
    pub fn peak_concurrency(&self) -> usize {
        self.inner.peak_concurrency.load(Ordering::Relaxed)
    }

    /// Requests answered 429 for the concurrency cap.
    pub fn over_concurrency(&self) -> u64 {
        self.inner.over_concurrency.load(Ordering::Relaxed)
    }

    /// Invitations and online meetings Graph would have made:
    /// `(mailbox, event id, what)`.
    pub fn side_effects(&self) -> Vec<(String, String, String)> {
        lock(&self.inner.model).side_effects.clone()
    }

    /// Calendar API writes recorded (batch parts included).
    pub fn write_count(&self) -> usize {
        self.inner.kit.count_calls(CallRecord::is_write)
    }

    fn state(&self) -> Value {
        let m = lock(&self.inner.model);
        let boxes: Vec<Value> = m.mailboxes.values().map(|b| json!({"id": b.id, "upn": b.upn, "access": b.access, "events": b.events.len(), "calendars": b.calendars.values().map(|c| json!({"id": c.id, "name": c.name, "default": c.default})).collect::<Vec<_>>()})).collect();
        json!({
            "mailboxes": boxes,
            "tokens_issued": lock(&self.inner.auth).issued,
            "peak_concurrency": self.peak_concurrency(),
            "over_concurrency": self.over_concurrency(),
            "writes": self.write_count(),
            "side_effects": m.side_effects.len(),
        })
    }
}
