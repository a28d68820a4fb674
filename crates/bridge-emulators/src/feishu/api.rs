//! Calendar v4 endpoints (§3–§6 of the shared Feishu notes).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bridge_core::EventKey;
use bridge_core::feishu::{
    Attendee, AttendeePage, AttendeeType, Calendar, CalendarPage, CalendarType, Event, EventPage,
    EventStatus, RsvpStatus,
};
use serde_json::{Value, json};

use super::auth::{Identity, identify, require_user};
use super::http::{ApiError, ok_data};
use super::model::{CalRec, Store, app_link, valid_calendar_id};
use super::paging::Position;
use super::{Inner, lock, push, recur};
use crate::kit::Lane;

type ApiResult = Result<Response, ApiError>;
type Params = Query<HashMap<String, String>>;

/// Longest `instances` window (two years, leap-day tolerant).
const INSTANCES_MAX_SPAN: i64 = 731 * 86_400;
/// `instance_view` windows must be shorter than 40 days.
const INSTANCE_VIEW_MAX_SPAN: i64 = 40 * 86_400;
/// `instance_view` returns fewer than 1000 instances.
const INSTANCE_VIEW_CAP: usize = 999;

// ----- parameters -----------------------------------------------------------------

fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

fn int_param(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    param(q, key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::invalid(format!("{key} must be an integer")))
        })
        .transpose()
}

fn bool_param(q: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match param(q, key) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ApiError::invalid(format!("{key} must be true or false"))),
    }
}

/// `page_size`: out-of-range values are clamped to `min..=max`.
fn page_size(
    q: &HashMap<String, String>,
    min: i64,
    max: i64,
    default: i64,
) -> Result<usize, ApiError> {
    let v = int_param(q, "page_size")?.unwrap_or(default);
    Ok(usize::try_from(v.clamp(min, max)).unwrap_or(1))
}

/// `user_id_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uit {
    Open,
    Union,
    User,
}

fn user_id_type(q: &HashMap<String, String>) -> Result<Uit, ApiError> {
    match param(q, "user_id_type") {
        None | Some("open_id") => Ok(Uit::Open),
        Some("union_id") => Ok(Uit::Union),
        Some("user_id") => Ok(Uit::User),
        Some(other) => Err(ApiError::invalid(format!("unknown user_id_type {other}"))),
    }
}

fn map_user(store: &Store, open_id: &str, uit: Uit) -> String {
    match (store.users.get(open_id), uit) {
        (Some(u), Uit::Union) => u.union_id.clone(),
        (Some(u), Uit::User) => u.user_id.clone(),
        _ => open_id.to_owned(),
    }
}

fn find_user<'a>(store: &'a Store, id: &str, uit: Uit) -> Option<&'a str> {
    store
        .users
        .values()
        .find(|u| match uit {
            Uit::Open => u.open_id == id,
            Uit::Union => u.union_id == id,
            Uit::User => u.user_id == id,
        })
        .map(|u| u.open_id.as_str())
}

// ----- access -------------------------------------------------------------------------

fn identity_key(ident: &Identity) -> String {
    match ident {
        Identity::Tenant => "tenant".into(),
        Identity::User { open_id } => open_id.clone(),
    }
}

/// May `ident` see `rec` at all (events, get)?
fn can_access(rec: &CalRec, ident: &Identity) -> bool {
    match ident {
        Identity::Tenant => true,
        Identity::User { open_id } => {
            if rec.app_owned {
                return false;
            }
            match &rec.owner {
                Some(owner) => owner == open_id,
                None => true,
            }
        }
    }
}

/// Is `rec` in `ident`'s calendar list?
fn in_list(rec: &CalRec, ident: &Identity) -> bool {
    if matches!(rec.cal.kind, Some(CalendarType::Resource)) {
        return false;
    }
    match ident {
        Identity::Tenant => true,
        Identity::User { .. } => can_access(rec, ident) && (rec.owner.is_some() || !rec.app_owned),
    }
}

fn check_calendar<'a>(
    store: &'a Store,
    id: &str,
    ident: &Identity,
) -> Result<&'a CalRec, ApiError> {
    if !valid_calendar_id(id) {
        return Err(ApiError::cal(191001));
    }
    let rec = store
        .calendars
        .get(id)
        .ok_or_else(|| ApiError::cal(191000))?;
    if rec.deleted {
        return Err(ApiError::cal(191003));
    }
    if !can_access(rec, ident) {
        return Err(ApiError::cal(191002));
    }
    Ok(rec)
}

