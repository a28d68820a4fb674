//! Google events: insert/get/update/patch/delete, etags and If-Match, id
//! rules, tombstones, validation, import, sendUpdates, calendars.

use bridge_emulators::google::{NotificationKind, SCOPE_CALENDAR, WriteOp};
use reqwest::Method;
use serde_json::json;

use crate::google_common::*;

#[tokio::test]
async fn insert_get_update_with_etags_and_if_match() {
    let (emu, api) = setup_in("America/New_York").await;
    let ins = api
        .post(
            &events("primary"),
            &timed(
                "meeting0001",
                "Standup",
                "2024-07-01T13:00:00Z",
                "2024-07-01T13:30:00Z",
            ),
        )
        .await;
    assert_eq!(ins.status, 200, "{:?}", ins.body);
    let b = &ins.body;
    assert_eq!(b["kind"], "calendar#event");
    assert_eq!(b["id"], "meeting0001");
    assert_eq!(b["status"], "confirmed");
    assert_eq!(b["iCalUID"], "meeting0001@google.com");
    assert_eq!(b["sequence"], 0);
    assert_eq!(b["organizer"]["email"], ALICE);
    assert_eq!(b["reminders"], json!({"useDefault": true}));
    // Rendered in the calendar's zone.
    assert_eq!(b["start"]["dateTime"], "2024-07-01T09:00:00-04:00");
    assert!(
        b["htmlLink"]
            .as_str()
            .unwrap()
            .starts_with("https://www.google.com/calendar/event?eid=")
    );
    let etag1 = b["etag"].as_str().unwrap().to_owned();
    assert!(etag1.starts_with('"') && etag1.ends_with('"'));

    let got = api.get(&event("primary", "meeting0001")).await;
    assert_eq!(got.body["etag"], etag1.as_str());
    assert_eq!(got.headers["etag"], etag1.as_str());
    let not_modified = send(
        api.req(Method::GET, &event("primary", "meeting0001"))
            .header("If-None-Match", &etag1),
    )
    .await;
    assert_eq!(not_modified.status, 304);

    let mut changed = timed(
        "meeting0001",
        "Standup (moved)",
        "2024-07-01T14:00:00Z",
        "2024-07-01T14:30:00Z",
    );
    let upd = send(
        api.req(Method::PUT, &event("primary", "meeting0001"))
            .header("If-Match", &etag1)
            .json(&changed),
    )
    .await;
    assert_eq!(upd.status, 200, "{:?}", upd.body);
    let etag2 = upd.body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag1, etag2, "every write changes the etag");
    assert_eq!(upd.body["sequence"], 1, "a time change bumps the sequence");
    assert_eq!(upd.body["created"], b["created"]);

    changed["summary"] = json!("stale writer");
    let stale = send(
        api.req(Method::PUT, &event("primary", "meeting0001"))
            .header("If-Match", &etag1)
            .json(&changed),
    )
    .await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.reason(), "conditionNotMet");
    assert_eq!(stale.body["error"]["errors"][0]["location"], "If-Match");
    let stale_delete = send(
        api.req(Method::DELETE, &event("primary", "meeting0001"))
            .header("If-Match", &etag1),
    )
    .await;
    assert_eq!(stale_delete.status, 412);

    let patched = send(
        api.req(Method::PATCH, &event("primary", "meeting0001"))
            .header("If-Match", &etag2)
            .json(&json!({"description": "notes"})),
    )
    .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["summary"], "Standup (moved)");
    assert_eq!(patched.body["description"], "notes");
    assert_eq!(patched.body["sequence"], 1);
    assert_ne!(patched.body["etag"], etag2.as_str());

    let stored = emu.event(ALICE, "meeting0001").unwrap();
    assert_eq!(stored.etag, patched.body["etag"].as_str().unwrap());
    let too_low = api
        .put(
            &event("primary", "meeting0001"),
            &json!({"sequence": 0, "start": {"dateTime": "2024-07-01T14:00:00Z"}, "end": {"dateTime": "2024-07-01T14:30:00Z"}}),
        )
        .await;
    assert_eq!((too_low.status, too_low.reason()), (400, "invalid"));
    assert_eq!(
        api.get(&event("primary", "nosuchevent")).await.reason(),
        "notFound"
    );
}

