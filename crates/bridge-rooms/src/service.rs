//! The room system: registry and rules kept fresh, room events made durable
//! in the inbox, decisions taken from the inbox, targets written, replies
//! sent from the outbox.
//!
//! # Durability and exactly-once replies
//!
//! * A room event is accepted (the webhook answers 200, the long connection
//!   acks) only once it is in the inbox, written in one transaction with
//!   the claim of its delivery id: a repeated delivery finds the claim and
//!   is dropped; a crash before the commit leaves nothing, so Feishu's
//!   retry is processed.
//! * A decision is one transaction: the booking with the new decision, its
//!   replies in the outbox, and the removal of the inbox entry. A crash
//!   before it leaves the entry to be decided again; after it, the entry is
//!   gone and the replies wait in the outbox.
//! * A reply leaves the outbox in the transaction that records its
//!   acknowledgement. Before it is sent it is marked in flight (durably); a
//!   reply found in flight after a crash may have reached Feishu, so the
//!   room attendee's `rsvp_status` on the organizer's event is read first,
//!   and a reply Feishu already shows is recorded as sent without sending it
//!   again. Where that cannot be read (no organizer open_id, no access to
//!   the calendar, an instance without its own event) the reply is sent
//!   again, with the same status for the same instance.
//! * A repeated event with the same instances as the booking's last
//!   decision makes no new decision (and no reply).
//! * An accepted booking is written to the room's target before its reply
//!   is sent: replies of a room wait while its target has unwritten changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bridge_feishu::client::FeishuClient;
use bridge_feishu::hint::{ChangeHint, Delivery, RoomEventKind, UserIds};
use bridge_feishu::rooms::{ACCEPTED_BY_ADMIN, DECLINED_BY_ADMIN, NodeRules, STALE_ORIGINAL_TIME};
use bridge_store::{RoomTable, RoomWrite, Store, booking_key, inbox_key};
use chrono_tz::Tz;
use serde::Serialize;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::RoomsError;
use crate::decide::{self, Busy, Instance, Verdict};
use crate::doc::{
    self, BookingDoc, DecisionDoc, InboxDoc, OutboxDoc, ReplyPlan, RoomDoc, RulesDoc, Status,
    VERSION,
};
use crate::rules::{self, Effective, NodeSet};
use crate::target::{Booked, RoomCalendar};

/// Which rooms a `[[rooms.map]]` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Room(String),
    Custom(String),
    /// Every room under this level (at any depth).
    Level(String),
}

/// One `[[rooms.map]]` entry.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Its key path, `rooms.map[0]`.
    pub label: String,
    pub selector: Selector,
    pub target: Option<Arc<dyn RoomCalendar>>,
}

/// `[rooms]`, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timezone: Tz,
    /// `false`: decide and log, never reply.
    pub reply: bool,
    pub max_conflict_instances: u32,
    pub maps: Vec<Mapping>,
    /// Registry and rules re-read.
    pub refresh: Duration,
    /// First retry of a failed reply (doubling up to `retry_max`).
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RoomMetrics {
    pub events: AtomicU64,
    pub duplicates: AtomicU64,
    pub decisions: AtomicU64,
    pub replies_sent: AtomicU64,
    pub reply_failures: AtomicU64,
    pub stale_recovered: AtomicU64,
}

/// The room system.
#[derive(Debug)]
pub struct Rooms {
    client: Arc<FeishuClient>,
    store: Store,
    s: Settings,
    notify: Notify,
    seq: AtomicU64,
    /// Serializes every read-modify-write of bookings (worker and admin).
    decide_lock: Mutex<()>,
    /// Room id -> index of its mapping.
    mapped: std::sync::RwLock<BTreeMap<String, usize>>,
    /// Rooms whose target has unwritten changes.
    dirty: std::sync::Mutex<BTreeSet<String>>,
    /// Nodes whose rules must be re-read (from update events): id -> scope type.
    rescan: std::sync::Mutex<BTreeMap<String, u8>>,
    refresh_registry: std::sync::atomic::AtomicBool,
    /// open_id -> (departments, read at), for [`DEPARTMENTS_TTL`].
    departments: std::sync::Mutex<BTreeMap<String, (Vec<String>, i64)>>,
    pub metrics: RoomMetrics,
}

/// How long a room delivery id is kept for dedupe (seconds): 7 days.
const SEEN_TTL: i64 = 7 * 86_400;

/// The trigger of a decision kept pending while the room calendar cannot
/// be read.
const WAITING: &str = "waiting for the room calendar";

