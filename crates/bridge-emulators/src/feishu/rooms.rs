//! Meeting rooms (`rooms.md` §9): the room registry and levels (vc/v1),
//! booking restrictions with level inheritance (`reserve_configs`), the
//! third-party room events and the legacy `meeting_room` APIs a room system
//! answers with (`summary/batch_get`, `freebusy/batch_get`, `instance/reply`).
//!
//! # Emulator choices where `rooms.md` says UNCONFIRMED
//!
//! * `GET reserve_configs/reserve_scope` answers the node's **own**
//!   restrictions: a sub-object (`approve_config`, `time_config`,
//!   `reserve_scope_config`) the room or level never set is absent, so a
//!   client resolves inheritance itself through the level path. The tenant
//!   root (`room_level_id` `"0"`) always answers the documented defaults.
//! * Inheritance: a room or level without its own sub-object inherits the
//!   nearest ancestor's; a level whose `time_config` / `reserve_scope_config`
//!   has `if_cover_child_scope = true` overrides every descendant's own.
//!   `approve_config` has no such flag and is never forced down.
//! * Limits apply only with `time_switch = 1`; approval only with
//!   `approval_switch = 1`.
//! * `instance/reply`: `ACCEPTED_BY_ADMIN` / `DECLINED_BY_ADMIN` set the
//!   room attendee's `rsvp_status` to `accept` / `decline` (for
//!   `original_time = 0`, on the master and every exception that has the
//!   room); `NOT_CHECK_IN` / `ENDED_BEFORE_DUE` are recorded and leave the
//!   attendee as it is. An `original_time` that is neither 0 (with a live
//!   event), an exception nor an occurrence of the uid's series is 105003.
//!   Every accepted reply is kept ([`RoomReply`]) for assertions.
//! * Third-party room events fire for every event on a third-party room's
//!   calendar: created when the event first appears there, updated only when
//!   its start or end changes, deleted when it disappears (deleted, room
//!   removed, or an exception cancelled). Bookings of such rooms never
//!   resolve by themselves: the attendee stays `needs_action` until a reply.
//! * Registering a room emits `vc.room.created_v1` (v2, `{room}`).
//! * `freebusy/batch_get` lists events whose room attendee did not decline;
//!   recurring events are expanded, each instance with its original start as
//!   `original_time` (0 for single events).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bridge_core::feishu::{AttendeeType, Event, EventStatus, RsvpStatus};
use chrono::{DateTime, FixedOffset, TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::identify_any;
use super::http::{ApiError, ok_data};
use super::model::{ChangeKind, Changes, Store};
use super::util::{now_ms, rand_hex};
use super::{Inner, RoomEventKind, lock, push, recur};

/// The tenant root level.
pub const ROOT_LEVEL: &str = "0";

type ApiResult = Result<Response, ApiError>;

// ----- model ---------------------------------------------------------------------

/// A room level (`omb_…`).
#[derive(Debug, Clone, Serialize)]
pub struct RoomLevel {
    pub room_level_id: String,
    pub name: String,
    pub parent_id: String,
    pub custom_group_id: String,
}

/// A room of the registry (`omm_…`).
#[derive(Debug, Clone, Serialize)]
pub struct RoomSpec {
    pub room_id: String,
    pub name: String,
    pub capacity: i64,
    pub description: String,
    pub custom_room_id: String,
    pub room_level_id: String,
    /// Bookings are decided by a third-party room system (`instance/reply`).
    pub third_party: bool,
}

/// One accepted `instance/reply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomReply {
    pub room_id: String,
    pub uid: String,
    pub original_time: i64,
    pub status: String,
    pub at_ms: i64,
}

/// Booking restrictions of one node; `None` = not set here.
#[derive(Debug, Clone, Default)]
struct NodeConfig {
    approve: Option<Value>,
    time: Option<Value>,
    scope: Option<Value>,
}

/// The room part of the tenant.
#[derive(Debug, Default)]
pub(crate) struct RoomsState {
    levels: BTreeMap<String, RoomLevel>,
    rooms: BTreeMap<String, RoomSpec>,
    configs: HashMap<String, NodeConfig>,
    /// Last announced `(start_ms, end_ms)` per (room, event id) of
    /// third-party rooms.
    announced: HashMap<(String, String), (i64, i64)>,
    replies: Vec<RoomReply>,
    /// open_id -> open_department_ids (contact v3).
    departments: HashMap<String, Vec<String>>,
}

impl RoomsState {
    /// Level ids from the root's child down to `level_id` (root excluded).
    fn level_path(&self, level_id: &str) -> Vec<String> {
        let mut path = Vec::new();
        let mut cur = level_id.to_owned();
        let mut guard = 0;
        while cur != ROOT_LEVEL && !cur.is_empty() && guard < 64 {
            path.push(cur.clone());
            cur = self
                .levels
                .get(&cur)
                .map(|l| l.parent_id.clone())
                .unwrap_or_default();
            guard += 1;
        }
        path.reverse();
        path
    }

    fn room_json(&self, r: &RoomSpec) -> Value {
        json!({
            "room_id": r.room_id,
            "name": r.name,
            "capacity": r.capacity,
            "description": r.description,
            "display_id": format!("LM{}", &r.room_id[r.room_id.len().saturating_sub(8)..]),
            "custom_room_id": r.custom_room_id,
            "room_level_id": r.room_level_id,
            "path": std::iter::once(ROOT_LEVEL.to_owned()).chain(self.level_path(&r.room_level_id)).collect::<Vec<_>>(),
            "room_status": {"status": true, "schedule_status": true, "disable_start_time": "0", "disable_end_time": "0", "disable_reason": "", "contact_ids": [], "disable_notice": false, "resume_notice": false},
            "device": [],
        })
    }

    fn level_json(&self, l: &RoomLevel) -> Value {
        let mut path = vec![ROOT_LEVEL.to_owned()];
        path.extend(self.level_path(&l.room_level_id));
        json!({
            "room_level_id": l.room_level_id,
            "name": l.name,
            "parent_id": l.parent_id,
            "path": path,
            "has_child": self.levels.values().any(|c| c.parent_id == l.room_level_id)
                || self.rooms.values().any(|r| r.room_level_id == l.room_level_id),
            "custom_group_id": l.custom_group_id,
        })
    }

