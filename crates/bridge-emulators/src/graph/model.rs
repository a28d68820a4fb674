//! The mailboxes, calendars and events of the emulated tenant, and the
//! event resource as Graph answers it (singles, series masters, computed
//! occurrences, exceptions).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::time::{self, Expansion, When};

/// Whether an app may use a mailbox through Graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MailboxAccess {
    /// Usable.
    #[default]
    Enabled,
    /// 404 `MailboxNotEnabledForRESTAPI` (on-premises, unlicensed, guest).
    NoRest,
    /// 403 `ErrorAccessDenied` (an application access policy excludes it).
    Denied,
}

/// A calendar of a mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) default: bool,
}

/// A modified occurrence.
#[derive(Debug, Clone)]
pub(crate) struct Exception {
    pub(crate) id: String,
    pub(crate) data: Map<String, Value>,
    pub(crate) ext: BTreeMap<String, String>,
    pub(crate) change: u64,
    pub(crate) original: DateTime<Utc>,
}

/// A single event or a series master.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) calendar: String,
    /// The writable properties as last written.
    pub(crate) data: Map<String, Value>,
    pub(crate) ext: BTreeMap<String, String>,
    pub(crate) change: u64,
    pub(crate) created: DateTime<Utc>,
    pub(crate) modified: DateTime<Utc>,
    pub(crate) transaction_id: Option<String>,
    /// Modified occurrences by their original local date.
    pub(crate) exceptions: BTreeMap<NaiveDate, Exception>,
    /// Deleted occurrences by their original local date.
    pub(crate) cancelled: BTreeSet<NaiveDate>,
}

/// One transactionId of a mailbox: the event it created and the body.
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    pub(crate) event: String,
    pub(crate) calendar: String,
    pub(crate) body: Value,
}

/// A mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    pub(crate) id: String,
    pub(crate) upn: String,
    pub(crate) access: MailboxAccess,
    pub(crate) calendars: BTreeMap<String, Calendar>,
    pub(crate) events: BTreeMap<String, Event>,
    pub(crate) transactions: HashMap<String, Transaction>,
}

/// The whole tenant.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) mailboxes: BTreeMap<String, Mailbox>,
    pub(crate) change: u64,
    /// Invitations Graph would have sent (attendees written), and Teams
    /// meetings it would have created: `(mailbox, event id, what)`.
    pub(crate) side_effects: Vec<(String, String, String)>,
}

/// A fresh item id: base64 with `+`, `/` and `=` in it, like Exchange's.
pub(crate) fn new_id(prefix: &str) -> String {
    let mut bytes = vec![0xfb, 0xff, 0xbf];
    let mut rnd = [0u8; 25];
    rand::rng().fill_bytes(&mut rnd);
    bytes.extend_from_slice(&rnd);
    format!("{prefix}{}", STANDARD.encode(bytes))
}

const OCC: &str = "AAMkOCC";

/// The id of a master's occurrence on `date` (its original local date).
pub(crate) fn occurrence_id(master: &str, date: NaiveDate) -> String {
    format!(
        "{OCC}{}",
        STANDARD.encode(format!("{master}|{}", time::date_str(date)))
    )
}

/// The master id and date of an occurrence id.
pub(crate) fn parse_occurrence_id(id: &str) -> Option<(String, NaiveDate)> {
    let raw = STANDARD.decode(id.strip_prefix(OCC)?).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (m, d) = s.rsplit_once('|')?;
    Some((m.to_owned(), NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?))
}

pub(crate) fn etag(change: u64) -> String {
    format!("W/\"{}\"", change_key(change))
}

pub(crate) fn change_key(change: u64) -> String {
    STANDARD.encode(format!("CQAAABYAAAB{change:08}"))
}

impl Model {
    pub(crate) fn next_change(&mut self) -> u64 {
        self.change += 1;
        self.change
    }

