//! Fidelity end to end (issue #11): the real binary reads attendees and
//! meeting rooms from the Feishu emulator's attendees endpoint and mirrors
//! them into an ICS file and the Google Calendar emulator; a room booking
//! that settles between passes reaches both; an unchanged pass with nothing
//! upcoming reads no attendees.

use std::path::Path;

use bridge_core::feishu::{Attendee, AttendeeType, RsvpStatus};
use bridge_emulators::feishu::FeishuEmulator;
use bridge_emulators::google::GoogleEmulator;

use crate::feishu::{bin, emulator, event, temp_dir, write_config};
use crate::google::{OWNER, Opts, google, google_sink};

const DAY: i64 = 86_400;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `reconcile --json`; the report of the only calendar.
async fn reconcile(config: &Path) -> serde_json::Value {
    let mut cmd = bin();
    cmd.args(["reconcile", "--json", "--config"]).arg(config);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = format!(
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let cal = v["calendars"][0].clone();
    for s in cal["sinks"].as_array().unwrap() {
        assert_eq!(s["failed"], 0, "{ctx}");
    }
    cal
}

fn ics_text(dir: &Path) -> String {
    let entry = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "ics"))
        .expect("an ICS file");
    // Unfolded.
    std::fs::read_to_string(entry.path())
        .unwrap()
        .replace("\r\n ", "")
}

fn room(id: &str, name: &str, status: RsvpStatus) -> Attendee {
    Attendee {
        kind: Some(AttendeeType::Resource),
        room_id: Some(id.into()),
        display_name: Some(name.into()),
        // An explicit status: the emulator's own asynchronous booking stays
        // out of it, the test settles it between passes.
        rsvp_status: Some(status),
        ..Attendee::default()
    }
}

fn guest(email: &str, name: &str) -> Attendee {
    Attendee {
        kind: Some(AttendeeType::ThirdParty),
        third_party_email: Some(email.into()),
        display_name: Some(name.into()),
        rsvp_status: Some(RsvpStatus::Accept),
        ..Attendee::default()
    }
}

/// The one mirrored Google event titled `summary` (as `events.get` shows it).
fn google_event(g: &GoogleEmulator, gcal: &str, summary: &str) -> serde_json::Value {
    g.events(gcal)
        .into_iter()
        .find(|e| e.summary.as_deref() == Some(summary) && e.status != "cancelled")
        .unwrap_or_else(|| panic!("no Google event {summary:?}"))
        .resource
}