    /// Scope type of an id: 1 = level, 2 = room; `None` when unknown.
    fn scope_type_of(&self, id: &str) -> Option<i64> {
        if self.rooms.contains_key(id) {
            Some(2)
        } else if id == ROOT_LEVEL || self.levels.contains_key(id) {
            Some(1)
        } else {
            None
        }
    }

    /// The node path root -> `id` (a room's path ends with the room).
    fn node_path(&self, id: &str) -> Vec<String> {
        let mut out = vec![ROOT_LEVEL.to_owned()];
        if let Some(r) = self.rooms.get(id) {
            out.extend(self.level_path(&r.room_level_id));
            out.push(id.to_owned());
        } else {
            out.extend(self.level_path(id));
        }
        out
    }

    /// The effective restrictions of a room or level (inheritance rules in
    /// the module docs).
    fn effective(&self, id: &str) -> (Value, Value, Value) {
        let mut approve = default_approve();
        let mut time = default_time();
        let mut scope = default_scope();
        let (mut time_forced, mut scope_forced) = (false, false);
        for node in self.node_path(id) {
            let Some(c) = self.configs.get(&node) else {
                continue;
            };
            if let Some(a) = &c.approve {
                approve = a.clone();
            }
            if let Some(t) = &c.time
                && !time_forced
            {
                time = t.clone();
                time_forced = cover(t);
            }
            if let Some(s) = &c.scope
                && !scope_forced
            {
                scope = s.clone();
                scope_forced = cover(s);
            }
        }
        (approve, time, scope)
    }
}

fn cover(v: &Value) -> bool {
    matches!(v.get("if_cover_child_scope"), Some(Value::Bool(true)))
        || v.get("if_cover_child_scope").and_then(Value::as_i64) == Some(1)
}

fn default_approve() -> Value {
    json!({"approval_switch": 0, "approval_condition": 0, "meeting_duration": 99.0, "approvers": []})
}

fn default_time() -> Value {
    json!({"if_cover_child_scope": false, "time_switch": 0, "days_in_advance": 365, "opening_hour": "28800", "start_time": "0", "end_time": "86400", "max_duration": 2})
}

fn default_scope() -> Value {
    json!({"if_cover_child_scope": false, "allow_all_users": 1, "allow_users": [], "allow_depts": []})
}

// ----- validation of PATCH bodies ------------------------------------------------

fn param_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(400, 121003, format!("param error: {detail}"))
}

fn int_of(v: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| param_error(format!("{key} must be an integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| param_error(format!("{key} must be an integer"))),
        Some(_) => Err(param_error(format!("{key} must be an integer"))),
    }
}

fn bool_of(v: &Value, key: &str) -> Result<bool, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
            Ok(n.as_i64() == Some(1))
        }
        Some(_) => Err(param_error(format!("{key} must be a boolean"))),
    }
}

fn switch(v: &Value, key: &str, default: i64) -> Result<i64, ApiError> {
    let s = int_of(v, key)?.unwrap_or(default);
    if s != 0 && s != 1 {
        return Err(param_error(format!("{key} must be 0 or 1")));
    }
    Ok(s)
}

/// Seconds of day rounded to the nearest minute.
fn round_minute(s: i64) -> i64 {
    (s + 30) / 60 * 60
}

fn user_list(store: &Store, v: &Value, key: &str) -> Result<Vec<String>, ApiError> {
    let Some(items) = v.get(key) else {
        return Ok(Vec::new());
    };
    let items = items
        .as_array()
        .ok_or_else(|| param_error(format!("{key} must be a list")))?;
    let mut out = Vec::new();
    for it in items {
        let id = it
            .get("user_id")
            .and_then(|u| {
                u.as_str()
                    .or_else(|| u.get("open_id").and_then(Value::as_str))
            })
            .ok_or_else(|| param_error(format!("{key}[].user_id is required")))?;
        if !store.users.contains_key(id) {
            return Err(ApiError::new(400, 126013, "some userIDs are invalid"));
        }
        out.push(id.to_owned());
    }
    Ok(out)
}

fn dept_list(v: &Value) -> Result<Vec<String>, ApiError> {
    let Some(items) = v.get("allow_depts") else {
        return Ok(Vec::new());
    };
    let items = items
        .as_array()
        .ok_or_else(|| param_error("allow_depts must be a list"))?;
    items
        .iter()
        .map(|d| {
            d.get("department_id")
                .and_then(Value::as_str)
                .filter(|s| s.starts_with("od-"))
                .map(str::to_owned)
                .ok_or_else(|| ApiError::new(400, 126014, "some deptIDs are invalid"))
        })
        .collect()
}

fn users_json(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(|u| json!({"user_id": u})).collect())
}

/// `approval_config` of a PATCH: unset fields take their defaults.
fn validate_approve(store: &Store, v: &Value) -> Result<Value, ApiError> {
    let sw = switch(v, "approval_switch", 0)?;
    let cond = switch(v, "approval_condition", 0)?;
    let duration = match v.get("meeting_duration") {
        None | Some(Value::Null) => 99.0,
        Some(d) => d
            .as_f64()
            .or_else(|| d.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| param_error("meeting_duration must be a number"))?,
    };
    if !(0.1..=99.0).contains(&duration) {
        return Err(param_error("meeting_duration must be within 0.1..=99"));
    }
    let approvers = user_list(store, v, "approvers")?;
    if sw == 1 && approvers.is_empty() {
        return Err(param_error(
            "approvers needs at least one user when approval_switch is 1",
        ));
    }
    Ok(json!({
        "approval_switch": sw,
        "approval_condition": cond,
        "meeting_duration": (duration * 100.0).round() / 100.0,
        "approvers": users_json(&approvers),
    }))
}

