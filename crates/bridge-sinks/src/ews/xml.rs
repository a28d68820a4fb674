//! Reading EWS answers: a small element tree over `quick-xml`'s namespace
//! reader (answers are a few KB to a few MB; a tree keeps the response
//! parsing plain), and the escaping of what the sink writes.

use std::collections::BTreeMap;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

pub(crate) const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(crate) const M_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
pub(crate) const T_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/types";

/// One element: local name, attributes by local name, children, text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct El {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub children: Vec<El>,
    pub text: String,
}

impl El {
    pub fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    pub fn path(&self, names: &[&str]) -> Option<&El> {
        names.iter().try_fold(self, |e, n| e.child(n))
    }

    /// Every descendant (depth first) named `name`.
    pub fn descendants<'a>(&'a self, name: &'a str, out: &mut Vec<&'a El>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.descendants(name, out);
        }
    }
}

/// Parses a document into its root element (namespaces checked to resolve,
/// then dropped: EWS names are unique per position).
pub fn parse(text: &str) -> Result<El, String> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<El> = Vec::new();
    loop {
        let (ns, ev) = reader.read_resolved_event().map_err(|e| e.to_string())?;
        if let ResolveResult::Unknown(p) = ns {
            return Err(format!(
                "unknown namespace prefix {:?}",
                String::from_utf8_lossy(&p)
            ));
        }
        match ev {
            Event::Start(s) => stack.push(element(&s)?),
            Event::Empty(s) => {
                let el = element(&s)?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.xml_content().map_err(|e| e.to_string())?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => match r.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("unknown entity &{other};")),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push(c);
                }
            }
            Event::Eof => return Err("the answer ends before its root element closes".into()),
            _ => {}
        }
    }
}

fn element(s: &quick_xml::events::BytesStart<'_>) -> Result<El, String> {
    let mut attrs = BTreeMap::new();
    for a in s.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        if a.key.as_ref().starts_with(b"xmlns") {
            continue;
        }
        let v = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        attrs.insert(
            String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
            v,
        );
    }
    Ok(El {
        name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
        attrs,
        ..El::default()
    })
}

/// `s` escaped for element content and attribute values (quick-xml's
/// escaping, which also covers quotes).
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Characters XML 1.0 cannot carry at all are dropped (Feishu text may hold
/// control characters; Exchange would refuse the whole request).
pub fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| {
            matches!(*c, '\t' | '\n' | '\r') || (*c >= ' ' && *c != '\u{FFFE}' && *c != '\u{FFFF}')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_entities_and_attributes() {
        let x = parse(r#"<?xml version="1.0"?><s:E xmlns:s="urn:x"><s:A k="a&amp;b">x &lt; y&#33;</s:A><B/></s:E>"#).unwrap();
        assert_eq!(x.name, "E");
        assert_eq!(x.child("A").unwrap().text, "x < y!");
        assert_eq!(x.child("A").unwrap().attr("k"), Some("a&b"));
        assert!(x.child("B").is_some());
        assert!(parse("<a><b></a>").is_err());
        assert_eq!(clean("a\u{1}b\tc"), "ab\tc");
        assert_eq!(esc("<\"&'>"), "&lt;&quot;&amp;&apos;&gt;");
    }
}
