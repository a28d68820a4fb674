//! Feishu event -> canonical item. Pure: no I/O, no clock.

use chrono::{Datelike, Duration, NaiveDate};
use chrono_tz::Tz;

use crate::feishu::{
    self, AttendeeType, EventStatus, FreeBusyStatus, RsvpStatus, TimeInfo, VcType, Visibility,
};
use crate::instant;
use crate::key::EventKey;
use crate::model::{
    CanonicalEvent, Class, Conference, CuType, EventTime, Item, PartStat, Party, Role, Status,
};
use crate::recur;

/// Something the mapping could not represent exactly; the rest was produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The Feishu `event_id` concerned, when known.
    pub event_id: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.event_id {
            Some(id) => write!(f, "event {id}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why one event could not be mapped at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event_id}: {reason}")]
pub struct MapError {
    pub event_id: String,
    pub reason: String,
}

/// Domain of the non-deliverable addresses given to Feishu users, chats and
/// rooms, which have no e-mail address (`.invalid` is reserved by RFC 2606).
pub const ADDRESS_DOMAIN: &str = "feishu.invalid";

const MAX_REMINDER_MINUTES: i64 = 20_160;

struct Ctx<'a> {
    event_id: &'a str,
    warnings: &'a mut Vec<Warning>,
}

impl Ctx<'_> {
    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(Warning {
            event_id: Some(self.event_id.to_owned()),
            message: message.into(),
        });
    }

    fn fail(&self, reason: impl Into<String>) -> MapError {
        MapError {
            event_id: self.event_id.to_owned(),
            reason: reason.into(),
        }
    }
}

fn is_utc_name(name: &str) -> bool {
    matches!(
        name,
        "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Z" | "Etc/Universal" | "Universal" | "Etc/Zulu"
    )
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn map_time(ti: Option<&TimeInfo>, which: &str, cx: &mut Ctx<'_>) -> Result<EventTime, MapError> {
    let ti = ti.ok_or_else(|| cx.fail(format!("{which} is missing")))?;
    if let Some(date) = non_empty(&ti.date) {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| cx.fail(format!("{which}.date {date:?} is not a YYYY-MM-DD date")))?;
        // iCalendar years have four digits; chrono's signed years of up to six
        // digits would also overflow the exclusive end date.
        if !(1..=9999).contains(&d.year()) {
            return Err(cx.fail(format!("{which}.date {date:?} is out of range")));
        }
        return Ok(EventTime::Date(d));
    }
    let at = ti
        .timestamp
        .ok_or_else(|| cx.fail(format!("{which} has neither date nor timestamp")))?
        .0;
    if chrono::DateTime::from_timestamp(at, 0).is_none() || at < 0 {
        return Err(cx.fail(format!("{which}.timestamp {at} is out of range")));
    }
    match non_empty(&ti.timezone) {
        None => Ok(EventTime::Utc(at)),
        Some(name) if is_utc_name(name) => Ok(EventTime::Utc(at)),
        Some(name) => match name.parse::<Tz>() {
            Ok(tz) => Ok(EventTime::Zoned { at, tz }),
            Err(_) => {
                cx.warn(format!(
                    "{which}.timezone {name:?} is not an IANA zone; written in UTC"
                ));
                Ok(EventTime::Utc(at))
            }
        },
    }
}

fn is_uri(s: &str) -> bool {
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '"';
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() > 8
        && if s.is_ascii() {
            // The same test on bytes (ASCII whitespace and controls are
            // 0x00-0x20 and 0x7F): every link Feishu sends is ASCII, and the
            // char scan costs about ten times as much.
            !s.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'"')
        } else {
            !s.chars().any(bad)
        }
}

/// `local@<kind>.feishu.invalid`, with anything outside `[A-Za-z0-9._-]` percent-encoded.
/// The cal-address of a Feishu user (open id), as attendees are mapped.
pub fn feishu_user_address(open_id: &str) -> String {
    feishu_address("user", open_id)
}

fn feishu_address(kind: &str, id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Pushed piece by piece rather than through `format!`: this runs for
    // every attendee of every event mapped.
    let mut out = String::with_capacity(
        "mailto:".len() + 3 * id.len() + 2 + kind.len() + ADDRESS_DOMAIN.len(),
    );
    out.push_str("mailto:");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out.push('@');
    out.push_str(kind);
    out.push('.');
    out.push_str(ADDRESS_DOMAIN);
    out
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>\"(),;:".contains(c))
        }
        None => false,
    }
}