fn calendar_view(rec: &CalRec, ident: &Identity) -> Calendar {
    let mut cal = rec.cal.clone();
    let role = match (ident, &rec.owner) {
        (Identity::User { open_id }, Some(owner)) if owner == open_id => "owner",
        (Identity::Tenant, None) if !matches!(rec.cal.kind, Some(CalendarType::Resource)) => {
            "owner"
        }
        (_, _) if matches!(rec.cal.kind, Some(CalendarType::Resource)) => "free_busy_reader",
        _ => "reader",
    };
    cal.role = Some(role.into());
    cal.is_deleted = Some(rec.deleted);
    cal
}

// ----- calendars ----------------------------------------------------------------------

/// `GET /open-apis/calendar/v4/calendars`.
pub(crate) async fn list_calendars(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let ps = page_size(&q, 50, 1000, 500)?;
    let scope = identity_key(&ident);
    let codec = inner.tokens();
    let store = lock(&inner.store);
    let cursor = if let Some(pt) = param(&q, "page_token") {
        codec
            .open(Lane::Page, "ListCalendars", pt, "calendars", &scope)
            .ok_or_else(|| ApiError::cal(190008))?
    } else if let Some(st) = param(&q, "sync_token") {
        let c = codec
            .open(Lane::Sync, "ListCalendars", st, "calendars", &scope)
            .ok_or_else(|| ApiError::cal(190008))?;
        Position {
            kind: "calendars".into(),
            scope: scope.clone(),
            mode: "delta".into(),
            snap: store.version,
            base: c.snap,
            after_version: c.snap,
            ..Position::default()
        }
    } else {
        Position {
            kind: "calendars".into(),
            scope: scope.clone(),
            mode: "full".into(),
            snap: store.version,
            ..Position::default()
        }
    };
    let visible = store.calendars.values().filter(|r| in_list(r, &ident));
    let mut picked: Vec<&CalRec> = if cursor.mode == "delta" {
        let mut v: Vec<&CalRec> = visible
            .filter(|r| r.version > cursor.after_version && r.version <= cursor.snap)
            .collect();
        v.sort_by_key(|r| r.version);
        v
    } else {
        visible
            .filter(|r| !r.deleted)
            .filter(|r| {
                cursor
                    .after
                    .as_deref()
                    .is_none_or(|a| r.cal.calendar_id.as_deref().unwrap_or_default() > a)
            })
            .collect()
    };
    let has_more = picked.len() > ps;
    picked.truncate(ps);
    let mut page = CalendarPage {
        has_more,
        calendar_list: picked.iter().map(|r| calendar_view(r, &ident)).collect(),
        ..CalendarPage::default()
    };
    if has_more {
        let mut next = cursor.clone();
        if let Some(last) = picked.last() {
            next.after = last.cal.calendar_id.clone();
            next.after_version = last.version;
        }
        page.page_token = Some(codec.seal(Lane::Page, "ListCalendars", next));
    } else {
        page.sync_token = Some(codec.seal(
            Lane::Sync,
            "ListCalendars",
            Position {
                kind: "calendars".into(),
                scope,
                snap: cursor.snap,
                ..Position::default()
            },
        ));
    }
    Ok(ok_data(page))
}

/// `POST /open-apis/calendar/v4/calendars/primary`.
pub(crate) async fn primary(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Params,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let uit = user_id_type(&q)?;
    let app_id = inner.app_id();
    let mut store = lock(&inner.store);
    let (cal_id, user_id) = match &ident {
        Identity::Tenant => (store.app_calendar(&app_id), app_id),
        Identity::User { open_id } => {
            let cal = store
                .primary_of(open_id)
                .ok_or_else(|| ApiError::cal(195100))?
                .to_owned();
            (cal, map_user(&store, open_id, uit))
        }
    };
    let rec = store
        .calendars
        .get(&cal_id)
        .ok_or_else(|| ApiError::cal(191000))?;
    Ok(ok_data(json!({
        "calendars": [{ "calendar": calendar_view(rec, &ident), "user_id": user_id }]
    })))
}