    /// The mailbox of a user id or UPN (case-insensitive UPN).
    pub(crate) fn mailbox_id(&self, user: &str) -> Option<String> {
        if self.mailboxes.contains_key(user) {
            return Some(user.to_owned());
        }
        self.mailboxes
            .values()
            .find(|m| m.upn.eq_ignore_ascii_case(user))
            .map(|m| m.id.clone())
    }

    pub(crate) fn add_mailbox(&mut self, upn: &str, access: MailboxAccess) -> (String, String) {
        if let Some(id) = self.mailbox_id(upn) {
            let m = self.mailboxes.get_mut(&id).expect("found above");
            m.access = access;
            let cal = m
                .calendars
                .values()
                .find(|c| c.default)
                .map(|c| c.id.clone())
                .unwrap_or_default();
            return (id, cal);
        }
        let id = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            self.mailboxes.len() + 1,
            rand::random::<u32>()
        );
        let cal = new_id("AAMkCAL");
        let mut calendars = BTreeMap::new();
        calendars.insert(
            cal.clone(),
            Calendar {
                id: cal.clone(),
                name: "Calendar".into(),
                default: true,
            },
        );
        self.mailboxes.insert(
            id.clone(),
            Mailbox {
                id: id.clone(),
                upn: upn.to_owned(),
                access,
                calendars,
                events: BTreeMap::new(),
                transactions: HashMap::new(),
            },
        );
        (id, cal)
    }
}

/// What a listing shows of an event.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    /// `$select` (empty: everything).
    pub(crate) select: Vec<String>,
    /// Extended property ids `$expand`ed (`None`: not expanded).
    pub(crate) expand: Option<Vec<String>>,
    /// `$expand=exceptionOccurrences` (a series master read by id).
    pub(crate) exceptions: bool,
    pub(crate) immutable: bool,
}

impl Event {
    pub(crate) fn start(&self) -> Option<When> {
        time::when(self.data.get("start")?).ok()
    }

    pub(crate) fn end(&self) -> Option<When> {
        time::when(self.data.get("end")?).ok()
    }

    pub(crate) fn is_master(&self) -> bool {
        self.data.get("recurrence").is_some_and(|r| !r.is_null())
    }

    pub(crate) fn expansion(&self) -> Option<Expansion> {
        let rec = self.data.get("recurrence").filter(|r| !r.is_null())?;
        time::expansion(rec, &self.start()?).ok()
    }

    /// Original starts and dates of the generated occurrences before `until`.
    pub(crate) fn occurrences(
        &self,
        until: DateTime<Utc>,
        cap: usize,
    ) -> Vec<(DateTime<Utc>, NaiveDate)> {
        let Some(x) = self.expansion() else {
            return Vec::new();
        };
        x.starts(cap, until)
            .into_iter()
            .map(|at| (at, x.date_of(at)))
            .collect()
    }

    fn length(&self) -> chrono::Duration {
        match (self.start(), self.end()) {
            (Some(s), Some(e)) => e.at - s.at,
            _ => chrono::Duration::zero(),
        }
    }

    /// The data of the occurrence starting at `at` (master content moved).
    pub(crate) fn occurrence_data(&self, at: DateTime<Utc>) -> Map<String, Value> {
        let mut d = self.data.clone();
        d.remove("recurrence");
        let tzname = self
            .data
            .get("start")
            .and_then(|s| s["timeZone"].as_str())
            .unwrap_or("UTC")
            .to_owned();
        let tz = time::zone(&tzname).unwrap_or(chrono_tz::UTC);
        d.insert("start".into(), time::render_exact(at, tz, &tzname));
        d.insert(
            "end".into(),
            time::render_exact(at + self.length(), tz, &tzname),
        );
        d
    }