/// How long an organizer's departments are reused (seconds).
const DEPARTMENTS_TTL: i64 = 3600;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn ids_of(u: &UserIds) -> Vec<String> {
    [&u.open_id, &u.user_id, &u.union_id]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect()
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A room for `rooms list`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomView {
    pub room: RoomDoc,
    pub mapping: String,
    pub target: Option<String>,
    pub rules: Effective,
    pub accepted: usize,
    pub declined: usize,
    pub pending: usize,
}

/// What `rooms approve|decline` does.
#[derive(Debug, Clone)]
pub enum AdminDecision {
    Approve,
    Decline { reason: String },
}

impl Rooms {
    pub fn new(client: Arc<FeishuClient>, store: Store, settings: Settings) -> Self {
        Self {
            client,
            store,
            s: settings,
            notify: Notify::new(),
            seq: AtomicU64::new(0),
            decide_lock: Mutex::new(()),
            mapped: std::sync::RwLock::new(BTreeMap::new()),
            dirty: std::sync::Mutex::new(BTreeSet::new()),
            rescan: std::sync::Mutex::new(BTreeMap::new()),
            refresh_registry: std::sync::atomic::AtomicBool::new(false),
            departments: std::sync::Mutex::new(BTreeMap::new()),
            metrics: RoomMetrics::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    // ----- deliveries ---------------------------------------------------------------

    /// Whether this delivery is the room system's.
    pub fn handles(delivery: &Delivery) -> bool {
        matches!(
            delivery.hint,
            ChangeHint::ThirdPartyRoomEvent { .. } | ChangeHint::ReserveConfigUpdated { .. }
        ) || delivery.event_type.starts_with("vc.room.")
            || delivery.event_type.starts_with("vc.room_level.")
    }

    /// Whether a room delivery with this id was accepted already.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn seen(&self, delivery_id: &str) -> Result<bool, RoomsError> {
        Ok(self
            .store
            .room_get(RoomTable::DeliverySeen, delivery_id)
            .await?
            .is_some())
    }

    /// Takes a room delivery: durable (inbox) before it returns.
    ///
    /// # Errors
    /// The store cannot write: the delivery must be refused (Feishu retries).
    pub async fn accept(&self, delivery: &Delivery) -> Result<(), RoomsError> {
        let now = unix_now();
        match &delivery.hint {
            ChangeHint::ThirdPartyRoomEvent {
                kind,
                uid,
                original_time,
                start_ms,
                end_ms,
                room_ids,
                organizer,
                ..
            } => {
                self.metrics.events.fetch_add(1, Ordering::Relaxed);
                let item = InboxDoc {
                    v: VERSION,
                    delivery_id: delivery.dedupe_key.clone(),
                    kind: match kind {
                        RoomEventKind::Created => "created",
                        RoomEventKind::Updated => "updated",
                        RoomEventKind::Deleted => "deleted",
                    }
                    .to_owned(),
                    uid: uid.clone(),
                    original_time: *original_time,
                    start: start_ms.map(|m| m.div_euclid(1000)),
                    end: end_ms.map(|m| m.div_euclid(1000)),
                    room_ids: room_ids.clone(),
                    organizer: organizer.as_ref().map(ids_of).unwrap_or_default(),
                    received_at: now,
                };
                let seq = self.next_seq().await?;
                let mut w = RoomWrite::new();
                w.claim(
                    RoomTable::DeliverySeen,
                    &delivery.dedupe_key,
                    format!("{{\"v\":1,\"at\":{now}}}"),
                )
                .put(RoomTable::Inbox, inbox_key(seq), doc::encode(&item));
                if !self.store.room_write(w).await? {
                    self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(delivery = %delivery.dedupe_key, "room event delivered again; ignored");
                    return Ok(());
                }
                tracing::info!(uid = %uid, original_time, kind = %item.kind, rooms = ?room_ids, "room event queued");
                self.notify.notify_one();
            }
            ChangeHint::ReserveConfigUpdated {
                scope_id,
                scope_type,
                approval,
                time,
                scope,
            } => {
                // The payload at once, then a re-read (it has no
                // `if_cover_child_scope`: the stored flags are kept).
                let prev = self.node_set(scope_id).await?.unwrap_or_default();
                let rules = NodeRules {
                    approval: approval.clone(),
                    time: time
                        .clone()
                        .map(|t| (t, prev.time.as_ref().is_some_and(|p| p.cover_children))),
                    scope: scope
                        .clone()
                        .map(|s| (s, prev.scope.as_ref().is_some_and(|p| p.cover_children))),
                };
                let mut set = NodeSet::from_api(&rules);
                if set.approval.is_none() {
                    set.approval = prev.approval;
                }
                if set.time.is_none() {
                    set.time = prev.time;
                }
                if set.scope.is_none() {
                    set.scope = prev.scope;
                }
                self.put_rules(scope_id, set, "event", now).await?;
                let st = match scope_type {
                    Some(1) => 1,
                    Some(2) => 2,
                    _ if scope_id.starts_with("omm_") => 2,
                    _ => 1,
                };
                lock(&self.rescan).insert(scope_id.clone(), st);
                tracing::info!(scope = %scope_id, "booking restrictions changed; re-reading them");
                self.notify.notify_one();
            }
            _ => {
                self.refresh_registry.store(true, Ordering::SeqCst);
                self.notify.notify_one();
            }
        }
        Ok(())
    }

    async fn next_seq(&self) -> Result<u64, RoomsError> {
        if self.seq.load(Ordering::SeqCst) == 0 {
            let last = self
                .store
                .room_last_key(RoomTable::Inbox)
                .await?
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0);
            let _ = self
                .seq
                .compare_exchange(0, last + 1, Ordering::SeqCst, Ordering::SeqCst);
        }
        Ok(self.seq.fetch_add(1, Ordering::SeqCst))
    }

    // ----- registry and rules ----------------------------------------------------------

    async fn node_set(&self, node: &str) -> Result<Option<NodeSet>, RoomsError> {
        match self.store.room_get(RoomTable::Rules, node).await? {
            Some(j) => Ok(Some(doc::decode::<RulesDoc>("rules", node, &j)?.set)),
            None => Ok(None),
        }
    }

    async fn put_rules(
        &self,
        node: &str,
        set: NodeSet,
        from: &str,
        now: i64,
    ) -> Result<(), RoomsError> {
        let d = RulesDoc {
            v: VERSION,
            set,
            read_at: now,
            from: from.to_owned(),
        };
        let mut w = RoomWrite::new();
        w.put(RoomTable::Rules, node, doc::encode(&d));
        self.store.room_write(w).await?;
        Ok(())
    }

    /// Re-reads the rooms of every mapping and the rules of their nodes.
    ///
    /// # Errors
    /// Feishu or the store failed; what was read before stays.
    pub async fn refresh(&self) -> Result<usize, RoomsError> {
        let now = unix_now();
        let mut found: BTreeMap<String, (RoomDoc, usize)> = BTreeMap::new();
        let mut everything: Option<Vec<bridge_feishu::rooms::Room>> = None;
        for (i, m) in self.s.maps.iter().enumerate() {
            let rooms = match &m.selector {
                Selector::Room(id) => self.client.mget_rooms(std::slice::from_ref(id)).await?,
                Selector::Custom(c) | Selector::Level(c) => {
                    if everything.is_none() {
                        everything = Some(self.client.list_rooms(None).await?);
                    }
                    let all = everything.as_deref().unwrap_or_default();
                    all.iter()
                        .filter(|r| match &m.selector {
                            Selector::Custom(_) => &r.custom_room_id == c,
                            _ => &r.room_level_id == c || r.path.contains(c),
                        })
                        .cloned()
                        .collect()
                }
            };
            if rooms.is_empty() {
                tracing::warn!(mapping = %m.label, "no room in Feishu matches this mapping");
            }
            for r in rooms {
                found
                    .entry(r.room_id.clone())
                    .or_insert_with(|| (RoomDoc::from_api(&r, now), i));
            }
        }
        let mut w = RoomWrite::new();
        let mut nodes: BTreeMap<String, u8> = BTreeMap::new();
        for (id, (d, _)) in &found {
            w.put(RoomTable::Rooms, id, doc::encode(d));
            nodes.extend(d.nodes());
        }
        self.store.room_write(w).await?;
        for (node, st) in nodes {
            match self.read_rules(&node, st, now).await {
                Ok(()) => {}
                // Whether the tenant root ("0") can be asked is not
                // documented: a refusal there means the defaults apply.
                Err(RoomsError::Feishu(e)) if node == "0" && !e.is_transient() => {
                    tracing::warn!(
                        "the tenant root's booking restrictions cannot be read ({e}); the documented defaults apply there"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let n = found.len();
        {
            let mut mapped = self
                .mapped
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *mapped = found.into_iter().map(|(id, (_, i))| (id, i)).collect();
            let mut dirty = lock(&self.dirty);
            for (id, i) in mapped.iter() {
                if self.s.maps[*i].target.is_some() {
                    dirty.insert(id.clone());
                }
            }
        }
        tracing::info!(rooms = n, "room registry and booking rules read");
        Ok(n)
    }

    /// Forgets room delivery ids older than [`SEEN_TTL`] (Feishu retries
    /// within hours; the booking's own key catches later repeats).
    async fn purge_seen(&self, now: i64) -> Result<usize, RoomsError> {
        #[derive(serde::Deserialize)]
        struct Seen {
            at: i64,
        }
        let mut w = RoomWrite::new();
        let mut n = 0;
        for (k, j) in self.store.room_list(RoomTable::DeliverySeen).await? {
            let old = serde_json::from_str::<Seen>(&j).map_or(true, |s| now - s.at > SEEN_TTL);
            if old {
                w.delete(RoomTable::DeliverySeen, k);
                n += 1;
            }
        }
        self.store.room_write(w).await?;
        Ok(n)
    }

    async fn read_rules(&self, node: &str, scope_type: u8, now: i64) -> Result<(), RoomsError> {
        let rules = self.client.reserve_scope(node, scope_type).await?;
        self.put_rules(node, NodeSet::from_api(&rules), "api", now)
            .await
    }

    /// Loads the mapping of rooms from the store (for commands that do not
    /// reach Feishu): rooms the last refresh found, matched again.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn load_mapping(&self) -> Result<(), RoomsError> {
        let mut mapped = BTreeMap::new();
        for (id, j) in self.store.room_list(RoomTable::Rooms).await? {
            let d: RoomDoc = doc::decode("room", &id, &j)?;
            if let Some(i) = self.s.maps.iter().position(|m| match &m.selector {
                Selector::Room(r) => r == &d.room_id,
                Selector::Custom(c) => c == &d.custom_room_id,
                Selector::Level(l) => &d.room_level_id == l || d.path.contains(l),
            }) {
                mapped.insert(id, i);
            }
        }
        *self
            .mapped
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mapped;
        Ok(())
    }

    fn mapping_of(&self, room_id: &str) -> Option<usize> {
        self.mapped
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(room_id)
            .copied()
    }

    async fn room(&self, room_id: &str) -> Result<Option<RoomDoc>, RoomsError> {
        match self.store.room_get(RoomTable::Rooms, room_id).await? {
            Some(j) => Ok(Some(doc::decode("room", room_id, &j)?)),
            None => Ok(None),
        }
    }

    /// The effective rules of a room.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn effective(&self, room: &RoomDoc) -> Result<Effective, RoomsError> {
        let mut sets = Vec::new();
        for (node, _) in room.nodes() {
            let set = self.node_set(&node).await?;
            sets.push((node, set));
        }
        Ok(rules::resolve(
            sets.iter().map(|(n, s)| (n.as_str(), s.as_ref())),
        ))
    }

    // ----- bookings ------------------------------------------------------------------

    async fn booking(&self, key: &str) -> Result<Option<BookingDoc>, RoomsError> {
        match self.store.room_get(RoomTable::Bookings, key).await? {
            Some(j) => Ok(Some(doc::decode("booking", key, &j)?)),
            None => Ok(None),
        }
    }

    /// Every booking, in key order.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn bookings(&self) -> Result<Vec<BookingDoc>, RoomsError> {
        self.store
            .room_list(RoomTable::Bookings)
            .await?
            .into_iter()
            .map(|(k, j)| doc::decode("booking", &k, &j))
            .collect()
    }

    /// The replies waiting in the outbox.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn outbox(&self) -> Result<Vec<OutboxDoc>, RoomsError> {
        self.store
            .room_list(RoomTable::Outbox)
            .await?
            .into_iter()
            .map(|(k, j)| doc::decode("reply", &k, &j))
            .collect()
    }

    /// A booking by `<room>/<uid>/<original_time>`.
    ///
    /// # Errors
    /// A malformed id, an unknown booking, the store.
    pub async fn find(&self, id: &str) -> Result<BookingDoc, RoomsError> {
        let key = parse_id(id)?;
        self.booking(&key)
            .await?
            .ok_or_else(|| RoomsError::NotFound(id.to_owned()))
    }

    /// The organizer's departments when the rules need them (a department
    /// list, and the organizer is not an allowed user): contact v3, cached
    /// for an hour. `None`: not needed, or Feishu refused (outside the
    /// app's contact scope). A transient failure is an error: decided later.
    async fn departments_for(
        &self,
        rules: &Effective,
        organizer: &[String],
    ) -> Result<Option<Vec<String>>, RoomsError> {
        let s = &rules.scope;
        if s.allow_all
            || s.departments.is_empty()
            || s.users
                .iter()
                .any(|ids| ids.iter().any(|i| organizer.contains(i)))
        {
            return Ok(None);
        }
        let Some(open_id) = organizer.iter().find(|i| i.starts_with("ou_")) else {
            return Ok(None);
        };
        let now = unix_now();
        if let Some((d, at)) = lock(&self.departments).get(open_id)
            && now - at < DEPARTMENTS_TTL
        {
            return Ok(Some(d.clone()));
        }
        match self.client.user_departments(open_id).await {
            Ok(d) => {
                lock(&self.departments).insert(open_id.clone(), (d.clone(), now));
                Ok(Some(d))
            }
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => {
                tracing::warn!(organizer = %open_id, "cannot read the organizer's departments: {e}");
                Ok(None)
            }
        }
    }

    /// Busy periods of `room_id` held by accepted bookings other than `except`.
    async fn ledger(&self, room_id: &str, except: &str) -> Result<Vec<Busy>, RoomsError> {
        let mut out = Vec::new();
        for b in self.bookings().await? {
            if b.room_id != room_id || b.status != Status::Accepted {
                continue;
            }
            if booking_key(&b.room_id, &b.uid, b.original_time)? == except {
                continue;
            }
            for i in b.held() {
                out.push(Busy {
                    start: i.start,
                    end: i.end,
                    holder: format!("{} \"{}\"", b.id(), b.summary),
                });
            }
        }
        Ok(out)
    }

    /// The instances of a booking: an exception is itself; `original_time
    /// = 0` may be a series, whose instances `freebusy/batch_get` lists.
    #[allow(clippy::too_many_arguments)]
    async fn instances(
        &self,
        room_id: &str,
        uid: &str,
        ot: i64,
        start: i64,
        end: i64,
        rules: &Effective,
        now: i64,
    ) -> Result<(Vec<Instance>, bool), RoomsError> {
        let single = vec![Instance {
            start,
            end,
            original_time: ot,
        }];
        if ot != 0 {
            return Ok((single, false));
        }
        let days = if rules.time.enabled {
            rules.time.days_in_advance
        } else {
            365
        };
        let until = (now + days * 86_400).max(end).min(start + 400 * 86_400);
        let mut slots = Vec::new();
        let mut from = start;
        // `freebusy/batch_get` windows are kept within 30 days (rooms.md §3).
        while from < until {
            let to = (from + 30 * 86_400).min(until);
            let map = self
                .client
                .room_freebusy(&[room_id.to_owned()], from, to)
                .await?;
            for s in map.get(room_id).into_iter().flatten() {
                // A moved or edited instance (an exception) is a booking of
                // its own: Feishu sends it with its own original_time.
                let exception = s.original_time != 0 && s.start != s.original_time;
                if s.uid == uid
                    && !exception
                    && !slots.iter().any(|i: &Instance| i.start == s.start)
                {
                    slots.push(Instance {
                        start: s.start,
                        end: s.end,
                        original_time: s.original_time,
                    });
                }
            }
            from = to;
            // A single event is listed with `original_time` 0 in the first
            // window (which starts at the event): no need to read further.
            if slots.iter().all(|i| i.original_time == 0) {
                break;
            }
        }
        slots.sort_by_key(|i| i.start);
        let series = slots.len() > 1 || slots.iter().any(|i| i.original_time != 0);
        if slots.is_empty() {
            return Ok((single, false));
        }
        Ok((slots, series))
    }

    /// Decides the inbox, oldest first. Stops at the first entry that
    /// cannot be decided now (Feishu unreachable): it is retried later.
    ///
    /// # Errors
    /// Feishu or the store failed.
    pub async fn process_inbox(&self) -> Result<usize, RoomsError> {
        let _g = self.decide_lock.lock().await;
        let mut n = 0;
        for (key, j) in self.store.room_list(RoomTable::Inbox).await? {
            let item: InboxDoc = doc::decode("room event", &key, &j)?;
            let mut w = RoomWrite::new();
            for room in &item.room_ids {
                if self.mapping_of(room).is_none() {
                    tracing::debug!(room = %room, "room event for an unmapped room; ignored");
                    continue;
                }
                match self.decide_event(&item, room, &mut w).await {
                    Ok(()) => {}
                    // The entry stays (decided again, in order, on the
                    // next pass); the booking shows as pending meanwhile.
                    Err(e @ RoomsError::BusyUnavailable(_)) => {
                        self.store.room_write(w).await?;
                        return Err(e);
                    }
                    // Input that can never be decided must not hold up the
                    // events behind it: logged and dropped.
                    Err(e @ (RoomsError::Doc { .. } | RoomsError::BadId(_))) => {
                        tracing::error!(delivery = %item.delivery_id, room = %room, "room event dropped: {e}");
                    }
                    Err(e) => return Err(e),
                }
            }
            w.delete(RoomTable::Inbox, &key);
            self.store.room_write(w).await?;
            n += 1;
        }
        Ok(n)
    }

    async fn decide_event(
        &self,
        item: &InboxDoc,
        room_id: &str,
        w: &mut RoomWrite,
    ) -> Result<(), RoomsError> {
        let now = unix_now();
        let key = booking_key(room_id, &item.uid, item.original_time)?;
        let prev = self.booking(&key).await?;
        if item.kind == "deleted" {
            let Some(mut b) = prev else {
                tracing::debug!(uid = %item.uid, "deleted event without a booking; nothing to free");
                return Ok(());
            };
            if b.status == Status::Freed {
                return Ok(());
            }
            // Replies not yet sent for it are obsolete: the event is gone.
            for o in self.outbox().await? {
                if o.booking == key {
                    w.delete(RoomTable::Outbox, outbox_key(&key, o.decision, o.index));
                    mark_reply(
                        &mut b,
                        o.decision,
                        o.index,
                        "obsolete (the event was deleted)",
                        None,
                    );
                }
            }
            let n = b.decisions.len() as u32 + 1;
            b.status = Status::Freed;
            b.decisions.push(DecisionDoc {
                n,
                at: now,
                trigger: "deleted".into(),
                status: Status::Freed,
                reasons: vec!["deleted in Feishu: the slot is free again and the booking is removed from the room's target".into()],
                passed: Vec::new(),
                instances: b.instances.clone(),
                declined_instances: Vec::new(),
                rules: None,
                replies: Vec::new(),
            });
            w.put(RoomTable::Bookings, &key, doc::encode(&b));
            self.metrics.decisions.fetch_add(1, Ordering::Relaxed);
            lock(&self.dirty).insert(room_id.to_owned());
            tracing::info!(booking = %b.id(), "booking freed");
            return Ok(());
        }
        let Some(room) = self.room(room_id).await? else {
            return Err(RoomsError::NotFound(format!(
                "room {room_id} (not read from the registry yet)"
            )));
        };
        let (Some(start), Some(end)) = (item.start, item.end) else {
            return Err(RoomsError::Doc {
                what: "room event",
                key: item.delivery_id.clone(),
                reason: "no start or end time".into(),
            });
        };
        let rules = self.effective(&room).await?;
        let (instances, series) = self
            .instances(
                room_id,
                &item.uid,
                item.original_time,
                start,
                end,
                &rules,
                now,
            )
            .await?;
        if let Some(p) = &prev
            && p.status != Status::Freed
            && p.instances == instances
            && p.decisions.last().is_none_or(|d| d.trigger != WAITING)
        {
            tracing::debug!(booking = %p.id(), "same instances as the last decision; nothing to decide");
            return Ok(());
        }
        let (infos, _) = self
            .client
            .room_event_summaries(&[(item.uid.clone(), item.original_time)])
            .await?;
        let summary = infos
            .into_iter()
            .next()
            .map(|i| i.summary)
            .unwrap_or_default();
        let mut busy = self.ledger(room_id, &key).await?;
        let target = self
            .mapping_of(room_id)
            .and_then(|i| self.s.maps[i].target.clone());
        if let (Some(t), Some(first), Some(last)) = (&target, instances.first(), instances.last())
            && let Some(r) = t.busy(room_id, first.start, last.end).await
        {
            match r {
                Ok(b) => busy.extend(b),
                Err(e) => {
                    // Never accepted blindly: pending (no reply) until the
                    // room calendar answers, as an Exchange room mailbox
                    // leaves a request unprocessed while its calendar
                    // cannot be read.
                    self.wait_for_busy(prev, &key, room_id, item, &instances, series, &e, w, now);
                    return Err(RoomsError::BusyUnavailable(e));
                }
            }
        }
        let organizer = if item.organizer.is_empty() {
            prev.as_ref()
                .map(|p| p.organizer.clone())
                .unwrap_or_default()
        } else {
            item.organizer.clone()
        };
        let departments = self.departments_for(&rules, &organizer).await?;
        let outcome = decide::decide(&decide::Request {
            instances: &instances,
            series,
            organizer: &organizer,
            organizer_departments: departments.as_deref(),
            rules: &rules,
            tz: self.s.timezone,
            now,
            busy: &busy,
            max_conflict_instances: self.s.max_conflict_instances,
        });
        let mut b = prev.unwrap_or(BookingDoc {
            v: VERSION,
            room_id: room_id.to_owned(),
            uid: item.uid.clone(),
            original_time: item.original_time,
            summary: String::new(),
            organizer: Vec::new(),
            series,
            instances: Vec::new(),
            declined_instances: Vec::new(),
            status: Status::Pending,
            decisions: Vec::new(),
        });
        b.summary = summary;
        b.organizer = organizer;
        b.series = series;
        b.instances = instances.clone();
        self.record(&mut b, &key, &item.kind, outcome, Some(rules), w, now);
        Ok(())
    }

    /// Records the booking as pending while the room calendar's busy
    /// times cannot be read (once per outage: a repeat adds no decision).
    #[allow(clippy::too_many_arguments)]
    fn wait_for_busy(
        &self,
        prev: Option<BookingDoc>,
        key: &str,
        room_id: &str,
        item: &InboxDoc,
        instances: &[Instance],
        series: bool,
        error: &str,
        w: &mut RoomWrite,
        now: i64,
    ) {
        let mut b = prev.unwrap_or(BookingDoc {
            v: VERSION,
            room_id: room_id.to_owned(),
            uid: item.uid.clone(),
            original_time: item.original_time,
            summary: String::new(),
            organizer: item.organizer.clone(),
            series,
            instances: Vec::new(),
            declined_instances: Vec::new(),
            status: Status::Pending,
            decisions: Vec::new(),
        });
        if b.decisions.last().is_some_and(|d| d.trigger == WAITING) {
            return;
        }
        tracing::warn!(booking = %b.id(), "the room calendar's busy times cannot be read ({error}); the booking stays pending and is decided again");
        b.instances = instances.to_vec();
        let outcome = decide::Outcome {
            verdict: Verdict::Pending,
            reasons: vec![format!(
                "the room calendar's busy times cannot be read ({error}); decided again when they can"
            )],
            passed: Vec::new(),
            declined_instances: Vec::new(),
        };
        self.record(&mut b, key, WAITING, outcome, None, w, now);
    }

    /// Appends a decision to `b` and queues its replies, into `w`.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        b: &mut BookingDoc,
        key: &str,
        trigger: &str,
        outcome: decide::Outcome,
        rules: Option<Effective>,
        w: &mut RoomWrite,
        now: i64,
    ) {
        let status = match outcome.verdict {
            Verdict::Accepted => Status::Accepted,
            Verdict::Declined => Status::Declined,
            Verdict::Pending => Status::Pending,
        };
        let mut replies: Vec<(i64, &str)> = match status {
            Status::Accepted => vec![(b.original_time, ACCEPTED_BY_ADMIN)],
            Status::Declined => vec![(b.original_time, DECLINED_BY_ADMIN)],
            _ => Vec::new(),
        };
        if status == Status::Accepted {
            replies.extend(
                outcome
                    .declined_instances
                    .iter()
                    .map(|t| (*t, DECLINED_BY_ADMIN)),
            );
        }
        let n = b.decisions.len() as u32 + 1;
        let state = if self.s.reply {
            "queued"
        } else {
            "not sent (reply = false)"
        };
        let plans: Vec<ReplyPlan> = replies
            .iter()
            .map(|(t, s)| ReplyPlan {
                original_time: *t,
                status: (*s).to_owned(),
                state: state.to_owned(),
                sent_at: None,
                note: None,
            })
            .collect();
        if self.s.reply {
            for (idx, (t, s)) in replies.iter().enumerate() {
                let o = OutboxDoc {
                    v: VERSION,
                    booking: key.to_owned(),
                    decision: n,
                    index: idx as u32,
                    room_id: b.room_id.clone(),
                    uid: b.uid.clone(),
                    original_time: *t,
                    status: (*s).to_owned(),
                    attempts: 0,
                    next_at: now,
                    last_error: None,
                    in_flight: false,
                };
                w.put(
                    RoomTable::Outbox,
                    outbox_key(key, n, idx as u32),
                    doc::encode(&o),
                );
            }
        }
        let was_accepted = b.status == Status::Accepted;
        b.status = status;
        b.declined_instances = if status == Status::Accepted {
            outcome.declined_instances.clone()
        } else {
            Vec::new()
        };
        tracing::info!(
            booking = %b.id(), decision = n, status = status.as_str(),
            reasons = ?outcome.reasons, reply = self.s.reply,
            "room booking decided"
        );
        b.decisions.push(DecisionDoc {
            n,
            at: now,
            trigger: trigger.to_owned(),
            status,
            reasons: outcome.reasons,
            passed: outcome.passed,
            instances: b.instances.clone(),
            declined_instances: outcome.declined_instances,
            rules,
            replies: plans,
        });
        w.put(RoomTable::Bookings, key, doc::encode(&*b));
        self.metrics.decisions.fetch_add(1, Ordering::Relaxed);
        if was_accepted || status == Status::Accepted {
            lock(&self.dirty).insert(b.room_id.clone());
        }
    }

    /// `rooms approve|decline`: decides a pending booking.
    ///
    /// # Errors
    /// Unknown or not pending booking, the store.
    pub async fn admin_decide(
        &self,
        id: &str,
        what: AdminDecision,
    ) -> Result<BookingDoc, RoomsError> {
        let _g = self.decide_lock.lock().await;
        let key = parse_id(id)?;
        let mut b = self
            .booking(&key)
            .await?
            .ok_or_else(|| RoomsError::NotFound(id.to_owned()))?;
        if b.status != Status::Pending {
            return Err(RoomsError::NotPending {
                booking: id.to_owned(),
                status: b.status.as_str(),
            });
        }
        let now = unix_now();
        let (trigger, outcome, rules) = match what {
            AdminDecision::Decline { reason } => (
                "declined by an administrator",
                decide::Outcome {
                    verdict: Verdict::Declined,
                    reasons: vec![if reason.is_empty() {
                        "declined by an administrator".to_owned()
                    } else {
                        format!("declined by an administrator: {reason}")
                    }],
                    passed: Vec::new(),
                    declined_instances: Vec::new(),
                },
                None,
            ),
            AdminDecision::Approve => {
                // Conflicts may have appeared since: checked again.
                let mut rules = match self.room(&b.room_id).await? {
                    Some(r) => self.effective(&r).await?,
                    None => Effective::default(),
                };
                rules.approval.enabled = false;
                let mut busy = self.ledger(&b.room_id, &key).await?;
                let target = self
                    .mapping_of(&b.room_id)
                    .and_then(|i| self.s.maps[i].target.clone());
                if let (Some(t), Some(first), Some(last)) =
                    (&target, b.instances.first(), b.instances.last())
                    && let Some(r) = t.busy(&b.room_id, first.start, last.end).await
                {
                    busy.extend(r.map_err(RoomsError::BusyUnavailable)?);
                }
                let departments = self.departments_for(&rules, &b.organizer).await?;
                let mut o = decide::decide(&decide::Request {
                    instances: &b.instances,
                    series: b.series,
                    organizer: &b.organizer,
                    organizer_departments: departments.as_deref(),
                    rules: &rules,
                    tz: self.s.timezone,
                    now,
                    busy: &busy,
                    max_conflict_instances: self.s.max_conflict_instances,
                });
                if o.verdict == Verdict::Accepted {
                    o.passed.push("approved by an administrator".into());
                }
                ("approved by an administrator", o, Some(rules))
            }
        };
        let mut w = RoomWrite::new();
        self.record(&mut b, &key, trigger, outcome, rules, &mut w, now);
        self.store.room_write(w).await?;
        self.notify.notify_one();
        Ok(b)
    }

    // ----- targets and replies -------------------------------------------------------

    /// Writes the rooms whose accepted bookings changed to their targets.
    ///
    /// # Errors
    /// The store cannot be read (target failures are retried later).
    pub async fn publish(&self) -> Result<(), RoomsError> {
        let dirty: Vec<String> = lock(&self.dirty).iter().cloned().collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let all = self.bookings().await?;
        let now = unix_now();
        for room_id in dirty {
            let Some(target) = self
                .mapping_of(&room_id)
                .and_then(|i| self.s.maps[i].target.clone())
            else {
                lock(&self.dirty).remove(&room_id);
                continue;
            };
            let name = self
                .room(&room_id)
                .await?
                .map_or_else(|| room_id.clone(), |r| r.name);
            let booked: Vec<Booked> = all
                .iter()
                .filter(|b| b.room_id == room_id)
                .flat_map(|b| {
                    b.held().map(move |i| Booked {
                        id: format!("{}_{}", b.uid, i.original_time.max(i.start)),
                        start: i.start,
                        end: i.end,
                    })
                })
                .collect();
            match target
                .publish(&room_id, &name, self.s.timezone.name(), &booked, now)
                .await
            {
                Ok(()) => {
                    lock(&self.dirty).remove(&room_id);
                    tracing::info!(room = %room_id, bookings = booked.len(), target = %target.describe(), "room target written");
                }
                Err(e) => {
                    tracing::warn!(room = %room_id, "cannot write the room's target: {e}; retrying")
                }
            }
        }
        Ok(())
    }

    fn backoff(&self, attempts: u32) -> i64 {
        let base = self.s.retry_base.as_secs_f64().max(0.05);
        let d = (base * 2f64.powi(attempts.min(20) as i32)).min(self.s.retry_max.as_secs_f64());
        d.ceil() as i64
    }

    /// Sends the replies that are due. Returns when the next one is due.
    ///
    /// # Errors
    /// The store failed.
    pub async fn send_replies(&self) -> Result<Option<i64>, RoomsError> {
        let mut next: Option<i64> = None;
        let now = unix_now();
        for (okey, j) in self.store.room_list(RoomTable::Outbox).await? {
            let mut o: OutboxDoc = doc::decode("reply", &okey, &j)?;
            if o.next_at > now {
                next = Some(next.map_or(o.next_at, |n| n.min(o.next_at)));
                continue;
            }
            if lock(&self.dirty).contains(&o.room_id) {
                // The target first; retried after the next publish.
                next = Some(next.map_or(now + 1, |n| n.min(now + 1)));
                continue;
            }
            let res = if o.in_flight && self.already_applied(&o).await {
                tracing::info!(uid = %o.uid, original_time = o.original_time, "a reply in flight at a restart reached Feishu; not sent again");
                o.last_error =
                    Some("acknowledged before a restart (verified on the room attendee)".into());
                Ok(())
            } else {
                // In flight from here until a definite answer is recorded.
                o.in_flight = true;
                let mut w = RoomWrite::new();
                w.put(RoomTable::Outbox, &okey, doc::encode(&o));
                self.store.room_write(w).await?;
                self.client
                    .reply_room_instance(&o.room_id, &o.uid, o.original_time, &o.status)
                    .await
            };
            let _g = self.decide_lock.lock().await;
            match res {
                Ok(()) => {
                    let mut w = RoomWrite::new();
                    w.delete(RoomTable::Outbox, &okey);
                    if let Some(mut b) = self.booking(&o.booking).await? {
                        mark_reply(&mut b, o.decision, o.index, "sent", Some(unix_now()));
                        if let Some(p) = plan_mut(&mut b, o.decision, o.index) {
                            p.original_time = o.original_time;
                            p.note.clone_from(&o.last_error);
                        }
                        w.put(RoomTable::Bookings, &o.booking, doc::encode(&b));
                    }
                    self.store.room_write(w).await?;
                    self.metrics.replies_sent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(room = %o.room_id, uid = %o.uid, original_time = o.original_time, status = %o.status, "room reply acknowledged");
                }
                Err(e) if e.code() == Some(STALE_ORIGINAL_TIME) => {
                    let found = self.current_original_time(&o).await?;
                    let mut w = RoomWrite::new();
                    match found {
                        Some(t) => {
                            tracing::info!(uid = %o.uid, old = o.original_time, new = t, "105003: replying again with the current original_time");
                            let note = format!(
                                "original_time {} was stale (105003); replied again for {t}",
                                o.original_time
                            );
                            o.original_time = t;
                            o.in_flight = false;
                            o.last_error = Some(note.clone());
                            o.next_at = unix_now();
                            if let Some(mut b) = self.booking(&o.booking).await? {
                                mark_reply(
                                    &mut b,
                                    o.decision,
                                    o.index,
                                    &format!("queued; {note}"),
                                    None,
                                );
                                w.put(RoomTable::Bookings, &o.booking, doc::encode(&b));
                            }
                            w.put(RoomTable::Outbox, &okey, doc::encode(&o));
                            self.metrics.stale_recovered.fetch_add(1, Ordering::Relaxed);
                            next = Some(now);
                        }
                        None => {
                            let note = "not sent: 105003 and the event has no current instance in the room";
                            w.delete(RoomTable::Outbox, &okey);
                            if let Some(mut b) = self.booking(&o.booking).await? {
                                mark_reply(&mut b, o.decision, o.index, note, None);
                                w.put(RoomTable::Bookings, &o.booking, doc::encode(&b));
                            }
                            tracing::warn!(uid = %o.uid, "{note}");
                        }
                    }
                    self.store.room_write(w).await?;
                }
                Err(e) => {
                    // A Feishu code is a definite refusal; a transport error
                    // or a 5xx may or may not have been applied.
                    o.in_flight = e.code().is_none() || e.is_transient();
                    o.attempts += 1;
                    o.next_at = unix_now() + self.backoff(o.attempts - 1);
                    o.last_error = Some(bridge_store::redact(&e.to_string()));
                    self.metrics.reply_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(uid = %o.uid, attempts = o.attempts, "room reply failed: {e}; retrying");
                    let mut w = RoomWrite::new();
                    w.put(RoomTable::Outbox, &okey, doc::encode(&o));
                    self.store.room_write(w).await?;
                    next = Some(next.map_or(o.next_at, |n| n.min(o.next_at)));
                }
            }
        }
        Ok(next)
    }

    /// Whether Feishu already shows what an in-flight reply asked for (the
    /// room attendee's `rsvp_status` on the organizer's event). Unknown
    /// (unreadable, no organizer) counts as not applied: sent again, with
    /// the same status.
    async fn already_applied(&self, o: &OutboxDoc) -> bool {
        let want = match o.status.as_str() {
            ACCEPTED_BY_ADMIN => bridge_core::feishu::RsvpStatus::Accept,
            DECLINED_BY_ADMIN => bridge_core::feishu::RsvpStatus::Decline,
            _ => return false,
        };
        let Ok(Some(b)) = self.booking(&o.booking).await else {
            return false;
        };
        let Some(organizer) = b.organizer.iter().find(|i| i.starts_with("ou_")) else {
            return false;
        };
        match self
            .client
            .room_attendee_status(organizer, &o.uid, o.original_time, &o.room_id)
            .await
        {
            Ok(Some(s)) => s == want,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(uid = %o.uid, "cannot check whether a reply reached Feishu: {e}; sending it again");
                false
            }
        }
    }

    /// After 105003: the instance's current `original_time`, read with
    /// `freebusy/batch_get` around the booking's instance.
    async fn current_original_time(&self, o: &OutboxDoc) -> Result<Option<i64>, RoomsError> {
        let Some(b) = self.booking(&o.booking).await? else {
            return Ok(None);
        };
        let inst = b
            .instances
            .iter()
            .find(|i| i.original_time == o.original_time)
            .or_else(|| b.instances.first())
            .copied();
        let Some(inst) = inst else {
            return Ok(None);
        };
        let from = inst.start - 86_400;
        let to = inst.end + 86_400;
        let map = self
            .client
            .room_freebusy(std::slice::from_ref(&o.room_id), from, to)
            .await?;
        let best = map
            .get(&o.room_id)
            .into_iter()
            .flatten()
            .filter(|s| s.uid == o.uid && s.original_time != o.original_time)
            .min_by_key(|s| (s.start - inst.start).abs())
            .map(|s| s.original_time);
        Ok(best)
    }

    // ----- views ---------------------------------------------------------------------

    /// Every mapped room with its effective rules and booking counts.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn list(&self) -> Result<Vec<RoomView>, RoomsError> {
        let bookings = self.bookings().await?;
        let mapped: Vec<(String, usize)> = self
            .mapped
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut out = Vec::new();
        for (id, i) in mapped {
            let Some(room) = self.room(&id).await? else {
                continue;
            };
            let count = |s: Status| {
                bookings
                    .iter()
                    .filter(|b| b.room_id == id && b.status == s)
                    .count()
            };
            out.push(RoomView {
                rules: self.effective(&room).await?,
                mapping: self.s.maps[i].label.clone(),
                target: self.s.maps[i].target.as_ref().map(|t| t.describe()),
                accepted: count(Status::Accepted),
                declined: count(Status::Declined),
                pending: count(Status::Pending),
                room,
            });
        }
        Ok(out)
    }

    /// The numbers `/metrics` shows (encoded by the daemon).
    pub async fn metrics_snapshot(&self) -> Result<RoomNumbers, RoomsError> {
        let mut bookings: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        for b in self.bookings().await? {
            *bookings
                .entry((b.room_id.clone(), b.status.as_str()))
                .or_default() += 1;
        }
        let replies_waiting = self.store.room_list(RoomTable::Outbox).await?.len() as u64;
        let m = &self.metrics;
        let events = m.events.load(Ordering::Relaxed);
        Ok(RoomNumbers {
            bookings,
            replies_waiting,
            replies_sent: m.replies_sent.load(Ordering::Relaxed),
            reply_failures: m.reply_failures.load(Ordering::Relaxed),
            decisions: m.decisions.load(Ordering::Relaxed),
            events: events - m.duplicates.load(Ordering::Relaxed).min(events),
        })
    }

    // ----- the worker ----------------------------------------------------------------

    /// Runs until `cancel`: reads the registry and rules (retrying until
    /// Feishu answers), then decides, writes targets and sends replies
    /// whenever an event arrives or a retry is due.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut retry = Duration::from_secs(1);
        let mut next_refresh;
        loop {
            match self.refresh().await {
                Ok(_) => {
                    next_refresh = tokio::time::Instant::now() + self.s.refresh;
                    break;
                }
                Err(e) => {
                    tracing::warn!("cannot read the room registry yet: {e}; retrying in {retry:?}");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(60));
                }
            }
        }
        let mut failing = Duration::ZERO;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let mut wait = Duration::from_secs(30);
            if tokio::time::Instant::now() >= next_refresh
                || self.refresh_registry.swap(false, Ordering::SeqCst)
            {
                if let Err(e) = self.refresh().await {
                    tracing::warn!("room registry refresh failed: {e}");
                }
                match self.purge_seen(unix_now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "old room delivery ids forgotten"),
                    Err(e) => tracing::warn!("cannot purge old room delivery ids: {e}"),
                }
                next_refresh = tokio::time::Instant::now() + self.s.refresh;
            }
            let rescan: Vec<(String, u8)> = std::mem::take(&mut *lock(&self.rescan))
                .into_iter()
                .collect();
            for (node, st) in rescan {
                if let Err(e) = self.read_rules(&node, st, unix_now()).await {
                    tracing::warn!(scope = %node, "cannot re-read booking restrictions: {e}; retrying");
                    lock(&self.rescan).insert(node, st);
                    wait = wait.min(Duration::from_secs(2));
                }
            }
            let step = async {
                self.process_inbox().await?;
                self.publish().await?;
                self.send_replies().await
            };
            match step.await {
                Ok(next) => {
                    failing = Duration::ZERO;
                    if let Some(at) = next {
                        let secs = (at - unix_now()).max(0) as u64;
                        wait = wait.min(Duration::from_secs(secs).max(Duration::from_millis(200)));
                    }
                    if !lock(&self.dirty).is_empty() {
                        wait = wait.min(Duration::from_secs(1));
                    }
                }
                Err(e) => {
                    failing =
                        (failing * 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
                    tracing::warn!("room work failed: {e}; retrying in {failing:?}");
                    wait = wait.min(failing);
                }
            }
            // Not even a timer once the daemon stops: its runtime may be
            // tearing down, where creating one panics.
            if cancel.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The outbox key of reply `index` of decision `n`.
fn outbox_key(booking: &str, n: u32, index: u32) -> String {
    format!("{booking}\u{1f}{n:06}\u{1f}{index:03}")
}

fn mark_reply(b: &mut BookingDoc, decision: u32, index: u32, state: &str, at: Option<i64>) {
    if let Some(r) = plan_mut(b, decision, index) {
        r.state = state.to_owned();
        r.sent_at = at;
    }
}

fn plan_mut(b: &mut BookingDoc, decision: u32, index: u32) -> Option<&mut ReplyPlan> {
    b.decisions
        .iter_mut()
        .find(|d| d.n == decision)?
        .replies
        .get_mut(index as usize)
}

/// `<room>/<uid>/<original_time>` -> the store key.
fn parse_id(id: &str) -> Result<String, RoomsError> {
    let bad = || RoomsError::BadId(id.to_owned());
    let (room, rest) = id.split_once('/').ok_or_else(bad)?;
    let (uid, ot) = rest.rsplit_once('/').ok_or_else(bad)?;
    let ot: i64 = ot.parse().map_err(|_| bad())?;
    booking_key(room, uid, ot).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_deliveries_are_claimed_once_and_forgotten_after_a_week() {
        use bridge_feishu::client::ClientConfig;
        let store = Store::in_memory().await.unwrap();
        let cfg = ClientConfig::new(
            "http://127.0.0.1:9",
            "cli_x",
            bridge_feishu::auth::Secret::new("s"),
        );
        let rooms = Rooms::new(
            Arc::new(FeishuClient::new(cfg).unwrap()),
            store.clone(),
            Settings {
                timezone: chrono_tz::Asia::Shanghai,
                reply: true,
                max_conflict_instances: 0,
                maps: Vec::new(),
                refresh: Duration::from_secs(60),
                retry_base: Duration::from_secs(1),
                retry_max: Duration::from_secs(60),
            },
        );
        let d = bridge_feishu::hint::parse_event(
            br#"{"uuid":"u1","token":"t","ts":"1","type":"event_callback","event":{"type":"third_party_meeting_room_event_created","uid":"x","original_time":0,"start":{"time_stamp":"1760000000000"},"end":{"time_stamp":"1760003600000"},"meeting_rooms":[{"open_id":"omm_1"}]}}"#,
        )
        .unwrap();
        assert!(Rooms::handles(&d));
        rooms.accept(&d).await.unwrap();
        rooms.accept(&d).await.unwrap();
        let inbox = store.room_list(RoomTable::Inbox).await.unwrap();
        assert_eq!(inbox.len(), 1, "a repeated delivery is dropped");
        let item: InboxDoc = doc::decode("room event", &inbox[0].0, &inbox[0].1).unwrap();
        assert_eq!(
            (item.start, item.end),
            (Some(1_760_000_000), Some(1_760_003_600)),
            "ms -> s"
        );
        assert!(rooms.seen("u1").await.unwrap());
        assert_eq!(rooms.purge_seen(unix_now()).await.unwrap(), 0);
        assert_eq!(
            rooms.purge_seen(unix_now() + SEEN_TTL + 1).await.unwrap(),
            1
        );
        assert!(!rooms.seen("u1").await.unwrap());
    }

    #[test]
    fn booking_ids_round_trip() {
        let k = parse_id("omm_a/uid-1_x/0").unwrap();
        assert_eq!(k, booking_key("omm_a", "uid-1_x", 0).unwrap());
        assert!(parse_id("omm_a/uid").is_err());
        assert!(parse_id("omm_a//0").is_err());
    }
}

/// The room system's numbers for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomNumbers {
    /// Bookings by (room id, status).
    pub bookings: BTreeMap<(String, &'static str), u64>,
    /// Replies in the outbox.
    pub replies_waiting: u64,
    /// Replies acknowledged by Feishu.
    pub replies_sent: u64,
    /// Reply attempts that failed (retried).
    pub reply_failures: u64,
    /// Booking decisions taken.
    pub decisions: u64,
    /// Room events accepted (duplicates not counted).
    pub events: u64,
}