/// `POST /open-apis/calendar/v4/calendars/primarys` (body `user_ids`).
pub(crate) async fn primarys(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let uit = user_id_type(&q)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::invalid("body must be JSON"))?;
    let ids: Vec<String> = body
        .get("user_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("user_ids is required"))?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let store = lock(&inner.store);
    let mut out = Vec::new();
    for id in ids {
        let Some(open_id) = find_user(&store, &id, uit) else {
            continue;
        };
        let Some(rec) = store
            .primary_of(open_id)
            .and_then(|c| store.calendars.get(c))
        else {
            continue;
        };
        out.push(json!({"calendar": calendar_view(rec, &ident), "user_id": id}));
    }
    Ok(ok_data(json!({ "calendars": out })))
}

/// `GET /open-apis/calendar/v4/calendars/:calendar_id`.
pub(crate) async fn get_calendar(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(cal_id): Path<String>,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let store = lock(&inner.store);
    let rec = check_calendar(&store, &cal_id, &ident)?;
    Ok(ok_data(calendar_view(rec, &ident)))
}

/// `POST /open-apis/calendar/v4/calendars/subscription` (user only).
pub(crate) async fn subscribe_calendars(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
) -> ApiResult {
    let open_id = require_user(identify(&inner, &headers)?)?;
    lock(&inner.store).calendar_subs.insert(open_id);
    Ok(ok_data(json!({})))
}

/// `POST /open-apis/calendar/v4/calendars/unsubscription` (user only).
pub(crate) async fn unsubscribe_calendars(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
) -> ApiResult {
    let open_id = require_user(identify(&inner, &headers)?)?;
    lock(&inner.store).calendar_subs.remove(&open_id);
    Ok(ok_data(json!({})))
}

/// `POST /open-apis/calendar/v4/calendars/:calendar_id/events/subscription`.
pub(crate) async fn subscribe_events(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(cal_id): Path<String>,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let open_id = require_user(ident.clone())?;
    let mut store = lock(&inner.store);
    check_calendar(&store, &cal_id, &ident)?;
    store.event_subs.insert((cal_id, open_id));
    Ok(ok_data(json!({})))
}

/// `POST /open-apis/calendar/v4/calendars/:calendar_id/events/unsubscription`.
pub(crate) async fn unsubscribe_events(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(cal_id): Path<String>,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let open_id = require_user(ident.clone())?;
    let mut store = lock(&inner.store);
    check_calendar(&store, &cal_id, &ident)?;
    store.event_subs.remove(&(cal_id, open_id));
    Ok(ok_data(json!({})))
}

// ----- events -------------------------------------------------------------------------

fn map_attendee(store: &Store, a: &Attendee, uit: Uit) -> Attendee {
    let mut a = a.clone();
    if matches!(a.kind, Some(AttendeeType::User))
        && let Some(u) = &a.user_id
    {
        a.user_id = Some(map_user(store, u, uit));
    }
    if let Some(o) = &a.operate_id {
        a.operate_id = Some(map_user(store, o, uit));
    }
    a
}

fn map_organizer(store: &Store, ev: &mut Event, uit: Uit) {
    if let Some(org) = ev.event_organizer.as_mut()
        && let Some(u) = &org.user_id
    {
        org.user_id = Some(map_user(store, u, uit));
    }
}

/// An event as list-events returns it: no attendees, no meeting settings.
fn list_item(store: &Store, ev: &Event, uit: Uit) -> Event {
    let mut e = ev.clone();
    e.attendees = None;
    e.has_more_attendee = None;
    e.event_check_in = None;
    if let Some(v) = e.vchat.as_mut() {
        v.meeting_settings = None;
    }
    map_organizer(store, &mut e, uit);
    e
}

fn deleted_item(event_id: &str) -> Event {
    Event {
        event_id: Some(event_id.to_owned()),
        status: Some(EventStatus::Cancelled),
        ..Event::default()
    }
}

/// anchor_time rule (§4.2): singles ending at/after the anchor, every master,
/// exceptions whose original time and end are at/after it.
fn keep_for_anchor(ev: &Event, anchor: i64) -> bool {
    let end = recur::span(ev).map_or(i64::MAX, |(_, e)| e);
    match ev
        .event_id
        .as_deref()
        .and_then(|id| EventKey::parse(id).ok())
    {
        Some(k) if !k.is_base() => k.original_time() >= anchor && end >= anchor,
        _ if recur::rule_of(ev).is_some() => true,
        _ => end >= anchor,
    }
}

