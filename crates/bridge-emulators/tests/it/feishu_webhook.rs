//! Pushes over webhook: subscription, envelopes, aggregation, encryption,
//! signature, retries, duplicates.

use std::time::Duration;

use bridge_core::feishu::{Attendee, AttendeeType, RsvpStatus};
use bridge_emulators::feishu::webhook::{decrypt, signature};
use bridge_emulators::feishu::{Faults, FeishuConfig, RoomEventKind, Transport, WebhookTarget};
use serde_json::{Value, json};

use crate::common::*;

const T0: i64 = 1_767_225_600;

fn target(r: &Receiver, key: Option<&str>) -> Option<WebhookTarget> {
    Some(WebhookTarget {
        url: r.url.clone(),
        encrypt_key: key.map(str::to_owned),
        verification_token: "vtoken".into(),
    })
}

fn plain(r: &Received) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

async fn subscribed_user(
    emu: &bridge_emulators::feishu::FeishuEmulator,
    cal: &str,
) -> (String, String) {
    let ann = emu.add_user("Ann");
    let (ut, _) = emu.issue_user_token(&ann, "calendar:calendar:readonly");
    let a = post(
        emu,
        &ut,
        &format!("/open-apis/calendar/v4/calendars/{cal}/events/subscription"),
        json!({}),
    )
    .await;
    assert_eq!(a.code(), 0);
    (ann, ut)
}

#[test]
fn official_vector_decrypts() {
    let pt = decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap();
    assert_eq!(pt, b"hello world");
}

