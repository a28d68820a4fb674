//! The emulator's data: users, calendars and events, and the writes on them.
//!
//! Every calendar keeps all of its events by id, **including deleted ones**:
//! a delete only turns an event into a `status: cancelled` tombstone, so its
//! id stays reserved (409 on re-insert), `events.get` still answers it and
//! sync deltas can report it. Modified or cancelled occurrences of a series
//! are stored as *exceptions* under their instance id
//! `<masterId>_<originalStart>`; all other instances are synthesised from the
//! master on demand.
//!
//! Every write takes a fresh value of a global version counter; a sync token
//! is such a version and a delta is "every event of the calendar with a
//! greater version".

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{ApiError, EmulatorError};
use super::recur::{Occurrence, Series};
use super::time::{self, EventTime, Which};
use super::util::{base32hex, now, now_ms, rand_base32hex, rand_hex, rfc3339_ms, valid_event_id};
use super::validate::{self, Opts};

/// Access of a user to a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reader,
    Writer,
    Owner,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Owner => "owner",
        }
    }
}

/// Kinds of recorded writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOp {
    CalendarInsert,
    Insert,
    Import,
    Update,
    Patch,
    Delete,
}

/// One successful write through the API (batch parts included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteRecord {
    pub op: WriteOp,
    pub calendar_id: String,
    /// The event id (empty for calendar inserts).
    pub event_id: String,
    /// The `sendUpdates` value of the request (`None` when absent; the
    /// legacy `sendNotifications=true` is recorded as `all`).
    pub send_updates: Option<String>,
    pub batch_part: bool,
    /// The calling user.
    pub actor: String,
    pub at_ms: i64,
}

/// What an attendee would have been mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Invitation,
    Update,
    Cancellation,
}

/// A notification Google would have sent because of `sendUpdates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub kind: NotificationKind,
    pub calendar_id: String,
    pub event_id: String,
    pub recipient: String,
    pub send_updates: String,
}

/// A stored event (tombstones and exceptions included), for assertions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub id: String,
    /// `confirmed`, `tentative` or `cancelled`.
    pub status: String,
    pub summary: Option<String>,
    pub start: EventTime,
    pub end: EventTime,
    /// `start.timeZone`.
    pub time_zone: Option<String>,
    pub recurrence: Vec<String>,
    pub recurring_event_id: Option<String>,
    pub original_start: Option<EventTime>,
    pub etag: String,
    pub sequence: i64,
    pub ical_uid: String,
    pub private_properties: BTreeMap<String, String>,
    pub attendees: Vec<String>,
    /// The resource as `events.get` answers it (in the calendar's zone).
    pub resource: Value,
}

/// One entry of an expanded listing (what `singleEvents=true` returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    pub start: EventTime,
    pub end: EventTime,
    pub summary: Option<String>,
    pub status: String,
    pub recurring_event_id: Option<String>,
    pub original_start: Option<EventTime>,
}

/// A user of the emulated Google tenant.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) primary: String,
    pub(crate) time_zone: String,
    pub(crate) calendars_created: u32,
    pub(crate) creations: u64,
    pub(crate) over_quota: bool,
}

/// A calendar with its events.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    pub(crate) id: String,
    pub(crate) summary: String,
    pub(crate) description: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) time_zone: String,
    pub(crate) owner: String,
    pub(crate) primary: bool,
    pub(crate) acl: BTreeMap<String, Role>,
    pub(crate) etag: String,
    pub(crate) updated: DateTime<Utc>,
    pub(crate) events: BTreeMap<String, EventRec>,
}

impl Calendar {
    pub(crate) fn zone(&self) -> Tz {
        time::parse_zone(&self.time_zone).unwrap_or(chrono_tz::UTC)
    }

