//! The EWS target, a [`Replica`]. Exchange assigns the ids, so identity
//! lives in extended properties (`PublicStrings`): every item carries the
//! source key (`FeishuBridgeKey`), the hash of what was written
//! (`FeishuBridgeHash`) and the source calendar (`FeishuBridgeCalendar`).
//!
//! Per series, in phases that batch their items (at most `batch_size` per
//! request, one ResponseMessage each, in order):
//!
//! 1. **Adoption.** Before anything is created for a uid, the items tagged
//!    with that uid are looked up (`FindItem` with a restriction on the key
//!    property): one with the base key and the same hash is adopted (a
//!    create whose record was lost in a crash), any other is deleted. So a
//!    create never makes a second copy.
//! 2. **Deletes** (`DeleteItem`, `SendMeetingCancellations="SendToNone"`;
//!    `ErrorItemNotFound` is done).
//! 3. **Creates** (`CreateItem`, `SendMeetingInvitations="SendToNone"`).
//! 4. **Updates** (`UpdateItem`, `ConflictResolution="NeverOverwrite"` with
//!    the recorded ChangeKey; a conflict re-reads the ChangeKey with
//!    `GetItem` and tries again; `ErrorItemNotFound` creates the item again).
//! 5. **Occurrences** of masters written or kept: a modified occurrence is
//!    an `UpdateItem` on its `OccurrenceItemId` (master id + 1-based
//!    `InstanceIndex`), a cancelled one a `DeleteItem` on it; then the
//!    masters' new ChangeKeys are read back (`GetItem`), since an
//!    occurrence's change changes its master's.
//!
//! A master is rewritten (deleted and created again with every exception)
//! when its start, end, zone or pattern change, when a modification or a
//! cancellation is withdrawn (EWS cannot restore an occurrence), or when it
//! disappeared. A rewrite is all or nothing: if a part fails, what it
//! created is deleted and every op of the series fails, to be planned again.
//! A rule EWS has no pattern for is written as single items, one per
//! occurrence within a horizon, with a warning.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bridge_core::plan::Op;
use bridge_core::privacy::project;
use bridge_core::{CanonicalEvent, EventKey, EventTime, Privacy, Series};
use bridge_target::{
    Drift, DriftInput, ItemOutcome, RemoteRef, Replica, ReplicaInput, SeriesOutcome, Sink,
    SinkError, StateStore, Target,
};
use chrono_tz::Tz;

use super::client::{
    ClientConfig, Credentials, EwsClient, EwsError, ItemResult, TRANSIENT, messages,
};
use super::folder;
use super::item::{self, CALENDAR_PROPERTY, Shape, Written, prop_uri};
use super::xml::{El, esc};
use crate::microsoft::exact;
use crate::microsoft::recurrence::{self, Recurrence};
use crate::microsoft::tag;

mod drift;

/// What to do with an item a user deleted in Exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTargetDelete {
    #[default]
    Restore,
    Respect,
}

/// Settings of one EWS sink.
#[derive(Debug, Clone)]
pub struct EwsSinkConfig {
    /// `ews:<name>`.
    pub id: String,
    pub privacy: Privacy,
    pub on_target_delete: OnTargetDelete,
    /// Items per CreateItem / UpdateItem / DeleteItem / GetItem request.
    pub batch_size: usize,
    /// Days before / after now a rule without an EWS pattern is written as
    /// single occurrences.
    pub fallback_past_days: i64,
    pub fallback_future_days: i64,
    pub client: ClientConfig,
    /// A calendar folder (display name) under the mailbox's calendar to
    /// write into instead of the calendar itself.
    pub folder: Option<String>,
    /// Create `folder` when it does not exist.
    pub create_folder: bool,
    /// The file the Basic password was read from (resolved): a paused sink
    /// resumes at once when its content changes.
    pub password_file: Option<std::path::PathBuf>,
    /// How long an account pause holds before the sink tries again.
    pub pause_retry: std::time::Duration,
}

/// How long an account pause holds by default.
pub const PAUSE_RETRY: std::time::Duration = std::time::Duration::from_secs(300);

/// Why the sink is paused, and since when.
#[derive(Debug, Clone)]
struct Pause {
    message: String,
    since: std::time::Instant,
    /// Whether it lifts (an account problem a person fixes while the
    /// daemon runs); a configuration the client refused never does.
    lifts: bool,
}

/// Records of fallback series (single items per occurrence) carry this
/// etag prefix; their id holds every item id, space separated.
const FALLBACK: &str = "F";
/// Most occurrences a fallback series writes.
const FALLBACK_MAX: usize = 1000;
/// Page size of the tagged-items listing.
const PAGE: usize = 500;
/// Follow-up rounds for conflicts.
const ROUNDS: usize = 3;

/// The EWS sink.
#[derive(Debug)]
pub struct EwsSink {
    cfg: EwsSinkConfig,
    client: Result<EwsClient, String>,
    pause: Mutex<Option<Pause>>,
    /// The sink's own state (acknowledged masters, see [`drift`]); without
    /// one, kept in memory only.
    state: Option<Arc<dyn StateStore>>,
    acks: Mutex<HashMap<String, drift::Ack>>,
    /// The id of `cfg.folder`, once found or created.
    folder_id: Mutex<Option<String>>,
}

/// State name of the named folder's id (key: its display name).
const FOLDER_STATE: &str = "ews-folder";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One of our items as a listing shows it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub id: String,
    pub change_key: String,
    pub key: Option<EventKey>,
    pub hash: Option<String>,
}

/// A single item to create or update.
#[derive(Debug)]
struct ItemWork {
    key: EventKey,
    written: Written,
    /// Recorded `(id, change key)`: an update.
    existing: Option<(String, String)>,
    /// Its answer: `(id, change key)`.
    done: Option<(String, String)>,
    tries: usize,
}

#[derive(Debug)]
enum OccAction {
    Update(Written),
    Delete,
}

#[derive(Debug)]
struct OccWork {
    /// The op's key, when an op asks for it (re-applied ones have none).
    key: Option<EventKey>,
    original: i64,
    index: Option<u32>,
    action: OccAction,
    done: Option<(String, String)>,
}

/// Everything one series needs.
#[derive(Debug, Default)]
struct Work {
    uid: String,
    ops: Vec<Op>,
    /// Remote ids deleted before creating (old masters, leftovers, gone items).
    deletes: Vec<(Option<EventKey>, String)>,
    /// The base single or master.
    base: Option<ItemWork>,
    /// The master's signature and event (for occurrence indexes).
    master: Option<(String, CanonicalEvent)>,
    /// A fallback series: its single items.
    fallback: Vec<ItemWork>,
    orphans: Vec<ItemWork>,
    occ: Vec<OccWork>,
    /// All or nothing (a rewrite or a new series).
    atomic: bool,
    /// Whether the creates wait for the adoption lookup.
    adopt: bool,
    /// The master was found gone and created again: every exception again.
    recreated: bool,
    failed: Option<SinkError>,
    key_errors: BTreeMap<EventKey, SinkError>,
    created: Vec<String>,
}

impl Work {
    fn fail(&mut self, key: Option<&EventKey>, e: SinkError) {
        if (self.atomic || key.is_none_or(EventKey::is_base)) && self.failed.is_none() {
            self.failed = Some(e.clone());
        }
        if let Some(k) = key {
            self.key_errors.entry(k.clone()).or_insert(e);
        }
    }
}

fn to_sink_error(e: &EwsError) -> SinkError {
    if e.pauses() {
        SinkError::Paused(e.to_string())
    } else if e.is_transient() {
        SinkError::transient(e.to_string())
    } else {
        SinkError::Permanent(e.to_string())
    }
}

