//! `events.list` and `events.instances` (sinks-api.md A.6): parameters,
//! the `singleEvents` × `showDeleted` matrix, filters, ordering, paging by
//! sort key, sync tokens and deltas.
//!
//! Paging continues after the sort key of the last item returned (not an
//! offset), so deletions between pages never make a listing skip an item.
//! `nextSyncToken` is the store version when the listing started; anything
//! written later comes back in the next delta.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::model::{Calendar, EventRec, Instance, Role, render_event};
use super::paging::{Codec, PageCursor};
use super::recur::{Occurrence, overlaps};
use super::time::{self, EventTime};
use super::util::rfc3339_ms;

/// Default page size.
const DEFAULT_MAX_RESULTS: usize = 250;
/// Largest page size; larger requests are capped.
pub(crate) const MAX_MAX_RESULTS: usize = 2500;
/// Most instances one series contributes to a listing.
const MAX_INSTANCES: usize = 100_000;

/// `orderBy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderBy {
    StartTime,
    Updated,
}

/// Parsed list / instances parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub(crate) max_results: usize,
    pub(crate) page_token: Option<String>,
    pub(crate) sync_token: Option<String>,
    pub(crate) single_events: bool,
    pub(crate) order_by: Option<OrderBy>,
    pub(crate) show_deleted: Option<bool>,
    pub(crate) time_min: Option<DateTime<Utc>>,
    pub(crate) time_max: Option<DateTime<Utc>>,
    pub(crate) updated_min: Option<DateTime<Utc>>,
    pub(crate) ical_uid: Option<String>,
    pub(crate) private_props: Vec<(String, String)>,
    pub(crate) shared_props: Vec<(String, String)>,
    pub(crate) q: Option<String>,
    pub(crate) time_zone: Option<Tz>,
    pub(crate) max_attendees: Option<usize>,
    pub(crate) original_start: Option<EventTime>,
}

fn bad_param(name: &str, value: &str) -> ApiError {
    ApiError::invalid(format!("Invalid value '{value}' for parameter '{name}'."))
        .at("parameter", name)
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad_param(name, v)),
    }
}

fn parse_prop(name: &str, v: &str) -> Result<(String, String), ApiError> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_owned(), val.to_owned())),
        _ => Err(bad_param(name, v)),
    }
}

