//! Google recurring events: expansion in the event's zone across DST, real
//! instance ids, exceptions written to instance ids, all-day series.

use bridge_emulators::google::EventTime;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use crate::google_common::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Daily 09:00 America/New_York from Friday 2024-03-08; DST starts Sunday
/// 2024-03-10, so the UTC time of the occurrence moves from 14:00 to 13:00.
fn ny_daily(count: u32) -> serde_json::Value {
    json!({
        "id": "standup001",
        "summary": "Standup",
        "start": {"dateTime": "2024-03-08T09:00:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2024-03-08T09:30:00", "timeZone": "America/New_York"},
        "recurrence": [format!("RRULE:FREQ=DAILY;COUNT={count}")],
    })
}

const WINDOW: &str = "timeMin=2024-03-01T00:00:00Z&timeMax=2024-04-01T00:00:00Z";

#[tokio::test]
async fn single_events_expand_across_dst_with_real_instance_ids() {
    let (emu, api) = setup_in("America/New_York").await;
    let a = api.post(&events("primary"), &ny_daily(4)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let list = api
        .get(&format!(
            "{}?singleEvents=true&orderBy=startTime&{WINDOW}",
            events("primary")
        ))
        .await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(
        list.ids(),
        [
            "standup001_20240308T140000Z",
            "standup001_20240309T140000Z",
            "standup001_20240310T130000Z",
            "standup001_20240311T130000Z",
        ]
    );
    let items = list.body["items"].as_array().unwrap();
    // Local time stays 09:00 on both sides of the change.
    assert_eq!(items[1]["start"]["dateTime"], "2024-03-09T09:00:00-05:00");
    assert_eq!(items[2]["start"]["dateTime"], "2024-03-10T09:00:00-04:00");
    assert_eq!(items[2]["end"]["dateTime"], "2024-03-10T09:30:00-04:00");
    assert_eq!(items[2]["recurringEventId"], "standup001");
    assert_eq!(
        items[2]["originalStartTime"]["dateTime"],
        "2024-03-10T09:00:00-04:00"
    );
    assert_eq!(
        items[2]["originalStartTime"]["timeZone"],
        "America/New_York"
    );
    assert!(items.iter().all(|i| i.get("recurrence").is_none()));
    // In UTC (timeZone parameter) the shift is visible.
    let in_utc = api
        .get(&format!(
            "{}?singleEvents=true&timeZone=UTC&{WINDOW}",
            events("primary")
        ))
        .await;
    assert_eq!(
        in_utc.body["items"][2]["start"]["dateTime"],
        "2024-03-10T13:00:00Z"
    );

    // Without singleEvents the master comes back once, with its rule.
    let masters = api.get(&format!("{}?{WINDOW}", events("primary"))).await;
    assert_eq!(masters.ids(), ["standup001"]);
    assert_eq!(
        masters.body["items"][0]["recurrence"],
        json!(["RRULE:FREQ=DAILY;COUNT=4"])
    );
    let ordered = api
        .get(&format!("{}?orderBy=startTime", events("primary")))
        .await;
    assert_eq!(ordered.status, 400, "orderBy=startTime needs singleEvents");

    // The instance ids are addressable; ids of non-occurrences are not.
    let inst = api
        .get(&event("primary", "standup001_20240310T130000Z"))
        .await;
    assert_eq!(inst.status, 200);
    assert_eq!(inst.body["summary"], "Standup");
    for missing in [
        "standup001_20240310T140000Z",
        "standup001_20240312T130000Z",
        "standup001_20240310",
    ] {
        assert_eq!(
            api.get(&event("primary", missing)).await.status,
            404,
            "{missing}"
        );
    }
    let expanded = emu.expanded_instances(
        ALICE,
        utc("2024-03-01T00:00:00Z"),
        utc("2024-04-01T00:00:00Z"),
    );
    assert_eq!(expanded.len(), 4);
    assert_eq!(
        expanded[3].start,
        EventTime::DateTime(utc("2024-03-11T13:00:00Z"))
    );

    // And in the autumn: daily 09:00 across 2024-11-03.
    let autumn = json!({
        "id": "autumn0001",
        "start": {"dateTime": "2024-11-02T09:00:00-04:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2024-11-02T10:00:00-04:00", "timeZone": "America/New_York"},
        "recurrence": ["RRULE:FREQ=DAILY;UNTIL=20241103"],
    });
    assert_eq!(api.post(&events("primary"), &autumn).await.status, 200);
    let fall = api
        .get(&format!("{}/autumn0001/instances", events("primary")))
        .await;
    assert_eq!(
        fall.ids(),
        ["autumn0001_20241102T130000Z", "autumn0001_20241103T140000Z"]
    );
}

#[tokio::test]
async fn modified_and_cancelled_instances_show_in_the_expansion() {
    let (emu, api) = setup_in("America/New_York").await;
    api.post(&events("primary"), &ny_daily(4)).await;
    let moved = api
        .patch(
            &event("primary", "standup001_20240309T140000Z"),
            &json!({
                "summary": "Standup (late)",
                "start": {"dateTime": "2024-03-09T11:00:00-05:00"},
                "end": {"dateTime": "2024-03-09T11:30:00-05:00"},
            }),
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert_eq!(moved.body["id"], "standup001_20240309T140000Z");
    assert_eq!(moved.body["recurringEventId"], "standup001");
    let del = api
        .delete(&event("primary", "standup001_20240310T130000Z"))
        .await;
    assert_eq!(del.status, 204);
    let again = api
        .delete(&event("primary", "standup001_20240310T130000Z"))
        .await;
    assert_eq!(again.status, 410);

    let list = api
        .get(&format!(
            "{}?singleEvents=true&orderBy=startTime&{WINDOW}",
            events("primary")
        ))
        .await;
    assert_eq!(
        list.ids(),
        [
            "standup001_20240308T140000Z",
            "standup001_20240309T140000Z",
            "standup001_20240311T130000Z",
        ]
    );
    let late = &list.body["items"][1];
    assert_eq!(late["summary"], "Standup (late)");
    assert_eq!(late["start"]["dateTime"], "2024-03-09T11:00:00-05:00");
    assert_eq!(
        late["originalStartTime"]["dateTime"],
        "2024-03-09T09:00:00-05:00"
    );
    let with_deleted = api
        .get(&format!(
            "{}?singleEvents=true&showDeleted=true&orderBy=startTime&{WINDOW}",
            events("primary")
        ))
        .await;
    assert_eq!(with_deleted.ids().len(), 4);
    assert_eq!(with_deleted.body["items"][2]["status"], "cancelled");

    // Without singleEvents: the master plus both exceptions (the cancelled
    // one included even without showDeleted, as for a live series).
    let raw = api.get(&events("primary")).await;
    assert_eq!(
        raw.ids(),
        [
            "standup001",
            "standup001_20240309T140000Z",
            "standup001_20240310T130000Z"
        ]
    );

    // A later master change keeps the exceptions.
    api.patch(
        &event("primary", "standup001"),
        &json!({"description": "daily"}),
    )
    .await;
    let instances = api
        .get(&format!("{}/standup001/instances", events("primary")))
        .await;
    assert_eq!(instances.ids().len(), 3);
    assert_eq!(instances.body["items"][1]["summary"], "Standup (late)");

    let expanded = emu.expanded_instances(
        ALICE,
        utc("2024-03-01T00:00:00Z"),
        utc("2024-04-01T00:00:00Z"),
    );
    let statuses: Vec<(&str, &str)> = expanded
        .iter()
        .map(|i| (i.id.as_str(), i.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("standup001_20240308T140000Z", "confirmed"),
            ("standup001_20240309T140000Z", "confirmed"),
            ("standup001_20240310T130000Z", "cancelled"),
            ("standup001_20240311T130000Z", "confirmed"),
        ]
    );
    assert_eq!(expanded[1].summary.as_deref(), Some("Standup (late)"));
    assert_eq!(
        expanded[1].original_start,
        Some(EventTime::DateTime(utc("2024-03-09T14:00:00Z")))
    );
    let stored = emu.events(ALICE);
    assert_eq!(stored.len(), 3, "master + two exceptions");
    assert_eq!(stored[2].status, "cancelled");

    // Recurrence on an instance is refused.
    let bad = api
        .patch(
            &event("primary", "standup001_20240311T130000Z"),
            &json!({"recurrence": ["RRULE:FREQ=WEEKLY"]}),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn all_day_series_have_date_instance_ids() {
    let (emu, api) = setup().await;
    let body = json!({
        "id": "sprint0001",
        "summary": "Sprint day",
        "start": {"date": "2024-01-01"},
        "end": {"date": "2024-01-02"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE;VALUE=DATE:20240115"],
    });
    let a = api.post(&events("primary"), &body).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let list = api
        .get(&format!(
            "{}?singleEvents=true&timeMin=2023-12-01T00:00:00Z&timeMax=2024-03-01T00:00:00Z",
            events("primary")
        ))
        .await;
    assert_eq!(
        list.ids(),
        [
            "sprint0001_20240101",
            "sprint0001_20240108",
            "sprint0001_20240122"
        ]
    );
    assert_eq!(
        list.body["items"][1]["start"],
        json!({"date": "2024-01-08"})
    );
    assert_eq!(list.body["items"][1]["end"], json!({"date": "2024-01-09"}));
    assert_eq!(
        list.body["items"][1]["originalStartTime"],
        json!({"date": "2024-01-08"})
    );
    assert_eq!(
        api.get(&event("primary", "sprint0001_20240115"))
            .await
            .status,
        404
    );
    let cancel = api
        .patch(
            &event("primary", "sprint0001_20240122"),
            &json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(cancel.body["status"], "cancelled");
    let expanded = emu.expanded_instances(
        ALICE,
        utc("2023-12-01T00:00:00Z"),
        utc("2024-03-01T00:00:00Z"),
    );
    assert_eq!(expanded.len(), 3);
    assert_eq!(
        expanded[2].start,
        EventTime::Date(NaiveDate::from_ymd_opt(2024, 1, 22).unwrap())
    );
    assert_eq!(expanded[2].status, "cancelled");
}

#[tokio::test]
async fn deleting_a_master_cancels_the_series() {
    let (emu, api) = setup_in("America/New_York").await;
    api.post(&events("primary"), &ny_daily(3)).await;
    api.patch(
        &event("primary", "standup001_20240309T140000Z"),
        &json!({"summary": "special"}),
    )
    .await;
    let token = api.get(&events("primary")).await.body["nextSyncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    api.delete(&event("primary", "standup001")).await;
    let list = api
        .get(&format!("{}?singleEvents=true&{WINDOW}", events("primary")))
        .await;
    assert!(list.ids().is_empty());
    let delta = api
        .get(&format!("{}?syncToken={token}", events("primary")))
        .await;
    let items = delta.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["status"] == "cancelled"));
    assert_eq!(
        api.get(&format!("{}/standup001/instances", events("primary")))
            .await
            .status,
        410
    );
    assert!(emu.events(ALICE).iter().all(|e| e.status == "cancelled"));
}

/// A series whose start is the second 01:30 of a fall-back night: the start
/// is the first instance (Google's `start` docs, RFC 5545 DTSTART), COUNT
/// includes it, the next ones follow the local time, and an EXDATE in
/// local form names it.
#[tokio::test]
async fn a_start_at_the_second_of_two_equal_times_is_the_first_instance() {
    let (_emu, api) = setup_in("America/New_York").await;
    let series = |id: &str, recurrence: serde_json::Value| {
        json!({
            "id": id,
            "summary": "Second 01:30",
            "start": {"dateTime": "2026-11-01T01:30:00-05:00", "timeZone": "America/New_York"},
            "end": {"dateTime": "2026-11-01T02:00:00-05:00", "timeZone": "America/New_York"},
            "recurrence": recurrence,
        })
    };
    let list = |id: &'static str| {
        let api = &api;
        async move {
            let l = api
                .get(&format!(
                    "{}?singleEvents=true&orderBy=startTime&timeMin=2026-10-30T00:00:00Z&timeMax=2026-11-10T00:00:00Z",
                    events("primary")
                ))
                .await;
            l.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["recurringEventId"] == id)
                .map(|i| {
                    (
                        i["id"].as_str().unwrap().to_owned(),
                        i["start"]["dateTime"].as_str().unwrap().to_owned(),
                        i["end"]["dateTime"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let a = api
        .post(
            &events("primary"),
            &series("fallback001", json!(["RRULE:FREQ=DAILY;COUNT=3"])),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        list("fallback001").await,
        [
            (
                "fallback001_20261101T063000Z".to_owned(),
                "2026-11-01T01:30:00-05:00".to_owned(),
                "2026-11-01T02:00:00-05:00".to_owned()
            ),
            (
                "fallback001_20261102T063000Z".to_owned(),
                "2026-11-02T01:30:00-05:00".to_owned(),
                "2026-11-02T02:00:00-05:00".to_owned()
            ),
            (
                "fallback001_20261103T063000Z".to_owned(),
                "2026-11-03T01:30:00-05:00".to_owned(),
                "2026-11-03T02:00:00-05:00".to_owned()
            ),
        ]
    );
    // The first occurrence is writable at its instance id.
    let i = api
        .get(&format!(
            "{}/fallback001_20261101T063000Z",
            events("primary")
        ))
        .await;
    assert_eq!(i.status, 200, "{:?}", i.body);
    // An EXDATE in local form cancels it.
    let b = api
        .post(
            &events("primary"),
            &series(
                "fallback002",
                json!([
                    "RRULE:FREQ=DAILY;COUNT=3",
                    "EXDATE;TZID=America/New_York:20261101T013000"
                ]),
            ),
        )
        .await;
    assert_eq!(b.status, 200, "{:?}", b.body);
    let ids: Vec<String> = list("fallback002").await.into_iter().map(|x| x.0).collect();
    assert_eq!(
        ids,
        [
            "fallback002_20261102T063000Z",
            "fallback002_20261103T063000Z"
        ]
    );
}
