//! The tenant's data: users, calendars, rooms, events and the per-calendar
//! change index that backs sync tokens.
//!
//! An event is stored once (event ids are global) and *appears* in a set of
//! calendars: the organizer calendar, the primary calendar of every user
//! attendee and the calendar of every room attendee, as in Feishu where an
//! invitation shows the same `event_id` on the invitee's calendar. Every
//! mutation takes a fresh value of the global version counter for each
//! (calendar, event) pair it touches; a sync token is a version, and a delta
//! is "every entry of this calendar with a greater version".
//!
//! Mutations return [`Changes`] describing what the push layer must announce.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bridge_core::EventKey;
use bridge_core::feishu::{
    Attendee, AttendeeType, Calendar, CalendarType, Event, EventOrganizer, EventStatus,
    FreeBusyStatus, RsvpStatus, UnixSeconds, Visibility,
};

use super::recur;
use super::util::{rand_alnum, rand_hex, uuid_v4};

/// Why a mutation of the emulator's data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulatorError {
    #[error("unknown calendar {0}")]
    UnknownCalendar(String),
    #[error("calendar {0} is deleted")]
    CalendarDeleted(String),
    #[error("unknown event {event_id} in calendar {calendar_id}")]
    UnknownEvent {
        calendar_id: String,
        event_id: String,
    },
    #[error("event {0} already exists")]
    DuplicateEvent(String),
    #[error("invalid event id {0:?}")]
    BadEventId(String),
    #[error("event {0} is not a recurring master")]
    NotRecurring(String),
    #[error("{original_time} is not an occurrence of {event_id}")]
    NotAnOccurrence {
        event_id: String,
        original_time: i64,
    },
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// A tenant member.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) open_id: String,
    pub(crate) union_id: String,
    pub(crate) user_id: String,
    pub(crate) name: String,
    pub(crate) primary: String,
}

/// A meeting room.
#[derive(Debug, Clone)]
pub(crate) struct Room {
    pub(crate) name: String,
    pub(crate) calendar_id: String,
    /// What an asynchronous booking of this room ends in.
    pub(crate) booking_result: RsvpStatus,
    /// Bookings are decided by a third-party room system through
    /// `instance/reply` (`rooms` module); they never resolve by themselves.
    pub(crate) third_party: bool,
}

/// A calendar and its bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct CalRec {
    pub(crate) cal: Calendar,
    pub(crate) version: u64,
    pub(crate) deleted: bool,
    /// Owner of a primary calendar (open_id).
    pub(crate) owner: Option<String>,
    /// True for the app's own primary calendar.
    pub(crate) app_owned: bool,
}

/// An event and the calendars it appears in.
#[derive(Debug, Clone)]
pub(crate) struct EventRec {
    pub(crate) event: Event,
    pub(crate) deleted: bool,
    pub(crate) calendars: BTreeSet<String>,
    /// Attendee calendars whose owner removed the event from their calendar.
    pub(crate) hidden: BTreeSet<String>,
}

/// One event's state in one calendar's index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) version: u64,
    pub(crate) removed: bool,
}

/// Per-calendar index: entries by event id (full listing order) and by
/// version (deltas).
#[derive(Debug, Default)]
pub(crate) struct CalIndex {
    pub(crate) entries: BTreeMap<String, Entry>,
    pub(crate) by_version: BTreeMap<u64, String>,
}

impl CalIndex {
    fn set(&mut self, id: &str, version: u64, removed: bool) {
        if let Some(old) = self
            .entries
            .insert(id.to_owned(), Entry { version, removed })
        {
            self.by_version.remove(&old.version);
        }
        self.by_version.insert(version, id.to_owned());
    }
}

/// `change_type` of `calendar.calendar.event.changed_v4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Create,
    Update,
    Delete,
    Rsvp,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Rsvp => "rsvp",
        }
    }
}

/// One change of one event on one calendar.
#[derive(Debug, Clone)]
pub(crate) struct EventChange {
    pub(crate) calendar_id: String,
    pub(crate) event_id: String,
    pub(crate) kind: ChangeKind,
    /// `(open_id, rsvp)` of user attendees that replied (rsvp changes only).
    pub(crate) rsvp_infos: Vec<(String, RsvpStatus)>,
}

/// What a mutation changed, for the push layer.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) events: Vec<EventChange>,
    /// Calendars created or deleted (calendar list changes).
    pub(crate) calendars: Vec<String>,
    /// Room bookings to complete asynchronously: (event_id, room_id).
    pub(crate) bookings: Vec<(String, String)>,
}

impl Changes {
    fn extend(&mut self, other: Changes) {
        self.events.extend(other.events);
        self.calendars.extend(other.calendars);
        self.bookings.extend(other.bookings);
    }
}

