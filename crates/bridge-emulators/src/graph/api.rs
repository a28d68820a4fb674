//! The Graph v1.0 calendar API: one dispatcher for plain requests and the
//! parts of a `$batch` (token, mailbox access, per-mailbox concurrency and
//! rate limits, faults, then the model).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::auth::Grant;
use super::csdl::Schema;
use super::faults::FaultKind;
use super::model::{self, Event, Exception, MailboxAccess, Shape, Transaction};
use super::time;
use super::{Inner, lock};

/// One request to the API (plain or a batch part).
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: Method,
    /// Path after `/v1.0`, raw (percent-encoded segments).
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Value>,
    pub(crate) batch_part: bool,
}

/// Its answer.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Value,
    /// `error.code` of an error answer.
    pub(crate) code: Option<String>,
    /// The mailbox the request reached.
    pub(crate) mailbox: Option<String>,
}

impl Resp {
    pub(crate) fn ok(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            code: None,
            mailbox: None,
        }
    }

    /// Graph's error envelope.
    pub(crate) fn error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: json!({"error": {"code": code, "message": message, "innerError": {
                "date": time::iso_utc(Utc::now()),
                "request-id": "00000000-0000-0000-0000-000000000000",
                "client-request-id": "00000000-0000-0000-0000-000000000000"}}}),
            code: Some(code.to_owned()),
            mailbox: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.headers.push(("Retry-After".into(), secs.to_string()));
        self
    }

    /// The answer to an injected fault.
    pub(crate) fn fault(kind: &FaultKind) -> Option<Self> {
        Some(match kind {
            FaultKind::TooManyRequests { retry_after_secs } => Resp::error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
            .retry_after(*retry_after_secs),
            FaultKind::ServiceUnavailable { retry_after_secs } => {
                let r = Resp::error(503, "ServiceUnavailable", "Service Unavailable");
                match retry_after_secs {
                    Some(s) => r.retry_after(*s),
                    None => r,
                }
            }
            FaultKind::GatewayTimeout => Resp::error(504, "UnknownError", "Gateway Timeout"),
            FaultKind::TokenExpired => Resp::error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            ),
            FaultKind::Error {
                status,
                code,
                message,
            } => Resp::error(*status, code, message),
            FaultKind::Slow(_) => return None,
        })
    }
}

fn not_found() -> Resp {
    Resp::error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn bad(code: &str, msg: &str) -> Resp {
    Resp::error(400, code, msg)
}

fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the request asked for immutable ids.
pub(crate) fn wants_immutable(h: &HeaderMap) -> bool {
    h.get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("IdType=\"ImmutableId\""))
        })
}

pub(crate) fn max_page(h: &HeaderMap) -> Option<usize> {
    h.get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("odata.maxpagesize=")?.parse().ok())
}

/// A client id (with or without the non-immutable suffix) as stored.
fn stored_id(id: &str) -> &str {
    id.strip_suffix("~rest").unwrap_or(id)
}

/// Releases a mailbox concurrency slot.
struct Slot<'a> {
    inner: &'a Inner,
    mailbox: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.inner.inflight).get_mut(&self.mailbox) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Dispatches one API request.
