//! A small element tree over `quick-xml` (the requests are a few KB; a tree
//! makes the schema-order check and the operations straightforward), the
//! schema-order check of the request elements this server accepts, and the
//! writing helpers of its answers.
//!
//! The order tables are the XSD `sequence`s of Microsoft's `types.xsd` /
//! `messages.xsd` (Exchange2013_SP1 and later, as vendored under
//! `tests/ews-schema/`) for the elements a calendar client sends. An element
//! that is unknown where it appears, or that comes before a sibling it must
//! follow, is refused like Exchange refuses it: `ErrorSchemaValidation`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

pub(crate) const SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(crate) const M: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
pub(crate) const T: &str = "http://schemas.microsoft.com/exchange/services/2006/types";

/// One element: namespace, local name, attributes (by local name), children
/// and its text.
#[derive(Debug, Clone, Default)]
pub(crate) struct El {
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) attrs: BTreeMap<String, String>,
    pub(crate) children: Vec<El>,
    pub(crate) text: String,
    /// 1-based line of the start tag (for `ErrorSchemaValidation` details).
    pub(crate) line: usize,
}

impl El {
    pub(crate) fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    pub(crate) fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Follows a path of child names.
    pub(crate) fn path(&self, names: &[&str]) -> Option<&El> {
        names.iter().try_fold(self, |e, n| e.child(n))
    }
}

/// Parses a document into its root element.
pub(crate) fn parse(text: &str) -> Result<El, String> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<El> = Vec::new();
    loop {
        let pos = usize::try_from(reader.buffer_position()).unwrap_or(0);
        let line = text[..pos.min(text.len())].matches('\n').count() + 1;
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| format!("line {line}: {e}"))?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                return Err(format!(
                    "line {line}: unknown namespace prefix {:?}",
                    String::from_utf8_lossy(&p)
                ));
            }
        };
        match ev {
            Event::Start(s) => stack.push(element(&reader, &s, ns, line)?),
            Event::Empty(s) => {
                let el = element(&reader, &s, ns, line)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.xml_content().map_err(|e| e.to_string())?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => match r.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("line {line}: unknown entity &{other};")),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push(c);
                }
            }
            Event::Eof => return Err("the document ends before its root element closes".into()),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
}

fn element(
    reader: &NsReader<&[u8]>,
    s: &quick_xml::events::BytesStart<'_>,
    ns: String,
    line: usize,
) -> Result<El, String> {
    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
    let mut attrs = BTreeMap::new();
    for a in s.attributes() {
        let a = a.map_err(|e| format!("line {line}: {e}"))?;
        let key = a.key;
        if key.as_ref().starts_with(b"xmlns") {
            continue;
        }
        let (_, local) = reader.resolve_attribute(key);
        let v = a
            .unescape_value()
            .map_err(|e| format!("line {line}: {e}"))?
            .into_owned();
        attrs.insert(String::from_utf8_lossy(local.as_ref()).into_owned(), v);
    }
    Ok(El {
        ns,
        name,
        attrs,
        line,
        ..El::default()
    })
}

/// What a children rule allows.
pub(super) enum Rule {
    /// In this order (names in the types namespace unless prefixed `m:`).
    Seq(&'static [&'static str]),
    /// Any of these, any number, any order (XSD `choice` repeated).
    Any(&'static [&'static str]),
    /// Text only.
    Text,
    /// Not checked below this element (server-side parts a client never
    /// sends in this project, e.g. time-zone periods).
    Open,
}

