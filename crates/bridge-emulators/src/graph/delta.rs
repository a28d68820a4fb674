//! `GET …/calendarView/delta` (graph.md §7): the instances of a window
//! (singles, occurrences, exceptions), then only what changed since.
//!
//! * The first request names the window (`startDateTime`, `endDateTime`);
//!   `$select`, `$expand`, `$filter`, `$orderby` and `$search` are refused
//!   (400), as Graph does for event delta.
//! * Pages of `Prefer: odata.maxpagesize` items (default 10) linked by
//!   `@odata.nextLink` (`$skiptoken`); the last page of a round carries
//!   `@odata.deltaLink` (`$deltatoken`), the window frozen in it.
//! * A delta round answers the instances added or changed (another
//!   `@odata.etag`) since the round its token ended, and
//!   `{"id", "@removed": {"reason": "deleted"}}` for those gone.
//! * Tokens are opaque and reusable until evicted
//!   ([`super::GraphEmulator::expire_delta_tokens`]); an evicted or unknown
//!   token answers 410 `SyncStateNotFound` (graph.md: Outlook evicts old
//!   tokens and answers 410 Gone; the code is our choice).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::api::{Req, Resp, max_page, q, view_items, wants_immutable, window};
use super::model::Shape;
use super::{Inner, lock};
use crate::kit::ids::rand_urlsafe;

/// One delta sync: its mailbox, calendar and frozen window, and the etag of
/// every instance the client has been given.
#[derive(Debug, Clone)]
pub(crate) struct Sync {
    mailbox: String,
    calendar: Option<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    seen: BTreeMap<String, String>,
}

/// What a token continues.
#[derive(Debug, Clone)]
enum Token {
    /// The rest of a round (`$skiptoken`): its items from `at` on; `sync`
    /// as it is once served. Shared, so a page copies only its own items.
    Page {
        items: Arc<Vec<Value>>,
        at: usize,
        sync: Arc<Sync>,
    },
    /// A finished round (`$deltatoken`).
    Delta(Arc<Sync>),
}

/// The delta tokens handed out.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    tokens: HashMap<String, Token>,
}

impl Deltas {
    /// Every token is evicted (the next use answers 410).
    pub(crate) fn evict_all(&mut self) {
        self.tokens.clear();
    }
}

const REFUSED: [&str; 5] = ["$select", "$expand", "$filter", "$orderby", "$search"];

/// The instances of a sync's window now, by id.
fn current(inner: &Arc<Inner>, s: &Sync, sh: &Shape) -> Vec<Value> {
    let model = lock(&inner.model);
    match model.mailboxes.get(&s.mailbox) {
        Some(mb) => view_items(mb, s.calendar.as_deref(), s.from, s.to, sh),
        None => Vec::new(),
    }
}

fn etag_of(v: &Value) -> String {
    v["@odata.etag"].as_str().unwrap_or("").to_owned()
}

/// `GET /users/{u}[/calendars/{c}]/calendarView/delta`.
pub(crate) fn delta(inner: &Arc<Inner>, mailbox: &str, calendar: Option<&str>, req: &Req) -> Resp {
    if let Some(k) = REFUSED.iter().find(|k| q(req, k).is_some()) {
        return Resp::error(
            400,
            "ErrorInvalidUrlQuery",
            &format!("The query parameter '{k}' is not supported with delta."),
        );
    }
    let sh = Shape {
        immutable: wants_immutable(&req.headers),
        ..Shape::default()
    };
    let size = max_page(&req.headers).unwrap_or(10).clamp(1, 1000);
    let gone = || {
        Resp::error(
            410,
            "SyncStateNotFound",
            "The sync state generation is not found. Start a new sync without a token.",
        )
    };
    let (items, at, sync) = if let Some(t) = q(req, "$skiptoken") {
        match lock(&inner.deltas).tokens.get(t).cloned() {
            Some(Token::Page { items, at, sync }) if sync.mailbox == mailbox => (items, at, sync),
            _ => return gone(),
        }
    } else if let Some(t) = q(req, "$deltatoken") {
        let Some(Token::Delta(sync)) = lock(&inner.deltas).tokens.get(t).cloned() else {
            return gone();
        };
        let mut sync = Sync::clone(&sync);
        if sync.mailbox != mailbox {
            return gone();
        }
        let now = current(inner, &sync, &sh);
        let mut next: BTreeMap<String, String> = BTreeMap::new();
        let mut items = Vec::new();
        for v in now {
            let id = v["id"].as_str().unwrap_or("").to_owned();
            let etag = etag_of(&v);
            if sync.seen.get(&id) != Some(&etag) {
                items.push(v);
            }
            next.insert(id, etag);
        }
        for id in sync.seen.keys().filter(|id| !next.contains_key(*id)) {
            items.push(json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}}));
        }
        sync.seen = next;
        (Arc::new(items), 0, Arc::new(sync))
    } else {
        let (from, to) = match window(req) {
            Ok(w) => w,
            Err(r) => return r,
        };
        let mut sync = Sync {
            mailbox: mailbox.to_owned(),
            calendar: calendar.map(str::to_owned),
            from,
            to,
            seen: BTreeMap::new(),
        };
        let items = current(inner, &sync, &sh);
        sync.seen = items
            .iter()
            .map(|v| (v["id"].as_str().unwrap_or("").to_owned(), etag_of(v)))
            .collect();
        (Arc::new(items), 0, Arc::new(sync))
    };
    let end = (at + size).min(items.len());
    let page: Vec<Value> = items.get(at..end).unwrap_or_default().to_vec();
    let path = req.path.split('?').next().unwrap_or("");
    let link = |k: &str, t: &str| format!("{}/v1.0{path}?{k}={t}", inner.kit.base_url());
    let mut body = json!({"value": page});
    let token = rand_urlsafe(24);
    if end >= items.len() {
        body["@odata.deltaLink"] = json!(link("$deltatoken", &token));
        lock(&inner.deltas).tokens.insert(token, Token::Delta(sync));
    } else {
        body["@odata.nextLink"] = json!(link("$skiptoken", &token));
        lock(&inner.deltas).tokens.insert(
            token,
            Token::Page {
                items,
                at: end,
                sync,
            },
        );
    }
    Resp::ok(200, body)
}
