//! The mailbox model: calendar items with opaque ids and change keys that
//! change on every write, extended properties, recurring masters with their
//! modified (exceptions) and deleted occurrences, and the expansion of the
//! six EWS patterns × three ranges in the item's Windows time zone (mapped
//! to IANA through CLDR `windowsZones`, the `localzone` crate's table) with
//! the `rrule` crate.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use rrule::RRuleSet;
use serde::Serialize;

use crate::kit::ids::rand_alnum;

/// Expansion stops after this many generated occurrences (a safety valve).
const MAX_STEPS: usize = 100_000;

/// An extended property's identity: property set (GUID or distinguished
/// name), property name and type.
pub(crate) type PropKey = (String, String, String);

/// Writable content of an item or an exception.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Fields {
    pub subject: Option<String>,
    pub sensitivity: Option<String>,
    /// `(BodyType, text)`.
    pub body: Option<(String, String)>,
    pub reminder_is_set: Option<bool>,
    pub reminder_minutes: Option<i64>,
    /// `"<set>|<name>|<type>" -> value`.
    pub extended: BTreeMap<String, String>,
    pub uid: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub is_all_day: Option<bool>,
    pub free_busy: Option<String>,
    pub location: Option<String>,
    /// Windows zone ids.
    pub start_tz: Option<String>,
    pub end_tz: Option<String>,
}

/// The key of an extended property in [`Fields::extended`].
pub(crate) fn prop_name(k: &PropKey) -> String {
    format!("{}|{}|{}", k.0, k.1, k.2)
}

/// An EWS recurrence pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Pattern {
    Daily {
        interval: u32,
    },
    Weekly {
        interval: u32,
        days: Vec<String>,
        first_day: Option<String>,
    },
    AbsoluteMonthly {
        interval: u32,
        day: u32,
    },
    RelativeMonthly {
        interval: u32,
        day: String,
        index: String,
    },
    AbsoluteYearly {
        day: u32,
        month: String,
    },
    RelativeYearly {
        day: String,
        index: String,
        month: String,
    },
}

/// An EWS recurrence range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Range {
    NoEnd { start: NaiveDate },
    EndDate { start: NaiveDate, end: NaiveDate },
    Numbered { start: NaiveDate, count: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recurrence {
    pub pattern: Pattern,
    pub range: Range,
}

/// A modified occurrence.
#[derive(Debug, Clone, Serialize)]
pub struct Exception {
    pub id: String,
    pub change_key: String,
    pub fields: Fields,
}

/// One stored calendar item (a single or a recurring master).
#[derive(Debug, Clone, Serialize)]
pub struct StoredItem {
    pub id: String,
    pub change_key: String,
    pub mailbox: String,
    /// The calendar folder holding it: `None` for the mailbox's calendar,
    /// else the id of a calendar folder under it.
    pub folder: Option<String>,
    pub fields: Fields,
    pub recurrence: Option<Recurrence>,
    /// Original start (unix seconds) -> exception.
    pub exceptions: BTreeMap<i64, Exception>,
    /// Original starts of deleted occurrences.
    pub deleted: BTreeSet<i64>,
    /// Store version of the last change (SyncFolderItems).
    pub version: u64,
    /// Store version of its creation.
    pub created: u64,
}

/// One item as CalendarView shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Instance {
    pub id: String,
    pub change_key: String,
    /// Single, Occurrence or Exception.
    pub kind: &'static str,
    pub master_id: Option<String>,
    /// 1-based, for occurrences and exceptions.
    pub index: Option<u32>,
    pub original_start: Option<DateTime<Utc>>,
    pub fields: Fields,
}

/// Why the model refused something: an EWS response code and a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) &'static str, pub(crate) String);

impl Refusal {
    pub(crate) fn new(code: &'static str, text: impl Into<String>) -> Self {
        Self(code, text.into())
    }
}

/// A calendar folder under a mailbox's calendar (CreateFolder).
#[derive(Debug, Clone, Serialize)]
pub struct Folder {
    pub id: String,
    pub change_key: String,
    pub mailbox: String,
    pub display_name: String,
    pub folder_class: String,
}