fn item_error(r: &ItemResult) -> SinkError {
    let text = format!("{}: {}", r.code, r.message);
    if TRANSIENT.contains(&r.code.as_str()) {
        SinkError::transient(text)
    } else {
        SinkError::Permanent(text)
    }
}

fn gone(code: &str) -> bool {
    matches!(
        code,
        "ErrorItemNotFound"
            | "ErrorCalendarOccurrenceIsDeletedFromRecurrence"
            | "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange"
    )
}

fn item_id_xml(id: &str, ck: Option<&str>) -> String {
    match ck.filter(|c| !c.is_empty()) {
        Some(ck) => format!("<t:ItemId Id=\"{}\" ChangeKey=\"{}\"/>", esc(id), esc(ck)),
        None => format!("<t:ItemId Id=\"{}\"/>", esc(id)),
    }
}

fn occurrence_id_xml(master: &str, index: u32) -> String {
    format!(
        "<t:OccurrenceItemId RecurringMasterId=\"{}\" InstanceIndex=\"{index}\"/>",
        esc(master)
    )
}

/// The master's etag: its ChangeKey and signature.
fn master_etag(ck: &str, sig: &str) -> String {
    format!("{ck} {sig}")
}

fn split_etag(etag: Option<&str>) -> (String, Option<String>) {
    match etag.unwrap_or_default().split_once(' ') {
        Some((ck, sig)) => (ck.to_owned(), Some(sig.to_owned())),
        None => (etag.unwrap_or_default().to_owned(), None),
    }
}

impl EwsSink {
    pub fn new(cfg: EwsSinkConfig, creds: Credentials) -> Self {
        let client = EwsClient::new(cfg.client.clone(), creds).map_err(|e| e.to_string());
        let pause = client.as_ref().err().map(|e| Pause {
            message: e.clone(),
            since: std::time::Instant::now(),
            lifts: false,
        });
        Self {
            cfg,
            client,
            pause: Mutex::new(pause),
            state: None,
            acks: Mutex::new(HashMap::new()),
            folder_id: Mutex::new(None),
        }
    }

    /// Keeps the sink's state (what drift acknowledged) in `state`.
    #[must_use]
    pub fn with_state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    pub fn config(&self) -> &EwsSinkConfig {
        &self.cfg
    }

    /// The transport (its call counters).
    pub fn client(&self) -> Option<&EwsClient> {
        self.client.as_ref().ok()
    }

    /// EWS requests by operation and HTTP status, for `/metrics`.
    pub fn calls(&self) -> BTreeMap<(String, u16), u64> {
        self.client.as_ref().map(|c| c.calls()).unwrap_or_default()
    }

    fn note(&self, e: &EwsError) -> SinkError {
        let s = to_sink_error(e);
        if let SinkError::Paused(m) = &s {
            let msg = pause_message(&self.cfg, e, m);
            tracing::error!(sink = %self.cfg.id, "{msg}; the EWS sink pauses, other sinks go on");
            *lock(&self.pause) = Some(Pause {
                message: msg.clone(),
                since: std::time::Instant::now(),
                lifts: true,
            });
            return SinkError::Paused(msg);
        }
        s
    }

    /// The folder written into: the named folder once resolved
    /// ([`Self::ensure_folder`]), else the mailbox's calendar.
    fn folder_xml(&self, client: &EwsClient) -> String {
        match lock(&self.folder_id).as_deref() {
            Some(id) => folder::folder_id_xml(id),
            None => folder::calendar_xml(client.mailbox(), self.cfg.client.impersonation),
        }
    }

    /// Finds (or creates, with `create_folder`) the named folder and keeps
    /// its id (in memory and in the sink's state). A folder that is missing
    /// and may not be created pauses the sink with what to do.
    async fn ensure_folder(&self, client: &EwsClient) -> Result<(), SinkError> {
        let Some(name) = self.cfg.folder.as_deref() else {
            return Ok(());
        };
        if lock(&self.folder_id).is_some() {
            return Ok(());
        }
        if let Some(state) = &self.state
            && let Ok(Some(v)) = state.get(FOLDER_STATE, name).await
            && let Ok(id) = serde_json::from_str::<String>(&v)
        {
            *lock(&self.folder_id) = Some(id);
            return Ok(());
        }
        let imp = self.cfg.client.impersonation;
        let id = match folder::find(client, imp, name)
            .await
            .map_err(|e| self.note(&e))?
        {
            Some(id) => id,
            None if self.cfg.create_folder => {
                let id = folder::create(client, imp, name)
                    .await
                    .map_err(|e| self.note(&e))?;
                tracing::info!(sink = %self.cfg.id, folder = name, "created the calendar folder");
                id
            }
            None => {
                let msg = format!(
                    "EWS sink {} paused: the calendar folder {name:?} does not exist under the calendar of {}; create it (in Outlook: New Calendar) or set create_folder = true; it looks again in {} minutes",
                    self.cfg.id,
                    client.mailbox(),
                    self.cfg.pause_retry.as_secs().div_ceil(60)
                );
                tracing::error!(sink = %self.cfg.id, "{msg}");
                *lock(&self.pause) = Some(Pause {
                    message: msg.clone(),
                    since: std::time::Instant::now(),
                    lifts: true,
                });
                return Err(SinkError::Paused(msg));
            }
        };
        if let Some(state) = &self.state
            && let Err(e) = state
                .put(
                    FOLDER_STATE,
                    name,
                    &serde_json::Value::from(id.clone()).to_string(),
                )
                .await
        {
            tracing::warn!(sink = %self.cfg.id, error = %e, "could not write the sink's state");
        }
        *lock(&self.folder_id) = Some(id);
        Ok(())
    }

    /// Forgets the named folder's id (it was deleted): found or created
    /// again on the next pass.
    async fn forget_folder(&self) {
        let Some(name) = self.cfg.folder.as_deref() else {
            return;
        };
        *lock(&self.folder_id) = None;
        if let Some(state) = &self.state {
            let _ = state.delete(FOLDER_STATE, name).await;
        }
    }

    /// Why the sink is paused now. An account pause lifts when
    /// `password_file` holds another password than the one refused (the
    /// new one is used at once), or after `pause_retry`: the next pass
    /// tries again and pauses again if nothing was fixed.
    fn pause_now(&self) -> Option<String> {
        let mut pause = lock(&self.pause);
        let p = pause.as_ref()?;
        if !p.lifts {
            return Some(p.message.clone());
        }
        let why = if let Some(new) = self.changed_password() {
            if let Ok(c) = &self.client {
                c.set_password(new);
            }
            "its password_file changed"
        } else if p.since.elapsed() >= self.cfg.pause_retry {
            "its pause ran out"
        } else {
            return Some(p.message.clone());
        };
        tracing::info!(sink = %self.cfg.id, "the EWS sink tries again: {why}");
        *pause = None;
        None
    }

    /// The password in `password_file` when it differs from the one in use.
    /// (A small synchronous read: `paused` is synchronous, and the file is
    /// one line.)
    fn changed_password(&self) -> Option<bridge_http::Secret> {
        let path = self.cfg.password_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let new = bridge_http::Secret::new(text.trim());
        let used = self.client.as_ref().ok()?.password()?;
        (!new.is_empty() && new != used).then_some(new)
    }

    /// Runs one batched operation; request-level errors become per-item.
    async fn batched(
        &self,
        client: &EwsClient,
        op: &str,
        open: &str,
        close: &str,
        parts: &[String],
    ) -> Vec<Result<ItemResult, SinkError>> {
        let mut out = Vec::with_capacity(parts.len());
        for chunk in parts.chunks(self.cfg.batch_size.max(1)) {
            let body = format!("{open}{}{close}", chunk.concat());
            match client.call(op, &body).await {
                Ok(answer) => {
                    let mut msgs = messages(&answer).into_iter();
                    for _ in chunk {
                        out.push(msgs.next().ok_or_else(|| {
                            SinkError::transient(format!("{op}: fewer answers than items"))
                        }));
                    }
                }
                Err(e) => {
                    let err = self.note(&e);
                    out.extend(chunk.iter().map(|_| Err(err.clone())));
                }
            }
        }
        out
    }

