//! Meeting rooms end to end: the binary as a third-party room system
//! against the Feishu emulator's rooms (webhook and long connection).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bridge_core::feishu::{Attendee, AttendeeType, Event, RsvpStatus};
use bridge_emulators::feishu::rooms::{NewRoom, RoomReply};
use bridge_emulators::feishu::{Faults, FeishuConfig, FeishuEmulator, WsClientConfig};
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::feishu::{bin, temp_dir, timed};

pub(crate) const TZ: &str = "Asia/Shanghai";

/// Midnight (Asia/Shanghai) `days` days from today.
pub(crate) fn midnight(days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let local_days = (now + 8 * 3600).div_euclid(86_400);
    (local_days + days) * 86_400 - 8 * 3600
}

/// `h:m` local on day `day` (1 = tomorrow).
pub(crate) fn at(day: i64, h: i64, m: i64) -> i64 {
    midnight(day) + h * 3600 + m * 60
}

pub(crate) fn booking_event(summary: &str, start: i64, end: i64, room: &str) -> Event {
    Event {
        summary: Some(summary.into()),
        start_time: Some(timed(start, TZ)),
        end_time: Some(timed(end, TZ)),
        attendees: Some(vec![Attendee {
            kind: Some(AttendeeType::Resource),
            room_id: Some(room.to_owned()),
            ..Attendee::default()
        }]),
        ..Event::default()
    }
}