const ITEM: &[&str] = &[
    "MimeContent",
    "ItemId",
    "ParentFolderId",
    "ItemClass",
    "Subject",
    "Sensitivity",
    "Body",
    "Attachments",
    "DateTimeReceived",
    "Size",
    "Categories",
    "Importance",
    "InReplyTo",
    "IsSubmitted",
    "IsDraft",
    "IsFromMe",
    "IsResend",
    "IsUnmodified",
    "InternetMessageHeaders",
    "DateTimeSent",
    "DateTimeCreated",
    "ResponseObjects",
    "ReminderDueBy",
    "ReminderIsSet",
    "ReminderNextTime",
    "ReminderMinutesBeforeStart",
    "DisplayCc",
    "DisplayTo",
    "DisplayBcc",
    "HasAttachments",
    "ExtendedProperty",
    "Culture",
    "EffectiveRights",
    "LastModifiedName",
    "LastModifiedTime",
    "IsAssociated",
    "WebClientReadFormQueryString",
    "WebClientEditFormQueryString",
    "ConversationId",
    "UniqueBody",
    // CalendarItemType's extension follows ItemType's sequence.
    "UID",
    "RecurrenceId",
    "DateTimeStamp",
    "Start",
    "End",
    "OriginalStart",
    "IsAllDayEvent",
    "LegacyFreeBusyStatus",
    "Location",
    "When",
    "IsMeeting",
    "IsCancelled",
    "IsRecurring",
    "MeetingRequestWasSent",
    "IsResponseRequested",
    "CalendarItemType",
    "MyResponseType",
    "Organizer",
    "RequiredAttendees",
    "OptionalAttendees",
    "Resources",
    "InboxReminders",
    "ConflictingMeetingCount",
    "AdjacentMeetingCount",
    "ConflictingMeetings",
    "AdjacentMeetings",
    "Duration",
    "TimeZone",
    "AppointmentReplyTime",
    "AppointmentSequenceNumber",
    "AppointmentState",
    "Recurrence",
    "FirstOccurrence",
    "LastOccurrence",
    "ModifiedOccurrences",
    "DeletedOccurrences",
    "MeetingTimeZone",
    "StartTimeZone",
    "EndTimeZone",
    "ConferenceType",
    "AllowNewTimeProposal",
    "IsOnlineMeeting",
    "MeetingWorkspaceUrl",
    "NetShowUrl",
];

const PATHS: &[&str] = &["FieldURI", "IndexedFieldURI", "ExtendedFieldURI"];
const SEARCH: &[&str] = &[
    "Exists",
    "IsEqualTo",
    "IsNotEqualTo",
    "Contains",
    "And",
    "Or",
    "Not",
];
const ITEM_IDS: &[&str] = &["ItemId", "OccurrenceItemId", "RecurringMasterItemId"];
const FOLDER_IDS: &[&str] = &["FolderId", "DistinguishedFolderId"];
const ELEMENTS_WITH_TEXT: &[&str] = &[
    "Subject",
    "Sensitivity",
    "Body",
    "ReminderIsSet",
    "ReminderMinutesBeforeStart",
    "UID",
    "Start",
    "End",
    "IsAllDayEvent",
    "LegacyFreeBusyStatus",
    "Location",
    "Value",
    "BaseShape",
    "IncludeMimeContent",
    "BodyType",
    "Interval",
    "DaysOfWeek",
    "FirstDayOfWeek",
    "DayOfMonth",
    "DayOfWeekIndex",
    "Month",
    "StartDate",
    "EndDate",
    "NumberOfOccurrences",
    "SyncState",
    "MaxChangesReturned",
    "SyncScope",
    "EmailAddress",
    "PrincipalName",
    "SID",
    "PrimarySmtpAddress",
    "SmtpAddress",
    "Name",
    "RoutingType",
    "MailboxType",
    "Categories",
    "String",
    "FolderClass",
    "DisplayName",
];

