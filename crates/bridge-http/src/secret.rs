//! [`Secret`]: the one type for app secrets, client secrets, access and
//! refresh tokens and private keys of every service.
//!
//! Why not the `secrecy` crate: its `SecretString` has no `PartialEq` (token
//! renewal compares the rejected token with the cached one) and no serde
//! round trip for plain strings (the Feishu user token file stores them), so
//! it would need a wrapper of the same size as this type.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. `Debug` shows `[redacted]` (or `""` when empty, so a
/// missing secret is visible); there is no `Display`, so it cannot reach a
/// log line or an error message by accident. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself (for a header, a form field, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("s3cr3t");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.expose(), "s3cr3t");
    }

    #[test]
    fn serde_is_the_plain_string() {
        let s = Secret::new("tok");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"tok\"");
        assert_eq!(serde_json::from_str::<Secret>(&json).unwrap(), s);
    }
}