#[tokio::test]
async fn encrypted_signed_push_after_subscription() {
    let r = Receiver::start().await;
    let emu = start_with(FeishuConfig {
        webhook: target(&r, Some("enc-key")),
        ..fast_config()
    })
    .await;
    let cal = emu.create_calendar("Team");
    // Not subscribed yet: nothing is pushed.
    emu.create_event(&cal, timed("before", T0, 60));
    let (ann, _) = subscribed_user(&emu, &cal).await;
    let id = emu.create_event(&cal, timed("after", T0, 60));
    let seen = r.wait_for(1).await;
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    let ts = req.headers["x-lark-request-timestamp"].to_str().unwrap();
    let nonce = req.headers["x-lark-request-nonce"].to_str().unwrap();
    assert!(ts.len() == 10, "seconds: {ts}");
    assert_eq!(
        req.headers["x-lark-signature"].to_str().unwrap(),
        signature(ts, nonce, "enc-key", &req.body)
    );
    let outer = plain(req);
    assert_eq!(outer.as_object().unwrap().len(), 1);
    let inner: Value =
        serde_json::from_slice(&decrypt("enc-key", outer["encrypt"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(inner["schema"], "2.0");
    let h = &inner["header"];
    assert_eq!(h["event_type"], "calendar.calendar.event.changed_v4");
    assert_eq!(h["token"], "vtoken");
    assert_eq!(h["app_id"], "cli_test_app");
    assert_eq!(h["create_time"].as_str().unwrap().len(), 13, "ms");
    assert_eq!(h["event_id"].as_str().unwrap().len(), 32);
    let e = &inner["event"];
    assert_eq!(e["calendar_id"], cal.as_str());
    assert_eq!(e["calendar_event_id"], id.as_str());
    assert_eq!(e["change_type"], "create");
    assert_eq!(e["user_id_list"][0]["open_id"], ann.as_str());
    assert!(
        e["user_id_list"][0]["union_id"]
            .as_str()
            .unwrap()
            .starts_with("on_")
    );

    let d = emu.wait_for_deliveries(1, Duration::from_secs(2)).await;
    assert_eq!(d.len(), 1);
    assert!(d[0].delivered_ok);
    assert_eq!(d[0].transport, Transport::Webhook);
    assert_eq!(d[0].attempts, 1);
}

#[tokio::test]
async fn aggregation_window_merges_changes() {
    let r = Receiver::start().await;
    let emu = start_with(FeishuConfig {
        webhook: target(&r, None),
        aggregation_window: Duration::from_millis(100),
        ..fast_config()
    })
    .await;
    let cal = emu.create_calendar("Team");
    let (ann, _) = subscribed_user(&emu, &cal).await;
    // create + delete -> nothing
    let gone = emu.create_event(&cal, timed("flash", T0, 60));
    emu.delete_event(&cal, &gone);
    // create + update -> create
    let a = emu.create_event(&cal, timed("a", T0, 60));
    emu.update_event(&cal, &a, |e| e.summary = Some("a2".into()));
    // an existing event: update + update -> one update; rsvp + rsvp -> last rsvp
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = r.seen().len();
    assert_eq!(before, 1, "only the create of `a`");
    assert_eq!(plain(&r.seen()[0])["event"]["change_type"], "create");
    emu.update_event(&cal, &a, |e| e.summary = Some("a3".into()));
    emu.update_event(&cal, &a, |e| e.summary = Some("a4".into()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = r.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(plain(&seen[1])["event"]["change_type"], "update");

    emu.add_attendee(
        &cal,
        &a,
        Attendee {
            kind: Some(AttendeeType::User),
            user_id: Some(ann.clone()),
            ..Attendee::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = r.seen().len();
    emu.reply_rsvp(&cal, &a, &ann, RsvpStatus::Tentative);
    emu.reply_rsvp(&cal, &a, &ann, RsvpStatus::Accept);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = r.seen();
    let rsvps: Vec<Value> = seen[n..]
        .iter()
        .map(plain)
        .filter(|v| v["event"]["calendar_id"] == cal.as_str())
        .collect();
    assert_eq!(rsvps.len(), 1, "{rsvps:?}");
    assert_eq!(rsvps[0]["event"]["change_type"], "rsvp");
    assert_eq!(rsvps[0]["event"]["rsvp_infos"][0]["rsvp_status"], "accept");
    assert_eq!(
        rsvps[0]["event"]["rsvp_infos"][0]["from_user_id"]["open_id"],
        ann.as_str()
    );
}

#[tokio::test]
async fn failed_pushes_are_retried_on_the_schedule() {
    let r = Receiver::start().await;
    r.script(&[500, 503]);
    let emu = start_with(FeishuConfig {
        webhook: target(&r, None),
        ..fast_config()
    })
    .await;
    let id = emu.emit_v2("custom.event_v1", json!({"x": 1}));
    let d = emu.wait_for_deliveries(1, Duration::from_secs(3)).await;
    assert!(d[0].delivered_ok, "{d:?}");
    assert_eq!(d[0].event_id, id);
    assert_eq!(d[0].attempts, 3);
    let statuses: Vec<Option<u16>> = d[0].attempt_log.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(503), Some(200)]);
    let gaps: Vec<i64> = d[0]
        .attempt_log
        .windows(2)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .collect();
    assert!(gaps[0] >= 100 && gaps[1] >= 200, "{gaps:?}");
    let seen = r.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| plain(s)["header"]["event_id"] == id.as_str())
    );

    // Always failing: first attempt + 4 retries, then give up.
    r.script(&[500; 10]);
    emu.emit_v2("custom.event_v1", json!({}));
    let d = emu.wait_for_deliveries(2, Duration::from_secs(5)).await;
    assert!(d[1].gave_up && !d[1].delivered_ok);
    assert_eq!(d[1].attempts, 5);
}

#[tokio::test]
async fn unreachable_webhook_and_duplicates() {
    let emu = start_with(FeishuConfig {
        webhook: Some(WebhookTarget {
            url: "http://127.0.0.1:9/nothing".into(),
            encrypt_key: None,
            verification_token: "v".into(),
        }),
        webhook_retry_schedule: vec![Duration::from_millis(20)],
        ..fast_config()
    })
    .await;
    emu.emit_v2("x.y_v1", json!({}));
    let d = emu.wait_for_deliveries(1, Duration::from_secs(5)).await;
    assert!(d[0].gave_up);
    assert_eq!(d[0].attempts, 2);
    assert!(d[0].attempt_log[0].error.is_some());

    let r = Receiver::start().await;
    emu.set_webhook(target(&r, None));
    emu.set_faults(Faults {
        duplicate_rate: 1.0,
        ..Faults::default()
    });
    let id = emu.emit_v1(json!({"type": "some_v1_event", "k": "v"}));
    let seen = r.wait_for(2).await;
    assert_eq!(seen.len(), 2);
    for s in &seen {
        let v = plain(s);
        assert_eq!(v["uuid"], id.as_str());
        assert_eq!(v["type"], "event_callback");
        assert_eq!(v["event"]["type"], "some_v1_event");
        assert_eq!(v["event"]["app_id"], "cli_test_app");
    }
    let d = emu.deliveries();
    assert!(d[1].attempt_log.iter().any(|a| a.duplicate));
}

#[tokio::test]
async fn calendar_list_changes_room_events_and_challenge() {
    let r = Receiver::start().await;
    let emu = start_with(FeishuConfig {
        webhook: target(&r, None),
        ..fast_config()
    })
    .await;
    let ann = emu.add_user("Ann");
    let (ut, _) = emu.issue_user_token(&ann, "calendar:calendar");
    let a = post(
        &emu,
        &ut,
        "/open-apis/calendar/v4/calendars/subscription",
        json!({}),
    )
    .await;
    assert_eq!(a.code(), 0);
    let cal = emu.create_calendar("Shared");
    let seen = r.wait_for(1).await;
    let v = plain(&seen[0]);
    assert_eq!(v["header"]["event_type"], "calendar.calendar.changed_v4");
    assert_eq!(v["event"]["user_id_list"][0]["open_id"], ann.as_str());
    emu.delete_calendar(&cal);
    r.wait_for(2).await;

    emu.emit_third_party_room_event(
        RoomEventKind::Created,
        "uid-1",
        0,
        1_553_853_600_000,
        1_553_860_800_000,
        &["omm_a", "omm_b"],
        &ann,
    );
    let seen = r.wait_for(3).await;
    let v = plain(&seen[2]);
    assert_eq!(v["type"], "event_callback");
    assert_eq!(v["token"], "vtoken");
    let e = &v["event"];
    assert_eq!(e["type"], "third_party_meeting_room_event_created");
    assert_eq!(e["event_id"], "uid-1_0");
    assert_eq!(e["original_time"], 0);
    assert_eq!(e["start"]["time_stamp"], "1553853600000");
    assert_eq!(e["meeting_rooms"][1]["open_id"], "omm_b");
    assert_eq!(e["organizer"]["open_id"], ann.as_str());

    emu.emit_reserve_config_updated(json!({"scope_id": "omm_a", "scope_type": 2}));
    let seen = r.wait_for(4).await;
    assert_eq!(
        plain(&seen[3])["header"]["event_type"],
        "vc.reserve_config.updated_v1"
    );

    // URL verification: a plain receiver does not echo, an echoing one does.
    assert!(emu.verify_webhook().await.is_err());
    r.echo_challenge();
    emu.verify_webhook().await.unwrap();
}
