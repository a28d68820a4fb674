//! Calendar list / primary / get.

use serde_json::json;

use crate::common::*;

const CALS: &str = "/open-apis/calendar/v4/calendars";

#[tokio::test]
async fn list_pages_then_sync_delta_reports_deleted_calendars() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let shared: Vec<String> = (0..60)
        .map(|i| emu.create_calendar(&format!("c{i}")))
        .collect();

    // page_size below the minimum is clamped to 50.
    let p1 = get(&emu, &t, &format!("{CALS}?page_size=5")).await;
    assert_eq!(p1.code(), 0);
    let d = &p1.body["data"];
    assert_eq!(d["calendar_list"].as_array().unwrap().len(), 50);
    assert_eq!(d["has_more"], true);
    assert!(d.get("sync_token").is_none());
    let pt = d["page_token"].as_str().unwrap();
    let p2 = get(&emu, &t, &format!("{CALS}?page_size=5&page_token={pt}")).await;
    let d2 = &p2.body["data"];
    assert_eq!(d2["calendar_list"].as_array().unwrap().len(), 10);
    assert_eq!(d2["has_more"], false);
    assert!(d2.get("page_token").is_none());
    let st = d2["sync_token"].as_str().unwrap().to_owned();

    emu.delete_calendar(&shared[3]);
    let added = emu.create_calendar("new one");
    let delta = get(&emu, &t, &format!("{CALS}?sync_token={st}")).await;
    let list = delta.body["data"]["calendar_list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["calendar_id"], shared[3].as_str());
    assert_eq!(list[0]["is_deleted"], true);
    assert_eq!(list[1]["calendar_id"], added.as_str());
    assert_eq!(list[1]["is_deleted"], false);
    assert_eq!(list[1]["type"], "shared");
    assert!(delta.body["data"]["sync_token"].is_string());

    emu.expire_sync_tokens();
    let gone = get(&emu, &t, &format!("{CALS}?sync_token={st}")).await;
    assert_eq!((gone.status, gone.code()), (400, 190008));
}

#[tokio::test]
async fn user_sees_own_primary_and_shared_only() {
    let emu = start().await;
    let ann = emu.add_user("Ann");
    let bob = emu.add_user("Bob");
    let shared = emu.create_calendar("Team");
    let (ut, _) = emu.issue_user_token(&ann, "calendar:calendar:readonly");
    let list = get(&emu, &ut, CALS).await;
    let ids: Vec<&str> = list.body["data"]["calendar_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["calendar_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&emu.primary_calendar(&ann).as_str()));
    assert!(ids.contains(&shared.as_str()));
    assert!(!ids.contains(&emu.primary_calendar(&bob).as_str()));

    let other = get(&emu, &ut, &format!("{CALS}/{}", emu.primary_calendar(&bob))).await;
    assert_eq!((other.status, other.code()), (403, 191002));

    let primary = post(&emu, &ut, &format!("{CALS}/primary"), json!({})).await;
    let entry = &primary.body["data"]["calendars"][0];
    assert_eq!(entry["user_id"], ann.as_str());
    assert_eq!(entry["calendar"]["type"], "primary");
    assert_eq!(entry["calendar"]["role"], "owner");
    assert_eq!(
        entry["calendar"]["calendar_id"],
        emu.primary_calendar(&ann).as_str()
    );
}

#[tokio::test]
async fn get_calendar_codes() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    let ok = get(&emu, &t, &format!("{CALS}/{cal}")).await;
    assert_eq!(ok.body["data"]["summary"], "Team");
    assert!(ok.headers.contains_key("x-tt-logid"));
    let missing = get(
        &emu,
        &t,
        &format!("{CALS}/feishu.cn_nothere@group.calendar.feishu.cn"),
    )
    .await;
    assert_eq!((missing.status, missing.code()), (404, 191000));
    let invalid = get(&emu, &t, &format!("{CALS}/not-a-calendar-id")).await;
    assert_eq!((invalid.status, invalid.code()), (400, 191001));
    emu.delete_calendar(&cal);
    let deleted = get(&emu, &t, &format!("{CALS}/{cal}")).await;
    assert_eq!(deleted.code(), 191003);

    // Tenant primary = the app's own calendar; primarys by user id.
    let ann = emu.add_user("Ann");
    let p = post(&emu, &t, &format!("{CALS}/primary"), json!({})).await;
    assert_eq!(
        p.body["data"]["calendars"][0]["calendar"]["type"],
        "primary"
    );
    let ps = post(
        &emu,
        &t,
        &format!("{CALS}/primarys"),
        json!({"user_ids": [ann, "ou_unknown"]}),
    )
    .await;
    let cals = ps.body["data"]["calendars"].as_array().unwrap();
    assert_eq!(cals.len(), 1);
    assert_eq!(
        cals[0]["calendar"]["calendar_id"],
        emu.primary_calendar(&ann).as_str()
    );
}
