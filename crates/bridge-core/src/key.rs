//! `EventKey`: the identity of a Feishu event, `<uid>_<original_time>`.

use std::fmt;
use std::str::FromStr;

/// Why an event id could not be read as `<uid>_<original_time>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("event id is empty")]
    Empty,
    #[error("event id {0:?} has no `_<original_time>` suffix")]
    NoSeparator(String),
    #[error("event id {0:?} has an empty uid")]
    EmptyUid(String),
    #[error("event id {0:?}: original_time must be Unix seconds (ASCII digits)")]
    BadOriginalTime(String),
}

/// A Feishu event identity: the series `uid` and the occurrence's original
/// start in Unix seconds (`0` for single events and recurring masters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    uid: String,
    original_time: i64,
}

impl EventKey {
    /// Builds a key; the uid must not be empty and the time not negative.
    pub fn new(uid: impl Into<String>, original_time: i64) -> Result<Self, KeyError> {
        let uid = uid.into();
        if uid.is_empty() {
            return Err(KeyError::EmptyUid(format!("_{original_time}")));
        }
        if original_time < 0 {
            return Err(KeyError::BadOriginalTime(format!("{uid}_{original_time}")));
        }
        Ok(Self { uid, original_time })
    }

    /// Parses `<uid>_<original_time>`, splitting at the last underscore.
    pub fn parse(id: &str) -> Result<Self, KeyError> {
        if id.is_empty() {
            return Err(KeyError::Empty);
        }
        let (uid, time) = id
            .rsplit_once('_')
            .ok_or_else(|| KeyError::NoSeparator(id.to_owned()))?;
        if uid.is_empty() {
            return Err(KeyError::EmptyUid(id.to_owned()));
        }
        if time.is_empty() || !time.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KeyError::BadOriginalTime(id.to_owned()));
        }
        let original_time = time
            .parse::<i64>()
            .map_err(|_| KeyError::BadOriginalTime(id.to_owned()))?;
        Ok(Self {
            uid: uid.to_owned(),
            original_time,
        })
    }

    /// The series uid (stable across a recurring series).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Original start of the occurrence in Unix seconds; `0` for singles and masters.
    pub fn original_time(&self) -> i64 {
        self.original_time
    }

    /// True for single events and recurring masters.
    pub fn is_base(&self) -> bool {
        self.original_time == 0
    }

    /// The key of this series' master (`<uid>_0`).
    pub fn master(&self) -> EventKey {
        EventKey {
            uid: self.uid.clone(),
            original_time: 0,
        }
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.uid, self.original_time)
    }
}

impl FromStr for EventKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_master_and_exception_ids() {
        let k = EventKey::parse("c32537e6-e0a8-4506-b42f-47440655cdb4_0").unwrap();
        assert_eq!(k.uid(), "c32537e6-e0a8-4506-b42f-47440655cdb4");
        assert!(k.is_base());
        let k = EventKey::parse("a_b_c_1713168000").unwrap();
        assert_eq!((k.uid(), k.original_time()), ("a_b_c", 1_713_168_000));
        assert_eq!(k.master().to_string(), "a_b_c_0");
    }

    #[test]
    fn malformed_ids_are_typed_errors() {
        assert_eq!(EventKey::parse(""), Err(KeyError::Empty));
        assert!(matches!(
            EventKey::parse("abc"),
            Err(KeyError::NoSeparator(_))
        ));
        assert!(matches!(EventKey::parse("_5"), Err(KeyError::EmptyUid(_))));
        assert!(matches!(
            EventKey::parse("u_"),
            Err(KeyError::BadOriginalTime(_))
        ));
        assert!(matches!(
            EventKey::parse("u_-5"),
            Err(KeyError::BadOriginalTime(_))
        ));
        assert!(matches!(
            EventKey::parse("u_1e9"),
            Err(KeyError::BadOriginalTime(_))
        ));
        assert!(matches!(
            EventKey::parse("u_99999999999999999999999"),
            Err(KeyError::BadOriginalTime(_))
        ));
        assert!(matches!(
            EventKey::parse("u_١٢"),
            Err(KeyError::BadOriginalTime(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(uid in "\\PC{1,40}", t in 0i64..i64::MAX) {
            let key = EventKey::new(uid.clone(), t).unwrap();
            let back = EventKey::parse(&key.to_string()).unwrap();
            prop_assert_eq!(back.uid(), uid.as_str());
            prop_assert_eq!(back.original_time(), t);
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = EventKey::parse(&s);
        }
    }
}
