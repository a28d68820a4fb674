use std::time::Duration;

/// Why a Graph call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The configuration cannot work (a bad URL, an unreadable key).
    #[error("configuration: {0}")]
    Config(String),
    /// The identity platform refused the app's credentials
    /// (`invalid_client`, `AADSTS7000215`, ...): the sink pauses.
    #[error("{0}")]
    Credentials(String),
    /// The mailbox cannot be used through Graph
    /// (`MailboxNotEnabledForRESTAPI`, `ErrorAccessDenied`): the sink pauses.
    #[error("{0}")]
    Mailbox(String),
    /// An API error answer.
    #[error("Graph answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server could not be reached or the answer was cut.
    #[error("Graph unreachable: {0}")]
    Transport(String),
    /// An answer we could not read.
    #[error("unreadable Graph answer: {0}")]
    Decode(String),
}

impl GraphError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Worth trying again later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Self::Transport(_) => true,
            _ => false,
        }
    }

    /// Pauses the whole sink.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Credentials(_) | Self::Mailbox(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The sink-level meaning of an API error answer: the mailbox errors that
/// pause the sink say what to fix.
pub(crate) fn classify(
    status: u16,
    code: &str,
    message: &str,
    mailbox: &str,
    retry_after: Option<Duration>,
) -> GraphError {
    match code {
        "MailboxNotEnabledForRESTAPI" => GraphError::Mailbox(format!(
            "mailbox {mailbox} cannot be used through Microsoft Graph ({code}: {message}): it is on premises, unlicensed, inactive or a guest; give it an Exchange Online licence, or use the EWS sink for an on-premises mailbox"
        )),
        "ErrorAccessDenied" | "Authorization_RequestDenied" | "ErrorInvalidUser"
            if status == 403 || status == 404 =>
        {
            GraphError::Mailbox(format!(
                "mailbox {mailbox} is not accessible ({code}: {message}): grant the app the Calendars.ReadWrite application permission with admin consent, and include the mailbox in the app's application access policy / RBAC scope (or check the mailbox address)"
            ))
        }
        _ => GraphError::Api {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_errors_pause_and_say_what_to_fix() {
        let e = classify(
            404,
            "MailboxNotEnabledForRESTAPI",
            "REST API is not yet supported for this mailbox.",
            "a@b.c",
            None,
        );
        assert!(e.is_fatal() && e.to_string().contains("EWS sink"));
        let e = classify(403, "ErrorAccessDenied", "Access is denied.", "a@b.c", None);
        assert!(e.is_fatal() && e.to_string().contains("application access policy"));
        let e = classify(
            429,
            "ApplicationThrottled",
            "over",
            "a@b.c",
            Some(Duration::from_secs(2)),
        );
        assert!(e.is_transient() && !e.is_fatal());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert!(!classify(404, "ErrorItemNotFound", "gone", "m", None).is_fatal());
    }
}
