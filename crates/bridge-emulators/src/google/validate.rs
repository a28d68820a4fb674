//! Validation of event bodies (insert, import, update, and patch after
//! merging) into the writable part of a stored event, as the API does it
//! (sinks-api.md A.3, A.7, A.14 item 8).
//!
//! Read-only fields (`etag`, `htmlLink`, `created`, `creator`, …) and
//! unknown fields are ignored, as Google ignores them.

use chrono::Duration;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::recur::Series;
use super::time::{EventTime, Which, parse_event_datetime, parse_zone};

/// Fields a client may write (some only on creation, see [`Opts`]).
pub(crate) const WRITABLE: &[&str] = &[
    "summary",
    "description",
    "location",
    "colorId",
    "status",
    "transparency",
    "visibility",
    "start",
    "end",
    "endTimeUnspecified",
    "recurrence",
    "attendees",
    "attendeesOmitted",
    "reminders",
    "extendedProperties",
    "source",
    "conferenceData",
    "attachments",
    "guestsCanInviteOthers",
    "guestsCanModify",
    "guestsCanSeeOtherGuests",
    "anyoneCanAddSelf",
    "sequence",
    "workingLocationProperties",
    "outOfOfficeProperties",
    "focusTimeProperties",
];

/// Event types a client may create with `events.insert`.
const EVENT_TYPES: &[&str] = &["default", "outOfOffice", "focusTime", "workingLocation"];

/// Most reminder overrides per event.
pub(crate) const MAX_REMINDERS: usize = 5;
/// Largest reminder offset (four weeks, in minutes).
const MAX_REMINDER_MINUTES: i64 = 40_320;
/// Most attachments per event.
const MAX_ATTACHMENTS: usize = 25;

/// What kind of write is being validated.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Opts {
    /// `events.import`: `organizer` writable, `eventType` forced to default.
    pub(crate) import: bool,
    /// insert/import (creation-only fields accepted).
    pub(crate) creating: bool,
    /// The target is an instance of a series (no `recurrence` allowed).
    pub(crate) instance: bool,
    /// `conferenceDataVersion=1`.
    pub(crate) conference: bool,
    /// `supportsAttachments=true`.
    pub(crate) attachments: bool,
}

/// A validated body.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    /// Normalised writable fields (start/end in canonical form).
    pub(crate) fields: Map<String, Value>,
    pub(crate) sequence: Option<i64>,
    /// Creation-only fields that were accepted (`organizer`, `eventType`,
    /// `privateCopy`).
    pub(crate) creation: Map<String, Value>,
}

fn bad_field(name: &str) -> ApiError {
    ApiError::invalid(format!("Invalid value for field '{name}'."))
}

fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn string_field(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match get(m, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_field(key)),
    }
}

fn bool_field(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match get(m, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_field(key)),
    }
}

fn enum_field(
    m: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    match string_field(m, key)? {
        Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
        Some(v) => Err(ApiError::invalid(format!(
            "Invalid value '{v}' for field '{key}'."
        ))),
        None => Ok(None),
    }
}

