//! Google events.list: paging, sync tokens, deltas, filters.

use std::collections::BTreeSet;

use serde_json::json;

use crate::google_common::*;

fn hour_event(i: u32) -> serde_json::Value {
    timed(
        &format!("event{i:05}"),
        &format!("Event {i}"),
        &format!("2024-05-01T{:02}:00:00Z", i % 24),
        &format!("2024-05-01T{:02}:30:00Z", i % 24),
    )
}

#[tokio::test]
async fn paging_with_max_results_and_page_tokens() {
    let (emu, api) = setup().await;
    emu.seed_events(ALICE, (0..7).map(hour_event).collect());
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut url = format!("{}?maxResults=3", events("primary"));
    let sync = loop {
        let page = api.get(&url).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        assert_eq!(page.body["kind"], "calendar#events");
        assert_eq!(page.body["accessRole"], "owner");
        sizes.push(page.ids().len());
        seen.extend(page.ids());
        let next = page.body["nextPageToken"].as_str();
        let sync = page.body["nextSyncToken"].as_str();
        assert!(
            next.is_some() != sync.is_some(),
            "nextPageToken xor nextSyncToken"
        );
        match next {
            Some(t) => url = format!("{}?maxResults=3&pageToken={t}", events("primary")),
            None => break sync.unwrap().to_owned(),
        }
    };
    assert_eq!(sizes, [3, 3, 1]);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 7, "no duplicates, nothing missing");
    assert!(!sync.is_empty());

    // Default page size 250; maxResults is capped at 2500; 0 is refused.
    assert_eq!(api.get(&events("primary")).await.ids().len(), 7);
    assert_eq!(
        api.get(&format!("{}?maxResults=9999", events("primary")))
            .await
            .status,
        200
    );
    assert_eq!(
        api.get(&format!("{}?maxResults=0", events("primary")))
            .await
            .status,
        400
    );
    let bogus = api
        .get(&format!("{}?pageToken=garbage", events("primary")))
        .await;
    assert_eq!((bogus.status, bogus.reason()), (400, "invalid"));

    // A deletion between pages does not make the listing skip an item.
    let first = api
        .get(&format!("{}?maxResults=3", events("primary")))
        .await;
    let token = first.body["nextPageToken"].as_str().unwrap().to_owned();
    api.delete(&event("primary", &first.ids()[0])).await;
    let rest = api
        .get(&format!(
            "{}?maxResults=10&pageToken={token}",
            events("primary")
        ))
        .await;
    assert_eq!(rest.ids().len(), 4);
}

#[tokio::test]
async fn sync_token_deltas_include_deletions_as_cancelled() {
    let (emu, api) = setup().await;
    emu.seed_events(ALICE, (0..4).map(hour_event).collect());
    let full = api.get(&events("primary")).await;
    assert_eq!(full.ids().len(), 4);
    let token = full.body["nextSyncToken"].as_str().unwrap().to_owned();

    let empty = api
        .get(&format!("{}?syncToken={token}", events("primary")))
        .await;
    assert_eq!(empty.status, 200);
    assert!(empty.ids().is_empty());
    assert!(empty.body["nextSyncToken"].is_string());

    api.post(&events("primary"), &hour_event(10)).await;
    api.patch(
        &event("primary", "event00001"),
        &json!({"summary": "renamed"}),
    )
    .await;
    api.delete(&event("primary", "event00002")).await;
    emu.user_delete_event(ALICE, "event00003");

    let delta = api
        .get(&format!("{}?syncToken={token}", events("primary")))
        .await;
    assert_eq!(delta.status, 200, "{:?}", delta.body);
    let items = delta.body["items"].as_array().unwrap();
    let by_id = |id: &str| items.iter().find(|i| i["id"] == id).unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(by_id("event00010")["status"], "confirmed");
    assert_eq!(by_id("event00001")["summary"], "renamed");
    assert_eq!(by_id("event00002")["status"], "cancelled");
    assert_eq!(by_id("event00003")["status"], "cancelled");

    let next = delta.body["nextSyncToken"].as_str().unwrap();
    let after = api
        .get(&format!("{}?syncToken={next}", events("primary")))
        .await;
    assert!(after.ids().is_empty());

    // Deltas page too.
    let paged = api
        .get(&format!(
            "{}?syncToken={token}&maxResults=3",
            events("primary")
        ))
        .await;
    assert_eq!(paged.ids().len(), 3);
    let pt = paged.body["nextPageToken"].as_str().unwrap();
    let rest = api
        .get(&format!(
            "{}?pageToken={pt}&maxResults=3",
            events("primary")
        ))
        .await;
    assert_eq!(rest.ids().len(), 1);
    assert!(rest.body["nextSyncToken"].is_string());
}

