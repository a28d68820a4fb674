//! The room part of the Feishu emulator (`rooms.md` §9) over loopback HTTP.

use std::time::Duration;

use bridge_core::feishu::{Attendee, AttendeeType, RsvpStatus};
use bridge_emulators::feishu::rooms::NewRoom;
use bridge_emulators::feishu::{FeishuEmulator, WebhookTarget};
use serde_json::{Value, json};

use crate::common::{Receiver, client, get, post, recurring, send, start, tenant_token, timed};

struct Tenant {
    emu: FeishuEmulator,
    token: String,
    level: String,
    room: String,
    user: String,
    cal: String,
    hook: Receiver,
}

async fn tenant() -> Tenant {
    let emu = start().await;
    let hook = Receiver::start().await;
    emu.set_webhook(Some(WebhookTarget {
        url: hook.url.clone(),
        encrypt_key: None,
        verification_token: "vt".into(),
    }));
    let token = tenant_token(&emu).await;
    let level = emu.add_room_level("Building", None);
    let room = emu.register_room(NewRoom {
        name: "Room 1".into(),
        custom_room_id: Some("R-1".into()),
        room_level_id: Some(level.clone()),
        third_party: true,
        ..NewRoom::default()
    });
    let user = emu.add_user("Li");
    let cal = emu.primary_calendar(&user);
    Tenant {
        emu,
        token,
        level,
        room,
        user,
        cal,
        hook,
    }
}

fn with_room(mut ev: bridge_core::feishu::Event, room: &str) -> bridge_core::feishu::Event {
    ev.attendees = Some(vec![Attendee {
        kind: Some(AttendeeType::Resource),
        room_id: Some(room.to_owned()),
        ..Attendee::default()
    }]);
    ev
}

async fn patch(t: &Tenant, id: &str, body: Value) -> crate::common::Answer {
    send(
        client()
            .patch(format!(
                "{}/open-apis/vc/v1/reserve_configs/{id}",
                t.emu.base_url()
            ))
            .bearer_auth(&t.token)
            .json(&body),
    )
    .await
}

/// Room events delivered so far (`event` bodies of v1 pushes).
fn room_events(t: &Tenant) -> Vec<Value> {
    t.emu
        .deliveries()
        .into_iter()
        .filter(|d| d.event_type.starts_with("third_party_meeting_room_event_"))
        .map(|d| d.payload["event"].clone())
        .collect()
}

