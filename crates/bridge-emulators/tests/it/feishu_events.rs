//! List events (three modes + deltas), get event, attendees, instances.

use bridge_core::feishu::{Attendee, AttendeeType, Event, EventPage, EventStatus, RsvpStatus};
use bridge_emulators::feishu::FeishuConfig;
use serde_json::Value;

use crate::common::*;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn page(a: &Answer) -> EventPage {
    assert_eq!(a.code(), 0, "{:?}", a.body);
    serde_json::from_value(a.body["data"].clone()).unwrap()
}

async fn list_all(
    emu: &bridge_emulators::feishu::FeishuEmulator,
    t: &str,
    cal: &str,
    q: &str,
) -> (Vec<Event>, String, usize) {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}?{q}", path_events(cal));
        if let Some(pt) = &token {
            url.push_str(&format!("&page_token={pt}"));
        }
        let p = page(&get(emu, t, &url).await);
        pages += 1;
        items.extend(p.items);
        if p.has_more {
            assert!(p.sync_token.is_none(), "sync_token only on the last page");
            token = Some(p.page_token.expect("page_token while has_more"));
        } else {
            assert!(p.page_token.is_none(), "no page_token on the last page");
            return (
                items,
                p.sync_token.expect("sync_token on the last page"),
                pages,
            );
        }
    }
}

#[tokio::test]
async fn full_paging_with_clamped_page_size_then_delta() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    let events: Vec<Event> = (0..120)
        .map(|i| timed(&format!("e{i}"), T0 + i * 3600, 1800))
        .collect();
    emu.bulk_load(&cal, events);

    let (items, sync, pages) = list_all(&emu, &t, &cal, "page_size=1").await;
    assert_eq!(items.len(), 120);
    assert_eq!(pages, 3, "page_size=1 is clamped to 50");
    assert!(items.iter().all(|e| e.attendees.is_none()));
    let (_, _, pages) = list_all(&emu, &t, &cal, "page_size=5000").await;
    assert_eq!(pages, 1, "page_size=5000 is clamped to 1000");
    let (_, _, pages) = list_all(&emu, &t, &cal, "").await;
    assert_eq!(pages, 1, "default 500");

    // Delta: one update, one delete, one create.
    let first = items[0].event_id.clone().unwrap();
    let second = items[1].event_id.clone().unwrap();
    emu.update_event(&cal, &first, |e| e.summary = Some("renamed".into()));
    emu.delete_event(&cal, &second);
    let created = emu.create_event(&cal, timed("new", T0, 60));
    let delta = page(
        &get(
            &emu,
            &t,
            &format!("{}?sync_token={sync}", path_events(&cal)),
        )
        .await,
    );
    assert!(!delta.has_more);
    let by_id = |id: &str| {
        delta
            .items
            .iter()
            .find(|e| e.event_id.as_deref() == Some(id))
            .cloned()
    };
    assert_eq!(delta.items.len(), 3, "{:?}", delta.items);
    assert_eq!(by_id(&first).unwrap().summary.as_deref(), Some("renamed"));
    let gone = by_id(&second).unwrap();
    assert_eq!(gone.status, Some(EventStatus::Cancelled));
    assert_eq!(
        by_id(&created).unwrap().status,
        Some(EventStatus::Confirmed)
    );
    let next_sync = delta.sync_token.unwrap();
    let empty = page(
        &get(
            &emu,
            &t,
            &format!("{}?sync_token={next_sync}", path_events(&cal)),
        )
        .await,
    );
    assert!(empty.items.is_empty());
}

