//! Canonical items -> one VCALENDAR.
//!
//! Grouping rules (see ARCHITECTURE.md, "Identity"):
//! - a master (`<uid>_0` with a recurrence) becomes a VEVENT with RRULE; each
//!   cancelled occurrence of it an EXDATE; each modified occurrence a VEVENT
//!   with the same UID and RECURRENCE-ID in the form of the master's DTSTART;
//! - an exception whose master is absent (or not recurring, or deleted) becomes
//!   a standalone VEVENT whose UID is the Feishu event id `<uid>_<original_time>`
//!   and which has no RECURRENCE-ID, so every client shows it exactly once;
//! - deleted events and cancelled occurrences without a master produce nothing.

use std::collections::{BTreeMap, HashMap};

use chrono::Datelike;
use chrono_tz::Tz;

use super::exact::{ExactSeries, Rid, ZoneChanges, exact_series, horizon, rid};
use super::vtimezone::vtimezone;
use super::write::Component;
use crate::key::EventKey;
use crate::map::Warning;
use crate::model::{
    CanonicalEvent, Class, CuType, EventTime, Item, PartStat, Party, Role, Status, utc_datetime,
};
use crate::privacy;
use crate::series::Series;

pub use crate::privacy::Privacy;

/// What a sink remembers about an event it wrote: RFC 5545 SEQUENCE and
/// LAST-MODIFIED, bumped when the event's content hash changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub sequence: u32,
    /// Unix seconds.
    pub last_modified: i64,
}

/// Calendar-level settings of one rendering.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// NAME and X-WR-CALNAME.
    pub name: String,
    pub privacy: Privacy,
    /// DTSTAMP of every VEVENT, Unix seconds (a parameter: mapping never reads the clock).
    pub dtstamp: i64,
    /// REFRESH-INTERVAL and X-PUBLISHED-TTL in minutes; `None` leaves them out.
    pub refresh_minutes: Option<u32>,
    /// X-WR-TIMEZONE; `None` picks the TZID most events start in.
    pub timezone: Option<String>,
    /// SEQUENCE / LAST-MODIFIED per event key.
    pub revisions: HashMap<EventKey, Revision>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            name: "Feishu".to_owned(),
            privacy: Privacy::Full,
            dtstamp: 0,
            refresh_minutes: Some(60),
            timezone: None,
            revisions: HashMap::new(),
        }
    }
}

pub const PRODID: &str = "-//feishu-bridge//feishu-bridge//EN";

fn fmt_utc(at: i64) -> String {
    crate::model::ical_utc(at)
}

/// Tracks the years each TZID must cover.
#[derive(Default)]
struct Zones(BTreeMap<&'static str, (Tz, i32, i32)>);

impl Zones {
    fn note(&mut self, t: &EventTime) {
        if let EventTime::Zoned { at, tz } = t {
            self.note_instant(*tz, *at);
        }
    }

    fn note_instant(&mut self, tz: Tz, at: i64) {
        // iCalendar years have four digits. Unclamped, one instant near
        // chrono's limit (year 262,142) made the VTIMEZONE scan 260,000
        // years: seconds per render.
        let year = utc_datetime(at).year().clamp(1, 9999);
        let e = self.0.entry(tz.name()).or_insert((tz, year, year));
        e.1 = e.1.min(year);
        e.2 = e.2.max(year);
    }
}

fn time_prop(c: &mut Component, key: &str, t: &EventTime, zones: &mut Zones) {
    zones.note(t);
    match t {
        EventTime::Date(d) => {
            c.raw(key, crate::model::ical_date(*d))
                .add_parameter("VALUE", "DATE");
        }
        EventTime::Utc(at) => {
            c.raw(key, fmt_utc(*at));
        }
        EventTime::Zoned { tz, .. } => {
            c.raw(key, crate::model::ical_datetime(t.local(), false))
                .add_parameter("TZID", tz.name());
        }
    }
}

fn rid_prop(c: &mut Component, key: &str, r: &Rid, zones: &mut Zones) {
    match r {
        Rid::Time(t) => time_prop(c, key, t, zones),
        Rid::Wall(tz, wall) => {
            zones.note_instant(*tz, crate::instant::resolve(*tz, *wall));
            c.raw(key, crate::model::ical_datetime(*wall, false))
                .add_parameter("TZID", tz.name());
        }
    }
}

fn note_rid(r: &Rid, zones: &mut Zones) {
    match r {
        Rid::Time(t) => zones.note(t),
        Rid::Wall(tz, wall) => zones.note_instant(*tz, crate::instant::resolve(*tz, *wall)),
    }
}

/// An exact length as an RFC 5545 DURATION: hours, minutes and seconds
/// only (`P1D` would be a nominal day, 23 or 25 hours across a change).
fn exact_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    if s == 0 {
        return "PT0S".to_owned();
    }
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = format!("{sign}PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if sec > 0 {
        out.push_str(&format!("{sec}S"));
    }
    out
}