/// The whole tenant.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) version: u64,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) calendars: BTreeMap<String, CalRec>,
    pub(crate) rooms: BTreeMap<String, Room>,
    pub(crate) events: HashMap<String, EventRec>,
    pub(crate) index: HashMap<String, CalIndex>,
    pub(crate) app_calendar: Option<String>,
    /// `(calendar_id, open_id)` pairs subscribed to event changes.
    pub(crate) event_subs: BTreeSet<(String, String)>,
    /// Users subscribed to calendar-list changes.
    pub(crate) calendar_subs: BTreeSet<String>,
    pub(crate) auto_login: Option<String>,
}

fn new_calendar_id(domain: &str) -> String {
    format!("feishu.cn_{}@{domain}.calendar.feishu.cn", rand_alnum(22))
}

/// Calendar ids look like `feishu.cn_xxx@group.calendar.feishu.cn`; anything
/// that is not `local@domain` over `[A-Za-z0-9._-]` is malformed (191001).
pub(crate) fn valid_calendar_id(id: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match id.split_once('@') {
        Some((local, domain)) => ok(local) && ok(domain),
        None => false,
    }
}

/// `app_link` of an event as Feishu builds it.
pub(crate) fn app_link(calendar_id: &str, key: &EventKey, start: i64) -> String {
    let cal: String = url::form_urlencoded::byte_serialize(calendar_id.as_bytes()).collect();
    let uid: String = url::form_urlencoded::byte_serialize(key.uid().as_bytes()).collect();
    format!(
        "https://applink.feishu.cn/client/calendar/event/detail?calendarId={cal}&key={uid}&originalTime={}&startTime={start}",
        key.original_time()
    )
}

fn attendee_prefix(kind: Option<&AttendeeType>) -> &'static str {
    match kind {
        Some(AttendeeType::Chat) => "chat",
        Some(AttendeeType::Resource) => "resource",
        Some(AttendeeType::ThirdParty) => "third_party",
        _ => "user",
    }
}

fn is_active(a: &Attendee) -> bool {
    !matches!(a.rsvp_status, Some(RsvpStatus::Removed))
}

impl Store {
    pub(crate) fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    // ----- users and calendars -------------------------------------------------

    pub(crate) fn add_user(&mut self, name: &str) -> (String, String) {
        let open_id = format!("ou_{}", rand_hex(32));
        let primary = new_calendar_id("group");
        let version = self.next_version();
        self.calendars.insert(
            primary.clone(),
            CalRec {
                cal: Calendar {
                    calendar_id: Some(primary.clone()),
                    summary: Some(name.to_owned()),
                    description: Some(String::new()),
                    permissions: Some("private".into()),
                    color: Some(-1),
                    kind: Some(CalendarType::Primary),
                    summary_alias: Some(String::new()),
                    is_deleted: Some(false),
                    is_third_party: Some(false),
                    role: Some("owner".into()),
                },
                version,
                deleted: false,
                owner: Some(open_id.clone()),
                app_owned: false,
            },
        );
        self.index.entry(primary.clone()).or_default();
        self.users.insert(
            open_id.clone(),
            User {
                open_id: open_id.clone(),
                union_id: format!("on_{}", rand_hex(32)),
                user_id: rand_hex(8),
                name: name.to_owned(),
                primary: primary.clone(),
            },
        );
        (open_id, primary)
    }

    pub(crate) fn primary_of(&self, open_id: &str) -> Option<&str> {
        self.users.get(open_id).map(|u| u.primary.as_str())
    }

    fn insert_calendar(&mut self, cal: Calendar, app_owned: bool) -> String {
        let id = cal.calendar_id.clone().unwrap_or_default();
        let version = self.next_version();
        self.calendars.insert(
            id.clone(),
            CalRec {
                cal,
                version,
                deleted: false,
                owner: None,
                app_owned,
            },
        );
        self.index.entry(id.clone()).or_default();
        id
    }

    pub(crate) fn create_calendar(&mut self, summary: &str) -> (String, Changes) {
        let id = new_calendar_id("group");
        let id = self.insert_calendar(
            Calendar {
                calendar_id: Some(id),
                summary: Some(summary.to_owned()),
                description: Some(String::new()),
                permissions: Some("public".into()),
                color: Some(-1),
                kind: Some(CalendarType::Shared),
                summary_alias: Some(String::new()),
                is_deleted: Some(false),
                is_third_party: Some(false),
                role: Some("owner".into()),
            },
            false,
        );
        let changes = Changes {
            calendars: vec![id.clone()],
            ..Changes::default()
        };
        (id, changes)
    }

    /// The app's own primary calendar (created on first use).
    pub(crate) fn app_calendar(&mut self, app_name: &str) -> String {
        if let Some(id) = &self.app_calendar {
            return id.clone();
        }
        let id = self.insert_calendar(
            Calendar {
                calendar_id: Some(new_calendar_id("group")),
                summary: Some(app_name.to_owned()),
                description: Some(String::new()),
                permissions: Some("private".into()),
                color: Some(-1),
                kind: Some(CalendarType::Primary),
                summary_alias: Some(String::new()),
                is_deleted: Some(false),
                is_third_party: Some(false),
                role: Some("owner".into()),
            },
            true,
        );
        self.app_calendar = Some(id.clone());
        id
    }