/// `time_config` of a PATCH: unset fields take their defaults.
fn validate_time(v: &Value) -> Result<Value, ApiError> {
    let sw = switch(v, "time_switch", 0)?;
    let days = int_of(v, "days_in_advance")?.unwrap_or(365);
    if !(1..=730).contains(&days) {
        return Err(param_error("days_in_advance must be within 1..=730"));
    }
    let opening = int_of(v, "opening_hour")?.unwrap_or(28_800);
    let start = int_of(v, "start_time")?.unwrap_or(0);
    let end = int_of(v, "end_time")?.unwrap_or(86_400);
    for (k, s) in [
        ("opening_hour", opening),
        ("start_time", start),
        ("end_time", end),
    ] {
        if !(0..=86_400).contains(&s) {
            return Err(param_error(format!("{k} must be within 0..=86400")));
        }
    }
    if end < start + 30 {
        return Err(param_error("end_time must be at least start_time + 30"));
    }
    let max = int_of(v, "max_duration")?.unwrap_or(2);
    if !(1..=99).contains(&max) {
        return Err(param_error("max_duration must be within 1..=99"));
    }
    Ok(json!({
        "if_cover_child_scope": bool_of(v, "if_cover_child_scope")?,
        "time_switch": sw,
        "days_in_advance": days,
        "opening_hour": round_minute(opening).to_string(),
        "start_time": round_minute(start).to_string(),
        "end_time": round_minute(end).min(86_400).to_string(),
        "max_duration": max,
    }))
}

/// `reserve_scope_config` of a PATCH.
fn validate_scope(store: &Store, v: &Value) -> Result<Value, ApiError> {
    let all = int_of(v, "allow_all_users")?
        .ok_or_else(|| param_error("reserve_scope_config.allow_all_users is required"))?;
    if all != 0 && all != 1 {
        return Err(param_error("allow_all_users must be 0 or 1"));
    }
    let users = user_list(store, v, "allow_users")?;
    let depts = dept_list(v)?;
    if users.len() + depts.len() > 500 {
        return Err(ApiError::new(
            400,
            126012,
            "the sum of userIDs and deptIDs exceeds 500",
        ));
    }
    if all == 0 && users.is_empty() && depts.is_empty() {
        return Err(param_error(
            "allow_all_users 0 needs at least one user or department",
        ));
    }
    Ok(json!({
        "if_cover_child_scope": bool_of(v, "if_cover_child_scope")?,
        "allow_all_users": all,
        "allow_users": users_json(&users),
        "allow_depts": Value::Array(depts.iter().map(|d| json!({"department_id": d})).collect()),
    }))
}

fn scope_type_param(v: Option<&Value>) -> Result<i64, ApiError> {
    match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|t| *t == 1 || *t == 2)
    .ok_or_else(|| param_error("scope_type must be 1 (level) or 2 (room)"))
}

/// The event payload of `vc.reserve_config.updated_v1`: users as
/// `{user_id:{union_id,user_id,open_id}}`, no `if_cover_child_scope`.
fn event_users(store: &Store, v: &Value) -> Value {
    let ids: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.get("user_id").and_then(Value::as_str))
        .map(|id| match store.users.get(id) {
            Some(u) => json!({"user_id": {"union_id": u.union_id, "user_id": u.user_id, "open_id": u.open_id}}),
            None => json!({"user_id": {"open_id": id}}),
        })
        .collect();
    Value::Array(ids)
}

// ----- tenant setup (Rust API and control routes) --------------------------------

impl Inner {
    pub(crate) fn add_room_level(
        &self,
        name: &str,
        parent_id: Option<&str>,
        custom: &str,
    ) -> Result<String, ApiError> {
        let mut rooms = lock(&self.rooms);
        let parent = parent_id.unwrap_or(ROOT_LEVEL).to_owned();
        if parent != ROOT_LEVEL && !rooms.levels.contains_key(&parent) {
            return Err(ApiError::new(404, 121004, "data not exist: parent level"));
        }
        let id = format!("omb_{}", rand_hex(32));
        rooms.levels.insert(
            id.clone(),
            RoomLevel {
                room_level_id: id.clone(),
                name: name.to_owned(),
                parent_id: parent,
                custom_group_id: custom.to_owned(),
            },
        );
        Ok(id)
    }

    pub(crate) fn add_vc_room(self: &Arc<Self>, spec: NewRoom) -> Result<String, ApiError> {
        let level = spec.room_level_id.unwrap_or_else(|| ROOT_LEVEL.to_owned());
        let id = {
            let mut rooms = lock(&self.rooms);
            if level != ROOT_LEVEL && !rooms.levels.contains_key(&level) {
                return Err(ApiError::new(404, 121004, "data not exist: room level"));
            }
            let custom = spec.custom_room_id.unwrap_or_default();
            if !custom.is_empty() && rooms.rooms.values().any(|r| r.custom_room_id == custom) {
                return Err(ApiError::new(
                    404,
                    121006,
                    "data conflict: custom_room_id in use",
                ));
            }
            let id = format!("omm_{}", rand_hex(32));
            rooms.rooms.insert(
                id.clone(),
                RoomSpec {
                    room_id: id.clone(),
                    name: spec.name.clone(),
                    capacity: spec.capacity.unwrap_or(10),
                    description: spec.description.unwrap_or_default(),
                    custom_room_id: custom,
                    room_level_id: level,
                    third_party: spec.third_party,
                },
            );
            id
        };
        {
            let mut store = lock(&self.store);
            store.ensure_room(&id, &spec.name);
            if let Some(r) = store.rooms.get_mut(&id) {
                r.third_party = spec.third_party;
            }
        }
        let room = {
            let rooms = lock(&self.rooms);
            rooms.rooms.get(&id).map(|r| rooms.room_json(r))
        };
        if let Some(room) = room {
            push::emit_v2(self, "vc.room.created_v1", json!({ "room": room }));
        }
        Ok(id)
    }

    pub(crate) fn set_user_departments(&self, open_id: &str, departments: Vec<String>) {
        lock(&self.rooms)
            .departments
            .insert(open_id.to_owned(), departments);
    }

    pub(crate) fn room_replies(&self) -> Vec<RoomReply> {
        lock(&self.rooms).replies.clone()
    }