/// Which folders an operation sees.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InFolder<'a> {
    /// Every calendar folder of the mailbox (the control API, tests).
    Any,
    /// The mailbox's calendar itself.
    Calendar,
    /// One folder under it, by id.
    Named(&'a str),
}

impl InFolder<'_> {
    pub(crate) fn holds(self, folder: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::Calendar => folder.is_none(),
            Self::Named(id) => folder == Some(id),
        }
    }
}

/// Every mailbox's calendar, plus deletions for SyncFolderItems.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) items: BTreeMap<String, StoredItem>,
    /// Calendar folders under the mailboxes' calendars, by id.
    pub(crate) folders: BTreeMap<String, Folder>,
    /// Occurrence / exception id -> (master id, original start).
    pub(crate) occurrence_ids: HashMap<String, (String, i64)>,
    /// (mailbox, folder, id, version of the delete, version of the
    /// creation) of deleted items.
    pub(crate) tombstones: Vec<(String, Option<String>, String, u64, u64)>,
    pub(crate) version: u64,
}

pub(crate) fn new_id() -> String {
    B64.encode(format!("AAMk{}", rand_alnum(48)))
}

pub(crate) fn new_change_key() -> String {
    B64.encode(format!("DwAAABYA{}", rand_alnum(12)))
}

/// The IANA zone of a Windows zone id (CLDR `windowsZones`, territory 001).
pub(crate) fn iana(windows: &str) -> Option<Tz> {
    if windows == "UTC" {
        return Some(Tz::UTC);
    }
    localzone::win_zone_to_iana(windows, None)?.parse().ok()
}

impl Store {
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    pub(crate) fn create(
        &mut self,
        mailbox: &str,
        folder: Option<String>,
        fields: Fields,
        recurrence: Option<Recurrence>,
    ) -> Result<(String, String), Refusal> {
        validate(&fields, recurrence.as_ref())?;
        let id = new_id();
        let ck = new_change_key();
        let version = self.bump();
        self.items.insert(
            id.clone(),
            StoredItem {
                id: id.clone(),
                change_key: ck.clone(),
                mailbox: mailbox.to_owned(),
                folder,
                fields,
                recurrence,
                exceptions: BTreeMap::new(),
                deleted: BTreeSet::new(),
                version,
                created: version,
            },
        );
        Ok((id, ck))
    }

    /// Creates a calendar folder under the mailbox's calendar.
    pub(crate) fn create_folder(
        &mut self,
        mailbox: &str,
        display_name: &str,
        folder_class: &str,
    ) -> Result<(String, String), Refusal> {
        if display_name.trim().is_empty() {
            return Err(Refusal::new(
                "ErrorInvalidPropertySet",
                "A folder needs a DisplayName.",
            ));
        }
        if self.folders.values().any(|f| {
            f.mailbox.eq_ignore_ascii_case(mailbox)
                && f.display_name.eq_ignore_ascii_case(display_name)
        }) {
            return Err(Refusal::new(
                "ErrorFolderExists",
                "A folder with the specified name already exists.",
            ));
        }
        let id = B64.encode(format!("AQMk{}", rand_alnum(40)));
        let ck = new_change_key();
        self.folders.insert(
            id.clone(),
            Folder {
                id: id.clone(),
                change_key: ck.clone(),
                mailbox: mailbox.to_owned(),
                display_name: display_name.to_owned(),
                folder_class: folder_class.to_owned(),
            },
        );
        Ok((id, ck))
    }

    pub(crate) fn item(&self, mailbox: &str, id: &str) -> Result<&StoredItem, Refusal> {
        self.items
            .get(id)
            .filter(|i| i.mailbox.eq_ignore_ascii_case(mailbox))
            .ok_or_else(not_found)
    }