fn duration(minutes: i64) -> String {
    // Feishu: positive = before the start; iCalendar: negative = before.
    let sign = if minutes > 0 { "-" } else { "" };
    let m = minutes.unsigned_abs();
    if m == 0 {
        return "PT0S".to_owned();
    }
    let (days, rest) = (m / 1440, m % 1440);
    let (h, mins) = (rest / 60, rest % 60);
    let mut s = format!("{sign}P");
    if days > 0 {
        s.push_str(&format!("{days}D"));
    }
    if rest > 0 {
        s.push('T');
        if h > 0 {
            s.push_str(&format!("{h}H"));
        }
        if mins > 0 {
            s.push_str(&format!("{mins}M"));
        }
    }
    s
}

fn party_prop(c: &mut Component, key: &str, p: &Party, with_details: bool) {
    let prop = c.raw(key, p.address.clone());
    if let Some(name) = &p.name {
        prop.add_parameter("CN", name);
    }
    if with_details {
        prop.add_parameter(
            "CUTYPE",
            match p.cutype {
                CuType::Individual => "INDIVIDUAL",
                CuType::Group => "GROUP",
                CuType::Room => "ROOM",
                CuType::Unknown => "UNKNOWN",
            },
        );
        prop.add_parameter(
            "PARTSTAT",
            match p.partstat {
                PartStat::NeedsAction => "NEEDS-ACTION",
                PartStat::Accepted => "ACCEPTED",
                PartStat::Tentative => "TENTATIVE",
                PartStat::Declined => "DECLINED",
            },
        );
        prop.add_parameter(
            "ROLE",
            match p.role {
                Role::Required => "REQ-PARTICIPANT",
                Role::Optional => "OPT-PARTICIPANT",
            },
        );
    }
}

/// The DESCRIPTION shown by clients: the Feishu text plus a meeting line
/// (most clients show neither CONFERENCE nor URL prominently).
fn description(ev: &CanonicalEvent) -> String {
    let mut d = ev.description.trim_end().to_owned();
    if let Some(conf) = &ev.conference {
        if !d.is_empty() {
            d.push_str("\n\n");
        }
        d.push_str(&format!("{}: {}", conf.label, conf.uri));
    }
    d
}

/// Notes the zones a VEVENT uses, as `time_prop` will write them.
fn note_zones(v: &Vevent<'_>, zones: &mut Zones) {
    zones.note(&v.ev.start);
    zones.note(&v.ev.end);
    if let Some(r) = &v.recurrence_id {
        note_rid(r, zones);
    }
    for x in &v.exdates {
        note_rid(x, zones);
    }
}

struct Vevent<'a> {
    ev: &'a CanonicalEvent,
    uid: String,
    recurrence_id: Option<Rid>,
    exdates: Vec<Rid>,
    /// Written as DURATION instead of DTEND (seconds): a master whose
    /// DTSTART is a repeated wall-clock time (see `exact`).
    duration: Option<i64>,
}