fn overlaps(s: i64, e: i64, from: i64, to: i64) -> bool {
    if s == e {
        s >= from && s < to
    } else {
        s < to && e > from
    }
}

fn keep_for_range(ev: &Event, from: i64, to: i64) -> bool {
    let Some((s, e)) = recur::span(ev) else {
        return false;
    };
    if recur::rule_of(ev).is_some() {
        let end = recur::series_end(ev).ok().flatten();
        return s < to && end.is_none_or(|end| end > from);
    }
    overlaps(s, e, from, to)
}

/// `GET /open-apis/calendar/v4/calendars/:calendar_id/events`.
pub(crate) async fn list_events(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(cal_id): Path<String>,
    Query(q): Params,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let uit = user_id_type(&q)?;
    let ps = page_size(&q, 50, 1000, 500)?;
    let anchor = int_param(&q, "anchor_time")?;
    let start = int_param(&q, "start_time")?;
    let end = int_param(&q, "end_time")?;
    let page_token = param(&q, "page_token");
    let sync_token = param(&q, "sync_token");
    let ranged = start.is_some() || end.is_some();
    if ranged {
        if sync_token.is_some() {
            return Err(ApiError::cal(190009));
        }
        if page_token.is_some() || anchor.is_some() {
            return Err(ApiError::invalid(
                "start_time/end_time cannot be combined with page_token or anchor_time",
            ));
        }
    }
    let codec = inner.tokens();
    let store = lock(&inner.store);
    let rec = check_calendar(&store, &cal_id, &ident)?;
    if matches!(
        rec.cal.kind,
        Some(CalendarType::Google | CalendarType::Exchange)
    ) {
        return Err(ApiError::cal(191004));
    }
    let empty = Default::default();
    let index = store.index.get(&cal_id).unwrap_or(&empty);

    if ranged {
        let (Some(from), Some(to)) = (start, end) else {
            return Err(ApiError::invalid(
                "start_time and end_time must be given together",
            ));
        };
        if from > to {
            return Err(ApiError::invalid("start_time is after end_time"));
        }
        let items: Vec<Event> = index
            .entries
            .iter()
            .filter(|(_, e)| !e.removed)
            .filter_map(|(id, _)| store.events.get(id))
            .filter(|r| !r.deleted && keep_for_range(&r.event, from, to))
            .take(ps)
            .map(|r| list_item(&store, &r.event, uit))
            .collect();
        return Ok(ok_data(EventPage {
            has_more: false,
            items,
            ..EventPage::default()
        }));
    }

    let cursor = if let Some(pt) = page_token {
        codec
            .open(Lane::Page, "ListEvents", pt, "events", &cal_id)
            .ok_or_else(|| ApiError::cal(190008))?
    } else if let Some(st) = sync_token {
        let c = codec
            .open(Lane::Sync, "ListEvents", st, "events", &cal_id)
            .ok_or_else(|| ApiError::cal(190008))?;
        Position {
            kind: "events".into(),
            scope: cal_id.clone(),
            mode: "delta".into(),
            snap: store.version,
            base: c.snap,
            after_version: c.snap,
            ..Position::default()
        }
    } else {
        Position {
            kind: "events".into(),
            scope: cal_id.clone(),
            mode: if anchor.is_some() { "anchor" } else { "full" }.into(),
            anchor,
            snap: store.version,
            ..Position::default()
        }
    };

    let mut items = Vec::new();
    let mut has_more = false;
    let mut next = cursor.clone();
    if cursor.mode == "delta" {
        let lo = cursor.after_version.saturating_add(1);
        for (version, id) in index.by_version.range(lo..=cursor.snap.max(lo)) {
            if *version > cursor.snap {
                break;
            }
            if items.len() == ps {
                has_more = true;
                break;
            }
            let removed = index.entries.get(id).is_none_or(|e| e.removed);
            let item = match store.events.get(id) {
                Some(r) if !removed && !r.deleted => list_item(&store, &r.event, uit),
                _ => deleted_item(id),
            };
            items.push(item);
            next.after_version = *version;
        }
    } else {
        let range = match &cursor.after {
            Some(after) => index.entries.range::<String, _>((
                std::ops::Bound::Excluded(after.clone()),
                std::ops::Bound::Unbounded,
            )),
            None => index.entries.range::<String, _>(..),
        };
        for (id, entry) in range {
            if entry.removed {
                continue;
            }
            let Some(r) = store.events.get(id).filter(|r| !r.deleted) else {
                continue;
            };
            if let Some(a) = cursor.anchor
                && !keep_for_anchor(&r.event, a)
            {
                continue;
            }
            if items.len() == ps {
                has_more = true;
                break;
            }
            items.push(list_item(&store, &r.event, uit));
            next.after = Some(id.clone());
        }
    }
    let mut page = EventPage {
        has_more,
        items,
        ..EventPage::default()
    };
    if has_more {
        page.page_token = Some(codec.seal(Lane::Page, "ListEvents", next));
    } else {
        page.sync_token = Some(codec.seal(
            Lane::Sync,
            "ListEvents",
            Position {
                kind: "events".into(),
                scope: cal_id,
                snap: cursor.snap,
                ..Position::default()
            },
        ));
    }
    Ok(ok_data(page))
}

