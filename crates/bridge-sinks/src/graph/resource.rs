//! The Graph `event` JSON of a canonical event (pure): exact instants,
//! all-day midnight to midnight in one zone, `patternedRecurrence` from the
//! shared Microsoft mapping, our tags, and nothing that would make Graph
//! send invitations or create an online meeting (graph.md §1).

use bridge_core::instant;
use bridge_core::model::{Class, Status};
use bridge_core::{CanonicalEvent, EventTime, Privacy};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::microsoft::recurrence::{self, Pattern, Range, Recurrence, Unsupported};
use crate::microsoft::tag::{HASH_PROPERTY, KEY_PROPERTY, graph_property_id};
use crate::microsoft::zones;

/// The extended property naming the source calendar (scopes drift repair
/// when several source calendars share one Graph calendar).
pub const CALENDAR_PROPERTY: &str = "FeishuBridgeCalendar";

/// The three tag property ids.
pub fn tag_ids() -> [String; 3] {
    [
        graph_property_id(KEY_PROPERTY),
        graph_property_id(HASH_PROPERTY),
        graph_property_id(CALENDAR_PROPERTY),
    ]
}

/// How an event is written.
#[derive(Debug, Clone, Copy)]
pub enum Shape<'a> {
    /// A single event (a standalone event, or an occurrence without master).
    Single,
    /// A series master with its Microsoft recurrence.
    Master(&'a Recurrence),
    /// A modified occurrence (a PATCH on its occurrence id: no recurrence).
    Occurrence,
}

/// What the JSON needs besides the event.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub privacy: Privacy,
    pub source_calendar: &'a str,
    /// The source calendar's zone: all-day events are midnight there.
    pub calendar_zone: Option<Tz>,
}

/// The Windows zone id of an IANA zone, `UTC` when Windows has none.
pub fn windows_zone(tz: Tz) -> &'static str {
    zones::windows_zone(tz.name()).unwrap_or("UTC")
}

fn local(dt: chrono::NaiveDateTime) -> String {
    dt.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A `dateTimeTimeZone` naming exactly `t`'s instant: the wall clock in the
/// event's Windows zone when it is unambiguous, else UTC.
pub fn exact_time(t: &EventTime) -> Value {
    match instant::exact(*t) {
        EventTime::Zoned { at, tz } => match zones::windows_zone(tz.name()) {
            Some(w) => json!({"dateTime": local(instant::wall_clock(tz, at)), "timeZone": w}),
            None => utc(at),
        },
        other => utc(other.instant()),
    }
}

fn utc(at: i64) -> Value {
    json!({"dateTime": local(EventTime::Utc(at).local()), "timeZone": "UTC"})
}

/// The wall clock of `t` in `tz` (a series' start: the pattern expands from
/// it), named by its Windows id.
fn wall(t: &EventTime, tz: Tz) -> Value {
    json!({"dateTime": local(instant::wall_clock(tz, t.instant())), "timeZone": windows_zone(tz)})
}

/// The all-day zone: the calendar's (mapped to Windows), else UTC.
fn day_zone(o: &Options<'_>) -> &'static str {
    o.calendar_zone.map_or("UTC", windows_zone)
}

fn date_time(d: chrono::NaiveDate, zone: &str) -> Value {
    json!({"dateTime": format!("{}T00:00:00", d.format("%Y-%m-%d")), "timeZone": zone})
}

/// The body text: the description, then the meeting and Feishu links
/// (the meeting link goes in the body, never as an online meeting).
fn body_text(ev: &CanonicalEvent) -> String {
    let mut text = ev.description.clone();
    let mut links = Vec::new();
    if let Some(c) = &ev.conference {
        let label = if c.label.is_empty() {
            "Meeting"
        } else {
            c.label.as_str()
        };
        links.push(format!("{label}: {}", c.uri));
    }
    if let Some(u) = &ev.url {
        links.push(format!("Feishu: {u}"));
    }
    if !links.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&links.join("\n"));
    }
    text
}