fn vevent(v: &Vevent<'_>, opts: &RenderOptions, zones: &mut Zones) -> Component {
    // What the profile shows; the one rule left here is CLASS, written
    // under `full` only (the projection keeps the class for targets that
    // use it to hide more, such as Google's visibility).
    let projected = privacy::project(v.ev, opts.privacy);
    let ev: &CanonicalEvent = &projected;
    let full = opts.privacy == Privacy::Full;
    let mut c = Component::new("VEVENT");
    c.text("UID", &v.uid);
    // A revision's LAST-MODIFIED doubles as DTSTAMP, so that a feed rendered
    // again without changes is byte-identical.
    let dtstamp = opts
        .revisions
        .get(&ev.key)
        .map_or(opts.dtstamp, |r| r.last_modified);
    c.raw("DTSTAMP", fmt_utc(dtstamp));
    time_prop(&mut c, "DTSTART", &ev.start, zones);
    match v.duration {
        Some(seconds) => {
            c.raw("DURATION", exact_duration(seconds));
        }
        None => time_prop(&mut c, "DTEND", &ev.end, zones),
    }
    if let Some(rid) = &v.recurrence_id {
        rid_prop(&mut c, "RECURRENCE-ID", rid, zones);
    }
    if let Some(rule) = &ev.rrule {
        c.raw("RRULE", rule.clone());
    }
    for ex in &v.exdates {
        rid_prop(&mut c, "EXDATE", ex, zones);
    }
    c.text("SUMMARY", &ev.summary);
    let desc = description(ev);
    if !desc.is_empty() {
        c.text("DESCRIPTION", &desc);
    }
    // The event's location, or its rooms (pending bookings marked).
    if let Some(loc) = crate::rooms::display_location(ev) {
        c.text("LOCATION", &loc);
    }
    if let Some((lat, lon)) = ev.geo {
        c.raw("GEO", format!("{lat:.6};{lon:.6}"));
    }
    if let Some(url) = &ev.url {
        c.raw("URL", url.clone());
    }
    if let Some(conf) = &ev.conference {
        c.raw("CONFERENCE", conf.uri.clone())
            .add_parameter("VALUE", "URI")
            .add_parameter("FEATURE", "VIDEO")
            .add_parameter("LABEL", &conf.label);
    }
    if let Some(status) = ev.status {
        c.raw(
            "STATUS",
            match status {
                Status::Confirmed => "CONFIRMED",
                Status::Tentative => "TENTATIVE",
            },
        );
    }
    if full && let Some(class) = ev.class {
        c.raw(
            "CLASS",
            match class {
                Class::Public => "PUBLIC",
                Class::Private => "PRIVATE",
            },
        );
    }
    if ev.transparent {
        c.raw("TRANSP", "TRANSPARENT");
    }
    if let Some(created) = ev.created {
        c.raw("CREATED", fmt_utc(created));
    }
    if let Some(rev) = opts.revisions.get(&ev.key) {
        c.raw("LAST-MODIFIED", fmt_utc(rev.last_modified));
        c.raw("SEQUENCE", rev.sequence.to_string());
    }
    if let Some(org) = &ev.organizer {
        party_prop(&mut c, "ORGANIZER", org, false);
    }
    for a in &ev.attendees {
        party_prop(&mut c, "ATTENDEE", a, true);
    }
    for &minutes in &ev.alarms {
        let mut alarm = Component::new("VALARM");
        alarm.raw("ACTION", "DISPLAY");
        alarm.text(
            "DESCRIPTION",
            if ev.summary.is_empty() {
                "Reminder"
            } else {
                &ev.summary
            },
        );
        alarm.raw("TRIGGER", duration(minutes));
        c.components.push(alarm);
    }
    c
}

/// A rendered calendar and what could not be represented exactly.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub warnings: Vec<Warning>,
    /// Number of VEVENT components written.
    pub vevents: usize,
}

/// What [`render_calendar_to`] wrote besides the text.
#[derive(Debug, Clone, Default)]
pub struct RenderSummary {
    pub warnings: Vec<Warning>,
    /// Number of VEVENT components written.
    pub vevents: usize,
}

/// Renders items into one VCALENDAR. Output is deterministic: events are
/// ordered by UID then original time, properties in a fixed order.
pub fn render_calendar<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    opts: &RenderOptions,
) -> Rendered {
    let mut buf: Vec<u8> = Vec::new();
    // Writing into a Vec cannot fail.
    let summary = render_calendar_to(items, opts, &mut buf).unwrap_or_default();
    Rendered {
        text: String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        warnings: summary.warnings,
        vevents: summary.vevents,
    }
}

/// [`render_calendar`] streamed into `out` one component at a time, so
/// that a large calendar is never held in memory as a whole.
pub fn render_calendar_to<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    opts: &RenderOptions,
    out: &mut impl std::io::Write,
) -> std::io::Result<RenderSummary> {
    let mut warnings = Vec::new();
    let series = crate::series::group_noting(items, &mut warnings);
    render_series(&series, warnings, opts, out)
}

/// The VEVENT(s) that show the item `key` among `items`, as a calendar of
/// them would hold them (folded, CRLF line ends), and the warnings about
/// it: the event itself, an override or a standalone orphan; for a
/// cancelled occurrence, its master (which carries the EXDATE). Empty when
/// nothing shows it (a deleted event, a cancellation without its master).
pub fn render_event<'a>(
    items: impl IntoIterator<Item = &'a Item>,
    key: &EventKey,
    opts: &RenderOptions,
) -> (String, Vec<Warning>) {
    let mut warnings = Vec::new();
    let series = crate::series::group_noting(items, &mut warnings);
    let exact = exact_all(&series, opts);
    let (planned, _) = plan_vevents(&series, &exact, &mut warnings);
    let own = |v: &&Vevent<'_>| v.ev.key == *key;
    let master_of_cancelled = |v: &&Vevent<'_>| {
        series
            .iter()
            .any(|s| s.is_cancelled(key) && s.master().is_some())
            && v.ev.key == key.master()
    };
    let shown: Vec<&Vevent<'_>> = if planned.iter().any(|v| own(&v)) {
        planned.iter().filter(own).collect()
    } else {
        planned.iter().filter(master_of_cancelled).collect()
    };
    let mut text = String::new();
    let mut scratch = Zones::default();
    for v in shown {
        vevent(v, opts, &mut scratch).write_to(&mut text);
    }
    let id = key.to_string();
    warnings.retain(|w| w.event_id.as_deref().is_none_or(|e| e == id));
    (text, warnings)
}

