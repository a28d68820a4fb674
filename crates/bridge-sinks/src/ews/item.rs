//! A canonical event as a `t:CalendarItem`: the children in the schema's
//! order (`types.xsd` ItemType then CalendarItemType), as one element for
//! CreateItem or as one `t:SetItemField` per property for UpdateItem, and
//! the hash of what was written (kept in an extended property).
//!
//! Times are exact instants written in UTC, with the Windows id of the
//! event's zone as `StartTimeZone` / `EndTimeZone` (the display zone, and
//! the zone a series' pattern expands in). All-day items run from midnight
//! to midnight in the calendar's zone.

use std::fmt::Write as _;

use bridge_core::{CanonicalEvent, EventTime, key::EventKey};
use chrono::{DateTime, NaiveDate, TimeZone as _};
use chrono_tz::Tz;
use sha2::{Digest as _, Sha256};

use super::xml::{clean, esc};
use crate::microsoft::recurrence::{Pattern, Range, Recurrence};
use crate::microsoft::{tag, zones};

/// The property holding the source calendar id (scopes drift and adoption
/// to one source calendar when several share a mailbox).
pub const CALENDAR_PROPERTY: &str = "FeishuBridgeCalendar";

/// `<t:ExtendedFieldURI …/>` of one of our string properties.
pub fn prop_uri(name: &str) -> String {
    format!(
        "<t:ExtendedFieldURI PropertySetId=\"{}\" PropertyName=\"{name}\" PropertyType=\"String\"/>",
        tag::PUBLIC_STRINGS
    )
}

/// What kind of item is written.
#[derive(Debug, Clone, Copy)]
pub enum Shape<'a> {
    /// A single item (a single event, an orphan, a fallback occurrence).
    Single,
    /// A recurring master with its pattern.
    Master(&'a Recurrence),
    /// A modified occurrence (no UID, no recurrence).
    Occurrence,
}

/// One property: its path (for UpdateItem) and element.
#[derive(Debug, Clone)]
struct Prop {
    path: String,
    xml: String,
}

/// An item ready to write.
#[derive(Debug, Clone)]
pub struct Written {
    props: Vec<Prop>,
    /// The applied content hash (`FeishuBridgeHash`).
    pub hash: String,
    /// Start, End, zones and pattern: what a master's occurrences depend on.
    pub signature: String,
    /// The instants written as Start and End.
    pub start: i64,
    pub end: i64,
}

fn time(at: i64) -> String {
    DateTime::from_timestamp(at, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn midnight(d: NaiveDate, tz: Tz) -> i64 {
    let local = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&local)
        .earliest()
        .map_or_else(|| local.and_utc().timestamp(), |t| t.timestamp())
}

/// The Windows zone id of an IANA zone (`UTC` for UTC and unknown zones).
pub fn windows(tz: Tz) -> &'static str {
    if tz == Tz::UTC {
        return "UTC";
    }
    zones::windows_zone(tz.name()).unwrap_or("UTC")
}

/// Start and end instants, the zone and the all-day flag of an event;
/// all-day dates are placed at midnight in `all_day_zone`.
pub fn instants(ev: &CanonicalEvent, all_day_zone: Tz) -> (i64, i64, Tz, bool) {
    match (ev.start, ev.end) {
        (EventTime::Date(s), EventTime::Date(e)) => (
            midnight(s, all_day_zone),
            midnight(e, all_day_zone),
            all_day_zone,
            true,
        ),
        (s, e) => (s.instant(), e.instant(), s.tz().unwrap_or(Tz::UTC), false),
    }
}

fn leaf(name: &str, text: &str) -> String {
    format!("<t:{name}>{}</t:{name}>", esc(&clean(text)))
}

