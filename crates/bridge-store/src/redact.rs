//! Redaction of error texts before they are stored.
//!
//! Errors from Feishu, Google or Exchange sometimes echo what was sent:
//! headers, query strings, token responses. A stored failure is shown by
//! `status` and `explain`, so secrets are cut out first. Four passes, each
//! replacing the secret with `<redacted>`:
//!
//! 1. `key: value` / `key=value` / `"key": "value"` where the key contains
//!    `token`, `secret`, `password`, `passwd`, `authorization`, `api_key`,
//!    `apikey`, `encrypt_key`, `ticket`, `credential` or `cookie`
//!    (case-insensitive, so `access_token=`, `refresh_token`, `app_secret`,
//!    `Authorization:` all match). An `Authorization` value runs to the end
//!    of the line, so `Authorization: Basic xyz` loses both words.
//! 2. `Bearer <token>` anywhere.
//! 3. Feishu-style tokens: `t-`, `u-`, `a-` or `ur-` followed by at least 16
//!    token characters (`[A-Za-z0-9._-]`), at a word start.
//! 4. Long base64-ish runs: 32 or more characters of `[A-Za-z0-9+/=_-]`
//!    mixing upper case, lower case and digits (JWT segments, Google refresh
//!    tokens, app secrets). Hex hashes and UUIDs (no upper case) survive.
//!
//! Redaction errs on the side of removing too much: an error message loses
//! a little detail, a leaked refresh token is a security incident.

const MARK: &str = "<redacted>";

const SECRET_KEYS: &[&str] = &[
    "authorization",
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "encrypt_key",
    "ticket",
    "credential",
    "cookie",
];

const TOKEN_PREFIXES: &[&str] = &["t-", "u-", "a-", "ur-"];
const MIN_PREFIXED_TOKEN: usize = 16;
const MIN_SECRET_RUN: usize = 32;