/// Renders series (as [`crate::series::group`] makes them) into one
/// VCALENDAR, streamed into `out`: what projections publish.
pub fn render_series_to(
    series: &[Series<'_>],
    opts: &RenderOptions,
    out: &mut impl std::io::Write,
) -> std::io::Result<RenderSummary> {
    render_series(series, Vec::new(), opts, out)
}

/// Phase 1 of a rendering: every VEVENT (borrowing the items), in output
/// order, and the years each TZID must cover (rule ends of masters).
/// `exact` holds each series' [`exact_series`]: the overrides of the
/// generated occurrences readers could place differently (in a repeated
/// or skipped hour, or spanning an offset change), written after the
/// master, and the wall-clock form of RECURRENCE-IDs and EXDATEs at them.
fn plan_vevents<'a>(
    series: &'a [Series<'a>],
    exact: &'a [Option<Box<ExactSeries>>],
    warnings: &mut Vec<Warning>,
) -> (Vec<Vevent<'a>>, Zones) {
    let mut zones = Zones::default();
    let mut planned: Vec<Vevent<'a>> = Vec::with_capacity(series.len());
    for (s, ex) in series.iter().zip(exact) {
        let master = s.master();
        let ex = ex.as_deref();
        if let Some(base) = s.base {
            let exdates = match master {
                Some(m) => s.cancelled.iter().map(|t| rid(ex, m, *t)).collect(),
                None => Vec::new(),
            };
            if let Some(ref rule_end) = master.and_then(rule_years)
                && let Some(tz) = base.start.tz()
            {
                zones.note_instant(tz, *rule_end);
            }
            let v = Vevent {
                ev: base,
                uid: s.uid.to_owned(),
                recurrence_id: None,
                exdates,
                duration: ex.and_then(|e| e.duration).filter(|_| master.is_some()),
            };
            planned.push(v);
            if let Some((tz, ex)) = ex.and_then(|e| Some((e.tz?, e))) {
                for o in &ex.occurrences {
                    planned.push(Vevent {
                        ev: &o.event,
                        uid: s.uid.to_owned(),
                        recurrence_id: Some(Rid::Wall(tz, o.wall)),
                        exdates: Vec::new(),
                        duration: None,
                    });
                }
            }
        }
        if let Some(m) = master {
            for ev in &s.overrides {
                let v = Vevent {
                    ev,
                    uid: s.uid.to_owned(),
                    recurrence_id: Some(rid(ex, m, ev.key.original_time())),
                    exdates: Vec::new(),
                    duration: None,
                };
                planned.push(v);
            }
        }
        for ev in &s.orphans {
            warnings.push(Warning {
                event_id: Some(ev.key.to_string()),
                message: format!(
                    "exception without its recurring master in the input; \
                     written as a standalone event with UID {}",
                    ev.key
                ),
            });
            let v = Vevent {
                ev,
                uid: ev.key.to_string(),
                recurrence_id: None,
                exdates: Vec::new(),
                duration: None,
            };
            planned.push(v);
        }
    }
    (planned, zones)
}