/// `rooms <args> --json` with this config.
pub(crate) fn rooms_json(config: &Path, args: &[&str]) -> Value {
    let out = bin()
        .arg("rooms")
        .args(args)
        .args(["--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rooms {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Waits until the daemon of this config has read the room registry.
pub(crate) fn wait_for_registry(config: &Path) {
    let start = Instant::now();
    while rooms_json(config, &["list"])["rooms"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the room registry was never read"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Books `room` in the calendar `cal`; returns the booking's uid.
pub(crate) fn book(
    emu: &FeishuEmulator,
    cal: &str,
    room: &str,
    summary: &str,
    start: i64,
    end: i64,
) -> String {
    let id = emu.create_event(cal, booking_event(summary, start, end, room));
    id.rsplit_once('_').unwrap().0.to_owned()
}

/// Waits (30 s at most) until `rooms explain <id>` shows the booking with
/// `status` and at least `decisions` decisions.
pub(crate) async fn wait_booking(config: &Path, id: &str, status: &str, decisions: usize) -> Value {
    let start = Instant::now();
    loop {
        let out = bin()
            .args(["rooms", "explain", id, "--json", "--config"])
            .arg(config)
            .output()
            .unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["status"] == status
                && (decisions == 0
                    || v["decisions"]
                        .as_array()
                        .is_some_and(|d| d.len() >= decisions))
            {
                return v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "booking {id} never became {status}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Env {
    emu: FeishuEmulator,
    dir: PathBuf,
    config: PathBuf,
    ics: PathBuf,
    user: String,
    cal: String,
    room: String,
    long_connection: bool,
}

async fn env(name: &str, long_connection: bool, rooms_toml: &str, faults: Option<Faults>) -> Env {
    let emu = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        long_connection,
        webhook_retry_schedule: vec![Duration::from_millis(200); 4],
        ws_ack_timeout: Duration::from_millis(500),
        ws_client_config: WsClientConfig {
            reconnect_count: -1,
            reconnect_interval: 1,
            reconnect_nonce: 1,
            ping_interval: 5,
        },
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    if let Some(f) = faults {
        emu.set_faults(f);
    }
    let user = emu.add_user("Li Lei");
    let cal = emu.primary_calendar(&user);
    let level = emu.add_room_level("Building 1", None);
    let room = emu.register_room(NewRoom {
        name: "Room A".into(),
        capacity: Some(8),
        custom_room_id: Some("A-101".into()),
        room_level_id: Some(level.clone()),
        third_party: true,
        ..NewRoom::default()
    });
    let rooms_toml = rooms_toml.replace("{LEVEL}", &level);
    let dir = temp_dir(&format!("rooms-{name}"));
    let ics = dir.join("ics");
    let c = emu.config();
    let text = format!(
        "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
         app_secret = \"{secret}\"\ncalendars = [\"{cal}\"]\ndelivery = \"{delivery}\"\n\
         user_token_file = \"{tokens}\"\nencrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 20\npoll_seconds = 1\n\n\
         [[sinks]]\nkind = \"ics\"\ndir = \"{ics}\"\n\n\
         [rooms]\ntimezone = \"{TZ}\"\nretry_base_seconds = 1\n{rooms_toml}\n\n\
         [[rooms.map]]\ncustom_room_id = \"A-101\"\nsink = \"ics\"\n",
        store = dir.join("state/bridge.redb").display(),
        base = emu.base_url(),
        app = c.app_id,
        secret = c.app_secret,
        delivery = if long_connection {
            "long_connection"
        } else {
            "webhook"
        },
        tokens = dir.join("state/feishu-user.json").display(),
        ics = ics.display(),
    );
    let config = dir.join("feishu-bridge.toml");
    std::fs::write(&config, text).unwrap();
    Env {
        emu,
        dir,
        config,
        ics,
        user,
        cal,
        room,
        long_connection,
    }
}

impl Env {
    fn start(&self) -> Daemon {
        let d = Daemon::start(&self.config);
        if !self.long_connection {
            d.push_from(&self.emu);
        }
        d
    }

    /// Starts the daemon and waits until it has read the room registry.
    fn start_ready(&self) -> Daemon {
        let d = self.start();
        wait_for_registry(&self.config);
        d
    }

    /// `rooms <args> --json`.
    fn rooms(&self, args: &[&str]) -> Value {
        rooms_json(&self.config, args)
    }

    fn book(&self, summary: &str, start: i64, end: i64) -> String {
        book(&self.emu, &self.cal, &self.room, summary, start, end)
    }

    fn id(&self, uid: &str, ot: i64) -> String {
        format!("{}/{uid}/{ot}", self.room)
    }

    fn replies(&self, uid: &str) -> Vec<RoomReply> {
        self.emu
            .room_replies()
            .into_iter()
            .filter(|r| r.uid == uid)
            .collect()
    }

    /// Waits for the booking's status (through `rooms explain`).
    async fn wait_status(&self, uid: &str, ot: i64, status: &str) -> Value {
        wait_booking(&self.config, &self.id(uid, ot), status, 0).await
    }

    async fn wait_replies(&self, uid: &str, n: usize) -> Vec<RoomReply> {
        let start = Instant::now();
        loop {
            let r = self.replies(uid);
            if r.len() >= n {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{uid}: {} replies, expected {n}",
                r.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn room_rsvp(&self, uid: &str) -> Option<RsvpStatus> {
        self.emu
            .events(&self.cal)
            .into_iter()
            .find(|e| e.event_id.as_deref() == Some(&format!("{uid}_0")))?
            .attendees?
            .into_iter()
            .find(|a| a.room_id.as_deref() == Some(self.room.as_str()))?
            .rsvp_status
    }

    /// Waits until `rooms list` shows the room's rule value at `pointer`.
    async fn wait_rule(&self, pointer: &str, want: Value) {
        let start = Instant::now();
        loop {
            let v = self.rooms(&["list"]);
            let got = v["rooms"][0]["rules"].pointer(pointer).cloned();
            if got.as_ref() == Some(&want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "rule {pointer} never became {want}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn ics_text(&self) -> String {
        std::fs::read_dir(&self.ics)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("omm_"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

pub(crate) fn last_reasons(v: &Value) -> String {
    v["decisions"]
        .as_array()
        .and_then(|d| d.last())
        .map(|d| d["reasons"].to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_are_accepted_declined_moved_and_freed() {
    let e = env("basic", false, "", None).await;
    let daemon = e.start_ready();
    let listed = e.rooms(&["list"]);
    assert_eq!(
        listed["rooms"][0]["room"]["custom_room_id"], "A-101",
        "{listed}"
    );

    // A free slot: accepted, written to the target, the room attendee accepts.
    let first = e.book("Standup", at(1, 10, 0), at(1, 11, 0));
    let v = e.wait_status(&first, 0, "accepted").await;
    let r = e.wait_replies(&first, 1).await;
    assert_eq!(r[0].status, "ACCEPTED_BY_ADMIN");
    assert_eq!(r[0].original_time, 0);
    assert_eq!(v["summary"], "Standup");
    let start = Instant::now();
    while e.room_rsvp(&first) != Some(RsvpStatus::Accept) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "room attendee never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ics = e.ics_text();
    assert!(
        ics.contains("SUMMARY:Busy") && !ics.contains("Standup"),
        "busy-only room file: {ics}"
    );

    // An overlapping second booking is declined, with the reason kept.
    let second = e.book("Overlap", at(1, 10, 30), at(1, 11, 30));
    let v = e.wait_status(&second, 0, "declined").await;
    assert!(last_reasons(&v).contains("conflict"), "{v}");
    assert_eq!(
        e.wait_replies(&second, 1).await[0].status,
        "DECLINED_BY_ADMIN"
    );

    // A deleted booking frees its slot for the next one.
    e.emu.delete_event(&e.cal, &format!("{first}_0"));
    e.wait_status(&first, 0, "freed").await;
    let third = e.book("Retro", at(1, 10, 0), at(1, 11, 0));
    e.wait_status(&third, 0, "accepted").await;

    // A moved booking is decided again.
    e.emu.update_event(&e.cal, &format!("{third}_0"), |ev| {
        ev.start_time = Some(timed(at(1, 14, 0), TZ));
        ev.end_time = Some(timed(at(1, 15, 0), TZ));
    });
    let start = Instant::now();
    loop {
        let v = e.rooms(&["explain", &e.id(&third, 0)]);
        let d = v["decisions"].as_array().unwrap();
        if d.len() == 2 {
            assert_eq!(d[1]["trigger"], "updated");
            assert_eq!(d[1]["status"], "accepted");
            assert_eq!(d[1]["instances"][0]["start"], at(1, 14, 0));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never decided again: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replies = e.wait_replies(&third, 2).await;
    assert_eq!(replies.len(), 2, "one reply per decision: {replies:?}");

    // `explain <booking>` is `rooms explain`.
    let out = bin()
        .args(["explain", &e.id(&second, 0), "--json", "--config"])
        .arg(&e.config)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "declined", "{v}");
    let bookings = e.rooms(&["bookings"]);
    assert_eq!(
        bookings["bookings"].as_array().unwrap().len(),
        3,
        "{bookings}"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", daemon.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "feishu_bridge_room_bookings{{room=\"{}\",status=\"declined\"}} 1",
            e.room
        )),
        "{metrics}"
    );
    daemon.stop();
    e.emu.clone().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_rules_decline_with_their_reasons() {
    let e = env("rules", true, "", None).await;
    let other = e.emu.add_user("Han Meimei");
    let other_cal = e.emu.primary_calendar(&other);
    let engineer = e.emu.add_user("Wei Engineer");
    let engineer_cal = e.emu.primary_calendar(&engineer);
    e.emu.set_user_departments(&engineer, &["od-eng"]);
    e.emu.set_user_departments(&other, &["od-sales"]);
    let daemon = e.start_ready();

    // Before the restrictions: a three-hour booking is fine.
    let long = e.book("Workshop", at(1, 9, 0), at(1, 12, 0));
    e.wait_status(&long, 0, "accepted").await;

    // A PATCH in Feishu changes the next decision.
    e.emu
        .patch_reserve_config(
            &e.room,
            json!({"scope_type": 2, "time_config": {"time_switch": 1, "days_in_advance": 30,
                "start_time": "28800", "end_time": "72000", "max_duration": 2},
                "reserve_scope_config": {"allow_all_users": 0, "allow_users": [{"user_id": e.user}],
                    "allow_depts": [{"department_id": "od-eng"}]}}),
        )
        .unwrap();
    e.wait_rule("/time/max_duration_hours", json!(2)).await;
    e.wait_rule("/scope/allow_all", json!(false)).await;

    let cases = [
        ("Too long", at(2, 13, 0), at(2, 16, 0), "max_duration 2 h"),
        (
            "Too early",
            at(2, 7, 0),
            at(2, 8, 0),
            "daily window 08:00–20:00",
        ),
        ("Too far", at(45, 10, 0), at(45, 11, 0), "horizon"),
    ];
    for (summary, s, end, why) in cases {
        let uid = e.book(summary, s, end);
        let v = e.wait_status(&uid, 0, "declined").await;
        assert!(last_reasons(&v).contains(why), "{summary}: {v}");
        assert_eq!(e.wait_replies(&uid, 1).await[0].status, "DECLINED_BY_ADMIN");
    }
    let id = e.emu.create_event(
        &other_cal,
        booking_event("Not allowed", at(3, 10, 0), at(3, 11, 0), &e.room),
    );
    let uid = id.rsplit_once('_').unwrap().0.to_owned();
    let v = e.wait_status(&uid, 0, "declined").await;
    assert!(last_reasons(&v).contains("may not book"), "{v}");
    // A member of an allowed department may book (contact API).
    let id = e.emu.create_event(
        &engineer_cal,
        booking_event("Allowed by department", at(3, 14, 0), at(3, 15, 0), &e.room),
    );
    let dept_uid = id.rsplit_once('_').unwrap().0.to_owned();
    let v = e.wait_status(&dept_uid, 0, "accepted").await;
    assert!(v.to_string().contains("allowed department"), "{v}");
    let explain = bin()
        .args(["rooms", "explain", &e.id(&uid, 0), "--config"])
        .arg(&e.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("because: the organizer"), "{text}");
    daemon.stop();
    e.emu.clone().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_rooms_wait_for_rooms_approve() {
    let e = env("approval", false, "", None).await;
    let boss = e.emu.add_user("Boss");
    e.emu
        .patch_reserve_config(
            &e.room,
            json!({"scope_type": 2, "approval_config": {"approval_switch": 1, "approval_condition": 0, "approvers": [{"user_id": boss}]}}),
        )
        .unwrap();
    let daemon = e.start_ready();
    e.wait_rule("/approval/enabled", json!(true)).await;
    let uid = e.book("Board meeting", at(1, 10, 0), at(1, 11, 0));
    let v = e.wait_status(&uid, 0, "pending").await;
    assert!(last_reasons(&v).contains("needs approval"), "{v}");
    let pending = e.rooms(&["bookings", "--pending"]);
    assert_eq!(
        pending["bookings"].as_array().unwrap().len(),
        1,
        "{pending}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(e.replies(&uid).is_empty(), "no reply while pending");
    let approved = e.rooms(&["approve", &e.id(&uid, 0)]);
    assert_eq!(approved["status"], "accepted", "{approved}");
    assert_eq!(e.wait_replies(&uid, 1).await[0].status, "ACCEPTED_BY_ADMIN");
    // Approving again is refused: it is no longer pending.
    let again = bin()
        .args(["rooms", "approve", &e.id(&uid, 0), "--config"])
        .arg(&e.config)
        .output()
        .unwrap();
    assert!(!again.status.success());
    daemon.stop();
    e.emu.clone().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_follow_max_conflict_instances() {
    let e = env("series", false, "max_conflict_instances = 1", None).await;
    let daemon = e.start_ready();
    let single = e.book("Interview", at(2, 10, 0), at(2, 11, 0));
    e.wait_status(&single, 0, "accepted").await;
    let other = e.book("Interview 2", at(3, 10, 0), at(3, 11, 0));
    e.wait_status(&other, 0, "accepted").await;

    // One conflicting instance: accepted, that instance declined.
    let mut ev = booking_event("Daily sync", at(1, 10, 30), at(1, 11, 0), &e.room);
    ev.recurrence = Some("FREQ=DAILY;COUNT=2".into());
    let one = e
        .emu
        .create_event(&e.cal, ev)
        .rsplit_once('_')
        .unwrap()
        .0
        .to_owned();
    let v = e.wait_status(&one, 0, "accepted").await;
    assert_eq!(v["series"], true, "{v}");
    assert_eq!(v["declined_instances"], json!([at(2, 10, 30)]), "{v}");
    let r = e.wait_replies(&one, 2).await;
    assert!(
        r.iter()
            .any(|r| r.original_time == 0 && r.status == "ACCEPTED_BY_ADMIN"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|r| r.original_time == at(2, 10, 30) && r.status == "DECLINED_BY_ADMIN"),
        "{r:?}"
    );

    // Two conflicting instances: more than max_conflict_instances, declined.
    let mut ev = booking_event("Daily review", at(2, 10, 0), at(2, 10, 30), &e.room);
    ev.recurrence = Some("FREQ=DAILY;COUNT=3".into());
    let two = e
        .emu
        .create_event(&e.cal, ev)
        .rsplit_once('_')
        .unwrap()
        .0
        .to_owned();
    let v = e.wait_status(&two, 0, "declined").await;
    assert!(
        last_reasons(&v).contains("more than max_conflict_instances 1"),
        "{v}"
    );
    daemon.stop();
    e.emu.clone().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_false_sends_nothing() {
    let e = env("observe", false, "reply = false", None).await;
    let daemon = e.start_ready();
    let uid = e.book("Observed", at(1, 10, 0), at(1, 11, 0));
    let v = e.wait_status(&uid, 0, "accepted").await;
    assert_eq!(
        v["decisions"][0]["replies"][0]["state"], "not sent (reply = false)",
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(e.emu.room_replies().is_empty());
    assert!(
        !e.emu
            .calls()
            .iter()
            .any(|c| c.path.contains("instance/reply")),
        "no reply call at all"
    );
    daemon.stop();
    e.emu.clone().shutdown().await;
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_exactly_once_across_duplicates_and_kill_9() {
    let faults = Faults {
        duplicate_rate: 0.5,
        seed: Some(15),
        ..Faults::default()
    };
    let e = env("kill9", true, "", Some(faults)).await;
    let mut seed: u64 = 0x15_15;
    let mut uids = Vec::new();
    for trial in 0..20 {
        let d = e.start();
        // Half of the bookings collide with the previous one.
        let slot = trial / 2;
        let uid = e.book(
            &format!("Trial {trial}"),
            at(1 + slot, 9, 0),
            at(1 + slot, 9, 30),
        );
        uids.push(uid);
        let delay = lcg(&mut seed) % 600;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        d.kill9();
    }
    let d = e.start();
    // Every booking decided, every reply acknowledged.
    let start = Instant::now();
    loop {
        let v = e.rooms(&["bookings"]);
        let list = v["bookings"].as_array().cloned().unwrap_or_default();
        let waiting = list
            .iter()
            .flat_map(|b| b["decisions"].as_array().cloned().unwrap_or_default())
            .flat_map(|d| d["replies"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["state"] != "sent")
            .count();
        if list.len() == uids.len() && waiting == 0 {
            for b in &list {
                let uid = b["uid"].as_str().unwrap();
                let planned = b["decisions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["replies"].as_array().unwrap().len())
                    .sum::<usize>();
                let got = e.replies(uid);
                assert_eq!(
                    got.len(),
                    planned,
                    "exactly one reply per decision for {uid}: {got:?} vs {b}"
                );
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not settled: {} of {} bookings, {waiting} replies waiting",
            list.len(),
            uids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total: usize = uids.iter().map(|u| e.replies(u).len()).sum();
    assert_eq!(total, uids.len(), "one decision (and reply) per booking");
    let accepted = uids
        .iter()
        .filter(|u| {
            e.replies(u)
                .first()
                .is_some_and(|r| r.status == "ACCEPTED_BY_ADMIN")
        })
        .count();
    assert_eq!(accepted, 10, "the first of each colliding pair wins");
    d.stop();
    e.emu.clone().shutdown().await;
    let _ = std::fs::remove_dir_all(&e.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_original_time_is_recovered() {
    let e = env("stale", false, "", None).await;
    let daemon = e.start_ready();
    let mut ev = booking_event("Series", at(1, 10, 0), at(1, 10, 30), &e.room);
    ev.recurrence = Some("FREQ=DAILY;COUNT=3".into());
    let master = e.emu.create_event(&e.cal, ev);
    let uid = master.rsplit_once('_').unwrap().0.to_owned();
    e.wait_status(&uid, 0, "accepted").await;
    e.wait_replies(&uid, 1).await;

    // The reply for a moved instance fails once (every retry of the call)…
    e.emu.fail_next(
        "instance/reply",
        6,
        bridge_emulators::feishu::FaultKind::Status5xx,
    );
    let ot = at(2, 10, 0);
    e.emu
        .move_occurrence(&e.cal, &master, ot, at(2, 15, 0), at(2, 15, 30), None);
    e.wait_status(&uid, ot, "accepted").await;
    let start = Instant::now();
    while e
        .emu
        .calls()
        .iter()
        .filter(|c| c.path.contains("instance/reply") && c.status == 500)
        .count()
        < 6
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the failing reply never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …and before its retry the series start moves: its original_time is stale.
    e.emu.shift_series(&e.cal, &master, 3600);
    let start = Instant::now();
    let recovered = loop {
        let r = e.replies(&uid);
        if let Some(x) = r.iter().find(|r| r.original_time == ot + 3600) {
            break x.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never replied again: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recovered.status, "ACCEPTED_BY_ADMIN");
    assert!(
        e.emu
            .calls()
            .iter()
            .any(|c| c.path.contains("instance/reply") && c.code == Some(105_003)),
        "Feishu answered 105003 first"
    );
    let v = e.rooms(&["explain", &e.id(&uid, ot)]);
    assert!(v.to_string().contains("105003"), "{v}");
    daemon.stop();
    e.emu.clone().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_under_a_level_are_picked_up_on_room_events() {
    let e = env(
        "level",
        false,
        "\n[[rooms.map]]\nlevel_id = \"{LEVEL}\"",
        None,
    )
    .await;
    let daemon = e.start_ready();
    let level = e.rooms(&["list"])["rooms"][0]["room"]["room_level_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_room = e.emu.register_room(NewRoom {
        name: "Room B".into(),
        room_level_id: Some(level),
        third_party: true,
        ..NewRoom::default()
    });
    let start = Instant::now();
    loop {
        let v = e.rooms(&["list"]);
        let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
        if let Some(r) = rooms
            .iter()
            .find(|r| r["room"]["room_id"] == new_room.as_str())
        {
            assert_eq!(r["mapping"], "rooms.map[0]", "{v}");
            assert_eq!(r["rules"]["time_from"], "0", "{v}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new room never appeared: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop();
    e.emu.clone().shutdown().await;
}