/// Validates `body` and returns the writable part of the resulting event.
pub(crate) fn event_body(body: &Map<String, Value>, opts: Opts) -> Result<Draft, ApiError> {
    let mut fields = Map::new();
    for key in ["summary", "description", "location"] {
        if let Some(s) = string_field(body, key)? {
            fields.insert(key.into(), json!(s));
        }
    }
    if let Some(c) = string_field(body, "colorId")? {
        if !c.parse::<u8>().is_ok_and(|n| (1..=11).contains(&n)) {
            return Err(ApiError::invalid("Invalid color id."));
        }
        fields.insert("colorId".into(), json!(c));
    }
    if let Some(s) = enum_field(body, "status", &["confirmed", "tentative", "cancelled"])? {
        fields.insert("status".into(), json!(s));
    }
    if let Some(s) = enum_field(body, "transparency", &["opaque", "transparent"])? {
        fields.insert("transparency".into(), json!(s));
    }
    if let Some(s) = enum_field(
        body,
        "visibility",
        &["default", "public", "private", "confidential"],
    )? {
        fields.insert("visibility".into(), json!(s));
    }
    for key in [
        "endTimeUnspecified",
        "attendeesOmitted",
        "guestsCanInviteOthers",
        "guestsCanModify",
        "guestsCanSeeOtherGuests",
        "anyoneCanAddSelf",
    ] {
        if let Some(b) = bool_field(body, key)? {
            fields.insert(key.into(), json!(b));
        }
    }
    for key in [
        "workingLocationProperties",
        "outOfOfficeProperties",
        "focusTimeProperties",
    ] {
        match get(body, key) {
            None => {}
            Some(v @ Value::Object(_)) => {
                fields.insert(key.into(), v.clone());
            }
            Some(_) => return Err(bad_field(key)),
        }
    }

    // start / end
    let start = parse_event_datetime(
        get(body, "start").ok_or_else(|| ApiError::required("Missing start time."))?,
        Which::Start,
    )?;
    let end = parse_event_datetime(
        get(body, "end").ok_or_else(|| ApiError::required("Missing end time."))?,
        Which::End,
    )?;
    match (start.time, end.time) {
        (EventTime::Date(s), EventTime::Date(e)) if e <= s => {
            return Err(ApiError::time_range_empty("end"));
        }
        (EventTime::DateTime(s), EventTime::DateTime(e)) if e < s => {
            return Err(ApiError::time_range_empty("end"));
        }
        (EventTime::Date(_), EventTime::DateTime(_))
        | (EventTime::DateTime(_), EventTime::Date(_)) => {
            return Err(ApiError::bad_request(
                "Start and end times must either both be date or both be dateTime.",
            ));
        }
        _ => {}
    }
    fields.insert(
        "start".into(),
        start.time.to_json(start.time_zone.as_deref()),
    );
    fields.insert("end".into(), end.time.to_json(end.time_zone.as_deref()));

    // recurrence
    let recurrence = match get(body, "recurrence") {
        None => Vec::new(),
        Some(Value::Array(lines)) => lines
            .iter()
            .map(|l| {
                l.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad_field("recurrence"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad_field("recurrence")),
    };
    if !recurrence.is_empty() {
        if opts.instance {
            return Err(ApiError::invalid(
                "Invalid recurrence: an instance of a recurring event cannot carry a recurrence.",
            ));
        }
        let zone = match (&start.time, start.time_zone.as_deref()) {
            (EventTime::Date(_), z) => z.and_then(parse_zone).unwrap_or(chrono_tz::UTC),
            (EventTime::DateTime(_), Some(z)) => parse_zone(z).unwrap_or(chrono_tz::UTC),
            (EventTime::DateTime(_), None) => {
                return Err(ApiError::required(
                    "Missing time zone definition for start time.",
                ));
            }
        };
        if let Err(e) = Series::parse(start.time, end.time, zone, &recurrence) {
            tracing::debug!(error = %e, "google emulator: recurrence refused");
            return Err(ApiError::invalid("Invalid recurrence rule."));
        }
        fields.insert("recurrence".into(), json!(recurrence));
    }

    // attendees
    if let Some(v) = get(body, "attendees") {
        fields.insert("attendees".into(), attendees(v)?);
    }

    // reminders
    if let Some(v) = get(body, "reminders") {
        fields.insert("reminders".into(), reminders(v)?);
    }

    // extendedProperties
    if let Some(v) = get(body, "extendedProperties") {
        fields.insert("extendedProperties".into(), extended_properties(v)?);
    }

    // source
    if let Some(v) = get(body, "source") {
        let m = v.as_object().ok_or_else(|| bad_field("source"))?;
        let url = string_field(m, "url")?.unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ApiError::invalid("Invalid source URL."));
        }
        let mut s = Map::new();
        s.insert("url".into(), json!(url));
        if let Some(t) = string_field(m, "title")? {
            s.insert("title".into(), json!(t));
        }
        fields.insert("source".into(), Value::Object(s));
    }

    // conferenceData / attachments: persisted only when asked for.
    if let Some(v) = get(body, "conferenceData") {
        if !v.is_object() {
            return Err(bad_field("conferenceData"));
        }
        if opts.conference {
            fields.insert("conferenceData".into(), v.clone());
        }
    }
    if let Some(v) = get(body, "attachments") {
        let list = v.as_array().ok_or_else(|| bad_field("attachments"))?;
        if list.len() > MAX_ATTACHMENTS {
            return Err(ApiError::invalid(
                "The maximum number of attachments is 25.",
            ));
        }
        if opts.attachments {
            fields.insert("attachments".into(), v.clone());
        }
    }

    let sequence = match get(body, "sequence") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
                .ok_or_else(|| bad_field("sequence"))?,
        ),
    };

    // creation-only fields
    let mut creation = Map::new();
    if opts.creating {
        let event_type = if opts.import {
            "default".to_owned()
        } else {
            enum_field(body, "eventType", EVENT_TYPES)?.unwrap_or_else(|| "default".into())
        };
        creation.insert("eventType".into(), json!(event_type));
        if let Some(b) = bool_field(body, "privateCopy")? {
            creation.insert("privateCopy".into(), json!(b));
        }
        if opts.import
            && let Some(v) = get(body, "organizer")
        {
            let m = v.as_object().ok_or_else(|| bad_field("organizer"))?;
            let email = string_field(m, "email")?
                .filter(|e| e.contains('@'))
                .ok_or_else(|| ApiError::invalid("Invalid organizer email."))?;
            let mut o = Map::new();
            o.insert("email".into(), json!(email));
            if let Some(n) = string_field(m, "displayName")? {
                o.insert("displayName".into(), json!(n));
            }
            creation.insert("organizer".into(), Value::Object(o));
        }
    }

    Ok(Draft {
        fields,
        sequence,
        creation,
    })
}

