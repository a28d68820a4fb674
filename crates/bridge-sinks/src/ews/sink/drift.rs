//! Drift repair of recurring masters, occurrence by occurrence.
//!
//! Exchange changes a master's ChangeKey whenever one of its occurrences
//! changes, so a moved ChangeKey alone does not say what a user did. The
//! master is read (`GetItem` with `ModifiedOccurrences` and
//! `DeletedOccurrences`) and compared with the series:
//!
//! * **the master's times moved** (a user dragged the whole series; Exchange
//!   dropped its exceptions): the series is written again;
//! * **the master's subject or location changed**: the master is updated in
//!   place by the next apply (its occurrences stay);
//! * **an occurrence the source never modified was edited**: that
//!   occurrence alone is written back (`UpdateItem` on its item id) with the
//!   master's content at its original time. EWS cannot turn an exception
//!   back into a plain occurrence, so it stays an exception with the
//!   master's content; its ChangeKey is remembered so that it is not
//!   rewritten again;
//! * **one of our modified occurrences was edited**: its key is given back to
//!   the engine, which writes it again alone (`UpdateItem` on its
//!   `OccurrenceItemId`);
//! * **an occurrence was deleted** (`on_target_delete`): with `respect` it
//!   stays deleted, remembered here (and a recorded modified occurrence
//!   becomes a tombstone); with `restore` the series is written again,
//!   because EWS cannot undelete an occurrence: the old master is deleted
//!   first and a new one created with every exception, so no duplicate is
//!   left;
//! * **our exceptions or cancellations vanished** (a reshaped master): the
//!   series is written again.
//!
//! What was found right is remembered as an [`Ack`] of the master's
//! ChangeKey (also written after an apply changed occurrences), so a quiet
//! calendar costs no `GetItem` on the next pass.

use std::collections::{BTreeMap, BTreeSet};

use bridge_core::{CanonicalEvent, EventKey};
use bridge_target::{Drift, DriftInput};
use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::{
    EwsSink, OccAction, OnTargetDelete, Shape, Work, all_day_zone, expand, gone, item_id_xml, lock,
    occurrence_event, occurrence_index,
};
use crate::ews::client::EwsClient;
use crate::ews::xml::El;
use crate::microsoft::{exact, recurrence};

/// State name of the acknowledged masters (key: the master's item id).
const ACK_STATE: &str = "ews-master";

/// What the sink last found right about one master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The master's ChangeKey then.
    pub(crate) ck: String,
    /// ChangeKeys of occurrences the sink wrote, by 1-based instance index.
    #[serde(default)]
    pub(crate) occ: BTreeMap<u32, String>,
    /// Instance indexes a user deleted that stay deleted (`respect`).
    #[serde(default)]
    pub(crate) deleted: BTreeSet<u32>,
}

/// A master as `GetItem` shows it.
#[derive(Debug, Default)]
struct Seen {
    ck: String,
    subject: Option<String>,
    location: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    /// (item id, ChangeKey, original start) of each modified occurrence.
    modified: Vec<(String, String, i64)>,
    /// Original starts of the deleted occurrences.
    deleted: Vec<i64>,
}

fn instant(s: Option<&str>) -> Option<i64> {
    DateTime::parse_from_rfc3339(s?).ok().map(|d| d.timestamp())
}

fn seen(el: &El) -> Option<Seen> {
    let id = el.child("ItemId")?;
    let list = |name: &str| {
        el.child(name)
            .map(|c| c.children.as_slice())
            .unwrap_or_default()
    };
    Some(Seen {
        ck: id.attr("ChangeKey").unwrap_or_default().to_owned(),
        subject: el.text_of("Subject").map(str::to_owned),
        location: el.text_of("Location").map(str::to_owned),
        start: instant(el.text_of("Start")),
        end: instant(el.text_of("End")),
        modified: list("ModifiedOccurrences")
            .iter()
            .filter_map(|o| {
                let id = o.child("ItemId")?;
                Some((
                    id.attr("Id")?.to_owned(),
                    id.attr("ChangeKey").unwrap_or_default().to_owned(),
                    instant(o.text_of("OriginalStart"))?,
                ))
            })
            .collect(),
        deleted: list("DeletedOccurrences")
            .iter()
            .filter_map(|d| instant(d.text_of("Start")))
            .collect(),
    })
}

