//! Exact instants: for times around every UTC-offset transition of every IANA
//! zone from 2000 to 2037, an independent reader of our ICS output resolves
//! Feishu's instants.
//!
//! The reader is written here, independent of `bridge_core::instant`: the
//! `icalendar` crate's parser reads the file; a `TZID` value is resolved with
//! chrono-tz and RFC 5545 §3.3.5 (a wall-clock time inside a transition's
//! window, repeated or skipped, takes the offset in force before the
//! transition); a `FREQ=DAILY;COUNT=n` rule is expanded in local time; an
//! occurrence lasts `DTEND - DTSTART` (exact, §3.8.5.3); EXDATE and
//! RECURRENCE-ID name generated occurrences by their resolved instant.
//!
//! Every check also runs a second reader that takes the LATER reading of
//! such a time (the second of two equal wall-clock times, the offset after
//! a gap), as ical.js 2.2.1 and khal 0.14.1 do: the feed must be exact
//! under both (see `bridge_core::ics::exact`).
//!
//! Transitions are enumerated here by scanning each zone's UTC offset.
//! Feishu's side: a single event and a master's first occurrence are exactly
//! their timestamps; later occurrences of a daily series are its local time
//! on the following days (RFC 5545, as above), lasting the master's length;
//! an exception's `original_time` is the occurrence it modifies or cancels.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use bridge_core::feishu::{Event, EventStatus, TimeInfo, UnixSeconds};
use bridge_core::{RenderOptions, feishu_to_ics};
use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone};
use chrono_tz::{TZ_VARIANTS, Tz};
use proptest::prelude::*;

/// 2000-01-01T00:00:00Z .. 2038-01-01T00:00:00Z.
const FROM: i64 = 946_684_800;
const TO: i64 = 2_145_916_800;
const DAY: i64 = 86_400;

/// One change of a zone's UTC offset: at `at`, from `before` to `after` seconds.
#[derive(Debug, Clone, Copy)]
struct Transition {
    at: i64,
    before: i64,
    after: i64,
}

fn offset(tz: Tz, at: i64) -> i64 {
    let utc = DateTime::from_timestamp(at, 0).unwrap().naive_utc();
    i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
}

/// Every offset change of `tz` in [FROM, TO): a daily scan, then bisection
/// to the second.
fn scan(tz: Tz) -> Vec<Transition> {
    let mut out = Vec::new();
    let mut x = FROM;
    let mut off = offset(tz, x);
    while x < TO {
        let y = x + DAY;
        let next = offset(tz, y);
        if next == off {
            x = y;
            continue;
        }
        // The first second in (x, y] whose offset differs from `off`.
        let (mut lo, mut hi) = (x, y);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if offset(tz, mid) == off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let after = offset(tz, hi);
        out.push(Transition {
            at: hi,
            before: off,
            after,
        });
        x = hi;
        off = after;
    }
    out
}

fn transitions(tz: Tz) -> &'static [Transition] {
    type Cache = Mutex<HashMap<&'static str, &'static [Transition]>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap().get(tz.name()) {
        return t;
    }
    let t: &'static [Transition] = Box::leak(scan(tz).into_boxed_slice());
    cache.lock().unwrap().insert(tz.name(), t);
    t
}

/// Zones with at least one transition in range.
fn zones_with_transitions() -> &'static [Tz] {
    static ZONES: OnceLock<Vec<Tz>> = OnceLock::new();
    ZONES.get_or_init(|| {
        TZ_VARIANTS
            .iter()
            .copied()
            .filter(|tz| !transitions(*tz).is_empty())
            .collect()
    })
}

// ----- the independent reader ---------------------------------------------------

fn wall(tz: Tz, at: i64) -> NaiveDateTime {
    tz.from_utc_datetime(&DateTime::from_timestamp(at, 0).unwrap().naive_utc())
        .naive_local()
}

