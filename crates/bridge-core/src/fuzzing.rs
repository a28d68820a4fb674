//! Fuzz harnesses: one plain function per target, shared by the cargo-fuzz
//! crate (`fuzz/`, nightly) and the stable corpus replay in `tests/it`.
//!
//! Each harness takes arbitrary bytes, drives the code under test and
//! asserts its invariants; a panic is a finding. Not part of the API.

use std::collections::HashSet;

use crate::feishu::{
    self, AttendeeType, EventStatus, FreeBusyStatus, RsvpStatus, TimeInfo, UnixSeconds, VcType,
    Visibility,
};
use crate::ics::write::{self, Component, LINE_LIMIT};
use crate::key::EventKey;
use crate::map::{MapError, map_event};
use crate::model::Item;
use crate::{RenderOptions, content_hash, input, recur, render_calendar};

/// `EventKey`: parsing never panics; whatever parses displays back to an id
/// that parses to the same key; a key built from any uid and time survives
/// display and parse.
pub fn event_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = EventKey::parse(&text) {
        assert!(!key.uid().is_empty());
        assert!(key.original_time() >= 0);
        let shown = key.to_string();
        assert_eq!(EventKey::parse(&shown).as_ref(), Ok(&key), "{shown:?}");
        assert_eq!(key.master().uid(), key.uid());
        assert!(key.master().is_base());
    }
    // The first 8 bytes as a time, the rest as a uid.
    if data.len() >= 8 {
        let (t, uid) = data.split_at(8);
        let t = i64::from_le_bytes(t.try_into().expect("8 bytes"));
        let uid = String::from_utf8_lossy(uid);
        match EventKey::new(uid.as_ref(), t) {
            Ok(key) => {
                let back = EventKey::parse(&key.to_string()).expect("a built key parses back");
                assert_eq!(back.uid(), uid.as_ref());
                assert_eq!(back.original_time(), t);
            }
            Err(_) => assert!(uid.is_empty() || t < 0),
        }
    }
}

/// What [`write::escape_text`] promises to keep: line breaks become `\n`,
/// other control characters except TAB are dropped.
fn text_as_kept(s: &str) -> String {
    let normalized = s.replace("\r\n", "\n").replace('\r', "\n");
    normalized
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

fn assert_folded(folded: &str) {
    assert!(folded.ends_with("\r\n"), "no CRLF at the end");
    let body = &folded[..folded.len() - 2];
    for (i, physical) in body.split("\r\n").enumerate() {
        assert!(
            physical.len() <= LINE_LIMIT,
            "physical line of {} octets",
            physical.len()
        );
        if i > 0 {
            assert!(
                physical.starts_with(' '),
                "continuation without a space: {physical:?}"
            );
        }
    }
}

/// The ICS writer's escaping and folding: escape then unescape gives the
/// text as kept; fold gives lines of at most 75 octets, never inside a
/// character, and unfold gives the original line back; a property written
/// by the component writer reads back.
pub fn ics_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    let escaped = write::escape_text(&text);
    assert!(
        !escaped.chars().any(|c| c.is_control() && c != '\t'),
        "control character left in {escaped:?}"
    );
    assert_eq!(write::unescape_text(&escaped), text_as_kept(&text));

    let param = write::param_value(&text);
    let inner = param
        .strip_prefix('"')
        .and_then(|p| p.strip_suffix('"'))
        .unwrap_or(&param);
    assert!(!inner.contains('"'), "DQUOTE inside {param:?}");
    assert!(!inner.chars().any(char::is_control));
    if inner.len() == param.len() {
        assert!(!inner.contains([':', ';', ',']), "unquoted {param:?}");
    }

    // A logical line has no line breaks.
    let line: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    let folded = write::fold(&line);
    assert_folded(&folded);
    assert_eq!(write::unfold(&folded[..folded.len() - 2]), line);

    let mut c = Component::new("VEVENT");
    c.text("SUMMARY", &text);
    c.raw("ATTENDEE", "mailto:a@b.invalid")
        .add_parameter("CN", &text);
    let ics = c.to_ics();
    for physical in ics.split_inclusive("\r\n") {
        assert_folded(physical);
    }
    let unfolded = write::unfold(&ics);
    let mut lines = unfolded.split("\r\n");
    assert_eq!(lines.next(), Some("BEGIN:VEVENT"));
    let summary = lines.next().expect("SUMMARY line");
    let value = summary.strip_prefix("SUMMARY:").expect("SUMMARY first");
    assert_eq!(write::unescape_text(value), text_as_kept(&text));
    assert!(
        lines
            .next()
            .expect("ATTENDEE line")
            .starts_with("ATTENDEE;CN=")
    );
    assert_eq!(lines.next(), Some("END:VEVENT"));
}

