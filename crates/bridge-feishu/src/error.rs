//! The error of every Feishu call: the Feishu `code` and `msg`, the HTTP
//! status and the `X-Tt-Logid` to quote to Feishu support.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Codes meaning "the tenant / app token is invalid or expired": drop it, fetch
/// a new one and retry once.
pub const TENANT_TOKEN_INVALID: [i64; 3] = [99_991_663, 99_991_664, 99_991_671];
/// Codes meaning "the user access token is invalid or expired": refresh it.
pub const USER_TOKEN_INVALID: [i64; 2] = [99_991_668, 99_991_677];
/// Refresh-token codes that need a new authorization by the user.
pub const REAUTH_CODES: [i64; 4] = [20_037, 20_064, 20_073, 20_026];
/// Throttling codes (HTTP 429).
pub const RATE_LIMITED: [i64; 4] = [99_991_400, 190_004, 190_005, 190_010];
/// page_token or sync_token expired: clear it and list in full.
pub const CURSOR_EXPIRED: i64 = 190_008;
/// Server-side codes worth retrying.
const TRANSIENT_CODES: [i64; 4] = [190_003, 20_050, 20_072, 1];

/// Everything that can go wrong talking to Feishu.
#[derive(Debug, thiserror::Error)]
pub enum FeishuError {
    /// Feishu answered with a non-zero `code`.
    #[error("Feishu {endpoint}: code {code}: {msg} (HTTP {status}{})", fmt_logid(.log_id))]
    Api {
        endpoint: String,
        code: i64,
        msg: String,
        status: u16,
        log_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// Code 190008: the page_token or sync_token expired; a full listing is needed.
    #[error(
        "Feishu {endpoint}: page_token or sync_token expired (code 190008); a full listing is needed"
    )]
    CursorExpired {
        endpoint: String,
        log_id: Option<String>,
    },
    /// The user's refresh token can no longer be used.
    #[error(
        "Feishu user authorization is no longer valid (code {code}: {msg}); run `feishu-bridge auth feishu` again"
    )]
    ReauthRequired { code: i64, msg: String },
    /// No user token is stored yet.
    #[error("no Feishu user token is stored; run `feishu-bridge auth feishu` first")]
    NotAuthorized,
    /// A non-JSON answer with an HTTP error status.
    #[error("Feishu {endpoint}: HTTP {status}{}: {body}", fmt_logid(.log_id))]
    Http {
        endpoint: String,
        status: u16,
        body: String,
        log_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// Connection failure or timeout.
    #[error("Feishu {endpoint}: {detail}")]
    Transport {
        endpoint: String,
        detail: String,
        timeout: bool,
    },
    /// An answer that is not the documented JSON (for example a truncated page).
    #[error("Feishu {endpoint}: answer is not valid JSON (HTTP {status}{}): {detail}", fmt_logid(.log_id))]
    Decode {
        endpoint: String,
        status: u16,
        detail: String,
        log_id: Option<String>,
    },
    /// Reading or writing the user token store failed.
    #[error("token store: {0}")]
    TokenStore(String),
    /// A local mistake: bad base URL, bad argument.
    #[error("{0}")]
    Config(String),
}

/// A connection failure or timeout of `endpoint`, with reqwest's causes.
pub(crate) fn transport_error(endpoint: &str, e: &reqwest::Error) -> FeishuError {
    FeishuError::Transport {
        endpoint: endpoint.to_owned(),
        detail: bridge_http::error_chain(e),
        timeout: e.is_timeout(),
    }
}

/// The `X-Tt-Logid` (or `X-Request-Id`) of an answer.
pub(crate) fn log_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-tt-logid")
        .or_else(|| headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn fmt_logid(log_id: &Option<String>) -> String {
    match log_id {
        Some(id) => format!(", log id {id}"),
        None => String::new(),
    }
}

impl FeishuError {
    /// The Feishu `code`, when the server sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            FeishuError::Api { code, .. } | FeishuError::ReauthRequired { code, .. } => Some(*code),
            FeishuError::CursorExpired { .. } => Some(CURSOR_EXPIRED),
            _ => None,
        }
    }

    /// The `X-Tt-Logid` of the failed call.
    pub fn log_id(&self) -> Option<&str> {
        match self {
            FeishuError::Api { log_id, .. }
            | FeishuError::CursorExpired { log_id, .. }
            | FeishuError::Http { log_id, .. }
            | FeishuError::Decode { log_id, .. } => log_id.as_deref(),
            _ => None,
        }
    }

    /// Whether the same call may succeed later: throttling, 5xx, timeouts,
    /// connection errors, truncated answers.
    pub fn is_transient(&self) -> bool {
        match self {
            FeishuError::Api { code, status, .. } => {
                RATE_LIMITED.contains(code) || TRANSIENT_CODES.contains(code) || *status >= 500
            }
            FeishuError::Http { status, .. } => *status == 429 || *status >= 500,
            FeishuError::Transport { .. } | FeishuError::Decode { .. } => true,
            _ => false,
        }
    }

    /// Whether this is a throttling answer.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            FeishuError::Api { code, status, .. } => RATE_LIMITED.contains(code) || *status == 429,
            FeishuError::Http { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// How long the server asked us to wait (`x-ogw-ratelimit-reset`, `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FeishuError::Api { retry_after, .. } | FeishuError::Http { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64, status: u16) -> FeishuError {
        FeishuError::Api {
            endpoint: "GET /open-apis/calendar/v4/calendars".into(),
            code,
            msg: "m".into(),
            status,
            log_id: Some("202501010000".into()),
            retry_after: Some(Duration::from_secs(2)),
        }
    }

    #[test]
    fn classification() {
        assert!(api(99_991_400, 429).is_transient());
        assert!(api(99_991_400, 429).is_rate_limited());
        assert!(api(190_003, 500).is_transient());
        assert!(!api(191_002, 403).is_transient());
        assert_eq!(
            api(190_005, 429).retry_after(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(api(7, 400).log_id(), Some("202501010000"));
        let shown = api(191_000, 404).to_string();
        assert!(
            shown.contains("code 191000") && shown.contains("log id 202501010000"),
            "{shown}"
        );
        let reauth = FeishuError::ReauthRequired {
            code: 20_073,
            msg: "used".into(),
        };
        assert!(
            reauth
                .to_string()
                .contains("run `feishu-bridge auth feishu` again")
        );
        assert!(!reauth.is_transient());
    }
}
