//! The EWS operations: a SOAP 1.1 request in, a SOAP answer out. Each item
//! of a batch gets its own ResponseMessage, in request order; one failing
//! item never fails the others (HTTP 200). Request-level failures are SOAP
//! faults with HTTP 500.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, NaiveDate, Utc};

use super::model::{
    Fields, InFolder, Instance, Pattern, PropKey, Range, Recurrence, Refusal, Store, StoredItem,
    Target, prop_name,
};
use super::xml::{El, M, T, esc, leaf};

/// PublicStrings, the property set custom named properties live in.
pub(crate) const PUBLIC_STRINGS: &str = "00020329-0000-0000-c000-000000000046";

/// Who a request acts as, once authenticated and impersonation resolved.
#[derive(Debug, Clone)]
pub(crate) struct Acting {
    pub(crate) mailbox: String,
}

/// One operation's answer body (inside `soap:Body`) and what the call log
/// keeps of it.
pub(crate) struct Answer {
    pub(crate) xml: String,
    pub(crate) codes: Vec<String>,
    pub(crate) writes: usize,
}

fn ok_msg(op: &str, payload: &str) -> String {
    format!(
        "<m:{op}ResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode>{payload}</m:{op}ResponseMessage>"
    )
}

fn err_msg(op: &str, r: &Refusal) -> String {
    format!(
        "<m:{op}ResponseMessage ResponseClass=\"Error\"><m:MessageText>{}</m:MessageText><m:ResponseCode>{}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:{op}ResponseMessage>",
        esc(&r.1),
        r.0
    )
}

fn wrap(op: &str, msgs: &[String]) -> String {
    format!(
        "<m:{op}Response xmlns:m=\"{M}\" xmlns:t=\"{T}\"><m:ResponseMessages>{}</m:ResponseMessages></m:{op}Response>",
        msgs.concat()
    )
}

struct Collect {
    msgs: Vec<String>,
    codes: Vec<String>,
}

impl Collect {
    fn new() -> Self {
        Self {
            msgs: Vec::new(),
            codes: Vec::new(),
        }
    }
    fn ok(&mut self, op: &str, payload: &str) {
        self.msgs.push(ok_msg(op, payload));
        self.codes.push("NoError".into());
    }
    fn err(&mut self, op: &str, r: &Refusal) {
        self.msgs.push(err_msg(op, r));
        self.codes.push(r.0.to_owned());
    }
    fn answer(self, op: &str, writes: usize) -> Answer {
        Answer {
            xml: wrap(op, &self.msgs),
            codes: self.codes,
            writes,
        }
    }
}

/// The mailbox a folder id names (the acting one when it names none), and
/// the calendar folder under its calendar (`None`: the calendar itself).
fn folder_of(
    folder: Option<&El>,
    acting: &Acting,
    store: &Store,
) -> Result<(String, Option<String>), Refusal> {
    let Some(f) = folder.and_then(|f| f.children.first()) else {
        return Ok((acting.mailbox.clone(), None));
    };
    if f.name == "FolderId" {
        let id = f.attr("Id").unwrap_or_default();
        return match store.folders.get(id) {
            Some(x) if x.mailbox.eq_ignore_ascii_case(&acting.mailbox) => {
                Ok((acting.mailbox.clone(), Some(id.to_owned())))
            }
            Some(_) => Err(Refusal::new(
                "ErrorAccessDenied",
                "Access is denied to the folder's mailbox.",
            )),
            None if id == B64.encode(format!("calendar:{}", acting.mailbox)) => {
                Ok((acting.mailbox.clone(), None))
            }
            None => Err(Refusal::new(
                "ErrorFolderNotFound",
                "The specified folder could not be found in the store.",
            )),
        };
    }
    if f.attr("Id") != Some("calendar") {
        return Err(Refusal::new(
            "ErrorInvalidOperation",
            format!(
                "Folder {:?} holds no calendar items.",
                f.attr("Id").unwrap_or_default()
            ),
        ));
    }
    match f.path(&["Mailbox", "EmailAddress"]) {
        Some(m) if !m.text.eq_ignore_ascii_case(&acting.mailbox) => Err(Refusal::new(
            "ErrorAccessDenied",
            format!("Access is denied to the mailbox {}.", m.text),
        )),
        _ => Ok((acting.mailbox.clone(), None)),
    }
}

fn scope(folder: Option<&String>) -> InFolder<'_> {
    folder.map_or(InFolder::Calendar, |f| InFolder::Named(f))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, Refusal> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            Refusal::new(
                "ErrorInvalidRequest",
                format!("{s:?} is not an xs:dateTime"),
            )
        })
}

fn parse_date(s: &str) -> Result<NaiveDate, Refusal> {
    // xs:date may carry a zone suffix; the date part is what counts.
    let d = s.trim();
    NaiveDate::parse_from_str(d.get(..10).unwrap_or(d), "%Y-%m-%d")
        .map_err(|_| Refusal::new("ErrorInvalidRequest", format!("{s:?} is not an xs:date")))
}

fn bool_of(s: &str) -> Result<bool, Refusal> {
    match s.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(Refusal::new(
            "ErrorInvalidRequest",
            format!("{other:?} is not an xs:boolean"),
        )),
    }
}

fn one_of(v: &str, allowed: &[&str], what: &str) -> Result<String, Refusal> {
    if allowed.contains(&v) {
        Ok(v.to_owned())
    } else {
        Err(Refusal::new(
            "ErrorInvalidRequest",
            format!("{v:?} is not a valid {what}"),
        ))
    }
}