/// RFC 5545 §3.3.5: a wall-clock time repeated or skipped by a transition
/// takes the offset before it (the first occurrence; the offset before the
/// gap); any other has exactly one offset.
fn reader_resolve(tz: Tz, local: NaiveDateTime) -> i64 {
    resolve_as(tz, local, false)
}

thread_local! {
    /// Whether the reader takes the later reading (see the module docs).
    static LATER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How the reader under test resolves a wall-clock time.
fn read_resolve(tz: Tz, local: NaiveDateTime) -> i64 {
    resolve_as(tz, local, LATER.with(std::cell::Cell::get))
}

/// RFC 5545 (`later` false) or the later reading of a time in a
/// transition's window: the offset after the transition.
fn resolve_as(tz: Tz, local: NaiveDateTime, later: bool) -> i64 {
    let secs = local.and_utc().timestamp();
    for t in transitions(tz) {
        let lo = t.at + t.before.min(t.after);
        let hi = t.at + t.before.max(t.after);
        if (lo..hi).contains(&secs) {
            return secs - if later { t.after } else { t.before };
        }
    }
    tz.from_local_datetime(&local)
        .single()
        .unwrap_or_else(|| panic!("{local} in {} is not unique", tz.name()))
        .timestamp()
}

fn parse_value(tz: Option<&str>, v: &str) -> i64 {
    if let Some(utc) = v.strip_suffix('Z') {
        let t = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").unwrap();
        return t.and_utc().timestamp();
    }
    let tz: Tz = tz
        .unwrap_or_else(|| panic!("floating value {v}"))
        .parse()
        .unwrap();
    read_resolve(
        tz,
        NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").unwrap(),
    )
}

/// A date-time property: (TZID, value) as written.
type Written = (Option<String>, String);

fn prop_values(c: &icalendar::parser::Component<'_>, name: &str) -> Vec<Written> {
    c.properties
        .iter()
        .filter(|p| p.name.as_str() == name)
        .flat_map(|p| {
            let tzid = p
                .params
                .iter()
                .find(|x| x.key.as_str() == "TZID")
                .and_then(|x| x.val.as_ref())
                .map(|v| v.as_str().to_owned());
            p.val
                .as_str()
                .split(',')
                .map(move |v| (tzid.clone(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn resolve_written(w: &Written) -> i64 {
    parse_value(w.0.as_deref(), &w.1)
}

/// The end of a VEVENT starting at `start`: its DTEND, or DTSTART plus
/// its DURATION (exact hours, minutes and seconds, as the renderer writes).
fn end_of(c: &icalendar::parser::Component<'_>, start: i64) -> i64 {
    if let Some(end) = prop_values(c, "DTEND").first() {
        return resolve_written(end);
    }
    let (_, d) = prop_values(c, "DURATION").pop().expect("DTEND or DURATION");
    let (sign, body) = match d.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, d.as_str()),
    };
    let body = body.strip_prefix("PT").expect("an exact DURATION");
    let (mut total, mut n) = (0i64, 0i64);
    for ch in body.chars() {
        match ch {
            '0'..='9' => n = n * 10 + i64::from(ch.to_digit(10).unwrap()),
            'H' => (total, n) = (total + n * 3600, 0),
            'M' => (total, n) = (total + n * 60, 0),
            'S' => (total, n) = (total + n, 0),
            _ => panic!("DURATION {d} not understood"),
        }
    }
    start + sign * total
}

/// The instances the reader sees, per UID: (start, end), sorted.
fn read(ics: &str) -> BTreeMap<String, Vec<(i64, i64)>> {
    let unfolded = icalendar::parser::unfold(ics);
    let cal = icalendar::parser::read_calendar(&unfolded).unwrap();
    let events: Vec<_> = cal
        .components
        .iter()
        .filter(|c| c.name.as_str() == "VEVENT")
        .collect();
    let one = |c: &icalendar::parser::Component<'_>, name: &str| {
        let mut v = prop_values(c, name);
        assert!(v.len() <= 1, "{name} more than once");
        v.pop()
    };
    let uid =
        |c: &icalendar::parser::Component<'_>| c.find_prop("UID").unwrap().val.as_str().to_owned();
    // Overrides by (UID, resolved RECURRENCE-ID).
    let mut overrides: HashMap<(String, i64), (i64, i64)> = HashMap::new();
    for c in &events {
        if let Some(rid) = one(c, "RECURRENCE-ID") {
            let start = resolve_written(&one(c, "DTSTART").unwrap());
            let span = (start, end_of(c, start));
            let previous = overrides.insert((uid(c), resolve_written(&rid)), span);
            assert!(previous.is_none(), "two overrides of one occurrence");
        }
    }
    let mut out: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut used = 0;
    for c in &events {
        if one(c, "RECURRENCE-ID").is_some() {
            continue;
        }
        let uid = uid(c);
        let dtstart = one(c, "DTSTART").unwrap();
        let start = resolve_written(&dtstart);
        let length = end_of(c, start) - start;
        let mut starts = vec![start];
        if let Some(rule) = one(c, "RRULE") {
            let count: i64 = rule
                .1
                .strip_prefix("FREQ=DAILY;COUNT=")
                .unwrap_or_else(|| panic!("rule {rule:?} not understood by this reader"))
                .parse()
                .unwrap();
            let tz: Tz = dtstart
                .0
                .as_deref()
                .expect("a zoned series")
                .parse()
                .unwrap();
            let local = NaiveDateTime::parse_from_str(&dtstart.1, "%Y%m%dT%H%M%S").unwrap();
            starts = (0..count)
                .map(|k| read_resolve(tz, local + Duration::days(k)))
                .collect();
            starts.sort_unstable();
            starts.dedup();
        }
        let exdates: Vec<i64> = prop_values(c, "EXDATE")
            .iter()
            .map(resolve_written)
            .collect();
        let list = out.entry(uid.clone()).or_default();
        for s in starts {
            if exdates.contains(&s) {
                continue;
            }
            match overrides.get(&(uid.clone(), s)) {
                Some(span) => {
                    used += 1;
                    list.push(*span);
                }
                None => list.push((s, s + length)),
            }
        }
        list.sort_unstable();
    }
    assert_eq!(
        used,
        overrides.len(),
        "an override names no occurrence (later reading: {}): {overrides:?}\n{ics}",
        LATER.with(std::cell::Cell::get)
    );
    out
}

// ----- Feishu's side ------------------------------------------------------------

fn time(at: i64, tz: Tz) -> TimeInfo {
    TimeInfo {
        timestamp: Some(UnixSeconds(at)),
        timezone: Some(tz.name().to_owned()),
        date: None,
    }
}

fn feishu_event(id: String, start: i64, end: i64, tz: Tz, rule: &str) -> Event {
    Event {
        event_id: Some(id),
        summary: Some("e".into()),
        start_time: Some(time(start, tz)),
        end_time: Some(time(end, tz)),
        recurrence: Some(rule.to_owned()),
        ..Event::default()
    }
}

/// A daily series of `COUNT` occurrences, optionally with occurrence `moved`
/// moved to (`at`, `len`) and occurrence `cancelled` cancelled.
#[derive(Debug, Clone)]
struct Series {
    start: i64,
    len: i64,
    moved: Option<(usize, i64, i64)>,
    cancelled: Option<usize>,
}

const COUNT: i64 = 3;

/// Feishu events and the instances Feishu shows, per UID.
#[derive(Default)]
struct Fixture {
    events: Vec<Event>,
    expected: BTreeMap<String, Vec<(i64, i64)>>,
}

impl Fixture {
    fn single(&mut self, tz: Tz, start: i64, len: i64) {
        let uid = format!("s{}", self.events.len());
        self.events
            .push(feishu_event(format!("{uid}_0"), start, start + len, tz, ""));
        self.expected.insert(uid, vec![(start, start + len)]);
    }

    fn series(&mut self, tz: Tz, s: &Series) {
        let uid = format!("r{}", self.events.len());
        let rule = format!("FREQ=DAILY;COUNT={COUNT}");
        self.events.push(feishu_event(
            format!("{uid}_0"),
            s.start,
            s.start + s.len,
            tz,
            &rule,
        ));
        // Occurrence 0 is the master's timestamp; the others its local time
        // on the following days.
        let local = wall(tz, s.start);
        let mut starts: Vec<i64> = (0..COUNT)
            .map(|k| {
                if k == 0 {
                    s.start
                } else {
                    reader_resolve(tz, local + Duration::days(k))
                }
            })
            .collect();
        starts.dedup();
        let mut instances = Vec::new();
        for (k, &o) in starts.iter().enumerate() {
            if s.cancelled == Some(k) {
                let mut ev = feishu_event(format!("{uid}_{o}"), o, o + s.len, tz, "");
                ev.status = Some(EventStatus::Cancelled);
                self.events.push(ev);
            } else if let Some((_, at, len)) = s.moved.filter(|m| m.0 == k) {
                self.events
                    .push(feishu_event(format!("{uid}_{o}"), at, at + len, tz, ""));
                instances.push((at, at + len));
            } else {
                instances.push((o, o + s.len));
            }
        }
        instances.sort_unstable();
        self.expected.insert(uid, instances);
    }

    /// Renders, reads back under both readings and compares; the message
    /// names the first difference.
    fn check(&self, tz: Tz) -> Result<(), String> {
        // Rendered in 2035: every occurrence up to 2038 is within the
        // horizon of `ics::exact`.
        let opts = RenderOptions {
            dtstamp: 2_051_222_400,
            ..RenderOptions::default()
        };
        let rendered = feishu_to_ics(&self.events, &opts);
        // A day-long gap (Apia and Fakaofo skipped 2011-12-30) puts two
        // generated days of a daily series at one instant under the later
        // reading, which no writing can tell apart for a reader matching
        // RECURRENCE-IDs by instant: those zones are read the RFC way only.
        let day_gap = transitions(tz)
            .iter()
            .any(|t| (t.after - t.before).abs() >= DAY);
        let readings: &[bool] = if day_gap { &[false] } else { &[false, true] };
        for &later in readings {
            LATER.with(|l| l.set(later));
            let result = self.compare(tz, &rendered.text, later);
            LATER.with(|l| l.set(false));
            result?;
        }
        Ok(())
    }

    fn compare(&self, tz: Tz, text: &str, later: bool) -> Result<(), String> {
        let got = read(text);
        for (uid, want) in &self.expected {
            let have = got.get(uid).cloned().unwrap_or_default();
            if &have != want {
                let ev = self
                    .events
                    .iter()
                    .find(|e| e.event_id.as_deref() == Some(&format!("{uid}_0")))
                    .unwrap();
                let block = text
                    .split("BEGIN:VEVENT")
                    .filter(|b| b.contains(&format!("UID:{uid}\r\n")))
                    .collect::<Vec<_>>()
                    .join("BEGIN:VEVENT");
                return Err(format!(
                    "{} {uid} (start {:?}): Feishu {want:?}, {} reader {have:?}\n{block}",
                    tz.name(),
                    ev.start_time.as_ref().unwrap().timestamp,
                    if later { "later" } else { "RFC 5545" },
                ));
            }
        }
        assert_eq!(got.len(), self.expected.len(), "extra UIDs");
        Ok(())
    }
}

/// The deterministic sweep: around every transition of every zone, four
/// times (both occurrences of a repeated time; just before and at a gap):
/// each the start of a single event and of a daily series (plain, with its
/// first occurrence moved, or with it cancelled, in turn), of various lengths.
#[test]
fn every_transition_of_every_zone_reads_back_exactly() {
    let mut zones = 0;
    let mut count = 0;
    let mut events = 0;
    for &tz in zones_with_transitions() {
        let mut f = Fixture::default();
        let trans = transitions(tz);
        for (i, t) in trans.iter().enumerate() {
            let d = (t.before - t.after).abs();
            // The window's middle on each side (both occurrences of a
            // repeated time; before the jump and after it), its edges.
            let probes = [t.at - d / 2, t.at - 1, t.at, t.at + d / 2];
            for (j, &s) in probes.iter().enumerate() {
                f.single(tz, s, [1800, 0, d, 3 * 3600][(i + j) % 4]);
                let len = [1800, 900, d + 60, 60][(i + j) % 4];
                let series = Series {
                    start: s,
                    len,
                    moved: None,
                    cancelled: None,
                };
                match (i + j) % 3 {
                    0 => f.series(tz, &series),
                    1 => f.series(
                        tz,
                        &Series {
                            moved: Some((0, t.at + 3 * DAY, 3600)),
                            ..series
                        },
                    ),
                    _ => f.series(
                        tz,
                        &Series {
                            cancelled: Some(0),
                            ..series
                        },
                    ),
                }
            }
        }
        if let Err(e) = f.check(tz) {
            panic!("{e}");
        }
        zones += 1;
        count += trans.len();
        events += f.events.len();
    }
    // chrono-tz 0.10.4: 339 zones, 17,348 transitions, 184,878 events.
    assert!(zones > 300, "{zones} zones with transitions");
    assert!(count > 15_000, "{count} transitions");
    assert!(events > 150_000, "{events} events");
}

fn case() -> impl Strategy<Value = (Tz, Transition, [i64; 3], [i64; 3], usize, usize)> {
    (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        [-2 * DAY..=2 * DAY, -2 * DAY..=2 * DAY, -2 * DAY..=2 * DAY],
        [0i64..=4 * 3600, 0i64..=4 * 3600, 0i64..=4 * 3600],
        0usize..3,
        0usize..3,
    )
        .prop_map(|(zi, ti, at, len, moved, cancelled)| {
            let tz = *zi.get(zones_with_transitions());
            let t = *ti.get(transitions(tz));
            (tz, t, at, len, moved, cancelled)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary zones and instants within two days of any of their
    /// transitions: a single event, and a daily series with one occurrence
    /// moved (to another such instant) and one cancelled.
    #[test]
    fn instants_near_transitions_read_back_exactly((tz, t, at, len, moved, cancelled) in case()) {
        let mut f = Fixture::default();
        f.single(tz, t.at + at[0], len[0]);
        f.series(tz, &Series {
            start: t.at + at[1],
            len: len[1],
            moved: Some((moved, t.at + at[2], len[2])),
            cancelled: (cancelled != moved).then_some(cancelled),
        });
        f.check(tz).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn the_scan_finds_known_transitions() {
    let ny = transitions(chrono_tz::America::New_York);
    // 2026-11-01T06:00:00Z: EDT -> EST; 2026-03-08T07:00:00Z: EST -> EDT.
    assert!(
        ny.iter()
            .any(|t| t.at == 1_793_512_800 && t.before == -4 * 3600 && t.after == -5 * 3600)
    );
    assert!(
        ny.iter()
            .any(|t| t.at == 1_772_953_200 && t.before == -5 * 3600)
    );
    // Two a year since 2000 (38 years).
    assert_eq!(ny.len(), 76);
    assert!(transitions(chrono_tz::Asia::Shanghai).is_empty());
    // The reader: RFC 5545's own examples.
    let wall = |s| NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S").unwrap();
    let ny_tz = chrono_tz::America::New_York;
    assert_eq!(
        reader_resolve(ny_tz, wall("20071104T013000")),
        1_194_154_200
    );
    assert_eq!(
        reader_resolve(ny_tz, wall("20070311T023000")),
        1_173_598_200
    );
}
