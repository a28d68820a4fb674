//! Canonical event -> Calendar v3 event resource (sinks-api.md A.3, A.5, A.7).
//!
//! Privacy profiles as in the ICS renderer: `full` writes everything;
//! `redacted` keeps times, recurrence, summary (private events: "Busy"),
//! status and transparency; `busy` keeps times, recurrence and transparency,
//! with the summary "Busy". `visibility` follows the Feishu class under every
//! profile (it only ever hides more), and the bridge's tags in
//! `extendedProperties.private` are always written.
//!
//! Attendees are copied into the description by default: populating
//! `attendees[]` sends invitations unless every call says `sendUpdates=none`,
//! and service accounts need domain-wide delegation for it (A.2).

use bridge_core::model::{Class, CuType, PartStat, Party, Role, Status, ical_date, ical_datetime};
use bridge_core::{CanonicalEvent, EventTime, Item, Privacy, content_hash};
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::ids::{event_id, instance_id};

/// Google accepts at most this many reminder overrides.
pub const MAX_REMINDERS: usize = 5;
/// Largest reminder offset Google accepts, in minutes (4 weeks).
pub const MAX_REMINDER_MINUTES: i64 = 40_320;

/// Settings of one Google target.
#[derive(Debug, Clone, Default)]
pub struct GoogleOptions {
    /// The Feishu calendar the events come from (part of every event id).
    pub calendar_id: String,
    /// Write attendees into `attendees[]` (full profile only) instead of the
    /// description. Only safe together with `sendUpdates=none`.
    pub write_attendees: bool,
}

/// Where an event sits in its series, which decides its id and the
/// series fields.
#[derive(Debug, Clone, Copy)]
pub enum Series<'a> {
    /// A single event or a master; `cancelled` are the original times (Unix
    /// seconds) of the cancelled occurrences of a master, written as EXDATE.
    Base { cancelled: &'a [i64] },
    /// A modified occurrence of a series whose master is mirrored too: the
    /// instance id, `recurringEventId` and `originalStartTime`.
    Instance { master_start: EventTime },
    /// An occurrence whose master is absent: its own id from the Feishu event
    /// id `<uid>_<original_time>`, no series fields.
    Standalone,
}

/// The resource of `ev` with its placement guessed from the key: a base key
/// (single or master, no EXDATEs) or, for an occurrence, a standalone event.
/// Use [`to_resource_in`] for masters with cancelled occurrences and for
/// occurrences of a mirrored series.
pub fn to_resource(
    ev: &CanonicalEvent,
    privacy: Privacy,
    opts: &GoogleOptions,
) -> (Value, Vec<String>) {
    let series = if ev.key.is_base() {
        Series::Base { cancelled: &[] }
    } else {
        Series::Standalone
    };
    to_resource_in(ev, series, privacy, opts)
}