/// The identity of an `ExtendedFieldURI`.
pub(crate) fn prop_key(uri: &El) -> Result<PropKey, Refusal> {
    let set = match (
        uri.attr("DistinguishedPropertySetId"),
        uri.attr("PropertySetId"),
    ) {
        (Some("PublicStrings"), None) => PUBLIC_STRINGS.to_owned(),
        (Some(other), None) => other.to_owned(),
        (None, Some(g)) => g.to_ascii_lowercase(),
        (None, None) if uri.attr("PropertyTag").is_some() => "tag".to_owned(),
        _ => {
            return Err(Refusal::new(
                "ErrorInvalidPropertySet",
                "ExtendedFieldURI needs one property set",
            ));
        }
    };
    let name = uri
        .attr("PropertyName")
        .or_else(|| uri.attr("PropertyId"))
        .or_else(|| uri.attr("PropertyTag"))
        .ok_or_else(|| Refusal::new("ErrorInvalidPropertySet", "ExtendedFieldURI names nothing"))?;
    let ty = uri
        .attr("PropertyType")
        .ok_or_else(|| Refusal::new("ErrorInvalidPropertySet", "ExtendedFieldURI has no type"))?;
    Ok((set, name.to_owned(), ty.to_owned()))
}

const SENSITIVITY: &[&str] = &["Normal", "Personal", "Private", "Confidential"];
const FREE_BUSY: &[&str] = &[
    "Free",
    "Tentative",
    "Busy",
    "OOF",
    "WorkingElsewhere",
    "NoData",
];

/// A `t:CalendarItem` as fields (and its recurrence when it has one).
fn calendar_item(el: &El) -> Result<(Fields, Option<Recurrence>), Refusal> {
    let mut f = Fields::default();
    let mut rec = None;
    for c in &el.children {
        let text = c.text.as_str();
        match c.name.as_str() {
            "Subject" => f.subject = Some(text.to_owned()),
            "Sensitivity" => f.sensitivity = Some(one_of(text, SENSITIVITY, "Sensitivity")?),
            "Body" => {
                let ty = c.attr("BodyType").unwrap_or("Text");
                f.body = Some((one_of(ty, &["HTML", "Text"], "BodyType")?, text.to_owned()));
            }
            "ReminderIsSet" => f.reminder_is_set = Some(bool_of(text)?),
            "ReminderMinutesBeforeStart" => {
                let m: i64 = text.trim().parse().map_err(|_| {
                    Refusal::new(
                        "ErrorInvalidRequest",
                        "ReminderMinutesBeforeStart is not an int",
                    )
                })?;
                if !(0..=2_629_800).contains(&m) {
                    return Err(Refusal::new(
                        "ErrorInvalidRequest",
                        "ReminderMinutesBeforeStart must be between 0 and 2629800",
                    ));
                }
                f.reminder_minutes = Some(m);
            }
            "ExtendedProperty" => {
                let uri = c.child("ExtendedFieldURI").ok_or_else(|| {
                    Refusal::new("ErrorInvalidPropertySet", "ExtendedProperty without URI")
                })?;
                let v = c.text_of("Value").unwrap_or_default();
                f.extended.insert(prop_name(&prop_key(uri)?), v.to_owned());
            }
            "UID" => f.uid = Some(text.to_owned()),
            "Start" => f.start = Some(parse_time(text)?),
            "End" => f.end = Some(parse_time(text)?),
            "IsAllDayEvent" => f.is_all_day = Some(bool_of(text)?),
            "LegacyFreeBusyStatus" => {
                f.free_busy = Some(one_of(text, FREE_BUSY, "LegacyFreeBusyStatus")?)
            }
            "Location" => f.location = Some(text.to_owned()),
            "StartTimeZone" => f.start_tz = c.attr("Id").map(str::to_owned),
            "EndTimeZone" => f.end_tz = c.attr("Id").map(str::to_owned),
            "Recurrence" => rec = Some(recurrence(c)?),
            other => {
                return Err(Refusal::new(
                    "ErrorInvalidPropertySet",
                    format!("{other} cannot be set by this client"),
                ));
            }
        }
    }
    Ok((f, rec))
}

fn interval(p: &El) -> Result<u32, Refusal> {
    let v: u32 = p
        .text_of("Interval")
        .unwrap_or_default()
        .trim()
        .parse()
        .map_err(|_| Refusal::new("ErrorCalendarInvalidRecurrence", "bad Interval"))?;
    if v == 0 {
        return Err(Refusal::new(
            "ErrorCalendarInvalidRecurrence",
            "Interval must be >= 1",
        ));
    }
    Ok(v)
}

fn num(p: &El, name: &str) -> Result<u32, Refusal> {
    p.text_of(name)
        .unwrap_or_default()
        .trim()
        .parse()
        .map_err(|_| Refusal::new("ErrorCalendarInvalidRecurrence", format!("bad {name}")))
}

fn text(p: &El, name: &str) -> String {
    p.text_of(name).unwrap_or_default().trim().to_owned()
}