impl ListQuery {
    /// Parses query parameters (unknown ones are ignored, as Google does).
    pub(crate) fn parse(params: &[(String, String)]) -> Result<Self, ApiError> {
        let mut q = Self {
            max_results: DEFAULT_MAX_RESULTS,
            ..Self::default()
        };
        for (k, v) in params {
            match k.as_str() {
                "maxResults" => {
                    let n: i64 = v.parse().map_err(|_| bad_param(k, v))?;
                    if n < 1 {
                        return Err(bad_param(k, v));
                    }
                    q.max_results = usize::try_from(n)
                        .unwrap_or(MAX_MAX_RESULTS)
                        .min(MAX_MAX_RESULTS);
                }
                "pageToken" => q.page_token = Some(v.clone()),
                "syncToken" => q.sync_token = Some(v.clone()),
                "singleEvents" => q.single_events = parse_bool(k, v)?,
                "showDeleted" => q.show_deleted = Some(parse_bool(k, v)?),
                "orderBy" => {
                    q.order_by = Some(match v.as_str() {
                        "startTime" => OrderBy::StartTime,
                        "updated" => OrderBy::Updated,
                        _ => return Err(bad_param(k, v)),
                    });
                }
                "timeMin" | "timeMax" | "updatedMin" => {
                    let t = time::parse_rfc3339(v).ok_or_else(|| bad_param(k, v))?;
                    match k.as_str() {
                        "timeMin" => q.time_min = Some(t),
                        "timeMax" => q.time_max = Some(t),
                        _ => q.updated_min = Some(t),
                    }
                }
                "originalStart" => {
                    let t = time::parse_rfc3339(v)
                        .map(EventTime::DateTime)
                        .or_else(|| {
                            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                                .ok()
                                .map(EventTime::Date)
                        })
                        .ok_or_else(|| bad_param(k, v))?;
                    q.original_start = Some(t);
                }
                "iCalUID" => q.ical_uid = Some(v.clone()),
                "privateExtendedProperty" => q.private_props.push(parse_prop(k, v)?),
                "sharedExtendedProperty" => q.shared_props.push(parse_prop(k, v)?),
                "q" => q.q = Some(v.to_lowercase()),
                "timeZone" => {
                    q.time_zone = Some(time::parse_zone(v).ok_or_else(|| bad_param(k, v))?);
                }
                "maxAttendees" => {
                    let n: usize = v.parse().map_err(|_| bad_param(k, v))?;
                    if n < 1 {
                        return Err(bad_param(k, v));
                    }
                    q.max_attendees = Some(n);
                }
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (q.time_min, q.time_max)
            && b <= a
        {
            return Err(ApiError::time_range_empty("timeMax"));
        }
        if q.order_by == Some(OrderBy::StartTime) && !q.single_events {
            return Err(ApiError::bad_request(
                "The requested ordering is not available for the particular query.",
            )
            .at("parameter", "orderBy"));
        }
        if q.sync_token.is_some() {
            let forbidden = [
                ("iCalUID", q.ical_uid.is_some()),
                ("orderBy", q.order_by.is_some()),
                ("privateExtendedProperty", !q.private_props.is_empty()),
                ("q", q.q.is_some()),
                ("sharedExtendedProperty", !q.shared_props.is_empty()),
                ("timeMin", q.time_min.is_some()),
                ("timeMax", q.time_max.is_some()),
                ("updatedMin", q.updated_min.is_some()),
            ];
            if let Some((name, _)) = forbidden.iter().find(|(_, set)| *set) {
                return Err(ApiError::invalid(format!(
                    "Sync token cannot be used with the '{name}' parameter."
                ))
                .at("parameter", name));
            }
            if q.show_deleted == Some(false) {
                return Err(ApiError::invalid(
                    "Deleted events are always included in incremental sync; \
                     showDeleted=false is not allowed with a sync token.",
                )
                .at("parameter", "showDeleted"));
            }
        }
        Ok(q)
    }

    fn show_deleted(&self) -> bool {
        self.show_deleted.unwrap_or(false)
    }
}

/// How `privateExtendedProperty` / `sharedExtendedProperty` constraints
/// combine (the docs conflict, sinks-api.md A.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PropertyMatch {
    /// Every constraint must match (the discovery document).
    #[default]
    All,
    /// Any constraint may match (translated guide pages).
    Any,
}

/// Listing environment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env<'a> {
    pub(crate) codec: Codec<'a>,
    /// Upper bound of expansions when no `timeMax` is given.
    pub(crate) horizon: DateTime<Utc>,
    pub(crate) props: PropertyMatch,
    /// The store version now.
    pub(crate) version: u64,
}

#[derive(Debug, Clone)]
enum Src<'a> {
    Rec(&'a EventRec),
    Inst(&'a EventRec, Occurrence),
}

#[derive(Debug, Clone)]
struct Item<'a> {
    key: String,
    src: Src<'a>,
}

impl Src<'_> {
    fn materialize(&self, calendar_id: &str) -> Map<String, Value> {
        match self {
            Self::Rec(r) => r.res.clone(),
            Self::Inst(m, occ) => m.instance(occ, calendar_id),
        }
    }

    fn start(&self) -> EventTime {
        match self {
            Self::Rec(r) => r.start,
            Self::Inst(_, occ) => occ.start,
        }
    }

    fn original(&self) -> Option<EventTime> {
        match self {
            Self::Rec(r) => r.original,
            Self::Inst(_, occ) => Some(occ.original),
        }
    }
}

fn n20(n: u64) -> String {
    format!("{n:020}")
}