fn map_attendee(a: &feishu::Attendee, cx: &mut Ctx<'_>) -> Option<Party> {
    let partstat = match &a.rsvp_status {
        Some(RsvpStatus::Removed) => return None,
        None | Some(RsvpStatus::NeedsAction) => PartStat::NeedsAction,
        Some(RsvpStatus::Accept) => PartStat::Accepted,
        Some(RsvpStatus::Tentative) => PartStat::Tentative,
        Some(RsvpStatus::Decline) => PartStat::Declined,
        Some(RsvpStatus::Other(s)) => {
            cx.warn(format!(
                "attendee rsvp_status {s:?} unknown; written as NEEDS-ACTION"
            ));
            PartStat::NeedsAction
        }
    };
    let name = non_empty(&a.display_name).map(str::to_owned);
    let fallback = non_empty(&a.attendee_id);
    let (cutype, address) = match &a.kind {
        Some(AttendeeType::User) => (
            CuType::Individual,
            non_empty(&a.user_id)
                .or(fallback)
                .map(|id| feishu_address("user", id)),
        ),
        Some(AttendeeType::Chat) => (
            CuType::Group,
            non_empty(&a.chat_id)
                .or(fallback)
                .map(|id| feishu_address("chat", id)),
        ),
        Some(AttendeeType::Resource) => (
            CuType::Room,
            non_empty(&a.room_id)
                .or(fallback)
                .map(|id| feishu_address("room", id)),
        ),
        Some(AttendeeType::ThirdParty) => {
            let addr = match non_empty(&a.third_party_email) {
                Some(email) if is_email(email) => Some(format!("mailto:{email}")),
                Some(email) => {
                    cx.warn(format!(
                        "third-party attendee e-mail {email:?} is not an address"
                    ));
                    fallback.map(|id| feishu_address("external", id))
                }
                None => fallback.map(|id| feishu_address("external", id)),
            };
            (CuType::Individual, addr)
        }
        Some(AttendeeType::Other(kind)) => {
            cx.warn(format!(
                "attendee type {kind:?} unknown; written as CUTYPE=UNKNOWN"
            ));
            (
                CuType::Unknown,
                fallback.map(|id| feishu_address("unknown", id)),
            )
        }
        None => (
            CuType::Unknown,
            fallback.map(|id| feishu_address("unknown", id)),
        ),
    };
    let Some(address) = address else {
        cx.warn("attendee without any id or e-mail; left out");
        return None;
    };
    let name = name.or_else(|| {
        (a.kind == Some(AttendeeType::ThirdParty))
            .then(|| non_empty(&a.third_party_email).map(str::to_owned))
            .flatten()
    });
    Some(Party {
        address,
        name,
        cutype,
        partstat,
        role: if a.is_optional == Some(true) {
            Role::Optional
        } else {
            Role::Required
        },
    })
}

fn map_location(loc: &feishu::Location, cx: &mut Ctx<'_>) -> (Option<String>, Option<(f64, f64)>) {
    let name = non_empty(&loc.name);
    let address = non_empty(&loc.address);
    let text = match (name, address) {
        (Some(n), Some(a)) if n == a || n.contains(a) => Some(n.to_owned()),
        (Some(n), Some(a)) => Some(format!("{n}, {a}")),
        (Some(n), None) => Some(n.to_owned()),
        (None, Some(a)) => Some(a.to_owned()),
        (None, None) => None,
    };
    let geo = match (loc.latitude, loc.longitude) {
        (Some(lat), Some(lon)) if lat == 0.0 && lon == 0.0 => None,
        (Some(lat), Some(lon))
            if lat.is_finite()
                && lon.is_finite()
                && (-90.0..=90.0).contains(&lat)
                && (-180.0..=180.0).contains(&lon) =>
        {
            Some((lat, lon))
        }
        (Some(lat), Some(lon)) => {
            cx.warn(format!(
                "location latitude/longitude {lat}/{lon} out of range; no GEO"
            ));
            None
        }
        _ => None,
    };
    (text, geo)
}

