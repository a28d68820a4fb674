//! Body validation against the Graph v1.0 CSDL subset vendored in the
//! repository (`tests/graph-csdl/event-subset-v1.0.csdl`, verbatim from
//! Microsoft's published metadata): unknown properties, enum strings that
//! are not members, and JSON kinds, recursively through complex types —
//! the same rules as `tests/graph-csdl/graph_event_check.py`.
//!
//! The CSDL is read with a small tag scanner rather than an XML crate: the
//! workspace has no XML parser (none is reachable offline here), and the
//! file is machine-written EDMX whose only content is elements with quoted
//! attributes (no text nodes, entities or CDATA that matter to us). The
//! scanner reads element names and `Name`/`Type`/`BaseType` attributes and
//! fails loudly (at emulator start) on anything it cannot read.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

/// The vendored subset.
const SUBSET: &str = include_str!("../../../../tests/graph-csdl/event-subset-v1.0.csdl");

/// Entity/complex types and enums of the CSDL.
#[derive(Debug, Default)]
pub(crate) struct Schema {
    /// name -> (base type, property name -> type)
    types: HashMap<String, (Option<String>, HashMap<String, String>)>,
    enums: HashMap<String, HashSet<String>>,
}

/// The value of attribute `name` in the inside of a tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let i = tag.find(&pat)? + pat.len();
    let rest = &tag[i..];
    Some(&rest[..rest.find('"')?])
}

fn short(t: &str) -> &str {
    t.rsplit('.').next().unwrap_or(t)
}

impl Schema {
    /// Parses CSDL text (see the module docs for what is read).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut s = Schema::default();
        let mut current_type: Option<String> = None;
        let mut current_enum: Option<String> = None;
        for chunk in text.split('<').skip(1) {
            let Some(end) = chunk.find('>') else {
                return Err(format!(
                    "unterminated tag near {:?}",
                    &chunk[..chunk.len().min(40)]
                ));
            };
            let tag = &chunk[..end];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            let self_closing = tag.ends_with('/');
            let name = tag
                .trim_start_matches('/')
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("");
            if tag.starts_with('/') {
                match name {
                    "EntityType" | "ComplexType" => current_type = None,
                    "EnumType" => current_enum = None,
                    _ => {}
                }
                continue;
            }
            match name {
                "EntityType" | "ComplexType" => {
                    let n = attr(tag, "Name").ok_or("a type without Name")?.to_owned();
                    let base = attr(tag, "BaseType").map(|b| short(b).to_owned());
                    s.types.insert(n.clone(), (base, HashMap::new()));
                    if !self_closing {
                        current_type = Some(n);
                    }
                }
                "Property" | "NavigationProperty" => {
                    let t = current_type.as_ref().ok_or("a property outside a type")?;
                    let n = attr(tag, "Name").ok_or("a property without Name")?;
                    let ty = attr(tag, "Type").ok_or("a property without Type")?;
                    if let Some(e) = s.types.get_mut(t) {
                        e.1.insert(n.to_owned(), ty.to_owned());
                    }
                }
                "EnumType" => {
                    let n = attr(tag, "Name").ok_or("an enum without Name")?.to_owned();
                    s.enums.insert(n.clone(), HashSet::new());
                    if !self_closing {
                        current_enum = Some(n);
                    }
                }
                "Member" => {
                    let e = current_enum.as_ref().ok_or("a member outside an enum")?;
                    let n = attr(tag, "Name").ok_or("a member without Name")?;
                    if let Some(m) = s.enums.get_mut(e) {
                        m.insert(n.to_owned());
                    }
                }
                _ => {}
            }
        }
        if !s.types.contains_key("event") {
            return Err("the CSDL has no event type".into());
        }
        Ok(s)
    }

    /// The vendored subset, parsed once.
    pub(crate) fn subset() -> &'static Schema {
        static S: OnceLock<Schema> = OnceLock::new();
        S.get_or_init(|| Schema::parse(SUBSET).unwrap_or_else(|e| panic!("vendored CSDL: {e}")))
    }

    /// Every property of `name` with its base types'.
    fn props(&self, name: &str) -> HashMap<&str, &str> {
        let mut out = HashMap::new();
        let mut cur = Some(name.to_owned());
        let mut depth = 0;
        while let Some(n) = cur {
            depth += 1;
            let Some((base, props)) = self.types.get(&n) else {
                break;
            };
            for (k, v) in props {
                out.entry(k.as_str()).or_insert(v.as_str());
            }
            cur = base.clone().filter(|_| depth < 16);
        }
        out
    }

    /// Problems of `value` as a `type_name` (`graph.event`, `Edm.String`,
    /// `Collection(...)`), at JSON path `path`.
    pub(crate) fn check(&self, type_name: &str, value: &Value, path: &str, errs: &mut Vec<String>) {
        if let Some(inner) = type_name
            .strip_prefix("Collection(")
            .and_then(|t| t.strip_suffix(')'))
        {
            match value {
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        self.check(inner, v, &format!("{path}[{i}]"), errs);
                    }
                }
                _ => errs.push(format!("{path}: expected array for {type_name}")),
            }
            return;
        }
        if value.is_null() {
            return;
        }
        if let Some(edm) = type_name.strip_prefix("Edm.") {
            let ok = match edm {
                "String" | "DateTimeOffset" | "Date" => value.is_string(),
                "Boolean" => value.is_boolean(),
                "Int32" | "Int64" => value.is_i64() || value.is_u64(),
                "Double" => value.is_number(),
                _ => true,
            };
            if !ok {
                errs.push(format!("{path}: expected {type_name}, got {value}"));
            }
            return;
        }
        let s = short(type_name);
        if let Some(members) = self.enums.get(s) {
            match value.as_str() {
                Some(v) if members.contains(v) => {}
                _ => {
                    let mut m: Vec<&String> = members.iter().collect();
                    m.sort();
                    errs.push(format!("{path}: {value} not in {s} {m:?}"));
                }
            }
            return;
        }
        if self.types.contains_key(s) {
            let Some(obj) = value.as_object() else {
                errs.push(format!("{path}: expected object {s}"));
                return;
            };
            let props = self.props(s);
            for (k, v) in obj {
                if k.starts_with("@odata") {
                    continue;
                }
                match props.get(k.as_str()) {
                    Some(t) => self.check(t, v, &format!("{path}.{k}"), errs),
                    None => errs.push(format!("{path}.{k}: unknown property of {s}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_samples_check_like_the_python_checker() {
        let s = Schema::subset();
        let ok: Value = serde_json::from_str(include_str!(
            "../../../../tests/graph-csdl/sample-event-ok.json"
        ))
        .unwrap();
        let mut errs = Vec::new();
        s.check("graph.event", &ok, "$", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let bad: Value = serde_json::from_str(include_str!(
            "../../../../tests/graph-csdl/sample-event-bad.json"
        ))
        .unwrap();
        s.check("graph.event", &bad, "$", &mut errs);
        let joined = errs.join("\n");
        for want in [
            "$.start.tz: unknown property of dateTimeTimeZone",
            "$.showAs: \"Busy\" not in freeBusyStatus",
            "$.recurrence.pattern.type: \"weeklyish\" not in recurrencePatternType",
            "$.isAllday: unknown property of event",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
    }

    #[test]
    fn unreadable_csdl_is_an_error() {
        assert!(Schema::parse("<Schema><EntityType Name=\"x\"").is_err());
        assert!(Schema::parse("<Schema></Schema>").is_err());
    }
}
