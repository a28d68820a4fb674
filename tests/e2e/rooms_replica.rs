//! Meeting rooms written to a replica end to end: the binary as the room
//! system of a Feishu room whose calendar is a Google calendar, an EWS room
//! mailbox or a Graph room mailbox (the Feishu emulator and the target's).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bridge_emulators::ews::{EwsConfig, EwsEmulator};
use bridge_emulators::feishu::rooms::NewRoom;
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};
use bridge_emulators::google::{FaultKind, GoogleEmulator, StoredEvent, WriteOp, WriteRecord};
use bridge_emulators::graph::{
    GraphConfig, GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_TENANT,
};
use serde_json::{Value, json};

// The checker the EWS tests load (one copy in the binary).
use crate::ews::schema;

use crate::daemon::Daemon;
use crate::feishu::{bin, temp_dir, timed};
use crate::google::{OWNER, Opts, google, google_sink};
use crate::rooms::{TZ, at, book, last_reasons, rooms_json, wait_booking, wait_for_registry};

const ROOM_MAILBOX: &str = "room-a@example.com";

/// The room's target.
enum Room {
    /// The Google emulator and the room's calendar id.
    Google(GoogleEmulator, String),
    Ews(EwsEmulator),
    Graph(GraphEmulator),
    /// A feed sink serving the room.
    Feed,
}

struct Env {
    feishu: FeishuEmulator,
    target: Room,
    config: PathBuf,
    cal: String,
    room: String,
}

async fn env(name: &str, kind: &str) -> Env {
    let feishu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        webhook_retry_schedule: vec![Duration::from_millis(200); 4],
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = feishu.add_user("Li Lei");
    let cal = feishu.primary_calendar(&user);
    let room = feishu.register_room(NewRoom {
        name: "Room A".into(),
        capacity: Some(8),
        third_party: true,
        ..NewRoom::default()
    });
    let dir = temp_dir(&format!("rooms-replica-{name}"));
    // Each sink's own mailbox or calendar is another one: the room's comes
    // from the mapping.
    let (target, sink, map) = match kind {
        "google" => {
            let google = google().await;
            let gcal = google.create_calendar(OWNER, "Room A");
            let sink = google_sink(
                &google,
                &dir,
                &google.create_calendar(OWNER, "Mirror"),
                &Opts::default(),
            );
            let map = format!("sink = \"google:google\"\ncalendar_id = \"{gcal}\"\n");
            (Room::Google(google, gcal), sink, map)
        }
        "ews" => {
            let ews = EwsEmulator::start(EwsConfig {
                mailboxes: vec!["alice@example.com".into(), ROOM_MAILBOX.into()],
                ..EwsConfig::default()
            })
            .await
            .unwrap();
            let sink = format!(
                "\n[[sinks]]\nkind = \"ews\"\nname = \"ex\"\nurl = \"{}\"\nmailbox = \"alice@example.com\"\n\
                 auth = \"basic\"\nusername = \"svc-bridge\"\npassword = \"correct horse\"\nimpersonation = true\n",
                ews.ews_url()
            );
            let map = format!("sink = \"ews:ex\"\nmailbox = \"{ROOM_MAILBOX}\"\n");
            (Room::Ews(ews), sink, map)
        }
        "feed" => {
            let sink = format!(
                "\n[[sinks]]\nkind = \"feed\"\nname = \"doors\"\ncalendars = [\"{room}\"]\nprivacy = \"busy\"\n"
            );
            (Room::Feed, sink, "sink = \"feed:doors\"\n".to_owned())
        }
        _ => {
            let graph = GraphEmulator::start_with(GraphConfig {
                rate_limit: None,
                ..GraphConfig::default()
            })
            .await
            .unwrap();
            graph.add_mailbox("mirror@example.com", MailboxAccess::Enabled);
            graph.add_mailbox(ROOM_MAILBOX, MailboxAccess::Enabled);
            let secret = dir.join("graph-secret");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&secret, format!("{TEST_CLIENT_SECRET}\n")).unwrap();
            let sink = format!(
                "\n[[sinks]]\nkind = \"graph\"\nname = \"graph\"\ntenant_id = \"{TEST_TENANT}\"\n\
                 client_id = \"{TEST_CLIENT_ID}\"\nclient_secret_file = \"{}\"\n\
                 mailbox = \"mirror@example.com\"\ncalendar = \"Mirror\"\ncreate_calendar = true\n\
                 base_url = \"{}\"\ntoken_url = \"{}\"\n",
                secret.display(),
                graph.base_url(),
                graph.token_url()
            );
            let map = format!("sink = \"graph:graph\"\nmailbox = \"{ROOM_MAILBOX}\"\n");
            (Room::Graph(graph), sink, map)
        }
    };
    let c = feishu.config();
    let text = format!(
        "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
         app_secret = \"{secret}\"\ncalendars = [\"{cal}\"]\ndelivery = \"webhook\"\n\
         encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 20\npoll_seconds = 3600\n{sink}\n\
         [rooms]\ntimezone = \"{TZ}\"\nretry_base_seconds = 1\n\n\
         [[rooms.map]]\nroom_id = \"{room}\"\n{map}",
        store = dir.join("state/bridge.redb").display(),
        base = feishu.base_url(),
        app = c.app_id,
        secret = c.app_secret,
    );
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("feishu-bridge.toml");
    std::fs::write(&config, text).unwrap();
    Env {
        feishu,
        target,
        config,
        cal,
        room,
    }
}

