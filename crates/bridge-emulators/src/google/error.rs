//! Google's JSON error envelope (sinks-api.md A.9) and the control-side error.

use std::fmt;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The `reason` of an error answer, attached as a response extension so the
/// call recorder does not have to parse bodies.
#[derive(Debug, Clone)]
pub(crate) struct ErrorReason(pub(crate) String);

/// An error answer:
/// `{"error":{"code","message","errors":[{"domain","reason","message",…}],"status"}}`
/// (boxed: it travels in every `Result` of the handlers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError(Box<ErrorBody>);

/// The fields of an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub(crate) status: StatusCode,
    pub(crate) domain: String,
    pub(crate) reason: String,
    pub(crate) message: String,
    /// `(locationType, location)`, e.g. `("header", "Authorization")`.
    pub(crate) location: Option<(String, String)>,
    pub(crate) headers: Vec<(HeaderName, String)>,
}

impl std::ops::Deref for ApiError {
    type Target = ErrorBody;

    fn deref(&self) -> &ErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorBody {
        &mut self.0
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.reason,
            self.message
        )
    }
}

/// The canonical `status` string of an HTTP code.
fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        410 | 412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "UNKNOWN",
    }
}

impl ApiError {
    pub(crate) fn new(status: u16, domain: &str, reason: &str, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorBody {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            domain: domain.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            location: None,
            headers: Vec::new(),
        }))
    }

    pub(crate) fn at(mut self, location_type: &str, location: &str) -> Self {
        self.location = Some((location_type.to_owned(), location.to_owned()));
        self
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 400 `global`/`invalid`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "global", "invalid", message)
    }

    /// 400 `global`/`required`.
    pub(crate) fn required(message: impl Into<String>) -> Self {
        Self::new(400, "global", "required", message)
    }

    /// 400 `global`/`badRequest`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "global", "badRequest", message)
    }

    /// 400 `global`/`parseError` (body is not JSON).
    pub(crate) fn parse_error() -> Self {
        Self::new(400, "global", "parseError", "Parse Error")
    }

    /// 400 `calendar`/`timeRangeEmpty`.
    pub(crate) fn time_range_empty(location: &str) -> Self {
        Self::new(
            400,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
        )
        .at("parameter", location)
    }

    /// 404 `global`/`notFound`.
    pub(crate) fn not_found() -> Self {
        Self::new(404, "global", "notFound", "Not Found")
    }

    /// 409 `global`/`duplicate`.
    pub(crate) fn duplicate() -> Self {
        Self::new(
            409,
            "global",
            "duplicate",
            "The requested identifier already exists.",
        )
    }

    /// 410 `global`/`deleted`.
    pub(crate) fn deleted() -> Self {
        Self::new(410, "global", "deleted", "Resource has been deleted")
    }

    /// 410 `global`/`fullSyncRequired`.
    pub(crate) fn full_sync_required() -> Self {
        Self::new(
            410,
            "global",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        )
    }

    /// 412 `global`/`conditionNotMet` at `If-Match`.
    pub(crate) fn condition_not_met() -> Self {
        Self::new(412, "global", "conditionNotMet", "Precondition Failed").at("header", "If-Match")
    }

    /// 401 `global`/`authError`: expired, revoked or unknown access token.
    pub(crate) fn auth_error() -> Self {
        Self::new(
            401,
            "global",
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
        .at("header", "Authorization")
        .with_header(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        )
    }

    /// 401 `global`/`required`: no credentials at all.
    pub(crate) fn login_required() -> Self {
        Self::new(
            401,
            "global",
            "required",
            "Request is missing required authentication credential. Expected OAuth 2 access \
             token, login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
        .at("header", "Authorization")
        .with_header(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"https://accounts.google.com/\"",
        )
    }

    /// 403 `global`/`insufficientPermissions` (token scopes too narrow).
    pub(crate) fn insufficient_scopes() -> Self {
        Self::new(
            403,
            "global",
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\"",
        )
    }

    /// 403 `calendar`/`requiredAccessLevel`: the caller may read but not write.
    pub(crate) fn writer_access_required() -> Self {
        Self::new(
            403,
            "calendar",
            "requiredAccessLevel",
            "You need to have writer access to this calendar.",
        )
    }

    /// 403 `usageLimits`/`rateLimitExceeded`.
    pub(crate) fn rate_limit_exceeded() -> Self {
        Self::new(
            403,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        )
    }

    /// 403 `usageLimits`/`userRateLimitExceeded`.
    pub(crate) fn user_rate_limit_exceeded() -> Self {
        Self::new(
            403,
            "usageLimits",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        )
    }

    /// 429 `usageLimits`/`rateLimitExceeded` with `Retry-After`.
    pub(crate) fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::new(
            429,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        )
        .with_header(header::RETRY_AFTER, retry_after_secs.to_string())
    }

    /// 403 `usageLimits`/`quotaExceeded` ("Calendar usage limits exceeded.").
    pub(crate) fn quota_exceeded() -> Self {
        Self::new(
            403,
            "usageLimits",
            "quotaExceeded",
            "Calendar usage limits exceeded.",
        )
    }

    /// 5xx `global`/`backendError`.
    pub(crate) fn backend_error(status: u16) -> Self {
        let status = if (500..=599).contains(&status) {
            status
        } else {
            503
        };
        Self::new(status, "global", "backendError", "Backend Error")
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        let mut item = json!({
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        });
        if let Some((kind, location)) = &self.location {
            item["locationType"] = json!(kind);
            item["location"] = json!(location);
        }
        json!({
            "error": {
                "code": self.status.as_u16(),
                "message": self.message,
                "errors": [item],
                "status": status_name(self.status.as_u16()),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            serde_json::to_string_pretty(&self.body()).unwrap_or_default(),
        )
            .into_response();
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(name.clone(), v);
            }
        }
        resp.extensions_mut().insert(ErrorReason(self.0.reason));
        resp
    }
}

/// Why a control-side operation (seeding, user-side edits, …) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulatorError {
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("user {0} already exists")]
    DuplicateUser(String),
    #[error("unknown calendar {0}")]
    UnknownCalendar(String),
    #[error("unknown event {event_id} in calendar {calendar_id}")]
    UnknownEvent {
        calendar_id: String,
        event_id: String,
    },
    /// The API would have answered with this error.
    #[error("rejected like the API would: {status} {reason}: {message}")]
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl From<ApiError> for EmulatorError {
    fn from(e: ApiError) -> Self {
        let e = *e.0;
        Self::Api {
            status: e.status.as_u16(),
            reason: e.reason,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let b = ApiError::condition_not_met().body();
        assert_eq!(b["error"]["code"], 412);
        assert_eq!(b["error"]["status"], "FAILED_PRECONDITION");
        assert_eq!(b["error"]["errors"][0]["reason"], "conditionNotMet");
        assert_eq!(b["error"]["errors"][0]["domain"], "global");
        assert_eq!(b["error"]["errors"][0]["location"], "If-Match");
        assert_eq!(b["error"]["message"], b["error"]["errors"][0]["message"]);
    }
}