/// The pattern JSON (only the properties its type needs).
fn pattern(p: &Pattern) -> Value {
    match p {
        Pattern::Daily { interval } => json!({"type": "daily", "interval": interval}),
        Pattern::Weekly {
            interval,
            days,
            first_day_of_week,
        } => json!({
            "type": "weekly", "interval": interval,
            "daysOfWeek": days.iter().map(|d| d.graph()).collect::<Vec<_>>(),
            "firstDayOfWeek": first_day_of_week.graph(),
        }),
        Pattern::AbsoluteMonthly {
            interval,
            day_of_month,
        } => json!({"type": "absoluteMonthly", "interval": interval, "dayOfMonth": day_of_month}),
        Pattern::RelativeMonthly {
            interval,
            day_of_week,
            index,
        } => json!({
            "type": "relativeMonthly", "interval": interval,
            "daysOfWeek": [day_of_week.graph()], "index": index.graph(),
        }),
        Pattern::AbsoluteYearly {
            month,
            day_of_month,
        } => {
            json!({"type": "absoluteYearly", "interval": 1, "month": month, "dayOfMonth": day_of_month})
        }
        Pattern::RelativeYearly {
            month,
            day_of_week,
            index,
        } => json!({
            "type": "relativeYearly", "interval": 1, "month": month,
            "daysOfWeek": [day_of_week.graph()], "index": index.graph(),
        }),
    }
}

/// `patternedRecurrence` with the Windows `recurrenceTimeZone` `zone`.
pub fn patterned(rec: &Recurrence, zone: &str) -> Value {
    let d = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let range = match rec.range {
        Range::NoEnd { start } => {
            json!({"type": "noEnd", "startDate": d(start), "recurrenceTimeZone": zone})
        }
        Range::EndDate { start, end } => {
            json!({"type": "endDate", "startDate": d(start), "endDate": d(end), "recurrenceTimeZone": zone})
        }
        Range::Numbered { start, count } => {
            json!({"type": "numbered", "startDate": d(start), "numberOfOccurrences": count, "recurrenceTimeZone": zone})
        }
    };
    json!({"pattern": pattern(&rec.pattern), "range": range})
}

/// The recurrence of a master, or why it has none.
pub fn recurrence_of(ev: &CanonicalEvent) -> Result<Recurrence, Unsupported> {
    recurrence::from_event(ev)
}

/// The event JSON (without tags) of `ev` shown through `o.privacy`.
pub fn event_json(ev: &CanonicalEvent, shape: Shape<'_>, o: &Options<'_>) -> Value {
    let shown = bridge_core::privacy::project(ev, o.privacy);
    let ev = shown.as_ref();
    let mut r = Map::new();
    r.insert("subject".into(), json!(ev.summary));
    r.insert(
        "body".into(),
        json!({"contentType": "text", "content": body_text(ev)}),
    );
    match (&ev.start, &ev.end, shape) {
        // Dates are zone-free: midnight to midnight in one zone (a series
        // expands in the zone its midnight is written in).
        (EventTime::Date(s), EventTime::Date(e), _) => {
            let z = day_zone(o);
            r.insert("isAllDay".into(), json!(true));
            r.insert("start".into(), date_time(*s, z));
            r.insert(
                "end".into(),
                date_time((*e).max(s.succ_opt().unwrap_or(*s)), z),
            );
        }
        (start, end, Shape::Master(rec)) => {
            r.insert("isAllDay".into(), json!(false));
            r.insert("start".into(), wall(start, rec.zone));
            r.insert("end".into(), exact_end(start, end, rec.zone));
        }
        (start, end, _) => {
            r.insert("isAllDay".into(), json!(false));
            r.insert("start".into(), exact_time(start));
            r.insert("end".into(), exact_time(end));
        }
    }
    if let Shape::Master(rec) = shape {
        let zone = match &ev.start {
            EventTime::Date(_) => day_zone(o),
            _ => windows_zone(rec.zone),
        };
        r.insert("recurrence".into(), patterned(rec, zone));
    }
    let show_as = if ev.transparent {
        "free"
    } else if ev.status == Some(Status::Tentative) {
        "tentative"
    } else {
        "busy"
    };
    r.insert("showAs".into(), json!(show_as));
    r.insert(
        "sensitivity".into(),
        json!(if ev.class == Some(Class::Private) {
            "private"
        } else {
            "normal"
        }),
    );
    r.insert(
        "location".into(),
        json!({"displayName": ev.location.clone().unwrap_or_default()}),
    );
    match ev.alarms.iter().copied().filter(|m| *m >= 0).min() {
        Some(m) => {
            r.insert("isReminderOn".into(), json!(true));
            r.insert(
                "reminderMinutesBeforeStart".into(),
                json!(m.min(i64::from(i32::MAX))),
            );
        }
        None => {
            r.insert("isReminderOn".into(), json!(false));
        }
    }
    // A mirror asks for no responses and sends no invitations.
    r.insert("responseRequested".into(), json!(false));
    r.insert("allowNewTimeProposals".into(), json!(false));
    Value::Object(r)
}

