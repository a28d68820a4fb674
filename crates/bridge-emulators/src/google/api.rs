//! Calendar API v3 handlers: calendars insert/get, events insert, import,
//! get, update, patch, delete, list and instances.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::auth::{Caller, Need, allows};
use super::error::ApiError;
use super::http::{BatchPart, json_response, query_pairs, send_updates_of};
use super::list::{self, Env, ListQuery};
use super::model::{Limits, WriteCtx, render_event};
use super::time;
use super::{Inner, lock};

type ApiResult = Result<Response, ApiError>;

/// Parsed query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(raw: Option<String>) -> Self {
        Self(query_pairs(raw.as_deref()))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(ApiError::invalid(format!(
                "Invalid value '{v}' for parameter '{name}'."
            ))
            .at("parameter", name)),
        }
    }

    fn pretty(&self) -> bool {
        !self
            .get("prettyPrint")
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    }

    fn zone(&self, default: chrono_tz::Tz) -> Result<chrono_tz::Tz, ApiError> {
        match self.get("timeZone") {
            None => Ok(default),
            Some(z) => time::parse_zone(z).ok_or_else(|| {
                ApiError::invalid(format!("Invalid value '{z}' for parameter 'timeZone'."))
                    .at("parameter", "timeZone")
            }),
        }
    }

    fn max_attendees(&self) -> Result<Option<usize>, ApiError> {
        match self.get("maxAttendees") {
            None => Ok(None),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid(format!("Invalid value '{v}' for parameter 'maxAttendees'."))
                        .at("parameter", "maxAttendees")
                }),
        }
    }
}

fn need(caller: &Caller, n: Need) -> Result<(), ApiError> {
    if allows(&caller.scopes, n) {
        Ok(())
    } else {
        Err(ApiError::insufficient_scopes())
    }
}

/// A JSON object body (`{}` when empty).
fn object_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) | Err(_) => Err(ApiError::parse_error()),
    }
}

fn write_ctx(
    inner: &Inner,
    caller: &Caller,
    params: &Params,
    headers: &HeaderMap,
    batch: bool,
    import: bool,
) -> Result<WriteCtx, ApiError> {
    let send_updates = if import {
        None
    } else {
        let s = send_updates_of(&params.0);
        if let Some(v) = &s
            && !["all", "externalOnly", "none"].contains(&v.as_str())
        {
            return Err(ApiError::invalid(format!(
                "Invalid value '{v}' for parameter 'sendUpdates'."
            ))
            .at("parameter", "sendUpdates"));
        }
        s
    };
    let conference = match params.get("conferenceDataVersion") {
        None | Some("0") => false,
        Some("1") => true,
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "Invalid value '{v}' for parameter 'conferenceDataVersion'."
            ))
            .at("parameter", "conferenceDataVersion"));
        }
    };
    let cfg = inner.config();
    Ok(WriteCtx {
        actor: caller.email.clone(),
        send_updates,
        if_match: headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        batch_part: batch,
        conference,
        attachments: params.flag("supportsAttachments")?,
        api: true,
        limits: Limits {
            daily_event_creations: cfg.daily_event_creations,
            calendar_creations: cfg.calendar_creation_limit,
        },
    })
}

fn respond(r: ApiResult) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `POST calendars`.
pub(crate) async fn insert_calendar(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    batch: Option<Extension<BatchPart>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond((|| {
        need(&caller, Need::CalendarsWrite)?;
        let params = Params::new(raw);
        let body = object_body(&body)?;
        let ctx = write_ctx(&inner, &caller, &params, &headers, batch.is_some(), false)?;
        let cal = lock(&inner.store).api_insert_calendar(&body, &ctx)?;
        let etag = cal["etag"].as_str().map(str::to_owned);
        Ok(json_response(
            StatusCode::OK,
            &cal,
            params.pretty(),
            etag.as_deref(),
        ))
    })())
}

/// `GET calendars/{calendarId}`.
pub(crate) async fn get_calendar(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(cal): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    respond((|| {
        need(&caller, Need::CalendarsRead)?;
        let params = Params::new(raw);
        let store = lock(&inner.store);
        let (id, _) = store.resolve_calendar(&cal, &caller.email)?;
        let c = store.calendars[&id].json();
        Ok(json_response(
            StatusCode::OK,
            &c,
            params.pretty(),
            c["etag"].as_str(),
        ))
    })())
}

/// `POST calendars/{calendarId}/events`.
pub(crate) async fn insert_event(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    batch: Option<Extension<BatchPart>>,
    Path(cal): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(create(
        &inner,
        &caller,
        batch.is_some(),
        &cal,
        raw,
        &headers,
        &body,
        false,
    ))
}

/// `POST calendars/{calendarId}/events/import`.
pub(crate) async fn import_event(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    batch: Option<Extension<BatchPart>>,
    Path(cal): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(create(
        &inner,
        &caller,
        batch.is_some(),
        &cal,
        raw,
        &headers,
        &body,
        true,
    ))
}