/// Maps every event, renders what was mapped and checks the output's shape.
/// Mapping returns an item or a [`MapError`] per event and never panics.
fn map_and_render(events: &[feishu::Event]) {
    let mut warnings = Vec::new();
    let mut items = Vec::new();
    for ev in events {
        match map_event(ev, &mut warnings) {
            Ok(item) => {
                let id = ev.event_id.as_deref().map(str::trim).unwrap_or("");
                assert_eq!(
                    item.key().to_string(),
                    EventKey::parse(id).unwrap().to_string()
                );
                if let Item::Event(e) = &item
                    && let Some(rule) = &e.rrule
                {
                    assert!(rule.starts_with("FREQ="), "{rule}");
                    assert!(!rule.chars().any(|c| c.is_control()));
                }
                let _ = content_hash(&item);
                items.push(item);
            }
            Err(MapError { event_id, reason }) => {
                assert!(!event_id.is_empty());
                assert!(!reason.is_empty());
            }
        }
    }
    let rendered = render_calendar(&items, &RenderOptions::default());
    assert!(rendered.text.starts_with("BEGIN:VCALENDAR\r\n"));
    assert!(rendered.text.ends_with("END:VCALENDAR\r\n"));
    for physical in rendered.text.split_inclusive("\r\n") {
        assert_folded(physical);
    }
    assert!(
        !rendered.text.replace("\r\n", "").contains(['\r', '\n']),
        "bare line break in the output"
    );
}

/// The mapping from arbitrary JSON, read as `convert` reads its input.
pub fn map_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(input) = input::parse_events(text) {
        map_and_render(&input.events);
    }
}

/// A reader of fuzz bytes that never fails: past the end it yields zeros.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[usize::from(self.byte()) % choices.len()]
    }

    fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        i64::from_le_bytes(b)
    }

    fn f64(&mut self) -> f64 {
        f64::from_bits(self.i64() as u64)
    }

    /// Up to 31 raw bytes, lossily as text.
    fn raw(&mut self) -> String {
        let n = usize::from(self.byte() % 32).min(self.data.len());
        let (s, rest) = self.data.split_at(n);
        self.data = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    fn opt(&mut self, choices: &[&str]) -> Option<String> {
        match self.byte() % 8 {
            0 => None,
            1 => Some(self.raw()),
            _ => Some(self.pick(choices).to_owned()),
        }
    }

    fn timestamp(&mut self) -> i64 {
        match self.byte() % 10 {
            0 => 0,
            1 => -1,
            2 => i64::MAX,
            3 => i64::MIN,
            4 => 253_402_300_799,   // 9999-12-31T23:59:59Z
            5 => 8_210_266_876_799, // the largest second chrono represents
            6 => self.i64(),
            _ => 1_700_000_000 + i64::from(self.byte()) * 86_400 + i64::from(self.byte()) * 900,
        }
    }
}

const ZONES: &[&str] = &[
    "",
    "UTC",
    "Etc/UTC",
    "Asia/Shanghai",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Antarctica/Troll",
    "Africa/Casablanca",
    "America/Sao_Paulo",
    "Nowhere/Zone",
    " Asia/Tokyo ",
];

const DATES: &[&str] = &[
    "2024-02-29",
    "2025-01-01",
    "2025-12-31",
    "1970-01-01",
    "0000-01-01",
    "9999-12-31",
    "+262142-12-31",
    "-262143-01-01",
    "2025-02-30",
    "2025-1-5",
    "",
];

const UIDS: &[&str] = &[
    "u1",
    "u2",
    "a_b",
    "c32537e6-e0a8-4506-b42f-47440655cdb4",
    "_",
    "",
];