fn t_key(t: DateTime<Utc>) -> String {
    let shifted = u64::try_from(t.timestamp().saturating_add(100_000_000_000_000)).unwrap_or(0);
    format!("{shifted:020}")
}

fn sub_key(original: Option<EventTime>, zone: Tz) -> String {
    original.map_or_else(
        || t_key(DateTime::<Utc>::UNIX_EPOCH),
        |o| t_key(o.instant(zone)),
    )
}

fn props_match(
    res: &Map<String, Value>,
    scope: &str,
    want: &[(String, String)],
    mode: PropertyMatch,
) -> bool {
    if want.is_empty() {
        return true;
    }
    let props = res
        .get("extendedProperties")
        .and_then(|e| e.get(scope))
        .and_then(Value::as_object);
    let one = |(k, v): &(String, String)| {
        props
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .is_some_and(|s| s == v)
    };
    match mode {
        PropertyMatch::All => want.iter().all(one),
        PropertyMatch::Any => want.iter().any(one),
    }
}

fn text_match(res: &Map<String, Value>, needle: &str) -> bool {
    let field = |k: &str| {
        res.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| s.to_lowercase().contains(needle))
    };
    let attendee = res
        .get("attendees")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|x| {
                ["email", "displayName"].iter().any(|k| {
                    x.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.to_lowercase().contains(needle))
                })
            })
        });
    field("summary") || field("description") || field("location") || attendee
}

fn filters_pass(rec: &EventRec, q: &ListQuery, env: &Env<'_>) -> bool {
    if let Some(uid) = &q.ical_uid
        && rec.ical_uid() != uid
    {
        return false;
    }
    if let Some(min) = q.updated_min
        && rec.updated < min
    {
        return false;
    }
    if let Some(needle) = &q.q
        && !text_match(&rec.res, needle)
    {
        return false;
    }
    props_match(&rec.res, "private", &q.private_props, env.props)
        && props_match(&rec.res, "shared", &q.shared_props, env.props)
}

fn rec_in_window(rec: &EventRec, q: &ListQuery, zone: Tz) -> bool {
    overlaps(
        rec.start.instant(zone),
        rec.end.instant(zone),
        q.time_min,
        q.time_max,
    )
}

fn instance_id(master: &EventRec, occ: &Occurrence) -> String {
    format!("{}_{}", master.id(), occ.original.id_suffix())
}

/// Live master of an exception, if any.
fn live_master<'a>(cal: &'a Calendar, rec: &EventRec) -> Option<&'a EventRec> {
    rec.master
        .as_ref()
        .and_then(|m| cal.events.get(m))
        .filter(|m| !m.cancelled() && m.series.is_some())
}

fn order_key(src: &Src<'_>, version: u64, seq: u64, id: &str, q: &ListQuery, zone: Tz) -> String {
    match q.order_by {
        Some(OrderBy::StartTime) => format!("{}|{id}", t_key(src.start().instant(zone))),
        Some(OrderBy::Updated) => format!("{}|{id}", n20(version)),
        None => format!("{}|{}|{id}", n20(seq), sub_key(src.original(), zone)),
    }
}