fn attendees(v: &Value) -> Result<Value, ApiError> {
    let list = v.as_array().ok_or_else(|| bad_field("attendees"))?;
    let mut out = Vec::with_capacity(list.len());
    for a in list {
        let m = a.as_object().ok_or_else(|| bad_field("attendees"))?;
        let email = string_field(m, "email")?
            .ok_or_else(|| ApiError::required("Missing attendee email."))?;
        if !email.contains('@') {
            return Err(ApiError::invalid("Invalid attendee email."));
        }
        let mut o = Map::new();
        o.insert("email".into(), json!(email));
        for key in ["displayName", "comment"] {
            if let Some(s) = string_field(m, key)? {
                o.insert(key.into(), json!(s));
            }
        }
        for key in ["optional", "resource"] {
            if let Some(b) = bool_field(m, key)? {
                o.insert(key.into(), json!(b));
            }
        }
        if let Some(n) = get(m, "additionalGuests") {
            let n = n
                .as_u64()
                .ok_or_else(|| bad_field("attendees.additionalGuests"))?;
            o.insert("additionalGuests".into(), json!(n));
        }
        let status = enum_field(
            m,
            "responseStatus",
            &["needsAction", "declined", "tentative", "accepted"],
        )?
        .unwrap_or_else(|| "needsAction".into());
        o.insert("responseStatus".into(), json!(status));
        out.push(Value::Object(o));
    }
    Ok(Value::Array(out))
}

fn reminders(v: &Value) -> Result<Value, ApiError> {
    let m = v.as_object().ok_or_else(|| bad_field("reminders"))?;
    let use_default = bool_field(m, "useDefault")?.unwrap_or(false);
    let overrides = match get(m, "overrides") {
        None => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(bad_field("reminders.overrides")),
    };
    if overrides.len() > MAX_REMINDERS {
        return Err(ApiError::new(
            400,
            "calendar",
            "eventRemindersCountExceedsLimit",
            "The maximum number of override reminders is 5.",
        ));
    }
    if use_default && !overrides.is_empty() {
        return Err(ApiError::new(
            400,
            "calendar",
            "cannotUseDefaultRemindersAndSpecifyOverride",
            "Cannot specify both default reminders and overrides at the same time.",
        ));
    }
    let mut out = Vec::with_capacity(overrides.len());
    for o in &overrides {
        let om = o
            .as_object()
            .ok_or_else(|| bad_field("reminders.overrides"))?;
        let method = enum_field(om, "method", &["email", "popup"])?
            .ok_or_else(|| ApiError::required("Missing reminder method."))?;
        let minutes = get(om, "minutes")
            .ok_or_else(|| ApiError::required("Missing reminder minutes."))?
            .as_i64()
            .filter(|n| (0..=MAX_REMINDER_MINUTES).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("Invalid reminder minutes: must be between 0 and 40320.")
            })?;
        out.push(json!({ "method": method, "minutes": minutes }));
    }
    let mut r = Map::new();
    r.insert("useDefault".into(), json!(use_default));
    if !out.is_empty() {
        r.insert("overrides".into(), Value::Array(out));
    }
    Ok(Value::Object(r))
}

fn extended_properties(v: &Value) -> Result<Value, ApiError> {
    let m = v
        .as_object()
        .ok_or_else(|| bad_field("extendedProperties"))?;
    let mut out = Map::new();
    for scope in ["private", "shared"] {
        let Some(props) = get(m, scope) else { continue };
        let props = props
            .as_object()
            .ok_or_else(|| bad_field("extendedProperties"))?;
        let mut clean = Map::new();
        for (k, v) in props {
            match v {
                Value::Null => {}
                Value::String(s) => {
                    clean.insert(k.clone(), json!(s));
                }
                _ => return Err(bad_field(&format!("extendedProperties.{scope}.{k}"))),
            }
        }
        out.insert(scope.into(), Value::Object(clean));
    }
    Ok(Value::Object(out))
}

