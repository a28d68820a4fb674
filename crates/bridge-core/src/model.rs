//! The canonical event: one Feishu event turned into iCalendar terms, before
//! any privacy profile or grouping into VEVENTs. It is what the content hash
//! covers and what every sink renders from.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::key::EventKey;

/// A start, end, recurrence id or exception date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTime {
    /// An all-day date (`VALUE=DATE`).
    Date(NaiveDate),
    /// An instant written in UTC (`...Z`).
    Utc(i64),
    /// An instant written as wall-clock time in an IANA zone (`TZID=`).
    ///
    /// The mapping only produces one whose wall clock is not repeated (a
    /// repeated one is [`EventTime::Utc`]), except a series' DTSTART, which
    /// stays local so that its rule expands in local time: targets that take
    /// wall-clock time plus a zone name apply [`crate::instant::fix_series`]
    /// to such a master.
    Zoned { at: i64, tz: Tz },
}

impl EventTime {
    /// The same kind of value (DATE, UTC or the same TZID) for another instant:
    /// how RECURRENCE-ID and EXDATE must be written for a master with this DTSTART.
    /// A zoned value is the wall clock of `at`. For an `at` in the second
    /// occurrence of a repeated hour, readers resolve it to the first: the
    /// instant at which they generate the rule's occurrence of that wall clock,
    /// so it still names that occurrence (see `instant`).
    ///
    /// For all-day masters the occurrence's date is the UTC date of
    /// `original_time + 12h`: Feishu stores all-day times at 00:00 UTC, and the
    /// rounding also reads a midnight in any zone between UTC-12 and UTC+12 as
    /// the intended date (the docs do not say which midnight Feishu uses).
    pub fn same_form(&self, at: i64) -> EventTime {
        match self {
            EventTime::Date(_) => EventTime::Date(utc_date(at.saturating_add(12 * 3600))),
            EventTime::Utc(_) => EventTime::Utc(at),
            EventTime::Zoned { tz, .. } => EventTime::Zoned { at, tz: *tz },
        }
    }

    /// The zone, when written with a TZID.
    pub fn tz(&self) -> Option<Tz> {
        match self {
            EventTime::Zoned { tz, .. } => Some(*tz),
            _ => None,
        }
    }

    /// Unix seconds of this value (all-day dates at 00:00 UTC).
    pub fn instant(&self) -> i64 {
        match self {
            EventTime::Date(d) => d
                .and_hms_opt(0, 0, 0)
                .map_or(0, |dt| dt.and_utc().timestamp()),
            EventTime::Utc(at) | EventTime::Zoned { at, .. } => *at,
        }
    }

    /// Wall-clock time in the value's own zone (UTC for `Utc`).
    pub fn local(&self) -> NaiveDateTime {
        match self {
            EventTime::Date(d) => d.and_hms_opt(0, 0, 0).unwrap_or_default(),
            EventTime::Utc(at) => utc_datetime(*at),
            EventTime::Zoned { at, tz } => {
                // Not `naive_local()`: it panics when the offset carries an
                // instant at the edge of chrono's range past it.
                let utc = utc_datetime(*at);
                let offset = tz.offset_from_utc_datetime(&utc).fix();
                utc.checked_add_offset(offset).unwrap_or(utc)
            }
        }
    }

    pub fn is_date(&self) -> bool {
        matches!(self, EventTime::Date(_))
    }
}

/// `YYYYMMDD` (iCalendar DATE).
pub fn ical_date(d: NaiveDate) -> String {
    let mut s = String::with_capacity(8);
    push_date(&mut s, d);
    s
}

/// `YYYYMMDDTHHMMSS` (local DATE-TIME), or with a `Z` suffix when `utc`.
pub fn ical_datetime(dt: NaiveDateTime, utc: bool) -> String {
    let mut s = String::with_capacity(16);
    push_date(&mut s, dt.date());
    s.push('T');
    push_2(&mut s, dt.hour());
    push_2(&mut s, dt.minute());
    push_2(&mut s, dt.second());
    if utc {
        s.push('Z');
    }
    s
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds.
pub fn ical_utc(at: i64) -> String {
    ical_datetime(utc_datetime(at), true)
}

fn push_date(s: &mut String, d: NaiveDate) {
    let y = d.year();
    if (0..=9999).contains(&y) {
        let y = y as u32;
        push_2(s, y / 100);
        push_2(s, y % 100);
    } else {
        s.push_str(&format!("{y:04}"));
    }
    push_2(s, d.month());
    push_2(s, d.day());
}

fn push_2(s: &mut String, n: u32) {
    s.push(char::from(b'0' + (n / 10 % 10) as u8));
    s.push(char::from(b'0' + (n % 10) as u8));
}

pub(crate) fn utc_datetime(at: i64) -> NaiveDateTime {
    DateTime::from_timestamp(at, 0)
        .unwrap_or_default()
        .naive_utc()
}

pub(crate) fn utc_date(at: i64) -> NaiveDate {
    utc_datetime(at).date()
}

/// `STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Confirmed,
    Tentative,
}

/// `CLASS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Public,
    Private,
}

/// `CUTYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CuType {
    Individual,
    Group,
    Room,
    Unknown,
}

/// `PARTSTAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStat {
    NeedsAction,
    Accepted,
    Tentative,
    Declined,
}

/// `ROLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Required,
    Optional,
}

/// An organizer or attendee with a cal-address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// A `mailto:` URI (see ARCHITECTURE.md for Feishu users, chats and rooms).
    pub address: String,
    pub name: Option<String>,
    pub cutype: CuType,
    pub partstat: PartStat,
    pub role: Role,
}

/// RFC 7986 `CONFERENCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conference {
    pub uri: String,
    pub label: String,
}

/// One live Feishu event in iCalendar terms.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalEvent {
    pub key: EventKey,
    pub start: EventTime,
    /// Exclusive end (all-day: the day after the last day).
    pub end: EventTime,
    /// Normalized RRULE body for masters (`FREQ=...`, UNTIL in the form DTSTART needs).
    pub rrule: Option<String>,
    /// The last instant the rule reaches (UNTIL, or a bound from COUNT);
    /// `None` when open-ended. Derived from `rrule` while mapping, so it is
    /// not part of the content hash.
    pub rrule_bound: Option<i64>,
    pub summary: String,
    pub description: String,
    pub location: Option<String>,
    pub geo: Option<(f64, f64)>,
    pub url: Option<String>,
    pub conference: Option<Conference>,
    pub status: Option<Status>,
    pub class: Option<Class>,
    pub transparent: bool,
    /// Reminder offsets in Feishu's sign: minutes before the start (negative = after).
    pub alarms: Vec<i64>,
    pub organizer: Option<Party>,
    pub attendees: Vec<Party>,
    /// Unix seconds.
    pub created: Option<i64>,
}

/// A mapped Feishu item: a live event, or the removal of one (a deleted event
/// or a cancelled occurrence of a series).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Box<CanonicalEvent>),
    Cancelled(EventKey),
}

impl Item {
    pub fn key(&self) -> &EventKey {
        match self {
            Item::Event(e) => &e.key,
            Item::Cancelled(k) => k,
        }
    }
}