/// The Calendar v3 event resource of `ev`, plus what could not be written
/// exactly. The output is deterministic (serde_json orders keys).
pub fn to_resource_in(
    ev: &CanonicalEvent,
    series: Series<'_>,
    privacy: Privacy,
    opts: &GoogleOptions,
) -> (Value, Vec<String>) {
    let mut warnings = Vec::new();
    let key = &ev.key;
    let master_id = event_id(&opts.calendar_id, key.uid());
    let mut r = Map::new();

    let id = match series {
        Series::Base { .. } => master_id.clone(),
        Series::Instance { master_start } => {
            instance_id(&master_id, &master_start, key.original_time())
        }
        Series::Standalone => event_id(&opts.calendar_id, &key.to_string()),
    };
    r.insert("id".into(), json!(id));

    // What the privacy profile shows (the content hash below is the
    // source's, so it is taken from `ev` itself).
    let shown = bridge_core::privacy::project(ev, privacy);
    r.insert("summary".into(), json!(shown.summary));
    let desc = description(&shown, !opts.write_attendees);
    if !desc.is_empty() {
        r.insert("description".into(), json!(desc));
    }
    // The event's location, or its rooms (pending bookings marked).
    if let Some(loc) = bridge_core::rooms::display_location(&shown).filter(|l| !l.is_empty()) {
        r.insert("location".into(), json!(loc));
    }

    r.insert("start".into(), date_time(&ev.start));
    r.insert("end".into(), date_time(&ev.end));

    match series {
        Series::Base { cancelled } => {
            if let Some(rule) = &ev.rrule {
                let mut lines = vec![format!("RRULE:{rule}")];
                let mut times = cancelled.to_vec();
                times.sort_unstable();
                times.dedup();
                lines.extend(times.iter().map(|&t| exdate(&ev.start.same_form(t))));
                r.insert("recurrence".into(), json!(lines));
            } else if !cancelled.is_empty() {
                warnings.push(format!(
                    "{key}: {} cancelled occurrence(s) of an event without a recurrence rule ignored",
                    cancelled.len()
                ));
            }
        }
        Series::Instance { master_start } => {
            r.insert("recurringEventId".into(), json!(master_id));
            r.insert(
                "originalStartTime".into(),
                date_time(&master_start.same_form(key.original_time())),
            );
            if ev.rrule.is_some() {
                warnings.push(format!(
                    "{key}: an occurrence cannot carry its own recurrence rule; left out"
                ));
            }
        }
        Series::Standalone => {
            if let Some(rule) = &ev.rrule {
                r.insert("recurrence".into(), json!([format!("RRULE:{rule}")]));
            }
        }
    }

    r.insert(
        "transparency".into(),
        json!(if ev.transparent {
            "transparent"
        } else {
            "opaque"
        }),
    );
    r.insert(
        "visibility".into(),
        json!(match ev.class {
            Some(Class::Private) => "private",
            Some(Class::Public) => "public",
            None => "default",
        }),
    );
    let status = match shown.status {
        None | Some(Status::Confirmed) => "confirmed",
        Some(Status::Tentative) => "tentative",
    };
    r.insert("status".into(), json!(status));

    let overrides = reminders(&shown, &mut warnings);
    r.insert(
        "reminders".into(),
        json!({"useDefault": false, "overrides": overrides}),
    );

    if opts.write_attendees && !shown.attendees.is_empty() {
        let list: Vec<Value> = shown.attendees.iter().map(attendee).collect();
        r.insert("attendees".into(), Value::Array(list));
    }
    if let Some(url) = &shown.url {
        r.insert("source".into(), json!({"title": "Feishu", "url": url}));
    }

    let hash = content_hash(&Item::Event(Box::new(ev.clone())));
    r.insert(
        "extendedProperties".into(),
        json!({"private": {
            "feishuBridge": "1",
            "feishuKey": key.to_string(),
            "feishuHash": hash.to_string(),
        }}),
    );
    (Value::Object(r), warnings)
}

/// EventDateTime: `{date}` for all-day, `{dateTime, timeZone}` otherwise.
fn date_time(t: &EventTime) -> Value {
    match t {
        EventTime::Date(d) => json!({"date": d.format("%Y-%m-%d").to_string()}),
        EventTime::Utc(at) => json!({
            "dateTime": rfc3339(&Utc, *at, true),
            "timeZone": "UTC",
        }),
        EventTime::Zoned { at, tz } => json!({
            "dateTime": rfc3339(tz, *at, false),
            "timeZone": tz.name(),
        }),
    }
}

/// RFC 3339 with the zone's offset (`Z` only when `use_z`).
fn rfc3339<Z: TimeZone>(zone: &Z, at: i64, use_z: bool) -> String
where
    Z::Offset: std::fmt::Display,
{
    zone.timestamp_opt(at, 0)
        .single()
        .unwrap_or_else(|| zone.from_utc_datetime(&chrono::DateTime::UNIX_EPOCH.naive_utc()))
        .to_rfc3339_opts(SecondsFormat::Secs, use_z)
}

/// An `EXDATE` line in the master start's value type.
fn exdate(t: &EventTime) -> String {
    match t {
        EventTime::Date(d) => format!("EXDATE;VALUE=DATE:{}", ical_date(*d)),
        EventTime::Utc(at) => format!("EXDATE:{}", bridge_core::model::ical_utc(*at)),
        EventTime::Zoned { tz, .. } => {
            format!(
                "EXDATE;TZID={}:{}",
                tz.name(),
                ical_datetime(t.local(), false)
            )
        }
    }
}

