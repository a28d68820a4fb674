//! `/_emulator/…`: a JSON control API mirroring the Rust API, for non-Rust
//! tests and `feishu-bridge demo`. See the module docs of [`super`] for the
//! route list. Control calls are not recorded in `calls()`, not rate limited
//! and need no token.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::EmulatorError;
use super::model::Role;
use super::{Inner, lock, time};
use crate::kit::Lane;
use crate::kit::control::{CtlResult, ModelError, bad, ok, ok_json};

impl ModelError for EmulatorError {
    fn is_unknown(&self) -> bool {
        matches!(
            self,
            Self::UnknownCalendar(_) | Self::UnknownEvent { .. } | Self::UnknownUser(_)
        )
    }
}

/// The common routes of the kit plus Google's own.
pub(crate) fn router() -> Router<Arc<Inner>> {
    crate::kit::control::router::<Inner>()
        .route("/users", post(add_user))
        .route("/users/{email}/tokens", post(issue_tokens))
        .route("/calendars", post(create_calendar))
        .route("/calendars/{cal}/share", post(share))
        .route("/calendars/{cal}/events", get(list_events).post(seed_event))
        .route(
            "/calendars/{cal}/events/{id}",
            axum::routing::patch(user_edit).delete(user_delete),
        )
        .route("/calendars/{cal}/instances", get(instances))
        .route("/tokens/revoke", post(revoke))
        .route("/tokens/expire", post(expire))
        .route("/quota/exhaust", post(exhaust_quota))
        .route("/quota/reset", post(reset_quota))
        .route("/writes", get(writes))
        .route("/notifications", get(notifications))
        .route("/service_account", get(service_account))
        .route("/state", get(state))
}

#[derive(Deserialize)]
struct UserBody {
    email: String,
    #[serde(default)]
    time_zone: Option<String>,
}

async fn add_user(State(inner): State<Arc<Inner>>, Json(b): Json<UserBody>) -> CtlResult {
    let primary = inner.add_user(&b.email, b.time_zone.as_deref())?;
    ok(json!({ "email": b.email, "primary_calendar_id": primary }))
}

#[derive(Deserialize)]
struct ScopeBody {
    #[serde(default)]
    scope: Option<String>,
}

async fn issue_tokens(
    State(inner): State<Arc<Inner>>,
    Path(email): Path<String>,
    Json(b): Json<ScopeBody>,
) -> CtlResult {
    let scope = b.scope.unwrap_or_else(|| super::SCOPE_CALENDAR.to_owned());
    let (access, refresh) = inner.issue_tokens(&email, &scope)?;
    ok(json!({ "access_token": access, "refresh_token": refresh }))
}

#[derive(Deserialize)]
struct CalendarBody {
    owner: String,
    summary: String,
    #[serde(default)]
    time_zone: Option<String>,
}

async fn create_calendar(
    State(inner): State<Arc<Inner>>,
    Json(b): Json<CalendarBody>,
) -> CtlResult {
    let id = lock(&inner.store).create_calendar(
        &b.owner,
        &b.summary,
        b.time_zone.as_deref(),
        None,
        None,
    )?;
    ok(json!({ "calendar_id": id }))
}

#[derive(Deserialize)]
struct ShareBody {
    email: String,
    role: Role,
}

async fn share(
    State(inner): State<Arc<Inner>>,
    Path(cal): Path<String>,
    Json(b): Json<ShareBody>,
) -> CtlResult {
    lock(&inner.store).share(&cal, &b.email, b.role)?;
    ok(json!({}))
}

async fn list_events(State(inner): State<Arc<Inner>>, Path(cal): Path<String>) -> CtlResult {
    let events = lock(&inner.store).stored_events(&cal)?;
    ok_json(&events)
}

async fn seed_event(
    State(inner): State<Arc<Inner>>,
    Path(cal): Path<String>,
    Json(ev): Json<Value>,
) -> CtlResult {
    let id = inner.seed(&cal, &ev)?;
    ok(json!({ "id": id }))
}

async fn user_edit(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> CtlResult {
    let ev = inner.user_edit(&cal, &id, &patch)?;
    ok_json(&ev)
}

async fn user_delete(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
) -> CtlResult {
    inner.user_delete(&cal, &id)?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct Window {
    #[serde(rename = "timeMin")]
    time_min: String,
    #[serde(rename = "timeMax")]
    time_max: String,
}

async fn instances(
    State(inner): State<Arc<Inner>>,
    Path(cal): Path<String>,
    Query(w): Query<Window>,
) -> CtlResult {
    let min = time::parse_rfc3339(&w.time_min).ok_or_else(|| bad("timeMin must be RFC 3339"))?;
    let max = time::parse_rfc3339(&w.time_max).ok_or_else(|| bad("timeMax must be RFC 3339"))?;
    let list = inner.expanded(&cal, min, max)?;
    ok_json(&list)
}

#[derive(Deserialize)]
struct RevokeBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

async fn revoke(State(inner): State<Arc<Inner>>, Json(b): Json<RevokeBody>) -> CtlResult {
    let mut auth = lock(&inner.auth);
    let revoked = match (&b.refresh_token, &b.email) {
        (Some(t), _) => usize::from(auth.revoke_one(t)),
        (None, e) => auth.revoke_refresh(e.as_deref()),
    };
    ok(json!({ "revoked": revoked }))
}

#[derive(Deserialize)]
struct ExpireBody {
    kind: String,
}

async fn expire(State(inner): State<Arc<Inner>>, Json(b): Json<ExpireBody>) -> CtlResult {
    match b.kind.as_str() {
        "access" => lock(&inner.auth).expire_all_access(),
        "sync" => inner.kit.cursors.expire(Lane::Sync),
        other => return Err(bad(format!("unknown token kind {other:?}"))),
    }
    ok(json!({}))
}

#[derive(Deserialize)]
struct EmailBody {
    email: String,
}

async fn exhaust_quota(State(inner): State<Arc<Inner>>, Json(b): Json<EmailBody>) -> CtlResult {
    inner.exhaust_quota(&b.email)?;
    ok(json!({}))
}

async fn reset_quota(State(inner): State<Arc<Inner>>) -> CtlResult {
    inner.reset_quota();
    ok(json!({}))
}

async fn writes(State(inner): State<Arc<Inner>>) -> CtlResult {
    ok_json(&lock(&inner.store).writes)
}

async fn notifications(State(inner): State<Arc<Inner>>) -> CtlResult {
    ok_json(&lock(&inner.store).notifications)
}

async fn service_account(State(inner): State<Arc<Inner>>) -> CtlResult {
    ok(inner.service_account_json())
}

async fn state(State(inner): State<Arc<Inner>>) -> CtlResult {
    let (users, calendars, version) = {
        let store = lock(&inner.store);
        let users: Vec<String> = store.users.keys().cloned().collect();
        let calendars: Vec<Value> = store
            .calendars
            .values()
            .map(|c| {
                json!({
                    "id": c.id,
                    "summary": c.summary,
                    "owner": c.owner,
                    "time_zone": c.time_zone,
                    "events": c.events.len(),
                })
            })
            .collect();
        (users, calendars, store.version())
    };
    ok(json!({
        "users": users,
        "calendars": calendars,
        "version": version,
        "write_count": inner.write_count(),
        "batch_count": inner.batch_count.load(Ordering::SeqCst),
    }))
}