#[tokio::test]
async fn expired_and_bogus_tokens_are_190008_and_sync_with_range_is_190009() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    emu.bulk_load(&cal, (0..60).map(|i| timed("x", T0 + i, 10)).collect());
    let p = page(&get(&emu, &t, &format!("{}?page_size=50", path_events(&cal))).await);
    let pt = p.page_token.unwrap();
    emu.expire_page_tokens();
    let a = get(&emu, &t, &format!("{}?page_token={pt}", path_events(&cal))).await;
    assert_eq!((a.status, a.code()), (400, 190008));
    let a = get(
        &emu,
        &t,
        &format!("{}?sync_token=ListEventsSyncToken_bogus", path_events(&cal)),
    )
    .await;
    assert_eq!(a.code(), 190008);

    let (_, sync, _) = list_all(&emu, &t, &cal, "").await;
    let a = get(
        &emu,
        &t,
        &format!(
            "{}?sync_token={sync}&start_time={T0}&end_time={}",
            path_events(&cal),
            T0 + 100
        ),
    )
    .await;
    assert_eq!((a.status, a.code()), (400, 190009));
    // A sync token of one calendar is not valid for another.
    let other = emu.create_calendar("Other");
    let a = get(
        &emu,
        &t,
        &format!("{}?sync_token={sync}", path_events(&other)),
    )
    .await;
    assert_eq!(a.code(), 190008);
    emu.expire_sync_tokens();
    let a = get(
        &emu,
        &t,
        &format!("{}?sync_token={sync}", path_events(&cal)),
    )
    .await;
    assert_eq!(a.code(), 190008);
    let a = get(&emu, &t, &format!("{}?page_size=abc", path_events(&cal))).await;
    assert_eq!(a.code(), 190002);
}

#[tokio::test]
async fn time_range_mode_is_one_shot_and_truncated() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    emu.bulk_load(
        &cal,
        (0..80).map(|i| timed("x", T0 + i * 100, 50)).collect(),
    );
    emu.bulk_load(&cal, vec![timed("late", T0 + 1_000_000, 50)]);
    let q = format!("start_time={T0}&end_time={}&page_size=50", T0 + 100_000);
    let p = page(&get(&emu, &t, &format!("{}?{q}", path_events(&cal))).await);
    assert_eq!(p.items.len(), 50);
    assert!(!p.has_more);
    assert!(p.page_token.is_none() && p.sync_token.is_none());
    let q = format!("start_time={}&end_time={}", T0 + 999_000, T0 + 1_001_000);
    let p = page(&get(&emu, &t, &format!("{}?{q}", path_events(&cal))).await);
    assert_eq!(p.items.len(), 1);
    let a = get(&emu, &t, &format!("{}?start_time={T0}", path_events(&cal))).await;
    assert_eq!(a.code(), 190002);
}

#[tokio::test]
async fn anchor_mode_keeps_masters_and_recent_items() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    let old = emu.create_event(&cal, timed("old", T0 - 10 * 86_400, 3600));
    let fresh = emu.create_event(&cal, timed("fresh", T0 + 86_400, 3600));
    let master = emu.create_event(
        &cal,
        recurring("daily", T0 - 30 * 86_400, 1800, "FREQ=DAILY"),
    );
    let old_exc = emu.move_occurrence(
        &cal,
        &master,
        T0 - 29 * 86_400,
        T0 - 29 * 86_400 + 60,
        T0 - 29 * 86_400 + 120,
        None,
    );
    let new_exc = emu.cancel_occurrence(&cal, &master, T0 + 2 * 86_400);
    let (items, _, _) = list_all(&emu, &t, &cal, &format!("anchor_time={T0}")).await;
    let ids: Vec<String> = items.iter().filter_map(|e| e.event_id.clone()).collect();
    assert!(
        ids.contains(&fresh) && ids.contains(&master) && ids.contains(&new_exc),
        "{ids:?}"
    );
    assert!(!ids.contains(&old) && !ids.contains(&old_exc), "{ids:?}");
    let exc = items
        .iter()
        .find(|e| e.event_id.as_deref() == Some(new_exc.as_str()))
        .unwrap();
    assert_eq!(exc.status, Some(EventStatus::Cancelled));
    assert_eq!(exc.is_exception, Some(true));
    assert_eq!(exc.recurring_event_id.as_deref(), Some(master.as_str()));
}

