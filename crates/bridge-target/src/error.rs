use std::time::Duration;

/// Why a target could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying later (throttling, 5xx, I/O), after `retry_after`
    /// when the target said so.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The whole target is paused (credentials revoked, daily quota): the
    /// item is not counted as failed and keeps no backoff; it is planned
    /// again once the target resumes.
    #[error("{0}")]
    Paused(String),
    /// The target holds something in the way that is not ours (an id taken
    /// by a foreign item): left alone, retried on the usual backoff.
    #[error("{0}")]
    Conflict(String),
    /// The target refuses this item as it is.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    /// A transient error without a retry time.
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient { .. } | SinkError::Paused(_))
    }

    pub fn is_paused(&self) -> bool {
        matches!(self, SinkError::Paused(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let t = SinkError::Transient {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(t.is_transient() && !t.is_paused());
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(t.to_string(), "429");
        let p = SinkError::Paused("revoked".into());
        assert!(p.is_transient() && p.is_paused() && p.retry_after().is_none());
        assert!(!SinkError::Conflict("taken".into()).is_transient());
        assert!(!SinkError::Permanent("bad".into()).is_transient());
    }
}