#[tokio::test]
async fn client_ids_must_be_base32hex_of_5_to_1024_chars() {
    let (_emu, api) = setup().await;
    let body = |id: &str| timed(id, "x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z");
    for bad in [
        "abcd".to_owned(),
        "ABCDE".to_owned(),
        "abcdw".to_owned(),
        "abc-de".to_owned(),
        "abc_de".to_owned(),
        "0".repeat(1025),
    ] {
        let a = api.post(&events("primary"), &body(&bad)).await;
        assert_eq!(a.status, 400, "{bad}");
        assert_eq!(a.reason(), "invalid");
        assert_eq!(a.body["error"]["message"], "Invalid resource id value.");
        assert_eq!(a.body["error"]["status"], "INVALID_ARGUMENT");
    }
    for good in [
        "abcde".to_owned(),
        "0".repeat(1024),
        "v0123456789".to_owned(),
    ] {
        assert_eq!(api.post(&events("primary"), &body(&good)).await.status, 200);
    }
    // Server-generated ids follow the same alphabet.
    let mut no_id = body("x");
    no_id.as_object_mut().unwrap().remove("id");
    let a = api.post(&events("primary"), &no_id).await;
    let id = a.body["id"].as_str().unwrap();
    assert_eq!(id.len(), 26);
    assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'v')));
}

#[tokio::test]
async fn deleted_ids_stay_reserved_until_restored() {
    let (emu, api) = setup().await;
    let ev = timed(
        "feishu0001",
        "Mirror",
        "2024-01-01T10:00:00Z",
        "2024-01-01T11:00:00Z",
    );
    assert_eq!(api.post(&events("primary"), &ev).await.status, 200);
    let del = api.delete(&event("primary", "feishu0001")).await;
    assert_eq!(del.status, 204);
    assert!(del.body.is_null(), "delete answers an empty body");

    let got = api.get(&event("primary", "feishu0001")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["status"], "cancelled");
    assert!(api.get(&events("primary")).await.ids().is_empty());
    assert_eq!(
        api.get(&format!("{}?showDeleted=true", events("primary")))
            .await
            .ids(),
        ["feishu0001"]
    );

    let again = api.post(&events("primary"), &ev).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.reason(), "duplicate");
    assert_eq!(
        again.body["error"]["message"],
        "The requested identifier already exists."
    );
    let twice = api.delete(&event("primary", "feishu0001")).await;
    assert_eq!((twice.status, twice.reason()), (410, "deleted"));

    let restored = api.put(&event("primary", "feishu0001"), &ev).await;
    assert_eq!(restored.status, 200);
    assert_eq!(restored.body["status"], "confirmed");
    assert_eq!(api.get(&events("primary")).await.ids(), ["feishu0001"]);

    // Patch restores as well.
    api.delete(&event("primary", "feishu0001")).await;
    let p = api
        .patch(&event("primary", "feishu0001"), &json!({"summary": "back"}))
        .await;
    assert_eq!(p.body["status"], "confirmed");
    assert_eq!(emu.events(ALICE).len(), 1, "one record, never a duplicate");
}