fn recurrence_xml(r: &Recurrence) -> String {
    let mut o = String::from("<t:Recurrence>");
    let _ = match &r.pattern {
        Pattern::Daily { interval } => write!(
            o,
            "<t:DailyRecurrence><t:Interval>{interval}</t:Interval></t:DailyRecurrence>"
        ),
        Pattern::Weekly {
            interval,
            days,
            first_day_of_week,
        } => write!(
            o,
            "<t:WeeklyRecurrence><t:Interval>{interval}</t:Interval><t:DaysOfWeek>{}</t:DaysOfWeek><t:FirstDayOfWeek>{}</t:FirstDayOfWeek></t:WeeklyRecurrence>",
            days.iter().map(|d| d.ews()).collect::<Vec<_>>().join(" "),
            first_day_of_week.ews()
        ),
        Pattern::AbsoluteMonthly {
            interval,
            day_of_month,
        } => write!(
            o,
            "<t:AbsoluteMonthlyRecurrence><t:Interval>{interval}</t:Interval><t:DayOfMonth>{day_of_month}</t:DayOfMonth></t:AbsoluteMonthlyRecurrence>"
        ),
        Pattern::RelativeMonthly {
            interval,
            day_of_week,
            index,
        } => write!(
            o,
            "<t:RelativeMonthlyRecurrence><t:Interval>{interval}</t:Interval><t:DaysOfWeek>{}</t:DaysOfWeek><t:DayOfWeekIndex>{}</t:DayOfWeekIndex></t:RelativeMonthlyRecurrence>",
            day_of_week.ews(),
            index.ews()
        ),
        Pattern::AbsoluteYearly {
            month,
            day_of_month,
        } => write!(
            o,
            "<t:AbsoluteYearlyRecurrence><t:DayOfMonth>{day_of_month}</t:DayOfMonth><t:Month>{}</t:Month></t:AbsoluteYearlyRecurrence>",
            month_name(*month)
        ),
        Pattern::RelativeYearly {
            month,
            day_of_week,
            index,
        } => write!(
            o,
            "<t:RelativeYearlyRecurrence><t:DaysOfWeek>{}</t:DaysOfWeek><t:DayOfWeekIndex>{}</t:DayOfWeekIndex><t:Month>{}</t:Month></t:RelativeYearlyRecurrence>",
            day_of_week.ews(),
            index.ews(),
            month_name(*month)
        ),
    };
    let _ = match r.range {
        Range::NoEnd { start } => write!(
            o,
            "<t:NoEndRecurrence><t:StartDate>{start}</t:StartDate></t:NoEndRecurrence>"
        ),
        Range::EndDate { start, end } => write!(
            o,
            "<t:EndDateRecurrence><t:StartDate>{start}</t:StartDate><t:EndDate>{end}</t:EndDate></t:EndDateRecurrence>"
        ),
        Range::Numbered { start, count } => write!(
            o,
            "<t:NumberedRecurrence><t:StartDate>{start}</t:StartDate><t:NumberOfOccurrences>{count}</t:NumberOfOccurrences></t:NumberedRecurrence>"
        ),
    };
    o.push_str("</t:Recurrence>");
    o
}

fn month_name(m: u32) -> &'static str {
    const M: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    M[(m.clamp(1, 12) - 1) as usize]
}

/// The text body: the description, the meeting link and the Feishu link.
pub fn body(ev: &CanonicalEvent) -> String {
    let mut parts = Vec::new();
    let d = ev.description.trim_end();
    if !d.is_empty() {
        parts.push(d.to_owned());
    }
    if let Some(c) = &ev.conference {
        parts.push(format!("{}: {}", c.label, c.uri));
    }
    if let Some(u) = &ev.url {
        parts.push(format!("Feishu: {u}"));
    }
    parts.join("\n\n")
}

