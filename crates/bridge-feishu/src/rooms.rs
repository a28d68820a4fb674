//! The meeting-room APIs a third-party room system needs (`rooms.md`
//! §3–§5): the vc/v1 room registry and levels, booking restrictions
//! (`reserve_configs/reserve_scope`), and the legacy `meeting_room` APIs
//! (`summary/batch_get`, `freebusy/batch_get`, `instance/reply`). Every call
//! uses the tenant token and the client's retry loop.
//!
//! Tolerance (UNCONFIRMED points of `rooms.md` §10): numbers may come as
//! JSON numbers or strings; users in restriction lists as `{user_id:"ou_…"}`
//! (API) or `{user_id:{open_id,…}}` (event); `vchat` as an object or a list;
//! a restriction sub-object absent from an answer means "not set on this
//! node" (inherit).

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use bridge_core::feishu::RsvpStatus;

use crate::FeishuError;
use crate::client::{FeishuClient, Identity, urlencode};
use crate::hint::{ApprovalConfig, Department, ReserveScopeConfig, TimeConfig, UserIds};

/// `instance/reply` status: the booking is accepted.
pub const ACCEPTED_BY_ADMIN: &str = "ACCEPTED_BY_ADMIN";
/// `instance/reply` status: the booking is declined.
pub const DECLINED_BY_ADMIN: &str = "DECLINED_BY_ADMIN";
/// `instance/reply` error: `original_time` is no longer valid (the series
/// start changed).
pub const STALE_ORIGINAL_TIME: i64 = 105_003;

/// A room of the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Room {
    pub room_id: String,
    pub name: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub capacity: i64,
    pub description: String,
    pub custom_room_id: String,
    pub room_level_id: String,
    /// Level ids from the tenant root.
    pub path: Vec<String>,
}

/// A room level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RoomLevel {
    pub room_level_id: String,
    pub name: String,
    pub parent_id: String,
    pub path: Vec<String>,
}

/// The restrictions set on one node (room or level); `None` = not set here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeRules {
    pub approval: Option<ApprovalConfig>,
    /// With `if_cover_child_scope`.
    pub time: Option<(TimeConfig, bool)>,
    /// With `if_cover_child_scope`.
    pub scope: Option<(ReserveScopeConfig, bool)>,
}

/// One entry of `summary/batch_get`'s `EventInfos`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSummary {
    pub uid: String,
    pub original_time: i64,
    pub summary: String,
    /// The meeting link when the event has one (`vchat.meeting_url`).
    pub meeting_url: Option<String>,
}

/// One busy period of `freebusy/batch_get` (Unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusySlot {
    pub start: i64,
    pub end: i64,
    pub uid: String,
    pub original_time: i64,
}

fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(num(&v).map_or(0, |f| f.round() as i64))
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(num).map(|f| f.round() as i64)
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(num).is_some_and(|f| f != 0.0)
}

/// Users of a restriction list in either shape.
pub fn users_of(v: Option<&Value>) -> Vec<UserIds> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|u| match u.get("user_id") {
            Some(Value::String(s)) => Some(UserIds {
                open_id: Some(s.clone()),
                ..UserIds::default()
            }),
            Some(o @ Value::Object(_)) => serde_json::from_value(o.clone()).ok(),
            _ => None,
        })
        .filter(|u: &UserIds| !u.is_empty())
        .collect()
}