impl Env {
    fn start(&self) -> Daemon {
        let d = Daemon::start(&self.config);
        d.push_from(&self.feishu);
        wait_for_registry(&self.config);
        d
    }

    fn rooms(&self, args: &[&str]) -> Value {
        rooms_json(&self.config, args)
    }

    fn book(&self, summary: &str, start: i64, end: i64) -> String {
        book(&self.feishu, &self.cal, &self.room, summary, start, end)
    }

    async fn wait_status(&self, uid: &str, status: &str) -> Value {
        self.wait_decision(uid, status, 1).await
    }

    /// Waits until the booking has at least `n` decisions and `status`.
    async fn wait_decision(&self, uid: &str, status: &str, n: usize) -> Value {
        wait_booking(&self.config, &format!("{}/{uid}/0", self.room), status, n).await
    }

    /// The live events of the room's calendar, as (summary, start, end).
    fn live(&self) -> Vec<(String, i64, i64)> {
        let mut v: Vec<(String, i64, i64)> = match &self.target {
            Room::Google(g, gcal) => {
                let ts = |t: bridge_emulators::google::EventTime| match t {
                    bridge_emulators::google::EventTime::DateTime(t) => t.timestamp(),
                    bridge_emulators::google::EventTime::Date(_) => 0,
                };
                g.events(gcal)
                    .into_iter()
                    .filter(|e: &StoredEvent| e.status != "cancelled")
                    .map(|e| (e.summary.unwrap_or_default(), ts(e.start), ts(e.end)))
                    .collect()
            }
            Room::Ews(e) => e
                .items(ROOM_MAILBOX)
                .into_iter()
                .map(|i| {
                    (
                        i.fields.subject.unwrap_or_default(),
                        i.fields.start.map_or(0, |t| t.timestamp()),
                        i.fields.end.map_or(0, |t| t.timestamp()),
                    )
                })
                .collect(),
            Room::Graph(g) => g
                .events(ROOM_MAILBOX)
                .unwrap()
                .into_iter()
                .map(|e| {
                    (
                        e["subject"].as_str().unwrap_or_default().to_owned(),
                        graph_time(&e["start"]),
                        graph_time(&e["end"]),
                    )
                })
                .collect(),
            Room::Feed => panic!("read a feed over HTTP"),
        };
        v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        v
    }