/// What one master needs.
#[derive(Debug, Default)]
struct Verdict {
    /// The series is written again (old master deleted first).
    whole: bool,
    /// Keys the engine writes again (the master in place, our exceptions).
    rewrite: Vec<EventKey>,
    tombstone: Vec<EventKey>,
    /// User-edited plain occurrences: (item id, ChangeKey, index, content).
    repair: Vec<(String, String, u32, CanonicalEvent)>,
    ack: Ack,
}

/// Compares a master read back with its series.
fn judge(
    sink: &EwsSink,
    input: &DriftInput<'_>,
    key: &EventKey,
    seen: &Seen,
    old: Option<&Ack>,
) -> Option<Verdict> {
    let series = input.series.iter().find(|s| s.uid == key.uid())?;
    let m = series.master()?;
    let rec = recurrence::from_event(m).ok()?;
    let zone = all_day_zone(input.calendar.timezone.as_deref());
    let cal = &input.calendar.id;
    let written = sink.written(m, Shape::Master(&rec), key, series.uid, cal, zone);
    let mut v = Verdict {
        ack: Ack {
            ck: seen.ck.clone(),
            ..old.cloned().unwrap_or_default()
        },
        ..Verdict::default()
    };
    if seen.start != Some(written.start) || seen.end != Some(written.end) {
        v.whole = true;
        return Some(v);
    }
    if written.differs("item:Subject", "Subject", seen.subject.as_deref())
        || written.differs("calendar:Location", "Location", seen.location.as_deref())
    {
        v.rewrite.push(key.clone());
    }
    let index = |t: i64| occurrence_index(m, t);
    // Expected exceptions by index (None: the first-occurrence fix).
    let mut exp_mod: BTreeMap<u32, Option<&EventKey>> = series
        .overrides
        .iter()
        .filter_map(|o| Some((index(o.key.original_time())?, Some(&o.key))))
        .collect();
    if series.wall_clock_fix().and_then(|f| f.first).is_some() {
        exp_mod.entry(1).or_insert(None);
    }
    for o in exact::exact_occurrences(series, exact::horizon()) {
        exp_mod.entry(o.index).or_insert(None);
    }
    let exp_del: BTreeSet<u32> = series.cancelled.iter().filter_map(|t| index(*t)).collect();
    let got_mod: BTreeMap<u32, &(String, String, i64)> = seen
        .modified
        .iter()
        .filter_map(|o| Some((index(o.2)?, o)))
        .collect();
    let got_del: BTreeSet<u32> = seen.deleted.iter().filter_map(|t| index(*t)).collect();
    // What the source wrote and is gone: written again.
    if exp_del.iter().any(|i| !got_del.contains(i))
        || exp_mod
            .keys()
            .any(|i| !got_mod.contains_key(i) && !got_del.contains(i))
    {
        v.whole = true;
        return Some(v);
    }
    for i in got_del.difference(&exp_del) {
        if v.ack.deleted.contains(i) {
            continue;
        }
        match sink.cfg.on_target_delete {
            OnTargetDelete::Restore => {
                v.whole = true;
                return Some(v);
            }
            OnTargetDelete::Respect => {
                tracing::info!(sink = %sink.cfg.id, uid = series.uid, index = i, "an occurrence deleted in Exchange stays deleted (on_target_delete = respect)");
                if let Some(Some(k)) = exp_mod.get(i)
                    && input.records.contains_key(*k)
                {
                    v.tombstone.push((*k).clone());
                }
                v.ack.deleted.insert(*i);
            }
        }
    }
    let len = m.end.instant() - m.start.instant();
    for (i, (id, ck, original)) in &got_mod {
        match exp_mod.get(i) {
            Some(Some(k)) => {
                let recorded = input.records.get(*k).and_then(|r| r.remote.etag.as_deref());
                if recorded != Some(ck.as_str()) && v.ack.occ.get(i) != Some(ck) {
                    v.rewrite.push((*k).clone());
                }
            }
            Some(None) => {}
            None if v.ack.occ.get(i) == Some(ck) => {}
            None => {
                // The generated occurrence's exact start (the original
                // start Exchange reports is a wall-clock reading).
                let starts = expand(m, i64::MIN / 4, original + 2 * 3600, usize::MAX).ok()?;
                let t = *starts.get(usize::try_from(*i).ok()? - 1)?;
                let ok = EventKey::new(series.uid, t).ok()?;
                v.repair
                    .push((id.clone(), ck.clone(), *i, occurrence_event(m, t, len, ok)));
            }
        }
    }
    Some(v)
}