/// Parses one node's restrictions from a `reserve_scope` answer.
pub fn node_rules(data: &Value) -> NodeRules {
    let approval = data
        .get("approve_config")
        .or_else(|| data.get("approval_config"))
        .filter(|v| v.is_object())
        .map(|a| ApprovalConfig {
            approval_switch: int(a, "approval_switch"),
            approval_condition: int(a, "approval_condition"),
            meeting_duration_hours: a.get("meeting_duration").and_then(num),
            approvers: users_of(a.get("approvers")),
        });
    let time = data.get("time_config").filter(|v| v.is_object()).map(|t| {
        (
            TimeConfig {
                time_switch: int(t, "time_switch"),
                days_in_advance: int(t, "days_in_advance"),
                opening_hour_s: int(t, "opening_hour"),
                start_time_s: int(t, "start_time"),
                end_time_s: int(t, "end_time"),
                max_duration_hours: int(t, "max_duration"),
            },
            flag(t, "if_cover_child_scope"),
        )
    });
    let scope = data
        .get("reserve_scope_config")
        .filter(|v| v.is_object())
        .map(|s| {
            (
                ReserveScopeConfig {
                    allow_all_users: int(s, "allow_all_users"),
                    allow_users: users_of(s.get("allow_users")),
                    allow_depts: s
                        .get("allow_depts")
                        .and_then(|d| serde_json::from_value::<Vec<Department>>(d.clone()).ok())
                        .unwrap_or_default(),
                },
                flag(s, "if_cover_child_scope"),
            )
        });
    NodeRules {
        approval,
        time,
        scope,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RoomPage {
    rooms: Vec<Room>,
    has_more: bool,
    page_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LevelData {
    room_level: Option<RoomLevel>,
}

/// RFC 3339 in UTC, for `freebusy/batch_get` windows.
fn rfc3339_utc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp())
}

impl FeishuClient {
    /// `POST /open-apis/vc/v1/rooms/mget` (≤ 100 ids a call; unknown ids
    /// are absent from the answer).
    pub async fn mget_rooms(&self, room_ids: &[String]) -> Result<Vec<Room>, FeishuError> {
        let mut out = Vec::new();
        for chunk in room_ids.chunks(100) {
            let data: Items<Room> = self
                .call_with_body(
                    Identity::Tenant,
                    Method::POST,
                    "POST /open-apis/vc/v1/rooms/mget",
                    "/open-apis/vc/v1/rooms/mget",
                    &[],
                    &json!({ "room_ids": chunk }),
                )
                .await?;
            out.extend(data.items);
        }
        Ok(out)
    }

    /// `GET /open-apis/vc/v1/rooms?room_level_id=…`, every page.
    pub async fn list_rooms(&self, room_level_id: Option<&str>) -> Result<Vec<Room>, FeishuError> {
        let endpoint = "GET /open-apis/vc/v1/rooms";
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("page_size", "100".to_owned())];
            if let Some(l) = room_level_id {
                q.push(("room_level_id", l.to_owned()));
            }
            if let Some(t) = &token {
                q.push(("page_token", t.clone()));
            }
            let page: RoomPage = self
                .call(
                    Identity::Tenant,
                    Method::GET,
                    endpoint,
                    "/open-apis/vc/v1/rooms",
                    &q,
                )
                .await?;
            out.extend(page.rooms);
            if !page.has_more {
                return Ok(out);
            }
            match page.page_token.filter(|t| !t.is_empty()) {
                Some(t) if token.as_deref() != Some(t.as_str()) => token = Some(t),
                _ => {
                    return Err(FeishuError::Decode {
                        endpoint: endpoint.to_owned(),
                        status: 200,
                        detail: "has_more without a new page_token; room listing incomplete".into(),
                        log_id: None,
                    });
                }
            }
        }
    }

    /// `GET /open-apis/vc/v1/room_levels/:id`.
    pub async fn get_room_level(&self, level_id: &str) -> Result<Option<RoomLevel>, FeishuError> {
        let data: LevelData = self
            .call(
                Identity::Tenant,
                Method::GET,
                "GET /open-apis/vc/v1/room_levels/:room_level_id",
                &format!("/open-apis/vc/v1/room_levels/{}", urlencode(level_id)),
                &[],
            )
            .await?;
        Ok(data.room_level)
    }

    /// `GET /open-apis/vc/v1/reserve_configs/reserve_scope`: the
    /// restrictions set on one room (`scope_type` 2) or level (1).
    pub async fn reserve_scope(
        &self,
        scope_id: &str,
        scope_type: u8,
    ) -> Result<NodeRules, FeishuError> {
        let data: Value = self
            .call(
                Identity::Tenant,
                Method::GET,
                "GET /open-apis/vc/v1/reserve_configs/reserve_scope",
                "/open-apis/vc/v1/reserve_configs/reserve_scope",
                &[
                    ("scope_id", scope_id.to_owned()),
                    ("scope_type", scope_type.to_string()),
                ],
            )
            .await?;
        Ok(node_rules(&data))
    }

    /// `POST /open-apis/meeting_room/summary/batch_get`: the summaries of
    /// the events found, and the `(uid, original_time)` pairs not found.
    pub async fn room_event_summaries(
        &self,
        uids: &[(String, i64)],
    ) -> Result<(Vec<EventSummary>, Vec<(String, i64)>), FeishuError> {
        let body = json!({
            "EventUids": uids.iter().map(|(u, t)| json!({"uid": u, "original_time": t})).collect::<Vec<_>>()
        });
        let data: Value = self
            .call_with_body(
                Identity::Tenant,
                Method::POST,
                "POST /open-apis/meeting_room/summary/batch_get",
                "/open-apis/meeting_room/summary/batch_get",
                &[],
                &body,
            )
            .await?;
        let pair = |v: &Value| {
            (
                v.get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                int(v, "original_time").unwrap_or(0),
            )
        };
        let infos = data
            .get("EventInfos")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| {
                let (uid, original_time) = pair(v);
                // `vchat` is an object in the doc example, a list in lark-oapi.
                let vchat = match v.get("vchat") {
                    Some(Value::Array(a)) => a.first().cloned(),
                    Some(o) => Some(o.clone()),
                    None => None,
                };
                EventSummary {
                    uid,
                    original_time,
                    summary: v
                        .get("summary")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    meeting_url: vchat
                        .and_then(|c| {
                            c.get("meeting_url")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .filter(|u| !u.is_empty()),
                }
            })
            .collect();
        let errors = data
            .get("ErrorEventUids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(pair)
            .collect();
        Ok((infos, errors))
    }

    /// `GET /open-apis/meeting_room/freebusy/batch_get` for ≤ 20 rooms over
    /// `[from, to)` (Unix seconds): busy periods per room (rooms without any
    /// are absent).
    pub async fn room_freebusy(
        &self,
        room_ids: &[String],
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<String, Vec<BusySlot>>, FeishuError> {
        let mut out = BTreeMap::new();
        for chunk in room_ids.chunks(20) {
            let mut q: Vec<(&str, String)> =
                chunk.iter().map(|r| ("room_ids", r.clone())).collect();
            q.push(("time_min", rfc3339_utc(from)));
            q.push(("time_max", rfc3339_utc(to)));
            let data: Value = self
                .call(
                    Identity::Tenant,
                    Method::GET,
                    "GET /open-apis/meeting_room/freebusy/batch_get",
                    "/open-apis/meeting_room/freebusy/batch_get",
                    &q,
                )
                .await?;
            let Some(map) = data.get("free_busy").and_then(Value::as_object) else {
                continue;
            };
            for (room, slots) in map {
                let list: Vec<BusySlot> = slots
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| {
                        Some(BusySlot {
                            start: parse_rfc3339(s.get("start_time")?.as_str()?)?,
                            end: parse_rfc3339(s.get("end_time")?.as_str()?)?,
                            uid: s
                                .get("uid")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            original_time: int(s, "original_time").unwrap_or(0),
                        })
                    })
                    .collect();
                out.insert(room.clone(), list);
            }
        }
        Ok(out)
    }

    /// The room attendee's `rsvp_status` on the event `<uid>_<original_time>`
    /// of the organizer's primary calendar (`calendars/primarys`, then the
    /// event's attendees): how Feishu reflects a reply. `None` when the
    /// calendar, the event or the room attendee cannot be found.
    pub async fn room_attendee_status(
        &self,
        organizer_open_id: &str,
        uid: &str,
        original_time: i64,
        room_id: &str,
    ) -> Result<Option<RsvpStatus>, FeishuError> {
        let data: Value = self
            .call_with_body(
                Identity::Tenant,
                Method::POST,
                "POST /open-apis/calendar/v4/calendars/primarys",
                "/open-apis/calendar/v4/calendars/primarys",
                &[("user_id_type", "open_id".to_owned())],
                &json!({ "user_ids": [organizer_open_id] }),
            )
            .await?;
        let Some(cal) = data
            .get("calendars")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .and_then(|c| c.get("calendar"))
            .and_then(|c| c.get("calendar_id"))
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        let attendees = match self
            .list_attendees(Identity::Tenant, cal, &format!("{uid}_{original_time}"))
            .await
        {
            Ok(a) => a,
            Err(e) if e.code().is_some_and(|c| c == 193_001 || c == 193_003) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(attendees
            .items
            .into_iter()
            .find(|a| a.room_id.as_deref() == Some(room_id))
            .and_then(|a| a.rsvp_status))
    }

    /// The user's `open_department_id`s (contact v3 get user), for the
    /// departments of a room's booking scope.
    pub async fn user_departments(&self, open_id: &str) -> Result<Vec<String>, FeishuError> {
        let data: Value = self
            .call(
                Identity::Tenant,
                Method::GET,
                "GET /open-apis/contact/v3/users/:user_id",
                &format!("/open-apis/contact/v3/users/{}", urlencode(open_id)),
                &[
                    ("user_id_type", "open_id".to_owned()),
                    ("department_id_type", "open_department_id".to_owned()),
                ],
            )
            .await?;
        Ok(data
            .get("user")
            .and_then(|u| u.get("department_ids"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    }

    /// `POST /open-apis/meeting_room/instance/reply`.
    pub async fn reply_room_instance(
        &self,
        room_id: &str,
        uid: &str,
        original_time: i64,
        status: &str,
    ) -> Result<(), FeishuError> {
        let _: Value = self
            .call_with_body(
                Identity::Tenant,
                Method::POST,
                "POST /open-apis/meeting_room/instance/reply",
                "/open-apis/meeting_room/instance/reply",
                &[],
                &json!({"room_id": room_id, "uid": uid, "original_time": original_time, "status": status}),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for t in [0, 1_578_997_800, 1_760_000_000, 951_782_400] {
            assert_eq!(parse_rfc3339(&rfc3339_utc(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2020-01-14T18:30:00+08:00"),
            Some(1_578_997_800)
        );
        assert_eq!(
            parse_rfc3339("2020-01-14T10:30:00.123Z"),
            Some(1_578_997_800)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn restrictions_in_both_user_shapes() {
        let api = json!({"reserve_scope_config": {"if_cover_child_scope": true, "allow_all_users": "0", "allow_users": [{"user_id": "ou_a"}]}});
        let r = node_rules(&api);
        let (s, cover) = r.scope.unwrap();
        assert!(cover);
        assert_eq!(s.allow_all_users, Some(0));
        assert_eq!(s.allow_users[0].open_id.as_deref(), Some("ou_a"));
        let ev = json!({"time_config": {"time_switch": 1, "max_duration": 3, "start_time": "32400"}, "reserve_scope_config": {"allow_all_users": 0, "allow_users": [{"user_id": {"open_id": "ou_b", "user_id": "x"}}]}});
        let r = node_rules(&ev);
        assert_eq!(r.time.unwrap().0.start_time_s, Some(32_400));
        assert_eq!(
            r.scope.unwrap().0.allow_users[0].open_id.as_deref(),
            Some("ou_b")
        );
        assert!(
            node_rules(&json!({})).time.is_none(),
            "absent = not set here"
        );
    }
}