/// Returns `text` with anything that looks like a secret replaced by
/// `<redacted>`.
pub fn redact(text: &str) -> String {
    let s = key_values(text);
    let s = bearer(&s);
    let s = prefixed_tokens(&s);
    long_runs(&s)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

fn starts_with_ignore_case(hay: &[u8], at: usize, needle: &str) -> bool {
    hay.len() >= at + needle.len()
        && hay[at..at + needle.len()].eq_ignore_ascii_case(needle.as_bytes())
}

/// Pass 1. All patterns are ASCII, so every cut is at a char boundary.
fn key_values(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let Some(key) = SECRET_KEYS
            .iter()
            .find(|k| starts_with_ignore_case(b, i, k))
        else {
            i += 1;
            continue;
        };
        let mut j = i + key.len();
        if j < b.len() && matches!(b[j], b'"' | b'\'') {
            j += 1;
        }
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        if j >= b.len() || !matches!(b[j], b':' | b'=') {
            i += key.len();
            continue;
        }
        j += 1;
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        let quote = (j < b.len() && matches!(b[j], b'"' | b'\'')).then(|| b[j]);
        if quote.is_some() {
            j += 1;
        }
        let start = j;
        let auth = *key == "authorization";
        while j < b.len() {
            let c = b[j];
            let end = match quote {
                Some(q) => c == q || c == b'\n' || c == b'\r',
                None if auth => {
                    matches!(c, b'\n' | b'\r' | b'"' | b'\'' | b',' | b';' | b'&' | b'}')
                }
                None => {
                    c.is_ascii_whitespace()
                        || matches!(
                            c,
                            b'"' | b'\'' | b'&' | b',' | b';' | b'}' | b')' | b']' | b'<' | b'>'
                        )
                }
            };
            if end {
                break;
            }
            j += 1;
        }
        // Keep trailing blanks of an unquoted Authorization value.
        let mut end = j;
        while auth && quote.is_none() && end > start && matches!(b[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        if end > start && &text[start..end] != MARK {
            out.push_str(&text[copied..start]);
            out.push_str(MARK);
            copied = end;
        }
        i = j.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Pass 2: `Bearer <token>`.
fn bearer(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if !(boundary && starts_with_ignore_case(b, i, "bearer")) {
            i += 1;
            continue;
        }
        let mut j = i + "bearer".len();
        let spaces = j;
        while j < b.len() && matches!(b[j], b' ' | b'\t') {
            j += 1;
        }
        let start = j;
        while j < b.len()
            && !b[j].is_ascii_whitespace()
            && !matches!(b[j], b'"' | b'\'' | b',' | b'<')
        {
            j += 1;
        }
        if j > start && start > spaces {
            out.push_str(&text[copied..start]);
            out.push_str(MARK);
            copied = j;
        }
        i = j.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Pass 3: `t-…`, `u-…`, `a-…`, `ur-…` tokens.
fn prefixed_tokens(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !is_token_char(b[i - 1]);
        let prefix = boundary
            .then(|| {
                TOKEN_PREFIXES
                    .iter()
                    .find(|p| b[i..].starts_with(p.as_bytes()))
            })
            .flatten();
        let Some(prefix) = prefix else {
            i += 1;
            continue;
        };
        let start = i + prefix.len();
        let mut j = start;
        while j < b.len() && is_token_char(b[j]) {
            j += 1;
        }
        if j - start >= MIN_PREFIXED_TOKEN {
            out.push_str(&text[copied..i]);
            out.push_str(MARK);
            copied = j;
        }
        i = j.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Pass 4: long mixed-case alphanumeric runs.
fn long_runs(text: &str) -> String {
    fn run_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !run_char(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && run_char(b[i]) {
            i += 1;
        }
        let run = &b[start..i];
        if run.len() >= MIN_SECRET_RUN
            && run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase)
            && run.iter().any(u8::is_ascii_digit)
        {
            out.push_str(&text[copied..start]);
            out.push_str(MARK);
            copied = i;
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(input: &str, secret: &str) -> String {
        let out = redact(input);
        assert!(!out.contains(secret), "{secret:?} survived in {out:?}");
        assert!(out.contains(MARK), "{out:?}");
        out
    }

    #[test]
    fn bearer_tokens() {
        let out = clean(
            "GET /x failed; header Bearer abc.DEF-123 sent",
            "abc.DEF-123",
        );
        assert_eq!(out, "GET /x failed; header Bearer <redacted> sent");
        clean("bearer\tzzzzzz", "zzzzzz");
    }

    #[test]
    fn authorization_header_to_end_of_line() {
        let out = clean(
            "Authorization: Basic dXNlcjpwYXNz\nnext line",
            "dXNlcjpwYXNz",
        );
        assert_eq!(out, "Authorization: <redacted>\nnext line");
        let out = clean(r#"{"authorization":"Bearer xyz secret"}"#, "xyz");
        assert_eq!(out, r#"{"authorization":"<redacted>"}"#);
    }

    #[test]
    fn feishu_tokens() {
        let out = clean(
            "tenant token t-g1044ghJRUIJJ5ELSNSSLONGTOKEN expired",
            "g1044ghJRUIJJ5ELSNSS",
        );
        assert_eq!(out, "tenant token <redacted> expired");
        clean(
            "user u-5Dxx_abcdefghijklmnop0123 refused",
            "5Dxx_abcdefghijklmnop",
        );
        clean("refresh ur-0123456789abcdefABCDEF", "0123456789abcdef");
        // Short words with the same shape are not tokens.
        assert_eq!(redact("a t-shirt and u-turn"), "a t-shirt and u-turn");
    }

    #[test]
    fn query_strings_and_json_fields() {
        let out = clean(
            "POST https://x/token?grant_type=refresh&refresh_token=abc123&x=1 -> 400",
            "abc123",
        );
        assert_eq!(
            out,
            "POST https://x/token?grant_type=refresh&refresh_token=<redacted>&x=1 -> 400"
        );
        let out = clean(
            r#"{"app_id":"cli_1","app_secret": "s3cr3t value"}"#,
            "s3cr3t",
        );
        assert_eq!(out, r#"{"app_id":"cli_1","app_secret": "<redacted>"}"#);
        clean("access_token=aaa", "aaa");
        clean("client_secret: bbb", "bbb");
        clean("'password'='ccc'", "ccc");
        clean("Cookie: session=ddd", "ddd");
    }

    #[test]
    fn long_base64_secrets() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.c2lnbmF0dXJlX3ZhbHVlX2hlcmVfbG9uZw";
        let out = redact(&format!("id {jwt} rejected"));
        assert!(
            !out.contains("eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"),
            "{out}"
        );
        clean(
            "1//0gLONGgoogleRefreshTokenValue1234567890abcdef",
            "0gLONGgoogle",
        );
    }

    #[test]
    fn ordinary_errors_survive() {
        for s in [
            "HTTP 503 Service Unavailable (retry after 30 s)",
            "feishu code 190008: sync token expired",
            "event 550e8400-e29b-41d4-a716-446655440000_0 not found",
            "hash v1:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 differs",
            "token_type: Bearer",
            "refresh_token_expires_in: 604800",
            "über-lange Fehlermeldung ünd Ümlaute",
            "",
        ] {
            assert_eq!(redact(s), s);
        }
    }

    #[test]
    fn idempotent() {
        let once = redact("Authorization: Bearer t-0123456789abcdefghij\naccess_token=x");
        assert_eq!(redact(&once), once);
    }
}