#[tokio::test]
async fn invalid_bodies_get_googles_errors() {
    let (_emu, api) = setup().await;
    let mut backwards = timed("abcde", "x", "2024-01-01T11:00:00Z", "2024-01-01T10:00:00Z");
    let a = api.post(&events("primary"), &backwards).await;
    assert_eq!((a.status, a.reason()), (400, "timeRangeEmpty"));
    assert_eq!(a.body["error"]["errors"][0]["domain"], "calendar");
    backwards["start"] = json!({"date": "2024-01-02"});
    backwards["end"] = json!({"date": "2024-01-02"});
    assert_eq!(
        api.post(&events("primary"), &backwards).await.reason(),
        "timeRangeEmpty"
    );

    let mut reminders = timed("abcdf", "x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z");
    reminders["reminders"] = json!({
        "useDefault": false,
        "overrides": (1..=6).map(|m| json!({"method": "popup", "minutes": m})).collect::<Vec<_>>(),
    });
    let a = api.post(&events("primary"), &reminders).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.reason(), "eventRemindersCountExceedsLimit");
    reminders["reminders"]["overrides"] = json!([
        {"method": "popup", "minutes": 10},
        {"method": "email", "minutes": 60},
        {"method": "popup", "minutes": 0},
        {"method": "email", "minutes": 40320},
        {"method": "popup", "minutes": 5},
    ]);
    let ok = api.post(&events("primary"), &reminders).await;
    assert_eq!(ok.status, 200, "five overrides are fine: {:?}", ok.body);
    assert_eq!(
        ok.body["reminders"]["overrides"].as_array().unwrap().len(),
        5
    );

    let a = api
        .post(
            &events("primary"),
            &json!({"id": "abcdg", "start": {"dateTime": "2024-01-01T10:00:00Z"}}),
        )
        .await;
    assert_eq!((a.status, a.reason()), (400, "required"));
    assert_eq!(a.body["error"]["message"], "Missing end time.");

    let a = api
        .post(
            &events("primary"),
            &json!({
                "id": "abcdh",
                "start": {"dateTime": "2024-01-01T10:00:00"},
                "end": {"dateTime": "2024-01-01T11:00:00"},
            }),
        )
        .await;
    assert_eq!(
        a.body["error"]["message"],
        "Missing time zone definition for start time."
    );

    let raw = send(
        api.req(Method::POST, &events("primary"))
            .header("Content-Type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!((raw.status, raw.reason()), (400, "parseError"));

    let mut bad_rule = timed("abcdi", "x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z");
    bad_rule["start"]["timeZone"] = json!("UTC");
    bad_rule["recurrence"] = json!(["DTSTART:20240101T100000Z", "RRULE:FREQ=DAILY"]);
    assert_eq!(
        api.post(&events("primary"), &bad_rule).await.reason(),
        "invalid"
    );
}

#[tokio::test]
async fn import_uses_the_ical_uid_for_identity() {
    let (emu, api) = setup().await;
    let body = json!({
        "iCalUID": "foobar",
        "summary": "Imported",
        "organizer": {"email": "boss@feishu.example", "displayName": "Boss"},
        "start": {"date": "2024-02-01"},
        "end": {"date": "2024-02-02"},
    });
    let a = api
        .post(&format!("{}/import", events("primary")), &body)
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["id"], "_cpnmuoj1e8", "_ + base32hex(iCalUID)");
    assert_eq!(a.body["organizer"]["email"], "boss@feishu.example");
    let dup = api
        .post(&format!("{}/import", events("primary")), &body)
        .await;
    assert_eq!((dup.status, dup.reason()), (409, "duplicate"));
    let mut no_uid = body.clone();
    no_uid.as_object_mut().unwrap().remove("iCalUID");
    assert_eq!(
        api.post(&format!("{}/import", events("primary")), &no_uid)
            .await
            .reason(),
        "required"
    );
    let by_uid = api
        .get(&format!("{}?iCalUID=foobar", events("primary")))
        .await;
    assert_eq!(by_uid.ids(), ["_cpnmuoj1e8"]);
    assert_eq!(emu.writes()[0].op, WriteOp::Import);
}