    /// Resolves an OccurrenceItemId to the master and the original start.
    pub(crate) fn occurrence_by_index(
        &self,
        mailbox: &str,
        master_id: &str,
        index: u32,
    ) -> Result<(String, i64), Refusal> {
        let m = self.item(mailbox, master_id)?;
        let starts = occurrence_starts(m, None, index as usize)?;
        let Some(&t) = starts.get(index as usize - 1) else {
            return Err(Refusal::new(
                "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange",
                "Occurrence index is out of recurrence range.",
            ));
        };
        if m.deleted.contains(&t) {
            return Err(Refusal::new(
                "ErrorCalendarOccurrenceIsDeletedFromRecurrence",
                "Occurrence with this index was previously deleted from the recurrence.",
            ));
        }
        Ok((m.id.clone(), t))
    }

    /// Applies field changes to an item (`None` occurrence) or to one
    /// occurrence, checking the change key when given. Returns the new id
    /// and change key.
    pub(crate) fn update(
        &mut self,
        mailbox: &str,
        target: Target,
        change_key: Option<&str>,
        set: Fields,
        delete: &[String],
        recurrence: Option<Option<Recurrence>>,
    ) -> Result<(String, String), Refusal> {
        let version = self.bump();
        match target {
            Target::Item(id) => {
                let item = self
                    .items
                    .get_mut(&id)
                    .filter(|i| i.mailbox.eq_ignore_ascii_case(mailbox))
                    .ok_or_else(not_found)?;
                if let Some(ck) = change_key
                    && ck != item.change_key
                {
                    return Err(Refusal::new(
                        "ErrorIrresolvableConflict",
                        "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
                    ));
                }
                let mut fields = item.fields.clone();
                merge(&mut fields, set, delete);
                let new_rec = recurrence
                    .clone()
                    .unwrap_or_else(|| item.recurrence.clone());
                validate(&fields, new_rec.as_ref())?;
                // A new pattern or new times of a master drop its exceptions
                // and deleted occurrences (as Outlook warns).
                let reshaped = new_rec != item.recurrence
                    || fields.start != item.fields.start
                    || fields.end != item.fields.end
                    || recurrence.is_some();
                if reshaped && item.recurrence.is_some() {
                    for e in item.exceptions.values() {
                        self.occurrence_ids.remove(&e.id);
                    }
                    item.exceptions.clear();
                    item.deleted.clear();
                }
                item.fields = fields;
                item.recurrence = new_rec;
                item.change_key = new_change_key();
                item.version = version;
                Ok((item.id.clone(), item.change_key.clone()))
            }
            Target::Occurrence(master, t) => {
                let item = self
                    .items
                    .get_mut(&master)
                    .filter(|i| i.mailbox.eq_ignore_ascii_case(mailbox))
                    .ok_or_else(not_found)?;
                if item.deleted.contains(&t) {
                    return Err(Refusal::new(
                        "ErrorCalendarOccurrenceIsDeletedFromRecurrence",
                        "Occurrence was previously deleted from the recurrence.",
                    ));
                }
                if recurrence.is_some() || set.uid.is_some() {
                    return Err(Refusal::new(
                        "ErrorInvalidPropertySet",
                        "Recurrence and UID cannot be set on an occurrence.",
                    ));
                }
                let exists = item.exceptions.get(&t);
                if let (Some(ck), Some(e)) = (change_key, exists)
                    && ck != e.change_key
                {
                    return Err(Refusal::new(
                        "ErrorIrresolvableConflict",
                        "The change key passed in the request does not match the current change key for the item.",
                    ));
                }
                let mut fields = match exists {
                    Some(e) => e.fields.clone(),
                    None => occurrence_fields(item, t),
                };
                merge(&mut fields, set, delete);
                validate(&fields, None)?;
                let id = exists.map_or_else(new_id, |e| e.id.clone());
                let ck = new_change_key();
                item.exceptions.insert(
                    t,
                    Exception {
                        id: id.clone(),
                        change_key: ck.clone(),
                        fields,
                    },
                );
                // The master changes with its exceptions.
                item.change_key = new_change_key();
                item.version = version;
                self.occurrence_ids.insert(id.clone(), (master, t));
                Ok((id, ck))
            }
        }
    }