fn recurrence(el: &El) -> Result<Recurrence, Refusal> {
    let bad = |m: &str| Refusal::new("ErrorCalendarInvalidRecurrence", m);
    let (mut pattern, mut range) = (None, None);
    for p in &el.children {
        match p.name.as_str() {
            "DailyRecurrence" => {
                pattern = Some(Pattern::Daily {
                    interval: interval(p)?,
                })
            }
            "WeeklyRecurrence" => {
                pattern = Some(Pattern::Weekly {
                    interval: interval(p)?,
                    days: text(p, "DaysOfWeek")
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect(),
                    first_day: p.text_of("FirstDayOfWeek").map(|s| s.trim().to_owned()),
                })
            }
            "AbsoluteMonthlyRecurrence" => {
                let day = num(p, "DayOfMonth")?;
                if !(1..=31).contains(&day) {
                    return Err(bad("DayOfMonth must be 1..31"));
                }
                pattern = Some(Pattern::AbsoluteMonthly {
                    interval: interval(p)?,
                    day,
                })
            }
            "RelativeMonthlyRecurrence" => {
                pattern = Some(Pattern::RelativeMonthly {
                    interval: interval(p)?,
                    day: text(p, "DaysOfWeek"),
                    index: text(p, "DayOfWeekIndex"),
                })
            }
            "AbsoluteYearlyRecurrence" => {
                let day = num(p, "DayOfMonth")?;
                if !(1..=31).contains(&day) {
                    return Err(bad("DayOfMonth must be 1..31"));
                }
                pattern = Some(Pattern::AbsoluteYearly {
                    day,
                    month: text(p, "Month"),
                })
            }
            "RelativeYearlyRecurrence" => {
                pattern = Some(Pattern::RelativeYearly {
                    day: text(p, "DaysOfWeek"),
                    index: text(p, "DayOfWeekIndex"),
                    month: text(p, "Month"),
                })
            }
            "NoEndRecurrence" => {
                range = Some(Range::NoEnd {
                    start: parse_date(&text(p, "StartDate"))?,
                })
            }
            "EndDateRecurrence" => {
                range = Some(Range::EndDate {
                    start: parse_date(&text(p, "StartDate"))?,
                    end: parse_date(&text(p, "EndDate"))?,
                })
            }
            "NumberedRecurrence" => {
                let count = num(p, "NumberOfOccurrences")?;
                if count == 0 {
                    return Err(bad("NumberOfOccurrences must be >= 1"));
                }
                range = Some(Range::Numbered {
                    start: parse_date(&text(p, "StartDate"))?,
                    count,
                })
            }
            _ => {}
        }
    }
    match (pattern, range) {
        (Some(pattern), Some(range)) => Ok(Recurrence { pattern, range }),
        _ => Err(bad("Recurrence needs a pattern and a range")),
    }
}

/// What an item id element names.
fn target(store: &Store, mailbox: &str, id: &El) -> Result<Target, Refusal> {
    match id.name.as_str() {
        "ItemId" => {
            let i = id.attr("Id").unwrap_or_default();
            if store.items.contains_key(i) {
                Ok(Target::Item(i.to_owned()))
            } else if let Some((m, t)) = store.occurrence_ids.get(i) {
                Ok(Target::Occurrence(m.clone(), *t))
            } else if B64.decode(i).is_err() {
                Err(Refusal::new("ErrorInvalidIdMalformed", "Id is malformed."))
            } else {
                Err(Refusal::new(
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                ))
            }
        }
        "OccurrenceItemId" => {
            let master = id.attr("RecurringMasterId").unwrap_or_default();
            let index: u32 = id
                .attr("InstanceIndex")
                .unwrap_or_default()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| Refusal::new("ErrorInvalidRequest", "bad InstanceIndex"))?;
            let (m, t) = store.occurrence_by_index(mailbox, master, index)?;
            Ok(Target::Occurrence(m, t))
        }
        "RecurringMasterItemId" => {
            let occ = id.attr("OccurrenceId").unwrap_or_default();
            match store.occurrence_ids.get(occ) {
                Some((m, _)) => Ok(Target::Item(m.clone())),
                None => Err(Refusal::new(
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                )),
            }
        }
        other => Err(Refusal::new(
            "ErrorInvalidRequest",
            format!("{other} is not an item id"),
        )),
    }
}

fn change_key_of(id: &El) -> Option<&str> {
    id.attr("ChangeKey")
}

fn item_id_xml(id: &str, ck: &str) -> String {
    format!("<t:ItemId Id=\"{}\" ChangeKey=\"{}\"/>", esc(id), esc(ck))
}

pub(crate) fn create_item(store: &mut Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let items: Vec<&El> = op
        .child("Items")
        .map(|i| i.children.iter().collect())
        .unwrap_or_default();
    let target = folder_of(op.child("SavedItemFolderId"), acting, store);
    let send = op.attr("SendMeetingInvitations");
    for it in &items {
        let res = (|| {
            let (mailbox, folder) = target.clone()?;
            if send.is_none() {
                return Err(Refusal::new(
                    "ErrorSendMeetingInvitationsRequired",
                    "SendMeetingInvitations attribute is required for calendar items.",
                ));
            }
            let (fields, rec) = calendar_item(it)?;
            store.create(&mailbox, folder, fields, rec)
        })();
        match res {
            Ok((id, ck)) => c.ok(
                "CreateItem",
                &format!(
                    "<m:Items><t:CalendarItem>{}</t:CalendarItem></m:Items>",
                    item_id_xml(&id, &ck)
                ),
            ),
            Err(r) => c.err("CreateItem", &r),
        }
    }
    let n = items.len();
    c.answer("CreateItem", n)
}

/// The field name of a `FieldURI` path and whether it names an item-level
/// field this server stores.
fn field_path(path: &El) -> Result<String, Refusal> {
    match path.name.as_str() {
        "FieldURI" => Ok(path.attr("FieldURI").unwrap_or_default().to_owned()),
        "ExtendedFieldURI" => Ok(prop_name(&prop_key(path)?)),
        _ => Err(Refusal::new(
            "ErrorInvalidPropertySet",
            "indexed fields are not supported",
        )),
    }
}

