//! `/_emulator/…`: a JSON control API mirroring the Rust API, for non-Rust
//! tests and `feishu-bridge demo`. See the module docs of [`super`] for the
//! route list. Control calls are not recorded in `calls()`, not rate limited
//! and need no token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bridge_core::feishu::{Attendee, Event, RsvpStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::model::EmulatorError;
use super::{Inner, RoomEventKind, WebhookTarget, lock, push};

use crate::kit::Lane;
use crate::kit::control::{CtlResult, ModelError, bad, ok, ok_json};

impl ModelError for EmulatorError {
    fn is_unknown(&self) -> bool {
        matches!(self, Self::UnknownCalendar(_) | Self::UnknownEvent { .. })
    }
}

/// The common routes of the kit plus Feishu's own.
pub(crate) fn router() -> Router<Arc<Inner>> {
    crate::kit::control::router::<Inner>()
        .route("/users", post(add_user))
        .route("/users/{open_id}/tokens", post(issue_tokens))
        .route("/auto_login", post(auto_login))
        .route("/calendars", post(create_calendar))
        .route("/calendars/{cal}", axum::routing::delete(delete_calendar))
        .route("/calendars/{cal}/subscribers", post(subscribe))
        .route(
            "/calendars/{cal}/events",
            get(list_events).post(create_event),
        )
        .route("/calendars/{cal}/events/bulk", post(bulk_load))
        .route(
            "/calendars/{cal}/events/{id}",
            axum::routing::patch(patch_event).delete(delete_event),
        )
        .route("/calendars/{cal}/events/{id}/move", post(move_occurrence))
        .route(
            "/calendars/{cal}/events/{id}/cancel",
            post(cancel_occurrence),
        )
        .route("/calendars/{cal}/events/{id}/attendees", post(add_attendee))
        .route("/calendars/{cal}/events/{id}/rooms", post(add_room))
        .route(
            "/calendars/{cal}/events/{id}/rooms/{room}/status",
            post(set_room_status),
        )
        .route("/calendars/{cal}/events/{id}/reply", post(reply))
        .route("/tokens/expire", post(expire_tokens))
        .route("/webhook", axum::routing::put(set_webhook))
        .route("/webhook/verify", post(verify_webhook))
        .route("/ws/drop", post(drop_ws))
        .route("/emit/room_event", post(emit_room_event))
        .route("/emit/reserve_config", post(emit_reserve_config))
        .route("/emit/v2", post(emit_v2))
        .route("/emit/v1", post(emit_v1))
        .route("/room_levels", post(add_room_level))
        .route("/rooms", post(add_vc_room))
        .route(
            "/reserve_configs/{id}",
            axum::routing::patch(patch_reserve_config),
        )
        .route("/room_replies", get(room_replies))
        .route("/deliveries", get(deliveries))
        .route("/state", get(state))
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

async fn add_user(State(inner): State<Arc<Inner>>, Json(b): Json<NameBody>) -> CtlResult {
    let (open_id, primary) = lock(&inner.store).add_user(&b.name);
    ok(json!({ "open_id": open_id, "primary_calendar_id": primary }))
}

#[derive(Deserialize)]
struct ScopeBody {
    #[serde(default)]
    scope: Option<String>,
}

async fn issue_tokens(
    State(inner): State<Arc<Inner>>,
    Path(open_id): Path<String>,
    Json(b): Json<ScopeBody>,
) -> CtlResult {
    if !lock(&inner.store).users.contains_key(&open_id) {
        return Err(EmulatorError::UnknownUser(open_id).into());
    }
    let scope = b
        .scope
        .unwrap_or_else(|| "calendar:calendar:readonly offline_access".into());
    let (access, refresh) = inner.issue_user_token(&open_id, &scope);
    ok(json!({ "access_token": access, "refresh_token": refresh }))
}

#[derive(Deserialize)]
struct OpenIdBody {
    open_id: String,
}

async fn auto_login(State(inner): State<Arc<Inner>>, Json(b): Json<OpenIdBody>) -> CtlResult {
    lock(&inner.store).auto_login = Some(b.open_id);
    ok(json!({}))
}

#[derive(Deserialize)]
struct SummaryBody {
    summary: String,
}

async fn create_calendar(State(inner): State<Arc<Inner>>, Json(b): Json<SummaryBody>) -> CtlResult {
    let id = inner.mutate(|s, _| Ok(s.create_calendar(&b.summary)))?;
    ok(json!({ "calendar_id": id }))
}

async fn delete_calendar(State(inner): State<Arc<Inner>>, Path(cal): Path<String>) -> CtlResult {
    inner.mutate(|s, _| Ok(((), s.delete_calendar(&cal)?)))?;
    ok(json!({}))
}

async fn subscribe(
    State(inner): State<Arc<Inner>>,
    Path(cal): Path<String>,
    Json(b): Json<OpenIdBody>,
) -> CtlResult {
    let mut s = lock(&inner.store);
    s.live_calendar(&cal)?;
    s.event_subs.insert((cal, b.open_id));
    ok(json!({}))
}

async fn list_events(State(inner): State<Arc<Inner>>, Path(cal): Path<String>) -> CtlResult {
    let events = lock(&inner.store).events_of(&cal);
    ok_json(&events)
}

async fn create_event(
    State(inner): State<Arc<Inner>>,
    Path(cal): Path<String>,
    Json(ev): Json<Event>,
) -> CtlResult {
    let id = inner.mutate(|s, now| s.create_event(&cal, ev, now))?;
    ok(json!({ "event_id": id }))
}

async fn bulk_load(
    State(inner): State<Arc<Inner>>,
    Path(cal): Path<String>,
    Json(events): Json<Vec<Event>>,
) -> CtlResult {
    let n = events.len();
    let now = super::util::now_secs();
    lock(&inner.store).bulk_load(&cal, events, now)?;
    ok(json!({ "loaded": n }))
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

async fn patch_event(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> CtlResult {
    let mut bad_patch = None;
    inner.mutate(|s, _| {
        let changes = s.update_event(&cal, &id, |ev| {
            let mut v = serde_json::to_value(&*ev).unwrap_or_default();
            merge_patch(&mut v, &patch);
            match serde_json::from_value::<Event>(v) {
                Ok(new) => *ev = new,
                Err(e) => bad_patch = Some(e.to_string()),
            }
        })?;
        Ok(((), changes))
    })?;
    match bad_patch {
        Some(e) => Err(bad(format!("patch is not a valid event: {e}"))),
        None => ok(json!({})),
    }
}

async fn delete_event(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
) -> CtlResult {
    inner.mutate(|s, _| Ok(((), s.delete_event(&cal, &id)?)))?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct MoveBody {
    original_time: i64,
    start: i64,
    end: i64,
    #[serde(default)]
    summary: Option<String>,
}

async fn move_occurrence(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
    Json(b): Json<MoveBody>,
) -> CtlResult {
    let exc = inner.mutate(|s, now| {
        s.move_occurrence(
            &cal,
            &id,
            b.original_time,
            (b.start, b.end),
            b.summary.as_deref(),
            now,
        )
    })?;
    ok(json!({ "event_id": exc }))
}

#[derive(Deserialize)]
struct CancelBody {
    original_time: i64,
}

async fn cancel_occurrence(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
    Json(b): Json<CancelBody>,
) -> CtlResult {
    let exc = inner.mutate(|s, now| s.cancel_occurrence(&cal, &id, b.original_time, now))?;
    ok(json!({ "event_id": exc }))
}

async fn add_attendee(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
    Json(a): Json<Attendee>,
) -> CtlResult {
    inner.mutate(|s, _| Ok(((), s.add_attendee(&cal, &id, a)?)))?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct RoomBody {
    room_id: String,
    name: String,
}

async fn add_room(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
    Json(b): Json<RoomBody>,
) -> CtlResult {
    inner.mutate(|s, _| Ok(((), s.add_room(&cal, &id, &b.room_id, &b.name)?)))?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct RoomStatusBody {
    rsvp_status: String,
}

async fn set_room_status(
    State(inner): State<Arc<Inner>>,
    Path((cal, id, room)): Path<(String, String, String)>,
    Json(b): Json<RoomStatusBody>,
) -> CtlResult {
    let status = RsvpStatus::from_wire(&b.rsvp_status);
    inner.mutate(|s, _| Ok(((), s.set_room_status(&cal, &id, &room, status)?)))?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct ReplyBody {
    open_id: String,
    rsvp_status: String,
}

async fn reply(
    State(inner): State<Arc<Inner>>,
    Path((cal, id)): Path<(String, String)>,
    Json(b): Json<ReplyBody>,
) -> CtlResult {
    let status = RsvpStatus::from_wire(&b.rsvp_status);
    inner.mutate(|s, _| Ok(((), s.reply(&cal, &id, &b.open_id, status)?)))?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct KindBody {
    kind: String,
}

async fn expire_tokens(State(inner): State<Arc<Inner>>, Json(b): Json<KindBody>) -> CtlResult {
    match b.kind.as_str() {
        "tenant" => lock(&inner.auth).expire_tenant_tokens(),
        "user" => lock(&inner.auth).expire_user_tokens(),
        "refresh" => lock(&inner.auth).revoke_refresh_tokens(),
        "sync" => inner.kit.cursors.expire(Lane::Sync),
        "page" => inner.kit.cursors.expire(Lane::Page),
        other => return Err(bad(format!("unknown token kind {other}"))),
    }
    ok(json!({}))
}

async fn set_webhook(
    State(inner): State<Arc<Inner>>,
    Json(t): Json<Option<WebhookTarget>>,
) -> CtlResult {
    lock(&inner.cfg).webhook = t;
    ok(json!({}))
}

async fn verify_webhook(State(inner): State<Arc<Inner>>) -> CtlResult {
    match super::webhook::verify_url(&inner).await {
        Ok(()) => ok(json!({ "verified": true })),
        Err(e) => ok(json!({ "verified": false, "error": e.to_string() })),
    }
}

async fn drop_ws(State(inner): State<Arc<Inner>>) -> CtlResult {
    inner.ws.drop_all();
    ok(json!({}))
}

#[derive(Deserialize)]
struct RoomEventBody {
    kind: String,
    uid: String,
    #[serde(default)]
    original_time: i64,
    start_ms: i64,
    end_ms: i64,
    room_ids: Vec<String>,
    organizer_open_id: String,
}

async fn emit_room_event(
    State(inner): State<Arc<Inner>>,
    Json(b): Json<RoomEventBody>,
) -> CtlResult {
    let kind = match b.kind.as_str() {
        "created" => RoomEventKind::Created,
        "updated" => RoomEventKind::Updated,
        "deleted" => RoomEventKind::Deleted,
        other => return Err(bad(format!("unknown room event kind {other}"))),
    };
    let rooms: Vec<&str> = b.room_ids.iter().map(String::as_str).collect();
    let id = inner.room_event(
        kind,
        &b.uid,
        b.original_time,
        b.start_ms,
        b.end_ms,
        &rooms,
        &b.organizer_open_id,
    );
    ok(json!({ "uuid": id }))
}

async fn emit_reserve_config(State(inner): State<Arc<Inner>>, Json(ev): Json<Value>) -> CtlResult {
    let id = push::emit_v2(&inner, "vc.reserve_config.updated_v1", ev);
    ok(json!({ "event_id": id }))
}

#[derive(Deserialize)]
struct V2Body {
    event_type: String,
    event: Value,
}

async fn emit_v2(State(inner): State<Arc<Inner>>, Json(b): Json<V2Body>) -> CtlResult {
    let id = push::emit_v2(&inner, &b.event_type, b.event);
    ok(json!({ "event_id": id }))
}

async fn emit_v1(State(inner): State<Arc<Inner>>, Json(ev): Json<Value>) -> CtlResult {
    let id = push::emit_v1(&inner, ev);
    ok(json!({ "uuid": id }))
}

async fn deliveries(State(inner): State<Arc<Inner>>) -> CtlResult {
    ok_json(&inner.outbox.deliveries())
}

async fn state(State(inner): State<Arc<Inner>>) -> CtlResult {
    let s = lock(&inner.store);
    let users: Vec<Value> = s
        .users
        .values()
        .map(|u| json!({"open_id": u.open_id, "name": u.name, "primary_calendar_id": u.primary}))
        .collect();
    let calendars: Vec<Value> = s
        .calendars
        .values()
        .map(|c| json!({"calendar": c.cal, "deleted": c.deleted}))
        .collect();
    let rooms: Vec<Value> = s
        .rooms
        .iter()
        .map(|(id, r)| json!({"room_id": id, "name": r.name, "calendar_id": r.calendar_id}))
        .collect();
    ok(json!({
        "base_url": inner.kit.base_url(),
        "users": users,
        "rooms": rooms,
        "calendars": calendars,
        "version": s.version,
        "ws_connections": inner.ws.live(),
    }))
}

#[derive(Deserialize)]
struct LevelBody {
    name: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    custom_group_id: Option<String>,
}

async fn add_room_level(State(inner): State<Arc<Inner>>, Json(b): Json<LevelBody>) -> CtlResult {
    match inner.add_room_level(
        &b.name,
        b.parent_id.as_deref(),
        b.custom_group_id.as_deref().unwrap_or(""),
    ) {
        Ok(id) => ok(json!({ "room_level_id": id })),
        Err(e) => Err(bad(e.to_string())),
    }
}

async fn add_vc_room(
    State(inner): State<Arc<Inner>>,
    Json(b): Json<super::rooms::NewRoom>,
) -> CtlResult {
    match inner.add_vc_room(b) {
        Ok(id) => ok(json!({ "room_id": id })),
        Err(e) => Err(bad(e.to_string())),
    }
}

async fn patch_reserve_config(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Json(b): Json<Value>,
) -> CtlResult {
    match inner.patch_reserve_config(&id, &b) {
        Ok(()) => ok(json!({})),
        Err(e) => Err(bad(e.to_string())),
    }
}

async fn room_replies(State(inner): State<Arc<Inner>>) -> CtlResult {
    ok_json(&inner.room_replies())
}
