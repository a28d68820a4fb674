//! Errors of the Google Calendar client (sinks-api.md A.9).

use std::time::Duration;

/// What went wrong talking to Google.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GoogleError {
    /// The refresh token or the service account grant was refused
    /// (`invalid_grant`): a human has to authorize again.
    #[error("token revoked or expired: run `feishu-bridge auth google` ({0})")]
    Revoked(String),
    /// 403 `quotaExceeded` / `dailyLimitExceeded` ("Calendar usage limits
    /// exceeded"): retrying now only makes it worse.
    #[error("Google Calendar daily quota exceeded; the Google sink pauses until it resets ({0})")]
    Quota(String),
    /// A final answer that retrying cannot change (400, 401 after a fresh
    /// token, 403 other than rate limits, 404, 409, 410, 412, …); also a
    /// transient answer when it is reported as is (`retry_after` set).
    #[error("Google API {status} {reason}: {message}")]
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    /// Transport failures, 5xx, 429 or rate-limit 403s that outlasted every
    /// retry.
    #[error("Google API unavailable after retries: {0}")]
    Unavailable(String),
    /// An answer that could not be understood.
    #[error("invalid Google response: {0}")]
    Decode(String),
    /// Bad client configuration (URLs, keys, credentials the server refuses
    /// as a client).
    #[error("Google configuration: {0}")]
    Config(String),
}

/// `reason`s of 403 answers that mean "slow down" (retry with backoff).
pub(crate) const RATE_LIMIT_REASONS: &[&str] = &["rateLimitExceeded", "userRateLimitExceeded"];
/// `reason`s of 403 answers that mean "stop for the day".
pub(crate) const QUOTA_REASONS: &[&str] = &["quotaExceeded", "dailyLimitExceeded"];

impl GoogleError {
    /// The HTTP status of an API answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `error.errors[0].reason` of an API answer.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Api { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// A 429, a 5xx or a rate-limit 403: the same request may succeed
    /// later. (`Unavailable` is not: its retries are already spent.)
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, reason, .. } => is_transient_answer(*status, reason),
            _ => false,
        }
    }

    /// How long to wait before trying again: for transient answers the
    /// first backoff step (1 s); `None` otherwise.
    pub fn retry_after(&self) -> Option<Duration> {
        self.is_transient().then_some(Duration::from_secs(1))
    }
}

/// 429, 5xx, or 403 with a rate-limit reason.
pub(crate) fn is_transient_answer(status: u16, reason: &str) -> bool {
    status == 429 || (500..=599).contains(&status) || (status == 403 && is_rate_limit(reason))
}

pub(crate) fn is_rate_limit(reason: &str) -> bool {
    RATE_LIMIT_REASONS.contains(&reason)
}

pub(crate) fn is_quota(reason: &str) -> bool {
    QUOTA_REASONS.contains(&reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, reason: &str) -> GoogleError {
        GoogleError::Api {
            status,
            reason: reason.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn classification() {
        assert!(api(429, "rateLimitExceeded").is_transient());
        assert!(api(503, "backendError").is_transient());
        assert!(api(403, "userRateLimitExceeded").is_transient());
        assert!(!api(403, "quotaExceeded").is_transient());
        assert!(!api(403, "forbiddenForNonOrganizer").is_transient());
        assert!(!api(409, "duplicate").is_transient());
        assert_eq!(api(409, "duplicate").status(), Some(409));
        assert_eq!(
            api(412, "conditionNotMet").reason(),
            Some("conditionNotMet")
        );
        assert_eq!(GoogleError::Quota("x".into()).status(), None);
        assert!(
            GoogleError::Revoked("invalid_grant".into())
                .to_string()
                .starts_with("token revoked or expired: run `feishu-bridge auth google`")
        );
    }
}