pub(crate) fn update_item(store: &mut Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let changes: Vec<&El> = op
        .child("ItemChanges")
        .map(|i| i.children.iter().collect())
        .unwrap_or_default();
    let conflict = op.attr("ConflictResolution").unwrap_or_default().to_owned();
    let send = op.attr("SendMeetingInvitationsOrCancellations");
    for ch in &changes {
        let res = (|| {
            if send.is_none() {
                return Err(Refusal::new(
                    "ErrorSendMeetingInvitationsOrCancellationsRequired",
                    "SendMeetingInvitationsOrCancellations attribute is required for calendar items.",
                ));
            }
            let id = ch
                .children
                .first()
                .ok_or_else(|| Refusal::new("ErrorInvalidRequest", "ItemChange without id"))?;
            let tgt = target(store, &acting.mailbox, id)?;
            let ck = match conflict.as_str() {
                "NeverOverwrite" | "AutoResolve" => change_key_of(id),
                _ => None,
            };
            let mut set = Fields::default();
            let mut delete = Vec::new();
            let mut rec = None;
            for u in ch
                .child("Updates")
                .map(|u| u.children.as_slice())
                .unwrap_or_default()
            {
                let path = u
                    .children
                    .first()
                    .ok_or_else(|| Refusal::new("ErrorInvalidRequest", "update without path"))?;
                let name = field_path(path)?;
                match u.name.as_str() {
                    "DeleteItemField" => delete.push(name),
                    _ => {
                        let item = u.child("CalendarItem").ok_or_else(|| {
                            Refusal::new("ErrorInvalidRequest", "SetItemField without CalendarItem")
                        })?;
                        if item.children.len() != 1 {
                            return Err(Refusal::new(
                                "ErrorIncorrectUpdatePropertyCount",
                                "An object within a change description must contain one and only one property to modify.",
                            ));
                        }
                        let (f, r) = calendar_item(item)?;
                        if r.is_some() {
                            rec = Some(r);
                        }
                        merge_set(&mut set, f);
                    }
                }
            }
            store.update(&acting.mailbox, tgt, ck, set, &delete, rec)
        })();
        match res {
            Ok((id, ck)) => c.ok(
                "UpdateItem",
                &format!(
                    "<m:Items><t:CalendarItem>{}</t:CalendarItem></m:Items><m:ConflictResults><t:Count>0</t:Count></m:ConflictResults>",
                    item_id_xml(&id, &ck)
                ),
            ),
            Err(r) => c.err("UpdateItem", &r),
        }
    }
    let n = changes.len();
    c.answer("UpdateItem", n)
}

fn merge_set(into: &mut Fields, f: Fields) {
    macro_rules! take {
        ($($n:ident),*) => { $( if f.$n.is_some() { into.$n = f.$n; } )* };
    }
    take!(
        subject,
        sensitivity,
        body,
        reminder_is_set,
        reminder_minutes,
        uid,
        start,
        end,
        is_all_day,
        free_busy,
        location,
        start_tz,
        end_tz
    );
    into.extended.extend(f.extended);
}

pub(crate) fn delete_item(store: &mut Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let ids: Vec<&El> = op
        .child("ItemIds")
        .map(|i| i.children.iter().collect())
        .unwrap_or_default();
    let send = op.attr("SendMeetingCancellations");
    for id in &ids {
        let res = (|| {
            if send.is_none() {
                return Err(Refusal::new(
                    "ErrorSendMeetingCancellationsRequired",
                    "SendMeetingCancellations attribute is required for calendar items.",
                ));
            }
            let tgt = target(store, &acting.mailbox, id)?;
            store.delete(&acting.mailbox, tgt)
        })();
        match res {
            Ok(()) => c.ok("DeleteItem", ""),
            Err(r) => c.err("DeleteItem", &r),
        }
    }
    let n = ids.len();
    c.answer("DeleteItem", n)
}

/// What a response shape asks for.
pub(crate) struct Shape {
    id_only: bool,
    fields: BTreeSet<String>,
    extended: Vec<(PropKey, El)>,
}

fn shape(el: Option<&El>) -> Result<Shape, Refusal> {
    let mut s = Shape {
        id_only: true,
        fields: BTreeSet::new(),
        extended: Vec::new(),
    };
    let Some(el) = el else { return Ok(s) };
    s.id_only = el.text_of("BaseShape").map(str::trim) == Some("IdOnly");
    if let Some(a) = el.child("AdditionalProperties") {
        for p in &a.children {
            match p.name.as_str() {
                "FieldURI" => {
                    s.fields
                        .insert(p.attr("FieldURI").unwrap_or_default().to_owned());
                }
                "ExtendedFieldURI" => s.extended.push((prop_key(p)?, p.clone())),
                _ => {}
            }
        }
    }
    Ok(s)
}