    /// Sets restrictions as a PATCH would (validation, defaults, event).
    pub(crate) fn patch_reserve_config(
        self: &Arc<Self>,
        id: &str,
        body: &Value,
    ) -> Result<(), ApiError> {
        let scope_type = scope_type_param(body.get("scope_type"))?;
        let event = {
            let store = lock(&self.store);
            let mut rooms = lock(&self.rooms);
            if rooms.scope_type_of(id) != Some(scope_type) {
                return Err(ApiError::new(
                    400,
                    126001,
                    "invalid room or level id, or scope_type does not match",
                ));
            }
            let approve = body
                .get("approval_config")
                .filter(|v| !v.is_null())
                .map(|v| validate_approve(&store, v))
                .transpose()?;
            let time = body
                .get("time_config")
                .filter(|v| !v.is_null())
                .map(validate_time)
                .transpose()?;
            let scope = body
                .get("reserve_scope_config")
                .filter(|v| !v.is_null())
                .map(|v| validate_scope(&store, v))
                .transpose()?;
            if approve.is_none() && time.is_none() && scope.is_none() {
                return Err(param_error("nothing to update"));
            }
            // A covering level config replaces the descendants' own ones.
            let descendants: Vec<String> = if scope_type == 1 {
                let nodes: Vec<String> = rooms
                    .levels
                    .keys()
                    .chain(rooms.rooms.keys())
                    .filter(|n| n.as_str() != id && rooms.node_path(n).iter().any(|p| p == id))
                    .cloned()
                    .collect();
                nodes
            } else {
                Vec::new()
            };
            for d in &descendants {
                if let Some(c) = rooms.configs.get_mut(d) {
                    if time.as_ref().is_some_and(cover) {
                        c.time = None;
                    }
                    if scope.as_ref().is_some_and(cover) {
                        c.scope = None;
                    }
                }
            }
            let node = rooms.configs.entry(id.to_owned()).or_default();
            if let Some(a) = &approve {
                node.approve = Some(a.clone());
            }
            if let Some(t) = &time {
                node.time = Some(t.clone());
            }
            if let Some(s) = &scope {
                node.scope = Some(s.clone());
            }
            let (ea, et, es) = rooms.effective(id);
            let mut et = et;
            if let Some(o) = et.as_object_mut() {
                o.remove("if_cover_child_scope");
            }
            let mut approve_ev = ea;
            approve_ev["approvers"] = event_users(&store, &approve_ev["approvers"]);
            let mut scope_ev = es;
            if let Some(o) = scope_ev.as_object_mut() {
                o.remove("if_cover_child_scope");
            }
            scope_ev["allow_users"] = event_users(&store, &scope_ev["allow_users"]);
            json!({
                "scope_id": id,
                "scope_type": scope_type,
                "approve_config": approve_ev,
                "time_config": et,
                "reserve_scope_config": scope_ev,
            })
        };
        push::emit_v2(self, "vc.reserve_config.updated_v1", event);
        Ok(())
    }
}

/// A room to register.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewRoom {
    pub name: String,
    #[serde(default)]
    pub capacity: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub custom_room_id: Option<String>,
    #[serde(default)]
    pub room_level_id: Option<String>,
    #[serde(default)]
    pub third_party: bool,
}

// ----- third-party room events ---------------------------------------------------

impl Inner {
    /// Moves a series' start (see `Store::shift_series`). The re-keyed
    /// exceptions are the same instances: no deleted/created room events
    /// for them, but replies naming their old `original_time` get 105003.
    pub(crate) fn shift_series(
        self: &Arc<Self>,
        calendar_id: &str,
        master_id: &str,
        delta: i64,
    ) -> Result<(), super::model::EmulatorError> {
        let (pairs, changes) = {
            let mut store = lock(&self.store);
            store.shift_series(calendar_id, master_id, delta)?
        };
        {
            let mut rooms = lock(&self.rooms);
            let moved: Vec<((String, String), (i64, i64))> = rooms
                .announced
                .iter()
                .filter_map(|((room, id), span)| {
                    pairs
                        .iter()
                        .find(|(old, _)| old == id)
                        .map(|(_, new)| ((room.clone(), new.clone()), *span))
                })
                .collect();
            rooms
                .announced
                .retain(|(_, id), _| !pairs.iter().any(|(old, _)| old == id));
            rooms.announced.extend(moved);
        }
        push::announce(self, changes);
        Ok(())
    }
}

/// Emits `third_party_meeting_room_event_*` for what a mutation did to the
/// calendars of third-party rooms. Called before the changes are announced.
pub(crate) fn on_changes(inner: &Arc<Inner>, changes: &Changes) {
    let mut emits: Vec<RoomEmit> = Vec::new();
    {
        let store = lock(&inner.store);
        let mut rooms = lock(&inner.rooms);
        let by_calendar: HashMap<&str, &str> = store
            .rooms
            .iter()
            .filter(|(_, r)| r.third_party)
            .map(|(id, r)| (r.calendar_id.as_str(), id.as_str()))
            .collect();
        if by_calendar.is_empty() {
            return;
        }
        let mut done: HashSet<(String, String)> = HashSet::new();
        for c in &changes.events {
            let Some(room_id) = by_calendar.get(c.calendar_id.as_str()) else {
                continue;
            };
            let key = ((*room_id).to_owned(), c.event_id.clone());
            if !done.insert(key.clone()) {
                continue;
            }
            let Some((uid, ot)) = split_event_id(&c.event_id) else {
                continue;
            };
            let rec = store.events.get(&c.event_id);
            let live = rec.filter(|r| {
                !r.deleted
                    && c.kind != ChangeKind::Delete
                    && r.event.status != Some(EventStatus::Cancelled)
                    && room_attendee_active(&r.event, room_id)
            });
            let organizer = rec
                .and_then(|r| r.event.event_organizer.as_ref())
                .and_then(|o| o.user_id.clone())
                .unwrap_or_default();
            // Created on the first sight, updated on a time change only,
            // deleted with the span last announced.
            let what = match live {
                Some(r) => {
                    let Some((s, e)) = recur::span(&r.event) else {
                        continue;
                    };
                    let span = (s * 1000, e * 1000);
                    match rooms.announced.insert(key.clone(), span) {
                        None => Some((RoomEventKind::Created, span)),
                        Some(old) if old != span => Some((RoomEventKind::Updated, span)),
                        Some(_) => None,
                    }
                }
                None => rooms
                    .announced
                    .remove(&key)
                    .map(|old| (RoomEventKind::Deleted, old)),
            };
            if let Some((kind, span)) = what {
                emits.push(RoomEmit {
                    kind,
                    uid,
                    original_time: ot,
                    span,
                    room: key.0,
                    organizer,
                });
            }
        }
    }
    for m in emits {
        inner.room_event(
            m.kind,
            &m.uid,
            m.original_time,
            m.span.0,
            m.span.1,
            &[m.room.as_str()],
            &m.organizer,
        );
    }
}