    /// Our items of `calendar` (masters and singles), optionally only those
    /// whose key starts with one of `uids` (`uid_`).
    pub async fn list_ours(
        &self,
        client: &EwsClient,
        calendar: &str,
        uids: Option<&BTreeSet<String>>,
    ) -> Result<Vec<Remote>, EwsError> {
        let cal_eq = format!(
            "<t:IsEqualTo>{}<t:FieldURIOrConstant><t:Constant Value=\"{}\"/></t:FieldURIOrConstant></t:IsEqualTo>",
            prop_uri(CALENDAR_PROPERTY),
            esc(calendar)
        );
        let restriction = match uids {
            Some(u) if u.len() <= 50 => {
                let terms: String = u
                    .iter()
                    .map(|uid| {
                        format!(
                            "<t:Contains ContainmentMode=\"Prefixed\" ContainmentComparison=\"Exact\">{}<t:Constant Value=\"{}_\"/></t:Contains>",
                            prop_uri(tag::KEY_PROPERTY),
                            esc(uid)
                        )
                    })
                    .collect();
                format!("<t:And>{cal_eq}<t:Or>{terms}</t:Or></t:And>")
            }
            _ => cal_eq,
        };
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let body = format!(
                "<m:FindItem Traversal=\"Shallow\"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>{}{}</t:AdditionalProperties></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned=\"{PAGE}\" Offset=\"{offset}\" BasePoint=\"Beginning\"/><m:Restriction>{restriction}</m:Restriction><m:ParentFolderIds>{}</m:ParentFolderIds></m:FindItem>",
                prop_uri(tag::KEY_PROPERTY),
                prop_uri(tag::HASH_PROPERTY),
                self.folder_xml(client)
            );
            let answer = client.call("FindItem", &body).await?;
            let msg = messages(&answer)
                .into_iter()
                .next()
                .ok_or_else(|| EwsError::Decode("FindItem answered no message".into()))?;
            if !msg.ok() {
                if msg.code == "ErrorFolderNotFound" {
                    self.forget_folder().await;
                }
                return Err(EwsError::Fault {
                    code: msg.code,
                    message: msg.message,
                });
            }
            let root = msg
                .element
                .child("RootFolder")
                .ok_or_else(|| EwsError::Decode("FindItem answered no RootFolder".into()))?;
            let items = root
                .child("Items")
                .map(|i| i.children.as_slice())
                .unwrap_or_default();
            for it in items {
                let Some(id) = it.child("ItemId") else {
                    continue;
                };
                let prop = |name: &str| {
                    it.children
                        .iter()
                        .filter(|c| c.name == "ExtendedProperty")
                        .find(|c| {
                            c.child("ExtendedFieldURI")
                                .and_then(|u| u.attr("PropertyName"))
                                == Some(name)
                        })
                        .and_then(|c| c.text_of("Value"))
                        .map(str::to_owned)
                };
                out.push(Remote {
                    id: id.attr("Id").unwrap_or_default().to_owned(),
                    change_key: id.attr("ChangeKey").unwrap_or_default().to_owned(),
                    key: prop(tag::KEY_PROPERTY).and_then(|k| EventKey::parse(&k).ok()),
                    hash: prop(tag::HASH_PROPERTY),
                });
            }
            let last = root.attr("IncludesLastItemInRange") != Some("false");
            if last || items.is_empty() {
                return Ok(out);
            }
            // A truncated listing must never look complete.
            offset = root
                .attr("IndexedPagingOffset")
                .and_then(|o| o.parse().ok())
                .filter(|o: &usize| *o > offset)
                .ok_or_else(|| EwsError::Decode("FindItem paging did not advance".into()))?;
        }
    }
}

fn pause_message(cfg: &EwsSinkConfig, e: &EwsError, m: &str) -> String {
    let fix = match e {
        EwsError::Unauthorized(_) => {
            "check the username and password (or the OAuth client) of the sink"
        }
        EwsError::Token(_) => "check tenant_id, client_id and client_secret of the sink",
        EwsError::Denied { code, .. } if code == "ErrorNonExistentMailbox" => {
            "check the sink's mailbox address"
        }
        EwsError::Denied { .. } => {
            "grant the account the ApplicationImpersonation role (or the app full_access_as_app) for the mailbox"
        }
        _ => "check the sink's configuration",
    };
    let retry = match &cfg.password_file {
        Some(f) if matches!(e, EwsError::Unauthorized(_)) => format!(
            "; it tries again at once when {} changes, else in {} minutes",
            f.display(),
            cfg.pause_retry.as_secs().div_ceil(60)
        ),
        _ => format!(
            "; it tries again in {} minutes",
            cfg.pause_retry.as_secs().div_ceil(60)
        ),
    };
    format!("EWS sink {} paused: {m}; {fix}{retry}", cfg.id)
}

/// The zone all-day items use: the calendar's, else UTC.
fn all_day_zone(tz: Option<&str>) -> Tz {
    tz.and_then(|z| z.parse().ok()).unwrap_or(Tz::UTC)
}

/// The occurrence starts of a master that the single-item fallback writes.
fn fallback_events(
    master: &CanonicalEvent,
    series: &Series<'_>,
    from: i64,
    until: i64,
) -> Result<Vec<CanonicalEvent>, String> {
    let starts = expand(master, from, until, FALLBACK_MAX)?;
    let len = master.end.instant() - master.start.instant();
    let mut out = Vec::new();
    for t in starts {
        if series.cancelled.contains(&t) {
            continue;
        }
        let Ok(key) = EventKey::new(master.key.uid(), t) else {
            continue;
        };
        if let Some(o) = series.overrides.iter().find(|o| o.key == key) {
            out.push((*o).clone());
            continue;
        }
        out.push(occurrence_event(master, t, len, key));
    }
    // Modified occurrences moved from a time outside the horizon still show.
    for o in &series.overrides {
        if !out.iter().any(|e| e.key == o.key)
            && o.start.instant() < until
            && o.end.instant() > from
        {
            out.push((*o).clone());
        }
    }
    Ok(out)
}

/// The unmodified occurrence of `master` starting at `t` (`len` seconds
/// long), keyed `key`.
fn occurrence_event(master: &CanonicalEvent, t: i64, len: i64, key: EventKey) -> CanonicalEvent {
    let mut ev = master.clone();
    ev.start = master.start.same_form(t);
    ev.end = match (master.end, ev.start) {
        (EventTime::Date(_), EventTime::Date(d)) => {
            EventTime::Date(d + chrono::Days::new((len / 86_400).max(1) as u64))
        }
        _ => master.end.same_form(ev.start.instant() + len),
    };
    ev.rrule = None;
    ev.rrule_bound = None;
    ev.key = key;
    ev
}

/// The 1-based index of the occurrence at `original` of `master`: the
/// generated occurrence at that instant, or at that wall-clock time in the
/// master's zone (an original time in the second of two equal wall-clock
/// hours names the occurrence a wall-clock reader generates at the first).
fn occurrence_index(master: &CanonicalEvent, original: i64) -> Option<u32> {
    let starts = expand(master, i64::MIN / 4, original + 2 * 3600, usize::MAX).ok()?;
    let wall = |t: i64| {
        master
            .start
            .tz()
            .map(|tz| bridge_core::instant::wall_clock(tz, t))
    };
    let p = starts
        .iter()
        .position(|t| *t == original)
        .or_else(|| {
            let w = wall(original)?;
            starts.iter().position(|t| wall(*t) == Some(w))
        })
        .or_else(|| {
            // A time in a gap read with the other offset.
            let tz = master.start.tz()?;
            starts
                .iter()
                .position(|t| exact::other_reading(tz, *t, original))
        })?;
    u32::try_from(p + 1).ok()
}