impl EwsSink {
    /// The acknowledged state of a master, from memory or the state store.
    pub(super) async fn ack(&self, master: &str) -> Option<Ack> {
        if let Some(a) = lock(&self.acks).get(master) {
            return Some(a.clone());
        }
        let state = self.state.as_ref()?;
        match state.get(ACK_STATE, master).await {
            Ok(Some(v)) => {
                let a: Ack = serde_json::from_str(&v).ok()?;
                lock(&self.acks).insert(master.to_owned(), a.clone());
                Some(a)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(sink = %self.cfg.id, error = %e, "could not read the sink's state");
                None
            }
        }
    }

    async fn put_ack(&self, master: &str, ack: Ack) {
        if let Some(state) = &self.state {
            let json = serde_json::to_string(&ack).unwrap_or_default();
            if let Err(e) = state.put(ACK_STATE, master, &json).await {
                tracing::warn!(sink = %self.cfg.id, error = %e, "could not write the sink's state");
                return;
            }
        }
        lock(&self.acks).insert(master.to_owned(), ack);
    }

    async fn forget_ack(&self, master: &str) {
        lock(&self.acks).remove(master);
        if let Some(state) = &self.state
            && let Err(e) = state.delete(ACK_STATE, master).await
        {
            tracing::warn!(sink = %self.cfg.id, error = %e, "could not write the sink's state");
        }
    }

    /// After an apply wrote occurrences of a master and read its new
    /// ChangeKey back: that version is ours.
    pub(super) async fn ack_applied(&self, w: &Work) {
        if w.failed.is_some() || !w.key_errors.is_empty() {
            return;
        }
        let Some((id, ck)) = w.base.as_ref().and_then(|b| b.done.clone()) else {
            return;
        };
        let mut ack = self.ack(&id).await.unwrap_or_default();
        ack.ck = ck;
        for o in &w.occ {
            if let (Some(i), Some((_, ock)), OccAction::Update(_)) = (o.index, &o.done, &o.action) {
                ack.occ.insert(i, ock.clone());
            }
        }
        self.put_ack(&id, ack).await;
    }