#[tokio::test]
async fn expired_sync_tokens_are_410_full_sync_required() {
    let (emu, api) = setup().await;
    emu.seed_event(ALICE, hour_event(1));
    let token = api.get(&events("primary")).await.body["nextSyncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    emu.expire_sync_tokens();
    let a = api
        .get(&format!("{}?syncToken={token}", events("primary")))
        .await;
    assert_eq!(a.status, 410);
    assert_eq!(a.reason(), "fullSyncRequired");
    assert_eq!(
        a.body["error"]["message"],
        "Sync token is no longer valid, a full sync is required."
    );
    let forged = api
        .get(&format!("{}?syncToken=AAAA.bbbb", events("primary")))
        .await;
    assert_eq!(forged.status, 410);

    // Forbidden combinations are 400.
    let fresh = api.get(&events("primary")).await.body["nextSyncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    for extra in [
        "timeMin=2024-01-01T00:00:00Z",
        "orderBy=updated",
        "privateExtendedProperty=a%3D1",
        "iCalUID=x",
        "q=x",
        "showDeleted=false",
    ] {
        let a = api
            .get(&format!("{}?syncToken={fresh}&{extra}", events("primary")))
            .await;
        assert_eq!(a.status, 400, "{extra}");
    }
}

#[tokio::test]
async fn private_extended_property_filter() {
    let (emu, api) = setup().await;
    let tagged = |id: &str, props: serde_json::Value| {
        let mut e = timed(id, id, "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z");
        e["extendedProperties"] = json!({"private": props});
        e
    };
    emu.seed_events(
        ALICE,
        vec![
            tagged(
                "taggeda1",
                json!({"feishuBridge": "1", "feishuEventId": "a"}),
            ),
            tagged(
                "taggedb1",
                json!({"feishuBridge": "1", "feishuEventId": "b"}),
            ),
            tagged("foreign1", json!({"other": "1"})),
        ],
    );
    let one = api
        .get(&format!(
            "{}?privateExtendedProperty=feishuBridge%3D1",
            events("primary")
        ))
        .await;
    let mut ids = one.ids();
    ids.sort();
    assert_eq!(ids, ["taggeda1", "taggedb1"]);
    let both = api
        .get(&format!(
            "{}?privateExtendedProperty=feishuBridge%3D1&privateExtendedProperty=feishuEventId%3Db",
            events("primary")
        ))
        .await;
    assert_eq!(both.ids(), ["taggedb1"], "constraints are ANDed");
    let shared = api
        .get(&format!(
            "{}?sharedExtendedProperty=feishuBridge%3D1",
            events("primary")
        ))
        .await;
    assert!(shared.ids().is_empty(), "private is not shared");
    let bad = api
        .get(&format!(
            "{}?privateExtendedProperty=novalue",
            events("primary")
        ))
        .await;
    assert_eq!(bad.status, 400);

    // Patching a key to null removes it.
    api.patch(
        &event("primary", "taggeda1"),
        &json!({"extendedProperties": {"private": {"feishuBridge": null}}}),
    )
    .await;
    let after = api
        .get(&format!(
            "{}?privateExtendedProperty=feishuBridge%3D1",
            events("primary")
        ))
        .await;
    assert_eq!(after.ids(), ["taggedb1"]);
    assert_eq!(
        emu.event(ALICE, "taggeda1").unwrap().private_properties["feishuEventId"],
        "a"
    );
}

#[tokio::test]
async fn time_window_and_text_filters() {
    let (emu, api) = setup().await;
    emu.seed_events(ALICE, (0..5).map(hour_event).collect());
    let w = api
        .get(&format!(
            "{}?timeMin=2024-05-01T01:30:00Z&timeMax=2024-05-01T03:00:00Z",
            events("primary")
        ))
        .await;
    let mut ids = w.ids();
    ids.sort();
    // timeMin bounds the end (01:30 end is excluded), timeMax the start.
    assert_eq!(ids, ["event00002"]);
    let empty_range = api
        .get(&format!(
            "{}?timeMin=2024-05-01T03:00:00Z&timeMax=2024-05-01T03:00:00Z",
            events("primary")
        ))
        .await;
    assert_eq!(empty_range.reason(), "timeRangeEmpty");
    let q = api.get(&format!("{}?q=event%204", events("primary"))).await;
    assert_eq!(q.ids(), ["event00004"]);
    let no_offset = api
        .get(&format!(
            "{}?timeMin=2024-05-01T01:30:00",
            events("primary")
        ))
        .await;
    assert_eq!(no_offset.status, 400);

    // updatedMin: changed since then, deletions included.
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    api.delete(&event("primary", "event00000")).await;
    let changed = api
        .get(&format!("{}?updatedMin={since}", events("primary")))
        .await;
    assert_eq!(changed.ids(), ["event00000"]);
    assert_eq!(changed.body["items"][0]["status"], "cancelled");
}