/// The occurrence starts of a master in `[from, until)` (exact instants,
/// also from a start in a repeated hour: [`recurrence::occurrences`]).
fn expand(master: &CanonicalEvent, from: i64, until: i64, max: usize) -> Result<Vec<i64>, String> {
    recurrence::occurrences(master, from, until, max)
}

impl EwsSink {
    fn written(
        &self,
        ev: &CanonicalEvent,
        shape: Shape<'_>,
        key: &EventKey,
        uid: &str,
        cal: &str,
        zone: Tz,
    ) -> Written {
        let ev = project(ev, self.cfg.privacy);
        item::item(&ev, shape, key, uid, cal, zone)
    }

    /// Decides the work of one series.
    fn plan(&self, so: &bridge_target::SeriesOps<'_>, input: &ReplicaInput<'_>, zone: Tz) -> Work {
        let cal = &input.calendar.id;
        let records = input.records;
        let mut w = Work {
            uid: so.uid.to_owned(),
            ops: so.ops.clone(),
            ..Work::default()
        };
        let series = so.series;
        let base = series.and_then(|s| s.base);
        let Ok(base_key) = EventKey::new(so.uid, 0) else {
            return w;
        };
        let base_rec = records
            .get(&base_key)
            .filter(|r| !r.remote.id.is_empty())
            .map(|r| r.remote.clone());
        let rec_ids = |r: &RemoteRef| -> Vec<String> {
            r.id.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let base_ops: Vec<&Op> = so.ops.iter().filter(|o| o.key().is_base()).collect();
        let base_touched = !base_ops.is_empty();
        // Orphans (live occurrences without a recurring master).
        for op in so.ops.iter().filter(|o| !o.key().is_base()) {
            let key = op.key();
            let orphan = series.and_then(|s| s.orphans.iter().find(|o| o.key == *key));
            let rec = records.get(key).filter(|r| !r.remote.id.is_empty());
            match (op, orphan) {
                (Op::Create(_) | Op::Update(_), Some(ev)) => {
                    let uid = key.to_string();
                    let written = self.written(ev, Shape::Single, key, &uid, cal, zone);
                    let existing = rec
                        .filter(|r| {
                            !r.remote
                                .etag
                                .as_deref()
                                .unwrap_or_default()
                                .starts_with(FALLBACK)
                        })
                        .map(|r| (r.remote.id.clone(), split_etag(r.remote.etag.as_deref()).0));
                    if existing.is_none() {
                        w.adopt = true;
                    }
                    w.orphans.push(ItemWork {
                        key: key.clone(),
                        written,
                        existing,
                        done: None,
                        tries: 0,
                    });
                }
                (Op::Delete(_), _) if series.and_then(Series::master).is_none() => {
                    // A former orphan (or an occurrence of a master that goes too).
                    if let Some(r) = rec
                        && !r
                            .remote
                            .etag
                            .as_deref()
                            .unwrap_or_default()
                            .starts_with(FALLBACK)
                    {
                        for id in rec_ids(&r.remote) {
                            w.deletes.push((Some(key.clone()), id));
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(base) = base else {
            // The series is gone: its base item(s) go.
            if let Some(r) = base_rec.filter(|_| base_touched) {
                for id in rec_ids(&r) {
                    w.deletes.push((Some(base_key.clone()), id));
                }
            }
            return w;
        };
        let (rec_ck, rec_sig) = split_etag(base_rec.as_ref().and_then(|r| r.etag.as_deref()));
        let rec_fallback = rec_ck == FALLBACK;
        let master = series.and_then(Series::master);
        let pattern: Option<Result<Recurrence, String>> = master.map(|m| {
            let r = recurrence::from_event(m).map_err(|e| e.0)?;
            if m.start
                .tz()
                .is_some_and(|tz| item::windows(tz) == "UTC" && tz != Tz::UTC)
            {
                return Err(format!(
                    "{} has no Windows time zone",
                    m.start.tz().map(|t| t.name()).unwrap_or_default()
                ));
            }
            Ok(r)
        });
        match (master, pattern) {
            (Some(m), Some(Err(why))) => {
                // No EWS pattern: single items within the horizon.
                tracing::warn!(sink = %self.cfg.id, uid = %so.uid, "{why}: the series is written as single occurrences from {} days ago to {} days ahead", self.cfg.fallback_past_days, self.cfg.fallback_future_days);
                w.atomic = true;
                w.adopt = true;
                if let Some(r) = &base_rec {
                    for id in rec_ids(r) {
                        w.deletes.push((None, id));
                    }
                }
                let now = input.now;
                let from = now - self.cfg.fallback_past_days * 86_400;
                let until = now + self.cfg.fallback_future_days * 86_400;
                match fallback_events(m, series.expect("a master has a series"), from, until) {
                    Ok(evs) => {
                        // Tagged with the series' key (each has its own
                        // UID): together they stand for the series.
                        for ev in evs {
                            let uid = ev.key.to_string();
                            let written =
                                self.written(&ev, Shape::Single, &base_key, &uid, cal, zone);
                            w.fallback.push(ItemWork {
                                key: base_key.clone(),
                                written,
                                existing: None,
                                done: None,
                                tries: 0,
                            });
                        }
                    }
                    Err(e) => w.fail(
                        Some(&base_key),
                        SinkError::Permanent(format!("recurrence: {e}")),
                    ),
                }
            }
            (Some(m), Some(Ok(rec))) => {
                let s = series.expect("a master has a series");
                let written = self.written(m, Shape::Master(&rec), &base_key, so.uid, cal, zone);
                let withdrawn = so
                    .ops
                    .iter()
                    .any(|o| matches!(o, Op::Delete(k) if !k.is_base()));
                let rewrite = base_rec.is_none()
                    || rec_fallback
                    || rec_sig.as_deref() != Some(written.signature.as_str())
                    || withdrawn;
                w.master = Some((written.signature.clone(), m.clone()));
                if rewrite {
                    w.atomic = true;
                    w.adopt = true;
                    if let Some(r) = &base_rec {
                        for id in rec_ids(r) {
                            w.deletes.push((None, id));
                        }
                    }
                    w.base = Some(ItemWork {
                        key: base_key.clone(),
                        written,
                        existing: None,
                        done: None,
                        tries: 0,
                    });
                    // Every exception again.
                    for o in &s.overrides {
                        let ow = self.written(o, Shape::Occurrence, &o.key, so.uid, cal, zone);
                        w.occ.push(OccWork {
                            key: Some(o.key.clone()),
                            original: o.key.original_time(),
                            index: None,
                            action: OccAction::Update(ow),
                            done: None,
                        });
                    }
                    for t in &s.cancelled {
                        w.occ.push(OccWork {
                            key: EventKey::new(so.uid, *t).ok(),
                            original: *t,
                            index: None,
                            action: OccAction::Delete,
                            done: None,
                        });
                    }
                    self.first_occurrence_fix(&mut w, s, cal, zone);
                } else {
                    let existing = base_rec.as_ref().map(|r| (r.id.clone(), rec_ck.clone()));
                    if base_touched {
                        w.base = Some(ItemWork {
                            key: base_key.clone(),
                            written,
                            existing,
                            done: None,
                            tries: 0,
                        });
                        // Exchange may keep an exception's old content:
                        // the exact occurrences take the master's new one.
                        self.exact_occurrences(&mut w, s, cal, zone);
                    } else {
                        // Only occurrences change; the master stays as it is.
                        w.base = Some(ItemWork {
                            key: base_key.clone(),
                            written,
                            existing: existing.clone(),
                            done: existing,
                            tries: 0,
                        });
                    }
                    for op in so.ops.iter().filter(|o| !o.key().is_base()) {
                        let k = op.key();
                        if let Some(o) = s.overrides.iter().find(|o| o.key == *k) {
                            let ow = self.written(o, Shape::Occurrence, k, so.uid, cal, zone);
                            w.occ.push(OccWork {
                                key: Some(k.clone()),
                                original: k.original_time(),
                                index: None,
                                action: OccAction::Update(ow),
                                done: None,
                            });
                        } else if s.is_cancelled(k) {
                            w.occ.push(OccWork {
                                key: Some(k.clone()),
                                original: k.original_time(),
                                index: None,
                                action: OccAction::Delete,
                                done: None,
                            });
                        }
                    }
                }
            }
            _ => {
                // A single event.
                let written = self.written(base, Shape::Single, &base_key, so.uid, cal, zone);
                let single_rec = base_rec
                    .as_ref()
                    .filter(|_| !rec_fallback && rec_sig.is_none());
                match single_rec {
                    Some(r) if base_touched => {
                        w.base = Some(ItemWork {
                            key: base_key.clone(),
                            written,
                            existing: Some((r.id.clone(), rec_ck.clone())),
                            done: None,
                            tries: 0,
                        });
                    }
                    Some(_) => {}
                    None => {
                        // New, or a former series: the old items go.
                        w.atomic = true;
                        w.adopt = true;
                        if let Some(r) = &base_rec {
                            for id in rec_ids(r) {
                                w.deletes.push((None, id));
                            }
                        }
                        w.base = Some(ItemWork {
                            key: base_key.clone(),
                            written,
                            existing: None,
                            done: None,
                            tries: 0,
                        });
                    }
                }
            }
        }
        w
    }

    /// A series whose first occurrence a wall-clock reader gets wrong from
    /// the master alone gets an exception with Feishu's exact instants; so
    /// do its later occurrences in a repeated or skipped hour
    /// ([`crate::microsoft::exact`]).
    fn first_occurrence_fix(&self, w: &mut Work, s: &Series<'_>, cal: &str, zone: Tz) {
        self.exact_occurrences(w, s, cal, zone);
        let Some(fix) = s.wall_clock_fix() else {
            return;
        };
        let Some(first) = fix.first else { return };
        let ow = self.written(
            &first.event,
            Shape::Occurrence,
            &first.event.key,
            s.uid,
            cal,
            zone,
        );
        w.occ.push(OccWork {
            key: None,
            original: first.event.start.instant(),
            index: Some(1),
            action: OccAction::Update(ow),
            done: None,
        });
    }

    /// The later occurrences Exchange could place otherwise than Feishu:
    /// exceptions with exact instants, named by their instance index.
    fn exact_occurrences(&self, w: &mut Work, s: &Series<'_>, cal: &str, zone: Tz) {
        for o in exact::exact_occurrences(s, exact::horizon()) {
            let ow = self.written(&o.event, Shape::Occurrence, &o.event.key, s.uid, cal, zone);
            w.occ.push(OccWork {
                key: None,
                original: o.original,
                index: Some(o.index),
                action: OccAction::Update(ow),
                done: None,
            });
        }
    }
}

/// Where a phase's part came from.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Base(usize),
    Fallback(usize, usize),
    Orphan(usize, usize),
}

impl EwsSink {
    fn slot(works: &mut [Work], s: Slot) -> (&mut ItemWork, usize) {
        match s {
            Slot::Base(i) => (works[i].base.as_mut().expect("slot of a base"), i),
            Slot::Fallback(i, j) => (&mut works[i].fallback[j], i),
            Slot::Orphan(i, j) => (&mut works[i].orphans[j], i),
        }
    }

    /// Phase 1: what our tagged items of the uids about to be created are;
    /// adopts a base written before a crash, deletes any other copy.
    async fn adopt(
        &self,
        client: &EwsClient,
        cal: &str,
        works: &mut [Work],
    ) -> Result<(), SinkError> {
        let uids: BTreeSet<String> = works
            .iter()
            .filter(|w| w.adopt)
            .map(|w| w.uid.clone())
            .collect();
        if uids.is_empty() {
            return Ok(());
        }
        let found = self
            .list_ours(client, cal, Some(&uids))
            .await
            .map_err(|e| self.note(&e))?;
        let mut by_uid: HashMap<&str, Vec<&Remote>> = HashMap::new();
        for r in &found {
            if let Some(k) = &r.key {
                by_uid.entry(k.uid()).or_default().push(r);
            }
        }
        for w in works.iter_mut().filter(|w| w.adopt) {
            let known: BTreeSet<String> = w.deletes.iter().map(|d| d.1.clone()).collect();
            let mut keep: BTreeSet<String> = BTreeSet::new();
            // Kept by their records (an update in place).
            for it in w.base.iter().chain(&w.orphans) {
                if let Some((id, _)) = &it.existing {
                    keep.insert(id.clone());
                }
            }
            for r in by_uid.get(w.uid.as_str()).into_iter().flatten() {
                if keep.contains(&r.id) || known.contains(&r.id) {
                    continue;
                }
                let target = w.base.iter_mut().chain(w.orphans.iter_mut()).find(|it| {
                    it.existing.is_none() && it.done.is_none() && Some(&it.key) == r.key.as_ref()
                });
                match target {
                    Some(it) if r.hash.as_deref() == Some(it.written.hash.as_str()) => {
                        tracing::info!(sink = %self.cfg.id, key = %it.key, "adopted an item written before a crash");
                        it.done = Some((r.id.clone(), r.change_key.clone()));
                        keep.insert(r.id.clone());
                    }
                    _ => w.deletes.push((None, r.id.clone())),
                }
            }
        }
        Ok(())
    }

    async fn deletes(&self, client: &EwsClient, works: &mut [Work]) {
        let mut parts = Vec::new();
        let mut who = Vec::new();
        for (i, w) in works.iter().enumerate() {
            for (k, id) in &w.deletes {
                parts.push(item_id_xml(id, None));
                who.push((i, k.clone()));
            }
        }
        if parts.is_empty() {
            return;
        }
        let res = self
            .batched(client, "DeleteItem", "<m:DeleteItem DeleteType=\"HardDelete\" SendMeetingCancellations=\"SendToNone\"><m:ItemIds>", "</m:ItemIds></m:DeleteItem>", &parts)
            .await;
        for ((i, k), r) in who.into_iter().zip(res) {
            match r {
                Ok(m) if m.ok() || gone(&m.code) => {}
                Ok(m) => works[i].fail(k.as_ref(), item_error(&m)),
                Err(e) => works[i].fail(k.as_ref(), e),
            }
        }
    }

    async fn creates(&self, client: &EwsClient, works: &mut [Work]) {
        let mut slots = Vec::new();
        for (i, w) in works.iter().enumerate() {
            if w.failed.is_some() && w.atomic {
                continue;
            }
            let todo = |it: &ItemWork| it.existing.is_none() && it.done.is_none();
            if w.base.as_ref().is_some_and(todo) {
                slots.push(Slot::Base(i));
            }
            for (j, it) in w.fallback.iter().enumerate() {
                if todo(it) {
                    slots.push(Slot::Fallback(i, j));
                }
            }
            for (j, it) in w.orphans.iter().enumerate() {
                if todo(it) {
                    slots.push(Slot::Orphan(i, j));
                }
            }
        }
        if slots.is_empty() {
            return;
        }
        let parts: Vec<String> = slots
            .iter()
            .map(|s| Self::slot(works, *s).0.written.create_xml())
            .collect();
        let open = format!(
            "<m:CreateItem SendMeetingInvitations=\"SendToNone\"><m:SavedItemFolderId>{}</m:SavedItemFolderId><m:Items>",
            self.folder_xml(client)
        );
        let res = self
            .batched(
                client,
                "CreateItem",
                &open,
                "</m:Items></m:CreateItem>",
                &parts,
            )
            .await;
        for (s, r) in slots.into_iter().zip(res) {
            let (it, i) = Self::slot(works, s);
            match r {
                Ok(m) if m.ok() => match m.item_id() {
                    Some(id) => {
                        let created = id.0.clone();
                        it.done = Some(id);
                        works[i].created.push(created);
                    }
                    None => {
                        let key = it.key.clone();
                        works[i].fail(
                            Some(&key),
                            SinkError::transient("CreateItem answered no ItemId"),
                        );
                    }
                },
                Ok(m) => {
                    let key = it.key.clone();
                    works[i].fail(Some(&key), item_error(&m));
                }
                Err(e) => {
                    let key = it.key.clone();
                    works[i].fail(Some(&key), e);
                }
            }
        }
    }

    async fn updates(&self, client: &EwsClient, works: &mut [Work]) {
        for _ in 0..ROUNDS {
            let mut slots = Vec::new();
            for (i, w) in works.iter().enumerate() {
                if w.failed.is_some() && w.atomic {
                    continue;
                }
                let todo = |it: &ItemWork| it.existing.is_some() && it.done.is_none();
                if w.base.as_ref().is_some_and(todo) {
                    slots.push(Slot::Base(i));
                }
                for (j, it) in w.orphans.iter().enumerate() {
                    if todo(it) {
                        slots.push(Slot::Orphan(i, j));
                    }
                }
            }
            if slots.is_empty() {
                return;
            }
            let parts: Vec<String> = slots
                .iter()
                .map(|s| {
                    let master = matches!(s, Slot::Base(i) if works[*i].master.is_some());
                    let it = Self::slot(works, *s).0;
                    let (id, ck) = it.existing.clone().unwrap_or_default();
                    format!(
                        "<t:ItemChange>{}{}</t:ItemChange>",
                        item_id_xml(&id, Some(&ck)),
                        it.written.updates_xml(master)
                    )
                })
                .collect();
            let res = self
                .batched(client, "UpdateItem", "<m:UpdateItem ConflictResolution=\"NeverOverwrite\" SendMeetingInvitationsOrCancellations=\"SendToNone\"><m:ItemChanges>", "</m:ItemChanges></m:UpdateItem>", &parts)
                .await;
            let mut reread: Vec<Slot> = Vec::new();
            for (s, r) in slots.into_iter().zip(res) {
                let is_master = matches!(s, Slot::Base(i) if works[i].master.is_some());
                let (it, i) = Self::slot(works, s);
                let key = it.key.clone();
                match r {
                    Ok(m) if m.ok() => it.done = m.item_id(),
                    Ok(m)
                        if m.code == "ErrorIrresolvableConflict"
                            || m.code == "ErrorInvalidChangeKey" =>
                    {
                        it.tries += 1;
                        if it.tries >= ROUNDS {
                            works[i].fail(Some(&key), item_error(&m));
                        } else {
                            reread.push(s);
                        }
                    }
                    Ok(m) if m.code == "ErrorItemNotFound" => {
                        // Deleted behind our back: written again (a master
                        // with every exception).
                        it.existing = None;
                        let w = &mut works[i];
                        w.atomic = true;
                        if is_master {
                            Self::reapply_all(w);
                        }
                    }
                    Ok(m) => works[i].fail(Some(&key), item_error(&m)),
                    Err(e) => works[i].fail(Some(&key), e),
                }
            }
            // Conflicts: the current ChangeKey, then the write again (the
            // source is the truth).
            if !reread.is_empty() {
                let parts: Vec<String> = reread
                    .iter()
                    .map(|s| {
                        item_id_xml(
                            &Self::slot(works, *s)
                                .0
                                .existing
                                .clone()
                                .unwrap_or_default()
                                .0,
                            None,
                        )
                    })
                    .collect();
                let res = self
                    .batched(client, "GetItem", "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds>", "</m:ItemIds></m:GetItem>", &parts)
                    .await;
                for (s, r) in reread.into_iter().zip(res) {
                    let (it, i) = Self::slot(works, s);
                    let key = it.key.clone();
                    match r {
                        Ok(m) if m.ok() => it.existing = m.item_id(),
                        Ok(m) if m.code == "ErrorItemNotFound" => it.existing = None,
                        Ok(m) => works[i].fail(Some(&key), item_error(&m)),
                        Err(e) => works[i].fail(Some(&key), e),
                    }
                }
            }
            // Items found gone are created in the next round of creates.
            self.creates(client, works).await;
        }
    }

    /// A master re-created: every exception and cancellation again (added
    /// once the master exists, in `apply_all`).
    fn reapply_all(w: &mut Work) {
        w.occ.clear();
        w.recreated = true;
    }

    async fn occurrences(&self, client: &EwsClient, works: &mut [Work]) {
        let mut upd = Vec::new();
        let mut del = Vec::new();
        for (i, w) in works.iter_mut().enumerate() {
            if w.failed.is_some() && w.atomic {
                continue;
            }
            let Some((master_id, _)) = w.base.as_ref().and_then(|b| b.done.clone()) else {
                continue;
            };
            let Some((_, m)) = w.master.clone() else {
                continue;
            };
            for (j, o) in w.occ.iter_mut().enumerate() {
                let index = match o.index.or_else(|| occurrence_index(&m, o.original)) {
                    Some(n) => n,
                    None => {
                        let e = SinkError::Permanent(format!(
                            "{} is not an occurrence of the series' rule",
                            o.original
                        ));
                        let k = o.key.clone();
                        // Borrow ends here; record below.
                        del.push((i, j, None, e, k));
                        continue;
                    }
                };
                o.index = Some(index);
                let id = occurrence_id_xml(&master_id, index);
                match &o.action {
                    OccAction::Update(written) => upd.push((
                        i,
                        j,
                        format!(
                            "<t:ItemChange>{id}{}</t:ItemChange>",
                            written.updates_xml(false)
                        ),
                    )),
                    OccAction::Delete => {
                        del.push((i, j, Some(id), SinkError::Permanent(String::new()), None))
                    }
                }
            }
        }
        // Unindexable occurrences fail their op.
        let mut del_parts = Vec::new();
        let mut del_who = Vec::new();
        for (i, j, id, e, k) in del {
            match id {
                Some(x) => {
                    del_parts.push(x);
                    del_who.push((i, j));
                }
                None => works[i].fail(k.as_ref(), e),
            }
        }
        let upd_parts: Vec<String> = upd.iter().map(|u| u.2.clone()).collect();
        if !upd_parts.is_empty() {
            let res = self
                .batched(client, "UpdateItem", "<m:UpdateItem ConflictResolution=\"AlwaysOverwrite\" SendMeetingInvitationsOrCancellations=\"SendToNone\"><m:ItemChanges>", "</m:ItemChanges></m:UpdateItem>", &upd_parts)
                .await;
            for ((i, j, _), r) in upd.into_iter().zip(res) {
                let key = works[i].occ[j].key.clone();
                match r {
                    Ok(m) if m.ok() => works[i].occ[j].done = m.item_id(),
                    Ok(m) => works[i].fail(
                        key.as_ref().or(Some(
                            &works[i]
                                .base
                                .as_ref()
                                .map(|b| b.key.clone())
                                .unwrap_or_else(|| EventKey::new("x", 0).expect("key")),
                        )),
                        item_error(&m),
                    ),
                    Err(e) => works[i].fail(key.as_ref(), e),
                }
            }
        }
        if !del_parts.is_empty() {
            let res = self
                .batched(client, "DeleteItem", "<m:DeleteItem DeleteType=\"HardDelete\" SendMeetingCancellations=\"SendToNone\"><m:ItemIds>", "</m:ItemIds></m:DeleteItem>", &del_parts)
                .await;
            for ((i, j), r) in del_who.into_iter().zip(res) {
                let key = works[i].occ[j].key.clone();
                match r {
                    Ok(m) if m.ok() || gone(&m.code) => {
                        works[i].occ[j].done = Some((String::new(), String::new()))
                    }
                    Ok(m) => works[i].fail(key.as_ref(), item_error(&m)),
                    Err(e) => works[i].fail(key.as_ref(), e),
                }
            }
        }
        // The masters' ChangeKeys after their occurrences changed.
        let touched: Vec<usize> = works
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                !w.occ.is_empty()
                    && w.base.as_ref().is_some_and(|b| b.done.is_some())
                    && !(w.failed.is_some() && w.atomic)
            })
            .map(|(i, _)| i)
            .collect();
        if touched.is_empty() {
            return;
        }
        let parts: Vec<String> = touched
            .iter()
            .map(|i| {
                item_id_xml(
                    &works[*i]
                        .base
                        .as_ref()
                        .and_then(|b| b.done.clone())
                        .unwrap_or_default()
                        .0,
                    None,
                )
            })
            .collect();
        let res = self
            .batched(client, "GetItem", "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds>", "</m:ItemIds></m:GetItem>", &parts)
            .await;
        for (i, r) in touched.iter().copied().zip(res) {
            if let Ok(m) = r
                && m.ok()
                && let (Some(b), Some(id)) = (works[i].base.as_mut(), m.item_id())
            {
                b.done = Some(id);
                self.ack_applied(&works[i]).await;
            }
        }
    }

    /// Deletes what an all-or-nothing series created before failing.
    async fn roll_back(&self, client: &EwsClient, works: &[Work]) {
        let parts: Vec<String> = works
            .iter()
            .filter(|w| w.atomic && w.failed.is_some())
            .flat_map(|w| w.created.iter().map(|id| item_id_xml(id, None)))
            .collect();
        if parts.is_empty() {
            return;
        }
        let res = self
            .batched(client, "DeleteItem", "<m:DeleteItem DeleteType=\"HardDelete\" SendMeetingCancellations=\"SendToNone\"><m:ItemIds>", "</m:ItemIds></m:DeleteItem>", &parts)
            .await;
        let failed = res
            .iter()
            .filter(|r| !matches!(r, Ok(m) if m.ok() || gone(&m.code)))
            .count();
        if failed > 0 {
            tracing::warn!(sink = %self.cfg.id, failed, "could not remove items of a failed series write; the next pass adopts or removes them");
        }
    }

    /// Outcomes of a series' ops.
    fn outcomes(&self, w: &Work) -> SeriesOutcome {
        let mut refs: BTreeMap<EventKey, RemoteRef> = BTreeMap::new();
        if let Some(b) = &w.base
            && let Some((id, ck)) = &b.done
        {
            let etag = match &w.master {
                Some((sig, _)) => master_etag(ck, sig),
                None => ck.clone(),
            };
            refs.insert(
                b.key.clone(),
                RemoteRef {
                    id: id.clone(),
                    etag: Some(etag),
                },
            );
        }
        if !w.fallback.is_empty() {
            let ids: Vec<String> = w
                .fallback
                .iter()
                .filter_map(|f| f.done.as_ref().map(|d| d.0.clone()))
                .collect();
            if let Ok(k) = EventKey::new(w.uid.as_str(), 0) {
                refs.insert(
                    k,
                    RemoteRef {
                        id: ids.join(" "),
                        etag: Some(FALLBACK.to_owned()),
                    },
                );
            }
        }
        for o in &w.orphans {
            if let Some((id, ck)) = &o.done {
                refs.insert(
                    o.key.clone(),
                    RemoteRef {
                        id: id.clone(),
                        etag: Some(ck.clone()),
                    },
                );
            }
        }
        for o in &w.occ {
            if let (Some(k), Some((id, ck))) = (&o.key, &o.done) {
                refs.insert(
                    k.clone(),
                    RemoteRef {
                        id: id.clone(),
                        etag: (!ck.is_empty()).then(|| ck.clone()),
                    },
                );
            }
        }
        let items = w
            .ops
            .iter()
            .map(|op| {
                let key = op.key();
                let result = if let (true, Some(e)) = (w.atomic, &w.failed) {
                    Err(e.clone())
                } else if let Some(e) = w.key_errors.get(key) {
                    Err(e.clone())
                } else if key.is_base() && !matches!(op, Op::Delete(_)) && w.failed.is_some() {
                    Err(w
                        .failed
                        .clone()
                        .unwrap_or_else(|| SinkError::transient("failed")))
                } else {
                    Ok(refs.get(key).cloned().unwrap_or_default())
                };
                ItemOutcome {
                    op: op.clone(),
                    result,
                }
            })
            .collect();
        SeriesOutcome {
            uid: w.uid.clone(),
            items,
        }
    }

    async fn apply_all(&self, input: &ReplicaInput<'_>) -> Vec<SeriesOutcome> {
        let paused = |m: String| -> Vec<SeriesOutcome> {
            input
                .ops
                .iter()
                .map(|so| SeriesOutcome {
                    uid: so.uid.to_owned(),
                    items: so
                        .ops
                        .iter()
                        .map(|op| ItemOutcome {
                            op: op.clone(),
                            result: Err(SinkError::Paused(m.clone())),
                        })
                        .collect(),
                })
                .collect()
        };
        if let Some(m) = self.pause_now() {
            return paused(m);
        }
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return paused(e.clone()),
        };
        if let Err(e) = self.ensure_folder(client).await {
            return match e {
                SinkError::Paused(m) => paused(m),
                e => input
                    .ops
                    .iter()
                    .map(|so| SeriesOutcome {
                        uid: so.uid.to_owned(),
                        items: so
                            .ops
                            .iter()
                            .map(|op| ItemOutcome {
                                op: op.clone(),
                                result: Err(e.clone()),
                            })
                            .collect(),
                    })
                    .collect(),
            };
        }
        let zone = all_day_zone(input.calendar.timezone.as_deref());
        let mut works: Vec<Work> = input
            .ops
            .iter()
            .map(|so| self.plan(so, input, zone))
            .collect();
        if let Err(e) = self.adopt(client, &input.calendar.id, &mut works).await {
            if let SinkError::Paused(m) = &e {
                return paused(m.clone());
            }
            for w in works.iter_mut().filter(|w| w.adopt) {
                w.atomic = true;
                w.fail(None, e.clone());
            }
        }
        self.deletes(client, &mut works).await;
        self.creates(client, &mut works).await;
        self.updates(client, &mut works).await;
        // Masters found gone during updates were created again: their
        // exceptions come back through a rewrite of the whole series.
        for (w, so) in works.iter_mut().zip(input.ops) {
            if w.recreated
                && w.base.as_ref().is_some_and(|b| b.done.is_some())
                && let Some(s) = so.series
            {
                let cal = &input.calendar.id;
                for o in &s.overrides {
                    let ow = self.written(o, Shape::Occurrence, &o.key, so.uid, cal, zone);
                    w.occ.push(OccWork {
                        key: Some(o.key.clone()),
                        original: o.key.original_time(),
                        index: None,
                        action: OccAction::Update(ow),
                        done: None,
                    });
                }
                for t in &s.cancelled {
                    w.occ.push(OccWork {
                        key: EventKey::new(so.uid, *t).ok(),
                        original: *t,
                        index: None,
                        action: OccAction::Delete,
                        done: None,
                    });
                }
                self.first_occurrence_fix(w, s, cal, zone);
            }
        }
        self.occurrences(client, &mut works).await;
        self.roll_back(client, &works).await;
        if let Some(m) = lock(&self.pause).as_ref().map(|p| p.message.clone()) {
            // Paused mid-way: what was not done waits for the resume.
            for w in works.iter_mut() {
                if w.failed.is_some() {
                    w.failed = Some(SinkError::Paused(m.clone()));
                }
            }
        }
        works.iter().map(|w| self.outcomes(w)).collect()
    }
}

impl Sink for EwsSink {
    fn target(&self) -> Target<'_> {
        Target::Replica(self)
    }
}

#[async_trait]
impl Replica for EwsSink {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn paused(&self) -> Option<String> {
        self.pause_now()
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| SinkError::Paused(e.clone()))?;
        self.ensure_folder(client).await?;
        let body = format!(
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>{}</m:FolderIds></m:GetFolder>",
            self.folder_xml(client)
        );
        let answer = client
            .call("GetFolder", &body)
            .await
            .map_err(|e| to_sink_error(&e))?;
        match messages(&answer).into_iter().next() {
            Some(m) if m.ok() => Ok(()),
            Some(m) => Err(item_error(&m)),
            None => Err(SinkError::transient("GetFolder answered nothing")),
        }
    }