    /// The resource of the event itself (single or master).
    pub(crate) fn view(&self, shape: &Shape, mailbox: &str) -> Value {
        let kind = if self.is_master() {
            "seriesMaster"
        } else {
            "singleInstance"
        };
        let mut v = base_view(
            &self.id,
            &self.data,
            &self.ext,
            self.change,
            kind,
            shape,
            mailbox,
        );
        v["createdDateTime"] = json!(time::iso_utc(self.created));
        v["lastModifiedDateTime"] = json!(time::iso_utc(self.modified));
        if let Some(t) = &self.transaction_id {
            v["transactionId"] = json!(t);
        }
        if kind == "seriesMaster" && shape.select.iter().any(|s| s == "cancelledOccurrences") {
            v["cancelledOccurrences"] = json!(
                self.cancelled
                    .iter()
                    .map(|d| format!("OID.{}.{}", self.id, time::date_str(*d)))
                    .collect::<Vec<_>>()
            );
        }
        let mut v = select(v, shape);
        if kind == "seriesMaster" && shape.exceptions {
            // The navigation is expanded whatever `$select` keeps.
            let inner = Shape {
                exceptions: false,
                ..shape.clone()
            };
            v["exceptionOccurrences"] = json!(
                self.exceptions
                    .values()
                    .map(|x| {
                        let mut xv = base_view(
                            &x.id,
                            &x.data,
                            &x.ext,
                            x.change,
                            "exception",
                            &inner,
                            mailbox,
                        );
                        xv["seriesMasterId"] = json!(self.id);
                        xv["originalStart"] = json!(time::iso_utc(x.original));
                        xv
                    })
                    .collect::<Vec<_>>()
            );
        }
        v
    }

    /// The original start of the generated occurrence on `date`.
    pub(crate) fn occurrence_at(&self, date: NaiveDate) -> Option<DateTime<Utc>> {
        let until = date
            .succ_opt()?
            .succ_opt()?
            .and_hms_opt(12, 0, 0)?
            .and_utc();
        self.occurrences(until, 1_000_000)
            .into_iter()
            .find(|(_, d)| *d == date)
            .map(|(at, _)| at)
    }

    /// Occurrences and exceptions overlapping `[from, to)`, with their
    /// current start, in start order.
    pub(crate) fn instances(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        shape: &Shape,
        mailbox: &str,
    ) -> Vec<(DateTime<Utc>, Value)> {
        let mut out = Vec::new();
        let len = self.length();
        for (at, date) in self.occurrences(to, 1_000_000) {
            if self.cancelled.contains(&date) || self.exceptions.contains_key(&date) {
                continue;
            }
            if at + len > from || (len.is_zero() && at >= from) {
                let data = self.occurrence_data(at);
                let id = occurrence_id(&self.id, date);
                let mut v = base_view(
                    &id,
                    &data,
                    &BTreeMap::new(),
                    self.change,
                    "occurrence",
                    shape,
                    mailbox,
                );
                v["seriesMasterId"] = json!(self.id);
                v["originalStart"] = json!(time::iso_utc(at));
                out.push((at, select(v, shape)));
            }
        }
        // Exceptions by their current time (they may have moved far away).
        for x in self.exceptions.values() {
            let (Some(s), Some(e)) = (
                x.data.get("start").and_then(|v| time::when(v).ok()),
                x.data.get("end").and_then(|v| time::when(v).ok()),
            ) else {
                continue;
            };
            if s.at < to && (e.at > from || (e.at == s.at && s.at >= from)) {
                let mut v = base_view(
                    &x.id,
                    &x.data,
                    &x.ext,
                    x.change,
                    "exception",
                    shape,
                    mailbox,
                );
                v["seriesMasterId"] = json!(self.id);
                v["originalStart"] = json!(time::iso_utc(x.original));
                out.push((s.at, select(v, shape)));
            }
        }
        out.sort_by_key(|(at, _)| *at);
        out
    }
}