#[allow(clippy::too_many_arguments)]
fn create(
    inner: &Inner,
    caller: &Caller,
    batch: bool,
    cal: &str,
    raw: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
    import: bool,
) -> ApiResult {
    need(caller, Need::EventsWrite)?;
    let params = Params::new(raw);
    let body = object_body(body)?;
    let ctx = write_ctx(inner, caller, &params, headers, batch, import)?;
    let max_attendees = params.max_attendees()?;
    let mut store = lock(&inner.store);
    let (cal_id, id) = store.insert_event(cal, &body, &ctx, import)?;
    let c = &store.calendars[&cal_id];
    let zone = params.zone(c.zone())?;
    let res = &c.events[&id].res;
    let v = render_event(res, zone, max_attendees);
    Ok(json_response(
        StatusCode::OK,
        &v,
        params.pretty(),
        v["etag"].as_str(),
    ))
}

/// `GET calendars/{calendarId}/events/{eventId}`.
pub(crate) async fn get_event(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path((cal, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        need(&caller, Need::EventsRead)?;
        let params = Params::new(raw);
        let store = lock(&inner.store);
        let (cal_id, _) = store.resolve_calendar(&cal, &caller.email)?;
        let res = store.event_view(&cal_id, &id)?;
        let etag = res
            .get("etag")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let none_match = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            return Ok(resp);
        }
        let zone = params.zone(store.calendars[&cal_id].zone())?;
        let v = render_event(&res, zone, params.max_attendees()?);
        Ok(json_response(
            StatusCode::OK,
            &v,
            params.pretty(),
            Some(&etag),
        ))
    })())
}

/// `PUT calendars/{calendarId}/events/{eventId}`.
pub(crate) async fn update_event(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    batch: Option<Extension<BatchPart>>,
    Path((cal, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(modify(
        &inner,
        &caller,
        batch.is_some(),
        &cal,
        &id,
        raw,
        &headers,
        &body,
        false,
    ))
}

/// `PATCH calendars/{calendarId}/events/{eventId}`.
pub(crate) async fn patch_event(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    batch: Option<Extension<BatchPart>>,
    Path((cal, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(modify(
        &inner,
        &caller,
        batch.is_some(),
        &cal,
        &id,
        raw,
        &headers,
        &body,
        true,
    ))
}

#[allow(clippy::too_many_arguments)]
fn modify(
    inner: &Inner,
    caller: &Caller,
    batch: bool,
    cal: &str,
    id: &str,
    raw: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
    patch: bool,
) -> ApiResult {
    need(caller, Need::EventsWrite)?;
    let params = Params::new(raw);
    let body = object_body(body)?;
    let ctx = write_ctx(inner, caller, &params, headers, batch, false)?;
    let max_attendees = params.max_attendees()?;
    let mut store = lock(&inner.store);
    let (cal_id, res) = store.modify_event(cal, id, &body, &ctx, patch)?;
    let zone = params.zone(store.calendars[&cal_id].zone())?;
    let v = render_event(&res, zone, max_attendees);
    Ok(json_response(
        StatusCode::OK,
        &v,
        params.pretty(),
        v["etag"].as_str(),
    ))
}

/// `DELETE calendars/{calendarId}/events/{eventId}`: 204, empty body.
pub(crate) async fn delete_event(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    batch: Option<Extension<BatchPart>>,
    Path((cal, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        need(&caller, Need::EventsWrite)?;
        let params = Params::new(raw);
        let ctx = write_ctx(&inner, &caller, &params, &headers, batch.is_some(), false)?;
        lock(&inner.store).delete_event(&cal, &id, &ctx)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

fn env_of(inner: &Inner, version: u64) -> Env<'_> {
    let cfg = inner.config();
    Env {
        codec: inner.codec(),
        horizon: list::horizon_from(super::util::now(), cfg.expansion_horizon),
        props: cfg.extended_property_match,
        version,
    }
}

/// `GET calendars/{calendarId}/events`.
pub(crate) async fn list_events(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(cal): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    respond((|| {
        need(&caller, Need::EventsRead)?;
        let params = Params::new(raw);
        let q = ListQuery::parse(&params.0)?;
        let store = lock(&inner.store);
        let (cal_id, role) = store.resolve_calendar(&cal, &caller.email)?;
        let env = env_of(&inner, store.version());
        let v = list::list_events(&store.calendars[&cal_id], role, &q, &env)?;
        Ok(json_response(StatusCode::OK, &v, params.pretty(), None))
    })())
}

/// `GET calendars/{calendarId}/events/{eventId}/instances`.
pub(crate) async fn instances(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path((cal, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    respond((|| {
        need(&caller, Need::EventsRead)?;
        let params = Params::new(raw);
        let q = ListQuery::parse(&params.0)?;
        let store = lock(&inner.store);
        let (cal_id, role) = store.resolve_calendar(&cal, &caller.email)?;
        let env = env_of(&inner, store.version());
        let v = list::list_instances(&store.calendars[&cal_id], role, &id, &q, &env)?;
        Ok(json_response(StatusCode::OK, &v, params.pretty(), None))
    })())
}