fn ext_uri_xml(uri: &El) -> String {
    let mut out = String::from("<t:ExtendedFieldURI");
    for (k, v) in &uri.attrs {
        let _ = write!(out, " {k}=\"{}\"", esc(v));
    }
    out.push_str("/>");
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A `t:CalendarItem` as the shape asks. `kind` is Single, Occurrence,
/// Exception or RecurringMaster.
fn item_xml(
    id: &str,
    ck: &str,
    f: &Fields,
    kind: &str,
    master: Option<&StoredItem>,
    shape: &Shape,
) -> String {
    let want = |uri: &str| !shape.id_only || shape.fields.contains(uri);
    let mut o = String::from("<t:CalendarItem>");
    o.push_str(&item_id_xml(id, ck));
    if want("item:Subject")
        && let Some(s) = &f.subject
    {
        leaf(&mut o, "t:Subject", s);
    }
    if want("item:Sensitivity") {
        leaf(
            &mut o,
            "t:Sensitivity",
            f.sensitivity.as_deref().unwrap_or("Normal"),
        );
    }
    if want("item:Body")
        && let Some((ty, b)) = &f.body
    {
        let _ = write!(o, "<t:Body BodyType=\"{ty}\">{}</t:Body>", esc(b));
    }
    if want("item:ReminderIsSet") {
        leaf(
            &mut o,
            "t:ReminderIsSet",
            if f.reminder_is_set.unwrap_or(false) {
                "true"
            } else {
                "false"
            },
        );
    }
    if want("item:ReminderMinutesBeforeStart") {
        leaf(
            &mut o,
            "t:ReminderMinutesBeforeStart",
            &f.reminder_minutes.unwrap_or(15).to_string(),
        );
    }
    for (key, uri) in &shape.extended {
        if let Some(v) = f.extended.get(&prop_name(key)) {
            let _ = write!(
                o,
                "<t:ExtendedProperty>{}<t:Value>{}</t:Value></t:ExtendedProperty>",
                ext_uri_xml(uri),
                esc(v)
            );
        }
    }
    if want("calendar:UID")
        && let Some(u) = &f.uid
    {
        leaf(&mut o, "t:UID", u);
    }
    if want("calendar:Start")
        && let Some(s) = f.start
    {
        leaf(&mut o, "t:Start", &time(s));
    }
    if want("calendar:End")
        && let Some(e) = f.end
    {
        leaf(&mut o, "t:End", &time(e));
    }
    if want("calendar:IsAllDayEvent") {
        leaf(
            &mut o,
            "t:IsAllDayEvent",
            if f.is_all_day.unwrap_or(false) {
                "true"
            } else {
                "false"
            },
        );
    }
    if want("calendar:LegacyFreeBusyStatus") {
        leaf(
            &mut o,
            "t:LegacyFreeBusyStatus",
            f.free_busy.as_deref().unwrap_or("Busy"),
        );
    }
    if want("calendar:Location")
        && let Some(l) = &f.location
    {
        leaf(&mut o, "t:Location", l);
    }
    if want("calendar:IsRecurring") {
        leaf(
            &mut o,
            "t:IsRecurring",
            if matches!(kind, "Occurrence" | "Exception") {
                "true"
            } else {
                "false"
            },
        );
    }
    if want("calendar:CalendarItemType") {
        leaf(&mut o, "t:CalendarItemType", kind);
    }
    if let Some(m) = master {
        if want("calendar:Recurrence")
            && let Some(r) = &m.recurrence
        {
            o.push_str(&recurrence_xml(r));
        }
        if want("calendar:ModifiedOccurrences") && !m.exceptions.is_empty() {
            o.push_str("<t:ModifiedOccurrences>");
            for (t, e) in &m.exceptions {
                let _ = write!(
                    o,
                    "<t:Occurrence>{}<t:Start>{}</t:Start><t:End>{}</t:End><t:OriginalStart>{}</t:OriginalStart></t:Occurrence>",
                    item_id_xml(&e.id, &e.change_key),
                    e.fields.start.map(time).unwrap_or_default(),
                    e.fields.end.map(time).unwrap_or_default(),
                    DateTime::from_timestamp(*t, 0)
                        .map(time)
                        .unwrap_or_default()
                );
            }
            o.push_str("</t:ModifiedOccurrences>");
        }
        if want("calendar:DeletedOccurrences") && !m.deleted.is_empty() {
            o.push_str("<t:DeletedOccurrences>");
            for t in &m.deleted {
                let _ = write!(
                    o,
                    "<t:DeletedOccurrence><t:Start>{}</t:Start></t:DeletedOccurrence>",
                    DateTime::from_timestamp(*t, 0)
                        .map(time)
                        .unwrap_or_default()
                );
            }
            o.push_str("</t:DeletedOccurrences>");
        }
    }
    if want("calendar:StartTimeZone")
        && let Some(z) = &f.start_tz
    {
        let _ = write!(o, "<t:StartTimeZone Id=\"{}\"/>", esc(z));
    }
    if want("calendar:EndTimeZone")
        && let Some(z) = &f.end_tz
    {
        let _ = write!(o, "<t:EndTimeZone Id=\"{}\"/>", esc(z));
    }
    o.push_str("</t:CalendarItem>");
    o
}

fn recurrence_xml(r: &Recurrence) -> String {
    let mut o = String::from("<t:Recurrence>");
    let _ = match &r.pattern {
        Pattern::Daily { interval } => write!(
            o,
            "<t:DailyRecurrence><t:Interval>{interval}</t:Interval></t:DailyRecurrence>"
        ),
        Pattern::Weekly {
            interval,
            days,
            first_day,
        } => write!(
            o,
            "<t:WeeklyRecurrence><t:Interval>{interval}</t:Interval><t:DaysOfWeek>{}</t:DaysOfWeek>{}</t:WeeklyRecurrence>",
            days.join(" "),
            first_day
                .as_ref()
                .map(|d| format!("<t:FirstDayOfWeek>{d}</t:FirstDayOfWeek>"))
                .unwrap_or_default()
        ),
        Pattern::AbsoluteMonthly { interval, day } => write!(
            o,
            "<t:AbsoluteMonthlyRecurrence><t:Interval>{interval}</t:Interval><t:DayOfMonth>{day}</t:DayOfMonth></t:AbsoluteMonthlyRecurrence>"
        ),
        Pattern::RelativeMonthly {
            interval,
            day,
            index,
        } => write!(
            o,
            "<t:RelativeMonthlyRecurrence><t:Interval>{interval}</t:Interval><t:DaysOfWeek>{day}</t:DaysOfWeek><t:DayOfWeekIndex>{index}</t:DayOfWeekIndex></t:RelativeMonthlyRecurrence>"
        ),
        Pattern::AbsoluteYearly { day, month } => write!(
            o,
            "<t:AbsoluteYearlyRecurrence><t:DayOfMonth>{day}</t:DayOfMonth><t:Month>{month}</t:Month></t:AbsoluteYearlyRecurrence>"
        ),
        Pattern::RelativeYearly { day, index, month } => write!(
            o,
            "<t:RelativeYearlyRecurrence><t:DaysOfWeek>{day}</t:DaysOfWeek><t:DayOfWeekIndex>{index}</t:DayOfWeekIndex><t:Month>{month}</t:Month></t:RelativeYearlyRecurrence>"
        ),
    };
    let _ = match &r.range {
        Range::NoEnd { start } => write!(
            o,
            "<t:NoEndRecurrence><t:StartDate>{start}</t:StartDate></t:NoEndRecurrence>"
        ),
        Range::EndDate { start, end } => write!(
            o,
            "<t:EndDateRecurrence><t:StartDate>{start}</t:StartDate><t:EndDate>{end}</t:EndDate></t:EndDateRecurrence>"
        ),
        Range::Numbered { start, count } => write!(
            o,
            "<t:NumberedRecurrence><t:StartDate>{start}</t:StartDate><t:NumberOfOccurrences>{count}</t:NumberOfOccurrences></t:NumberedRecurrence>"
        ),
    };
    o.push_str("</t:Recurrence>");
    o
}

fn stored_xml(item: &StoredItem, shape: &Shape) -> String {
    let kind = if item.recurrence.is_some() {
        "RecurringMaster"
    } else {
        "Single"
    };
    item_xml(
        &item.id,
        &item.change_key,
        &item.fields,
        kind,
        Some(item),
        shape,
    )
}

pub(crate) fn get_item(store: &Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let shape = shape(op.child("ItemShape"));
    let ids: Vec<&El> = op
        .child("ItemIds")
        .map(|i| i.children.iter().collect())
        .unwrap_or_default();
    for id in &ids {
        let res = (|| {
            let shape = shape.as_ref().map_err(Clone::clone)?;
            match target(store, &acting.mailbox, id)? {
                Target::Item(i) => Ok(stored_xml(store.item(&acting.mailbox, &i)?, shape)),
                Target::Occurrence(m, t) => {
                    let master = store.item(&acting.mailbox, &m)?;
                    Ok(match master.exceptions.get(&t) {
                        Some(e) => {
                            item_xml(&e.id, &e.change_key, &e.fields, "Exception", None, shape)
                        }
                        None => {
                            let mut f = master.fields.clone();
                            let len = f.end.zip(f.start).map(|(e, s)| e - s).unwrap_or_default();
                            let s = DateTime::from_timestamp(t, 0).unwrap_or_default();
                            f.start = Some(s);
                            f.end = Some(s + len);
                            let id = store
                                .occurrence_ids
                                .iter()
                                .find(|(_, v)| v.0 == m && v.1 == t)
                                .map(|(k, _)| k.clone())
                                .unwrap_or_default();
                            item_xml(&id, &master.change_key, &f, "Occurrence", None, shape)
                        }
                    })
                }
            }
        })();
        match res {
            Ok(x) => c.ok("GetItem", &format!("<m:Items>{x}</m:Items>")),
            Err(r) => c.err("GetItem", &r),
        }
    }
    c.answer("GetItem", 0)
}

/// Whether an item matches a restriction (search expression).
fn matches(expr: &El, f: &Fields) -> Result<bool, Refusal> {
    let value_of = |path: &El| -> Result<Option<String>, Refusal> {
        Ok(match path.name.as_str() {
            "ExtendedFieldURI" => f.extended.get(&prop_name(&prop_key(path)?)).cloned(),
            "FieldURI" => match path.attr("FieldURI").unwrap_or_default() {
                "item:Subject" => f.subject.clone(),
                "calendar:Location" => f.location.clone(),
                other => {
                    return Err(Refusal::new(
                        "ErrorInvalidRestriction",
                        format!("{other} cannot be used in a restriction here"),
                    ));
                }
            },
            _ => return Err(Refusal::new("ErrorInvalidRestriction", "unsupported path")),
        })
    };
    let first = || {
        expr.children
            .first()
            .ok_or_else(|| Refusal::new("ErrorInvalidRestriction", "empty expression"))
    };
    Ok(match expr.name.as_str() {
        "Restriction" | "Not" if expr.children.len() != 1 => {
            return Err(Refusal::new(
                "ErrorInvalidRestriction",
                "one expression expected",
            ));
        }
        "Restriction" => matches(first()?, f)?,
        "Not" => !matches(first()?, f)?,
        "And" => {
            for c in &expr.children {
                if !matches(c, f)? {
                    return Ok(false);
                }
            }
            true
        }
        "Or" => {
            for c in &expr.children {
                if matches(c, f)? {
                    return Ok(true);
                }
            }
            false
        }
        "Exists" => value_of(first()?)?.is_some(),
        "IsEqualTo" | "IsNotEqualTo" => {
            let constant = expr
                .path(&["FieldURIOrConstant", "Constant"])
                .and_then(|c| c.attr("Value"))
                .ok_or_else(|| Refusal::new("ErrorInvalidRestriction", "a Constant is needed"))?;
            let eq = value_of(first()?)?.as_deref() == Some(constant);
            eq == (expr.name == "IsEqualTo")
        }
        "Contains" => {
            let constant = expr
                .child("Constant")
                .and_then(|c| c.attr("Value"))
                .ok_or_else(|| Refusal::new("ErrorInvalidRestriction", "a Constant is needed"))?;
            let ignore_case = expr
                .attr("ContainmentComparison")
                .is_some_and(|c| c.contains("IgnoreCase"));
            let Some(v) = value_of(first()?)? else {
                return Ok(false);
            };
            let (v, k) = if ignore_case {
                (v.to_lowercase(), constant.to_lowercase())
            } else {
                (v, constant.to_owned())
            };
            match expr.attr("ContainmentMode").unwrap_or("Substring") {
                "FullString" => v == k,
                "Prefixed" => v.starts_with(&k),
                _ => v.contains(&k),
            }
        }
        other => {
            return Err(Refusal::new(
                "ErrorInvalidRestriction",
                format!("{other} is not supported"),
            ));
        }
    })
}

fn instance_xml(i: &Instance, shape: &Shape) -> String {
    item_xml(&i.id, &i.change_key, &i.fields, i.kind, None, shape)
}

pub(crate) fn find_item(store: &mut Store, acting: &Acting, op: &El, max_page: usize) -> Answer {
    let mut c = Collect::new();
    let res = (|| {
        let shape = shape(op.child("ItemShape"))?;
        let (mailbox, folder) = folder_of(op.child("ParentFolderIds"), acting, store)?;
        let within = scope(folder.as_ref());
        if let Some(view) = op.child("CalendarView") {
            if op.child("Restriction").is_some() {
                return Err(Refusal::new(
                    "ErrorInvalidRestriction",
                    "Restrictions cannot be used with a CalendarView.",
                ));
            }
            let from = parse_time(view.attr("StartDate").unwrap_or_default())?;
            let to = parse_time(view.attr("EndDate").unwrap_or_default())?;
            if to < from {
                return Err(Refusal::new(
                    "ErrorCalendarEndDateIsEarlierThanStartDate",
                    "EndDate is earlier than StartDate",
                ));
            }
            let max = view
                .attr("MaxEntriesReturned")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let all = store.calendar_view(&mailbox, within, from, to)?;
            let last = all.len() <= max;
            let shown: Vec<String> = all
                .iter()
                .take(max)
                .map(|i| instance_xml(i, &shape))
                .collect();
            return Ok(format!(
                "<m:RootFolder TotalItemsInView=\"{}\" IncludesLastItemInRange=\"{last}\"><t:Items>{}</t:Items></m:RootFolder>",
                all.len(),
                shown.concat()
            ));
        }
        let view = op.child("IndexedPageItemView").ok_or_else(|| {
            Refusal::new(
                "ErrorInvalidRequest",
                "only CalendarView and IndexedPageItemView are supported",
            )
        })?;
        let offset: usize = view.attr("Offset").unwrap_or("0").parse().unwrap_or(0);
        let max = view
            .attr("MaxEntriesReturned")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(max_page)
            .min(max_page);
        let mut hits = Vec::new();
        for item in store.items.values().filter(|i| {
            i.mailbox.eq_ignore_ascii_case(&mailbox) && within.holds(i.folder.as_deref())
        }) {
            let ok = match op.child("Restriction") {
                Some(r) => matches(r, &item.fields)?,
                None => true,
            };
            if ok {
                hits.push(item);
            }
        }
        let total = hits.len();
        let page: Vec<String> = hits
            .iter()
            .skip(offset)
            .take(max)
            .map(|i| stored_xml(i, &shape))
            .collect();
        let next = offset + page.len();
        Ok(format!(
            "<m:RootFolder IndexedPagingOffset=\"{next}\" TotalItemsInView=\"{total}\" IncludesLastItemInRange=\"{}\"><t:Items>{}</t:Items></m:RootFolder>",
            next >= total,
            page.concat()
        ))
    })();
    match res {
        Ok(x) => c.ok("FindItem", &x),
        Err(r) => c.err("FindItem", &r),
    }
    c.answer("FindItem", 0)
}

/// SyncFolderItems: changes after the version in the (opaque) state, in
/// version order, at most `MaxChangesReturned` (1..=512).
pub(crate) fn sync_folder_items(store: &Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let res = (|| {
        let shape = shape(op.child("ItemShape"))?;
        let (mailbox, folder) = folder_of(op.child("SyncFolderId"), acting, store)?;
        let within = scope(folder.as_ref());
        // The state names the folder it was given for.
        let mailbox_state = match &folder {
            Some(f) => format!("{mailbox}/{f}"),
            None => mailbox.clone(),
        };
        let since = match op
            .text_of("SyncState")
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => 0,
            Some(s) => B64
                .decode(s)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    let (mb, v) = s.strip_prefix("ews-sync:")?.rsplit_once(':')?;
                    (mb.eq_ignore_ascii_case(&mailbox_state)).then_some(v.parse::<u64>().ok()?)
                })
                .ok_or_else(|| {
                    Refusal::new(
                        "ErrorInvalidSyncStateData",
                        "Synchronization state data is corrupt or otherwise invalid.",
                    )
                })?,
        };
        let max: usize = op
            .text_of("MaxChangesReturned")
            .and_then(|m| m.trim().parse().ok())
            .filter(|m| (1..=512).contains(m))
            .ok_or_else(|| {
                Refusal::new("ErrorInvalidRequest", "MaxChangesReturned must be 1..512")
            })?;
        let mut changes: Vec<(u64, String)> = Vec::new();
        for item in store.items.values().filter(|i| {
            i.mailbox.eq_ignore_ascii_case(&mailbox)
                && within.holds(i.folder.as_deref())
                && i.version > since
        }) {
            let tag = if item.created > since {
                "Create"
            } else {
                "Update"
            };
            changes.push((
                item.version,
                format!("<t:{tag}>{}</t:{tag}>", stored_xml(item, &shape)),
            ));
        }
        for (mb, f, id, v, created) in &store.tombstones {
            if mb.eq_ignore_ascii_case(&mailbox)
                && within.holds(f.as_deref())
                && *v > since
                && *created <= since
            {
                changes.push((
                    *v,
                    format!("<t:Delete><t:ItemId Id=\"{}\"/></t:Delete>", esc(id)),
                ));
            }
        }
        changes.sort_by_key(|c| c.0);
        let last = changes.len() <= max;
        let shown: Vec<&(u64, String)> = changes.iter().take(max).collect();
        let upto = shown.last().map_or(
            if last {
                store.version.max(since)
            } else {
                since
            },
            |c| if last { store.version.max(c.0) } else { c.0 },
        );
        let state = B64.encode(format!("ews-sync:{mailbox_state}:{upto}"));
        Ok(format!(
            "<m:SyncState>{state}</m:SyncState><m:IncludesLastItemInRange>{last}</m:IncludesLastItemInRange><m:Changes>{}</m:Changes>",
            shown.iter().map(|c| c.1.as_str()).collect::<String>()
        ))
    })();
    match res {
        Ok(x) => c.ok("SyncFolderItems", &x),
        Err(r) => c.err("SyncFolderItems", &r),
    }
    c.answer("SyncFolderItems", 0)
}