/// The item of `ev` as `shape`, tagged with `key` and `calendar`.
/// `all_day_zone` places all-day dates; `uid` is written unless an
/// occurrence.
pub fn item(
    ev: &CanonicalEvent,
    shape: Shape<'_>,
    key: &EventKey,
    uid: &str,
    calendar: &str,
    all_day_zone: Tz,
) -> Written {
    let (start, end, zone, all_day) = instants(ev, all_day_zone);
    let end_zone = match ev.end {
        EventTime::Zoned { tz, .. } => tz,
        _ => zone,
    };
    let mut props = Vec::new();
    let mut push = |path: &str, xml: String| {
        props.push(Prop {
            path: path.to_owned(),
            xml,
        })
    };
    push("item:Subject", leaf("Subject", &ev.summary));
    let sensitivity = match ev.class {
        Some(bridge_core::model::Class::Private) => "Private",
        _ => "Normal",
    };
    push("item:Sensitivity", leaf("Sensitivity", sensitivity));
    push(
        "item:Body",
        format!(
            "<t:Body BodyType=\"Text\">{}</t:Body>",
            esc(&clean(&body(ev)))
        ),
    );
    // One reminder in EWS: the earliest one before the start (Feishu's
    // negative minutes are after the start, which EWS cannot express).
    let reminder = ev.alarms.iter().copied().filter(|m| *m >= 0).max();
    push(
        "item:ReminderIsSet",
        leaf(
            "ReminderIsSet",
            if reminder.is_some() { "true" } else { "false" },
        ),
    );
    if let Some(m) = reminder {
        push(
            "item:ReminderMinutesBeforeStart",
            leaf("ReminderMinutesBeforeStart", &m.min(2_629_800).to_string()),
        );
    }
    let ext = |name: &str, value: &str| {
        format!(
            "<t:ExtendedProperty>{}<t:Value>{}</t:Value></t:ExtendedProperty>",
            prop_uri(name),
            esc(&clean(value))
        )
    };
    push(tag::KEY_PROPERTY, ext(tag::KEY_PROPERTY, &key.to_string()));
    // After Subject, Sensitivity, Body, ReminderIsSet, the minutes and the key.
    let hash_at = 5 + usize::from(reminder.is_some());
    push(CALENDAR_PROPERTY, ext(CALENDAR_PROPERTY, calendar));
    if !matches!(shape, Shape::Occurrence) {
        push("calendar:UID", leaf("UID", uid));
    }
    let mut sig = String::new();
    let start_xml = leaf("Start", &time(start));
    let end_xml = leaf("End", &time(end));
    sig.push_str(&start_xml);
    sig.push_str(&end_xml);
    push("calendar:Start", start_xml);
    push("calendar:End", end_xml);
    push(
        "calendar:IsAllDayEvent",
        leaf("IsAllDayEvent", if all_day { "true" } else { "false" }),
    );
    let free_busy = if ev.transparent {
        "Free"
    } else if ev.status == Some(bridge_core::model::Status::Tentative) {
        "Tentative"
    } else {
        "Busy"
    };
    push(
        "calendar:LegacyFreeBusyStatus",
        leaf("LegacyFreeBusyStatus", free_busy),
    );
    push(
        "calendar:Location",
        leaf("Location", ev.location.as_deref().unwrap_or_default()),
    );
    if let Shape::Master(r) = shape {
        let x = recurrence_xml(r);
        sig.push_str(&x);
        push("calendar:Recurrence", x);
    }
    let stz = format!("<t:StartTimeZone Id=\"{}\"/>", windows(zone));
    sig.push_str(&stz);
    push("calendar:StartTimeZone", stz);
    push(
        "calendar:EndTimeZone",
        format!("<t:EndTimeZone Id=\"{}\"/>", windows(end_zone)),
    );
    let mut h = Sha256::new();
    for p in &props {
        h.update(p.xml.as_bytes());
    }
    let hash = format!("ews1:{}", hex::encode(&h.finalize()[..16]));
    props.insert(
        hash_at,
        Prop {
            path: tag::HASH_PROPERTY.to_owned(),
            xml: ext(tag::HASH_PROPERTY, &hash),
        },
    );
    let signature = hex::encode(&Sha256::digest(sig.as_bytes())[..8]);
    Written {
        props,
        hash,
        signature,
        start,
        end,
    }
}

impl Written {
    /// Whether `text`, read back as element `t:<name>` of property `path`
    /// (`item:Subject`, `calendar:Location`), differs from what is written
    /// (an absent element reads as empty).
    pub fn differs(&self, path: &str, name: &str, text: Option<&str>) -> bool {
        let got = leaf(name, text.unwrap_or_default());
        self.props
            .iter()
            .find(|p| p.path == path)
            .map_or(text.is_some_and(|t| !t.is_empty()), |p| p.xml != got)
    }

    /// `<t:CalendarItem>…</t:CalendarItem>` for CreateItem.
    pub fn create_xml(&self) -> String {
        let mut o = String::from("<t:CalendarItem>");
        for p in &self.props {
            o.push_str(&p.xml);
        }
        o.push_str("</t:CalendarItem>");
        o
    }