fn map_vchat(v: &feishu::Vchat, cx: &mut Ctx<'_>) -> Option<Conference> {
    let label = match v.vc_type.as_ref()? {
        VcType::NoMeeting | VcType::Unknown => return None,
        VcType::Vc => "Feishu video meeting".to_owned(),
        VcType::LarkLive => "Lark live".to_owned(),
        VcType::ThirdParty => non_empty(&v.description)
            .unwrap_or("Video meeting")
            .to_owned(),
        VcType::Other(_) => "Video meeting".to_owned(),
    };
    let url = non_empty(&v.meeting_url)?;
    if !is_uri(url) {
        cx.warn(format!(
            "vchat meeting_url {url:?} is not an http(s) URL; left out"
        ));
        return None;
    }
    Some(Conference {
        uri: url.to_owned(),
        label,
    })
}

/// Maps one Feishu event. Warnings go to `warnings`; an error means the event
/// cannot be represented at all (the caller skips it and reports why).
pub fn map_event(ev: &feishu::Event, warnings: &mut Vec<Warning>) -> Result<Item, MapError> {
    let raw_id = non_empty(&ev.event_id).unwrap_or("");
    let mut cx = Ctx {
        event_id: if raw_id.is_empty() {
            "<missing event_id>"
        } else {
            raw_id
        },
        warnings,
    };
    let key = EventKey::parse(raw_id).map_err(|e| cx.fail(e.to_string()))?;

    match &ev.status {
        Some(EventStatus::Cancelled) => return Ok(Item::Cancelled(key)),
        Some(EventStatus::Other(s)) => cx.warn(format!("status {s:?} unknown; no STATUS written")),
        _ => {}
    }

    let start = map_time(ev.start_time.as_ref(), "start_time", &mut cx)?;
    let mut end = map_time(ev.end_time.as_ref(), "end_time", &mut cx)?;
    match (&start, &mut end) {
        (EventTime::Date(s), EventTime::Date(e)) => {
            // Feishu's all-day end date is the last day (inclusive); iCalendar's is exclusive.
            if *e < *s {
                cx.warn("all-day end_time is before start_time; written as one day");
                *e = *s;
            }
            *e += Duration::days(1);
        }
        (EventTime::Date(s), e) => {
            cx.warn("start_time is all-day but end_time is not; written as one day");
            *e = EventTime::Date(*s + Duration::days(1));
        }
        (s, e @ EventTime::Date(_)) => {
            cx.warn("start_time is timed but end_time is all-day; written as zero length");
            *e = *s;
        }
        (s, e) => {
            if e.instant() < s.instant() {
                cx.warn("end_time is before start_time; written as zero length");
                *e = match *e {
                    EventTime::Utc(_) => EventTime::Utc(s.instant()),
                    EventTime::Zoned { tz, .. } => EventTime::Zoned {
                        at: s.instant(),
                        tz,
                    },
                    EventTime::Date(d) => EventTime::Date(d),
                };
            }
        }
    }

    let (rrule, rrule_bound) = match non_empty(&ev.recurrence) {
        Some(rule) if key.is_base() => match recur::normalize(rule, &start) {
            Ok(n) => {
                for w in n.warnings {
                    cx.warn(w);
                }
                (Some(n.rule), n.bound)
            }
            Err(reason) => {
                cx.warn(format!("{reason}; written as a single event"));
                (None, None)
            }
        },
        Some(_) => {
            cx.warn("an exception carries a recurrence rule; ignored");
            (None, None)
        }
        None => (None, None),
    };

    // Exact instants (see `instant`): a time whose wall clock is repeated is
    // written in UTC, except a series' DTSTART, which must stay local so that
    // the rule expands in local time (the renderer overrides its first
    // occurrence when needed); a series' end also when the first occurrence
    // spans a transition. A single event goes to UTC as a whole.
    let (start, end) = if rrule.is_some() {
        let end = instant::series_end(&start, end);
        (start, end)
    } else if instant::exact(start) != start || instant::exact(end) != end {
        (
            EventTime::Utc(start.instant()),
            EventTime::Utc(end.instant()),
        )
    } else {
        (start, end)
    };

    let (location, geo) = ev
        .location
        .as_ref()
        .map(|l| map_location(l, &mut cx))
        .unwrap_or((None, None));
    let conference = ev.vchat.as_ref().and_then(|v| map_vchat(v, &mut cx));
    let url = match non_empty(&ev.app_link) {
        Some(link) if is_uri(link) => Some(link.to_owned()),
        Some(link) => {
            cx.warn(format!(
                "app_link {link:?} is not an http(s) URL; no URL written"
            ));
            None
        }
        None => None,
    };

    let mut alarms = Vec::new();
    for r in ev.reminders.iter().flatten() {
        match r.minutes {
            Some(m) if m.abs() <= MAX_REMINDER_MINUTES && !alarms.contains(&m) => alarms.push(m),
            Some(m) if m.abs() <= MAX_REMINDER_MINUTES => {}
            Some(m) => cx.warn(format!("reminder of {m} minutes is out of range; left out")),
            None => {}
        }
    }

    let organizer = ev.event_organizer.as_ref().and_then(|o| {
        let name = non_empty(&o.display_name).map(str::to_owned);
        let address = match non_empty(&o.user_id) {
            Some(id) => feishu_address("user", id),
            None if name.is_some() => feishu_address("user", "unknown-organizer"),
            None => return None,
        };
        Some(Party {
            address,
            name,
            cutype: CuType::Individual,
            partstat: PartStat::Accepted,
            role: Role::Required,
        })
    });
    let mut attendees: Vec<Party> = Vec::new();
    for a in ev.attendees.iter().flatten() {
        if let Some(p) = map_attendee(a, &mut cx)
            && !attendees.iter().any(|q| q.address == p.address)
        {
            attendees.push(p);
        }
    }

    Ok(Item::Event(Box::new(CanonicalEvent {
        key,
        start,
        end,
        rrule,
        rrule_bound,
        summary: non_empty(&ev.summary).unwrap_or("").to_owned(),
        description: ev.description.clone().unwrap_or_default(),
        location,
        geo,
        url,
        conference,
        status: match ev.status {
            Some(EventStatus::Tentative) => Some(Status::Tentative),
            Some(EventStatus::Confirmed) => Some(Status::Confirmed),
            _ => None,
        },
        class: match &ev.visibility {
            Some(Visibility::Public) => Some(Class::Public),
            Some(Visibility::Private) => Some(Class::Private),
            Some(Visibility::Other(v)) => {
                cx.warn(format!("visibility {v:?} unknown; no CLASS written"));
                None
            }
            _ => None,
        },
        transparent: matches!(ev.free_busy_status, Some(FreeBusyStatus::Free)),
        alarms,
        organizer,
        attendees,
        created: ev.create_time.map(|t| t.0).filter(|t| *t > 0),
    })))
}