    pub(crate) fn ensure_room(&mut self, room_id: &str, name: &str) -> String {
        if let Some(room) = self.rooms.get(room_id) {
            return room.calendar_id.clone();
        }
        let id = self.insert_calendar(
            Calendar {
                calendar_id: Some(new_calendar_id("resource")),
                summary: Some(name.to_owned()),
                description: Some(String::new()),
                permissions: Some("public".into()),
                color: Some(-1),
                kind: Some(CalendarType::Resource),
                summary_alias: Some(String::new()),
                is_deleted: Some(false),
                is_third_party: Some(false),
                role: Some("reader".into()),
            },
            false,
        );
        self.rooms.insert(
            room_id.to_owned(),
            Room {
                name: name.to_owned(),
                calendar_id: id.clone(),
                booking_result: RsvpStatus::Accept,
                third_party: false,
            },
        );
        id
    }

    pub(crate) fn update_calendar(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut Calendar),
    ) -> Result<Changes, EmulatorError> {
        self.live_calendar(id)?;
        let version = self.next_version();
        let rec = self
            .calendars
            .get_mut(id)
            .ok_or_else(|| EmulatorError::UnknownCalendar(id.to_owned()))?;
        f(&mut rec.cal);
        rec.cal.calendar_id = Some(id.to_owned());
        rec.version = version;
        Ok(Changes {
            calendars: vec![id.to_owned()],
            ..Changes::default()
        })
    }

    pub(crate) fn delete_calendar(&mut self, id: &str) -> Result<Changes, EmulatorError> {
        let rec = self.live_calendar(id)?;
        if rec.owner.is_some() || rec.app_owned {
            return Err(EmulatorError::Invalid(format!(
                "{id} is a primary calendar and cannot be deleted"
            )));
        }
        let version = self.next_version();
        if let Some(rec) = self.calendars.get_mut(id) {
            rec.deleted = true;
            rec.cal.is_deleted = Some(true);
            rec.version = version;
        }
        self.event_subs.retain(|(c, _)| c != id);
        Ok(Changes {
            calendars: vec![id.to_owned()],
            ..Changes::default()
        })
    }

    pub(crate) fn live_calendar(&self, id: &str) -> Result<&CalRec, EmulatorError> {
        match self.calendars.get(id) {
            None => Err(EmulatorError::UnknownCalendar(id.to_owned())),
            Some(rec) if rec.deleted => Err(EmulatorError::CalendarDeleted(id.to_owned())),
            Some(rec) => Ok(rec),
        }
    }

    // ----- events --------------------------------------------------------------

    /// The live event `event_id` as it appears on `calendar_id`.
    pub(crate) fn event_in(&self, calendar_id: &str, event_id: &str) -> Option<&EventRec> {
        let entry = self.index.get(calendar_id)?.entries.get(event_id)?;
        if entry.removed {
            return None;
        }
        self.events.get(event_id).filter(|r| !r.deleted)
    }

    fn existing(&self, calendar_id: &str, event_id: &str) -> Result<&EventRec, EmulatorError> {
        self.live_calendar(calendar_id)?;
        self.event_in(calendar_id, event_id)
            .ok_or_else(|| EmulatorError::UnknownEvent {
                calendar_id: calendar_id.to_owned(),
                event_id: event_id.to_owned(),
            })
    }

    /// Calendars an event should appear in, from its organizer and attendees.
    fn target_calendars(&self, ev: &Event, hidden: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(org) = &ev.organizer_calendar_id {
            out.insert(org.clone());
        }
        for a in ev.attendees.iter().flatten().filter(|a| is_active(a)) {
            let cal = match a.kind {
                Some(AttendeeType::User) | None => a
                    .user_id
                    .as_deref()
                    .and_then(|u| self.primary_of(u))
                    .map(str::to_owned),
                Some(AttendeeType::Resource) => a
                    .room_id
                    .as_deref()
                    .and_then(|r| self.rooms.get(r))
                    .map(|r| r.calendar_id.clone()),
                _ => None,
            };
            if let Some(cal) = cal
                && !hidden.contains(&cal)
                && self.calendars.get(&cal).is_some_and(|c| !c.deleted)
            {
                out.insert(cal);
            }
        }
        out
    }

    /// Fills the server-assigned fields of a new event.
    fn fill_defaults(
        &self,
        calendar_id: &str,
        ev: &mut Event,
        now: i64,
    ) -> Result<EventKey, EmulatorError> {
        let key = match &ev.event_id {
            Some(id) => EventKey::parse(id).map_err(|_| EmulatorError::BadEventId(id.clone()))?,
            None => {
                EventKey::new(uuid_v4(), 0).map_err(|e| EmulatorError::Invalid(e.to_string()))?
            }
        };
        ev.event_id = Some(key.to_string());
        ev.organizer_calendar_id = Some(calendar_id.to_owned());
        for ti in [&mut ev.start_time, &mut ev.end_time].into_iter().flatten() {
            if ti.date.is_some() {
                ti.timezone = Some("UTC".into());
            } else if ti.timezone.as_deref().is_none_or(str::is_empty) {
                ti.timezone = Some(recur::DEFAULT_TZ.into());
            }
        }
        let (start, end) = recur::span(ev)
            .ok_or_else(|| EmulatorError::Invalid("start_time and end_time are required".into()))?;
        if end < start {
            return Err(EmulatorError::Invalid(
                "end_time is before start_time".into(),
            ));
        }
        recur::validate(ev).map_err(|e| EmulatorError::Invalid(e.to_string()))?;
        ev.create_time.get_or_insert(UnixSeconds(now));
        ev.status.get_or_insert(EventStatus::Confirmed);
        ev.is_exception.get_or_insert(false);
        ev.recurrence.get_or_insert_with(String::new);
        ev.visibility.get_or_insert(Visibility::Default);
        ev.free_busy_status.get_or_insert(FreeBusyStatus::Busy);
        ev.attendee_ability.get_or_insert_with(|| "none".into());
        ev.color.get_or_insert(-1);
        ev.summary.get_or_insert_with(String::new);
        ev.description.get_or_insert_with(String::new);
        if ev.app_link.is_none() {
            ev.app_link = Some(app_link(calendar_id, &key, start));
        }
        if ev.event_organizer.is_none()
            && let Some(owner) = self
                .calendars
                .get(calendar_id)
                .and_then(|c| c.owner.as_deref())
                .and_then(|o| self.users.get(o))
        {
            ev.event_organizer = Some(EventOrganizer {
                user_id: Some(owner.open_id.clone()),
                display_name: Some(owner.name.clone()),
            });
        }
        ev.need_notification = None;
        ev.has_more_attendee = None;
        Ok(key)
    }

    /// Assigns attendee ids, default rsvp and display names; returns room
    /// attendees that need an asynchronous booking.
    fn fill_attendees(&mut self, ev: &mut Event) -> Vec<String> {
        let mut bookings = Vec::new();
        let Some(list) = ev.attendees.as_mut() else {
            return bookings;
        };
        for a in list.iter_mut() {
            if a.kind.is_none() {
                a.kind = Some(if a.room_id.is_some() {
                    AttendeeType::Resource
                } else if a.chat_id.is_some() {
                    AttendeeType::Chat
                } else if a.third_party_email.is_some() {
                    AttendeeType::ThirdParty
                } else {
                    AttendeeType::User
                });
            }
            if a.attendee_id.is_none() {
                a.attendee_id = Some(format!(
                    "{}_{}",
                    attendee_prefix(a.kind.as_ref()),
                    rand_alnum(20).to_lowercase()
                ));
            }
            a.is_optional.get_or_insert(false);
            a.is_organizer.get_or_insert(false);
            a.is_external.get_or_insert(false);
            match a.kind {
                Some(AttendeeType::User) => {
                    if a.display_name.is_none()
                        && let Some(u) = a.user_id.as_deref().and_then(|u| self.users.get(u))
                    {
                        a.display_name = Some(u.name.clone());
                    }
                    a.rsvp_status.get_or_insert(RsvpStatus::NeedsAction);
                }
                Some(AttendeeType::Resource) => {
                    if let Some(room) = a.room_id.clone() {
                        let name = a.display_name.clone().unwrap_or_else(|| room.clone());
                        self.ensure_room(&room, &name);
                        a.display_name.get_or_insert(name);
                        if a.rsvp_status.is_none() {
                            a.rsvp_status = Some(RsvpStatus::NeedsAction);
                            bookings.push(room);
                        }
                    }
                }
                _ => {
                    a.rsvp_status.get_or_insert(RsvpStatus::NeedsAction);
                }
            }
        }
        bookings
    }

    /// Stores `after` as the new state of an event and indexes it in the
    /// calendars it now belongs to, announcing creates/updates/deletes.
    fn commit(
        &mut self,
        after: Event,
        before: Option<&Event>,
        hidden: BTreeSet<String>,
    ) -> Changes {
        let id = after.event_id.clone().unwrap_or_default();
        let old_cals = self
            .events
            .get(&id)
            .filter(|r| !r.deleted && before.is_some())
            .map(|r| r.calendars.clone())
            .unwrap_or_default();
        let new_cals = self.target_calendars(&after, &hidden);
        let (kind, rsvp_infos) = match before {
            None => (ChangeKind::Create, Vec::new()),
            Some(b) => classify(b, &after),
        };
        let content_changed = before.is_none_or(|b| b != &after);
        let mut changes = Changes::default();
        for cal in old_cals.union(&new_cals) {
            let (change, removed) = match (old_cals.contains(cal), new_cals.contains(cal)) {
                (false, true) => (ChangeKind::Create, false),
                (true, false) => (ChangeKind::Delete, true),
                _ if !content_changed => continue,
                _ => (kind, false),
            };
            let version = self.next_version();
            self.index
                .entry(cal.clone())
                .or_default()
                .set(&id, version, removed);
            changes.events.push(EventChange {
                calendar_id: cal.clone(),
                event_id: id.clone(),
                kind: change,
                rsvp_infos: if change == ChangeKind::Rsvp {
                    rsvp_infos.clone()
                } else {
                    Vec::new()
                },
            });
        }
        self.events.insert(
            id,
            EventRec {
                event: after,
                deleted: false,
                calendars: new_cals,
                hidden,
            },
        );
        changes
    }

    pub(crate) fn create_event(
        &mut self,
        calendar_id: &str,
        mut ev: Event,
        now: i64,
    ) -> Result<(String, Changes), EmulatorError> {
        self.live_calendar(calendar_id)?;
        let key = self.fill_defaults(calendar_id, &mut ev, now)?;
        let id = key.to_string();
        if self.events.get(&id).is_some_and(|r| !r.deleted) {
            return Err(EmulatorError::DuplicateEvent(id));
        }
        let rooms = self.fill_attendees(&mut ev);
        let mut changes = self.commit(ev, None, BTreeSet::new());
        changes
            .bookings
            .extend(rooms.into_iter().map(|r| (id.clone(), r)));
        Ok((id, changes))
    }

    pub(crate) fn update_event(
        &mut self,
        calendar_id: &str,
        event_id: &str,
        f: impl FnOnce(&mut Event),
    ) -> Result<Changes, EmulatorError> {
        let rec = self.existing(calendar_id, event_id)?;
        let before = rec.event.clone();
        let hidden = rec.hidden.clone();
        let mut after = before.clone();
        f(&mut after);
        // Server-owned fields survive the edit.
        after.event_id = before.event_id.clone();
        after.organizer_calendar_id = before.organizer_calendar_id.clone();
        after.create_time = before.create_time;
        after.app_link = before.app_link.clone();
        if recur::span(&after).is_none() {
            return Err(EmulatorError::Invalid(
                "start_time and end_time are required".into(),
            ));
        }
        recur::validate(&after).map_err(|e| EmulatorError::Invalid(e.to_string()))?;
        let rooms = self.fill_attendees(&mut after);
        let mut changes = self.commit(after, Some(&before), hidden);
        changes
            .bookings
            .extend(rooms.into_iter().map(|r| (event_id.to_owned(), r)));
        Ok(changes)
    }

    /// Deletes an event. On the organizer calendar this deletes it everywhere
    /// (and a master takes its exceptions with it); on an attendee calendar it
    /// only removes it from that calendar.
    pub(crate) fn delete_event(
        &mut self,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<Changes, EmulatorError> {
        let rec = self.existing(calendar_id, event_id)?;
        if rec.event.organizer_calendar_id.as_deref() != Some(calendar_id) {
            let before = rec.event.clone();
            let mut hidden = rec.hidden.clone();
            hidden.insert(calendar_id.to_owned());
            return Ok(self.commit(before.clone(), Some(&before), hidden));
        }
        let mut ids = vec![event_id.to_owned()];
        let key = EventKey::parse(event_id)
            .map_err(|_| EmulatorError::BadEventId(event_id.to_owned()))?;
        if key.is_base() && recur::rule_of(&rec.event).is_some() {
            let prefix = format!("{}_", key.uid());
            let mut exceptions: Vec<String> = self
                .events
                .iter()
                .filter(|(id, r)| {
                    !r.deleted
                        && id.as_str() != event_id
                        && id.starts_with(&prefix)
                        && EventKey::parse(id).is_ok_and(|k| k.uid() == key.uid())
                })
                .map(|(id, _)| id.clone())
                .collect();
            exceptions.sort();
            ids.extend(exceptions);
        }
        let mut changes = Changes::default();
        for id in ids {
            changes.extend(self.remove_everywhere(&id));
        }
        Ok(changes)
    }

    fn remove_everywhere(&mut self, id: &str) -> Changes {
        let mut changes = Changes::default();
        let Some(cals) = self.events.get(id).map(|r| r.calendars.clone()) else {
            return changes;
        };
        for cal in cals {
            let version = self.next_version();
            self.index
                .entry(cal.clone())
                .or_default()
                .set(id, version, true);
            changes.events.push(EventChange {
                calendar_id: cal,
                event_id: id.to_owned(),
                kind: ChangeKind::Delete,
                rsvp_infos: Vec::new(),
            });
        }
        if let Some(rec) = self.events.get_mut(id) {
            rec.deleted = true;
        }
        changes
    }

    /// Creates or updates the exception `<uid>_<original_time>` of a master.
    fn upsert_exception(
        &mut self,
        calendar_id: &str,
        master_id: &str,
        original_time: i64,
        now: i64,
        edit: impl FnOnce(&Event, &mut Event),
    ) -> Result<(String, Changes), EmulatorError> {
        let master = self.existing(calendar_id, master_id)?.event.clone();
        let key = EventKey::parse(master_id)
            .map_err(|_| EmulatorError::BadEventId(master_id.to_owned()))?;
        if !key.is_base() || recur::rule_of(&master).is_none() {
            return Err(EmulatorError::NotRecurring(master_id.to_owned()));
        }
        let organizer = master
            .organizer_calendar_id
            .clone()
            .unwrap_or_else(|| calendar_id.to_owned());
        let exc_key = EventKey::new(key.uid(), original_time)
            .map_err(|e| EmulatorError::Invalid(e.to_string()))?;
        let exc_id = exc_key.to_string();
        if let Some(rec) = self.event_in(&organizer, &exc_id) {
            let before = rec.event.clone();
            let hidden = rec.hidden.clone();
            let mut after = before.clone();
            edit(&master, &mut after);
            return Ok((exc_id, self.commit(after, Some(&before), hidden)));
        }
        let is_occ = recur::is_occurrence(&master, original_time)
            .map_err(|e| EmulatorError::Invalid(e.to_string()))?;
        if !is_occ {
            return Err(EmulatorError::NotAnOccurrence {
                event_id: master_id.to_owned(),
                original_time,
            });
        }
        let (m_start, m_end) = recur::span(&master).unwrap_or_default();
        let mut exc = master.clone();
        exc.event_id = Some(exc_id.clone());
        exc.recurrence = Some(String::new());
        exc.is_exception = Some(true);
        exc.recurring_event_id = Some(master_id.to_owned());
        exc.create_time = Some(UnixSeconds(now));
        exc.status = Some(EventStatus::Confirmed);
        exc.start_time = Some(recur::time_info_like(&master, original_time, false));
        exc.end_time = Some(recur::time_info_like(
            &master,
            original_time + (m_end - m_start),
            true,
        ));
        exc.app_link = Some(app_link(&organizer, &exc_key, original_time));
        edit(&master, &mut exc);
        let hidden = self
            .events
            .get(master_id)
            .map(|r| r.hidden.clone())
            .unwrap_or_default();
        Ok((exc_id, self.commit(exc, None, hidden)))
    }

    pub(crate) fn move_occurrence(
        &mut self,
        calendar_id: &str,
        master_id: &str,
        original_time: i64,
        (new_start, new_end): (i64, i64),
        new_summary: Option<&str>,
        now: i64,
    ) -> Result<(String, Changes), EmulatorError> {
        if new_end < new_start {
            return Err(EmulatorError::Invalid("new_end is before new_start".into()));
        }
        let summary = new_summary.map(str::to_owned);
        self.upsert_exception(calendar_id, master_id, original_time, now, |master, exc| {
            exc.start_time = Some(recur::time_info_like(master, new_start, false));
            exc.end_time = Some(recur::time_info_like(master, new_end, true));
            exc.status = Some(EventStatus::Confirmed);
            if let Some(s) = summary {
                exc.summary = Some(s);
            }
        })
    }

    pub(crate) fn cancel_occurrence(
        &mut self,
        calendar_id: &str,
        master_id: &str,
        original_time: i64,
        now: i64,
    ) -> Result<(String, Changes), EmulatorError> {
        self.upsert_exception(calendar_id, master_id, original_time, now, |_, exc| {
            exc.status = Some(EventStatus::Cancelled);
        })
    }

    pub(crate) fn add_attendee(
        &mut self,
        calendar_id: &str,
        event_id: &str,
        attendee: Attendee,
    ) -> Result<Changes, EmulatorError> {
        if matches!(attendee.kind, Some(AttendeeType::User) | None)
            && attendee.room_id.is_none()
            && attendee.chat_id.is_none()
            && attendee.third_party_email.is_none()
        {
            let user = attendee.user_id.clone().unwrap_or_default();
            if !self.users.contains_key(&user) {
                return Err(EmulatorError::UnknownUser(user));
            }
        }
        self.update_event(calendar_id, event_id, |ev| {
            ev.attendees.get_or_insert_with(Vec::new).push(attendee);
        })
    }

    pub(crate) fn add_room(
        &mut self,
        calendar_id: &str,
        event_id: &str,
        room_id: &str,
        name: &str,
    ) -> Result<Changes, EmulatorError> {
        self.add_attendee(
            calendar_id,
            event_id,
            Attendee {
                kind: Some(AttendeeType::Resource),
                room_id: Some(room_id.to_owned()),
                display_name: Some(name.to_owned()),
                ..Attendee::default()
            },
        )
    }

    /// Completes an asynchronous room booking (needs_action -> the room's
    /// configured result). No-op if the event or attendee is gone.
    pub(crate) fn finish_booking(&mut self, event_id: &str, room_id: &str) -> Changes {
        let Some(rec) = self.events.get(event_id).filter(|r| !r.deleted) else {
            return Changes::default();
        };
        if self.rooms.get(room_id).is_some_and(|r| r.third_party) {
            return Changes::default();
        }
        let result = self
            .rooms
            .get(room_id)
            .map(|r| r.booking_result.clone())
            .unwrap_or(RsvpStatus::Accept);
        let before = rec.event.clone();
        let hidden = rec.hidden.clone();
        let mut after = before.clone();
        let mut touched = false;
        for a in after.attendees.iter_mut().flatten() {
            if a.room_id.as_deref() == Some(room_id)
                && a.rsvp_status == Some(RsvpStatus::NeedsAction)
            {
                a.rsvp_status = Some(result.clone());
                touched = true;
            }
        }
        if !touched {
            return Changes::default();
        }
        self.commit(after, Some(&before), hidden)
    }

    /// Sets the booking status of a room attendee now (what Feishu's
    /// asynchronous booking, an approval or a room administrator does).
    pub(crate) fn set_room_status(
        &mut self,
        calendar_id: &str,
        event_id: &str,
        room_id: &str,
        status: RsvpStatus,
    ) -> Result<Changes, EmulatorError> {
        let known = self
            .existing(calendar_id, event_id)?
            .event
            .attendees
            .iter()
            .flatten()
            .any(|a| a.room_id.as_deref() == Some(room_id));
        if !known {
            return Err(EmulatorError::Invalid(format!(
                "event {event_id} has no room {room_id}"
            )));
        }
        self.update_event(calendar_id, event_id, |ev| {
            for a in ev.attendees.iter_mut().flatten() {
                if a.room_id.as_deref() == Some(room_id) {
                    a.rsvp_status = Some(status.clone());
                }
            }
        })
    }

    /// Moves a recurring master by `delta` seconds; its exceptions keep
    /// their own times but are keyed again by their new original times
    /// (`<uid>_<original_time + delta>`), as when an organizer moves the
    /// start of a series. Returns the `(old id, new id)` pairs.
    pub(crate) fn shift_series(
        &mut self,
        calendar_id: &str,
        master_id: &str,
        delta: i64,
    ) -> Result<(Vec<(String, String)>, Changes), EmulatorError> {
        let master = self.existing(calendar_id, master_id)?.event.clone();
        let key = EventKey::parse(master_id)
            .map_err(|_| EmulatorError::BadEventId(master_id.to_owned()))?;
        if !key.is_base() || recur::rule_of(&master).is_none() {
            return Err(EmulatorError::NotRecurring(master_id.to_owned()));
        }
        let (s, e) = recur::span(&master).unwrap_or_default();
        let mut changes = self.update_event(calendar_id, master_id, |ev| {
            ev.start_time = Some(recur::time_info_like(&master, s + delta, false));
            ev.end_time = Some(recur::time_info_like(&master, e + delta, true));
        })?;
        let prefix = format!("{}_", key.uid());
        let mut olds: Vec<String> = self
            .events
            .iter()
            .filter(|(id, r)| !r.deleted && id.starts_with(&prefix) && id.as_str() != master_id)
            .map(|(id, _)| id.clone())
            .collect();
        olds.sort();
        let mut pairs = Vec::new();
        for old in olds {
            let Ok(k) = EventKey::parse(&old) else {
                continue;
            };
            let new_key = EventKey::new(key.uid(), k.original_time() + delta)
                .map_err(|e| EmulatorError::Invalid(e.to_string()))?;
            let new_id = new_key.to_string();
            let Some(rec) = self.events.get(&old) else {
                continue;
            };
            let mut ev = rec.event.clone();
            let hidden = rec.hidden.clone();
            ev.event_id = Some(new_id.clone());
            changes.extend(self.remove_everywhere(&old));
            self.events.remove(&new_id);
            changes.extend(self.commit(ev, None, hidden));
            pairs.push((old, new_id));
        }
        Ok((pairs, changes))
    }

    /// A user attendee replies.
    pub(crate) fn reply(
        &mut self,
        calendar_id: &str,
        event_id: &str,
        open_id: &str,
        status: RsvpStatus,
    ) -> Result<Changes, EmulatorError> {
        let known = self
            .existing(calendar_id, event_id)?
            .event
            .attendees
            .iter()
            .flatten()
            .any(|a| a.user_id.as_deref() == Some(open_id));
        if !known {
            return Err(EmulatorError::UnknownUser(open_id.to_owned()));
        }
        self.update_event(calendar_id, event_id, |ev| {
            for a in ev.attendees.iter_mut().flatten() {
                if a.user_id.as_deref() == Some(open_id) {
                    a.rsvp_status = Some(status.clone());
                }
            }
        })
    }

    /// Live items of a calendar (including cancelled exceptions).
    pub(crate) fn events_of(&self, calendar_id: &str) -> Vec<Event> {
        let Some(index) = self.index.get(calendar_id) else {
            return Vec::new();
        };
        index
            .entries
            .iter()
            .filter(|(_, e)| !e.removed)
            .filter_map(|(id, _)| self.events.get(id))
            .filter(|r| !r.deleted)
            .map(|r| r.event.clone())
            .collect()
    }

    /// Inserts many events without pushes, attendee propagation or bookings.
    pub(crate) fn bulk_load(
        &mut self,
        calendar_id: &str,
        events: Vec<Event>,
        now: i64,
    ) -> Result<(), EmulatorError> {
        self.live_calendar(calendar_id)?;
        for mut ev in events {
            let key = self.fill_defaults(calendar_id, &mut ev, now)?;
            let id = key.to_string();
            if let Some(list) = ev.attendees.as_mut() {
                for a in list.iter_mut() {
                    if a.attendee_id.is_none() {
                        a.attendee_id = Some(format!(
                            "{}_{}",
                            attendee_prefix(a.kind.as_ref()),
                            rand_alnum(20).to_lowercase()
                        ));
                    }
                }
            }
            let version = self.next_version();
            self.index
                .entry(calendar_id.to_owned())
                .or_default()
                .set(&id, version, false);
            self.events.insert(
                id,
                EventRec {
                    event: ev,
                    deleted: false,
                    calendars: BTreeSet::from([calendar_id.to_owned()]),
                    hidden: BTreeSet::new(),
                },
            );
        }
        Ok(())
    }

    /// Exceptions (stored events) of the series `uid` visible on a calendar.
    pub(crate) fn exceptions_of(&self, calendar_id: &str, uid: &str) -> Vec<&Event> {
        let prefix = format!("{uid}_");
        let Some(index) = self.index.get(calendar_id) else {
            return Vec::new();
        };
        index
            .entries
            .range(prefix.clone()..)
            .take_while(|(id, _)| id.starts_with(&prefix))
            .filter(|(_, e)| !e.removed)
            .filter_map(|(id, _)| {
                let key = EventKey::parse(id).ok()?;
                (key.uid() == uid && !key.is_base()).then_some(id)
            })
            .filter_map(|id| self.events.get(id))
            .filter(|r| !r.deleted)
            .map(|r| &r.event)
            .collect()
    }

    /// Subscribers (open ids) of a calendar's event changes.
    pub(crate) fn subscribers(&self, calendar_id: &str) -> Vec<String> {
        self.event_subs
            .iter()
            .filter(|(c, _)| c == calendar_id)
            .map(|(_, u)| u.clone())
            .collect()
    }

    /// Users whose calendar list contains `calendar_id` and who subscribed to
    /// calendar-list changes.
    pub(crate) fn calendar_list_subscribers(&self, calendar_id: &str) -> Vec<String> {
        let Some(rec) = self.calendars.get(calendar_id) else {
            return Vec::new();
        };
        self.calendar_subs
            .iter()
            .filter(|u| match &rec.owner {
                Some(owner) => owner == *u,
                None => matches!(rec.cal.kind, Some(CalendarType::Shared)),
            })
            .cloned()
            .collect()
    }
}

