//! The HTTP plumbing every endpoint shares: call recording, injected faults,
//! bearer-token checks and the per-user rate limiter, plus JSON answers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::auth::TokenRejection;
use super::error::{ApiError, ErrorReason};
use super::faults::{FaultKind, Limit};
use super::util::now_ms;
use super::{Inner, lock};

/// One observed request (API calls, batch parts, batch envelopes and token
/// requests; the control API is not recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub method: String,
    /// Path without the query (batch parts: the part's own path).
    pub path: String,
    /// Raw query string (empty when absent).
    pub query: String,
    pub status: u16,
    /// `reason` of an error answer (OAuth `error` for the token endpoint).
    pub reason: Option<String>,
    /// The authenticated user, when the token was valid.
    pub user: Option<String>,
    /// Sent as a part of a batch request.
    pub batch_part: bool,
    /// A Calendar API write (POST/PUT/PATCH/DELETE under `/calendar/v3/`).
    pub write: bool,
    /// `sendUpdates` of the request (`sendNotifications=true|false` is
    /// recorded as `all`/`none`).
    pub send_updates: Option<String>,
    pub at_ms: i64,
}

/// Request extension marking a batch part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPart;

/// Response extension naming the authenticated user.
#[derive(Debug, Clone)]
pub(crate) struct CallerEmail(pub(crate) String);

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Query pairs in order (repeated keys kept).
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// `sendUpdates` as recorded (legacy `sendNotifications` mapped).
pub(crate) fn send_updates_of(pairs: &[(String, String)]) -> Option<String> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    get("sendUpdates").or_else(|| {
        get("sendNotifications").map(|v| {
            if v.eq_ignore_ascii_case("true") {
                "all".to_owned()
            } else {
                "none".to_owned()
            }
        })
    })
}

/// A JSON answer (pretty unless `prettyPrint=false`), with `ETag` when given.
pub(crate) fn json_response(
    status: StatusCode,
    body: &Value,
    pretty: bool,
    etag: Option<&str>,
) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .unwrap_or_default();
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        text,
    )
        .into_response();
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        resp.headers_mut().insert(header::ETAG, e);
    }
    resp
}

fn fault_error(kind: &FaultKind) -> Option<ApiError> {
    Some(match kind {
        FaultKind::TooManyRequests { retry_after_secs } => {
            ApiError::too_many_requests(*retry_after_secs)
        }
        FaultKind::BackendError { status } => ApiError::backend_error(*status),
        FaultKind::RateLimitExceeded => ApiError::rate_limit_exceeded(),
        FaultKind::UserRateLimitExceeded => ApiError::user_rate_limit_exceeded(),
        FaultKind::QuotaExceeded => ApiError::quota_exceeded(),
        FaultKind::TokenExpired => ApiError::auth_error(),
        FaultKind::Error {
            status,
            domain,
            reason,
            message,
        } => ApiError::new(*status, domain, reason, message.clone()),
        FaultKind::Slow(_) => return None,
    })
}

/// Outer middleware: faults, call recording.
pub(crate) async fn observe(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let batch_part = req.extensions().get::<BatchPart>().is_some();
    let api = path.starts_with("/calendar/v3/");
    let write = api && method != Method::GET && method != Method::HEAD;
    let send_updates = send_updates_of(&query_pairs(Some(&query)));
    let token = bearer(req.headers()).map(str::to_owned);

    let fault = lock(&inner.faults).pick(&path, api);
    let resp = match fault {
        Some(FaultKind::Slow(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(kind) => {
            if kind == FaultKind::TokenExpired
                && let Some(t) = &token
            {
                lock(&inner.auth).expire_access(t);
            }
            fault_error(&kind)
                .map(IntoResponse::into_response)
                .unwrap_or_default()
        }
        None => next.run(req).await,
    };
    let status = resp.status().as_u16();
    let reason = resp.extensions().get::<ErrorReason>().map(|r| r.0.clone());
    let user = resp.extensions().get::<CallerEmail>().map(|c| c.0.clone());
    tracing::debug!(%method, %path, status, ?reason, batch_part, "google emulator request");
    lock(&inner.calls).push(CallRecord {
        method: method.to_string(),
        path,
        query,
        status,
        reason,
        user,
        batch_part,
        write,
        send_updates,
        at_ms: now_ms(),
    });
    resp
}

/// Route-level middleware of the Calendar API: bearer token, then the
/// per-user limiter (key: `quotaUser` when given, else the user).
pub(crate) async fn gate(
    State(inner): State<Arc<Inner>>,
    mut req: Request,
    next: Next,
) -> Response {
    let checked = lock(&inner.auth).check(bearer(req.headers()));
    let caller = match checked {
        Ok(c) => c,
        Err(TokenRejection::Missing) => return ApiError::login_required().into_response(),
        Err(TokenRejection::Invalid) => return ApiError::auth_error().into_response(),
    };
    let tag = |mut resp: Response, email: &str| {
        resp.extensions_mut().insert(CallerEmail(email.to_owned()));
        resp
    };
    if let Some(limit) = inner.config().rate_limit {
        let pairs = query_pairs(req.uri().query());
        let key = pairs
            .iter()
            .find(|(k, _)| k == "quotaUser")
            .map_or_else(|| caller.email.clone(), |(_, v)| format!("quotaUser:{v}"));
        let verdict = lock(&inner.limiter).check(&key, &limit, tokio::time::Instant::now());
        if let Err(t) = verdict {
            let e = if limit.answer_429 {
                ApiError::too_many_requests(t.retry_after_secs)
            } else if t.limit == Limit::UserMinute {
                ApiError::user_rate_limit_exceeded()
            } else {
                ApiError::rate_limit_exceeded()
            };
            return tag(e.into_response(), &caller.email);
        }
    }
    let email = caller.email.clone();
    req.extensions_mut().insert(caller);
    tag(next.run(req).await, &email)
}

/// Fallback for unknown paths.
pub(crate) async fn not_found() -> Response {
    ApiError::not_found().into_response()
}