fn folder_xml(id: &str, ck: &str, name: &str, class: Option<&str>, n: usize) -> String {
    format!(
        "<t:CalendarFolder><t:FolderId Id=\"{}\" ChangeKey=\"{}\"/>{}<t:DisplayName>{}</t:DisplayName><t:TotalCount>{n}</t:TotalCount></t:CalendarFolder>",
        esc(id),
        esc(ck),
        class
            .map(|c| format!("<t:FolderClass>{}</t:FolderClass>", esc(c)))
            .unwrap_or_default(),
        esc(name)
    )
}

fn count_in(store: &Store, mailbox: &str, folder: Option<&String>) -> usize {
    let within = scope(folder);
    store
        .items
        .values()
        .filter(|i| i.mailbox.eq_ignore_ascii_case(mailbox) && within.holds(i.folder.as_deref()))
        .count()
}

/// GetFolder on the calendar or a folder under it: how `check` sees that
/// the mailbox answers and that a named folder exists.
pub(crate) fn get_folder(store: &Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let ids: Vec<&El> = op
        .child("FolderIds")
        .map(|i| i.children.iter().collect())
        .unwrap_or_default();
    for id in ids {
        let wrapper = El {
            children: vec![id.clone()],
            ..El::default()
        };
        match folder_of(Some(&wrapper), acting, store) {
            Ok((mb, folder)) => {
                let n = count_in(store, &mb, folder.as_ref());
                let x = match folder.as_ref().and_then(|f| store.folders.get(f)) {
                    Some(f) => folder_xml(
                        &f.id,
                        &f.change_key,
                        &f.display_name,
                        Some(&f.folder_class),
                        n,
                    ),
                    None => folder_xml(
                        &B64.encode(format!("calendar:{mb}")),
                        "AgAAAA==",
                        "Calendar",
                        None,
                        n,
                    ),
                };
                c.ok("GetFolder", &format!("<m:Folders>{x}</m:Folders>"));
            }
            Err(r) => c.err("GetFolder", &r),
        }
    }
    c.answer("GetFolder", 0)
}

