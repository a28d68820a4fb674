//! The HTTP plumbing every OpenAPI endpoint shares: the `{code,msg,data}`
//! envelope, error codes with their HTTP statuses, the `X-Tt-Logid` header,
//! what the kit's call log and injected faults look like here, and the rate
//! limiter.

use std::fmt;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::faults::{FaultKind, FaultSpec, Faults};
use super::util::log_id;
use super::{Inner, lock};
pub(crate) use crate::kit::bearer;
use crate::kit::{Call, Exchange, Kit, Service};

/// The Feishu `code` of a response, attached as a response extension so the
/// call recorder does not have to parse bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeishuCode(pub(crate) i64);

/// Which kind of token authorised a request (by its shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Tenant,
    User,
    App,
    None,
}

/// One observed API request.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (empty when absent).
    pub query: String,
    pub status: u16,
    /// Feishu `code` of the answer (`None` for redirects and non-JSON answers).
    pub code: Option<i64>,
    pub token_kind: TokenKind,
    pub log_id: String,
    pub at_ms: i64,
}

/// Classifies the bearer token of a request by its prefix.
pub(crate) fn token_kind(headers: &HeaderMap) -> TokenKind {
    match bearer(headers) {
        None => TokenKind::None,
        Some(t) if t.starts_with("t-") => TokenKind::Tenant,
        Some(t) if t.starts_with("a-") => TokenKind::App,
        Some(_) => TokenKind::User,
    }
}

/// An error answer: HTTP status + `{code, msg}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: i64,
    pub(crate) msg: String,
    pub(crate) headers: Vec<(HeaderName, String)>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.msg)
    }
}

impl ApiError {
    pub(crate) fn new(status: u16, code: i64, msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            msg: msg.into(),
            headers: Vec::new(),
        }
    }

    /// A calendar-service error from the §10.2 table.
    pub(crate) fn cal(code: i64) -> Self {
        let (status, msg) = match code {
            190002 => (400, "invalid parameters in request"),
            190003 => (500, "internal service error"),
            190004 => (429, "method rate limited"),
            190005 => (429, "app rate limited"),
            190006 => (403, "wrong unit for app tenant"),
            190007 => (404, "app bot_id not found"),
            190008 => (400, "page_token or sync_token expired"),
            190009 => (
                400,
                "sync token cannot be used with other request restrictions",
            ),
            190010 => (429, "current operation rate limited"),
            191000 => (404, "calendar not found"),
            191001 => (400, "invalid calendar_id"),
            191002 => (403, "no calendar access_role"),
            191003 => (403, "calendar is deleted"),
            191004 => (403, "invalid calendar type"),
            193000 => (400, "invalid event_id"),
            193001 => (404, "event not found"),
            193002 => (403, "no permission to operate event"),
            193003 => (403, "event is deleted"),
            195100 => (404, "user is dismissed or not in the tenant"),
            _ => (400, "error"),
        };
        Self::new(status, code, msg)
    }

    /// 190002 with a detail appended to the message.
    pub(crate) fn invalid(detail: impl fmt::Display) -> Self {
        let mut e = Self::cal(190002);
        e.msg = format!("{}: {detail}", e.msg);
        e
    }

    /// HTTP 429 / 99991400 with the `x-ogw-ratelimit-*` headers.
    pub(crate) fn rate_limited(limit: u32, reset_secs: u64) -> Self {
        let mut e = Self::new(429, 99991400, "request trigger frequency limit");
        e.headers.push((
            HeaderName::from_static("x-ogw-ratelimit-limit"),
            limit.to_string(),
        ));
        e.headers.push((
            HeaderName::from_static("x-ogw-ratelimit-reset"),
            reset_secs.to_string(),
        ));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            json!({ "code": self.code, "msg": self.msg }).to_string(),
        )
            .into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp.extensions_mut().insert(FeishuCode(self.code));
        resp
    }
}