    /// Deletes an item (with its occurrences) or one occurrence.
    pub(crate) fn delete(&mut self, mailbox: &str, target: Target) -> Result<(), Refusal> {
        let version = self.bump();
        match target {
            Target::Item(id) => {
                let item = self
                    .items
                    .get(&id)
                    .filter(|i| i.mailbox.eq_ignore_ascii_case(mailbox))
                    .ok_or_else(not_found)?;
                for e in item.exceptions.values() {
                    self.occurrence_ids.remove(&e.id);
                }
                let (mailbox, folder, created) =
                    (item.mailbox.clone(), item.folder.clone(), item.created);
                self.items.remove(&id);
                self.tombstones
                    .push((mailbox, folder, id, version, created));
                Ok(())
            }
            Target::Occurrence(master, t) => {
                let item = self
                    .items
                    .get_mut(&master)
                    .filter(|i| i.mailbox.eq_ignore_ascii_case(mailbox))
                    .ok_or_else(not_found)?;
                if item.deleted.contains(&t) {
                    return Err(Refusal::new(
                        "ErrorCalendarOccurrenceIsDeletedFromRecurrence",
                        "Occurrence was previously deleted from the recurrence.",
                    ));
                }
                if let Some(e) = item.exceptions.remove(&t) {
                    self.occurrence_ids.remove(&e.id);
                }
                item.deleted.insert(t);
                item.change_key = new_change_key();
                item.version = version;
                Ok(())
            }
        }
    }

    /// Singles, occurrences and exceptions overlapping `[from, to)` (masters
    /// left out), by start.
    pub(crate) fn calendar_view(
        &mut self,
        mailbox: &str,
        folder: InFolder<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Instance>, Refusal> {
        let mut out = Vec::new();
        let mut new_ids = Vec::new();
        for item in self.items.values().filter(|i| {
            i.mailbox.eq_ignore_ascii_case(mailbox) && folder.holds(i.folder.as_deref())
        }) {
            if item.recurrence.is_none() {
                let (s, e) = span(&item.fields);
                if s < to && e > from {
                    out.push(Instance {
                        id: item.id.clone(),
                        change_key: item.change_key.clone(),
                        kind: "Single",
                        master_id: None,
                        index: None,
                        original_start: None,
                        fields: item.fields.clone(),
                    });
                }
                continue;
            }
            let starts = occurrence_starts(item, Some(to), usize::MAX)?;
            for (n, t) in starts.iter().enumerate() {
                if item.deleted.contains(t) {
                    continue;
                }
                let index = u32::try_from(n + 1).unwrap_or(u32::MAX);
                let (id, ck, kind, fields) = match item.exceptions.get(t) {
                    Some(e) => (
                        e.id.clone(),
                        e.change_key.clone(),
                        "Exception",
                        e.fields.clone(),
                    ),
                    None => {
                        let id = occurrence_id(&item.id, *t);
                        new_ids.push((id.clone(), item.id.clone(), *t));
                        (
                            id,
                            item.change_key.clone(),
                            "Occurrence",
                            occurrence_fields(item, *t),
                        )
                    }
                };
                let (s, e) = span(&fields);
                if s < to && e > from {
                    out.push(Instance {
                        id,
                        change_key: ck,
                        kind,
                        master_id: Some(item.id.clone()),
                        index: Some(index),
                        original_start: DateTime::from_timestamp(*t, 0),
                        fields,
                    });
                }
            }
            // Exceptions moved into the window from outside the generated range.
            for (t, e) in &item.exceptions {
                if starts.contains(t) {
                    continue;
                }
                let (s, en) = span(&e.fields);
                if s < to && en > from {
                    out.push(Instance {
                        id: e.id.clone(),
                        change_key: e.change_key.clone(),
                        kind: "Exception",
                        master_id: Some(item.id.clone()),
                        index: None,
                        original_start: DateTime::from_timestamp(*t, 0),
                        fields: e.fields.clone(),
                    });
                }
            }
        }
        for (id, m, t) in new_ids {
            self.occurrence_ids.insert(id, (m, t));
        }
        out.sort_by_key(|i| (span(&i.fields).0, i.id.clone()));
        Ok(out)
    }
}

/// What an id in a request names.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Item(String),
    /// Master id and original start.
    Occurrence(String, i64),
}

