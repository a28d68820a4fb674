//! The outer middleware of every emulated API: injected faults first, then
//! the handler, then the call log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::faults::{Effect, Fault};
use super::ids::now_ms;
use super::{Exchange, Service};

/// `axum::middleware::from_fn_with_state(state, kit::observe::<S>)` around
/// the routes whose requests are recorded and may be faulted.
pub(crate) async fn observe<S: Service>(
    State(svc): State<Arc<S>>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let seen = svc.see(&req);
    let fault = svc.kit().pick_fault(&path, svc.random_faults_apply(&path));
    let mut resp = match fault.as_ref().map(|f| (f, f.effect())) {
        None => next.run(req).await,
        Some((_, Effect::Delay(d))) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some((_, Effect::Truncate)) => truncate_body(next.run(req).await).await,
        Some((f, Effect::Answer)) => svc.fault_answer(f, &seen),
    };
    let status = resp.status().as_u16();
    tracing::debug!(emulator = S::NAME, %method, %path, status, "emulator request");
    let exchange = Exchange {
        method,
        path,
        query,
        status,
        at_ms: now_ms(),
    };
    let call = svc.record(seen, exchange, &mut resp);
    svc.kit().record(call);
    resp
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The response with the first half of its body (extensions kept).
async fn truncate_body(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(cut.len() as u64));
    Response::from_parts(parts, Body::from(cut))
}