/// One room event `on_changes` emits once the locks are released.
struct RoomEmit {
    kind: RoomEventKind,
    uid: String,
    original_time: i64,
    /// Start and end, in milliseconds.
    span: (i64, i64),
    room: String,
    organizer: String,
}

fn room_attendee_active(ev: &Event, room_id: &str) -> bool {
    ev.attendees.iter().flatten().any(|a| {
        a.room_id.as_deref() == Some(room_id) && !matches!(a.rsvp_status, Some(RsvpStatus::Removed))
    })
}

fn split_event_id(id: &str) -> Option<(String, i64)> {
    let (uid, ot) = id.rsplit_once('_')?;
    Some((uid.to_owned(), ot.parse().ok()?))
}

// ----- OpenAPI handlers ----------------------------------------------------------

type Params = Query<HashMap<String, String>>;

fn tenant_only(inner: &Inner, headers: &HeaderMap) -> Result<(), ApiError> {
    match identify_any(inner, headers)? {
        super::auth::Identity::Tenant => Ok(()),
        super::auth::Identity::User { .. } => Err(ApiError::new(
            400,
            99991672,
            "this API accepts the tenant access token only",
        )),
    }
}

fn page(q: &HashMap<String, String>, items: Vec<Value>, key: &str) -> Result<Value, ApiError> {
    let size = match q.get("page_size").filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| param_error("page_size must be an integer"))?
            .clamp(1, 100),
        None => 20,
    };
    let offset = match q.get("page_token").filter(|s| !s.is_empty()) {
        Some(t) => t
            .strip_prefix("pt_")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| param_error("invalid page_token"))?,
        None => 0,
    };
    let end = (offset + size).min(items.len());
    let has_more = end < items.len();
    let chunk: Vec<Value> = items.into_iter().skip(offset).take(size).collect();
    let mut out = json!({ key: chunk, "has_more": has_more });
    if has_more {
        out["page_token"] = json!(format!("pt_{end}"));
    }
    Ok(out)
}

/// `GET /open-apis/vc/v1/rooms?room_level_id=&page_size=&page_token=`.
pub(crate) async fn list_rooms(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    let level = q.get("room_level_id").filter(|s| !s.is_empty()).cloned();
    if let Some(l) = &level
        && l != ROOT_LEVEL
        && !rooms.levels.contains_key(l)
    {
        return Err(ApiError::new(404, 121004, "data not exist: room level"));
    }
    let items: Vec<Value> = rooms
        .rooms
        .values()
        .filter(|r| level.as_ref().is_none_or(|l| &r.room_level_id == l))
        .map(|r| rooms.room_json(r))
        .collect();
    Ok(ok_data(page(&q, items, "rooms")?))
}

/// `GET /open-apis/vc/v1/rooms/:room_id`.
pub(crate) async fn get_room(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    let r = rooms
        .rooms
        .get(&id)
        .ok_or_else(|| ApiError::new(404, 121004, "data not exist"))?;
    Ok(ok_data(json!({ "room": rooms.room_json(r) })))
}

/// `POST /open-apis/vc/v1/rooms/mget {room_ids}`: unknown ids are left out.
pub(crate) async fn mget_rooms(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| param_error("body must be JSON"))?;
    let ids = body
        .get("room_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| param_error("room_ids is required"))?;
    if ids.len() > 100 {
        return Err(param_error("at most 100 room_ids"));
    }
    let rooms = lock(&inner.rooms);
    let items: Vec<Value> = ids
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|id| rooms.rooms.get(id))
        .map(|r| rooms.room_json(r))
        .collect();
    Ok(ok_data(json!({ "items": items })))
}

/// `GET /open-apis/vc/v1/room_levels?room_level_id=` (children of a level).
pub(crate) async fn list_levels(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    let parent = q
        .get("room_level_id")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| ROOT_LEVEL.to_owned());
    let items: Vec<Value> = rooms
        .levels
        .values()
        .filter(|l| l.parent_id == parent)
        .map(|l| rooms.level_json(l))
        .collect();
    Ok(ok_data(page(&q, items, "items")?))
}

/// `GET /open-apis/vc/v1/room_levels/:id` (`0` = the tenant root).
pub(crate) async fn get_level(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    if id == ROOT_LEVEL {
        return Ok(ok_data(
            json!({"room_level": {"room_level_id": ROOT_LEVEL, "name": "tenant", "parent_id": "", "path": [], "has_child": !rooms.levels.is_empty() || !rooms.rooms.is_empty(), "custom_group_id": ""}}),
        ));
    }
    let l = rooms
        .levels
        .get(&id)
        .ok_or_else(|| ApiError::new(404, 121004, "data not exist"))?;
    Ok(ok_data(json!({ "room_level": rooms.level_json(l) })))
}

/// `POST /open-apis/vc/v1/room_levels/mget {level_ids}`.
pub(crate) async fn mget_levels(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| param_error("body must be JSON"))?;
    let ids = body
        .get("level_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| param_error("level_ids is required"))?;
    let rooms = lock(&inner.rooms);
    let items: Vec<Value> = ids
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|id| rooms.levels.get(id))
        .map(|l| rooms.level_json(l))
        .collect();
    Ok(ok_data(json!({ "items": items })))
}

/// `GET /open-apis/vc/v1/reserve_configs/reserve_scope?scope_id=&scope_type=`.
pub(crate) async fn reserve_scope(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let id = q
        .get("scope_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| param_error("scope_id is required"))?;
    let st = scope_type_param(
        q.get("scope_type")
            .map(|s| Value::String(s.clone()))
            .as_ref(),
    )?;
    let rooms = lock(&inner.rooms);
    if rooms.scope_type_of(id) != Some(st) {
        return Err(ApiError::new(
            400,
            126001,
            "invalid room or level id, or scope_type does not match",
        ));
    }
    let mut data = serde_json::Map::new();
    if id == ROOT_LEVEL {
        let (a, t, s) = rooms.effective(id);
        data.insert("approve_config".into(), a);
        data.insert("time_config".into(), t);
        data.insert("reserve_scope_config".into(), s);
    } else if let Some(c) = rooms.configs.get(id) {
        if let Some(a) = &c.approve {
            data.insert("approve_config".into(), a.clone());
        }
        if let Some(t) = &c.time {
            data.insert("time_config".into(), t.clone());
        }
        if let Some(s) = &c.scope {
            data.insert("reserve_scope_config".into(), s.clone());
        }
    }
    Ok(ok_data(Value::Object(data)))
}

/// `PATCH /open-apis/vc/v1/reserve_configs/:reserve_config_id`.
pub(crate) async fn patch_reserve(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| param_error("body must be JSON"))?;
    inner.patch_reserve_config(&id, &body)?;
    Ok(ok_data(json!({})))
}