/// A master's end: the wall clock in the series zone when the offset at the
/// end equals the one at the start, else UTC (the exact length either way).
fn exact_end(start: &EventTime, end: &EventTime, tz: Tz) -> Value {
    let e = instant::series_end(
        start,
        EventTime::Zoned {
            at: end.instant(),
            tz,
        },
    );
    match e {
        EventTime::Zoned { at, tz } => wall(&EventTime::Zoned { at, tz }, tz),
        other => utc(other.instant()),
    }
}

/// The hash of a body as written (the tag that lets adoption tell whether
/// an event found by its key already has this content).
pub fn body_hash(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    hex::encode(&digest[..12])
}

/// `body` with our three tags (key, content hash, source calendar).
pub fn tagged(mut body: Value, key: &str, source_calendar: &str) -> Value {
    let hash = body_hash(&body);
    let [k, h, c] = tag_ids();
    body["singleValueExtendedProperties"] = json!([
        {"id": k, "value": key},
        {"id": h, "value": hash},
        {"id": c, "value": source_calendar},
    ]);
    body
}

/// Our tag values on a read-back event: `(key, hash, calendar)`.
pub fn tags_of(v: &Value) -> (Option<String>, Option<String>, Option<String>) {
    let [k, h, c] = tag_ids();
    let get = |id: &str| {
        v["singleValueExtendedProperties"]
            .as_array()?
            .iter()
            .find(|p| p["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id)))
            .and_then(|p| p["value"].as_str())
            .map(str::to_owned)
    };
    (get(&k), get(&h), get(&c))
}

/// `transactionId` of the create of `key` of `source_calendar` in the Graph
/// calendar `target_calendar` as `series` (the master's rule and start;
/// empty for singles): the same for every retry of one create, different
/// for a new series after a rule change and for another target calendar
/// (Graph remembers transactionIds per mailbox, graph.md §4).
pub fn transaction_id(
    sink_id: &str,
    target_calendar: &str,
    source_calendar: &str,
    key: &str,
    series: &str,
) -> String {
    let d = Sha256::digest(
        format!("{sink_id}\u{1f}{target_calendar}\u{1f}{source_calendar}\u{1f}{key}\u{1f}{series}")
            .as_bytes(),
    );
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::EventKey;
    use bridge_core::model::Conference;

    const SH: Tz = chrono_tz::Asia::Shanghai;
    const NY: Tz = chrono_tz::America::New_York;

    fn ev(start: EventTime, end: EventTime) -> CanonicalEvent {
        CanonicalEvent {
            key: EventKey::new("u1", 0).unwrap(),
            start,
            end,
            rrule: None,
            rrule_bound: None,
            summary: "Standup".into(),
            description: "notes".into(),
            location: Some("Room 1".into()),
            geo: None,
            url: None,
            conference: None,
            status: None,
            class: None,
            transparent: false,
            alarms: vec![15],
            organizer: None,
            attendees: Vec::new(),
            created: None,
        }
    }

    fn opts() -> Options<'static> {
        Options {
            privacy: Privacy::Full,
            source_calendar: "cal1",
            calendar_zone: Some(SH),
        }
    }

    #[test]
    fn singles_take_windows_zones_or_utc_when_ambiguous() {
        // 2026-03-10 09:00 Shanghai.
        let at = 1_773_104_400;
        let e = ev(
            EventTime::Zoned { at, tz: SH },
            EventTime::Zoned {
                at: at + 1800,
                tz: SH,
            },
        );
        let v = event_json(&e, Shape::Single, &opts());
        assert_eq!(
            v["start"],
            json!({"dateTime": "2026-03-10T09:00:00", "timeZone": "China Standard Time"})
        );
        assert_eq!(v["end"]["dateTime"], "2026-03-10T09:30:00");
        assert_eq!(v["showAs"], "busy");
        assert_eq!(v["reminderMinutesBeforeStart"], 15);
        assert!(v.get("attendees").is_none() && v.get("isOnlineMeeting").is_none());
        // 2026-11-01 01:30 EST (the second 01:30 in New York): UTC.
        let second = 1_793_514_600;
        let e = ev(
            EventTime::Zoned { at: second, tz: NY },
            EventTime::Zoned {
                at: second + 1800,
                tz: NY,
            },
        );
        let v = event_json(&e, Shape::Single, &opts());
        assert_eq!(
            v["start"],
            json!({"dateTime": "2026-11-01T06:30:00", "timeZone": "UTC"})
        );
    }

    #[test]
    fn all_day_runs_midnight_to_midnight_in_one_zone() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
        let e = ev(EventTime::Date(d), EventTime::Date(d.succ_opt().unwrap()));
        let v = event_json(&e, Shape::Single, &opts());
        assert_eq!(v["isAllDay"], true);
        assert_eq!(
            v["start"],
            json!({"dateTime": "2026-05-01T00:00:00", "timeZone": "China Standard Time"})
        );
        assert_eq!(
            v["end"],
            json!({"dateTime": "2026-05-02T00:00:00", "timeZone": "China Standard Time"})
        );
    }

    #[test]
    fn masters_carry_a_windows_recurrence_zone_and_links_go_in_the_body() {
        let at = 1_773_104_400; // Tuesday 2026-03-10 09:00 Shanghai
        let mut e = ev(
            EventTime::Zoned { at, tz: SH },
            EventTime::Zoned {
                at: at + 3600,
                tz: SH,
            },
        );
        e.rrule = Some("FREQ=WEEKLY;BYDAY=TU;COUNT=5".into());
        e.conference = Some(Conference {
            uri: "https://vc.feishu.cn/j/1".into(),
            label: "Feishu VC".into(),
        });
        let rec = recurrence_of(&e).unwrap();
        let v = event_json(&e, Shape::Master(&rec), &opts());
        assert_eq!(
            v["recurrence"]["pattern"],
            json!({"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"], "firstDayOfWeek": "monday"})
        );
        assert_eq!(
            v["recurrence"]["range"],
            json!({"type": "numbered", "startDate": "2026-03-10", "numberOfOccurrences": 5, "recurrenceTimeZone": "China Standard Time"})
        );
        assert_eq!(v["start"]["timeZone"], "China Standard Time");
        assert!(
            v["body"]["content"]
                .as_str()
                .unwrap()
                .contains("Feishu VC: https://vc.feishu.cn/j/1")
        );
        let t = tagged(v, "u1_0", "cal1");
        assert_eq!(tags_of(&t).0.as_deref(), Some("u1_0"));
        assert_eq!(tags_of(&t).2.as_deref(), Some("cal1"));
    }

    #[test]
    fn transaction_ids_are_stable_and_series_specific() {
        let a = transaction_id("graph:w", "t", "c", "u_0", "");
        assert_eq!(a, transaction_id("graph:w", "t", "c", "u_0", ""));
        assert_ne!(a, transaction_id("graph:w", "t", "c", "u_0", "FREQ=DAILY"));
        assert_ne!(a, transaction_id("graph:w", "t2", "c", "u_0", ""));
        assert_eq!(a.len(), 36);
    }
}