/// The writable part of a stored resource (the base a patch merges into).
pub(crate) fn writable_part(res: &Map<String, Value>) -> Map<String, Value> {
    res.iter()
        .filter(|(k, _)| WRITABLE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Patch semantics: objects merge recursively, `null` removes a key, arrays
/// and scalars replace. Setting `date` on a `dateTime` start/end (or the
/// reverse) drops the other one, so switching between all-day and timed
/// does not need explicit nulls.
pub(crate) fn merge_patch(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                base.remove(k);
            }
            Value::Object(p) => {
                let entry = base
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(b) = entry {
                    if k == "start" || k == "end" || k == "originalStartTime" {
                        if p.get("date").is_some_and(|d| !d.is_null()) {
                            b.remove("dateTime");
                        }
                        if p.get("dateTime").is_some_and(|d| !d.is_null()) {
                            b.remove("date");
                        }
                    }
                    merge_patch(b, p);
                }
            }
            other => {
                base.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Length of an event (used to place cancelled instances).
pub(crate) fn duration_of(start: &EventTime, end: &EventTime) -> Duration {
    match (start, end) {
        (EventTime::Date(s), EventTime::Date(e)) => *e - *s,
        (EventTime::DateTime(s), EventTime::DateTime(e)) => *e - *s,
        _ => Duration::zero(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn timed() -> Value {
        json!({
            "summary": "x",
            "start": {"dateTime": "2024-03-10T09:00:00-04:00", "timeZone": "America/New_York"},
            "end": {"dateTime": "2024-03-10T10:00:00-04:00", "timeZone": "America/New_York"},
        })
    }

    #[test]
    fn accepts_and_normalises() {
        let mut b = timed();
        b["etag"] = json!("\"1\"");
        b["reminders"] =
            json!({"useDefault": false, "overrides": [{"method": "popup", "minutes": 10}]});
        b["extendedProperties"] = json!({"private": {"a": "1", "gone": null}});
        let d = event_body(&obj(b), Opts::default()).unwrap();
        assert_eq!(d.fields["start"]["dateTime"], "2024-03-10T13:00:00Z");
        assert!(!d.fields.contains_key("etag"));
        assert_eq!(d.fields["extendedProperties"]["private"], json!({"a": "1"}));
    }

    #[test]
    fn rejects_like_google() {
        let mut b = timed();
        b["end"] = json!({"dateTime": "2024-03-10T08:00:00-04:00"});
        assert_eq!(
            event_body(&obj(b), Opts::default()).unwrap_err().reason,
            "timeRangeEmpty"
        );
        let mut b = timed();
        b["reminders"] = json!({"useDefault": false, "overrides": (0..6).map(|i| json!({"method": "popup", "minutes": i})).collect::<Vec<_>>()});
        assert_eq!(
            event_body(&obj(b), Opts::default()).unwrap_err().reason,
            "eventRemindersCountExceedsLimit"
        );
        let mut b = timed();
        b["reminders"] =
            json!({"useDefault": true, "overrides": [{"method": "popup", "minutes": 5}]});
        assert_eq!(
            event_body(&obj(b), Opts::default()).unwrap_err().reason,
            "cannotUseDefaultRemindersAndSpecifyOverride"
        );
        let mut b = timed();
        b["recurrence"] = json!(["RRULE:FREQ=DAILY"]);
        b["start"] = json!({"dateTime": "2024-03-10T09:00:00-04:00"});
        assert_eq!(
            event_body(&obj(b), Opts::default()).unwrap_err().message,
            "Missing time zone definition for start time."
        );
        let mut b = timed();
        b["recurrence"] = json!(["RRULE:FREQ=NEVER"]);
        assert_eq!(
            event_body(&obj(b), Opts::default()).unwrap_err().reason,
            "invalid"
        );
        let mut b = timed();
        b.as_object_mut().unwrap().remove("end");
        assert_eq!(
            event_body(&obj(b), Opts::default()).unwrap_err().message,
            "Missing end time."
        );
    }

    #[test]
    fn patch_merges_objects_and_switches_kinds() {
        let mut base = obj(json!({
            "summary": "a",
            "start": {"dateTime": "2024-03-10T13:00:00Z", "timeZone": "UTC"},
            "extendedProperties": {"private": {"a": "1", "b": "2"}},
            "attendees": [{"email": "x@y.z"}],
        }));
        merge_patch(
            &mut base,
            &obj(json!({
                "summary": null,
                "start": {"date": "2024-03-10"},
                "extendedProperties": {"private": {"a": null, "c": "3"}},
                "attendees": [],
            })),
        );
        assert!(!base.contains_key("summary"));
        assert_eq!(
            base["start"],
            json!({"date": "2024-03-10", "timeZone": "UTC"})
        );
        assert_eq!(
            base["extendedProperties"]["private"],
            json!({"b": "2", "c": "3"})
        );
        assert_eq!(base["attendees"], json!([]));
    }
}