fn base_view(
    id: &str,
    data: &Map<String, Value>,
    ext: &BTreeMap<String, String>,
    change: u64,
    kind: &str,
    shape: &Shape,
    mailbox: &str,
) -> Value {
    let mut v = Value::Object(data.clone());
    let ck = change_key(change);
    let shown_id = if shape.immutable {
        id.to_owned()
    } else {
        format!("{id}~rest")
    };
    v["@odata.etag"] = json!(etag(change));
    v["id"] = json!(shown_id);
    v["changeKey"] = json!(ck);
    v["type"] = json!(kind);
    v["iCalUId"] = json!(format!("040000008200E00074C5B7101A82E008{:x}", md5ish(id)));
    v["webLink"] = json!(format!(
        "https://outlook.office365.com/owa/?itemid={}&exvsurl=1&path=/calendar/item&mailbox={mailbox}",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    ));
    for k in ["isAllDay", "isReminderOn"] {
        if v.get(k).is_none() {
            v[k] = json!(false);
        }
    }
    if v.get("showAs").is_none() {
        v["showAs"] = json!("busy");
    }
    if v.get("sensitivity").is_none() {
        v["sensitivity"] = json!("normal");
    }
    // Times are answered in UTC (no `Prefer: outlook.timezone`); all-day
    // values keep their local midnight, labelled UTC, as Graph answers them.
    let all_day = data
        .get("isAllDay")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for k in ["start", "end"] {
        if let Some(w) = data.get(k).and_then(|x| time::when(x).ok()) {
            v[k] = if all_day {
                json!({"dateTime": w.local.format("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": "UTC"})
            } else {
                time::render(w.at, chrono_tz::UTC, "UTC")
            };
        }
    }
    if let Some(tz) = data.get("start").and_then(|s| s["timeZone"].as_str()) {
        v["originalStartTimeZone"] = json!(tz);
    }
    if let Some(tz) = data.get("end").and_then(|s| s["timeZone"].as_str()) {
        v["originalEndTimeZone"] = json!(tz);
    }
    v.as_object_mut()
        .map(|o| o.remove("singleValueExtendedProperties"));
    if let Some(ids) = &shape.expand {
        let props: Vec<Value> = ext
            .iter()
            .filter(|(k, _)| ids.is_empty() || ids.iter().any(|i| i.eq_ignore_ascii_case(k)))
            .map(|(k, val)| json!({"id": k, "value": val}))
            .collect();
        v["singleValueExtendedProperties"] = json!(props);
    }
    v
}

/// A stable digest of an id (iCalUId stand-in).
fn md5ish(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn select(v: Value, shape: &Shape) -> Value {
    if shape.select.is_empty() {
        return v;
    }
    let Value::Object(o) = v else { return v };
    let keep = |k: &str| {
        k == "id"
            || k.starts_with('@')
            || k == "singleValueExtendedProperties"
            || shape.select.iter().any(|s| s == k)
    };
    Value::Object(o.into_iter().filter(|(k, _)| keep(k)).collect())
}

/// Applies a PATCH: keys replace, `null` removes.
pub(crate) fn merge(data: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if k == "singleValueExtendedProperties" {
            continue;
        }
        if v.is_null() {
            data.remove(k);
        } else {
            data.insert(k.clone(), v.clone());
        }
    }
}

/// Extended properties of a write body, `Err` naming a malformed id.
pub(crate) fn ext_of(body: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    let Some(list) = body.get("singleValueExtendedProperties") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for p in list.as_array().into_iter().flatten() {
        let id = p["id"].as_str().unwrap_or("");
        let ok = id.starts_with("String ")
            && (id.contains(" Name ") || id.contains(" Id 0x") || id.contains(" 0x"));
        if !ok {
            return Err(format!("The extended property id '{id}' is malformed."));
        }
        out.push((id.to_owned(), p["value"].as_str().unwrap_or("").to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_encoding_and_occurrence_ids_round_trip() {
        let id = new_id("AAMkAG");
        assert!(
            id.contains('/') && id.contains('+') && id.ends_with('='),
            "{id}"
        );
        let d = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        let occ = occurrence_id(&id, d);
        assert_eq!(parse_occurrence_id(&occ), Some((id, d)));
        assert_eq!(parse_occurrence_id("AAMkAGx"), None);
    }
}