async fn wait_events(t: &Tenant, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let e = room_events(t);
        if e.len() >= n {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    room_events(t)
}

#[tokio::test]
async fn registry_levels_and_paging() {
    let t = tenant().await;
    let a = post(
        &t.emu,
        &t.token,
        "/open-apis/vc/v1/rooms/mget",
        json!({"room_ids": [t.room, "omm_unknown"]}),
    )
    .await;
    assert_eq!(a.code(), 0);
    let item = &a.body["data"]["items"][0];
    assert_eq!(item["custom_room_id"], "R-1");
    assert_eq!(item["path"], json!(["0", t.level]));
    let a = get(
        &t.emu,
        &t.token,
        &format!(
            "/open-apis/vc/v1/rooms?room_level_id={}&page_size=1",
            t.level
        ),
    )
    .await;
    assert_eq!(a.body["data"]["rooms"].as_array().unwrap().len(), 1);
    let a = get(
        &t.emu,
        &t.token,
        &format!("/open-apis/vc/v1/room_levels/{}", t.level),
    )
    .await;
    assert_eq!(a.body["data"]["room_level"]["has_child"], true);
    let a = get(&t.emu, &t.token, "/open-apis/vc/v1/rooms/omm_nope").await;
    assert_eq!((a.status, a.code()), (404, 121004));
    // Search: custom ids first.
    let a = post(
        &t.emu,
        &t.token,
        "/open-apis/vc/v1/rooms/search",
        json!({"custom_room_ids": ["R-1"], "keyword": "zzz"}),
    )
    .await;
    assert_eq!(a.body["data"]["rooms"][0]["room_id"], t.room.as_str());
    // Legacy fixed-level APIs: levels are buildings.
    let a = get(&t.emu, &t.token, "/open-apis/meeting_room/building/list").await;
    assert_eq!(
        a.body["data"]["buildings"][0]["building_id"],
        t.level.as_str()
    );
    let a = get(
        &t.emu,
        &t.token,
        &format!(
            "/open-apis/meeting_room/room/list?building_id={}&page_size=1000",
            t.level
        ),
    )
    .await;
    assert_eq!(a.body["data"]["rooms"][0]["building_name"], "Building");
    let a = get(
        &t.emu,
        &t.token,
        "/open-apis/meeting_room/room/batch_get_id?custom_room_ids=R-1",
    )
    .await;
    assert_eq!(a.body["data"]["rooms"][0]["room_id"], t.room.as_str());
    let a = get(
        &t.emu,
        &t.token,
        &format!("/open-apis/meeting_room/room/batch_get?room_ids={}", t.room),
    )
    .await;
    assert_eq!(a.body["data"]["rooms"][0]["name"], "Room 1");
    let a = get(&t.emu, &t.token, "/open-apis/meeting_room/room/list").await;
    assert_eq!(a.code(), 190_002, "building_id is required");
}

#[tokio::test]
async fn reserve_configs_inherit_reset_defaults_validate_and_notify() {
    let t = tenant().await;
    // Nothing set on the room: the answer has no sub-object (inherit).
    let a = get(
        &t.emu,
        &t.token,
        &format!(
            "/open-apis/vc/v1/reserve_configs/reserve_scope?scope_id={}&scope_type=2",
            t.room
        ),
    )
    .await;
    assert_eq!(a.code(), 0);
    assert!(a.body["data"].get("time_config").is_none(), "{:?}", a.body);
    // PATCH resets what it does not send.
    let a = patch(&t, &t.level, json!({"scope_type": "1", "time_config": {"time_switch": 1, "start_time": "32429", "end_time": "64800"}})).await;
    assert_eq!(a.code(), 0, "{:?}", a.body);
    let a = get(
        &t.emu,
        &t.token,
        &format!(
            "/open-apis/vc/v1/reserve_configs/reserve_scope?scope_id={}&scope_type=1",
            t.level
        ),
    )
    .await;
    let tc = &a.body["data"]["time_config"];
    assert_eq!(
        (tc["start_time"].as_str(), tc["max_duration"].as_i64()),
        (Some("32400"), Some(2))
    );
    // The update event carries the values in force at that node.
    t.hook.wait_for(1).await;
    let d = t.emu.wait_for_deliveries(1, Duration::from_secs(2)).await;
    let ev = d
        .iter()
        .find(|d| d.event_type == "vc.reserve_config.updated_v1")
        .expect("event");
    assert_eq!(ev.payload["event"]["scope_id"], t.level.as_str());
    assert_eq!(ev.payload["event"]["scope_type"], 1);
    assert!(
        ev.payload["event"]["time_config"]
            .get("if_cover_child_scope")
            .is_none()
    );
    // Validation codes.
    let a = patch(&t, &t.room, json!({"scope_type": 1, "time_config": {}})).await;
    assert_eq!(a.code(), 126_001, "scope_type must match the id");
    let a = patch(
        &t,
        &t.room,
        json!({"scope_type": 2, "time_config": {"max_duration": 100}}),
    )
    .await;
    assert_eq!(a.code(), 121_003);
    let a = patch(&t, &t.room, json!({"scope_type": 2, "reserve_scope_config": {"allow_all_users": 0, "allow_users": [{"user_id": "ou_nobody"}]}})).await;
    assert_eq!(a.code(), 126_013);
    let many: Vec<Value> = (0..501)
        .map(|i| json!({"department_id": format!("od-{i}")}))
        .collect();
    let a = patch(&t, &t.room, json!({"scope_type": 2, "reserve_scope_config": {"allow_all_users": 0, "allow_depts": many}})).await;
    assert_eq!(a.code(), 126_012);
    let a = patch(
        &t,
        &t.room,
        json!({"scope_type": 2, "approval_config": {"approval_switch": 1}}),
    )
    .await;
    assert_eq!(a.code(), 121_003, "approval needs approvers");
    let _ = &t.user;
}

#[tokio::test]
async fn third_party_events_replies_and_stale_original_times() {
    let t = tenant().await;
    let start_s = 1_900_000_000;
    let id = t
        .emu
        .create_event(&t.cal, with_room(timed("Sync", start_s, 1800), &t.room));
    let e = wait_events(&t, 1).await;
    assert_eq!(e[0]["type"], "third_party_meeting_room_event_created");
    assert_eq!(e[0]["original_time"], 0);
    assert_eq!(
        e[0]["start"]["time_stamp"],
        (start_s * 1000).to_string(),
        "ms timestamps"
    );
    assert_eq!(e[0]["meeting_rooms"][0]["open_id"], t.room.as_str());
    // A summary change is not a time change: no event.
    t.emu
        .update_event(&t.cal, &id, |ev| ev.summary = Some("Renamed".into()));
    let uid = id.rsplit_once('_').unwrap().0.to_owned();
    // The booking stays needs_action until a reply.
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(room_events(&t).len(), 1);
    let rsvp = |t: &Tenant| {
        t.emu.events(&t.cal)[0].attendees.clone().unwrap()[0]
            .rsvp_status
            .clone()
    };
    assert_eq!(rsvp(&t), Some(RsvpStatus::NeedsAction));
    let s = post(&t.emu, &t.token, "/open-apis/meeting_room/summary/batch_get", json!({"EventUids": [{"uid": uid, "original_time": 0}, {"uid": "nope", "original_time": 0}]})).await;
    assert_eq!(s.body["data"]["EventInfos"][0]["summary"], "Renamed");
    assert_eq!(s.body["data"]["ErrorEventUids"][0]["uid"], "nope");
    let r = post(
        &t.emu,
        &t.token,
        "/open-apis/meeting_room/instance/reply",
        json!({"room_id": t.room, "uid": uid, "original_time": 0, "status": "ACCEPTED_BY_ADMIN"}),
    )
    .await;
    assert_eq!(r.code(), 0);
    assert_eq!(rsvp(&t), Some(RsvpStatus::Accept));
    assert_eq!(t.emu.room_replies().len(), 1);
    // Moving it: updated; deleting it: deleted.
    t.emu.update_event(&t.cal, &id, |ev| {
        ev.start_time = timed("x", start_s + 3600, 1).start_time;
        ev.end_time = timed("x", start_s + 5400, 1).start_time;
    });
    t.emu.delete_event(&t.cal, &id);
    let e = wait_events(&t, 3).await;
    assert_eq!(e[1]["type"], "third_party_meeting_room_event_updated");
    assert_eq!(
        e[1]["start"]["time_stamp"],
        ((start_s + 3600) * 1000).to_string()
    );
    assert_eq!(e[2]["type"], "third_party_meeting_room_event_deleted");

    // A series: an exception's original_time goes stale when the start moves.
    let master = t.emu.create_event(
        &t.cal,
        with_room(
            recurring("Daily", start_s, 1800, "FREQ=DAILY;COUNT=3"),
            &t.room,
        ),
    );
    let suid = master.rsplit_once('_').unwrap().0.to_owned();
    let ot = start_s + 86_400;
    t.emu
        .move_occurrence(&t.cal, &master, ot, ot + 7200, ot + 9000, None);
    let e = wait_events(&t, 5).await;
    assert_eq!(
        e[4]["original_time"], ot,
        "the exception is announced with its original_time in seconds"
    );
    let fb = get(&t.emu, &t.token, &format!(
        "/open-apis/meeting_room/freebusy/batch_get?room_ids={}&time_min=2030-03-17T00:00:00%2B08:00&time_max=2030-03-22T00:00:00%2B08:00",
        t.room
    )).await;
    let slots = fb.body["data"]["free_busy"][&t.room]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(slots.len(), 3, "{:?}", fb.body);
    assert!(slots.iter().any(|s| s["original_time"] == ot));
    t.emu.shift_series(&t.cal, &master, 600);
    let r = post(
        &t.emu,
        &t.token,
        "/open-apis/meeting_room/instance/reply",
        json!({"room_id": t.room, "uid": suid, "original_time": ot, "status": "ACCEPTED_BY_ADMIN"}),
    )
    .await;
    assert_eq!(r.code(), 105_003);
    let r = post(&t.emu, &t.token, "/open-apis/meeting_room/instance/reply", json!({"room_id": t.room, "uid": suid, "original_time": ot + 600, "status": "DECLINED_BY_ADMIN"})).await;
    assert_eq!(r.code(), 0);
    let r = post(
        &t.emu,
        &t.token,
        "/open-apis/meeting_room/instance/reply",
        json!({"room_id": t.room, "uid": suid, "original_time": 0, "status": "MAYBE"}),
    )
    .await;
    assert_eq!(r.code(), 190_002);
}