/// A deterministic opaque id of an unmodified occurrence.
fn occurrence_id(master: &str, t: i64) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(format!("{master}\u{1f}{t}").as_bytes());
    B64.encode([b"AAMkOcc".as_slice(), &d[..24]].concat())
}

fn not_found() -> Refusal {
    Refusal::new(
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn merge(f: &mut Fields, set: Fields, delete: &[String]) {
    macro_rules! take {
        ($($n:ident),*) => { $( if set.$n.is_some() { f.$n = set.$n; } )* };
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
    f.extended.extend(set.extended);
    for d in delete {
        match d.as_str() {
            "item:Subject" => f.subject = None,
            "item:Body" => f.body = None,
            "calendar:Location" => f.location = None,
            "item:ReminderMinutesBeforeStart" => f.reminder_minutes = None,
            other => {
                f.extended.remove(other);
            }
        }
    }
}

fn span(f: &Fields) -> (DateTime<Utc>, DateTime<Utc>) {
    let s = f.start.unwrap_or_default();
    (s, f.end.unwrap_or(s))
}

fn validate(f: &Fields, rec: Option<&Recurrence>) -> Result<(), Refusal> {
    let (Some(s), Some(e)) = (f.start, f.end) else {
        return Err(Refusal::new(
            "ErrorInvalidRequest",
            "A calendar item needs Start and End.",
        ));
    };
    if e < s {
        return Err(Refusal::new(
            "ErrorCalendarEndDateIsEarlierThanStartDate",
            "EndDate is earlier than StartDate",
        ));
    }
    for tz in [&f.start_tz, &f.end_tz].into_iter().flatten() {
        if iana(tz).is_none() {
            return Err(Refusal::new(
                "ErrorCalendarInvalidTimeZone",
                format!("The time zone {tz:?} is not valid."),
            ));
        }
    }
    if f.is_all_day == Some(true) {
        let tz = f.start_tz.as_deref().and_then(iana).unwrap_or(Tz::UTC);
        let midnight = |t: DateTime<Utc>| t.with_timezone(&tz).time() == chrono::NaiveTime::MIN;
        if !midnight(s) || !midnight(e) {
            return Err(Refusal::new(
                "ErrorCalendarInvalidPropertyValue",
                "An all-day item must start and end at midnight in its time zone.",
            ));
        }
    }
    if let Some(r) = rec {
        if f.start_tz.is_none() {
            return Err(Refusal::new(
                "ErrorRecurrenceHasNoOccurrence",
                "A recurring item needs a StartTimeZone.",
            ));
        }
        rule_set(f, r)?;
    }
    Ok(())
}

fn weekday(day: &str) -> Result<&'static str, Refusal> {
    Ok(match day {
        "Sunday" => "SU",
        "Monday" => "MO",
        "Tuesday" => "TU",
        "Wednesday" => "WE",
        "Thursday" => "TH",
        "Friday" => "FR",
        "Saturday" => "SA",
        "Day" => "SU,MO,TU,WE,TH,FR,SA",
        "Weekday" => "MO,TU,WE,TH,FR",
        "WeekendDay" => "SA,SU",
        other => {
            return Err(Refusal::new(
                "ErrorCalendarInvalidRecurrence",
                format!("{other:?} is not a day of the week"),
            ));
        }
    })
}

fn setpos(index: &str) -> Result<i32, Refusal> {
    Ok(match index {
        "First" => 1,
        "Second" => 2,
        "Third" => 3,
        "Fourth" => 4,
        "Last" => -1,
        other => {
            return Err(Refusal::new(
                "ErrorCalendarInvalidRecurrence",
                format!("{other:?} is not a DayOfWeekIndex"),
            ));
        }
    })
}

pub(crate) fn month_number(m: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    MONTHS.iter().position(|x| *x == m).map(|i| i as u32 + 1)
}

/// A day of month as EWS means it: beyond the month's length it is the
/// month's last day (RFC 5545 would skip the month), so 29..31 become "the
/// last of 28..=d".
fn monthday(d: u32) -> String {
    if d <= 28 {
        format!("BYMONTHDAY={d}")
    } else {
        let days: Vec<String> = (28..=d).map(|x| x.to_string()).collect();
        format!("BYMONTHDAY={};BYSETPOS=-1", days.join(","))
    }
}

/// The recurrence as an `rrule` set in the start zone: DTSTART is the range's
/// start date at the item's local start time.
fn rule_set(f: &Fields, r: &Recurrence) -> Result<RRuleSet, Refusal> {
    let bad = |m: String| Refusal::new("ErrorCalendarInvalidRecurrence", m);
    let zone = f
        .start_tz
        .as_deref()
        .and_then(iana)
        .ok_or_else(|| bad("no valid StartTimeZone".into()))?;
    let start = f.start.ok_or_else(|| bad("no Start".into()))?;
    let local_time = start.with_timezone(&zone).time();
    let range_start = match &r.range {
        Range::NoEnd { start } | Range::EndDate { start, .. } | Range::Numbered { start, .. } => {
            *start
        }
    };
    let mut rule = match &r.pattern {
        Pattern::Daily { interval } => format!("FREQ=DAILY;INTERVAL={interval}"),
        Pattern::Weekly {
            interval,
            days,
            first_day,
        } => {
            let days: Result<Vec<_>, _> = days.iter().map(|d| weekday(d)).collect();
            let wkst = match first_day {
                Some(d) => format!(";WKST={}", weekday(d)?),
                None => String::new(),
            };
            format!(
                "FREQ=WEEKLY;INTERVAL={interval};BYDAY={}{wkst}",
                days?.join(",")
            )
        }
        Pattern::AbsoluteMonthly { interval, day } => {
            format!("FREQ=MONTHLY;INTERVAL={interval};{}", monthday(*day))
        }
        Pattern::RelativeMonthly {
            interval,
            day,
            index,
        } => format!(
            "FREQ=MONTHLY;INTERVAL={interval};BYDAY={};BYSETPOS={}",
            weekday(day)?,
            setpos(index)?
        ),
        Pattern::AbsoluteYearly { day, month } => format!(
            "FREQ=YEARLY;BYMONTH={};{}",
            month_number(month).ok_or_else(|| bad(format!("{month:?} is not a month")))?,
            monthday(*day)
        ),
        Pattern::RelativeYearly { day, index, month } => format!(
            "FREQ=YEARLY;BYMONTH={};BYDAY={};BYSETPOS={}",
            month_number(month).ok_or_else(|| bad(format!("{month:?} is not a month")))?,
            weekday(day)?,
            setpos(index)?
        ),
    };
    match &r.range {
        Range::NoEnd { .. } => {}
        Range::EndDate { end, .. } => {
            let last = NaiveDateTime::new(
                *end,
                chrono::NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default(),
            );
            let until = zone
                .from_local_datetime(&last)
                .latest()
                .ok_or_else(|| bad("EndDate has no local time".into()))?
                .with_timezone(&Utc);
            rule.push_str(&format!(";UNTIL={}", until.format("%Y%m%dT%H%M%SZ")));
        }
        Range::Numbered { count, .. } => rule.push_str(&format!(";COUNT={count}")),
    }
    let local = NaiveDateTime::new(range_start, local_time);
    let dt_start = rrule::Tz::Tz(zone)
        .from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            rrule::Tz::Tz(zone)
                .from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .ok_or_else(|| bad("the start has no local time".into()))?;
    RRuleSet::new(dt_start)
        .set_from_string(&format!("RRULE:{rule}"))
        .map_err(|e| bad(format!("recurrence: {e}")))
}

/// Original starts of a master's generated occurrences (deleted ones
/// included, so that indexes stay stable), up to `until` or `max`.
pub(crate) fn occurrence_starts(
    item: &StoredItem,
    until: Option<DateTime<Utc>>,
    max: usize,
) -> Result<Vec<i64>, Refusal> {
    let Some(r) = &item.recurrence else {
        return Ok(Vec::new());
    };
    let set = rule_set(&item.fields, r)?;
    let mut out = Vec::new();
    for (steps, dt) in set.into_iter().enumerate() {
        if steps >= MAX_STEPS || out.len() >= max {
            break;
        }
        let t = dt.with_timezone(&Utc);
        if until.is_some_and(|u| t >= u) {
            break;
        }
        out.push(t.timestamp());
    }
    Ok(out)
}

/// An unmodified occurrence's content: the master's at another start.
fn occurrence_fields(item: &StoredItem, t: i64) -> Fields {
    let mut f = item.fields.clone();
    let (s, e) = span(&item.fields);
    let start = DateTime::from_timestamp(t, 0).unwrap_or_default();
    f.start = Some(start);
    f.end = Some(start + (e - s));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn master(p: Pattern, range: Range, start: &str, end: &str, tz: &str) -> StoredItem {
        StoredItem {
            id: "m".into(),
            change_key: "ck".into(),
            mailbox: "a@x".into(),
            folder: None,
            fields: Fields {
                start: Some(at(start)),
                end: Some(at(end)),
                start_tz: Some(tz.into()),
                ..Fields::default()
            },
            recurrence: Some(Recurrence { pattern: p, range }),
            exceptions: BTreeMap::new(),
            deleted: BTreeSet::new(),
            version: 0,
            created: 0,
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn weekly_across_dst_keeps_local_time() {
        let m = master(
            Pattern::Weekly {
                interval: 1,
                days: vec!["Monday".into()],
                first_day: None,
            },
            Range::Numbered {
                start: d("2026-03-02"),
                count: 3,
            },
            "2026-03-02T14:00:00Z",
            "2026-03-02T15:00:00Z",
            "Eastern Standard Time",
        );
        let s = occurrence_starts(&m, None, 10).unwrap();
        // 09:00 EST, then 09:00 EDT after 8 March.
        assert_eq!(
            s,
            vec![
                at("2026-03-02T14:00:00Z").timestamp(),
                at("2026-03-09T13:00:00Z").timestamp(),
                at("2026-03-16T13:00:00Z").timestamp()
            ]
        );
    }

    #[test]
    fn day_of_month_beyond_the_month_is_its_last_day() {
        let m = master(
            Pattern::AbsoluteMonthly {
                interval: 1,
                day: 31,
            },
            Range::EndDate {
                start: d("2026-01-31"),
                end: d("2026-04-30"),
            },
            "2026-01-31T10:00:00Z",
            "2026-01-31T11:00:00Z",
            "UTC",
        );
        let s: Vec<String> = occurrence_starts(&m, None, 10)
            .unwrap()
            .into_iter()
            .map(|t| {
                DateTime::from_timestamp(t, 0)
                    .unwrap()
                    .date_naive()
                    .to_string()
            })
            .collect();
        assert_eq!(s, ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]);
    }

    #[test]
    fn relative_yearly_last_weekday() {
        let m = master(
            Pattern::RelativeYearly {
                day: "Sunday".into(),
                index: "Last".into(),
                month: "October".into(),
            },
            Range::Numbered {
                start: d("2026-01-01"),
                count: 2,
            },
            "2026-10-25T09:00:00Z",
            "2026-10-25T10:00:00Z",
            "W. Europe Standard Time",
        );
        let s = occurrence_starts(&m, None, 10).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            DateTime::from_timestamp(s[1], 0).unwrap().date_naive(),
            d("2027-10-31")
        );
        assert!(iana("China Standard Time").is_some() && iana("Nowhere").is_none());
    }
}