/// The only parent this server keeps folders under: the mailbox's calendar.
fn calendar_parent(parent: Option<&El>, acting: &Acting, store: &Store) -> Result<String, Refusal> {
    match folder_of(parent, acting, store)? {
        (mb, None) if parent.is_some_and(|p| !p.children.is_empty()) => Ok(mb),
        _ => Err(Refusal::new(
            "ErrorInvalidOperation",
            "Calendar folders are kept under the mailbox's calendar only on this server.",
        )),
    }
}

/// FindFolder (Shallow) under the mailbox's calendar, with an optional
/// restriction on `folder:DisplayName`.
pub(crate) fn find_folder(store: &Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let res = (|| {
        if op.attr("Traversal") != Some("Shallow") {
            return Err(Refusal::new(
                "ErrorInvalidRequest",
                "Only a Shallow traversal is supported.",
            ));
        }
        let mb = calendar_parent(op.child("ParentFolderIds"), acting, store)?;
        let want = match op.child("Restriction") {
            None => None,
            Some(r) => {
                let eq = r.child("IsEqualTo").filter(|e| {
                    e.child("FieldURI").and_then(|f| f.attr("FieldURI"))
                        == Some("folder:DisplayName")
                });
                let value = eq
                    .and_then(|e| e.path(&["FieldURIOrConstant", "Constant"]))
                    .and_then(|k| k.attr("Value"))
                    .ok_or_else(|| {
                        Refusal::new(
                            "ErrorUnsupportedPathForQuery",
                            "Only IsEqualTo on folder:DisplayName is supported.",
                        )
                    })?;
                Some(value.to_owned())
            }
        };
        let found: Vec<String> = store
            .folders
            .values()
            .filter(|f| f.mailbox.eq_ignore_ascii_case(&mb))
            .filter(|f| {
                want.as_deref()
                    .is_none_or(|w| f.display_name.eq_ignore_ascii_case(w))
            })
            .map(|f| {
                folder_xml(
                    &f.id,
                    &f.change_key,
                    &f.display_name,
                    Some(&f.folder_class),
                    count_in(store, &mb, Some(&f.id)),
                )
            })
            .collect();
        Ok(format!(
            "<m:RootFolder TotalItemsInView=\"{}\" IncludesLastItemInRange=\"true\"><t:Folders>{}</t:Folders></m:RootFolder>",
            found.len(),
            found.concat()
        ))
    })();
    match res {
        Ok(x) => c.ok("FindFolder", &x),
        Err(r) => c.err("FindFolder", &r),
    }
    c.answer("FindFolder", 0)
}