/// Looks up an event id on a calendar: stored items first, then virtual
/// instances `<uid>_<t>` of a stored master.
fn lookup_event(store: &Store, cal_id: &str, event_id: &str) -> Result<Event, ApiError> {
    let key = EventKey::parse(event_id).map_err(|_| ApiError::cal(193000))?;
    if let Some(entry) = store
        .index
        .get(cal_id)
        .and_then(|i| i.entries.get(event_id))
    {
        let rec = store
            .events
            .get(event_id)
            .ok_or_else(|| ApiError::cal(193001))?;
        if entry.removed || rec.deleted {
            return Err(ApiError::cal(193003));
        }
        return Ok(rec.event.clone());
    }
    if !key.is_base() {
        let master_id = key.master().to_string();
        if let Some(master) = store.event_in(cal_id, &master_id)
            && recur::rule_of(&master.event).is_some()
            && recur::is_occurrence(&master.event, key.original_time()).unwrap_or(false)
        {
            return Ok(virtual_instance(cal_id, &master.event, &key));
        }
    }
    Err(ApiError::cal(193001))
}

/// An unmodified occurrence of a master as a full event object.
fn virtual_instance(cal_id: &str, master: &Event, key: &EventKey) -> Event {
    let (s, e) = recur::span(master).unwrap_or_default();
    let t = key.original_time();
    let mut ev = master.clone();
    ev.event_id = Some(key.to_string());
    ev.recurrence = Some(String::new());
    ev.is_exception = Some(false);
    ev.recurring_event_id = master.event_id.clone();
    ev.start_time = Some(recur::time_info_like(master, t, false));
    ev.end_time = Some(recur::time_info_like(master, t + (e - s), true));
    ev.app_link = Some(app_link(
        master.organizer_calendar_id.as_deref().unwrap_or(cal_id),
        key,
        t,
    ));
    ev
}

