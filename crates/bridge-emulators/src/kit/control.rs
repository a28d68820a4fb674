//! The `/_emulator` control routes every emulator shares (JSON in and out,
//! no auth, not recorded): the call log, random faults, `fail_next` and
//! reset. Each emulator merges its own model routes into this router.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Service;

/// What a control handler answers.
pub(crate) type CtlResult = Result<Response, CtlError>;

/// A control-API failure: `{"error": "..."}` with its status.
#[derive(Debug)]
pub(crate) struct CtlError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for CtlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// An emulator's model error: 404 when it names something unknown, else 400.
pub(crate) trait ModelError: std::fmt::Display {
    fn is_unknown(&self) -> bool;
}

impl<E: ModelError> From<E> for CtlError {
    fn from(e: E) -> Self {
        let status = if e.is_unknown() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        Self(status, e.to_string())
    }
}

/// 200 with `v`.
pub(crate) fn ok(v: Value) -> CtlResult {
    Ok(Json(v).into_response())
}

/// 200 with `v` serialized.
pub(crate) fn ok_json<T: serde::Serialize>(v: &T) -> CtlResult {
    ok(serde_json::to_value(v).unwrap_or_default())
}

/// 400 with `msg`.
pub(crate) fn bad(msg: impl Into<String>) -> CtlError {
    CtlError(StatusCode::BAD_REQUEST, msg.into())
}

/// The common routes, to be nested at `/_emulator` after merging the
/// emulator's own:
///
/// | Method + path | Body | Answer |
/// |---|---|---|
/// | `GET`/`DELETE /calls` | — | `[CallRecord]` / `{}` |
/// | `PUT /faults` | `Faults` (durations in ms) | `{}` |
/// | `POST /fail_next` | `{path_contains, n?, fault, …}` (`n` defaults to 1; the rest is the service's fault spec) | `{}` |
/// | `POST /reset` | — | `{}`: forgets calls, random faults and queued one-shots |
pub(crate) fn router<S: Service>() -> Router<Arc<S>> {
    Router::new()
        .route("/calls", get(calls::<S>).delete(reset_calls::<S>))
        .route("/faults", put(set_faults::<S>))
        .route("/fail_next", post(fail_next::<S>))
        .route("/reset", post(reset::<S>))
}

async fn calls<S: Service>(State(svc): State<Arc<S>>) -> CtlResult {
    ok_json(&svc.kit().calls())
}

async fn reset_calls<S: Service>(State(svc): State<Arc<S>>) -> CtlResult {
    svc.kit().reset_calls();
    ok(json!({}))
}

async fn set_faults<S: Service>(State(svc): State<Arc<S>>, Json(f): Json<S::Faults>) -> CtlResult {
    svc.kit().set_faults(f);
    ok(json!({}))
}

#[derive(Deserialize)]
#[serde(bound = "F: DeserializeOwned")]
struct FailNext<F> {
    path_contains: String,
    #[serde(default = "one")]
    n: usize,
    #[serde(flatten)]
    fault: F,
}

fn one() -> usize {
    1
}

async fn fail_next<S: Service>(
    State(svc): State<Arc<S>>,
    Json(b): Json<FailNext<S::FaultSpec>>,
) -> CtlResult {
    let kind = b.fault.try_into().map_err(bad)?;
    svc.kit().fail_next(&b.path_contains, b.n, kind);
    ok(json!({}))
}

async fn reset<S: Service>(State(svc): State<Arc<S>>) -> CtlResult {
    svc.kit().reset_calls();
    svc.kit().clear_faults();
    ok(json!({}))
}
