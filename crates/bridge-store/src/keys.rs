//! Key encoding.
//!
//! Every table is keyed by a `&str`. A composite key joins its components
//! with U+001F (ASCII "unit separator"):
//!
//! ```text
//! EVENT_TO_SNAPSHOT      <calendar_id> 1F <event_key>
//! SINK_EVENT_TO_RECORD   <sink_id> 1F <calendar_id> 1F <event_key>
//! SINK_EVENT_TO_FAILURE  <sink_id> 1F <calendar_id> 1F <event_key>
//! ```
//!
//! Components must be non-empty and must not contain U+001F (the store
//! refuses such input with `StoreError::InvalidInput`), so splitting at the
//! separator gives back exactly the components: the encoding is unambiguous.
//! Feishu calendar ids, event keys and sink ids never contain control
//! characters, so the restriction costs nothing.
//!
//! Because U+001F sorts below every printable character, all keys of one
//! `(sink, calendar)` or one calendar form a contiguous range
//! `[prefix 1F, prefix 20)`, ordered by the last component's UTF-8 bytes.

use crate::error::StoreError;

/// The component separator.
pub(crate) const SEP: char = '\u{1f}';
/// The character right after [`SEP`], the exclusive end of a prefix range.
const SEP_NEXT: char = '\u{20}';

/// Checks one key component.
pub(crate) fn component<'a>(what: &'static str, value: &'a str) -> Result<&'a str, StoreError> {
    if value.is_empty() {
        return Err(StoreError::InvalidInput {
            what,
            reason: "must not be empty".into(),
        });
    }
    if value.contains(SEP) {
        return Err(StoreError::InvalidInput {
            what,
            reason: format!("{value:?} contains U+001F, the store's key separator"),
        });
    }
    Ok(value)
}

/// Joins checked components into one key.
pub(crate) fn join(parts: &[(&'static str, &str)]) -> Result<String, StoreError> {
    let mut key = String::with_capacity(parts.iter().map(|(_, p)| p.len() + 1).sum());
    for (i, (what, part)) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEP);
        }
        key.push_str(component(what, part)?);
    }
    Ok(key)
}

/// The half-open key range `[lo, hi)` holding every key that starts with
/// the given components (followed by at least one more component).
pub(crate) fn prefix_range(parts: &[(&'static str, &str)]) -> Result<(String, String), StoreError> {
    let mut lo = join(parts)?;
    let mut hi = lo.clone();
    lo.push(SEP);
    hi.push(SEP_NEXT);
    Ok((lo, hi))
}

/// Splits a stored key into exactly `N` components.
pub(crate) fn split<const N: usize>(
    what: &'static str,
    key: &str,
) -> Result<[String; N], StoreError> {
    let parts: Vec<&str> = key.split(SEP).collect();
    if parts.len() != N || parts.iter().any(|p| p.is_empty()) {
        return Err(StoreError::Corrupt {
            what,
            key: key.to_owned(),
            reason: format!("expected {N} key components separated by U+001F"),
        });
    }
    Ok(std::array::from_fn(|i| parts[i].to_owned()))
}

/// The last component of a key known to start with a prefix from
/// [`prefix_range`].
pub(crate) fn last(key: &str) -> &str {
    key.rsplit(SEP).next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_split_round_trip() {
        let key = join(&[("sink", "google"), ("calendar", "c@x"), ("event", "u_0")]).unwrap();
        assert_eq!(key, "google\u{1f}c@x\u{1f}u_0");
        let [a, b, c] = split::<3>("record", &key).unwrap();
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            ("google", "c@x", "u_0")
        );
        assert_eq!(last(&key), "u_0");
        assert!(split::<2>("record", &key).is_err());
    }

    #[test]
    fn bad_components_are_refused() {
        assert!(matches!(
            join(&[("calendar", "")]),
            Err(StoreError::InvalidInput {
                what: "calendar",
                ..
            })
        ));
        assert!(matches!(
            join(&[("calendar", "c"), ("event", "a\u{1f}b")]),
            Err(StoreError::InvalidInput { what: "event", .. })
        ));
    }

    #[test]
    fn prefix_range_holds_exactly_the_prefixed_keys() {
        let (lo, hi) = prefix_range(&[("calendar", "c")]).unwrap();
        let inside = join(&[("calendar", "c"), ("event", "u_0")]).unwrap();
        let other = join(&[("calendar", "c2"), ("event", "u_0")]).unwrap();
        let space = join(&[("calendar", "c "), ("event", "u_0")]).unwrap();
        assert!(lo.as_str() <= inside.as_str() && inside.as_str() < hi.as_str());
        assert!(!(lo.as_str() <= other.as_str() && other.as_str() < hi.as_str()));
        assert!(!(lo.as_str() <= space.as_str() && space.as_str() < hi.as_str()));
    }
}