#[tokio::test]
async fn send_updates_is_recorded_and_drives_notifications() {
    let (emu, api) = setup().await;
    let mut ev = timed(
        "invite001",
        "x",
        "2024-01-01T10:00:00Z",
        "2024-01-01T11:00:00Z",
    );
    ev["attendees"] = json!([
        {"email": "bob@example.com"},
        {"email": "carol@partner.example"},
    ]);
    let a = api
        .post(&format!("{}?sendUpdates=none", events("primary")), &ev)
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["attendees"][0]["responseStatus"], "needsAction");
    assert!(emu.notifications().is_empty(), "none sends nothing");
    ev["id"] = json!("invite002");
    api.post(&events("primary"), &ev).await;
    assert!(emu.notifications().is_empty(), "absent sends nothing");

    ev["id"] = json!("invite003");
    api.post(
        &format!("{}?sendUpdates=externalOnly", events("primary")),
        &ev,
    )
    .await;
    let n = emu.notifications();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].recipient, "carol@partner.example");
    assert_eq!(n[0].kind, NotificationKind::Invitation);

    api.delete(&format!(
        "{}?sendUpdates=all",
        event("primary", "invite001")
    ))
    .await;
    let n = emu.notifications();
    assert_eq!(n.len(), 3);
    assert!(
        n[1..]
            .iter()
            .all(|x| x.kind == NotificationKind::Cancellation)
    );

    let w = emu.writes();
    let modes: Vec<Option<&str>> = w.iter().map(|x| x.send_updates.as_deref()).collect();
    assert_eq!(
        modes,
        [Some("none"), None, Some("externalOnly"), Some("all")]
    );
    assert!(w.iter().all(|x| !x.batch_part && x.actor == ALICE));
    let calls = emu.calls();
    assert_eq!(calls[0].send_updates.as_deref(), Some("none"));
    assert!(calls[0].write);

    let bad = api
        .post(&format!("{}?sendUpdates=everyone", events("primary")), &ev)
        .await;
    assert_eq!((bad.status, bad.reason()), (400, "invalid"));
}

#[tokio::test]
async fn calendars_insert_and_get() {
    let (emu, api) = setup().await;
    let missing = api
        .post("/calendars", &json!({"timeZone": "Asia/Shanghai"}))
        .await;
    assert_eq!((missing.status, missing.reason()), (400, "required"));
    let c = api
        .post(
            "/calendars",
            &json!({"summary": "Feishu mirror", "timeZone": "Asia/Shanghai"}),
        )
        .await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["kind"], "calendar#calendar");
    let id = c.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("c_") && id.ends_with("@group.calendar.google.com"));
    let got = api.get(&format!("/calendars/{id}")).await;
    assert_eq!(got.body["summary"], "Feishu mirror");
    assert_eq!(got.body["timeZone"], "Asia/Shanghai");
    assert_eq!(emu.writes()[0].op, WriteOp::CalendarInsert);

    // Other users cannot see it.
    emu.add_user("mallory@example.com");
    let m = Api::new(
        &emu,
        &emu.issue_access_token("mallory@example.com", SCOPE_CALENDAR),
    );
    assert_eq!(m.get(&format!("/calendars/{id}")).await.status, 404);
    assert_eq!(m.get(&events(&id)).await.status, 404);
    let ev = m
        .post(
            &events(&id),
            &timed("abcde", "x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    assert_eq!(ev.status, 404);
}

#[tokio::test]
async fn user_side_edits_and_deletes_look_like_google_changes() {
    let (emu, api) = setup().await;
    let a = api
        .post(
            &events("primary"),
            &timed(
                "mirrored01",
                "From Feishu",
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
            ),
        )
        .await;
    let etag = a.body["etag"].as_str().unwrap().to_owned();
    let edited = emu.user_edit_event(ALICE, "mirrored01", json!({"summary": "Edited by a human"}));
    assert_eq!(edited.summary.as_deref(), Some("Edited by a human"));
    assert_ne!(edited.etag, etag);
    let stale = send(
        api.req(Method::PATCH, &event("primary", "mirrored01"))
            .header("If-Match", &etag)
            .json(&json!({"summary": "From Feishu"})),
    )
    .await;
    assert_eq!(stale.status, 412, "the client sees the user's edit");
    emu.user_delete_event(ALICE, "mirrored01");
    assert_eq!(
        api.get(&event("primary", "mirrored01")).await.body["status"],
        "cancelled"
    );
    assert_eq!(
        emu.writes().len(),
        1,
        "user-side changes are not client writes"
    );
}