/// CreateFolder: calendar folders (`CalendarFolder`, class
/// `IPF.Appointment`) under the mailbox's calendar.
pub(crate) fn create_folder(store: &mut Store, acting: &Acting, op: &El) -> Answer {
    let mut c = Collect::new();
    let parent = calendar_parent(op.child("ParentFolderId"), acting, store);
    let folders: Vec<&El> = op
        .child("Folders")
        .map(|f| f.children.iter().collect())
        .unwrap_or_default();
    for f in &folders {
        let res = (|| {
            let mb = parent.clone()?;
            if f.name != "CalendarFolder" {
                return Err(Refusal::new(
                    "ErrorInvalidFolderTypeForOperation",
                    "Only calendar folders are created under a calendar.",
                ));
            }
            let class = f.text_of("FolderClass").unwrap_or("IPF.Appointment");
            if class != "IPF.Appointment" {
                return Err(Refusal::new(
                    "ErrorInvalidPropertySet",
                    format!("FolderClass {class} is not a calendar folder class."),
                ));
            }
            store.create_folder(&mb, f.text_of("DisplayName").unwrap_or_default(), class)
        })();
        match res {
            Ok((id, ck)) => c.ok(
                "CreateFolder",
                &format!(
                    "<m:Folders><t:CalendarFolder><t:FolderId Id=\"{}\" ChangeKey=\"{}\"/></t:CalendarFolder></m:Folders>",
                    esc(&id),
                    esc(&ck)
                ),
            ),
            Err(r) => c.err("CreateFolder", &r),
        }
    }
    c.answer("CreateFolder", folders.len())
}