    /// `<t:Updates>` setting every property (masters: all but the UID and
    /// the times and pattern, which only a rewrite changes).
    pub fn updates_xml(&self, keep_shape: bool) -> String {
        let mut o = String::from("<t:Updates>");
        for p in &self.props {
            if keep_shape
                && matches!(
                    p.path.as_str(),
                    "calendar:UID"
                        | "calendar:Start"
                        | "calendar:End"
                        | "calendar:Recurrence"
                        | "calendar:StartTimeZone"
                        | "calendar:EndTimeZone"
                        | "calendar:IsAllDayEvent"
                )
            {
                continue;
            }
            let path = if p.path.contains(':') {
                format!("<t:FieldURI FieldURI=\"{}\"/>", p.path)
            } else {
                prop_uri(&p.path)
            };
            let _ = write!(
                o,
                "<t:SetItemField>{path}<t:CalendarItem>{}</t:CalendarItem></t:SetItemField>",
                p.xml
            );
        }
        if !self
            .props
            .iter()
            .any(|p| p.path == "item:ReminderMinutesBeforeStart")
        {
            o.push_str("<t:DeleteItemField><t:FieldURI FieldURI=\"item:ReminderMinutesBeforeStart\"/></t:DeleteItemField>");
        }
        o.push_str("</t:Updates>");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> CanonicalEvent {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        CanonicalEvent {
            key: EventKey::new("u1", 0).unwrap(),
            start: EventTime::Zoned {
                at: 1_780_000_000,
                tz,
            },
            end: EventTime::Zoned {
                at: 1_780_003_600,
                tz,
            },
            rrule: None,
            rrule_bound: None,
            summary: "Plan <a> & b".into(),
            description: "Agenda".into(),
            location: Some("Room 1".into()),
            geo: None,
            url: Some("https://applink.feishu.cn/x".into()),
            conference: Some(bridge_core::model::Conference {
                uri: "https://vc.feishu.cn/j/1".into(),
                label: "Feishu VC".into(),
            }),
            status: None,
            class: Some(bridge_core::model::Class::Private),
            transparent: false,
            alarms: vec![15, -5],
            organizer: None,
            attendees: Vec::new(),
            created: None,
        }
    }

    #[test]
    fn children_in_schema_order_with_links_and_tags() {
        let e = ev();
        let w = item(&e, Shape::Single, &e.key, "u1", "cal", Tz::UTC);
        let x = w.create_xml();
        let order = [
            "<t:Subject>",
            "<t:Sensitivity>Private",
            "<t:Body",
            "<t:ReminderIsSet>true",
            "<t:ReminderMinutesBeforeStart>15",
            "FeishuBridgeKey",
            "FeishuBridgeHash",
            "FeishuBridgeCalendar",
            "<t:UID>u1",
            "<t:Start>2026-05-28T20:26:40Z",
            "<t:End>",
            "<t:IsAllDayEvent>false",
            "<t:LegacyFreeBusyStatus>Busy",
            "<t:Location>Room 1",
            "<t:StartTimeZone Id=\"China Standard Time\"",
            "<t:EndTimeZone",
        ];
        let pos: Vec<usize> = order
            .iter()
            .map(|s| x.find(s).unwrap_or_else(|| panic!("{s} in {x}")))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{x}");
        assert!(x.contains("Plan &lt;a&gt; &amp; b"));
        assert!(x.contains("Agenda\n\nFeishu VC: https://vc.feishu.cn/j/1\n\nFeishu: https://applink.feishu.cn/x"), "{x}");
        // The hash covers content, not itself; the same event gives the same hash.
        assert_eq!(
            item(&e, Shape::Single, &e.key, "u1", "cal", Tz::UTC).hash,
            w.hash
        );
        let mut e2 = e.clone();
        e2.summary = "other".into();
        assert_ne!(
            item(&e2, Shape::Single, &e2.key, "u1", "cal", Tz::UTC).hash,
            w.hash
        );
        let u = w.updates_xml(true);
        assert!(!u.contains("calendar:Start") && u.contains("item:Subject"));
    }

    #[test]
    fn all_day_is_midnight_to_midnight_in_the_zone() {
        let mut e = ev();
        e.start = EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        e.end = EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap());
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let x = item(&e, Shape::Single, &e.key, "u1", "cal", tz).create_xml();
        assert!(x.contains("<t:Start>2026-02-28T16:00:00Z</t:Start><t:End>2026-03-01T16:00:00Z</t:End><t:IsAllDayEvent>true"), "{x}");
    }
}