pub(crate) async fn dispatch(inner: &Arc<Inner>, token: Option<&str>, req: Req) -> Resp {
    // Faults of batch parts (plain requests got theirs from the kit).
    if req.batch_part {
        let full = format!("/v1.0{}", req.path.split('?').next().unwrap_or(""));
        if let Some(f) = inner.kit.pick_fault(&full, true) {
            match Resp::fault(&f) {
                Some(r) => {
                    if matches!(f, FaultKind::TokenExpired)
                        && let Some(t) = token
                    {
                        lock(&inner.auth).expire(t);
                    }
                    return r;
                }
                None => {
                    if let FaultKind::Slow(d) = f {
                        tokio::time::sleep(d).await;
                    }
                }
            }
        }
    }
    let grant = match token.map(|t| lock(&inner.auth).check(t)) {
        None => return Resp::error(401, "InvalidAuthenticationToken", "Access token is empty."),
        Some(Err(true)) => {
            return Resp::error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            );
        }
        Some(Err(false)) => {
            return Resp::error(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed.",
            );
        }
        Some(Ok(g)) => g,
    };
    let raw: Vec<String> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let (user, rest): (String, &[String]) = match raw.first().map(String::as_str) {
        Some("users") if raw.len() >= 2 => (raw[1].clone(), &raw[2..]),
        Some("me") => match &grant {
            Grant::User { upn, .. } => (upn.clone(), &raw[1..]),
            Grant::App { .. } => {
                return bad(
                    "BadRequest",
                    "/me request is only valid with delegated authentication flow.",
                );
            }
        },
        _ => {
            return Resp::error(
                400,
                "BadRequest",
                &format!(
                    "Resource not found for the segment '{}'.",
                    raw.first().cloned().unwrap_or_default()
                ),
            );
        }
    };
    let (mailbox, access) = {
        let m = lock(&inner.model);
        match m.mailbox_id(&user) {
            Some(id) => {
                let access = m.mailboxes[&id].access;
                (id, access)
            }
            None => {
                return Resp::error(
                    404,
                    "ErrorInvalidUser",
                    &format!("The requested user '{user}' is invalid."),
                );
            }
        }
    };
    if let Grant::User { upn, .. } = &grant {
        let own = lock(&inner.model).mailbox_id(upn);
        if own.as_deref() != Some(mailbox.as_str()) {
            return Resp::error(
                403,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            );
        }
    }
    match access {
        MailboxAccess::Enabled => {}
        MailboxAccess::NoRest => {
            return Resp::error(
                404,
                "MailboxNotEnabledForRESTAPI",
                "REST API is not yet supported for this mailbox.",
            );
        }
        MailboxAccess::Denied => {
            return Resp::error(
                403,
                "ErrorAccessDenied",
                "Access to OData is disabled: Blocked by tenant configured AppOnly AccessPolicy settings.",
            );
        }
    }
    // Per-mailbox rate limit and concurrency.
    let cfg = inner.config.clone();
    if let Some((limit, span)) = cfg.rate_limit {
        let mut w = lock(&inner.windows);
        let win = w
            .entry(mailbox.clone())
            .or_insert_with(|| crate::kit::Window::new(span));
        let now = Instant::now();
        if let Err(secs) = win.check(limit, now) {
            let mut r = Resp::error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
            .retry_after(secs);
            r.mailbox = Some(mailbox);
            return r;
        }
        win.hit(now);
    }
    let _slot = {
        let mut f = lock(&inner.inflight);
        let n = f.entry(mailbox.clone()).or_default();
        if *n >= cfg.mailbox_concurrency {
            drop(f);
            inner
                .over_concurrency
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut r = Resp::error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
            .retry_after(1);
            r.mailbox = Some(mailbox);
            return r;
        }
        *n += 1;
        let peak = &inner.peak_concurrency;
        peak.fetch_max(*n, std::sync::atomic::Ordering::Relaxed);
        Slot {
            inner,
            mailbox: mailbox.clone(),
        }
    };
    if !cfg.latency.is_zero() {
        tokio::time::sleep(cfg.latency).await;
    }
    let mut resp = route(inner, &mailbox, rest, &req);
    resp.mailbox = Some(mailbox);
    resp
}

/// The calendar a path prefix names (`None` in the result: the default).
enum Scope {
    Mailbox,
    Calendar(String),
}

pub(crate) fn route(inner: &Arc<Inner>, mailbox: &str, rest: &[String], req: &Req) -> Resp {
    let seg: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = &req.method;
    let (scope, tail): (Scope, &[&str]) = match seg.as_slice() {
        ["calendars"] if m == Method::GET => return list_calendars(inner, mailbox),
        ["calendars"] if m == Method::POST => return create_calendar(inner, mailbox, req),
        ["calendars", c] if m == Method::GET => return get_calendar(inner, mailbox, Some(c)),
        ["calendar"] if m == Method::GET => return get_calendar(inner, mailbox, None),
        ["calendars", c, tail @ ..] => (Scope::Calendar((*c).to_owned()), tail),
        ["calendar", tail @ ..] => (Scope::Calendar(String::new()), tail),
        tail => (Scope::Mailbox, tail),
    };
    let calendar = match &scope {
        Scope::Mailbox => None,
        Scope::Calendar(c) => {
            let model = lock(&inner.model);
            let mb = &model.mailboxes[mailbox];
            let found = if c.is_empty() {
                mb.calendars.values().find(|x| x.default)
            } else {
                mb.calendars.get(c.as_str())
            };
            match found {
                Some(x) => Some(x.id.clone()),
                None => return not_found(),
            }
        }
    };
    match (m.clone(), tail) {
        (Method::GET, ["events"]) => list_events(inner, mailbox, calendar.as_deref(), req),
        (Method::POST, ["events"]) => create_event(inner, mailbox, calendar, req),
        (Method::GET, ["calendarView"]) => calendar_view(inner, mailbox, calendar.as_deref(), req),
        (Method::GET, ["calendarView", "delta"]) => {
            super::delta::delta(inner, mailbox, calendar.as_deref(), req)
        }
        (Method::POST, ["getSchedule"]) => super::schedule::get_schedule(inner, mailbox, req),
        (Method::GET, ["events", id]) => get_event(inner, mailbox, stored_id(id), req),
        (Method::PATCH, ["events", id]) => patch_event(inner, mailbox, stored_id(id), req),
        (Method::DELETE, ["events", id]) => delete_event(inner, mailbox, stored_id(id), req),
        (Method::GET, ["events", id, "instances"]) => instances(inner, mailbox, stored_id(id), req),
        (_, ["events", ..] | ["calendarView"]) => Resp::error(
            405,
            "ErrorInvalidRequest",
            "The OData request is not supported.",
        ),
        _ => Resp::error(
            400,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                tail.first().copied().unwrap_or("")
            ),
        ),
    }
}