/// Items of a full (non-delta) listing.
fn full_items<'a>(cal: &'a Calendar, q: &ListQuery, env: &Env<'_>, zone: Tz) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    let to = q.time_max.unwrap_or(env.horizon);
    // With `updatedMin`, deletions since then are always included.
    let show_deleted = q.show_deleted() || q.updated_min.is_some();
    for rec in cal.events.values() {
        let push = |out: &mut Vec<Item<'a>>, src: Src<'a>, id: &str, version: u64| {
            let key = order_key(&src, version, rec.seq, id, q, zone);
            out.push(Item { key, src });
        };
        if rec.master.is_some() {
            let master_live = live_master(cal, rec).is_some();
            if q.single_events && !master_live {
                continue;
            }
            if rec.cancelled() && !(show_deleted || (!q.single_events && master_live)) {
                continue;
            }
            if rec_in_window(rec, q, zone) && filters_pass(rec, q, env) {
                push(&mut out, Src::Rec(rec), rec.id(), rec.version);
            }
        } else if let Some(series) = &rec.series {
            if rec.cancelled() && (q.single_events || !show_deleted) {
                continue;
            }
            if !filters_pass(rec, q, env) {
                continue;
            }
            if q.single_events {
                for occ in series.between(q.time_min, to, zone, MAX_INSTANCES) {
                    let id = instance_id(rec, &occ);
                    if cal.events.contains_key(&id) {
                        continue;
                    }
                    push(&mut out, Src::Inst(rec, occ), &id, rec.version);
                }
            } else {
                let windowed = q.time_min.is_some() || q.time_max.is_some();
                let far = q.time_max.unwrap_or(DateTime::<Utc>::MAX_UTC);
                if windowed && series.between(q.time_min, far, zone, 1).is_empty() {
                    continue;
                }
                push(&mut out, Src::Rec(rec), rec.id(), rec.version);
            }
        } else {
            if rec.cancelled() && !show_deleted {
                continue;
            }
            if rec_in_window(rec, q, zone) && filters_pass(rec, q, env) {
                push(&mut out, Src::Rec(rec), rec.id(), rec.version);
            }
        }
    }
    out
}

/// Items of a delta: everything written after `base`.
fn delta_items<'a>(
    cal: &'a Calendar,
    base: u64,
    q: &ListQuery,
    env: &Env<'_>,
    zone: Tz,
) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for rec in cal.events.values().filter(|r| r.version > base) {
        let key = |src: &Src<'_>, id: &str| {
            format!(
                "{}|{}|{id}",
                n20(rec.version),
                sub_key(src.original(), zone)
            )
        };
        match (&rec.series, q.single_events, rec.cancelled()) {
            (Some(series), true, false) => {
                for occ in series.between(None, env.horizon, zone, MAX_INSTANCES) {
                    let id = instance_id(rec, &occ);
                    if cal.events.contains_key(&id) {
                        continue;
                    }
                    let src = Src::Inst(rec, occ);
                    out.push(Item {
                        key: key(&src, &id),
                        src,
                    });
                }
            }
            _ => {
                let src = Src::Rec(rec);
                out.push(Item {
                    key: key(&src, rec.id()),
                    src,
                });
            }
        }
    }
    out
}

/// The `Events` envelope around a page.
#[allow(clippy::too_many_arguments)]
fn envelope(
    cal: &Calendar,
    role: Role,
    zone: Tz,
    mut items: Vec<Item<'_>>,
    after: Option<&str>,
    q: &ListQuery,
    cursor: PageCursor,
    env: &Env<'_>,
    sync: bool,
) -> Value {
    items.sort_by(|a, b| a.key.cmp(&b.key));
    let start = after.map_or(0, |a| items.partition_point(|i| i.key.as_str() <= a));
    let rest = &items[start..];
    let take = rest.len().min(q.max_results);
    let page = &rest[..take];
    let page_json: Vec<Value> = page
        .iter()
        .map(|i| render_event(&i.src.materialize(&cal.id), zone, q.max_attendees))
        .collect();
    let default_reminders = if cal.primary {
        json!([{"method": "popup", "minutes": 10}])
    } else {
        json!([])
    };
    let mut out = json!({
        "kind": "calendar#events",
        "etag": format!("\"p{:016x}\"", cursor.snap),
        "summary": cal.summary,
        "updated": rfc3339_ms(cal.updated),
        "timeZone": zone.name(),
        "accessRole": role.as_str(),
        "defaultReminders": default_reminders,
        "items": page_json,
    });
    if let Some(d) = &cal.description {
        out["description"] = json!(d);
    }
    if take < rest.len() {
        let last = page.last().map(|i| i.key.clone()).unwrap_or_default();
        out["nextPageToken"] = json!(env.codec.page_token(&PageCursor {
            after: last,
            ..cursor
        }));
    } else if sync {
        out["nextSyncToken"] = json!(env.codec.sync_token(&cal.id, cursor.snap));
    }
    out
}