    pub(crate) fn json(&self) -> Value {
        let mut v = json!({
            "kind": "calendar#calendar",
            "etag": self.etag,
            "id": self.id,
            "summary": self.summary,
            "timeZone": self.time_zone,
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        if let Some(l) = &self.location {
            v["location"] = json!(l);
        }
        v
    }

    pub(crate) fn role_of(&self, email: &str) -> Option<Role> {
        if self.owner == email {
            Some(Role::Owner)
        } else {
            self.acl.get(email).copied()
        }
    }
}

/// A stored event plus fields parsed out of it.
#[derive(Debug, Clone)]
pub(crate) struct EventRec {
    /// The canonical resource (`dateTime`s in UTC; rendered per answer).
    pub(crate) res: Map<String, Value>,
    /// Creation order (default listing order).
    pub(crate) seq: u64,
    /// Version of the last write (sync deltas, `orderBy=updated`).
    pub(crate) version: u64,
    pub(crate) start: EventTime,
    pub(crate) end: EventTime,
    pub(crate) master: Option<String>,
    pub(crate) original: Option<EventTime>,
    pub(crate) series: Option<Series>,
    pub(crate) updated: DateTime<Utc>,
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn parse_time(m: &Map<String, Value>, key: &str) -> Option<(EventTime, Option<String>)> {
    let v = m.get(key)?;
    time::parse_event_datetime(v, Which::Start)
        .ok()
        .map(|p| (p.time, p.time_zone))
}

impl EventRec {
    pub(crate) fn new(res: Map<String, Value>, seq: u64, version: u64) -> Self {
        let epoch = EventTime::DateTime(DateTime::<Utc>::UNIX_EPOCH);
        let (start, start_tz) = parse_time(&res, "start").unwrap_or((epoch, None));
        let end = parse_time(&res, "end").map_or(start, |(t, _)| t);
        let original = parse_time(&res, "originalStartTime").map(|(t, _)| t);
        let master = str_of(&res, "recurringEventId").map(str::to_owned);
        let recurrence: Vec<String> = res
            .get("recurrence")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let series = if recurrence.is_empty() {
            None
        } else {
            let zone = start_tz
                .as_deref()
                .and_then(time::parse_zone)
                .unwrap_or(chrono_tz::UTC);
            Series::parse(start, end, zone, &recurrence).ok()
        };
        let updated = str_of(&res, "updated")
            .and_then(time::parse_rfc3339)
            .unwrap_or_else(now);
        Self {
            res,
            seq,
            version,
            start,
            end,
            master,
            original,
            series,
            updated,
        }
    }

    pub(crate) fn id(&self) -> &str {
        str_of(&self.res, "id").unwrap_or_default()
    }

    pub(crate) fn status(&self) -> &str {
        str_of(&self.res, "status").unwrap_or("confirmed")
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.status() == "cancelled"
    }

    pub(crate) fn ical_uid(&self) -> &str {
        str_of(&self.res, "iCalUID").unwrap_or_default()
    }

    pub(crate) fn etag(&self) -> &str {
        str_of(&self.res, "etag").unwrap_or_default()
    }

    pub(crate) fn summary(&self) -> Option<String> {
        str_of(&self.res, "summary").map(str::to_owned)
    }

    fn time_zone_of(&self, key: &str) -> Option<String> {
        self.res
            .get(key)
            .and_then(|v| v.get("timeZone"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The occurrence of this master starting at `original`.
    pub(crate) fn occurrence_at(&self, original: EventTime) -> Occurrence {
        let len = validate::duration_of(&self.start, &self.end);
        let end = match original {
            EventTime::Date(d) => EventTime::Date(d + len),
            EventTime::DateTime(t) => EventTime::DateTime(t + len),
        };
        Occurrence {
            original,
            start: original,
            end,
        }
    }

    /// A synthesised instance of this master.
    pub(crate) fn instance(&self, occ: &Occurrence, calendar_id: &str) -> Map<String, Value> {
        let mut m = self.res.clone();
        m.remove("recurrence");
        let id = format!("{}_{}", self.id(), occ.original.id_suffix());
        let start_tz = self.time_zone_of("start");
        let end_tz = self.time_zone_of("end");
        m.insert("htmlLink".into(), json!(html_link(&id, calendar_id)));
        m.insert("id".into(), json!(id));
        m.insert("recurringEventId".into(), json!(self.id()));
        m.insert(
            "originalStartTime".into(),
            occ.original.to_json(start_tz.as_deref()),
        );
        m.insert("start".into(), occ.start.to_json(start_tz.as_deref()));
        m.insert("end".into(), occ.end.to_json(end_tz.as_deref()));
        m
    }

    pub(crate) fn stored_event(&self, zone: Tz) -> StoredEvent {
        let private_properties = self
            .res
            .get("extendedProperties")
            .and_then(|e| e.get("private"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        StoredEvent {
            id: self.id().to_owned(),
            status: self.status().to_owned(),
            summary: self.summary(),
            start: self.start,
            end: self.end,
            time_zone: self.time_zone_of("start"),
            recurrence: self
                .res
                .get("recurrence")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            recurring_event_id: self.master.clone(),
            original_start: self.original,
            etag: self.etag().to_owned(),
            sequence: self
                .res
                .get("sequence")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            ical_uid: self.ical_uid().to_owned(),
            private_properties,
            attendees: attendee_emails(&self.res),
            resource: render_event(&self.res, zone, None),
        }
    }
}

fn attendee_emails(res: &Map<String, Value>) -> Vec<String> {
    res.get("attendees")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("email").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `https://www.google.com/calendar/event?eid=` + base64("<id> <calendar>").
pub(crate) fn html_link(event_id: &str, calendar_id: &str) -> String {
    format!(
        "https://www.google.com/calendar/event?eid={}",
        URL_SAFE_NO_PAD.encode(format!("{event_id} {calendar_id}"))
    )
}

/// An event resource as answered: times in `zone`, attendees capped.
pub(crate) fn render_event(
    res: &Map<String, Value>,
    zone: Tz,
    max_attendees: Option<usize>,
) -> Value {
    let mut out = res.clone();
    for key in ["start", "end", "originalStartTime"] {
        if let Some(v) = out.get(key) {
            let r = time::render(v, zone);
            out.insert(key.into(), r);
        }
    }
    if let Some(max) = max_attendees
        && let Some(Value::Array(list)) = out.get_mut("attendees")
        && list.len() > max
    {
        list.truncate(max);
        out.insert("attendeesOmitted".into(), json!(true));
    }
    Value::Object(out)
}

/// How an event id resolved.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A stored event or exception.
    Stored,
    /// An instance synthesised from a master.
    Virtual { master: String, occ: Occurrence },
}

/// Resolves an event id in a calendar: stored, or a valid instance id.
pub(crate) fn target(cal: &Calendar, id: &str) -> Result<Target, ApiError> {
    if cal.events.contains_key(id) {
        return Ok(Target::Stored);
    }
    let (master_id, suffix) = id.rsplit_once('_').ok_or_else(ApiError::not_found)?;
    let master = cal
        .events
        .get(master_id)
        .filter(|m| m.master.is_none())
        .ok_or_else(ApiError::not_found)?;
    let series = master.series.as_ref().ok_or_else(ApiError::not_found)?;
    let original = EventTime::from_id_suffix(suffix).ok_or_else(ApiError::not_found)?;
    if original.is_all_day() != master.start.is_all_day() || !series.contains(&original) {
        return Err(ApiError::not_found());
    }
    Ok(Target::Virtual {
        master: master_id.to_owned(),
        occ: master.occurrence_at(original),
    })
}

/// Usage limits from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) daily_event_creations: Option<u64>,
    pub(crate) calendar_creations: Option<u32>,
}

/// Who writes, and the write's parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteCtx {
    pub(crate) actor: String,
    pub(crate) send_updates: Option<String>,
    pub(crate) if_match: Option<String>,
    pub(crate) batch_part: bool,
    pub(crate) conference: bool,
    pub(crate) attachments: bool,
    /// A client call through the API (recorded, subject to usage limits);
    /// false for seeding and simulated user-side edits.
    pub(crate) api: bool,
    pub(crate) limits: Limits,
}

/// All data.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) calendars: BTreeMap<String, Calendar>,
    version: u64,
    seq: u64,
    last_etag: u64,
    pub(crate) writes: Vec<WriteRecord>,
    pub(crate) notifications: Vec<Notification>,
}

fn if_match_ok(if_match: Option<&str>, etag: &str) -> bool {
    match if_match {
        None => true,
        Some(v) => v
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == etag || t.trim_start_matches("W/") == etag),
    }
}

fn require_writer(role: Role) -> Result<(), ApiError> {
    if role >= Role::Writer {
        Ok(())
    } else {
        Err(ApiError::writer_access_required())
    }
}

fn domain_of(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Store {
    /// The current version (a fresh sync token's position).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh etag: a quoted decimal, strictly increasing (observed shape).
    pub(crate) fn next_etag(&mut self) -> String {
        let micros = u64::try_from(now().timestamp_micros()).unwrap_or_default() * 2;
        self.last_etag = micros.max(self.last_etag + 1);
        format!("\"{}\"", self.last_etag)
    }

    pub(crate) fn add_user(
        &mut self,
        email: &str,
        time_zone: &str,
    ) -> Result<String, EmulatorError> {
        if !email.contains('@') {
            return Err(EmulatorError::Invalid(format!("not an email: {email}")));
        }
        if time::parse_zone(time_zone).is_none() {
            return Err(EmulatorError::Invalid(format!(
                "unknown time zone {time_zone}"
            )));
        }
        if self.users.contains_key(email) {
            return Err(EmulatorError::DuplicateUser(email.to_owned()));
        }
        let etag = self.next_etag();
        self.calendars.insert(
            email.to_owned(),
            Calendar {
                id: email.to_owned(),
                summary: email.to_owned(),
                description: None,
                location: None,
                time_zone: time_zone.to_owned(),
                owner: email.to_owned(),
                primary: true,
                acl: BTreeMap::new(),
                etag,
                updated: now(),
                events: BTreeMap::new(),
            },
        );
        self.users.insert(
            email.to_owned(),
            User {
                primary: email.to_owned(),
                time_zone: time_zone.to_owned(),
                calendars_created: 0,
                creations: 0,
                over_quota: false,
            },
        );
        Ok(email.to_owned())
    }

    /// Creates a secondary calendar owned by `owner`.
    pub(crate) fn create_calendar(
        &mut self,
        owner: &str,
        summary: &str,
        time_zone: Option<&str>,
        description: Option<&str>,
        location: Option<&str>,
    ) -> Result<String, EmulatorError> {
        let user = self
            .users
            .get(owner)
            .ok_or_else(|| EmulatorError::UnknownUser(owner.to_owned()))?;
        let tz = time_zone.unwrap_or(&user.time_zone).to_owned();
        if time::parse_zone(&tz).is_none() {
            return Err(EmulatorError::Invalid(format!("unknown time zone {tz}")));
        }
        let id = format!("c_{}@group.calendar.google.com", rand_hex(64));
        let etag = self.next_etag();
        self.calendars.insert(
            id.clone(),
            Calendar {
                id: id.clone(),
                summary: summary.to_owned(),
                description: description.map(str::to_owned),
                location: location.map(str::to_owned),
                time_zone: tz,
                owner: owner.to_owned(),
                primary: false,
                acl: BTreeMap::new(),
                etag,
                updated: now(),
                events: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// Grants `email` a role on a calendar.
    pub(crate) fn share(
        &mut self,
        calendar_id: &str,
        email: &str,
        role: Role,
    ) -> Result<(), EmulatorError> {
        if !self.users.contains_key(email) {
            return Err(EmulatorError::UnknownUser(email.to_owned()));
        }
        let cal = self
            .calendars
            .get_mut(calendar_id)
            .ok_or_else(|| EmulatorError::UnknownCalendar(calendar_id.to_owned()))?;
        if cal.owner != email {
            cal.acl.insert(email.to_owned(), role);
        }
        Ok(())
    }

    /// `calendarId` (or `primary`) as `caller` sees it: the real id and role.
    pub(crate) fn resolve_calendar(
        &self,
        id: &str,
        caller: &str,
    ) -> Result<(String, Role), ApiError> {
        let real = if id == "primary" {
            self.users
                .get(caller)
                .map(|u| u.primary.clone())
                .ok_or_else(ApiError::not_found)?
        } else {
            id.to_owned()
        };
        let cal = self.calendars.get(&real).ok_or_else(ApiError::not_found)?;
        let role = cal.role_of(caller).ok_or_else(ApiError::not_found)?;
        Ok((real, role))
    }

    fn check_quota(&self, ctx: &WriteCtx) -> Result<(), ApiError> {
        if ctx.api && self.users.get(&ctx.actor).is_some_and(|u| u.over_quota) {
            return Err(ApiError::quota_exceeded());
        }
        Ok(())
    }

    fn count_creation(&mut self, ctx: &WriteCtx) {
        if !ctx.api {
            return;
        }
        let limit = ctx.limits.daily_event_creations;
        if let Some(u) = self.users.get_mut(&ctx.actor) {
            u.creations += 1;
            if limit.is_some_and(|l| u.creations >= l) {
                u.over_quota = true;
            }
        }
    }

    fn record_write(&mut self, op: WriteOp, calendar_id: &str, event_id: &str, ctx: &WriteCtx) {
        if !ctx.api {
            return;
        }
        self.writes.push(WriteRecord {
            op,
            calendar_id: calendar_id.to_owned(),
            event_id: event_id.to_owned(),
            send_updates: ctx.send_updates.clone(),
            batch_part: ctx.batch_part,
            actor: ctx.actor.clone(),
            at_ms: now_ms(),
        });
    }

    /// Records the mails `sendUpdates` would have caused.
    fn notify(
        &mut self,
        kind: NotificationKind,
        calendar_id: &str,
        event_id: &str,
        res: &Map<String, Value>,
        ctx: &WriteCtx,
    ) {
        let Some(mode) = ctx.send_updates.as_deref() else {
            return;
        };
        if !ctx.api || mode == "none" {
            return;
        }
        let organizer = res
            .get("organizer")
            .and_then(|o| o.get("email"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let home = domain_of(&ctx.actor).to_owned();
        for email in attendee_emails(res) {
            if email == ctx.actor || email == organizer {
                continue;
            }
            if mode == "externalOnly" && domain_of(&email) == home {
                continue;
            }
            self.notifications.push(Notification {
                kind,
                calendar_id: calendar_id.to_owned(),
                event_id: event_id.to_owned(),
                recipient: email,
                send_updates: mode.to_owned(),
            });
        }
    }

    /// `calendars.insert`.
    pub(crate) fn api_insert_calendar(
        &mut self,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let summary = match body.get("summary") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(ApiError::required("Missing title."));
            }
            Some(_) => return Err(ApiError::invalid("Invalid value for field 'summary'.")),
        };
        let opt = |key: &str| -> Result<Option<String>, ApiError> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::invalid(format!(
                    "Invalid value for field '{key}'."
                ))),
            }
        };
        let tz = opt("timeZone")?;
        if tz.as_deref().is_some_and(|z| time::parse_zone(z).is_none()) {
            return Err(ApiError::invalid("Invalid time zone."));
        }
        let description = opt("description")?;
        let location = opt("location")?;
        let user = self.users.get(&ctx.actor).ok_or_else(ApiError::not_found)?;
        if ctx.api
            && (user.over_quota
                || ctx
                    .limits
                    .calendar_creations
                    .is_some_and(|l| user.calendars_created >= l))
        {
            return Err(ApiError::quota_exceeded());
        }
        let id = self
            .create_calendar(
                &ctx.actor,
                &summary,
                tz.as_deref(),
                description.as_deref(),
                location.as_deref(),
            )
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        if let Some(u) = self.users.get_mut(&ctx.actor) {
            u.calendars_created += 1;
        }
        self.record_write(WriteOp::CalendarInsert, &id, "", ctx);
        Ok(self
            .calendars
            .get(&id)
            .map(Calendar::json)
            .unwrap_or_default())
    }

    /// `events.insert` / `events.import`; returns `(calendar id, event id)`.
    pub(crate) fn insert_event(
        &mut self,
        calendar_id: &str,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
        import: bool,
    ) -> Result<(String, String), ApiError> {
        let (cal_id, role) = self.resolve_calendar(calendar_id, &ctx.actor)?;
        require_writer(role)?;
        self.check_quota(ctx)?;
        let ical = match body.get("iCalUID") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(ApiError::invalid("Invalid iCalUID value.")),
        };
        if import && ical.is_none() {
            return Err(ApiError::required("Missing iCalUID."));
        }
        let draft = validate::event_body(
            body,
            Opts {
                import,
                creating: true,
                instance: false,
                conference: ctx.conference,
                attachments: ctx.attachments,
            },
        )?;
        let id = match body.get("id") {
            None | Some(Value::Null) => match &ical {
                Some(uid) if import => format!("_{}", base32hex(uid.as_bytes())),
                _ => rand_base32hex(26),
            },
            Some(Value::String(id)) if valid_event_id(id) => id.clone(),
            Some(_) => return Err(ApiError::invalid("Invalid resource id value.")),
        };
        let ical_uid = ical.unwrap_or_else(|| format!("{id}@google.com"));
        let cal = self
            .calendars
            .get(&cal_id)
            .ok_or_else(ApiError::not_found)?;
        if cal.events.contains_key(&id)
            || cal
                .events
                .values()
                .any(|e| e.master.is_none() && e.ical_uid() == ical_uid)
        {
            return Err(ApiError::duplicate());
        }
        let organizer = match draft.creation.get("organizer") {
            Some(o) => {
                let mut o = o.clone();
                let email = o.get("email").and_then(Value::as_str).unwrap_or_default();
                if email == cal.id || email == cal.owner {
                    o["self"] = json!(true);
                }
                o
            }
            None if cal.primary => json!({"email": cal.owner, "self": true}),
            None => json!({"email": cal.id, "displayName": cal.summary, "self": true}),
        };
        let creator = if ctx.actor == cal.id {
            json!({"email": ctx.actor, "self": true})
        } else {
            json!({"email": ctx.actor})
        };
        let stamp = rfc3339_ms(now());
        let mut res = draft.fields.clone();
        for (k, v) in &draft.creation {
            if k != "organizer" {
                res.insert(k.clone(), v.clone());
            }
        }
        res.entry("status").or_insert_with(|| json!("confirmed"));
        res.entry("reminders")
            .or_insert_with(|| json!({"useDefault": true}));
        res.insert("kind".into(), json!("calendar#event"));
        res.insert("etag".into(), json!(self.next_etag()));
        res.insert("id".into(), json!(id));
        res.insert("htmlLink".into(), json!(html_link(&id, &cal_id)));
        res.insert("created".into(), json!(stamp));
        res.insert("updated".into(), json!(stamp));
        res.insert("creator".into(), creator);
        res.insert("organizer".into(), organizer);
        res.insert("iCalUID".into(), json!(ical_uid));
        res.insert("sequence".into(), json!(draft.sequence.unwrap_or(0)));
        let seq = self.next_seq();
        let version = self.next_version();
        self.count_creation(ctx);
        let kind = if import {
            WriteOp::Import
        } else {
            WriteOp::Insert
        };
        self.record_write(kind, &cal_id, &id, ctx);
        if !import {
            self.notify(NotificationKind::Invitation, &cal_id, &id, &res, ctx);
        }
        let rec = EventRec::new(res, seq, version);
        if let Some(cal) = self.calendars.get_mut(&cal_id) {
            cal.updated = rec.updated;
            cal.events.insert(id.clone(), rec);
        }
        Ok((cal_id, id))
    }

    /// The canonical resource of an event or instance id.
    pub(crate) fn event_view(
        &self,
        cal_id: &str,
        id: &str,
    ) -> Result<Map<String, Value>, ApiError> {
        let cal = self.calendars.get(cal_id).ok_or_else(ApiError::not_found)?;
        match target(cal, id)? {
            Target::Stored => Ok(cal.events[id].res.clone()),
            Target::Virtual { master, occ } => Ok(cal.events[&master].instance(&occ, cal_id)),
        }
    }

    /// `events.update` (`patch == false`) and `events.patch`, also on
    /// instance ids (the instance becomes an exception). Returns the
    /// calendar id and the new canonical resource.
    pub(crate) fn modify_event(
        &mut self,
        calendar_id: &str,
        event_id: &str,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
        patch: bool,
    ) -> Result<(String, Map<String, Value>), ApiError> {
        let (cal_id, role) = self.resolve_calendar(calendar_id, &ctx.actor)?;
        require_writer(role)?;
        self.check_quota(ctx)?;
        let cal = self
            .calendars
            .get(&cal_id)
            .ok_or_else(ApiError::not_found)?;
        let tgt = target(cal, event_id)?;
        let (current, seq, instance, old_series) = match &tgt {
            Target::Stored => {
                let rec = &cal.events[event_id];
                (
                    rec.res.clone(),
                    rec.seq,
                    rec.master.is_some(),
                    rec.series.is_some(),
                )
            }
            Target::Virtual { master, occ } => {
                let m = &cal.events[master];
                if m.cancelled() {
                    return Err(ApiError::deleted());
                }
                (m.instance(occ, &cal_id), m.seq, true, false)
            }
        };
        let etag = str_of(&current, "etag").unwrap_or_default();
        if !if_match_ok(ctx.if_match.as_deref(), etag) {
            return Err(ApiError::condition_not_met());
        }
        let input = if patch {
            let mut base = validate::writable_part(&current);
            // A patch of a deleted event restores it unless it says otherwise.
            if str_of(&current, "status") == Some("cancelled") {
                base.remove("status");
            }
            validate::merge_patch(&mut base, body);
            base
        } else {
            body.clone()
        };
        let draft = validate::event_body(
            &input,
            Opts {
                import: false,
                creating: false,
                instance,
                conference: ctx.conference,
                attachments: ctx.attachments,
            },
        )?;
        let stored_seq = current.get("sequence").and_then(Value::as_i64).unwrap_or(0);
        if draft.sequence.is_some_and(|s| s < stored_seq) {
            return Err(ApiError::invalid(
                "Invalid sequence value. The specified sequence number is below the current \
                 sequence number of the resource.",
            ));
        }
        let mut sequence = draft.sequence.unwrap_or(stored_seq).max(stored_seq);
        let moved = ["start", "end", "recurrence"]
            .iter()
            .any(|k| current.get(*k) != draft.fields.get(*k));
        if moved && sequence == stored_seq {
            sequence += 1;
        }
        let mut res = Map::new();
        for key in [
            "kind",
            "id",
            "iCalUID",
            "created",
            "creator",
            "organizer",
            "htmlLink",
            "recurringEventId",
            "originalStartTime",
            "eventType",
            "privateCopy",
            "locked",
        ] {
            if let Some(v) = current.get(key) {
                res.insert(key.into(), v.clone());
            }
        }
        if !patch {
            // Update is a full replacement; conference data and attachments
            // survive only when the request opted in and sent them.
            for key in ["conferenceData", "attachments"] {
                if !draft.fields.contains_key(key)
                    && let Some(v) = current.get(key)
                    && ((key == "conferenceData" && !ctx.conference)
                        || (key == "attachments" && !ctx.attachments))
                {
                    res.insert(key.into(), v.clone());
                }
            }
        } else {
            for key in ["conferenceData", "attachments"] {
                if !body.contains_key(key)
                    && let Some(v) = current.get(key)
                {
                    res.insert(key.into(), v.clone());
                }
            }
        }
        for (k, v) in &draft.fields {
            res.insert(k.clone(), v.clone());
        }
        res.entry("status").or_insert_with(|| json!("confirmed"));
        res.entry("reminders")
            .or_insert_with(|| json!({"useDefault": true}));
        res.insert("sequence".into(), json!(sequence));
        res.insert("updated".into(), json!(rfc3339_ms(now())));
        res.insert("etag".into(), json!(self.next_etag()));
        let new_id = str_of(&res, "id").unwrap_or(event_id).to_owned();
        let version = self.next_version();
        let rec = EventRec::new(res.clone(), seq, version);
        let drop_exceptions = old_series && rec.series.is_none();
        let cancelled_now = rec.cancelled();
        if let Some(cal) = self.calendars.get_mut(&cal_id) {
            cal.updated = rec.updated;
            cal.events.insert(new_id.clone(), rec);
        }
        if drop_exceptions || (cancelled_now && old_series) {
            self.cancel_exceptions(&cal_id, &new_id);
        }
        let op = if patch {
            WriteOp::Patch
        } else {
            WriteOp::Update
        };
        self.record_write(op, &cal_id, &new_id, ctx);
        let kind = if cancelled_now {
            NotificationKind::Cancellation
        } else {
            NotificationKind::Update
        };
        self.notify(kind, &cal_id, &new_id, &res, ctx);
        Ok((cal_id, res))
    }

    /// `events.delete`, also on instance ids (a cancelled exception).
    pub(crate) fn delete_event(
        &mut self,
        calendar_id: &str,
        event_id: &str,
        ctx: &WriteCtx,
    ) -> Result<String, ApiError> {
        let (cal_id, role) = self.resolve_calendar(calendar_id, &ctx.actor)?;
        require_writer(role)?;
        self.check_quota(ctx)?;
        let cal = self
            .calendars
            .get(&cal_id)
            .ok_or_else(ApiError::not_found)?;
        let (mut res, seq, is_master) = match target(cal, event_id)? {
            Target::Stored => {
                let rec = &cal.events[event_id];
                (rec.res.clone(), rec.seq, rec.series.is_some())
            }
            Target::Virtual { master, occ } => {
                let m = &cal.events[&master];
                (m.instance(&occ, &cal_id), m.seq, false)
            }
        };
        if str_of(&res, "status") == Some("cancelled") {
            return Err(ApiError::deleted());
        }
        if !if_match_ok(
            ctx.if_match.as_deref(),
            str_of(&res, "etag").unwrap_or_default(),
        ) {
            return Err(ApiError::condition_not_met());
        }
        res.insert("status".into(), json!("cancelled"));
        res.insert("updated".into(), json!(rfc3339_ms(now())));
        res.insert("etag".into(), json!(self.next_etag()));
        let version = self.next_version();
        let rec = EventRec::new(res.clone(), seq, version);
        if let Some(cal) = self.calendars.get_mut(&cal_id) {
            cal.updated = rec.updated;
            cal.events.insert(event_id.to_owned(), rec);
        }
        if is_master {
            self.cancel_exceptions(&cal_id, event_id);
        }
        self.record_write(WriteOp::Delete, &cal_id, event_id, ctx);
        self.notify(NotificationKind::Cancellation, &cal_id, event_id, &res, ctx);
        Ok(cal_id)
    }

    /// Cancels every live exception of a master (series deleted or made
    /// single).
    fn cancel_exceptions(&mut self, cal_id: &str, master_id: &str) {
        let ids: Vec<String> = self
            .calendars
            .get(cal_id)
            .map(|c| {
                c.events
                    .values()
                    .filter(|e| e.master.as_deref() == Some(master_id) && !e.cancelled())
                    .map(|e| e.id().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            let etag = self.next_etag();
            let version = self.next_version();
            if let Some(rec) = self
                .calendars
                .get_mut(cal_id)
                .and_then(|c| c.events.get_mut(&id))
            {
                let mut res = rec.res.clone();
                res.insert("status".into(), json!("cancelled"));
                res.insert("updated".into(), json!(rfc3339_ms(now())));
                res.insert("etag".into(), json!(etag));
                *rec = EventRec::new(res, rec.seq, version);
            }
        }
    }

    /// Every stored event of a calendar (tombstones and exceptions included).
    pub(crate) fn stored_events(
        &self,
        calendar_id: &str,
    ) -> Result<Vec<StoredEvent>, EmulatorError> {
        let cal = self
            .calendars
            .get(calendar_id)
            .ok_or_else(|| EmulatorError::UnknownCalendar(calendar_id.to_owned()))?;
        let zone = cal.zone();
        let mut v: Vec<&EventRec> = cal.events.values().collect();
        v.sort_by_key(|e| (e.seq, e.original));
        Ok(v.into_iter().map(|e| e.stored_event(zone)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(actor: &str) -> WriteCtx {
        WriteCtx {
            actor: actor.into(),
            api: true,
            ..WriteCtx::default()
        }
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn tombstones_reserve_ids_and_update_restores() {
        let mut s = Store::default();
        s.add_user("a@x.test", "UTC").unwrap();
        let ev = json!({
            "id": "abcde12345",
            "summary": "s",
            "start": {"dateTime": "2024-01-01T10:00:00Z"},
            "end": {"dateTime": "2024-01-01T11:00:00Z"},
        });
        s.insert_event("primary", &body(ev.clone()), &ctx("a@x.test"), false)
            .unwrap();
        s.delete_event("a@x.test", "abcde12345", &ctx("a@x.test"))
            .unwrap();
        let err = s
            .insert_event("primary", &body(ev.clone()), &ctx("a@x.test"), false)
            .unwrap_err();
        assert_eq!(err.reason, "duplicate");
        assert_eq!(
            s.delete_event("a@x.test", "abcde12345", &ctx("a@x.test"))
                .unwrap_err()
                .reason,
            "deleted"
        );
        let (_, res) = s
            .modify_event("primary", "abcde12345", &body(ev), &ctx("a@x.test"), false)
            .unwrap();
        assert_eq!(res["status"], "confirmed");
        assert_eq!(s.writes.len(), 3, "refused writes are not recorded");
    }

    #[test]
    fn import_ids_are_base32hex_of_the_uid() {
        let mut s = Store::default();
        s.add_user("a@x.test", "UTC").unwrap();
        let ev = json!({
            "iCalUID": "foobar",
            "start": {"date": "2024-01-01"},
            "end": {"date": "2024-01-02"},
        });
        let (_, id) = s
            .insert_event("primary", &body(ev.clone()), &ctx("a@x.test"), true)
            .unwrap();
        assert_eq!(id, "_cpnmuoj1e8");
        assert_eq!(
            s.insert_event("primary", &body(ev), &ctx("a@x.test"), true)
                .unwrap_err()
                .reason,
            "duplicate"
        );
    }
}
