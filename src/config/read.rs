//! Reading TOML into the typed structs with every problem at once.
//!
//! serde stops at the first error of a struct, so after an error the key it
//! is about is taken out and the struct is read again, until it reads or
//! the error cannot be taken out (a missing key). Each round takes one key
//! out, so there are at most as many rounds as keys. Messages name the key
//! path, say what was expected in words, and suggest the nearest known key.
//!
//! The wording is recovered from serde's error messages (`unknown field
//! `x`, expected ...`, `invalid type: ..., expected ...`), whose format
//! serde has kept for years; an unrecognized message is passed on as is.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// A syntax error as one line: where it is and what is wrong.
pub(crate) fn syntax(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("not valid TOML: line {line}, column {column}: {msg}")
        }
        None => format!("not valid TOML: {msg}"),
    }
}

/// Reads `value` into `T`; `path` is its key path (empty for the root).
/// Every problem is pushed; `None` when there was one.
pub(crate) fn read_table<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    read_rest(value, path, problems).and_then(|(v, failed)| (!failed).then_some(v))
}

/// Like [`read_table`], but also returns what reads once the offending keys
/// are taken out (every key optional), so that its semantic checks can
/// report their problems in the same run; the flag says whether a key was
/// taken out.
pub(crate) fn read_rest<T: DeserializeOwned>(
    mut value: toml::Value,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<(T, bool)> {
    let mut failed = false;
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some((v, failed)),
            Err(e) => e,
        };
        failed = true;
        let mut at: Vec<Segment> = err.path().iter().cloned().collect();
        let inner = err.into_inner();
        let msg = inner.message().trim_end();
        let text = if let Some(rest) = msg.strip_prefix("unknown field ") {
            let (name, known) = quoted_and_expected(rest);
            push_key(&mut at, &name);
            format!("unknown key{}", did_you_mean(&name, &known))
        } else if let Some(rest) = msg.strip_prefix("missing field ") {
            let (name, _) = quoted_and_expected(rest);
            push_key(&mut at, &name);
            problems.push(format!("{}: missing", key_path(path, &at)));
            return None;
        } else if let Some(rest) = msg.strip_prefix("unknown variant ") {
            let (name, known) = quoted_and_expected(rest);
            let one_of: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
            format!(
                "{name:?} is not one of {}{}",
                one_of.join(", "),
                did_you_mean(&name, &known)
            )
        } else if let Some(rest) = msg
            .strip_prefix("invalid type: ")
            .or_else(|| msg.strip_prefix("invalid value: "))
        {
            match rest.split_once(", expected ") {
                Some((got, expected)) => {
                    format!("expected {}, got {}", in_words(expected), got_in_words(got))
                }
                None => msg.to_owned(),
            }
        } else {
            msg.to_owned()
        };
        problems.push(format!("{}: {text}", key_path(path, &at)));
        if !take_out(&mut value, &at) {
            return None;
        }
    }
}

/// Every key of `table` not in `known`, named with a suggestion.
pub(crate) fn unknown_keys(
    table: &toml::Table,
    known: &[&str],
    path: &str,
    problems: &mut Vec<String>,
) {
    for key in table.keys() {
        let at = [Segment::Map { key: key.clone() }];
        problems.push(format!(
            "{}: unknown key{}",
            key_path(path, &at),
            did_you_mean(key, known)
        ));
    }
}

/// Adds `name` to the path of an error about it, unless it ends there
/// already (serde_path_to_error names an unknown key, not a missing one).
fn push_key(at: &mut Vec<Segment>, name: &str) {
    if !matches!(at.last(), Some(Segment::Map { key }) if key == name) {
        at.push(Segment::Map {
            key: name.to_owned(),
        });
    }
}

/// `sinks[1].privacy` from the table's path and the segments below it.
fn key_path(path: &str, at: &[Segment]) -> String {
    let mut out = path.to_owned();
    for s in at {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Takes the key at `at` out of `value` (for an array element, the whole
/// array: taking one element out would shift the indices of the next
/// problems). `false` when there is nothing to take out.
fn take_out(value: &mut toml::Value, at: &[Segment]) -> bool {
    let end = at
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))
        .map_or(0, |i| i + 1);
    let Some((Segment::Map { key: last }, parents)) = at[..end].split_last() else {
        return false;
    };
    let mut v = value;
    for s in parents {
        v = match (s, v) {
            (Segment::Map { key }, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match v {
        toml::Value::Table(t) => t.remove(last).is_some(),
        _ => false,
    }
}

/// "`x`, expected `a` or `b`" -> ("x", ["a", "b"]).
fn quoted_and_expected(rest: &str) -> (String, Vec<String>) {
    let mut parts = rest.split('`');
    let name = parts.nth(1).unwrap_or_default().to_owned();
    let known = rest
        .split_once("expected")
        .map(|(_, list)| {
            list.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    (name, known)
}

/// `; did you mean "privacy"?` when a known name is close to `name`.
fn did_you_mean<K: AsRef<str>>(name: &str, known: &[K]) -> String {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k.as_ref()), k.as_ref()))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map_or_else(String::new, |(_, k)| format!("; did you mean {k:?}?"))
}

/// serde's name of an expected type, in words.
fn in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "path string" => "a path (a string)".to_owned(),
        "a sequence" => "a list".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// serde's description of the value found, as written in TOML.
fn got_in_words(got: &str) -> String {
    if let Some(s) = got.strip_prefix("string ") {
        return s.to_owned();
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = got.strip_prefix(prefix) {
            return v.trim_matches('`').to_owned();
        }
    }
    match got {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}