/// The Feishu text, the meeting line, the Feishu link, the rooms (always:
/// a room written as an attendee shows no booking state) and (unless
/// written as `attendees[]`) the organizer and the other attendees.
fn description(ev: &CanonicalEvent, with_people: bool) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let text = ev.description.trim_end();
    if !text.is_empty() {
        blocks.push(text.to_owned());
    }
    let mut links = Vec::new();
    if let Some(conf) = &ev.conference {
        links.push(format!("{}: {}", conf.label, conf.uri));
    }
    if let Some(url) = &ev.url {
        links.push(format!("Feishu: {url}"));
    }
    if !links.is_empty() {
        blocks.push(links.join("\n"));
    }
    let rooms = bridge_core::rooms::room_lines(ev);
    if !rooms.is_empty() {
        blocks.push(rooms.join("\n"));
    }
    if with_people {
        let mut people = Vec::new();
        if let Some(org) = &ev.organizer {
            people.push(format!("Organizer: {}", party_label(org)));
        }
        let others: Vec<&Party> = ev
            .attendees
            .iter()
            .filter(|a| a.cutype != CuType::Room)
            .collect();
        if !others.is_empty() {
            people.push("Attendees:".to_owned());
            for a in others {
                let mut line = format!("- {}", party_label(a));
                let mut notes = Vec::new();
                if a.role == Role::Optional {
                    notes.push("optional");
                }
                match a.partstat {
                    PartStat::Accepted => notes.push("accepted"),
                    PartStat::Tentative => notes.push("tentative"),
                    PartStat::Declined => notes.push("declined"),
                    PartStat::NeedsAction => {}
                }
                if !notes.is_empty() {
                    line.push_str(&format!(" ({})", notes.join(", ")));
                }
                people.push(line);
            }
        }
        if !people.is_empty() {
            blocks.push(people.join("\n"));
        }
    }
    blocks.join("\n\n")
}

/// `Name <address>` with non-deliverable `.invalid` addresses hidden.
fn party_label(p: &Party) -> String {
    let email = email(p);
    let shown = (!email.ends_with(".invalid")).then_some(email);
    match (&p.name, shown) {
        (Some(n), Some(e)) => format!("{n} <{e}>"),
        (Some(n), None) => n.clone(),
        (None, Some(e)) => e.to_owned(),
        (None, None) => email.to_owned(),
    }
}

fn email(p: &Party) -> &str {
    p.address
        .strip_prefix("mailto:")
        .or_else(|| p.address.strip_prefix("MAILTO:"))
        .unwrap_or(&p.address)
}

fn attendee(p: &Party) -> Value {
    let mut a = Map::new();
    a.insert("email".into(), json!(email(p)));
    if let Some(n) = &p.name {
        a.insert("displayName".into(), json!(n));
    }
    if p.role == Role::Optional {
        a.insert("optional".into(), json!(true));
    }
    if p.cutype == CuType::Room {
        a.insert("resource".into(), json!(true));
    }
    a.insert(
        "responseStatus".into(),
        json!(match p.partstat {
            PartStat::NeedsAction => "needsAction",
            PartStat::Accepted => "accepted",
            PartStat::Tentative => "tentative",
            PartStat::Declined => "declined",
        }),
    );
    Value::Object(a)
}