    async fn apply(&self, input: ReplicaInput<'_>) -> Vec<SeriesOutcome> {
        if input.ops.iter().all(|so| so.ops.is_empty()) {
            return Vec::new();
        }
        self.apply_all(&input).await
    }

    /// Our items of the calendar against the records: a recorded item gone
    /// is written again or tombstoned (`on_target_delete`); a single whose
    /// ChangeKey moved was edited by a user and is written again; a master
    /// whose ChangeKey moved is looked at occurrence by occurrence
    /// ([`drift`]); tagged items nobody recorded are removed.
    async fn drift(&self, input: DriftInput<'_>) -> Result<Drift, SinkError> {
        if let Some(m) = self.pause_now() {
            return Err(SinkError::Paused(m));
        }
        let client = self
            .client
            .as_ref()
            .map_err(|e| SinkError::Paused(e.clone()))?;
        self.ensure_folder(client).await?;
        let remote = self
            .list_ours(client, &input.calendar.id, None)
            .await
            .map_err(|e| self.note(&e))?;
        let by_id: HashMap<&str, &Remote> = remote.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut drift = Drift::default();
        let mut recorded: BTreeSet<&str> = BTreeSet::new();
        let mut stale_masters: Vec<String> = Vec::new();
        let mut moved: Vec<(EventKey, String)> = Vec::new();
        for (k, r) in input.records {
            let ids: Vec<&str> = r.remote.id.split(' ').filter(|s| !s.is_empty()).collect();
            recorded.extend(ids.iter().copied());
            if r.tombstone || ids.is_empty() {
                continue;
            }
            // Exceptions live in their master; their changes show on it.
            if !k.is_base()
                && input
                    .series
                    .iter()
                    .any(|s| s.uid == k.uid() && s.master().is_some())
            {
                continue;
            }
            let (ck, sig) = split_etag(r.remote.etag.as_deref());
            let present: Vec<Option<&&Remote>> = ids.iter().map(|id| by_id.get(id)).collect();
            if present.iter().any(Option::is_none) {
                match self.cfg.on_target_delete {
                    OnTargetDelete::Restore => drift.rewrite.push(k.clone()),
                    OnTargetDelete::Respect => drift.tombstone.push(k.clone()),
                }
                continue;
            }
            if ck == FALLBACK {
                continue;
            }
            let Some(now) = present[0].filter(|p| p.change_key != ck) else {
                continue;
            };
            if sig.is_some() {
                // A master changes with its occurrences: looked at one by
                // one below, unless drift or apply saw this version already.
                if self
                    .ack(ids[0])
                    .await
                    .is_none_or(|a| a.ck != now.change_key)
                {
                    moved.push((k.clone(), ids[0].to_owned()));
                }
            } else {
                drift.rewrite.push(k.clone());
            }
        }
        self.check_masters(client, &input, &moved, &mut drift, &mut stale_masters)
            .await;
        // Unrecorded items of ours: a duplicate of a recorded key, or a key
        // the source no longer has, is an orphan; one whose key is current
        // and unrecorded is left to the next apply, which adopts it.
        let current: BTreeSet<&EventKey> = input
            .series
            .iter()
            .flat_map(|s| s.events().map(|e| &e.key))
            .collect();
        let orphans: Vec<String> = remote
            .iter()
            .filter(|r| !recorded.contains(r.id.as_str()))
            .filter(|r| match &r.key {
                Some(k) => input.records.contains_key(k) || !current.contains(k),
                None => true,
            })
            .map(|r| r.id.clone())
            .collect();
        if input.dry_run {
            drift.orphans_deleted = orphans.len();
            return Ok(drift);
        }
        let parts: Vec<String> = orphans
            .iter()
            .chain(&stale_masters)
            .map(|id| item_id_xml(id, None))
            .collect();
        if !parts.is_empty() {
            let res = self
                .batched(client, "DeleteItem", "<m:DeleteItem DeleteType=\"HardDelete\" SendMeetingCancellations=\"SendToNone\"><m:ItemIds>", "</m:ItemIds></m:DeleteItem>", &parts)
                .await;
            for (n, (id, r)) in orphans.iter().chain(&stale_masters).zip(res).enumerate() {
                match r {
                    Ok(m) if m.ok() || gone(&m.code) => {
                        if n < orphans.len() {
                            drift.orphans_deleted += 1;
                        }
                    }
                    Ok(m) => drift
                        .errors
                        .push(format!("{id}: {}: {}", m.code, m.message)),
                    Err(e) => drift.errors.push(format!("{id}: {e}")),
                }
            }
        }
        if drift.orphans_deleted > 0 {
            tracing::info!(sink = %self.cfg.id, calendar = %input.calendar.id, n = drift.orphans_deleted, "removed EWS items of ours nobody recorded");
        }
        Ok(drift)
    }
}