fn attendee_calls(f: &FeishuEmulator) -> usize {
    f.call_count("/attendees")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attendees_and_a_settling_room_reach_ics_and_google() {
    let f = emulator().await;
    let g = google().await;
    let user = f.add_user("Li Lei");
    let cal = f.primary_calendar(&user);
    let colleague = f.add_user("Han Meimei");
    let now = unix_now();
    let id = f.create_event(&cal, event("Cross-team review", now + 2 * DAY));
    f.add_attendee(
        &cal,
        &id,
        Attendee {
            kind: Some(AttendeeType::User),
            user_id: Some(colleague.clone()),
            rsvp_status: Some(RsvpStatus::Accept),
            ..Attendee::default()
        },
    );
    f.add_attendee(&cal, &id, guest("bob@example.com", "Bob"));
    f.add_attendee(
        &cal,
        &id,
        room("omm_room_a", "Room A", RsvpStatus::NeedsAction),
    );

    let dir = temp_dir("fidelity-rooms");
    let gcal = g.create_calendar(OWNER, "Mirror");
    let extra = format!(
        "{}write_attendees = true\n\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        google_sink(&g, &dir, &gcal, &Opts::default()),
        dir.join("ics").display()
    );
    let config = write_config(&dir, &f, &format!("[\"{cal}\"]"), &extra);

    let r = reconcile(&config).await;
    assert!(r["attendee_calls"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["attendees_fetched"].as_u64().unwrap() >= 1, "{r}");

    // ICS: every attendee, the room as CUTYPE=ROOM, pending, and the
    // location says so.
    let text = ics_text(&dir.join("ics"));
    assert!(
        text.contains("CN=Han Meimei;CUTYPE=INDIVIDUAL;PARTSTAT=ACCEPTED"),
        "{text}"
    );
    assert!(text.contains(":mailto:bob@example.com"), "{text}");
    assert!(
        text.contains("CN=Room A;CUTYPE=ROOM;PARTSTAT=NEEDS-ACTION"),
        "{text}"
    );
    assert!(text.contains("LOCATION:Room A (booking pending)"), "{text}");

    // Google: attendees written (never mailed), the room in the location
    // and the description, marked pending.
    let ev = google_event(&g, &gcal, "Cross-team review");
    let emails: Vec<&str> = ev["attendees"]
        .as_array()
        .unwrap_or_else(|| panic!("no attendees: {ev}"))
        .iter()
        .filter_map(|a| a["email"].as_str())
        .collect();
    assert!(emails.contains(&"bob@example.com"), "{ev}");
    assert!(
        emails.contains(&format!("{colleague}@user.feishu.invalid").as_str()),
        "{ev}"
    );
    let room_att = ev["attendees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["resource"] == true)
        .unwrap_or_else(|| panic!("no room attendee: {ev}"));
    assert_eq!(room_att["responseStatus"], "needsAction", "{ev}");
    assert_eq!(ev["location"], "Room A (booking pending)", "{ev}");
    assert!(
        ev["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Room: Room A (booking pending)"),
        "{ev}"
    );
    assert!(g.notifications().is_empty(), "nobody is mailed");

    // The booking settles; the listed event does not change. The next full
    // reconcile reads the upcoming event's attendees again.
    f.set_room_status(&cal, &id, "omm_room_a", RsvpStatus::Accept);
    let r = reconcile(&config).await;
    assert_eq!(r["attendees_refreshed"], 1, "{r}");
    let text = ics_text(&dir.join("ics"));
    assert!(
        text.contains("CN=Room A;CUTYPE=ROOM;PARTSTAT=ACCEPTED"),
        "{text}"
    );
    assert!(text.contains("LOCATION:Room A\r\n"), "{text}");
    let ev = google_event(&g, &gcal, "Cross-team review");
    assert_eq!(ev["location"], "Room A", "{ev}");
    let desc = ev["description"].as_str().unwrap_or_default();
    assert!(
        desc.contains("Room: Room A") && !desc.contains("pending"),
        "{ev}"
    );
    let room_att = ev["attendees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["resource"] == true)
        .unwrap();
    assert_eq!(room_att["responseStatus"], "accepted", "{ev}");
    assert!(g.notifications().is_empty(), "nobody is mailed");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_mirror_reads_attendees_once_and_a_no_op_pass_reads_none() {
    let f = emulator().await;
    let user = f.add_user("Li Lei");
    let cal = f.primary_calendar(&user);
    let now = unix_now();
    // N past events with three attendees each, and one with 250 (three
    // pages of 100).
    const N: usize = 12;
    let mut ids = Vec::new();
    for i in 0..N {
        let id = f.create_event(
            &cal,
            event(&format!("Review {i}"), now - 30 * DAY + i as i64 * 3600),
        );
        f.add_attendee(&cal, &id, guest(&format!("a{i}@example.com"), "A"));
        f.add_attendee(&cal, &id, guest(&format!("b{i}@example.com"), "B"));
        f.add_attendee(&cal, &id, room("omm_r", "Room R", RsvpStatus::Accept));
        ids.push(id);
    }
    let big = f.create_event(&cal, event("All hands", now - 20 * DAY));
    for i in 0..250 {
        f.add_attendee(&cal, &big, guest(&format!("p{i}@example.com"), "P"));
    }
    let dir = temp_dir("fidelity-noop");
    let extra = format!(
        "\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        dir.join("ics").display()
    );
    let config = write_config(&dir, &f, &format!("[\"{cal}\"]"), &extra);

    f.reset_calls();
    let r = reconcile(&config).await;
    // One call per event with up to 100 attendees, three for 250.
    assert_eq!(r["attendee_calls"], (N + 3) as u64, "{r}");
    assert_eq!(attendee_calls(&f), N + 3);
    assert_eq!(r["attendees_fetched"], (N + 1) as u64, "{r}");
    let text = ics_text(&dir.join("ics"));
    assert_eq!(text.matches("CUTYPE=ROOM").count(), N, "{text}");
    assert_eq!(text.matches("mailto:p").count(), 250);

    // Nothing changed and nothing is upcoming: no attendee call at all.
    f.reset_calls();
    let r = reconcile(&config).await;
    assert_eq!(r["attendee_calls"], 0, "{r}");
    assert_eq!(attendee_calls(&f), 0);
    // The mirror keeps them.
    assert_eq!(ics_text(&dir.join("ics")), text);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_transforms_per_sink_and_explain_names_the_filter() {
    let f = emulator().await;
    let user = f.add_user("Li Lei");
    let cal = f.primary_calendar(&user);
    let now = unix_now();
    let plain = f.create_event(&cal, event("Design review", now + DAY));
    let mut private = event("Doctor", now + 2 * DAY);
    private.visibility = Some(bridge_core::feishu::Visibility::Private);
    let private = f.create_event(&cal, private);
    let dir = temp_dir("fidelity-views");
    let extra = format!(
        "\n[[sinks]]\nkind = \"ics\"\ndir = \"{all}\"\n\
         \n[[sinks]]\nkind = \"ics\"\ndir = \"{work}\"\n\
         [sinks.filter]\nskip_private = true\n\
         [sinks.transform]\ntitle_prefix = \"[Feishu] \"\n",
        all = dir.join("all").display(),
        work = dir.join("work").display(),
    );
    let config = write_config(&dir, &f, &format!("[\"{cal}\"]"), &extra);
    let r = reconcile(&config).await;
    assert_eq!(r["sinks"][1]["filtered"], 1, "{r}");
    let all = ics_text(&dir.join("all"));
    let work = ics_text(&dir.join("work"));
    assert!(all.contains("SUMMARY:Doctor") && all.contains("SUMMARY:Design review"));
    assert!(!work.contains("Doctor"), "{work}");
    assert!(work.contains("SUMMARY:[Feishu] Design review"), "{work}");

    let out = bin()
        .args(["explain", &private, "--offline", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not written: left out by the filter sinks[1].filter.skip_private"),
        "{text}"
    );
    let out = bin()
        .args(["explain", &plain, "--offline", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("up to date").count(), 3, "both sinks: {text}");
    f.shutdown().await;
}