// ----- legacy meeting_room v1 (fixed levels) and search ---------------------------

fn repeated(raw: Option<String>, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect()
}

fn single(raw: &Option<String>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl RoomsState {
    fn building_json(&self, l: &RoomLevel) -> Value {
        json!({"building_id": l.room_level_id, "name": l.name, "description": "", "floors": [], "country_id": "", "district_id": ""})
    }

    fn legacy_room_json(&self, r: &RoomSpec) -> Value {
        let building = self.levels.get(&r.room_level_id);
        json!({
            "room_id": r.room_id, "building_id": r.room_level_id,
            "building_name": building.map(|b| b.name.clone()).unwrap_or_default(),
            "capacity": r.capacity, "description": r.description,
            "display_id": format!("LM{}", &r.room_id[r.room_id.len().saturating_sub(8)..]),
            "floor_name": "", "is_disabled": false, "name": r.name,
        })
    }
}

/// Legacy paging: `page_size` (default `def`, at most `max`), `page_token`.
fn legacy_page(
    raw: &Option<String>,
    items: Vec<Value>,
    key: &str,
    def: usize,
    max: usize,
) -> Result<Value, ApiError> {
    let mut q = HashMap::new();
    let size = single(raw, "page_size")
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| ApiError::invalid("page_size must be an integer"))
        })
        .transpose()?
        .unwrap_or(def)
        .clamp(1, max);
    q.insert("page_size".to_owned(), size.min(100).to_string());
    if let Some(t) = single(raw, "page_token") {
        q.insert("page_token".to_owned(), t);
    }
    // The shared pager caps at 100; legacy room lists go to 1000.
    if size > 100 {
        let offset = match q.get("page_token") {
            Some(t) => t
                .strip_prefix("pt_")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| param_error("invalid page_token"))?,
            None => 0,
        };
        let end = (offset + size).min(items.len());
        let has_more = end < items.len();
        let chunk: Vec<Value> = items.into_iter().skip(offset).take(size).collect();
        let mut out = json!({ key: chunk, "has_more": has_more });
        if has_more {
            out["page_token"] = json!(format!("pt_{end}"));
        }
        return Ok(out);
    }
    page(&q, items, key)
}

/// `GET /open-apis/meeting_room/building/list` (levels as buildings).
pub(crate) async fn legacy_buildings(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    let mut items: Vec<(String, Value)> = rooms
        .levels
        .values()
        .map(|l| (l.name.clone(), rooms.building_json(l)))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if single(&raw, "order_by").as_deref() == Some("name-desc") {
        items.reverse();
    }
    Ok(ok_data(legacy_page(
        &raw,
        items.into_iter().map(|(_, v)| v).collect(),
        "buildings",
        10,
        100,
    )?))
}

/// `GET /open-apis/meeting_room/building/batch_get?building_ids=…`.
pub(crate) async fn legacy_buildings_get(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    let items: Vec<Value> = repeated(raw, "building_ids")
        .iter()
        .filter_map(|id| rooms.levels.get(id))
        .map(|l| rooms.building_json(l))
        .collect();
    Ok(ok_data(json!({ "buildings": items })))
}

/// `GET /open-apis/meeting_room/room/list?building_id=…` (required).
pub(crate) async fn legacy_rooms(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let building = single(&raw, "building_id")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ApiError::invalid("building_id is required"))?;
    let rooms = lock(&inner.rooms);
    let mut items: Vec<(String, Value)> = rooms
        .rooms
        .values()
        .filter(|r| r.room_level_id == building)
        .map(|r| (r.name.clone(), rooms.legacy_room_json(r)))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if single(&raw, "order_by").as_deref() == Some("name-desc") {
        items.reverse();
    }
    Ok(ok_data(legacy_page(
        &raw,
        items.into_iter().map(|(_, v)| v).collect(),
        "rooms",
        100,
        1000,
    )?))
}

/// `GET /open-apis/meeting_room/room/batch_get?room_ids=…`.
pub(crate) async fn legacy_rooms_get(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    let items: Vec<Value> = repeated(raw, "room_ids")
        .iter()
        .filter_map(|id| rooms.rooms.get(id))
        .map(|r| rooms.legacy_room_json(r))
        .collect();
    Ok(ok_data(json!({ "rooms": items })))
}

/// `GET /open-apis/meeting_room/room/batch_get_id?custom_room_ids=…`.
pub(crate) async fn legacy_room_ids(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let rooms = lock(&inner.rooms);
    let items: Vec<Value> = repeated(raw, "custom_room_ids")
        .iter()
        .filter_map(|c| rooms.rooms.values().find(|r| &r.custom_room_id == c))
        .map(|r| json!({"room_id": r.room_id, "custom_room_id": r.custom_room_id}))
        .collect();
    Ok(ok_data(json!({ "rooms": items })))
}

/// `POST /open-apis/vc/v1/rooms/search`: `custom_room_ids` first, else
/// `keyword` (+ `room_level_id`). The doc says user token only, the 2024
/// notice tenant only (UNCONFIRMED): both are accepted here.
pub(crate) async fn search_rooms(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    identify_any(&inner, &headers)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| param_error("body must be JSON"))?;
    let rooms = lock(&inner.rooms);
    let customs: Vec<&str> = body
        .get("custom_room_ids")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let items: Vec<Value> = if customs.is_empty() {
        let kw = body
            .get("keyword")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let level = body
            .get("room_level_id")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty());
        rooms
            .rooms
            .values()
            .filter(|r| {
                r.name.contains(kw)
                    && level.is_none_or(|l| {
                        r.room_level_id == l
                            || rooms.level_path(&r.room_level_id).iter().any(|p| p == l)
                    })
            })
            .map(|r| rooms.room_json(r))
            .collect()
    } else {
        customs
            .iter()
            .filter_map(|c| rooms.rooms.values().find(|r| r.custom_room_id == *c))
            .map(|r| rooms.room_json(r))
            .collect()
    };
    let mut q = HashMap::new();
    let size = body.get("page_size").and_then(Value::as_i64).unwrap_or(10);
    if !(1..=100).contains(&size) {
        return Err(param_error("page_size must be within 1..=100"));
    }
    q.insert("page_size".to_owned(), size.to_string());
    if let Some(t) = body.get("page_token").and_then(Value::as_str) {
        q.insert("page_token".to_owned(), t.to_owned());
    }
    Ok(ok_data(page(&q, items, "rooms")?))
}