/// Popup overrides: minutes before the start in 0..=40320, duplicates
/// merged, at most five (the first five in Feishu's order).
fn reminders(ev: &CanonicalEvent, warnings: &mut Vec<String>) -> Vec<Value> {
    let key = &ev.key;
    let mut kept: Vec<i64> = Vec::new();
    for &m in &ev.alarms {
        if m < 0 {
            warnings.push(format!(
                "{key}: reminder {} minutes after the start cannot be written to Google; left out",
                -m
            ));
        } else if m > MAX_REMINDER_MINUTES {
            warnings.push(format!(
                "{key}: reminder {m} minutes before the start exceeds Google's {MAX_REMINDER_MINUTES}; left out"
            ));
        } else if kept.contains(&m) {
            // Same popup twice: nothing lost.
        } else if kept.len() == MAX_REMINDERS {
            warnings.push(format!(
                "{key}: reminder {m} minutes before the start left out (Google allows {MAX_REMINDERS})"
            ));
        } else {
            kept.push(m);
        }
    }
    kept.into_iter()
        .map(|m| json!({"method": "popup", "minutes": m}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::ids::is_valid_event_id;
    use bridge_core::EventKey;
    use bridge_core::model::Conference;
    use chrono::NaiveDate;
    use chrono_tz::Tz;

    const CAL: &str = "feishu_cal_1";
    // 2024-03-15 09:00 America/New_York (EDT, -04:00) = 13:00 UTC.
    const NINE_NY: i64 = 1_710_507_600;

    fn ny() -> Tz {
        "America/New_York".parse().unwrap()
    }

    fn opts() -> GoogleOptions {
        GoogleOptions {
            calendar_id: CAL.to_owned(),
            write_attendees: false,
        }
    }

    fn party(addr: &str, name: &str, partstat: PartStat, role: Role) -> Party {
        Party {
            address: addr.to_owned(),
            name: Some(name.to_owned()),
            cutype: CuType::Individual,
            partstat,
            role,
        }
    }

    fn event(key: &str, start: EventTime, end: EventTime) -> CanonicalEvent {
        CanonicalEvent {
            key: EventKey::parse(key).unwrap(),
            start,
            end,
            rrule: None,
            rrule_bound: None,
            summary: "Planning".to_owned(),
            description: String::new(),
            location: None,
            geo: None,
            url: None,
            conference: None,
            status: None,
            class: None,
            transparent: false,
            alarms: Vec::new(),
            organizer: None,
            attendees: Vec::new(),
            created: None,
        }
    }

    fn timed_ny() -> CanonicalEvent {
        let tz = ny();
        let mut ev = event(
            "u1_0",
            EventTime::Zoned { at: NINE_NY, tz },
            EventTime::Zoned {
                at: NINE_NY + 3600,
                tz,
            },
        );
        ev.description = "Agenda: roadmap\n".to_owned();
        ev.location = Some("Room 1".to_owned());
        ev.url = Some("https://applink.feishu.cn/client/calendar/event/detail?x=1".to_owned());
        ev.conference = Some(Conference {
            uri: "https://vc.feishu.cn/j/123".to_owned(),
            label: "Feishu Meeting".to_owned(),
        });
        ev.status = Some(Status::Confirmed);
        ev.alarms = vec![15];
        ev.organizer = Some(party(
            "mailto:ou_1@user.feishu.invalid",
            "Ann",
            PartStat::Accepted,
            Role::Required,
        ));
        ev.attendees = vec![
            party(
                "mailto:ou_1@user.feishu.invalid",
                "Ann",
                PartStat::Accepted,
                Role::Required,
            ),
            party(
                "mailto:bob@example.com",
                "Bob",
                PartStat::NeedsAction,
                Role::Optional,
            ),
        ];
        ev
    }

    fn tags(ev: &CanonicalEvent) -> Value {
        json!({"private": {
            "feishuBridge": "1",
            "feishuKey": ev.key.to_string(),
            "feishuHash": content_hash(&Item::Event(Box::new(ev.clone()))).to_string(),
        }})
    }

    #[test]
    fn timed_event_in_new_york() {
        let ev = timed_ny();
        let (r, warnings) = to_resource(&ev, Privacy::Full, &opts());
        assert!(warnings.is_empty(), "{warnings:?}");
        let want = json!({
            "id": event_id(CAL, "u1"),
            "summary": "Planning",
            "description": "Agenda: roadmap\n\n\
                Feishu Meeting: https://vc.feishu.cn/j/123\n\
                Feishu: https://applink.feishu.cn/client/calendar/event/detail?x=1\n\n\
                Organizer: Ann\n\
                Attendees:\n\
                - Ann (accepted)\n\
                - Bob <bob@example.com> (optional)",
            "location": "Room 1",
            "start": {"dateTime": "2024-03-15T09:00:00-04:00", "timeZone": "America/New_York"},
            "end": {"dateTime": "2024-03-15T10:00:00-04:00", "timeZone": "America/New_York"},
            "transparency": "opaque",
            "visibility": "default",
            "status": "confirmed",
            "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 15}]},
            "source": {
                "title": "Feishu",
                "url": "https://applink.feishu.cn/client/calendar/event/detail?x=1",
            },
            "extendedProperties": tags(&ev),
        });
        assert_eq!(r, want);
        assert!(is_valid_event_id(r["id"].as_str().unwrap()));
    }

    #[test]
    fn attendees_written_when_asked() {
        let ev = timed_ny();
        let o = GoogleOptions {
            write_attendees: true,
            ..opts()
        };
        let (r, _) = to_resource(&ev, Privacy::Full, &o);
        assert_eq!(
            r["attendees"],
            json!([
                {"email": "ou_1@user.feishu.invalid", "displayName": "Ann", "responseStatus": "accepted"},
                {"email": "bob@example.com", "displayName": "Bob", "optional": true, "responseStatus": "needsAction"},
            ])
        );
        let desc = r["description"].as_str().unwrap();
        assert!(!desc.contains("Attendees") && !desc.contains("Organizer"));
        // Never under a reduced profile.
        let (r, _) = to_resource(&ev, Privacy::Redacted, &o);
        assert!(r.get("attendees").is_none());
    }

    #[test]
    fn rooms_are_the_location_and_listed_with_their_booking_state() {
        let mut ev = timed_ny();
        ev.location = None;
        let room = |name: &str, id: &str, ps| {
            let mut p = party(
                &format!("mailto:{id}@room.feishu.invalid"),
                name,
                ps,
                Role::Required,
            );
            p.cutype = CuType::Room;
            p
        };
        ev.attendees
            .push(room("Room A", "omm_a", PartStat::NeedsAction));
        ev.attendees
            .push(room("Room B", "omm_b", PartStat::Declined));
        let (r, _) = to_resource(&ev, Privacy::Full, &opts());
        assert_eq!(r["location"], json!("Room A (booking pending)"));
        let desc = r["description"].as_str().unwrap();
        assert!(
            desc.contains("Room: Room A (booking pending)\nRoom: Room B (booking failed)"),
            "{desc}"
        );
        assert!(
            !desc.contains("- Room A"),
            "rooms are not listed twice: {desc}"
        );
        // Booked: shown as booked; written as a resource attendee when asked.
        ev.attendees[2].partstat = PartStat::Accepted;
        let o = GoogleOptions {
            write_attendees: true,
            ..opts()
        };
        let (r, _) = to_resource(&ev, Privacy::Full, &o);
        assert_eq!(r["location"], json!("Room A"));
        assert!(
            r["description"]
                .as_str()
                .unwrap()
                .contains("Room: Room A\n")
        );
        assert_eq!(
            r["attendees"][2],
            json!({"email": "omm_a@room.feishu.invalid", "displayName": "Room A", "resource": true, "responseStatus": "accepted"})
        );
        // Under a reduced profile neither rooms nor attendees are shown.
        let (r, _) = to_resource(&ev, Privacy::Busy, &o);
        assert!(r.get("location").is_none() && r.get("attendees").is_none());
    }

    #[test]
    fn utc_event() {
        let ev = event(
            "u9_0",
            EventTime::Utc(NINE_NY),
            EventTime::Utc(NINE_NY + 1800),
        );
        let (r, _) = to_resource(&ev, Privacy::Full, &opts());
        assert_eq!(
            r["start"],
            json!({"dateTime": "2024-03-15T13:00:00Z", "timeZone": "UTC"})
        );
        assert_eq!(
            r["end"],
            json!({"dateTime": "2024-03-15T13:30:00Z", "timeZone": "UTC"})
        );
    }

    #[test]
    fn all_day_multi_day_event() {
        let d = |day| EventTime::Date(NaiveDate::from_ymd_opt(2024, 5, day).unwrap());
        // May 1 to May 3 inclusive: the model's end is already exclusive (May 4).
        let mut ev = event("u2_0", d(1), d(4));
        ev.summary = "Offsite".to_owned();
        ev.transparent = true;
        let (r, warnings) = to_resource(&ev, Privacy::Full, &opts());
        assert!(warnings.is_empty());
        assert_eq!(
            r,
            json!({
                "id": event_id(CAL, "u2"),
                "summary": "Offsite",
                "start": {"date": "2024-05-01"},
                "end": {"date": "2024-05-04"},
                "transparency": "transparent",
                "visibility": "default",
                "status": "confirmed",
                "reminders": {"useDefault": false, "overrides": []},
                "extendedProperties": tags(&ev),
            })
        );
    }

    #[test]
    fn master_with_rrule_and_exdates() {
        let tz = ny();
        let mut ev = event(
            "u3_0",
            EventTime::Zoned { at: NINE_NY, tz },
            EventTime::Zoned {
                at: NINE_NY + 3600,
                tz,
            },
        );
        ev.rrule = Some("FREQ=WEEKLY;BYDAY=FR;COUNT=10".to_owned());
        ev.status = Some(Status::Tentative);
        let week = 7 * 86_400;
        // Given out of order and twice: sorted, merged.
        let cancelled = [NINE_NY + 2 * week, NINE_NY + week, NINE_NY + week];
        let (r, warnings) = to_resource_in(
            &ev,
            Series::Base {
                cancelled: &cancelled,
            },
            Privacy::Full,
            &opts(),
        );
        assert!(warnings.is_empty());
        assert_eq!(
            r,
            json!({
                "id": event_id(CAL, "u3"),
                "summary": "Planning",
                "start": {"dateTime": "2024-03-15T09:00:00-04:00", "timeZone": "America/New_York"},
                "end": {"dateTime": "2024-03-15T10:00:00-04:00", "timeZone": "America/New_York"},
                "recurrence": [
                    "RRULE:FREQ=WEEKLY;BYDAY=FR;COUNT=10",
                    "EXDATE;TZID=America/New_York:20240322T090000",
                    "EXDATE;TZID=America/New_York:20240329T090000",
                ],
                "transparency": "opaque",
                "visibility": "default",
                "status": "tentative",
                "reminders": {"useDefault": false, "overrides": []},
                "extendedProperties": tags(&ev),
            })
        );
    }

    #[test]
    fn exdates_follow_the_master_form() {
        let day = |d| EventTime::Date(NaiveDate::from_ymd_opt(2024, 3, d).unwrap());
        let mut ev = event("u4_0", day(1), day(2));
        ev.rrule = Some("FREQ=DAILY".to_owned());
        // 2024-03-05 00:00 UTC.
        let (r, _) = to_resource_in(
            &ev,
            Series::Base {
                cancelled: &[1_709_596_800],
            },
            Privacy::Busy,
            &opts(),
        );
        assert_eq!(
            r["recurrence"],
            json!(["RRULE:FREQ=DAILY", "EXDATE;VALUE=DATE:20240305"])
        );
        let mut ev = event(
            "u5_0",
            EventTime::Utc(NINE_NY),
            EventTime::Utc(NINE_NY + 60),
        );
        ev.rrule = Some("FREQ=DAILY".to_owned());
        let (r, _) = to_resource_in(
            &ev,
            Series::Base {
                cancelled: &[NINE_NY + 86_400],
            },
            Privacy::Full,
            &opts(),
        );
        assert_eq!(
            r["recurrence"],
            json!(["RRULE:FREQ=DAILY", "EXDATE:20240316T130000Z"])
        );
    }

    #[test]
    fn modified_and_orphaned_occurrences() {
        let tz = ny();
        let master_start = EventTime::Zoned { at: NINE_NY, tz };
        let orig = NINE_NY + 7 * 86_400;
        // Moved one hour later.
        let ev = event(
            &format!("u3_{orig}"),
            EventTime::Zoned {
                at: orig + 3600,
                tz,
            },
            EventTime::Zoned {
                at: orig + 7200,
                tz,
            },
        );
        let (r, _) = to_resource_in(
            &ev,
            Series::Instance { master_start },
            Privacy::Full,
            &opts(),
        );
        let master = event_id(CAL, "u3");
        assert_eq!(r["id"], json!(format!("{master}_20240322T130000Z")));
        assert_eq!(r["recurringEventId"], json!(master));
        assert_eq!(
            r["originalStartTime"],
            json!({"dateTime": "2024-03-22T09:00:00-04:00", "timeZone": "America/New_York"})
        );
        assert_eq!(
            r["extendedProperties"]["private"]["feishuKey"],
            json!(format!("u3_{orig}"))
        );
        // Without its master: its own id, no series fields.
        let (r, _) = to_resource(&ev, Privacy::Full, &opts());
        assert_eq!(r["id"], json!(event_id(CAL, &format!("u3_{orig}"))));
        assert!(r.get("recurringEventId").is_none() && r.get("originalStartTime").is_none());
    }

    fn private_event() -> CanonicalEvent {
        let mut ev = timed_ny();
        ev.class = Some(Class::Private);
        ev.status = Some(Status::Tentative);
        ev
    }

    #[test]
    fn private_event_full() {
        let ev = private_event();
        let (r, _) = to_resource(&ev, Privacy::Full, &opts());
        assert_eq!(r["summary"], json!("Planning"));
        assert_eq!(r["visibility"], json!("private"));
        assert_eq!(r["status"], json!("tentative"));
        assert_eq!(r["location"], json!("Room 1"));
        assert!(r["description"].as_str().unwrap().starts_with("Agenda"));
        assert_eq!(r["reminders"]["overrides"][0]["minutes"], json!(15));
    }

    #[test]
    fn private_event_redacted() {
        let ev = private_event();
        let (r, _) = to_resource(&ev, Privacy::Redacted, &opts());
        assert_eq!(
            r,
            json!({
                "id": event_id(CAL, "u1"),
                "summary": "Busy",
                "start": {"dateTime": "2024-03-15T09:00:00-04:00", "timeZone": "America/New_York"},
                "end": {"dateTime": "2024-03-15T10:00:00-04:00", "timeZone": "America/New_York"},
                "transparency": "opaque",
                "visibility": "private",
                "status": "tentative",
                "reminders": {"useDefault": false, "overrides": []},
                "extendedProperties": tags(&ev),
            })
        );
        // A non-private event keeps its summary under `redacted`.
        let (r, _) = to_resource(&timed_ny(), Privacy::Redacted, &opts());
        assert_eq!(r["summary"], json!("Planning"));
        assert!(r.get("description").is_none() && r.get("source").is_none());
    }

    #[test]
    fn private_event_busy() {
        let ev = private_event();
        let (r, _) = to_resource(&ev, Privacy::Busy, &opts());
        assert_eq!(
            r,
            json!({
                "id": event_id(CAL, "u1"),
                "summary": "Busy",
                "start": {"dateTime": "2024-03-15T09:00:00-04:00", "timeZone": "America/New_York"},
                "end": {"dateTime": "2024-03-15T10:00:00-04:00", "timeZone": "America/New_York"},
                "transparency": "opaque",
                "visibility": "private",
                "status": "confirmed",
                "reminders": {"useDefault": false, "overrides": []},
                "extendedProperties": tags(&ev),
            })
        );
    }

    #[test]
    fn seven_reminders_keep_five() {
        let mut ev = timed_ny();
        ev.alarms = vec![0, 5, 10, 15, 30, 60, 1440];
        let (r, warnings) = to_resource(&ev, Privacy::Full, &opts());
        assert_eq!(
            r["reminders"],
            json!({"useDefault": false, "overrides": [
                {"method": "popup", "minutes": 0},
                {"method": "popup", "minutes": 5},
                {"method": "popup", "minutes": 10},
                {"method": "popup", "minutes": 15},
                {"method": "popup", "minutes": 30},
            ]})
        );
        assert_eq!(
            warnings,
            [
                "u1_0: reminder 60 minutes before the start left out (Google allows 5)",
                "u1_0: reminder 1440 minutes before the start left out (Google allows 5)",
            ]
        );
    }

    #[test]
    fn reminders_out_of_range() {
        let mut ev = timed_ny();
        ev.alarms = vec![-10, 40_320, 40_321, 15, 15];
        let (r, warnings) = to_resource(&ev, Privacy::Full, &opts());
        assert_eq!(
            r["reminders"]["overrides"],
            json!([{"method": "popup", "minutes": 40320}, {"method": "popup", "minutes": 15}])
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("after the start"));
        assert!(warnings[1].contains("40321"));
    }
}