/// Reads `Remote` items for tests and tools.
pub fn remote_of(el: &El) -> Option<(String, String)> {
    let id = el.child("ItemId")?;
    Some((
        id.attr("Id")?.to_owned(),
        id.attr("ChangeKey").unwrap_or_default().to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(start: i64, rule: &str) -> CanonicalEvent {
        let tz: Tz = "America/New_York".parse().unwrap();
        CanonicalEvent {
            key: EventKey::new("u", 0).unwrap(),
            start: EventTime::Zoned { at: start, tz },
            end: EventTime::Zoned {
                at: start + 1800,
                tz,
            },
            rrule: Some(rule.into()),
            rrule_bound: None,
            summary: String::new(),
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
        }
    }

    #[test]
    fn occurrence_indexes_by_instant_or_wall_clock() {
        // The second 01:15 of 2026-11-01 in New York.
        let m = master(1_793_513_700, "FREQ=DAILY;COUNT=3");
        assert_eq!(occurrence_index(&m, 1_793_513_700), Some(1));
        assert_eq!(occurrence_index(&m, 1_793_513_700 + 86_400), Some(2));
        assert_eq!(occurrence_index(&m, 1_793_513_700 + 3600), None);
    }

    #[test]
    fn occurrence_indexes_under_another_reading_of_a_gap() {
        // 02:30 daily from 2026-03-06 (EST); 02:30 on Mar 8 is skipped:
        // Feishu reads it 07:30Z, another reader 06:30Z.
        let m = master(1_772_782_200, "FREQ=DAILY;COUNT=4");
        assert_eq!(occurrence_index(&m, 1_772_955_000), Some(3));
        assert_eq!(occurrence_index(&m, 1_772_951_400), Some(3));
        assert_eq!(occurrence_index(&m, 1_772_955_000 + 3600), None);
    }
}