#[tokio::test]
async fn get_event_attendees_and_codes() {
    // The room must still be booking while its pages are read, even on a
    // loaded machine (50 ms made this test flaky), and is then awaited.
    let emu = start_with(FeishuConfig {
        room_booking_delay: std::time::Duration::from_secs(2),
        ..fast_config()
    })
    .await;
    let t = tenant_token(&emu).await;
    let ann = emu.add_user("Ann");
    let cal = emu.primary_calendar(&ann);
    let id = emu.create_event(&cal, timed("1:1", T0, 1800));
    for i in 0..25 {
        emu.add_attendee(
            &cal,
            &id,
            Attendee {
                kind: Some(AttendeeType::ThirdParty),
                third_party_email: Some(format!("p{i}@example.com")),
                ..Attendee::default()
            },
        );
    }
    emu.add_room(&cal, &id, "omm_room1", "Room 1");

    let base = format!("{}/{id}", path_events(&cal));
    let plain = get(&emu, &t, &base).await;
    let ev = &plain.body["data"]["event"];
    assert_eq!(ev["event_id"], id.as_str());
    assert!(ev.get("attendees").is_none());
    assert_eq!(ev["organizer_calendar_id"], cal.as_str());
    assert_eq!(ev["event_organizer"]["user_id"], ann.as_str());
    assert!(ev["app_link"].as_str().unwrap().contains("originalTime=0"));
    let with = get(
        &emu,
        &t,
        &format!("{base}?need_attendee=true&max_attendee_num=5"),
    )
    .await;
    assert_eq!(
        with.body["data"]["event"]["attendees"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(with.body["data"]["event"]["has_more_attendee"], true);

    // Attendees: default 20 per page, page_size clamped to 10..=100.
    let a = get(&emu, &t, &format!("{base}/attendees")).await;
    assert_eq!(a.body["data"]["items"].as_array().unwrap().len(), 20);
    assert_eq!(a.body["data"]["has_more"], true);
    let a = get(&emu, &t, &format!("{base}/attendees?page_size=1")).await;
    assert_eq!(a.body["data"]["items"].as_array().unwrap().len(), 10);
    let mut all: Vec<Value> = Vec::new();
    let mut pt = String::new();
    loop {
        let q = if pt.is_empty() {
            String::new()
        } else {
            format!("?page_token={pt}")
        };
        let a = get(&emu, &t, &format!("{base}/attendees{q}")).await;
        all.extend(a.body["data"]["items"].as_array().unwrap().iter().cloned());
        match a.body["data"]["page_token"].as_str() {
            Some(next) => pt = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(all.len(), 26);
    let room = all.iter().find(|a| a["type"] == "resource").unwrap();
    assert_eq!(room["rsvp_status"], "needs_action");
    assert_eq!(room["room_id"], "omm_room1");
    assert!(
        room["attendee_id"]
            .as_str()
            .unwrap()
            .starts_with("resource_")
    );
    let room_status = || {
        emu.events(&cal)
            .pop()
            .unwrap()
            .attendees
            .unwrap()
            .into_iter()
            .find(|a| a.room_id.is_some())
            .unwrap()
            .rsvp_status
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while room_status() == Some(RsvpStatus::NeedsAction) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(room_status(), Some(RsvpStatus::Accept));

    let missing = get(&emu, &t, &format!("{}/nothere_0", path_events(&cal))).await;
    assert_eq!((missing.status, missing.code()), (404, 193001));
    let invalid = get(&emu, &t, &format!("{}/no-underscore", path_events(&cal))).await;
    assert_eq!(invalid.code(), 193000);
    emu.delete_event(&cal, &id);
    assert_eq!(get(&emu, &t, &base).await.code(), 193003);
}

#[tokio::test]
async fn invitations_appear_on_the_invitee_calendar() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let ann = emu.add_user("Ann");
    let bob = emu.add_user("Bob");
    let ann_cal = emu.primary_calendar(&ann);
    let bob_cal = emu.primary_calendar(&bob);
    let id = emu.create_event(&ann_cal, timed("sync", T0, 1800));
    let (_, sync, _) = list_all(&emu, &t, &bob_cal, "").await;
    emu.add_attendee(
        &ann_cal,
        &id,
        Attendee {
            kind: Some(AttendeeType::User),
            user_id: Some(bob.clone()),
            ..Attendee::default()
        },
    );
    let delta = page(
        &get(
            &emu,
            &t,
            &format!("{}?sync_token={sync}", path_events(&bob_cal)),
        )
        .await,
    );
    assert_eq!(delta.items.len(), 1);
    assert_eq!(delta.items[0].event_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        delta.items[0].organizer_calendar_id.as_deref(),
        Some(ann_cal.as_str())
    );
    let sync = delta.sync_token.unwrap();
    // Bob removes it from his calendar only.
    emu.delete_event(&bob_cal, &id);
    let delta = page(
        &get(
            &emu,
            &t,
            &format!("{}?sync_token={sync}", path_events(&bob_cal)),
        )
        .await,
    );
    assert_eq!(delta.items[0].status, Some(EventStatus::Cancelled));
    assert_eq!(emu.events(&ann_cal).len(), 1);
}

#[tokio::test]
async fn instances_expand_the_rule_and_apply_exceptions() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    let master = emu.create_event(&cal, recurring("standup", T0, 900, "FREQ=DAILY;COUNT=5"));
    let moved = emu.move_occurrence(
        &cal,
        &master,
        T0 + 86_400,
        T0 + 86_400 + 3600,
        T0 + 86_400 + 4500,
        Some("late standup"),
    );
    emu.cancel_occurrence(&cal, &master, T0 + 2 * 86_400);
    let url = format!(
        "{}/{master}/instances?start_time={}&end_time={}",
        path_events(&cal),
        T0 - 1,
        T0 + 10 * 86_400
    );
    let a = get(&emu, &t, &url).await;
    assert_eq!(a.code(), 0, "{:?}", a.body);
    let items = a.body["data"]["items"].as_array().unwrap();
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["event_id"].as_str().unwrap())
        .collect();
    let uid = master.trim_end_matches("_0");
    assert_eq!(
        ids,
        vec![
            format!("{uid}_{T0}"),
            moved.clone(),
            format!("{uid}_{}", T0 + 3 * 86_400),
            format!("{uid}_{}", T0 + 4 * 86_400),
        ]
    );
    assert_eq!(items[1]["summary"], "late standup");
    assert_eq!(items[1]["is_exception"], true);
    assert_eq!(items[0]["is_exception"], false);
    assert_eq!(a.body["data"]["has_more"], false);

    // Paging: page_size clamps to at least 10; exercise with a long series.
    let long = emu.create_event(&cal, recurring("hourly", T0, 60, "FREQ=HOURLY"));
    let url = format!(
        "{}/{long}/instances?start_time={T0}&end_time={}&page_size=1",
        path_events(&cal),
        T0 + 86_400
    );
    let a = get(&emu, &t, &url).await;
    assert_eq!(a.body["data"]["items"].as_array().unwrap().len(), 10);
    assert_eq!(a.body["data"]["has_more"], true);
    let pt = a.body["data"]["page_token"].as_str().unwrap();
    let b = get(&emu, &t, &format!("{url}&page_token={pt}")).await;
    assert_eq!(
        b.body["data"]["items"][0]["event_id"],
        format!("{}_{}", long.trim_end_matches("_0"), T0 + 36_000)
    );

    // Range rules.
    let a = get(
        &emu,
        &t,
        &format!("{}/{master}/instances", path_events(&cal)),
    )
    .await;
    assert_eq!(a.code(), 190002);
    let a = get(
        &emu,
        &t,
        &format!(
            "{}/{master}/instances?start_time={T0}&end_time={}",
            path_events(&cal),
            T0 + 3 * 366 * 86_400
        ),
    )
    .await;
    assert_eq!(a.code(), 190002);

    // A virtual occurrence can be fetched by id.
    let occ = get(
        &emu,
        &t,
        &format!("{}/{uid}_{}", path_events(&cal), T0 + 3 * 86_400),
    )
    .await;
    assert_eq!(
        occ.body["data"]["event"]["recurring_event_id"],
        master.as_str()
    );

    // instance_view: whole calendar, < 40 days.
    let v = get(
        &emu,
        &t,
        &format!(
            "{}/instance_view?start_time={T0}&end_time={}",
            path_events(&cal),
            T0 + 5 * 86_400
        ),
    )
    .await;
    assert_eq!(v.code(), 0, "{:?}", v.body);
    let n = v.body["data"]["items"].as_array().unwrap().len();
    assert_eq!(n, 4 + 5 * 24);
    let v = get(
        &emu,
        &t,
        &format!(
            "{}/instance_view?start_time={T0}&end_time={}",
            path_events(&cal),
            T0 + 41 * 86_400
        ),
    )
    .await;
    assert_eq!(v.code(), 190002);
}

#[tokio::test]
async fn bulk_load_scales_to_large_calendars() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Big");
    // 100k loads and lists in ~15 s in a debug build; keep the suite quick.
    let n = 20_000;
    let started = std::time::Instant::now();
    emu.bulk_load(
        &cal,
        (0..n).map(|i| timed("bulk", T0 + i * 60, 30)).collect(),
    );
    let loaded = started.elapsed();
    let (items, sync, pages) = list_all(&emu, &t, &cal, "page_size=1000").await;
    assert_eq!(items.len() as i64, n);
    assert_eq!(pages, 20);
    let listed = started.elapsed() - loaded;
    let delta = page(
        &get(
            &emu,
            &t,
            &format!("{}?sync_token={sync}", path_events(&cal)),
        )
        .await,
    );
    assert!(delta.items.is_empty());
    assert!(
        loaded.as_secs() < 10 && listed.as_secs() < 30,
        "load {loaded:?}, list {listed:?}"
    );
}

#[tokio::test]
async fn deleting_a_master_removes_its_exceptions() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    let master = emu.create_event(&cal, recurring("weekly", T0, 3600, "FREQ=WEEKLY;BYDAY=TH"));
    let moved = emu.move_occurrence(
        &cal,
        &master,
        T0 + 7 * 86_400,
        T0 + 8 * 86_400,
        T0 + 8 * 86_400 + 3600,
        None,
    );
    let cancelled = emu.cancel_occurrence(&cal, &master, T0 + 14 * 86_400);
    let exc = emu
        .events(&cal)
        .into_iter()
        .find(|e| e.event_id.as_deref() == Some(moved.as_str()))
        .unwrap();
    assert_eq!(exc.recurrence.as_deref(), Some(""));
    assert!(
        exc.app_link
            .unwrap()
            .contains(&format!("originalTime={}", T0 + 7 * 86_400))
    );
    let (_, sync, _) = list_all(&emu, &t, &cal, "").await;
    emu.delete_event(&cal, &master);
    assert!(emu.events(&cal).is_empty());
    let delta = page(
        &get(
            &emu,
            &t,
            &format!("{}?sync_token={sync}", path_events(&cal)),
        )
        .await,
    );
    let mut ids: Vec<String> = delta
        .items
        .iter()
        .map(|e| e.event_id.clone().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![master, moved, cancelled];
    want.sort();
    assert_eq!(ids, want);
    assert!(
        delta
            .items
            .iter()
            .all(|e| e.status == Some(EventStatus::Cancelled))
    );
}

/// The control route that settles a room booking now, and what the
/// attendees endpoint then says.
#[tokio::test]
async fn a_room_booking_is_settled_through_the_control_api() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let ann = emu.add_user("Ann");
    let cal = emu.primary_calendar(&ann);
    let id = emu.create_event(&cal, timed("Review", T0, 1800));
    emu.add_attendee(
        &cal,
        &id,
        Attendee {
            kind: Some(AttendeeType::Resource),
            room_id: Some("omm_a".into()),
            display_name: Some("Room A".into()),
            rsvp_status: Some(RsvpStatus::NeedsAction),
            ..Attendee::default()
        },
    );
    let room = |emu: &bridge_emulators::feishu::FeishuEmulator, t: String| {
        let base = format!("{}/{id}/attendees", path_events(&cal));
        let emu = emu.base_url();
        async move {
            let a = send(client().get(format!("{emu}{base}")).bearer_auth(&t)).await;
            a.body["data"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["type"] == "resource")
                .unwrap()["rsvp_status"]
                .clone()
        }
    };
    assert_eq!(room(&emu, t.clone()).await, "needs_action");
    let ctl = |path: String, body: Value| {
        let url = format!("{}/_emulator{path}", emu.base_url());
        async move { send(client().post(url).json(&body)).await }
    };
    let a = ctl(
        format!("/calendars/{cal}/events/{id}/rooms/omm_a/status"),
        serde_json::json!({"rsvp_status": "accept"}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(room(&emu, t.clone()).await, "accept");
    let a = ctl(
        format!("/calendars/{cal}/events/{id}/rooms/omm_other/status"),
        serde_json::json!({"rsvp_status": "decline"}),
    )
    .await;
    assert!(a.status >= 400, "an unknown room is refused: {:?}", a.body);
    emu.set_room_status(&cal, &id, "omm_a", RsvpStatus::Decline);
    assert_eq!(room(&emu, t).await, "decline");
}