fn rule(parent: &str, name: &str) -> Option<Rule> {
    use Rule::{Any, Open, Seq, Text};
    Some(match name {
        "Envelope" => Seq(&["s:Header", "s:Body"]),
        "Header" if parent == "Envelope" => Any(&[
            "RequestServerVersion",
            "ExchangeImpersonation",
            "TimeZoneContext",
            "MailboxCulture",
            "DateTimePrecision",
            "ManagementRole",
        ]),
        "Body" if parent == "Envelope" => Any(&[
            "m:CreateItem",
            "m:UpdateItem",
            "m:DeleteItem",
            "m:GetItem",
            "m:FindItem",
            "m:SyncFolderItems",
            "m:GetFolder",
            "m:CreateFolder",
            "m:FindFolder",
            "m:GetUserAvailabilityRequest",
        ]),
        "RequestServerVersion" => Seq(&[]),
        "ExchangeImpersonation" => Seq(&["ConnectingSID"]),
        "ConnectingSID" => Any(&["PrincipalName", "SID", "PrimarySmtpAddress", "SmtpAddress"]),
        "TimeZoneContext" => Seq(&["TimeZoneDefinition"]),
        "TimeZoneDefinition" | "StartTimeZone" | "EndTimeZone" => Open,
        "CreateItem" => Seq(&["m:SavedItemFolderId", "m:Items"]),
        "UpdateItem" => Seq(&["m:SavedItemFolderId", "m:ItemChanges"]),
        "DeleteItem" => Seq(&["m:ItemIds"]),
        "GetItem" => Seq(&["m:ItemShape", "m:ItemIds"]),
        "FindItem" => Seq(&[
            "m:ItemShape",
            "m:IndexedPageItemView",
            "m:CalendarView",
            "m:Restriction",
            "m:SortOrder",
            "m:ParentFolderIds",
        ]),
        "SyncFolderItems" => Seq(&[
            "m:ItemShape",
            "m:SyncFolderId",
            "m:SyncState",
            "m:Ignore",
            "m:MaxChangesReturned",
            "m:SyncScope",
        ]),
        "GetFolder" => Seq(&["m:FolderShape", "m:FolderIds"]),
        "CreateFolder" => Seq(&["m:ParentFolderId", "m:Folders"]),
        "FindFolder" => Seq(&[
            "m:FolderShape",
            "m:IndexedPageFolderView",
            "m:FractionalPageFolderView",
            "m:Restriction",
            "m:ParentFolderIds",
        ]),
        "ParentFolderId" if parent == "CreateFolder" => Any(FOLDER_IDS),
        "Folders" => Any(&["CalendarFolder"]),
        // BaseFolderType's sequence, then CalendarFolderType's extension.
        "CalendarFolder" => Seq(&[
            "FolderId",
            "ParentFolderId",
            "FolderClass",
            "DisplayName",
            "TotalCount",
            "ChildFolderCount",
            "ExtendedProperty",
            "ManagedFolderInformation",
            "EffectiveRights",
            "DistinguishedFolderId",
            "PolicyTag",
            "ArchiveTag",
            "ReplicaList",
            "SharingEffectiveRights",
            "PermissionSet",
        ]),
        "IndexedPageFolderView" | "FractionalPageFolderView" => Seq(&[]),
        "FolderShape" => Seq(&["BaseShape", "AdditionalProperties"]),
        "FolderIds" | "SavedItemFolderId" | "ParentFolderIds" | "SyncFolderId" => Any(FOLDER_IDS),
        "DistinguishedFolderId" => Seq(&["Mailbox"]),
        "FolderId" => Seq(&[]),
        "Mailbox" => Seq(&[
            "Name",
            "EmailAddress",
            "RoutingType",
            "MailboxType",
            "ItemId",
        ]),
        "Items" => Any(&["CalendarItem"]),
        "CalendarItem" => Seq(ITEM),
        "Body"
        | "Subject"
        | "Sensitivity"
        | "ReminderIsSet"
        | "ReminderMinutesBeforeStart"
        | "UID"
        | "Start"
        | "End"
        | "IsAllDayEvent"
        | "LegacyFreeBusyStatus"
        | "Location"
        | "Value"
        | "BaseShape"
        | "IncludeMimeContent"
        | "BodyType"
        | "Interval"
        | "DaysOfWeek"
        | "FirstDayOfWeek"
        | "DayOfMonth"
        | "DayOfWeekIndex"
        | "Month"
        | "StartDate"
        | "EndDate"
        | "NumberOfOccurrences"
        | "SyncState"
        | "MaxChangesReturned"
        | "SyncScope"
        | "EmailAddress"
        | "PrincipalName"
        | "SID"
        | "PrimarySmtpAddress"
        | "SmtpAddress"
        | "Name"
        | "RoutingType"
        | "MailboxType"
        | "FolderClass"
        | "DisplayName"
        | "String" => Text,
        "Categories" => Any(&["String"]),
        "ExtendedProperty" => Seq(&["ExtendedFieldURI", "Value", "Values"]),
        "Values" => Any(&["Value"]),
        "ExtendedFieldURI"
        | "FieldURI"
        | "IndexedFieldURI"
        | "ItemId"
        | "OccurrenceItemId"
        | "RecurringMasterItemId"
        | "IndexedPageItemView"
        | "CalendarView" => Seq(&[]),
        "Recurrence" => Seq(&[
            "RelativeYearlyRecurrence",
            "AbsoluteYearlyRecurrence",
            "RelativeMonthlyRecurrence",
            "AbsoluteMonthlyRecurrence",
            "WeeklyRecurrence",
            "DailyRecurrence",
            "NoEndRecurrence",
            "EndDateRecurrence",
            "NumberedRecurrence",
        ]),
        "DailyRecurrence" => Seq(&["Interval"]),
        "WeeklyRecurrence" => Seq(&["Interval", "DaysOfWeek", "FirstDayOfWeek"]),
        "AbsoluteMonthlyRecurrence" => Seq(&["Interval", "DayOfMonth"]),
        "RelativeMonthlyRecurrence" => Seq(&["Interval", "DaysOfWeek", "DayOfWeekIndex"]),
        "AbsoluteYearlyRecurrence" => Seq(&["DayOfMonth", "Month"]),
        "RelativeYearlyRecurrence" => Seq(&["DaysOfWeek", "DayOfWeekIndex", "Month"]),
        "NoEndRecurrence" => Seq(&["StartDate"]),
        "EndDateRecurrence" => Seq(&["StartDate", "EndDate"]),
        "NumberedRecurrence" => Seq(&["StartDate", "NumberOfOccurrences"]),
        "ItemChanges" => Any(&["ItemChange"]),
        "ItemChange" => Seq(&[
            "ItemId",
            "OccurrenceItemId",
            "RecurringMasterItemId",
            "Updates",
        ]),
        "Updates" => Any(&["SetItemField", "AppendToItemField", "DeleteItemField"]),
        "SetItemField" | "AppendToItemField" => Seq(&[
            "FieldURI",
            "IndexedFieldURI",
            "ExtendedFieldURI",
            "CalendarItem",
        ]),
        "DeleteItemField" => Seq(PATHS),
        "ItemIds" => Any(ITEM_IDS),
        "ItemShape" => Seq(&[
            "BaseShape",
            "IncludeMimeContent",
            "BodyType",
            "AdditionalProperties",
        ]),
        "AdditionalProperties" => Any(PATHS),
        "Restriction" | "Not" => Seq(SEARCH),
        "And" | "Or" => Any(SEARCH),
        "Exists" => Seq(PATHS),
        "IsEqualTo" | "IsNotEqualTo" => Seq(&[
            "FieldURI",
            "IndexedFieldURI",
            "ExtendedFieldURI",
            "FieldURIOrConstant",
        ]),
        "Contains" => Seq(&[
            "FieldURI",
            "IndexedFieldURI",
            "ExtendedFieldURI",
            "Constant",
        ]),
        "FieldURIOrConstant" => Any(&["Constant", "FieldURI", "ExtendedFieldURI"]),
        "Constant" => Seq(&[]),
        "Ignore" => Any(&["ItemId"]),
        _ => return super::availability::rule(parent, name),
    })
}

