//! The HTTP plumbing every endpoint shares: what the kit's call log and
//! injected faults look like here, bearer-token checks and the per-user rate
//! limiter, plus JSON answers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::auth::TokenRejection;
use super::error::{ApiError, ErrorReason};
use super::faults::{FaultKind, FaultSpec, Faults, Limit};
use super::{Inner, lock};
use crate::kit::{Call, Exchange, Kit, Service, bearer};

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

/// What the call log and the fault answers need of a request.
#[derive(Debug)]
pub(crate) struct Seen {
    batch_part: bool,
    write: bool,
    send_updates: Option<String>,
    token: Option<String>,
}

/// Plugs Google into the kit: the error envelope of injected faults and the
/// Google fields of the call log.
impl Service for Inner {
    const NAME: &'static str = "google";
    type Faults = Faults;
    type Fault = FaultKind;
    type FaultSpec = FaultSpec;
    type Call = CallRecord;
    type Seen = Seen;

    fn kit(&self) -> &Kit<Self> {
        &self.kit
    }

    fn see(&self, req: &Request) -> Seen {
        let method = req.method();
        Seen {
            batch_part: req.extensions().get::<BatchPart>().is_some(),
            write: is_api(req.uri().path()) && method != Method::GET && method != Method::HEAD,
            send_updates: send_updates_of(&query_pairs(req.uri().query())),
            token: bearer(req.headers()).map(str::to_owned),
        }
    }

    /// Random faults hit the Calendar API only.
    fn random_faults_apply(&self, path: &str) -> bool {
        is_api(path)
    }

    fn fault_answer(&self, fault: &FaultKind, seen: &Seen) -> Response {
        if *fault == FaultKind::TokenExpired
            && let Some(t) = &seen.token
        {
            lock(&self.auth).expire_access(t);
        }
        fault_error(fault)
            .map(IntoResponse::into_response)
            .unwrap_or_default()
    }

    fn record(&self, seen: Seen, x: Exchange, resp: &mut Response) -> CallRecord {
        CallRecord {
            method: x.method,
            path: x.path,
            query: x.query,
            status: x.status,
            reason: resp.extensions().get::<ErrorReason>().map(|r| r.0.clone()),
            user: resp.extensions().get::<CallerEmail>().map(|c| c.0.clone()),
            batch_part: seen.batch_part,
            write: seen.write,
            send_updates: seen.send_updates,
            at_ms: x.at_ms,
        }
    }
}

impl Call for CallRecord {
    fn path(&self) -> &str {
        &self.path
    }
}

fn is_api(path: &str) -> bool {
    path.starts_with("/calendar/v3/")
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