fn list_calendars(inner: &Arc<Inner>, mailbox: &str) -> Resp {
    let model = lock(&inner.model);
    let mb = &model.mailboxes[mailbox];
    let v: Vec<Value> = mb
        .calendars
        .values()
        .map(|c| calendar_json(c, &mb.upn))
        .collect();
    Resp::ok(200, json!({"value": v}))
}

fn calendar_json(c: &model::Calendar, upn: &str) -> Value {
    json!({"id": c.id, "name": c.name, "isDefaultCalendar": c.default, "canEdit": true, "canShare": true, "canViewPrivateItems": true, "changeKey": model::change_key(1), "owner": {"name": upn, "address": upn}})
}

fn get_calendar(inner: &Arc<Inner>, mailbox: &str, id: Option<&str>) -> Resp {
    let model = lock(&inner.model);
    let mb = &model.mailboxes[mailbox];
    let c = match id {
        Some(id) => mb.calendars.get(id),
        None => mb.calendars.values().find(|c| c.default),
    };
    match c {
        Some(c) => Resp::ok(200, calendar_json(c, &mb.upn)),
        None => not_found(),
    }
}

fn create_calendar(inner: &Arc<Inner>, mailbox: &str, req: &Req) -> Resp {
    let Some(body) = req.body.as_ref().and_then(Value::as_object) else {
        return bad("RequestBodyRead", "A calendar body is required.");
    };
    let mut errs = Vec::new();
    Schema::subset().check(
        "graph.calendar",
        &Value::Object(body.clone()),
        "$",
        &mut errs,
    );
    if !errs.is_empty() {
        return bad("RequestBodyRead", &errs.join("; "));
    }
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
    else {
        return bad("ErrorInvalidParameter", "The calendar name is required.");
    };
    let mut model = lock(&inner.model);
    let mb = model.mailboxes.get_mut(mailbox).expect("routed");
    if mb
        .calendars
        .values()
        .any(|c| c.name.eq_ignore_ascii_case(name))
    {
        return Resp::error(
            409,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        );
    }
    let c = model::Calendar {
        id: model::new_id("AAMkCAL"),
        name: name.to_owned(),
        default: false,
    };
    let v = calendar_json(&c, &mb.upn);
    mb.calendars.insert(c.id.clone(), c);
    Resp::ok(201, v)
}

pub(crate) fn q<'a>(req: &'a Req, k: &str) -> Option<&'a str> {
    req.query
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(k))
        .map(|(_, v)| v.as_str())
}

/// `$select`, `$expand` and the id form of a read.
fn shape(req: &Req) -> Result<Shape, Resp> {
    let select = q(req, "$select")
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    // `exceptionOccurrences` may come alone or after the extended
    // properties (`$expand=singleValueExtendedProperties(...),exceptionOccurrences`).
    let mut exceptions = false;
    let expand_param = q(req, "$expand").and_then(|e| {
        let e = e.trim();
        if e == "exceptionOccurrences" {
            exceptions = true;
            return None;
        }
        Some(match e.strip_suffix(",exceptionOccurrences") {
            Some(rest) => {
                exceptions = true;
                rest
            }
            None => e,
        })
    });
    let expand = match expand_param {
        None => None,
        Some(e) => {
            let e = e.trim();
            let Some(inner) = e.strip_prefix("singleValueExtendedProperties") else {
                return Err(bad(
                    "BadRequest",
                    &format!(
                        "Parsing OData Select and Expand failed: Could not find a property named '{e}' on type 'microsoft.graph.event'."
                    ),
                ));
            };
            let inner = inner.trim();
            if inner.is_empty() {
                Some(Vec::new())
            } else {
                let f = inner
                    .strip_prefix("($filter=")
                    .and_then(|x| x.strip_suffix(')'))
                    .ok_or_else(|| bad("BadRequest", "Invalid $expand."))?;
                let mut ids = Vec::new();
                for part in f.split(" or ") {
                    let part = part.trim();
                    let v = part
                        .strip_prefix("id eq ")
                        .and_then(quoted)
                        .ok_or_else(|| {
                            bad(
                                "ErrorInvalidUrlQueryFilter",
                                &format!("The $filter {part:?} is not supported in $expand."),
                            )
                        })?;
                    ids.push(v);
                }
                Some(ids)
            }
        }
    };
    Ok(Shape {
        select,
        expand,
        exceptions,
        immutable: wants_immutable(&req.headers),
    })
}

/// The shape of a listing: `exceptionOccurrences` expands only on a
/// series master read by id (graph.md §3.1).
fn listing_shape(req: &Req) -> Result<Shape, Resp> {
    let sh = shape(req)?;
    if sh.exceptions {
        return Err(bad(
            "BadRequest",
            "exceptionOccurrences can only be expanded on a series master read by its id.",
        ));
    }
    Ok(sh)
}