/// Where a document breaks the schema: `(line, violation)`.
pub(crate) fn check_order(root: &El) -> Result<(), (usize, String)> {
    if root.ns != SOAP || root.name != "Envelope" {
        return Err((
            root.line,
            format!(
                "The root element '{{{}}}{}' is not a SOAP 1.1 Envelope.",
                root.ns, root.name
            ),
        ));
    }
    check(root, "")
}

fn qualify(entry: &str) -> (&str, &str) {
    if let Some(n) = entry.strip_prefix("m:") {
        (M, n)
    } else if let Some(n) = entry.strip_prefix("s:") {
        (SOAP, n)
    } else {
        (T, entry)
    }
}

fn check(el: &El, parent: &str) -> Result<(), (usize, String)> {
    let here = format!("{{{}}}{}", el.ns, el.name);
    let Some(r) = rule(parent, &el.name) else {
        return Err((el.line, format!("The element '{here}' is not expected.")));
    };
    match r {
        Rule::Open => return Ok(()),
        Rule::Text => {
            if let Some(c) = el.children.first() {
                return Err((
                    c.line,
                    format!(
                        "The element '{here}' cannot contain child element '{{{}}}{}' because the parent element's content model is text only.",
                        c.ns, c.name
                    ),
                ));
            }
            return Ok(());
        }
        Rule::Seq(order) | Rule::Any(order) => {
            let ordered = matches!(r, Rule::Seq(_));
            let mut last = 0usize;
            let mut seen_last = false;
            for c in &el.children {
                let idx = order.iter().position(|entry| {
                    let (ns, name) = qualify(entry);
                    c.ns == ns && c.name == name
                });
                let Some(idx) = idx else {
                    return Err((
                        c.line,
                        format!(
                            "The element '{here}' has invalid child element '{{{}}}{}'.",
                            c.ns, c.name
                        ),
                    ));
                };
                // ExtendedProperty repeats; everything else appears once.
                let repeat_ok = !ordered || (idx == last && c.name == "ExtendedProperty");
                if ordered && seen_last && (idx < last || (idx == last && !repeat_ok)) {
                    return Err((
                        c.line,
                        format!(
                            "The element '{here}' has invalid child element '{{{}}}{}'. List of possible elements expected: '{}'.",
                            c.ns,
                            c.name,
                            order[last + 1..].join(", ")
                        ),
                    ));
                }
                last = idx;
                seen_last = true;
                check(c, &el.name)?;
            }
        }
    }
    if !ELEMENTS_WITH_TEXT.contains(&el.name.as_str()) && !el.text.trim().is_empty() {
        return Err((
            el.line,
            format!("The element '{here}' cannot contain text."),
        ));
    }
    Ok(())
}