/// A JSON answer with an explicit status and Feishu code (token endpoints,
/// whose fields are top level).
pub(crate) fn raw_json(status: StatusCode, code: i64, body: &Value) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    resp.extensions_mut().insert(FeishuCode(code));
    resp
}

/// `{"code":0,"msg":"success","data":…}`, serialized in one pass.
pub(crate) fn ok_data<T: Serialize>(data: T) -> Response {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        code: i64,
        msg: &'a str,
        data: T,
    }
    let body = serde_json::to_vec(&Ok {
        code: 0,
        msg: "success",
        data,
    })
    .unwrap_or_default();
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response();
    resp.extensions_mut().insert(FeishuCode(0));
    resp
}

/// What the call log and the fault answers need of a request.
#[derive(Debug)]
pub(crate) struct Seen {
    kind: TokenKind,
    token: Option<String>,
}

/// Plugs Feishu into the kit: `X-Tt-Logid` on every answer, the
/// `{code,msg}` shapes of injected faults, the Feishu fields of the call log.
impl Service for Inner {
    const NAME: &'static str = "feishu";
    type Faults = Faults;
    type Fault = FaultKind;
    type FaultSpec = FaultSpec;
    type Call = CallRecord;
    type Seen = Seen;

    fn kit(&self) -> &Kit<Self> {
        &self.kit
    }

    fn see(&self, req: &Request) -> Seen {
        Seen {
            kind: token_kind(req.headers()),
            token: bearer(req.headers()).map(str::to_owned),
        }
    }

    /// Random faults hit the calendar API only.
    fn random_faults_apply(&self, path: &str) -> bool {
        path.starts_with("/open-apis/calendar/")
    }

    fn fault_answer(&self, fault: &FaultKind, seen: &Seen) -> Response {
        match fault {
            FaultKind::Status429 { reset_secs } => {
                let limit = self.config().rate_limit.map_or(50, |(s, _)| s);
                ApiError::rate_limited(limit, *reset_secs).into_response()
            }
            FaultKind::TokenExpired => {
                if let Some(t) = &seen.token {
                    lock(&self.auth).expire_token(t);
                }
                if seen.kind == TokenKind::User {
                    ApiError::new(400, 99991677, "token expire").into_response()
                } else {
                    ApiError::new(
                        400,
                        99991663,
                        "Invalid access token for authorization. Please make a request with token attached.",
                    )
                    .into_response()
                }
            }
            // Delays and truncation never get here: the kit applies them.
            FaultKind::Status5xx | FaultKind::Slow(_) | FaultKind::Truncated => {
                ApiError::cal(190003).into_response()
            }
        }
    }

    fn record(&self, seen: Seen, x: Exchange, resp: &mut Response) -> CallRecord {
        let log = log_id();
        if let Ok(v) = HeaderValue::from_str(&log) {
            resp.headers_mut().insert("x-tt-logid", v);
        }
        CallRecord {
            method: x.method,
            path: x.path,
            query: x.query,
            status: x.status,
            code: resp.extensions().get::<FeishuCode>().map(|c| c.0),
            token_kind: seen.kind,
            log_id: log,
            at_ms: x.at_ms,
        }
    }
}

impl Call for CallRecord {
    fn path(&self) -> &str {
        &self.path
    }
}

/// Route-level middleware: per app + endpoint sliding-window limit.
pub(crate) async fn rate_limit(
    State(inner): State<Arc<Inner>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    if let Some((per_sec, per_min)) = inner.config().rate_limit {
        let route = matched.as_ref().map_or(req.uri().path(), |m| m.as_str());
        let key = format!("{} {} {}", inner.app_id(), req.method(), route);
        let verdict =
            lock(&inner.limiter).check(&key, per_sec, per_min, tokio::time::Instant::now());
        if let Err(t) = verdict {
            return ApiError::rate_limited(t.limit, t.reset_secs).into_response();
        }
    }
    next.run(req).await
}

/// Fallback for unknown paths.
pub(crate) async fn not_found() -> Response {
    ApiError::new(404, 404, "404 page not found").into_response()
}