/// `'text'` with `''` escapes.
fn quoted(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// A `$filter` on one extended property.
#[derive(Debug)]
struct ExtFilter {
    id: String,
    value: Option<(bool, String)>,
}

fn ext_filter(f: &str) -> Result<ExtFilter, Resp> {
    let unsupported = || {
        bad(
            "ErrorInvalidUrlQueryFilter",
            &format!("The query filter contains one or more invalid nodes: {f}"),
        )
    };
    let lower = f.trim();
    let body = lower
        .strip_prefix("singleValueExtendedProperties/any(")
        .or_else(|| lower.strip_prefix("singleValueExtendedProperties/Any("))
        .and_then(|b| b.strip_suffix(')'))
        .ok_or_else(unsupported)?;
    let (var, cond) = body.split_once(':').ok_or_else(unsupported)?;
    let var = var.trim();
    let mut out = ExtFilter {
        id: String::new(),
        value: None,
    };
    for c in cond.split(" and ") {
        let c = c.trim();
        if let Some(v) = c.strip_prefix(&format!("{var}/id eq ")) {
            out.id = quoted(v).ok_or_else(unsupported)?;
        } else if let Some(v) = c.strip_prefix(&format!("{var}/value eq ")) {
            out.value = Some((true, quoted(v).ok_or_else(unsupported)?));
        } else if let Some(v) = c
            .strip_prefix(&format!("startswith({var}/value,"))
            .and_then(|v| v.strip_suffix(')'))
        {
            out.value = Some((false, quoted(v).ok_or_else(unsupported)?));
        } else {
            return Err(unsupported());
        }
    }
    if out.id.is_empty() {
        return Err(unsupported());
    }
    Ok(out)
}

fn matches(ext: &BTreeMap<String, String>, f: &ExtFilter) -> bool {
    ext.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case(&f.id)
            && match &f.value {
                None => true,
                Some((true, want)) => v.eq_ignore_ascii_case(want),
                Some((false, p)) => v.to_lowercase().starts_with(&p.to_lowercase()),
            }
    })
}

/// One page of `items` with `@odata.nextLink` (a `$skip` on the same URL).
fn page(inner: &Arc<Inner>, req: &Req, items: Vec<Value>) -> Resp {
    let top = q(req, "$top")
        .and_then(|t| t.parse::<usize>().ok())
        .or_else(|| max_page(&req.headers))
        .unwrap_or(10)
        .clamp(1, 1000);
    let skip = q(req, "$skip")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    let mut body = json!({"value": value});
    if skip + top < total {
        let mut pairs: Vec<(String, String)> = req
            .query
            .iter()
            .filter(|(k, _)| k != "$skip")
            .cloned()
            .collect();
        pairs.push(("$skip".into(), (skip + top).to_string()));
        let qs: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0{}?{qs}",
            inner.kit.base_url(),
            req.path.split('?').next().unwrap_or("")
        ));
    }
    Resp::ok(200, body)
}

fn list_events(inner: &Arc<Inner>, mailbox: &str, calendar: Option<&str>, req: &Req) -> Resp {
    let sh = match listing_shape(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = match q(req, "$filter").map(ext_filter) {
        Some(Err(r)) => return r,
        Some(Ok(f)) => Some(f),
        None => None,
    };
    let model = lock(&inner.model);
    let mb = &model.mailboxes[mailbox];
    let items: Vec<Value> = mb
        .events
        .values()
        .filter(|e| calendar.is_none_or(|c| e.calendar == c))
        .filter(|e| filter.as_ref().is_none_or(|f| matches(&e.ext, f)))
        .map(|e| e.view(&sh, &mb.upn))
        .collect();
    drop(model);
    page(inner, req, items)
}

pub(crate) fn window(req: &Req) -> Result<(DateTime<Utc>, DateTime<Utc>), Resp> {
    let get = |k: &str| -> Result<DateTime<Utc>, Resp> {
        let v = q(req, k).ok_or_else(|| bad("ErrorInvalidParameter", &format!("This request requires a time window specified by the query string parameters StartDateTime and EndDateTime. ({k} missing)")))?;
        time::parse_query_instant(v).ok_or_else(|| {
            bad(
                "ErrorInvalidParameter",
                &format!("The parameter '{k}' is not a valid date time: {v}"),
            )
        })
    };
    let (s, e) = (get("startDateTime")?, get("endDateTime")?);
    if e <= s {
        return Err(bad(
            "ErrorInvalidParameter",
            "EndDateTime must be after StartDateTime.",
        ));
    }
    Ok((s, e))
}

fn calendar_view(inner: &Arc<Inner>, mailbox: &str, calendar: Option<&str>, req: &Req) -> Resp {
    let (from, to) = match window(req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let sh = match listing_shape(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let items = {
        let model = lock(&inner.model);
        view_items(&model.mailboxes[mailbox], calendar, from, to, &sh)
    };
    page(inner, req, items)
}

/// Every instance of a calendar (default: the mailbox's default) in
/// `[from, to)`, in start order.
pub(crate) fn view_items(
    mb: &model::Mailbox,
    calendar: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sh: &Shape,
) -> Vec<Value> {
    let default = mb
        .calendars
        .values()
        .find(|c| c.default)
        .map(|c| c.id.clone());
    let cal = calendar.map(str::to_owned).or(default);
    let mut items: Vec<(DateTime<Utc>, Value)> = Vec::new();
    for e in mb
        .events
        .values()
        .filter(|e| Some(&e.calendar) == cal.as_ref())
    {
        if e.is_master() {
            items.extend(e.instances(from, to, sh, &mb.upn));
        } else if let (Some(s), Some(en)) = (e.start(), e.end())
            && s.at < to
            && (en.at > from || (en.at == s.at && s.at >= from))
        {
            items.push((s.at, e.view(sh, &mb.upn)));
        }
    }
    items.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1["id"].as_str().cmp(&b.1["id"].as_str()))
    });
    items.into_iter().map(|(_, v)| v).collect()
}