/// `events.list`.
pub(crate) fn list_events(
    cal: &Calendar,
    role: Role,
    q: &ListQuery,
    env: &Env<'_>,
) -> Result<Value, ApiError> {
    let zone = q.time_zone.unwrap_or_else(|| cal.zone());
    let page = match &q.page_token {
        Some(t) => Some(
            env.codec
                .read_page(t)
                .filter(|c| c.calendar == cal.id && c.mode != "instances")
                .ok_or_else(|| bad_param("pageToken", t))?,
        ),
        None => None,
    };
    let delta_base = match (&page, &q.sync_token) {
        (Some(c), _) if c.mode == "delta" => Some(c.base),
        (Some(_), _) => None,
        (None, Some(t)) => Some(
            env.codec
                .read_sync(t, &cal.id)
                .ok_or_else(ApiError::full_sync_required)?
                .version,
        ),
        (None, None) => None,
    };
    let cursor = PageCursor {
        mode: if delta_base.is_some() {
            "delta"
        } else {
            "full"
        }
        .into(),
        calendar: cal.id.clone(),
        event: String::new(),
        after: String::new(),
        snap: page.as_ref().map_or(env.version, |c| c.snap),
        base: delta_base.unwrap_or(0),
    };
    let items = match delta_base {
        Some(base) => delta_items(cal, base, q, env, zone),
        None => full_items(cal, q, env, zone),
    };
    let after = page.as_ref().map(|c| c.after.clone());
    Ok(envelope(
        cal,
        role,
        zone,
        items,
        after.as_deref(),
        q,
        cursor,
        env,
        true,
    ))
}

/// `events.instances` of a master.
pub(crate) fn list_instances(
    cal: &Calendar,
    role: Role,
    event_id: &str,
    q: &ListQuery,
    env: &Env<'_>,
) -> Result<Value, ApiError> {
    let zone = q.time_zone.unwrap_or_else(|| cal.zone());
    let master = cal
        .events
        .get(event_id)
        .filter(|e| e.master.is_none())
        .ok_or_else(ApiError::not_found)?;
    if master.cancelled() {
        return Err(ApiError::deleted());
    }
    let page = match &q.page_token {
        Some(t) => Some(
            env.codec
                .read_page(t)
                .filter(|c| c.calendar == cal.id && c.mode == "instances" && c.event == event_id)
                .ok_or_else(|| bad_param("pageToken", t))?,
        ),
        None => None,
    };
    let show_deleted = q.show_deleted();
    let key = |src: &Src<'_>, id: &str| format!("{}|{id}", sub_key(src.original(), zone));
    let mut items: Vec<Item<'_>> = Vec::new();
    match &master.series {
        None => {
            if rec_in_window(master, q, zone) {
                let src = Src::Rec(master);
                items.push(Item {
                    key: key(&src, master.id()),
                    src,
                });
            }
        }
        Some(series) => {
            let to = q.time_max.unwrap_or(env.horizon);
            for occ in series.between(q.time_min, to, zone, MAX_INSTANCES) {
                let id = instance_id(master, &occ);
                if cal.events.contains_key(&id) {
                    continue;
                }
                let src = Src::Inst(master, occ);
                items.push(Item {
                    key: key(&src, &id),
                    src,
                });
            }
            for ex in cal
                .events
                .values()
                .filter(|e| e.master.as_deref() == Some(event_id))
            {
                if (ex.cancelled() && !show_deleted) || !rec_in_window(ex, q, zone) {
                    continue;
                }
                let src = Src::Rec(ex);
                items.push(Item {
                    key: key(&src, ex.id()),
                    src,
                });
            }
        }
    }
    if let Some(orig) = q.original_start {
        let want = orig.instant(zone);
        items.retain(|i| i.src.original().is_some_and(|o| o.instant(zone) == want));
    }
    let cursor = PageCursor {
        mode: "instances".into(),
        calendar: cal.id.clone(),
        event: event_id.to_owned(),
        after: String::new(),
        snap: page.as_ref().map_or(env.version, |c| c.snap),
        base: 0,
    };
    let after = page.as_ref().map(|c| c.after.clone());
    Ok(envelope(
        cal,
        role,
        zone,
        items,
        after.as_deref(),
        q,
        cursor,
        env,
        false,
    ))
}