/// The result of mapping a batch of Feishu events.
#[derive(Debug, Clone, Default)]
pub struct Mapped {
    pub items: Vec<Item>,
    pub warnings: Vec<Warning>,
    /// Events skipped entirely, with why.
    pub errors: Vec<MapError>,
}

/// Maps every event; one bad event never stops the others.
pub fn map_events<'a>(events: impl IntoIterator<Item = &'a feishu::Event>) -> Mapped {
    let mut out = Mapped::default();
    for ev in events {
        match map_event(ev, &mut out.warnings) {
            Ok(item) => out.items.push(item),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn feishu_addresses_percent_encode_every_other_byte() {
        assert_eq!(
            feishu_address("user", "ou_a1.b-c"),
            "mailto:ou_a1.b-c@user.feishu.invalid"
        );
        // UTF-8 bytes each get their own escape, upper-case hex.
        assert_eq!(
            feishu_address("room", "a b/é\u{7f}"),
            "mailto:a%20b%2F%C3%A9%7F@room.feishu.invalid"
        );
    }

    #[test]
    fn links_with_spaces_quotes_or_controls_are_not_uris() {
        assert!(is_uri("https://vc.feishu.cn/j/123"));
        assert!(!is_uri("https://"), "nothing after the scheme");
        assert!(!is_uri("ftp://example.com/x"));
        assert!(!is_uri("https://a.example/x y"));
        assert!(!is_uri("https://a.example/\"x"));
        assert!(!is_uri("https://a.example/x\u{7f}"));
        assert!(is_uri("https://例え.jp/会議"));
        assert!(!is_uri("https://例え.jp/会\u{3000}議"), "ideographic space");
        assert!(!is_uri("https://例え.jp/\u{85}"), "next line (C1 control)");
    }

    proptest! {
        /// The byte scan of ASCII links says what the char scan says.
        #[test]
        fn the_ascii_scan_agrees_with_the_char_scan(tail in "[\\x00-\\x7f]{1,40}") {
            let s = format!("https://{tail}");
            let by_char = !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"');
            prop_assert_eq!(is_uri(&s), by_char);
        }
    }
}
