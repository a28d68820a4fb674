//! The EWS emulator over loopback HTTP: schema order, auth and
//! impersonation, items with ChangeKeys, recurrence in CalendarView,
//! extended properties, restrictions, SyncFolderItems and faults.

use bridge_emulators::ews::{EwsConfig, EwsEmulator, FaultKind, UserEdit};
use chrono::{DateTime, Utc};

const NS: &str = r#"xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types""#;
const TAG: &str = r#"<t:ExtendedFieldURI DistinguishedPropertySetId="PublicStrings" PropertyName="FeishuBridgeKey" PropertyType="String"/>"#;

fn envelope(body: &str, impersonate: Option<&str>) -> String {
    let imp = impersonate
        .map(|m| format!("<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{m}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope {NS}><s:Header><t:RequestServerVersion Version="Exchange2016"/>{imp}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

struct Client {
    http: reqwest::Client,
    url: String,
    auth: Auth,
}

enum Auth {
    Basic(&'static str, &'static str),
    Bearer(String),
}

impl Client {
    async fn call(&self, body: &str, imp: Option<&str>) -> (u16, String) {
        let req = self
            .http
            .post(&self.url)
            .header("content-type", "text/xml; charset=utf-8");
        let req = match &self.auth {
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        };
        let resp = req.body(envelope(body, imp)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

fn attr<'a>(xml: &'a str, element: &str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&format!("<{element} ")) {
        rest = &rest[i..];
        let end = rest.find('>').unwrap();
        let tag = &rest[..end];
        if let Some(a) = tag.find(&format!(" {name}=\"")) {
            let v = &tag[a + name.len() + 3..];
            out.push(&v[..v.find('"').unwrap()]);
        }
        rest = &rest[end..];
    }
    out
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn basic() -> (EwsEmulator, Client) {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let c = Client {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        url: emu.ews_url(),
        auth: Auth::Basic("svc-bridge", "correct horse"),
    };
    (emu, c)
}

const WEEKLY: &str = r#"<m:CreateItem SendMeetingInvitations="SendToNone"><m:SavedItemFolderId><t:DistinguishedFolderId Id="calendar"/></m:SavedItemFolderId><m:Items><t:CalendarItem><t:Subject>Standup</t:Subject><t:ExtendedProperty><t:ExtendedFieldURI DistinguishedPropertySetId="PublicStrings" PropertyName="FeishuBridgeKey" PropertyType="String"/><t:Value>uid1_0</t:Value></t:ExtendedProperty><t:UID>uid1</t:UID><t:Start>2026-03-02T14:00:00Z</t:Start><t:End>2026-03-02T14:30:00Z</t:End><t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus><t:Recurrence><t:WeeklyRecurrence><t:Interval>1</t:Interval><t:DaysOfWeek>Monday</t:DaysOfWeek></t:WeeklyRecurrence><t:NumberedRecurrence><t:StartDate>2026-03-02</t:StartDate><t:NumberOfOccurrences>4</t:NumberOfOccurrences></t:NumberedRecurrence></t:Recurrence><t:StartTimeZone Id="Eastern Standard Time"/><t:EndTimeZone Id="Eastern Standard Time"/></t:CalendarItem></m:Items></m:CreateItem>"#;

#[tokio::test]
async fn out_of_order_elements_are_a_schema_fault() {
    let (emu, c) = basic().await;
    let swapped = WEEKLY.replace(
        "<t:UID>uid1</t:UID><t:Start>2026-03-02T14:00:00Z</t:Start>",
        "<t:Start>2026-03-02T14:00:00Z</t:Start><t:UID>uid1</t:UID>",
    );
    let (status, body) = c.call(&swapped, None).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("ErrorSchemaValidation") && body.contains("LineNumber"),
        "{body}"
    );
    let (status, body) = c.call(&WEEKLY.replace("t:Subject", "t:Title"), None).await;
    assert_eq!(status, 500, "{body}");
    assert!(emu.items("svc-bridge@example.com").is_empty());
    let (status, body) = c.call(WEEKLY, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ServerVersionInfo") && body.contains("NoError"));
}

#[tokio::test]
async fn basic_and_app_auth_with_impersonation() {
    let (emu, mut c) = basic().await;
    c.auth = Auth::Basic("svc-bridge", "wrong");
    assert_eq!(c.call(WEEKLY, None).await.0, 401);
    // An app token from the client-credentials grant must impersonate.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let tok: serde_json::Value = http
        .post(emu.token_url("contoso"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app-client"),
            ("client_secret", "app-secret"),
            ("scope", "https://outlook.office365.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    c.auth = Auth::Bearer(tok["access_token"].as_str().unwrap().to_owned());
    let (s, b) = c.call(WEEKLY, None).await;
    assert!(s == 500 && b.contains("ErrorImpersonationFailed"), "{b}");
    let (s, b) = c.call(WEEKLY, Some("nobody@example.com")).await;
    assert!(s == 500 && b.contains("ErrorNonExistentMailbox"), "{b}");
    let (s, b) = c.call(WEEKLY, Some("alice@example.com")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(emu.items("alice@example.com").len(), 1);
    emu.update_config(|cfg| cfg.apps[0].full_access_as_app = false);
    let (s, b) = c.call(WEEKLY, Some("alice@example.com")).await;
    assert!(s == 500 && b.contains("ErrorImpersonateUserDenied"), "{b}");
    emu.expire_tokens();
    assert_eq!(c.call(WEEKLY, Some("alice@example.com")).await.0, 401);
}

#[tokio::test]
async fn occurrences_exceptions_and_change_keys() {
    let (emu, c) = basic().await;
    let (_, b) = c.call(WEEKLY, None).await;
    let master = attr(&b, "t:ItemId", "Id")[0].to_owned();
    let ck = attr(&b, "t:ItemId", "ChangeKey")[0].to_owned();
    // Move the second occurrence, delete the third.
    let upd = format!(
        r#"<m:UpdateItem ConflictResolution="NeverOverwrite" SendMeetingInvitationsOrCancellations="SendToNone"><m:ItemChanges><t:ItemChange><t:OccurrenceItemId RecurringMasterId="{master}" InstanceIndex="2"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="calendar:Start"/><t:CalendarItem><t:Start>2026-03-09T15:00:00Z</t:Start></t:CalendarItem></t:SetItemField><t:SetItemField><t:FieldURI FieldURI="calendar:End"/><t:CalendarItem><t:End>2026-03-09T15:30:00Z</t:End></t:CalendarItem></t:SetItemField></t:Updates></t:ItemChange><t:ItemChange><t:ItemId Id="{master}" ChangeKey="{ck}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="item:Subject"/><t:CalendarItem><t:Subject>late</t:Subject></t:CalendarItem></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#
    );
    let (s, b) = c.call(&upd, None).await;
    assert_eq!(s, 200);
    // The occurrence write changed the master's ChangeKey: the second change conflicts.
    assert!(
        b.contains("NoError") && b.contains("ErrorIrresolvableConflict"),
        "{b}"
    );
    let del = format!(
        r#"<m:DeleteItem DeleteType="HardDelete" SendMeetingCancellations="SendToNone"><m:ItemIds><t:OccurrenceItemId RecurringMasterId="{master}" InstanceIndex="3"/><t:ItemId Id="AAMkbm9wZQ=="/></m:ItemIds></m:DeleteItem>"#
    );
    let (_, b) = c.call(&del, None).await;
    assert!(
        b.find("NoError") < b.find("ErrorItemNotFound"),
        "per item, in order: {b}"
    );
    let view = emu.calendar_view(
        "svc-bridge@example.com",
        at("2026-03-01T00:00:00Z"),
        at("2026-04-01T00:00:00Z"),
    );
    let got: Vec<(&str, String)> = view
        .iter()
        .map(|i| (i.kind, i.fields.start.unwrap().to_rfc3339()))
        .collect();
    assert_eq!(
        got,
        [
            ("Occurrence", "2026-03-02T14:00:00+00:00".to_owned()),
            ("Exception", "2026-03-09T15:00:00+00:00".to_owned()),
            ("Occurrence", "2026-03-23T13:00:00+00:00".to_owned()),
        ]
    );
    // The same through FindItem + CalendarView; the master is left out.
    let find = r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape><m:CalendarView StartDate="2026-03-01T00:00:00Z" EndDate="2026-04-01T00:00:00Z"/><m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds></m:FindItem>"#;
    let (_, b) = c.call(find, None).await;
    assert_eq!(b.matches("<t:CalendarItem>").count(), 3, "{b}");
    assert!(!b.contains("RecurringMaster") && !b.contains("FeishuBridgeKey"));
    // A user edit changes the ChangeKey.
    let before = emu.items("svc-bridge@example.com")[0].change_key.clone();
    assert!(emu.user_edit(
        &master,
        UserEdit {
            subject: Some("mine".into()),
            ..UserEdit::default()
        }
    ));
    assert_ne!(emu.items("svc-bridge@example.com")[0].change_key, before);
}

#[tokio::test]
async fn extended_properties_restrictions_and_sync() {
    let (emu, c) = basic().await;
    for _ in 0..3 {
        c.call(WEEKLY, None).await;
    }
    let find = |restriction: &str| {
        format!(
            r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>{TAG}</t:AdditionalProperties></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="2" Offset="0" BasePoint="Beginning"/>{restriction}<m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds></m:FindItem>"#
        )
    };
    let (_, b) = c
        .call(&find(&format!(r#"<m:Restriction><t:IsEqualTo>{TAG}<t:FieldURIOrConstant><t:Constant Value="uid1_0"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>"#)), None)
        .await;
    assert_eq!(
        b.matches("<t:Value>uid1_0</t:Value>").count(),
        2,
        "page of 2: {b}"
    );
    assert!(
        b.contains("TotalItemsInView=\"3\"") && b.contains("IncludesLastItemInRange=\"false\"")
    );
    let (_, b) = c
        .call(&find(&format!(r#"<m:Restriction><t:IsEqualTo>{TAG}<t:FieldURIOrConstant><t:Constant Value="other"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>"#)), None)
        .await;
    assert!(b.contains("TotalItemsInView=\"0\""), "{b}");
    // SyncFolderItems pages through the three creates, then a delete.
    let sync = |state: &str| {
        format!(
            r#"<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:SyncFolderId><t:DistinguishedFolderId Id="calendar"/></m:SyncFolderId>{state}<m:MaxChangesReturned>2</m:MaxChangesReturned></m:SyncFolderItems>"#
        )
    };
    let (_, b) = c.call(&sync(""), None).await;
    assert_eq!(b.matches("<t:Create>").count(), 2);
    let state = b
        .split("<m:SyncState>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let (_, b) = c
        .call(&sync(&format!("<m:SyncState>{state}</m:SyncState>")), None)
        .await;
    assert!(
        b.matches("<t:Create>").count() == 1 && b.contains("<m:IncludesLastItemInRange>true"),
        "{b}"
    );
    let state = b
        .split("<m:SyncState>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let id = emu.items("svc-bridge@example.com")[0].id.clone();
    assert!(emu.user_delete(&id));
    let (_, b) = c
        .call(&sync(&format!("<m:SyncState>{state}</m:SyncState>")), None)
        .await;
    assert!(
        b.contains(&format!("<t:Delete><t:ItemId Id=\"{id}\"/>")),
        "{b}"
    );
    let (_, b) = c
        .call(&sync("<m:SyncState>Zm9yZ2Vk</m:SyncState>"), None)
        .await;
    assert!(b.contains("ErrorInvalidSyncStateData"));
}

#[tokio::test]
async fn faults_and_concurrency_cap() {
    let (emu, c) = basic().await;
    emu.fail_next("/EWS/", 1, FaultKind::ServerBusy { back_off_ms: 1234 });
    let (s, b) = c.call(WEEKLY, None).await;
    assert!(
        s == 500
            && b.contains("ErrorServerBusy")
            && b.contains(r#"Name="BackOffMilliseconds">1234<"#),
        "{b}"
    );
    emu.fail_next("/EWS/", 1, FaultKind::Unavailable);
    assert_eq!(c.call(WEEKLY, None).await.0, 503);
    emu.update_config(|cfg| cfg.max_concurrency = 0);
    let (s, b) = c.call(WEEKLY, None).await;
    assert!(s == 500 && b.contains("ErrorServerBusy"));
    assert!(emu.items("svc-bridge@example.com").is_empty());
    let calls = emu.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls[2]
            .body
            .as_deref()
            .is_some_and(|b| b.contains("CreateItem"))
    );
}