/// Boxed: needed only by series in zones that change offset, and an
/// inline `Option<ExactSeries>` per series would cost a 100,000-event
/// calendar megabytes.
fn exact_all(series: &[Series<'_>], opts: &RenderOptions) -> Vec<Option<Box<ExactSeries>>> {
    let until = horizon(opts.dtstamp);
    let mut zones = ZoneChanges::default();
    series
        .iter()
        .map(|s| exact_series(s, until, &mut zones).map(Box::new))
        .collect()
}

fn render_series(
    series: &[Series<'_>],
    mut warnings: Vec<Warning>,
    opts: &RenderOptions,
    out: &mut impl std::io::Write,
) -> std::io::Result<RenderSummary> {
    // Phase 1 decides every VEVENT and the years each TZID must cover;
    // phase 2 writes the header, the VTIMEZONEs and the VEVENTs one by one
    // into a single buffer.
    let exact = exact_all(series, opts);
    let (planned, mut zones) = plan_vevents(series, &exact, &mut warnings);
    let mut start_zones: BTreeMap<&'static str, usize> = BTreeMap::new();
    for v in &planned {
        note_zones(v, &mut zones);
        if let Some(tz) = v.ev.start.tz() {
            *start_zones.entry(tz.name()).or_default() += 1;
        }
    }

    let mut cal = Component::new("VCALENDAR");
    cal.raw("VERSION", "2.0");
    cal.text("PRODID", PRODID);
    cal.raw("CALSCALE", "GREGORIAN");
    cal.raw("METHOD", "PUBLISH");
    cal.text("NAME", &opts.name);
    cal.text("X-WR-CALNAME", &opts.name);
    let main_zone = opts.timezone.clone().or_else(|| {
        start_zones
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(tz, _)| (*tz).to_owned())
    });
    if let Some(tz) = main_zone {
        cal.text("X-WR-TIMEZONE", &tz);
    }
    if let Some(minutes) = opts.refresh_minutes {
        let d = format!("PT{minutes}M");
        cal.raw("REFRESH-INTERVAL", d.clone())
            .add_parameter("VALUE", "DURATION");
        cal.raw("X-PUBLISHED-TTL", d);
    }
    for (tz, from, to) in zones.0.values() {
        cal.components.push(vtimezone(*tz, *from, *to + 1));
    }
    let vevents = planned.len();
    let mut text = String::with_capacity(64 * 1024);
    // Header and VTIMEZONEs (without END:VCALENDAR), then the events,
    // flushed whenever the buffer passes 32 KiB.
    cal.write_to(&mut text);
    text.truncate(text.len() - "END:VCALENDAR\r\n".len());
    let mut scratch = Zones::default();
    for v in &planned {
        vevent(v, opts, &mut scratch).write_to(&mut text);
        if text.len() >= 32 * 1024 {
            out.write_all(text.as_bytes())?;
            text.clear();
        }
    }
    text.push_str("END:VCALENDAR\r\n");
    out.write_all(text.as_bytes())?;
    Ok(RenderSummary { warnings, vevents })
}

/// The last instant a master's rule reaches, or a year past its start for
/// open-ended rules (the VTIMEZONE's last rule is then left open).
fn rule_years(m: &CanonicalEvent) -> Option<i64> {
    m.rrule.as_ref()?;
    m.rrule_bound
        .map(|b| b.min(m.start.instant() + 60 * 366 * 86_400))
        .or(Some(m.start.instant() + 366 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_durations() {
        assert_eq!(duration(15), "-PT15M");
        assert_eq!(duration(-30), "PT30M");
        assert_eq!(duration(0), "PT0S");
        assert_eq!(duration(1440), "-P1D");
        assert_eq!(duration(1530), "-P1DT1H30M");
        assert_eq!(duration(-480), "PT8H");
    }

    fn event(uid: &str, t: i64, rule: bool) -> Item {
        Item::Event(Box::new(CanonicalEvent {
            key: EventKey::new(uid, t).unwrap(),
            start: EventTime::Utc(1_700_000_000 + t),
            end: EventTime::Utc(1_700_003_600 + t),
            rrule: rule.then(|| "FREQ=DAILY".to_owned()),
            rrule_bound: None,
            summary: format!("{uid} {t}"),
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
        }))
    }

    #[test]
    fn render_event_shows_what_shows_the_key() {
        let k = |u: &str, t| EventKey::new(u, t).unwrap();
        let items = [
            event("a", 0, true),
            event("a", 86_400, false),
            Item::Cancelled(k("a", 172_800)),
            event("b", 100, false),
        ];
        let opts = RenderOptions::default();
        let (master, _) = render_event(&items, &k("a", 0), &opts);
        assert_eq!(master.matches("BEGIN:VEVENT").count(), 1);
        assert!(master.contains("RRULE:") && master.contains("EXDATE:"));
        let (over, _) = render_event(&items, &k("a", 86_400), &opts);
        assert!(over.contains("RECURRENCE-ID:") && !over.contains("RRULE"));
        let (gone, _) = render_event(&items, &k("a", 172_800), &opts);
        assert_eq!(gone, master, "a cancellation is shown by its master");
        let (orphan, warnings) = render_event(&items, &k("b", 100), &opts);
        assert!(orphan.contains("UID:b_100"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (nothing, _) = render_event(&items, &k("c", 0), &opts);
        assert!(nothing.is_empty());
    }
}