/// `GET /open-apis/contact/v3/users/:user_id?user_id_type=open_id&department_id_type=open_department_id`:
/// the fields a room system needs (ids, name, `department_ids`). A user the
/// tenant does not have answers 400 / 41050 (outside the app's contact
/// scope; the exact code for an unknown user is an emulator choice).
pub(crate) async fn contact_user(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    match q.get("user_id_type").map(String::as_str) {
        None | Some("open_id") => {}
        Some(other) => {
            return Err(param_error(format!(
                "user_id_type {other} is not supported here"
            )));
        }
    }
    let store = lock(&inner.store);
    let u = store.users.get(&id).ok_or_else(|| {
        ApiError::new(
            400,
            41050,
            "no user authority: the user is outside the app's contact scope",
        )
    })?;
    let departments = lock(&inner.rooms)
        .departments
        .get(&id)
        .cloned()
        .unwrap_or_default();
    Ok(ok_data(json!({"user": {
        "open_id": u.open_id, "union_id": u.union_id, "user_id": u.user_id,
        "name": u.name, "department_ids": departments,
    }})))
}

/// The event behind `(uid, original_time)`: the exception, the single event
/// or the master (for an occurrence of a series).
fn find_instance<'a>(store: &'a Store, uid: &str, ot: i64) -> Option<&'a Event> {
    let live = |id: &str| {
        store
            .events
            .get(id)
            .filter(|r| !r.deleted)
            .map(|r| &r.event)
    };
    if let Some(ev) = live(&format!("{uid}_{ot}")) {
        return Some(ev);
    }
    let master = live(&format!("{uid}_0"))?;
    match recur::is_occurrence(master, ot) {
        Ok(true) => Some(master),
        _ => None,
    }
}

fn vchat_json(ev: &Event) -> Value {
    let v = ev.vchat.as_ref();
    json!({
        "vc_type": v.and_then(|v| v.vc_type.as_ref()).map(|t| serde_json::to_value(t).unwrap_or(Value::Null)).unwrap_or(json!("no_meeting")),
        "icon_type": v.and_then(|v| v.icon_type.clone()).unwrap_or_default(),
        "description": v.and_then(|v| v.description.clone()).unwrap_or_default(),
        "meeting_url": v.and_then(|v| v.meeting_url.clone()).unwrap_or_default(),
    })
}

/// `POST /open-apis/meeting_room/summary/batch_get {EventUids:[{uid,original_time}]}`.
pub(crate) async fn summary_batch_get(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::invalid("body must be JSON"))?;
    let uids = body
        .get("EventUids")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("EventUids is required"))?;
    let store = lock(&inner.store);
    let mut infos = Vec::new();
    let mut errors = Vec::new();
    for u in uids {
        let uid = u.get("uid").and_then(Value::as_str).unwrap_or_default();
        let ot = u.get("original_time").and_then(Value::as_i64).unwrap_or(0);
        match find_instance(&store, uid, ot) {
            Some(ev) => infos.push(json!({
                "uid": uid, "original_time": ot,
                "summary": ev.summary.clone().unwrap_or_default(),
                "vchat": vchat_json(ev),
            })),
            None => errors
                .push(json!({"uid": uid, "original_time": ot, "error_msg": "event not found"})),
        }
    }
    Ok(ok_data(
        json!({"EventInfos": infos, "ErrorEventUids": errors}),
    ))
}

fn parse_rfc3339(s: &str, key: &str) -> Result<i64, ApiError> {
    DateTime::<FixedOffset>::parse_from_rfc3339(s)
        .map(|d| d.timestamp())
        .map_err(|_| ApiError::invalid(format!("{key} must be RFC 3339")))
}

fn rfc3339(secs: i64) -> String {
    FixedOffset::east_opt(8 * 3600)
        .and_then(|z| z.timestamp_opt(secs, 0).single())
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

/// `GET /open-apis/meeting_room/freebusy/batch_get?room_ids=…&time_min=&time_max=`.
pub(crate) async fn freebusy_batch_get(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let mut room_ids = Vec::new();
    let (mut tmin, mut tmax) = (None, None);
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "room_ids" => room_ids.push(v.into_owned()),
            "time_min" => tmin = Some(parse_rfc3339(&v, "time_min")?),
            "time_max" => tmax = Some(parse_rfc3339(&v, "time_max")?),
            _ => {}
        }
    }
    let (Some(from), Some(to)) = (tmin, tmax) else {
        return Err(ApiError::invalid("time_min and time_max are required"));
    };
    if room_ids.is_empty() || room_ids.len() > 20 {
        return Err(ApiError::invalid("room_ids: between 1 and 20 rooms"));
    }
    if to <= from {
        return Err(ApiError::invalid("time_max must be after time_min"));
    }
    let store = lock(&inner.store);
    let mut map = serde_json::Map::new();
    let mut errors = Vec::new();
    for room in &room_ids {
        let Some(cal) = store.rooms.get(room).map(|r| r.calendar_id.clone()) else {
            errors.push(json!(room));
            continue;
        };
        let mut busy: Vec<(i64, Value)> = Vec::new();
        for ev in store.events_of(&cal) {
            if ev.status == Some(EventStatus::Cancelled) {
                continue;
            }
            let declined = ev.attendees.iter().flatten().any(|a| {
                a.room_id.as_deref() == Some(room.as_str())
                    && matches!(
                        a.rsvp_status,
                        Some(RsvpStatus::Decline | RsvpStatus::Removed)
                    )
            });
            if declined
                || !ev.attendees.iter().flatten().any(|a| {
                    a.kind == Some(AttendeeType::Resource)
                        && a.room_id.as_deref() == Some(room.as_str())
                })
            {
                continue;
            }
            let Some((uid, own_ot)) = ev.event_id.as_deref().and_then(split_event_id) else {
                continue;
            };
            let Some((s, e)) = recur::span(&ev) else {
                continue;
            };
            let organizer = ev
                .event_organizer
                .as_ref()
                .map(|o| json!({"name": o.display_name, "open_id": o.user_id}));
            let mut push = |start: i64, end: i64, ot: i64| {
                let mut item = json!({"start_time": rfc3339(start), "end_time": rfc3339(end), "uid": uid, "original_time": ot});
                if let Some(o) = &organizer {
                    item["organizer_info"] = o.clone();
                }
                busy.push((start, item));
            };
            if recur::rule_of(&ev).is_some() {
                let dur = e - s;
                let starts = recur::occurrences(&ev, from, to, 1000).unwrap_or_default();
                // Occurrences replaced by an exception are listed by the exception.
                for st in starts {
                    if store
                        .events
                        .get(&format!("{uid}_{st}"))
                        .is_some_and(|r| !r.deleted)
                    {
                        continue;
                    }
                    push(st, st + dur, st);
                }
            } else if s < to && e > from {
                push(s, e, own_ot);
            }
        }
        if busy.is_empty() {
            continue;
        }
        busy.sort_by_key(|(s, _)| *s);
        map.insert(
            room.clone(),
            Value::Array(busy.into_iter().map(|(_, v)| v).collect()),
        );
    }
    Ok(ok_data(
        json!({"time_min": rfc3339(from), "time_max": rfc3339(to), "free_busy": map, "error_room_ids": errors}),
    ))
}