const FREQS: &[&str] = &[
    "DAILY",
    "WEEKLY",
    "MONTHLY",
    "YEARLY",
    "HOURLY",
    "MINUTELY",
    "SECONDLY",
    "daily",
    "SOMETIMES",
];

const UNTILS: &[&str] = &[
    "20250131",
    "20250131T235959Z",
    "20250131T090000",
    "99991231",
    "99991231T235959Z",
    "19700101T000000Z",
    "00010101",
    "20251340",
    "2025",
    "€€€€€€€€",
];

const NUMBERS: &[&str] = &[
    "1",
    "2",
    "0",
    "-1",
    "10",
    "4294967295",
    "4294967296",
    "999999999999",
    "1,2",
    "+1",
    "",
];

const DAYS: &[&str] = &[
    "MO", "TU", "we", "TH,FR", "1MO", "-1FR", "+2SA", "53SU", "XX", "M", "€", "MO,", "é",
];

fn time_info(b: &mut Bytes<'_>) -> Option<TimeInfo> {
    match b.byte() % 6 {
        0 => None,
        1 => Some(TimeInfo {
            date: b.opt(DATES),
            timestamp: None,
            timezone: None,
        }),
        2 => Some(TimeInfo {
            date: Some(b.raw()),
            timestamp: b.bool().then(|| UnixSeconds(b.timestamp())),
            timezone: b.opt(ZONES),
        }),
        _ => Some(TimeInfo {
            date: None,
            timestamp: Some(UnixSeconds(b.timestamp())),
            timezone: b.opt(ZONES),
        }),
    }
}

/// An RRULE body from a grammar of parts, with raw bytes now and then.
fn rule(b: &mut Bytes<'_>) -> String {
    let mut parts = Vec::new();
    for _ in 0..usize::from(b.byte() % 6) {
        let part = match b.byte() % 12 {
            0 => format!("FREQ={}", b.pick(FREQS)),
            1 => format!("UNTIL={}", b.pick(UNTILS)),
            2 => format!("COUNT={}", b.pick(NUMBERS)),
            3 => format!("INTERVAL={}", b.pick(NUMBERS)),
            4 => format!("BYDAY={}", b.pick(DAYS)),
            5 => format!("BYMONTHDAY={}", b.pick(NUMBERS)),
            6 => format!("BYMONTH={}", b.pick(NUMBERS)),
            7 => format!("BYSETPOS={}", b.pick(NUMBERS)),
            8 => format!("WKST={}", b.pick(DAYS)),
            9 => "X-FOO=1".to_owned(),
            10 => format!("UNTIL={}", b.raw()),
            _ => b.raw(),
        };
        parts.push(part);
    }
    let body = parts.join(";");
    match b.byte() % 4 {
        0 => format!("RRULE:{body}"),
        1 => format!(" rrule:{} ", body.to_lowercase()),
        _ => body,
    }
}

fn attendee(b: &mut Bytes<'_>) -> feishu::Attendee {
    let kinds = ["user", "chat", "resource", "third_party", "bot"];
    let rsvps = [
        "needs_action",
        "accept",
        "tentative",
        "decline",
        "removed",
        "maybe",
    ];
    let ids = ["ou_1", "oc_2", "omm_3", "a b/c", "", "..", "ou_1"];
    let emails = ["x@example.com", "not an address", "a@b", "@x.y", "<a@b.c>"];
    feishu::Attendee {
        kind: b.bool().then(|| AttendeeType::from_wire(b.pick(&kinds))),
        attendee_id: b.opt(&ids),
        rsvp_status: b.bool().then(|| RsvpStatus::from_wire(b.pick(&rsvps))),
        is_optional: b.bool().then(|| b.bool()),
        display_name: b.opt(&["Zhang, San", "李四", "say \"hi\""]),
        user_id: b.opt(&ids),
        chat_id: b.opt(&ids),
        room_id: b.opt(&ids),
        third_party_email: b.opt(&emails),
        ..feishu::Attendee::default()
    }
}