/// What `singleEvents=true&showDeleted=true&orderBy=startTime` returns in a
/// window, as [`Instance`]s.
pub(crate) fn expanded(
    cal: &Calendar,
    time_min: DateTime<Utc>,
    time_max: DateTime<Utc>,
    env: &Env<'_>,
) -> Vec<Instance> {
    let q = ListQuery {
        single_events: true,
        show_deleted: Some(true),
        order_by: Some(OrderBy::StartTime),
        time_min: Some(time_min),
        time_max: Some(time_max),
        ..ListQuery::default()
    };
    let zone = cal.zone();
    let mut items = full_items(cal, &q, env, zone);
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items
        .iter()
        .map(|i| {
            let res = i.src.materialize(&cal.id);
            let rec = EventRec::new(res, 0, 0);
            Instance {
                id: rec.id().to_owned(),
                start: rec.start,
                end: rec.end,
                summary: rec.summary(),
                status: rec.status().to_owned(),
                recurring_event_id: rec.master.clone(),
                original_start: rec.original,
            }
        })
        .collect()
}

/// `now + days`, the default expansion horizon.
pub(crate) fn horizon_from(now: DateTime<Utc>, horizon: std::time::Duration) -> DateTime<Utc> {
    now + Duration::from_std(horizon).unwrap_or_else(|_| Duration::days(730))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parameter_rules() {
        let q = ListQuery::parse(&p(&[("maxResults", "9999")])).unwrap();
        assert_eq!(q.max_results, 2500);
        assert_eq!(ListQuery::parse(&[]).unwrap().max_results, 250);
        assert!(ListQuery::parse(&p(&[("maxResults", "0")])).is_err());
        let e = ListQuery::parse(&p(&[("orderBy", "startTime")])).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = ListQuery::parse(&p(&[
            ("syncToken", "x"),
            ("timeMin", "2024-01-01T00:00:00Z"),
        ]))
        .unwrap_err();
        assert_eq!(e.location.as_ref().unwrap().1, "timeMin");
        assert!(ListQuery::parse(&p(&[("syncToken", "x"), ("showDeleted", "false")])).is_err());
        let e = ListQuery::parse(&p(&[
            ("timeMin", "2024-01-02T00:00:00Z"),
            ("timeMax", "2024-01-01T00:00:00Z"),
        ]))
        .unwrap_err();
        assert_eq!(e.reason, "timeRangeEmpty");
        assert!(ListQuery::parse(&p(&[("timeMin", "2024-01-02T00:00:00")])).is_err());
        assert!(ListQuery::parse(&p(&[("privateExtendedProperty", "novalue")])).is_err());
        let q = ListQuery::parse(&p(&[
            ("privateExtendedProperty", "a=1"),
            ("privateExtendedProperty", "b=x=y"),
        ]))
        .unwrap();
        assert_eq!(q.private_props[1], ("b".to_owned(), "x=y".to_owned()));
    }

    #[test]
    fn property_matching_modes() {
        let res = serde_json::json!({"extendedProperties": {"private": {"a": "1", "b": "2"}}});
        let res = res.as_object().unwrap();
        let want = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "3".to_owned()),
        ];
        assert!(!props_match(res, "private", &want, PropertyMatch::All));
        assert!(props_match(res, "private", &want, PropertyMatch::Any));
        assert!(!props_match(res, "shared", &want[..1], PropertyMatch::All));
    }
}