/// `s` escaped for element content and attribute values.
pub(crate) fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// `<t:name>text</t:name>` appended to `out`.
pub(crate) fn leaf(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", esc(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> String {
        format!(
            r#"<?xml version="1.0"?><s:Envelope xmlns:s="{SOAP}" xmlns:m="{M}" xmlns:t="{T}"><s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header><s:Body>{body}</s:Body></s:Envelope>"#
        )
    }

    #[test]
    fn accepts_schema_order_and_refuses_swaps_and_strangers() {
        let ok = doc(
            r#"<m:CreateItem SendMeetingInvitations="SendToNone"><m:Items><t:CalendarItem><t:Subject>a &amp; b</t:Subject><t:Start>2026-01-01T00:00:00Z</t:Start><t:End>2026-01-01T01:00:00Z</t:End><t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus><t:Location>x</t:Location></t:CalendarItem></m:Items></m:CreateItem>"#,
        );
        let root = parse(&ok).unwrap();
        assert!(check_order(&root).is_ok());
        let subject = root
            .path(&["Body", "CreateItem", "Items", "CalendarItem", "Subject"])
            .unwrap();
        assert_eq!(subject.text, "a & b");
        let swapped = ok.replace(
            "<t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus><t:Location>x</t:Location>",
            "<t:Location>x</t:Location><t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus>",
        );
        let e = check_order(&parse(&swapped).unwrap()).unwrap_err();
        assert!(e.1.contains("LegacyFreeBusyStatus"), "{e:?}");
        let twice = ok.replace(
            "<t:Location>x</t:Location>",
            "<t:Location>x</t:Location><t:Location>y</t:Location>",
        );
        assert!(check_order(&parse(&twice).unwrap()).is_err());
        let stranger = ok.replace("m:CreateItem", "m:CreateItems");
        assert!(check_order(&parse(&stranger).unwrap()).is_err());
        assert!(parse("<a><b></a>").is_err());
    }
}
