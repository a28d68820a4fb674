//! A named calendar folder under the mailbox's calendar (`folder = "Name"`):
//! found with `FindFolder` (Shallow, restricted on `folder:DisplayName`),
//! created with `CreateFolder` (a `CalendarFolder` of class
//! `IPF.Appointment`) when `create_folder = true`.

use super::client::{EwsClient, EwsError, messages};
use super::xml::esc;

/// The mailbox's calendar as a folder id (`DistinguishedFolderId`; it names
/// the mailbox unless impersonation already does).
pub fn calendar_xml(mailbox: &str, impersonation: bool) -> String {
    if impersonation {
        "<t:DistinguishedFolderId Id=\"calendar\"/>".to_owned()
    } else {
        format!(
            "<t:DistinguishedFolderId Id=\"calendar\"><t:Mailbox><t:EmailAddress>{}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>",
            esc(mailbox)
        )
    }
}

/// A folder by id.
pub fn folder_id_xml(id: &str) -> String {
    format!("<t:FolderId Id=\"{}\"/>", esc(id))
}

fn one_message(op: &str, answer: &super::xml::El) -> Result<super::xml::El, EwsError> {
    let m = messages(answer)
        .into_iter()
        .next()
        .ok_or_else(|| EwsError::Decode(format!("{op} answered no message")))?;
    if !m.ok() {
        return Err(EwsError::Fault {
            code: m.code,
            message: m.message,
        });
    }
    Ok(m.element)
}

/// The id of the calendar folder named `name` directly under the
/// mailbox's calendar, if there is one (names compare case-insensitively,
/// as Exchange does).
pub async fn find(
    client: &EwsClient,
    impersonation: bool,
    name: &str,
) -> Result<Option<String>, EwsError> {
    let body = format!(
        "<m:FindFolder Traversal=\"Shallow\"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI=\"folder:DisplayName\"/></t:AdditionalProperties></m:FolderShape><m:Restriction><t:IsEqualTo><t:FieldURI FieldURI=\"folder:DisplayName\"/><t:FieldURIOrConstant><t:Constant Value=\"{}\"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction><m:ParentFolderIds>{}</m:ParentFolderIds></m:FindFolder>",
        esc(name),
        calendar_xml(client.mailbox(), impersonation)
    );
    let answer = client.call("FindFolder", &body).await?;
    let el = one_message("FindFolder", &answer)?;
    let folders = el
        .path(&["RootFolder", "Folders"])
        .map(|f| f.children.as_slice())
        .unwrap_or_default();
    Ok(folders
        .iter()
        .filter(|f| {
            f.text_of("DisplayName")
                .is_none_or(|n| n.eq_ignore_ascii_case(name))
        })
        .find_map(|f| f.child("FolderId")?.attr("Id").map(str::to_owned)))
}

/// Creates the calendar folder `name` under the mailbox's calendar; its id.
pub async fn create(
    client: &EwsClient,
    impersonation: bool,
    name: &str,
) -> Result<String, EwsError> {
    let body = format!(
        "<m:CreateFolder><m:ParentFolderId>{}</m:ParentFolderId><m:Folders><t:CalendarFolder><t:FolderClass>IPF.Appointment</t:FolderClass><t:DisplayName>{}</t:DisplayName></t:CalendarFolder></m:Folders></m:CreateFolder>",
        calendar_xml(client.mailbox(), impersonation),
        esc(name)
    );
    let answer = client.call("CreateFolder", &body).await?;
    let el = one_message("CreateFolder", &answer)?;
    el.path(&["Folders", "CalendarFolder", "FolderId"])
        .and_then(|f| f.attr("Id"))
        .map(str::to_owned)
        .ok_or_else(|| EwsError::Decode("CreateFolder answered no FolderId".into()))
}