    async fn wait_live(&self, want: &[(&str, i64, i64)]) {
        let want: Vec<(String, i64, i64)> = want
            .iter()
            .map(|(s, a, b)| ((*s).to_owned(), *a, *b))
            .collect();
        let start = Instant::now();
        while self.live() != want {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "room calendar {:?}, expected {want:?}",
                self.live()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes into the Google room calendar.
    /// The writes the room's Google calendar received, in order.
    fn writes(&self) -> Vec<WriteRecord> {
        let (g, gcal) = self.google();
        g.writes()
            .into_iter()
            .filter(|w| w.calendar_id == gcal)
            .collect()
    }

    /// The id of the live event of the room's Google calendar at `start`.
    fn google_id_at(&self, summary: &str, start: i64) -> String {
        let (g, gcal) = self.google();
        g.events(gcal)
            .into_iter()
            .find(|e| {
                e.status != "cancelled"
                    && e.summary.as_deref() == Some(summary)
                    && matches!(e.start, bridge_emulators::google::EventTime::DateTime(t) if t.timestamp() == start)
            })
            .map(|e| e.id)
            .unwrap_or_else(|| panic!("no {summary} at {start}"))
    }

    /// The room calendar's items as (start, id and version tag): what an
    /// update or a rewrite would change.
    fn versions(&self) -> Vec<(i64, String)> {
        let mut v: Vec<(i64, String)> = match &self.target {
            Room::Google(g, gcal) => g
                .events(gcal)
                .into_iter()
                .filter(|e| e.status != "cancelled")
                .map(|e| {
                    let t = match e.start {
                        bridge_emulators::google::EventTime::DateTime(t) => t.timestamp(),
                        bridge_emulators::google::EventTime::Date(_) => 0,
                    };
                    (t, format!("{} {}", e.id, e.etag))
                })
                .collect(),
            Room::Ews(e) => e
                .items(ROOM_MAILBOX)
                .into_iter()
                .map(|i| {
                    (
                        i.fields.start.map_or(0, |t| t.timestamp()),
                        format!("{} {}", i.id, i.change_key),
                    )
                })
                .collect(),
            Room::Graph(g) => g
                .events(ROOM_MAILBOX)
                .unwrap()
                .into_iter()
                .map(|e| {
                    (
                        graph_time(&e["start"]),
                        format!("{} {}", e["id"], e["changeKey"]),
                    )
                })
                .collect(),
            Room::Feed => panic!("a feed has no items to version"),
        };
        v.sort();
        v
    }

    fn google(&self) -> (&GoogleEmulator, &str) {
        match &self.target {
            Room::Google(g, c) => (g, c),
            _ => panic!("not a Google room"),
        }
    }
}

/// A Graph `dateTimeTimeZone` in UTC (what the emulator stores) as Unix seconds.
fn graph_time(v: &Value) -> i64 {
    let zone = v["timeZone"].as_str().unwrap_or("UTC");
    assert_eq!(zone, "UTC", "{v}");
    chrono::NaiveDateTime::parse_from_str(
        v["dateTime"].as_str().unwrap_or(""),
        "%Y-%m-%dT%H:%M:%S%.f",
    )
    .map_or(0, |t| t.and_utc().timestamp())
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_go_to_the_rooms_google_calendar_checked_against_its_busy_times() {
    let e = env("google", "google").await;
    let (google, gcal) = e.google();
    // Someone booked the room in Google directly: busy 14:00–15:00.
    google.seed_event(
        gcal,
        json!({"summary": "Board meeting", "start": {"dateTime": rfc3339(at(1, 14, 0))},
               "end": {"dateTime": rfc3339(at(1, 15, 0))}}),
    );
    // A free event there does not hold the room.
    google.seed_event(
        gcal,
        json!({"summary": "Reminder", "transparency": "transparent",
               "start": {"dateTime": rfc3339(at(1, 16, 0))},
               "end": {"dateTime": rfc3339(at(1, 17, 0))}}),
    );
    let daemon = e.start();
    let listed = e.rooms(&["list"]);
    assert!(
        listed["rooms"][0]["target"]
            .as_str()
            .is_some_and(|t| t.contains(gcal)),
        "{listed}"
    );

    // A free slot: accepted and written to the room's calendar, busy-only.
    let first = e.book("Standup", at(1, 10, 0), at(1, 11, 0));
    e.wait_status(&first, "accepted").await;
    e.wait_live(&[
        ("Busy", at(1, 10, 0), at(1, 11, 0)),
        ("Board meeting", at(1, 14, 0), at(1, 15, 0)),
        ("Reminder", at(1, 16, 0), at(1, 17, 0)),
    ])
    .await;

    // Overlapping the room calendar's own busy time: declined, with why.
    let clash = e.book("Clash", at(1, 14, 30), at(1, 15, 30));
    let v = e.wait_status(&clash, "declined").await;
    assert!(last_reasons(&v).contains("room calendar"), "{v}");
    // Over the transparent event: accepted.
    let late = e.book("Late", at(1, 16, 0), at(1, 17, 0));
    e.wait_status(&late, "accepted").await;
    e.wait_live(&[
        ("Busy", at(1, 10, 0), at(1, 11, 0)),
        ("Board meeting", at(1, 14, 0), at(1, 15, 0)),
        ("Busy", at(1, 16, 0), at(1, 17, 0)),
        ("Reminder", at(1, 16, 0), at(1, 17, 0)),
    ])
    .await;

    // A restart reads everything again and writes nothing new; a crash
    // that lost the records would adopt the events (the ids are ours).
    let before = e.writes().len();
    let (first_id, late_id) = (
        e.google_id_at("Busy", at(1, 10, 0)),
        e.google_id_at("Busy", at(1, 16, 0)),
    );
    daemon.kill9();
    let daemon = e.start();
    // Re-deciding our own booking is not a conflict with itself in the
    // room calendar: a move within its own slot is accepted.
    e.feishu.update_event(&e.cal, &format!("{first}_0"), |ev| {
        ev.end_time = Some(timed(at(1, 10, 45), TZ));
    });
    let v = e.wait_decision(&first, "accepted", 2).await;
    assert_eq!(v["decisions"][1]["trigger"], "updated", "{v}");
    e.wait_live(&[
        ("Busy", at(1, 10, 0), at(1, 10, 45)),
        ("Board meeting", at(1, 14, 0), at(1, 15, 0)),
        ("Busy", at(1, 16, 0), at(1, 17, 0)),
        ("Reminder", at(1, 16, 0), at(1, 17, 0)),
    ])
    .await;
    // The moved booking is written once. Nothing else is, except when the
    // kill came after "Late" reached the calendar and before its record was
    // saved: then the restart's create of it lands on its id (409) and
    // adopts it with one update. Never an insert: that would be a second
    // event.
    let after = e.writes().split_off(before);
    let moved = after.iter().filter(|w| w.event_id == first_id).count();
    assert_eq!(moved, 1, "the moved booking is written once: {after:#?}");
    let others: Vec<&WriteRecord> = after.iter().filter(|w| w.event_id != first_id).collect();
    assert!(
        others.len() <= 1
            && others
                .iter()
                .all(|w| w.op == WriteOp::Update && w.event_id == late_id),
        "nothing but the moved booking, or an adopting update of the last write: {after:#?}"
    );

    // A deleted booking is removed from the room's calendar.
    e.feishu.delete_event(&e.cal, &format!("{first}_0"));
    e.wait_status(&first, "freed").await;
    e.wait_live(&[
        ("Board meeting", at(1, 14, 0), at(1, 15, 0)),
        ("Busy", at(1, 16, 0), at(1, 17, 0)),
        ("Reminder", at(1, 16, 0), at(1, 17, 0)),
    ])
    .await;

    // The room calendar cannot be read: the booking is not accepted
    // blindly, it stays pending (no reply) and is decided when it can.
    google.fail_next(
        "/freeBusy",
        4,
        FaultKind::Error {
            status: 400,
            domain: "global".into(),
            reason: "invalid".into(),
            message: "injected".into(),
        },
    );
    let waiting = e.book("Waiting", at(2, 9, 0), at(2, 10, 0));
    let v = e.wait_status(&waiting, "pending").await;
    assert!(last_reasons(&v).contains("cannot be read"), "{v}");
    let v = e.wait_decision(&waiting, "accepted", 2).await;
    assert_eq!(
        v["decisions"].as_array().map(Vec::len),
        Some(2),
        "one pending, one accepted: {v}"
    );
    let start = Instant::now();
    while e.feishu.room_replies().iter().all(|r| r.uid != waiting) {
        assert!(start.elapsed() < Duration::from_secs(30), "never replied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replies: Vec<String> = e
        .feishu
        .room_replies()
        .into_iter()
        .filter(|r| r.uid == waiting)
        .map(|r| r.status)
        .collect();
    assert_eq!(replies, vec!["ACCEPTED_BY_ADMIN".to_owned()]);
    daemon.stop();
}

/// A room mailbox (EWS or Graph): accepted bookings become busy items of the
/// room's own calendar, moved ones are updated, freed ones removed, and a
/// restart writes nothing.
async fn room_mailbox(kind: &str) {
    let e = env(&format!("{kind}-mailbox"), kind).await;
    // Someone booked the room in Outlook: busy 18:00–19:00 (read through
    // getSchedule for Graph, GetUserAvailability for EWS).
    let foreign = match &e.target {
        Room::Graph(g) => {
            let t = |at: i64| {
                json!({"dateTime": chrono::DateTime::from_timestamp(at, 0).unwrap()
                    .format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"})
            };
            g.user_create(
                ROOM_MAILBOX,
                json!({"subject": "Board meeting", "start": t(at(1, 18, 0)), "end": t(at(1, 19, 0))}),
            )
            .unwrap();
            vec![("Board meeting", at(1, 18, 0), at(1, 19, 0))]
        }
        Room::Ews(x) => {
            ews_create(x, "Board meeting", at(1, 18, 0), at(1, 19, 0)).await;
            vec![("Board meeting", at(1, 18, 0), at(1, 19, 0))]
        }
        _ => Vec::new(),
    };
    let with_foreign = |v: &[(&'static str, i64, i64)]| -> Vec<(&'static str, i64, i64)> {
        v.iter().copied().chain(foreign.iter().copied()).collect()
    };
    let daemon = e.start();
    let listed = e.rooms(&["list"]);
    assert!(
        listed["rooms"][0]["target"]
            .as_str()
            .is_some_and(|t| t.contains(ROOM_MAILBOX)),
        "{listed}"
    );
    let first = e.book("Standup", at(1, 10, 0), at(1, 11, 0));
    e.wait_status(&first, "accepted").await;
    let clash = e.book("Clash", at(1, 10, 30), at(1, 11, 30));
    e.wait_status(&clash, "declined").await;
    let second = e.book("Retro", at(1, 15, 0), at(1, 16, 0));
    e.wait_status(&second, "accepted").await;
    e.wait_live(&with_foreign(&[
        ("Busy", at(1, 10, 0), at(1, 11, 0)),
        ("Busy", at(1, 15, 0), at(1, 16, 0)),
    ]))
    .await;
    if !foreign.is_empty() {
        let clash = e.book("Late clash", at(1, 18, 30), at(1, 19, 30));
        let v = e.wait_status(&clash, "declined").await;
        assert!(last_reasons(&v).contains("room calendar"), "{v}");
    }

    let before = e.versions();
    daemon.kill9();
    let daemon = e.start();
    e.feishu.update_event(&e.cal, &format!("{second}_0"), |ev| {
        ev.start_time = Some(timed(at(1, 16, 0), TZ));
        ev.end_time = Some(timed(at(1, 17, 0), TZ));
    });
    e.wait_decision(&second, "accepted", 2).await;
    e.wait_live(&with_foreign(&[
        ("Busy", at(1, 10, 0), at(1, 11, 0)),
        ("Busy", at(1, 16, 0), at(1, 17, 0)),
    ]))
    .await;
    let after = e.versions();
    assert_eq!(
        after[0], before[0],
        "the untouched booking is not written again after a restart"
    );
    assert_ne!(after[1], before[1], "the moved booking is written");

    e.feishu.delete_event(&e.cal, &format!("{first}_0"));
    e.wait_status(&first, "freed").await;
    e.wait_live(&with_foreign(&[("Busy", at(1, 16, 0), at(1, 17, 0))]))
        .await;
    daemon.stop();
    if let Room::Ews(x) = &e.target {
        let asked: Vec<String> = x
            .request_bodies()
            .into_iter()
            .filter(|b| b.contains("GetUserAvailabilityRequest"))
            .collect();
        assert!(
            !asked.is_empty(),
            "the room mailbox's availability was never asked"
        );
        schema::assert_valid(&asked);
    }
}

/// An item the room's owner creates in Outlook (a raw `CreateItem`).
async fn ews_create(x: &EwsEmulator, subject: &str, start: i64, end: i64) {
    let t = |at: i64| {
        chrono::DateTime::from_timestamp(at, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\" xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\">\
         <soap:Header><t:RequestServerVersion Version=\"Exchange2010\"/><t:ExchangeImpersonation><t:ConnectingSID>\
         <t:PrimarySmtpAddress>{ROOM_MAILBOX}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation></soap:Header>\
         <soap:Body><m:CreateItem SendMeetingInvitations=\"SendToNone\"><m:SavedItemFolderId><t:DistinguishedFolderId Id=\"calendar\"/></m:SavedItemFolderId>\
         <m:Items><t:CalendarItem><t:Subject>{subject}</t:Subject><t:Start>{}</t:Start><t:End>{}</t:End></t:CalendarItem></m:Items></m:CreateItem></soap:Body></soap:Envelope>",
        t(start),
        t(end)
    );
    let r = reqwest::Client::new()
        .post(x.ews_url())
        .basic_auth("svc-bridge", Some("correct horse"))
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("NoError"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_go_to_an_ews_room_mailbox() {
    room_mailbox("ews").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_go_to_a_graph_room_mailbox() {
    room_mailbox("graph").await;
}

/// A room mapped to a feed sink: served busy-only at its own secret address,
/// listed by `feeds list` (calendar = the room id) and named by `rooms list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_feed_is_served_busy_only_at_its_own_address() {
    let e = env("feed", "feed").await;
    let daemon = e.start();
    let listed = e.rooms(&["list"]);
    assert!(
        listed["rooms"][0]["target"]
            .as_str()
            .is_some_and(|t| t.contains("feed \"doors\"")),
        "{listed}"
    );
    let first = e.book("Secret planning", at(1, 10, 0), at(1, 11, 0));
    e.wait_status(&first, "accepted").await;
    let start = Instant::now();
    let url = loop {
        let out = bin()
            .args(["feeds", "list", "--json", "--config"])
            .arg(&e.config)
            .output()
            .unwrap();
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(u) = list.as_array().into_iter().flatten().find_map(|f| {
            (f["name"] == "doors" && f["calendar_id"] == e.room.as_str())
                .then(|| f["url"].as_str().map(str::to_owned))
                .flatten()
        }) {
            break u;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no room feed listed: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let start = Instant::now();
    loop {
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if body.contains("BEGIN:VEVENT") {
            assert!(body.contains("SUMMARY:Busy"), "{body}");
            assert!(!body.contains("Secret planning"), "busy-only: {body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the booking never showed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Freed: gone from the feed.
    e.feishu.delete_event(&e.cal, &format!("{first}_0"));
    e.wait_status(&first, "freed").await;
    let start = Instant::now();
    loop {
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if !body.contains("BEGIN:VEVENT") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the freed booking stayed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop();
}