/// `GET /open-apis/calendar/v4/calendars/:calendar_id/events/:event_id`.
pub(crate) async fn get_event(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((cal_id, event_id)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let uit = user_id_type(&q)?;
    let need_attendee = bool_param(&q, "need_attendee")?;
    let need_settings = bool_param(&q, "need_meeting_settings")?;
    let max_att = int_param(&q, "max_attendee_num")?
        .unwrap_or(10)
        .clamp(1, 100);
    let store = lock(&inner.store);
    check_calendar(&store, &cal_id, &ident)?;
    let mut ev = lookup_event(&store, &cal_id, &event_id)?;
    if need_attendee {
        let all = ev.attendees.take().unwrap_or_default();
        let limit = usize::try_from(max_att).unwrap_or(10);
        ev.has_more_attendee = Some(all.len() > limit);
        ev.attendees = Some(
            all.iter()
                .take(limit)
                .map(|a| map_attendee(&store, a, uit))
                .collect(),
        );
    } else {
        ev.attendees = None;
        ev.has_more_attendee = None;
    }
    if !need_settings && let Some(v) = ev.vchat.as_mut() {
        v.meeting_settings = None;
    }
    map_organizer(&store, &mut ev, uit);
    Ok(ok_data(json!({ "event": ev })))
}

/// `GET …/events/:event_id/attendees`.
pub(crate) async fn list_attendees(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((cal_id, event_id)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let uit = user_id_type(&q)?;
    let ps = page_size(&q, 10, 100, 20)?;
    let store = lock(&inner.store);
    check_calendar(&store, &cal_id, &ident)?;
    let ev = lookup_event(&store, &cal_id, &event_id)?;
    let scope = format!("{cal_id}/{event_id}");
    let offset = match param(&q, "page_token") {
        Some(pt) => {
            inner
                .tokens()
                .open(Lane::Page, "ListAttendees", pt, "attendees", &scope)
                .ok_or_else(|| ApiError::cal(190008))?
                .offset
        }
        None => 0,
    };
    let all = ev.attendees.unwrap_or_default();
    let items: Vec<Attendee> = all
        .iter()
        .skip(offset)
        .take(ps)
        .map(|a| map_attendee(&store, a, uit))
        .collect();
    let has_more = offset + items.len() < all.len();
    let page_token = has_more.then(|| {
        inner.tokens().seal(
            Lane::Page,
            "ListAttendees",
            Position {
                kind: "attendees".into(),
                scope,
                offset: offset + items.len(),
                ..Position::default()
            },
        )
    });
    Ok(ok_data(AttendeePage {
        has_more,
        page_token,
        items,
    }))
}

/// Instance objects of one series (or single event) within `(from, to)`,
/// with exceptions applied, sorted by start.
fn expand(
    store: &Store,
    cal_id: &str,
    ev: &Event,
    from: i64,
    to: i64,
    cap: usize,
) -> Result<Vec<Event>, ApiError> {
    let Some(id) = ev.event_id.as_deref() else {
        return Ok(Vec::new());
    };
    let key = EventKey::parse(id).map_err(|_| ApiError::cal(193000))?;
    if recur::rule_of(ev).is_none() {
        let keep = recur::span(ev).is_some_and(|(s, e)| overlaps(s, e, from, to));
        return Ok(if keep { vec![ev.clone()] } else { Vec::new() });
    }
    let exceptions = store.exceptions_of(cal_id, key.uid());
    let mut by_time: HashMap<i64, &Event> = HashMap::new();
    for x in &exceptions {
        if let Some(k) = x.event_id.as_deref().and_then(|i| EventKey::parse(i).ok()) {
            by_time.insert(k.original_time(), x);
        }
    }
    let starts =
        recur::occurrences(ev, from, to, cap).map_err(|e| ApiError::invalid(e.to_string()))?;
    let mut out: Vec<Event> = starts
        .into_iter()
        .filter(|t| !by_time.contains_key(t))
        .filter_map(|t| EventKey::new(key.uid(), t).ok())
        .map(|k| virtual_instance(cal_id, ev, &k))
        .collect();
    for x in exceptions {
        let live = !matches!(x.status, Some(EventStatus::Cancelled));
        if live && recur::span(x).is_some_and(|(s, e)| overlaps(s, e, from, to)) {
            out.push(x.clone());
        }
    }
    out.sort_by_key(|e| (recur::span(e).map(|(s, _)| s), e.event_id.clone()));
    out.truncate(cap);
    Ok(out)
}

fn instance_object(ev: &Event) -> Event {
    Event {
        event_id: ev.event_id.clone(),
        summary: ev.summary.clone(),
        description: ev.description.clone(),
        start_time: ev.start_time.clone(),
        end_time: ev.end_time.clone(),
        status: ev.status.clone(),
        is_exception: ev.is_exception.or(Some(false)),
        app_link: ev.app_link.clone(),
        location: ev.location.clone(),
        ..Event::default()
    }
}

fn required_range(q: &HashMap<String, String>, max_span: i64) -> Result<(i64, i64), ApiError> {
    let (Some(from), Some(to)) = (int_param(q, "start_time")?, int_param(q, "end_time")?) else {
        return Err(ApiError::invalid("start_time and end_time are required"));
    };
    if from >= to {
        return Err(ApiError::invalid("start_time must be before end_time"));
    }
    if to - from > max_span {
        return Err(ApiError::invalid("time range is too long"));
    }
    Ok((from, to))
}

/// `GET …/events/:event_id/instances`.
pub(crate) async fn instances(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((cal_id, event_id)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let (from, to) = required_range(&q, INSTANCES_MAX_SPAN)?;
    let ps = page_size(&q, 10, 500, 50)?;
    let store = lock(&inner.store);
    check_calendar(&store, &cal_id, &ident)?;
    let ev = lookup_event(&store, &cal_id, &event_id)?;
    let scope = format!("{cal_id}/{event_id}");
    let offset = match param(&q, "page_token") {
        Some(pt) => {
            let c = inner
                .tokens()
                .open(Lane::Page, "Instances", pt, "instances", &scope)
                .ok_or_else(|| ApiError::cal(190008))?;
            if c.range != Some((from, to)) {
                return Err(ApiError::invalid("page_token was issued for another range"));
            }
            c.offset
        }
        None => 0,
    };
    let all = expand(&store, &cal_id, &ev, from, to, offset + ps + 1)?;
    let items: Vec<Event> = all
        .iter()
        .skip(offset)
        .take(ps)
        .map(instance_object)
        .collect();
    let has_more = all.len() > offset + items.len();
    let page_token = has_more.then(|| {
        inner.tokens().seal(
            Lane::Page,
            "Instances",
            Position {
                kind: "instances".into(),
                scope,
                offset: offset + items.len(),
                range: Some((from, to)),
                ..Position::default()
            },
        )
    });
    let mut data = json!({ "items": items, "has_more": has_more });
    if let Some(pt) = page_token {
        data["page_token"] = json!(pt);
    }
    Ok(ok_data(data))
}

/// `GET …/events/instance_view`.
pub(crate) async fn instance_view(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(cal_id): Path<String>,
    Query(q): Params,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let uit = user_id_type(&q)?;
    let (from, to) = required_range(&q, INSTANCE_VIEW_MAX_SPAN - 1)?;
    let store = lock(&inner.store);
    let rec = check_calendar(&store, &cal_id, &ident)?;
    if !matches!(
        rec.cal.kind,
        Some(CalendarType::Primary | CalendarType::Shared)
    ) {
        return Err(ApiError::cal(191004));
    }
    let index = store.index.get(&cal_id);
    let mut items = Vec::new();
    for (id, entry) in index.iter().flat_map(|i| i.entries.iter()) {
        if entry.removed {
            continue;
        }
        let Some(r) = store.events.get(id).filter(|r| !r.deleted) else {
            continue;
        };
        let is_exception = EventKey::parse(id).is_ok_and(|k| !k.is_base());
        if is_exception {
            continue; // applied through their master
        }
        items.extend(expand(
            &store,
            &cal_id,
            &r.event,
            from,
            to,
            INSTANCE_VIEW_CAP,
        )?);
    }
    items.sort_by_key(|e| (recur::span(e).map(|(s, _)| s), e.event_id.clone()));
    items.truncate(INSTANCE_VIEW_CAP);
    let items: Vec<Event> = items
        .into_iter()
        .map(|mut e| {
            e.attendees = Some(
                e.attendees
                    .unwrap_or_default()
                    .iter()
                    .map(|a| map_attendee(&store, a, uit))
                    .collect(),
            );
            e.recurrence = None;
            if let Some(v) = e.vchat.as_mut() {
                v.meeting_settings = None;
            }
            map_organizer(&store, &mut e, uit);
            e
        })
        .collect();
    Ok(ok_data(json!({ "items": items })))
}

/// `POST …/events/:event_id/reply` (body `{rsvp_status}`, user token).
pub(crate) async fn reply(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((cal_id, event_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let ident = identify(&inner, &headers)?;
    let open_id = require_user(ident.clone())?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::invalid("body must be JSON"))?;
    let status = match body.get("rsvp_status").and_then(Value::as_str) {
        Some(s @ ("accept" | "decline" | "tentative")) => RsvpStatus::from_wire(s),
        _ => {
            return Err(ApiError::invalid(
                "rsvp_status must be accept, decline or tentative",
            ));
        }
    };
    let changes = {
        let mut store = lock(&inner.store);
        check_calendar(&store, &cal_id, &ident)?;
        lookup_event(&store, &cal_id, &event_id)?;
        store
            .reply(&cal_id, &event_id, &open_id, status)
            .map_err(|_| ApiError::cal(193002))?
    };
    push::announce(&inner, changes);
    Ok(ok_data(json!({})))
}
