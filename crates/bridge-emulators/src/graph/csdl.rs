//! Body validation against the Graph v1.0 CSDL subset vendored in the
//! repository (`tests/graph-csdl/event-subset-v1.0.csdl`, verbatim from
//! Microsoft's published metadata): unknown properties, enum strings that
//! are not members, and JSON kinds, recursively through complex types —
//! the same rules as `tests/graph-csdl/graph_event_check.py`.
//!
//! The CSDL (EDMX) is read with quick-xml: element names (local, the
//! namespaces do not matter to us) and their `Name` / `Type` / `BaseType`
//! attributes; anything that is not well-formed fails loudly (at emulator
//! start).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
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

/// The unescaped value of attribute `name` of an element.
fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    match e.try_get_attribute(name).map_err(|x| x.to_string())? {
        None => Ok(None),
        Some(a) => a
            .unescape_value()
            .map(|v| Some(v.into_owned()))
            .map_err(|x| x.to_string()),
    }
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
        let mut reader = Reader::from_str(text);
        reader.config_mut().check_end_names = true;
        let mut depth = 0usize;
        loop {
            let pos = reader.buffer_position();
            let ev = reader
                .read_event()
                .map_err(|e| format!("CSDL is not well-formed XML at byte {pos}: {e}"))?;
            let (e, empty) = match ev {
                Event::Eof => {
                    if depth != 0 {
                        return Err("the CSDL ends inside an element".into());
                    }
                    break;
                }
                Event::End(e) => {
                    depth = depth.saturating_sub(1);
                    match e.local_name().as_ref() {
                        b"EntityType" | b"ComplexType" => current_type = None,
                        b"EnumType" => current_enum = None,
                        _ => {}
                    }
                    continue;
                }
                Event::Start(e) => {
                    depth += 1;
                    (e, false)
                }
                Event::Empty(e) => (e, true),
                _ => continue,
            };
            match e.local_name().as_ref() {
                b"EntityType" | b"ComplexType" => {
                    let n = attr(&e, "Name")?.ok_or("a type without Name")?;
                    let base = attr(&e, "BaseType")?.map(|b| short(&b).to_owned());
                    s.types.insert(n.clone(), (base, HashMap::new()));
                    if !empty {
                        current_type = Some(n);
                    }
                }
                b"Property" | b"NavigationProperty" => {
                    let t = current_type.as_ref().ok_or("a property outside a type")?;
                    let n = attr(&e, "Name")?.ok_or("a property without Name")?;
                    let ty = attr(&e, "Type")?.ok_or("a property without Type")?;
                    if let Some(x) = s.types.get_mut(t) {
                        x.1.insert(n, ty);
                    }
                }
                b"EnumType" => {
                    let n = attr(&e, "Name")?.ok_or("an enum without Name")?;
                    s.enums.insert(n.clone(), HashSet::new());
                    if !empty {
                        current_enum = Some(n);
                    }
                }
                b"Member" => {
                    let x = current_enum.as_ref().ok_or("a member outside an enum")?;
                    let n = attr(&e, "Name")?.ok_or("a member without Name")?;
                    if let Some(m) = s.enums.get_mut(x) {
                        m.insert(n);
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
        assert!(Schema::parse("<Schema><EntityType Name=\"event\"></Schema>").is_err());
        assert!(Schema::parse("<Schema><EntityType Name=\"event\">").is_err());
    }

    #[test]
    fn names_are_unescaped_and_bases_followed() {
        let s = Schema::parse(
            r#"<?xml version="1.0"?><edmx:Edmx xmlns:edmx="x"><Schema Namespace="microsoft.graph">
            <EntityType Name="entity"><Property Name="id" Type="Edm.String"/></EntityType>
            <EntityType Name="event" BaseType="graph.entity"><Property Name="a&amp;b" Type="Edm.Boolean"/></EntityType>
            <EnumType Name="kind"><Member Name="one" Value="0"/></EnumType>
            </Schema></edmx:Edmx>"#,
        )
        .unwrap();
        let props = s.props("event");
        assert_eq!(props.get("a&b"), Some(&"Edm.Boolean"));
        assert_eq!(props.get("id"), Some(&"Edm.String"));
        assert!(s.enums["kind"].contains("one"));
    }
}