fn instances(inner: &Arc<Inner>, mailbox: &str, id: &str, req: &Req) -> Resp {
    let (from, to) = match window(req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let sh = match listing_shape(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let model = lock(&inner.model);
    let mb = &model.mailboxes[mailbox];
    let Some(e) = mb.events.get(id) else {
        return not_found();
    };
    let items = if e.is_master() {
        e.instances(from, to, &sh, &mb.upn)
    } else {
        Vec::new()
    };
    drop(model);
    page(inner, req, items.into_iter().map(|(_, v)| v).collect())
}

/// Where an id points: a stored event, or an occurrence/exception of one.
enum Target {
    Event(String),
    Occurrence {
        master: String,
        date: chrono::NaiveDate,
    },
}

fn target(mb: &model::Mailbox, id: &str) -> Option<Target> {
    if mb.events.contains_key(id) {
        return Some(Target::Event(id.to_owned()));
    }
    let (master, date) = model::parse_occurrence_id(id).or_else(|| {
        mb.events.values().find_map(|e| {
            e.exceptions
                .iter()
                .find(|(_, x)| x.id == id)
                .map(|(d, _)| (e.id.clone(), *d))
        })
    })?;
    let e = mb.events.get(&master)?;
    if e.cancelled.contains(&date) {
        return None;
    }
    if e.exceptions.contains_key(&date) || e.occurrence_at(date).is_some() {
        return Some(Target::Occurrence { master, date });
    }
    None
}

fn get_event(inner: &Arc<Inner>, mailbox: &str, id: &str, req: &Req) -> Resp {
    let sh = match shape(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let model = lock(&inner.model);
    let mb = &model.mailboxes[mailbox];
    match target(mb, id) {
        None => not_found(),
        Some(Target::Event(id)) => Resp::ok(200, mb.events[&id].view(&sh, &mb.upn)),
        Some(Target::Occurrence { master, date }) => {
            let e = &mb.events[&master];
            let at = match e.exceptions.get(&date) {
                Some(x) => x
                    .data
                    .get("start")
                    .and_then(|v| time::when(v).ok())
                    .map(|w| w.at),
                None => e.occurrence_at(date),
            };
            let Some(at) = at else { return not_found() };
            let all = e.instances(
                at - chrono::Duration::days(1),
                at + chrono::Duration::days(1),
                &sh,
                &mb.upn,
            );
            let want = e
                .exceptions
                .get(&date)
                .map(|x| x.id.clone())
                .unwrap_or_else(|| model::occurrence_id(&master, date));
            let shown = if sh.immutable {
                want
            } else {
                format!("{want}~rest")
            };
            all.into_iter()
                .map(|(_, v)| v)
                .find(|v| v["id"] == shown.as_str())
                .map_or_else(not_found, |v| Resp::ok(200, v))
        }
    }
}

/// The If-Match precondition against `change`.
fn precondition(req: &Req, change: u64) -> Option<Resp> {
    let want = header(&req.headers, "if-match")?;
    if want.trim() == "*" || want.trim() == model::etag(change) {
        return None;
    }
    Some(Resp::error(
        412,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
    ))
}

/// Validates a write body: CSDL, then Graph's semantic rules.
fn validate(
    body: &Map<String, Value>,
    create: bool,
    master_start: Option<&Value>,
) -> Result<(), Resp> {
    let mut errs = Vec::new();
    Schema::subset().check("graph.event", &Value::Object(body.clone()), "$", &mut errs);
    if !errs.is_empty() {
        return Err(bad("RequestBodyRead", &errs.join("; ")));
    }
    let zone_error = |e: String| {
        if e.starts_with("TZ:") {
            bad("TimeZoneNotSupportedException", e.trim_start_matches("TZ:"))
        } else {
            bad(
                "ErrorPropertyValidationFailure",
                &format!("At least one property failed validation. {e}"),
            )
        }
    };
    let start = match body.get("start") {
        Some(v) => Some(time::when(v).map_err(zone_error)?),
        None if create => {
            return Err(bad(
                "ErrorPropertyValidationFailure",
                "At least one property failed validation. start is required.",
            ));
        }
        None => master_start.and_then(|v| time::when(v).ok()),
    };
    let end = match body.get("end") {
        Some(v) => Some(time::when(v).map_err(zone_error)?),
        None if create => {
            return Err(bad(
                "ErrorPropertyValidationFailure",
                "At least one property failed validation. end is required.",
            ));
        }
        None => None,
    };
    if let (Some(s), Some(e)) = (&start, &end) {
        if e.at < s.at {
            return Err(bad(
                "ErrorPropertyValidationFailure",
                "At least one property failed validation. The end of the event is before its start.",
            ));
        }
        if body.get("isAllDay").and_then(Value::as_bool) == Some(true) {
            let midnight = |w: &time::When| w.local.time() == chrono::NaiveTime::MIN;
            if !midnight(s) || !midnight(e) || s.tz != e.tz || e.local.date() <= s.local.date() {
                return Err(bad(
                    "ErrorPropertyValidationFailure",
                    "At least one property failed validation. All-day events must start and end at midnight in the same time zone.",
                ));
            }
        }
    }
    if let Some(rec) = body.get("recurrence").filter(|r| !r.is_null()) {
        let Some(s) = &start else {
            return Err(bad(
                "ErrorPropertyValidationFailure",
                "At least one property failed validation. A recurrence needs a start.",
            ));
        };
        time::expansion(rec, s).map_err(zone_error)?;
    }
    model::ext_of(body).map_err(|e| bad("ErrorInvalidProperty", &e))?;
    Ok(())
}

fn side_effects(inner: &Arc<Inner>, mailbox: &str, id: &str, body: &Map<String, Value>) {
    let mut out = Vec::new();
    if body
        .get("attendees")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        out.push("invitation");
    }
    if body.get("isOnlineMeeting").and_then(Value::as_bool) == Some(true)
        || body
            .get("onlineMeetingProvider")
            .is_some_and(|p| p != "unknown")
    {
        out.push("online meeting");
    }
    if !out.is_empty() {
        let mut m = lock(&inner.model);
        for w in out {
            m.side_effects
                .push((mailbox.to_owned(), id.to_owned(), w.to_owned()));
        }
    }
}

fn create_event(inner: &Arc<Inner>, mailbox: &str, calendar: Option<String>, req: &Req) -> Resp {
    let Some(body) = req.body.as_ref().and_then(Value::as_object).cloned() else {
        return bad("RequestBodyRead", "An event body is required.");
    };
    if let Err(r) = validate(&body, true, None) {
        return r;
    }
    let sh = Shape {
        immutable: wants_immutable(&req.headers),
        ..Shape::default()
    };
    let mut model = lock(&inner.model);
    let change = model.next_change();
    let mb = model.mailboxes.get_mut(mailbox).expect("routed");
    let cal = calendar.unwrap_or_else(|| {
        mb.calendars
            .values()
            .find(|c| c.default)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    });
    let txn = body
        .get("transactionId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(t) = &txn
        && let Some(prev) = mb.transactions.get(t)
    {
        if prev.calendar == cal
            && prev.body == Value::Object(body.clone())
            && mb.events.contains_key(&prev.event)
        {
            // The retry of a create: answered with the event it made.
            return Resp::ok(201, mb.events[&prev.event].view(&sh, &mb.upn));
        }
        if mb.events.contains_key(&prev.event) {
            return bad(
                "ErrorDuplicateTransactionId",
                "Your request can't be completed. The TransactionId specified in the request has already been used to create a different event.",
            );
        }
    }
    let now = Utc::now();
    let mut data = body.clone();
    data.remove("transactionId");
    data.remove("singleValueExtendedProperties");
    let ext: BTreeMap<String, String> = model::ext_of(&body)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let id = model::new_id("AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A");
    let ev = Event {
        id: id.clone(),
        calendar: cal.clone(),
        data,
        ext,
        change,
        created: now,
        modified: now,
        transaction_id: txn.clone(),
        exceptions: BTreeMap::new(),
        cancelled: BTreeSet::new(),
    };
    let v = ev.view(&sh, &mb.upn);
    mb.events.insert(id.clone(), ev);
    if let Some(t) = txn {
        mb.transactions.insert(
            t,
            Transaction {
                event: id.clone(),
                calendar: cal,
                body: Value::Object(body.clone()),
            },
        );
    }
    drop(model);
    side_effects(inner, mailbox, &id, &body);
    Resp::ok(201, v)
}

fn patch_event(inner: &Arc<Inner>, mailbox: &str, id: &str, req: &Req) -> Resp {
    let Some(patch) = req.body.as_ref().and_then(Value::as_object).cloned() else {
        return bad("RequestBodyRead", "An event body is required.");
    };
    if patch.contains_key("transactionId") {
        return bad(
            "ErrorInvalidRequest",
            "Your request can't be completed. ClientId/TransactionId is immutable and cannot be updated.",
        );
    }
    let sh = Shape {
        immutable: wants_immutable(&req.headers),
        ..Shape::default()
    };
    let mut model = lock(&inner.model);
    let change = model.next_change();
    let mb = model.mailboxes.get_mut(mailbox).expect("routed");
    let upn = mb.upn.clone();
    let Some(t) = target(mb, id) else {
        return not_found();
    };
    let ext = match model::ext_of(&patch) {
        Ok(e) => e,
        Err(e) => return bad("ErrorInvalidProperty", &e),
    };
    let resp = match t {
        Target::Event(id) => {
            let e = mb.events.get_mut(&id).expect("target");
            if let Some(r) = precondition(req, e.change) {
                return r;
            }
            if let Err(r) = validate(&patch, false, e.data.get("start")) {
                return r;
            }
            let mut data = e.data.clone();
            model::merge(&mut data, &patch);
            // The merged event must still be valid (an end before a new start...).
            if let Err(r) = validate(&data, true, None) {
                return r;
            }
            let series_changed = e.is_master()
                && ["recurrence", "start", "end", "isAllDay"]
                    .iter()
                    .any(|k| patch.contains_key(*k) && data.get(*k) != e.data.get(*k));
            if series_changed {
                // Exchange rebuilds the series: its exceptions and deleted
                // occurrences are gone (a rule change leaves no stale one).
                e.exceptions.clear();
                e.cancelled.clear();
            }
            e.data = data;
            e.ext.extend(ext);
            e.change = change;
            e.modified = Utc::now();
            Resp::ok(200, e.view(&sh, &upn))
        }
        Target::Occurrence { master, date } => {
            // The exception gets a change key of its own; the master's is
            // left as it was. Whether Graph bumps a series master's
            // `changeKey` / `@odata.etag` when one occurrence is edited or
            // deleted is not documented (graph.md §3.1, §5), so the
            // emulator takes the case a client cannot rely on: a client
            // learns of occurrence-level changes from `calendarView/delta`
            // or by reading the master, never from the master's etag.
            let e = mb.events.get_mut(&master).expect("target");
            let current = e.exceptions.get(&date).map_or(e.change, |x| x.change);
            if let Some(r) = precondition(req, current) {
                return r;
            }
            let original = match e.exceptions.get(&date) {
                Some(x) => x.original,
                None => match e.occurrence_at(date) {
                    Some(at) => at,
                    None => return not_found(),
                },
            };
            let mut data = e
                .exceptions
                .get(&date)
                .map_or_else(|| e.occurrence_data(original), |x| x.data.clone());
            if patch.get("recurrence").is_some_and(|r| !r.is_null()) {
                return bad(
                    "ErrorPropertyValidationFailure",
                    "At least one property failed validation. An occurrence cannot have a recurrence.",
                );
            }
            if let Err(r) = validate(&patch, false, data.get("start")) {
                return r;
            }
            model::merge(&mut data, &patch);
            if let Err(r) = validate(&data, true, None) {
                return r;
            }
            let xid = e
                .exceptions
                .get(&date)
                .map(|x| x.id.clone())
                .unwrap_or_else(|| model::occurrence_id(&master, date));
            let mut x_ext = e
                .exceptions
                .get(&date)
                .map(|x| x.ext.clone())
                .unwrap_or_default();
            x_ext.extend(ext);
            e.exceptions.insert(
                date,
                Exception {
                    id: xid.clone(),
                    data,
                    ext: x_ext,
                    change,
                    original,
                },
            );
            let now_at = e.exceptions[&date]
                .data
                .get("start")
                .and_then(|v| time::when(v).ok())
                .map_or(original, |w| w.at);
            let all = e.instances(
                now_at - chrono::Duration::days(1),
                now_at + chrono::Duration::days(1),
                &sh,
                &upn,
            );
            let shown = if sh.immutable {
                xid
            } else {
                format!("{xid}~rest")
            };
            all.into_iter()
                .map(|(_, v)| v)
                .find(|v| v["id"] == shown.as_str())
                .map_or_else(not_found, |v| Resp::ok(200, v))
        }
    };
    drop(model);
    side_effects(inner, mailbox, id, &patch);
    resp
}

fn delete_event(inner: &Arc<Inner>, mailbox: &str, id: &str, req: &Req) -> Resp {
    let mut model = lock(&inner.model);
    let mb = model.mailboxes.get_mut(mailbox).expect("routed");
    match target(mb, id) {
        None => not_found(),
        Some(Target::Event(id)) => {
            if let Some(r) = precondition(req, mb.events[&id].change) {
                return r;
            }
            mb.events.remove(&id);
            // The transaction of a deleted event is forgotten (graph.md §4
            // leaves it open; a re-create after a user's delete then works).
            mb.transactions.retain(|_, t| t.event != id);
            Resp::ok(204, Value::Null)
        }
        Some(Target::Occurrence { master, date }) => {
            let e = mb.events.get_mut(&master).expect("target");
            let current = e.exceptions.get(&date).map_or(e.change, |x| x.change);
            if let Some(r) = precondition(req, current) {
                return r;
            }
            e.exceptions.remove(&date);
            e.cancelled.insert(date);
            Resp::ok(204, Value::Null)
        }
    }
}

/// `POST /v1.0/$batch`: at most `batch_max` parts, unique ids, `dependsOn`
/// (a failed dependency answers 424), at most 4 parts of a batch running at
/// once; answers in an order other than the request's.
pub(crate) async fn batch(inner: &Arc<Inner>, token: Option<&str>, body: &Value) -> Resp {
    let Some(parts) = body["requests"].as_array() else {
        return bad("BadRequest", "Invalid batch payload format.");
    };
    if parts.len() > inner.config.batch_max {
        return bad(
            "BadRequest",
            &format!(
                "Maximum number of requests allowed in a batch is {}.",
                inner.config.batch_max
            ),
        );
    }
    let mut ids = BTreeSet::new();
    for p in parts {
        let Some(id) = p["id"].as_str() else {
            return bad("BadRequest", "Every batch request needs an id.");
        };
        if !ids.insert(id.to_owned()) {
            return bad(
                "BadRequest",
                &format!("Batch request id '{id}' is duplicated."),
            );
        }
    }
    for p in parts {
        for d in p["dependsOn"].as_array().into_iter().flatten() {
            if !d.as_str().is_some_and(|d| ids.contains(d)) {
                return bad(
                    "BadRequest",
                    &format!("Depends on request {d} which is not in the batch."),
                );
            }
        }
    }
    let mut done: HashMap<String, u16> = HashMap::new();
    let mut answers: Vec<Value> = Vec::new();
    let mut pending: Vec<&Value> = parts.iter().collect();
    while !pending.is_empty() {
        let (ready, wait): (Vec<&Value>, Vec<&Value>) = pending.into_iter().partition(|p| {
            p["dependsOn"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|d| d.as_str().is_some_and(|d| done.contains_key(d)))
        });
        if ready.is_empty() {
            // A cycle: every remaining part fails.
            for p in wait {
                answers.push(json!({"id": p["id"], "status": 424, "body": {"error": {"code": "FailedDependency", "message": "Dependency cycle"}}}));
            }
            break;
        }
        for chunk in ready.chunks(4) {
            let futs = chunk.iter().map(|p| {
                let failed_dep = p["dependsOn"].as_array().into_iter().flatten().any(|d| {
                    d.as_str()
                        .and_then(|d| done.get(d))
                        .is_some_and(|s| *s >= 400)
                });
                let part = (*p).clone();
                async move {
                    let id = part["id"].as_str().unwrap_or("").to_owned();
                    if failed_dep {
                        return (
                            id,
                            Resp::error(
                                424,
                                "FailedDependency",
                                "The request depends on a request that failed.",
                            ),
                        );
                    }
                    (id, run_part(inner, token, &part).await)
                }
            });
            for (id, r) in futures_util::future::join_all(futs).await {
                done.insert(id.clone(), r.status);
                let mut h = serde_json::Map::new();
                for (k, v) in &r.headers {
                    h.insert(k.clone(), json!(v));
                }
                if !r.body.is_null() {
                    h.insert("Content-Type".into(), json!("application/json"));
                }
                let mut a = json!({"id": id, "status": r.status, "headers": h});
                if !r.body.is_null() {
                    a["body"] = r.body;
                }
                answers.push(a);
            }
        }
        pending = wait;
    }
    // Graph answers in any order; ours: reversed.
    answers.reverse();
    Resp::ok(200, json!({"responses": answers}))
}

async fn run_part(inner: &Arc<Inner>, token: Option<&str>, p: &Value) -> Resp {
    let Some(method) = p["method"]
        .as_str()
        .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
    else {
        return bad("BadRequest", "Invalid method.");
    };
    let Some(url) = p["url"].as_str() else {
        return bad("BadRequest", "Invalid url.");
    };
    let url = url.strip_prefix("/v1.0").unwrap_or(url);
    let url = if url.starts_with('/') {
        url.to_owned()
    } else {
        format!("/{url}")
    };
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut headers = HeaderMap::new();
    // The batch's own headers (Prefer) do not apply to its parts: each part
    // carries its own.
    let mut has_ct = false;
    for (k, v) in p["headers"].as_object().into_iter().flatten() {
        if let (Ok(k), Some(Ok(v))) = (
            axum::http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            v.as_str().map(axum::http::HeaderValue::from_str),
        ) {
            has_ct |= k == "content-type";
            headers.append(k, v);
        }
    }
    let body = p.get("body").filter(|b| !b.is_null()).cloned();
    if body.is_some() && !has_ct {
        return bad(
            "BadRequest",
            "Content-Type header is required when a request has a body.",
        );
    }
    let req = Req {
        method,
        path: path.to_owned(),
        query: url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers,
        body,
        batch_part: true,
    };
    let resp = dispatch(inner, token, req.clone()).await;
    inner.record_part(&req, &resp);
    resp
}