    /// Masters whose ChangeKey moved: read, judged, and repaired occurrence
    /// by occurrence (module docs).
    pub(super) async fn check_masters(
        &self,
        client: &EwsClient,
        input: &DriftInput<'_>,
        moved: &[(EventKey, String)],
        drift: &mut Drift,
        stale_masters: &mut Vec<String>,
    ) {
        if moved.is_empty() {
            return;
        }
        let parts: Vec<String> = moved.iter().map(|(_, id)| item_id_xml(id, None)).collect();
        let res = self
            .batched(client, "GetItem", "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI=\"item:Subject\"/><t:FieldURI FieldURI=\"calendar:Start\"/><t:FieldURI FieldURI=\"calendar:End\"/><t:FieldURI FieldURI=\"calendar:Location\"/><t:FieldURI FieldURI=\"calendar:ModifiedOccurrences\"/><t:FieldURI FieldURI=\"calendar:DeletedOccurrences\"/></t:AdditionalProperties></m:ItemShape><m:ItemIds>", "</m:ItemIds></m:GetItem>", &parts)
            .await;
        let zone = all_day_zone(input.calendar.timezone.as_deref());
        // (master id, verdict) of the masters with occurrences to repair.
        let mut repairs: Vec<(String, Verdict)> = Vec::new();
        for ((key, id), r) in moved.iter().zip(res) {
            let m = match r {
                Ok(m) => m,
                Err(e) => {
                    drift.errors.push(format!("{id}: {e}"));
                    continue;
                }
            };
            if !m.ok() {
                if gone(&m.code) {
                    // Deleted since the listing: the next pass sees it gone.
                    continue;
                }
                drift
                    .errors
                    .push(format!("{id}: {}: {}", m.code, m.message));
                continue;
            }
            let Some(s) = m.element.path(&["Items", "CalendarItem"]).and_then(seen) else {
                drift.errors.push(format!("{id}: GetItem answered no item"));
                continue;
            };
            let old = self.ack(id).await;
            let Some(v) = judge(self, input, key, &s, old.as_ref()) else {
                continue;
            };
            if v.whole {
                tracing::info!(sink = %self.cfg.id, key = %key, "a user's change to a series in Exchange: the series is written again");
                drift.rewrite.push(key.clone());
                stale_masters.push(id.clone());
                if !input.dry_run {
                    self.forget_ack(id).await;
                }
                continue;
            }
            drift.rewrite.extend(v.rewrite.iter().cloned());
            drift.tombstone.extend(v.tombstone.iter().cloned());
            if input.dry_run {
                continue;
            }
            if v.repair.is_empty() {
                // Nothing to write here; an engine rewrite changes the
                // master again and is looked at on the next pass.
                if v.rewrite.is_empty() {
                    self.put_ack(id, v.ack).await;
                }
                continue;
            }
            repairs.push((id.clone(), v));
        }
        if repairs.is_empty() {
            return;
        }
        let cal = &input.calendar.id;
        let mut parts = Vec::new();
        let mut who = Vec::new();
        for (n, (_, v)) in repairs.iter().enumerate() {
            for (j, (id, ck, _, ev)) in v.repair.iter().enumerate() {
                let w = self.written(ev, Shape::Occurrence, &ev.key, ev.key.uid(), cal, zone);
                tracing::info!(sink = %self.cfg.id, key = %ev.key, "an occurrence edited in Exchange is written back");
                parts.push(format!(
                    "<t:ItemChange>{}{}</t:ItemChange>",
                    item_id_xml(id, Some(ck)),
                    w.updates_xml(false)
                ));
                who.push((n, j));
            }
        }
        let res = self
            .batched(client, "UpdateItem", "<m:UpdateItem ConflictResolution=\"NeverOverwrite\" SendMeetingInvitationsOrCancellations=\"SendToNone\"><m:ItemChanges>", "</m:ItemChanges></m:UpdateItem>", &parts)
            .await;
        let mut failed = vec![false; repairs.len()];
        for ((n, j), r) in who.into_iter().zip(res) {
            let i = repairs[n].1.repair[j].2;
            match r {
                Ok(m) if m.ok() => {
                    if let Some((_, ck)) = m.item_id() {
                        repairs[n].1.ack.occ.insert(i, ck);
                    }
                }
                Ok(m) => {
                    failed[n] = true;
                    drift.errors.push(format!(
                        "{}: {}: {}",
                        repairs[n].1.repair[j].0, m.code, m.message
                    ));
                }
                Err(e) => {
                    failed[n] = true;
                    drift
                        .errors
                        .push(format!("{}: {e}", repairs[n].1.repair[j].0));
                }
            }
        }
        // The masters' ChangeKeys after the repairs.
        let done: Vec<usize> = (0..repairs.len())
            .filter(|n| !failed[*n] && repairs[*n].1.rewrite.is_empty())
            .collect();
        let parts: Vec<String> = done
            .iter()
            .map(|n| item_id_xml(&repairs[*n].0, None))
            .collect();
        let res = self
            .batched(client, "GetItem", "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds>", "</m:ItemIds></m:GetItem>", &parts)
            .await;
        for (n, r) in done.into_iter().zip(res) {
            if let Ok(m) = r
                && m.ok()
                && let Some((_, ck)) = m.item_id()
            {
                let (id, mut v) = std::mem::take(&mut repairs[n]);
                v.ack.ck = ck;
                self.put_ack(&id, v.ack).await;
            }
        }
    }
}