/// `POST /open-apis/meeting_room/instance/reply {room_id, uid, original_time, status}`.
pub(crate) async fn instance_reply(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    tenant_only(&inner, &headers)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::invalid("body must be JSON"))?;
    let room = body
        .get("room_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let uid = body
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let ot = match body.get("original_time") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid("original_time must be an integer (Unix seconds)"))?;
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let rsvp = match status.as_str() {
        "ACCEPTED_BY_ADMIN" => Some(RsvpStatus::Accept),
        "DECLINED_BY_ADMIN" => Some(RsvpStatus::Decline),
        "NOT_CHECK_IN" | "ENDED_BEFORE_DUE" => None,
        _ => {
            return Err(ApiError::invalid(
                "status must be ACCEPTED_BY_ADMIN, DECLINED_BY_ADMIN, NOT_CHECK_IN or ENDED_BEFORE_DUE",
            ));
        }
    };
    if room.is_empty() || uid.is_empty() {
        return Err(ApiError::invalid("room_id and uid are required"));
    }
    let changes = {
        let mut store = lock(&inner.store);
        if !store.rooms.contains_key(&room) {
            return Err(ApiError::new(404, 121004, "data not exist: room"));
        }
        if find_instance(&store, &uid, ot).is_none() {
            return Err(ApiError::new(
                200,
                105003,
                "invalid original_time: the event or its series start changed",
            ));
        }
        let mut ids: Vec<String> = vec![format!("{uid}_{ot}")];
        if ot == 0 {
            let prefix = format!("{uid}_");
            ids.extend(
                store
                    .events
                    .iter()
                    .filter(|(id, r)| {
                        !r.deleted && id.starts_with(&prefix) && id.as_str() != format!("{uid}_0")
                    })
                    .map(|(id, _)| id.clone()),
            );
        }
        let mut changes = Changes::default();
        if let Some(rsvp) = rsvp {
            for id in ids {
                let Some(rec) = store.events.get(&id).filter(|r| !r.deleted) else {
                    continue;
                };
                if !room_attendee_active(&rec.event, &room) {
                    continue;
                }
                let Some(org) = rec.event.organizer_calendar_id.clone() else {
                    continue;
                };
                let r = rsvp.clone();
                let room2 = room.clone();
                if let Ok(c) = store.update_event(&org, &id, move |ev| {
                    for a in ev.attendees.iter_mut().flatten() {
                        if a.room_id.as_deref() == Some(room2.as_str()) {
                            a.rsvp_status = Some(r.clone());
                        }
                    }
                }) {
                    changes.events.extend(c.events);
                    changes.calendars.extend(c.calendars);
                }
            }
        }
        changes
    };
    lock(&inner.rooms).replies.push(RoomReply {
        room_id: room,
        uid,
        original_time: ot,
        status,
        at_ms: now_ms(),
    });
    push::announce(&inner, changes);
    Ok(ok_data(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_config_defaults_and_rounding() {
        let t =
            validate_time(&json!({"time_switch": 1, "start_time": "32429", "end_time": "64800"}))
                .unwrap();
        assert_eq!(t["start_time"], "32400");
        assert_eq!(t["max_duration"], 2, "unset fields reset to defaults");
        assert_eq!(t["days_in_advance"], 365);
        assert!(validate_time(&json!({"start_time": "3600", "end_time": "3610"})).is_err());
        assert!(validate_time(&json!({"max_duration": 100})).is_err());
        assert!(validate_time(&json!({"days_in_advance": 0})).is_err());
    }

    #[test]
    fn inheritance_and_cover() {
        let mut st = RoomsState::default();
        st.levels.insert(
            "omb_a".into(),
            RoomLevel {
                room_level_id: "omb_a".into(),
                name: "A".into(),
                parent_id: ROOT_LEVEL.into(),
                custom_group_id: String::new(),
            },
        );
        st.rooms.insert(
            "omm_r".into(),
            RoomSpec {
                room_id: "omm_r".into(),
                name: "R".into(),
                capacity: 4,
                description: String::new(),
                custom_room_id: String::new(),
                room_level_id: "omb_a".into(),
                third_party: true,
            },
        );
        assert_eq!(st.node_path("omm_r"), vec!["0", "omb_a", "omm_r"]);
        st.configs.entry("omb_a".into()).or_default().time =
            Some(validate_time(&json!({"time_switch": 1, "max_duration": 3})).unwrap());
        st.configs.entry("omm_r".into()).or_default().time =
            Some(validate_time(&json!({"time_switch": 1, "max_duration": 5})).unwrap());
        assert_eq!(
            st.effective("omm_r").1["max_duration"],
            5,
            "the room's own wins"
        );
        st.configs.entry("omb_a".into()).or_default().time = Some(
            validate_time(
                &json!({"time_switch": 1, "max_duration": 3, "if_cover_child_scope": true}),
            )
            .unwrap(),
        );
        assert_eq!(
            st.effective("omm_r").1["max_duration"],
            3,
            "a covering level wins"
        );
    }
}