/// One Feishu event built from fuzz bytes: ids from a small pool (so that
/// masters and exceptions meet), times around the edges chrono represents,
/// rules from a grammar, and raw text everywhere text goes.
fn event(b: &mut Bytes<'_>) -> feishu::Event {
    let event_id = match b.byte() % 6 {
        0 => None,
        1 => Some(b.raw()),
        2 => Some(format!("{}_0", b.pick(UIDS))),
        _ => Some(format!("{}_{}", b.pick(UIDS), b.timestamp())),
    };
    let statuses = ["confirmed", "tentative", "cancelled", "deleted"];
    let status = b.bool().then(|| EventStatus::from_wire(b.pick(&statuses)));
    let start_time = time_info(b);
    let end_time = if b.byte().is_multiple_of(4) {
        start_time.clone()
    } else {
        time_info(b)
    };
    let recurrence = match b.byte() % 4 {
        0 => None,
        1 => Some(b.raw()),
        _ => Some(rule(b)),
    };
    let location = b.bool().then(|| feishu::Location {
        name: b.opt(&["Room 1", "Beijing, China"]),
        address: b.opt(&["Beijing, China", "China"]),
        latitude: b.bool().then(|| b.f64()),
        longitude: b.bool().then(|| b.f64()),
    });
    let vc_types = [
        "vc",
        "third_party",
        "no_meeting",
        "lark_live",
        "unknown",
        "zoom",
    ];
    let vchat = b.bool().then(|| feishu::Vchat {
        vc_type: b.bool().then(|| VcType::from_wire(b.pick(&vc_types))),
        description: b.opt(&["Zoom", ""]),
        meeting_url: b.opt(&[
            "https://vc.feishu.cn/j/1",
            "http://x",
            "javascript:alert(1)",
            "https://a b",
        ]),
        ..feishu::Vchat::default()
    });
    let reminders = b.bool().then(|| {
        (0..b.byte() % 4)
            .map(|_| feishu::Reminder {
                minutes: b.bool().then(|| match b.byte() % 4 {
                    0 => b.i64(),
                    1 => -15,
                    2 => 20_160,
                    _ => 15,
                }),
            })
            .collect()
    });
    let attendees = b
        .bool()
        .then(|| (0..b.byte() % 4).map(|_| attendee(b)).collect());
    let organizer = b.bool().then(|| feishu::EventOrganizer {
        user_id: b.opt(&["ou_org", "a@b"]),
        display_name: b.opt(&["Organizer"]),
    });
    feishu::Event {
        event_id,
        summary: b.opt(&["Weekly sync", "会议;,\\", ""]),
        description: b.opt(&["line 1\nline 2", "\r\n\u{7}"]),
        start_time,
        end_time,
        vchat,
        visibility: b
            .bool()
            .then(|| Visibility::from_wire(b.pick(&["default", "public", "private", "secret"]))),
        free_busy_status: b
            .bool()
            .then(|| FreeBusyStatus::from_wire(b.pick(&["busy", "free", "away"]))),
        location,
        reminders,
        recurrence,
        status,
        create_time: b.bool().then(|| UnixSeconds(b.timestamp())),
        event_organizer: organizer,
        app_link: b.opt(&["https://applink.feishu.cn/x", "feishu://x"]),
        attendees,
        ..feishu::Event::default()
    }
}

/// The mapping from structured arbitrary events (a few per input, sharing
/// uids), plus every rule normalized on its own against every start.
pub fn map_structured(data: &[u8]) {
    let mut b = Bytes { data };
    let n = 1 + usize::from(b.byte() % 4);
    let events: Vec<feishu::Event> = (0..n).map(|_| event(&mut b)).collect();
    let mut seen = HashSet::new();
    for ev in &events {
        let Some(rule) = ev.recurrence.as_deref() else {
            continue;
        };
        if !seen.insert(rule) {
            continue;
        }
        let mut warnings = Vec::new();
        let probe = feishu::Event {
            event_id: Some("probe_0".to_owned()),
            recurrence: None,
            ..ev.clone()
        };
        if let Ok(Item::Event(e)) = map_event(&probe, &mut warnings)
            && let Ok(n) = recur::normalize(rule, &e.start)
        {
            assert!(n.rule.starts_with("FREQ="), "{}", n.rule);
            // A normalized rule is a fixed point.
            let again = recur::normalize(&n.rule, &e.start).expect("a normalized rule normalizes");
            assert_eq!(again.rule, n.rule);
        }
    }
    map_and_render(&events);
}