/// Tells an rsvp-only edit (only user attendees' replies changed) from an update.
fn classify(before: &Event, after: &Event) -> (ChangeKind, Vec<(String, RsvpStatus)>) {
    let strip = |ev: &Event| {
        let mut ev = ev.clone();
        for a in ev.attendees.iter_mut().flatten() {
            if matches!(a.kind, Some(AttendeeType::User)) {
                a.rsvp_status = None;
            }
        }
        ev
    };
    if strip(before) != strip(after) {
        return (ChangeKind::Update, Vec::new());
    }
    let old: HashMap<&str, &RsvpStatus> = before
        .attendees
        .iter()
        .flatten()
        .filter_map(|a| Some((a.attendee_id.as_deref()?, a.rsvp_status.as_ref()?)))
        .collect();
    let infos: Vec<(String, RsvpStatus)> = after
        .attendees
        .iter()
        .flatten()
        .filter(|a| matches!(a.kind, Some(AttendeeType::User)))
        .filter(|a| {
            a.attendee_id
                .as_deref()
                .and_then(|id| old.get(id))
                .is_none_or(|s| Some(*s) != a.rsvp_status.as_ref())
        })
        .filter_map(|a| Some((a.user_id.clone()?, a.rsvp_status.clone()?)))
        .collect();
    if infos.is_empty() {
        (ChangeKind::Update, Vec::new())
    } else {
        (ChangeKind::Rsvp, infos)
    }
}
