//! RFC 5545 serialization: text escaping, parameter quoting, line folding and
//! a deterministic writer for components built from `icalendar::Property`.
//!
//! Why not `icalendar`'s own `Display`: it inserts `DTSTAMP:<Utc::now()>` and a
//! random `UID` into every component that lacks them (VTIMEZONE, STANDARD,
//! VALARM included), which breaks purity and byte-stable output, it cannot
//! build a VTIMEZONE (`Other` has no public constructor) and it orders
//! properties alphabetically. We keep its property model and its parser (used
//! to read our output back in tests) and write the lines ourselves.

use icalendar::Property;

/// Maximum octets of one physical line, excluding the CRLF (RFC 5545 §3.1).
pub const LINE_LIMIT: usize = 75;

/// A component: `BEGIN:<name>`, properties in insertion order, children, `END:<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: &'static str,
    pub properties: Vec<Property>,
    pub components: Vec<Component>,
}

impl Component {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            properties: Vec::new(),
            components: Vec::new(),
        }
    }

    /// Adds a property whose value is already in wire form (escaped if TEXT).
    pub fn raw(&mut self, key: &str, value: impl Into<String>) -> &mut Property {
        self.properties.push(Property::new(key, value));
        self.properties.last_mut().expect("just pushed")
    }

    /// Adds a TEXT property, escaping the value.
    pub fn text(&mut self, key: &str, value: &str) -> &mut Property {
        self.raw(key, escape_text(value))
    }

    /// Serializes the component with CRLF line ends and folding.
    pub fn write_to(&self, out: &mut String) {
        let mut line = String::with_capacity(128);
        self.write_with(out, &mut line);
    }

    fn write_with(&self, out: &mut String, line: &mut String) {
        out.push_str("BEGIN:");
        out.push_str(self.name);
        out.push_str("\r\n");
        for p in &self.properties {
            write_property(out, line, p);
        }
        for c in &self.components {
            c.write_with(out, line);
        }
        out.push_str("END:");
        out.push_str(self.name);
        out.push_str("\r\n");
    }

    /// The serialized component.
    pub fn to_ics(&self) -> String {
        let mut out = String::with_capacity(1024);
        self.write_to(&mut out);
        out
    }
}

/// Escapes a TEXT value: `\` `;` `,` and newlines (`\r\n`, `\r`, `\n` all become
/// `\n`). Other control characters are not allowed in TEXT and are dropped.
pub fn escape_text(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + 8);
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_text`] (used by tests and by readers of our own output).
pub fn unescape_text(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A parameter value in wire form: DQUOTE and control characters cannot be
/// represented (RFC 5545 §3.1 `QSAFE-CHAR`) and are replaced; values containing
/// `:` `;` `,` are quoted.
pub fn param_value(input: &str) -> String {
    let mut s = String::with_capacity(input.len() + 2);
    push_param_value(&mut s, input);
    s
}

fn push_param_value(out: &mut String, input: &str) {
    let quote = input.contains([':', ';', ',']);
    if quote {
        out.push('"');
    }
    for c in input.chars() {
        out.push(match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        });
    }
    if quote {
        out.push('"');
    }
}

fn write_property(out: &mut String, line: &mut String, p: &Property) {
    line.clear();
    line.push_str(p.key());
    for param in p.params().values() {
        line.push(';');
        line.push_str(param.key());
        line.push('=');
        push_param_value(line, param.value());
    }
    line.push(':');
    line.push_str(p.value());
    write_line(out, line);
}

/// Appends one content line folded at [`LINE_LIMIT`] octets, never inside a
/// UTF-8 character, followed by CRLF.
pub fn write_line(out: &mut String, line: &str) {
    fold_into(out, line);
}

/// Folds a logical line into physical lines (each followed by CRLF).
pub fn fold_into(out: &mut String, line: &str) {
    let mut rest = line;
    let mut limit = LINE_LIMIT;
    loop {
        if rest.len() <= limit {
            out.push_str(rest);
            out.push_str("\r\n");
            return;
        }
        let mut cut = limit;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&rest[..cut]);
        out.push_str("\r\n ");
        rest = &rest[cut..];
        // Continuation lines start with one space, which counts toward the limit.
        limit = LINE_LIMIT - 1;
    }
}

/// Folds one logical line; the result ends with CRLF.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 25 + 2);
    fold_into(&mut out, line);
    out
}

/// Unfolds RFC 5545 content: removes every CRLF (or bare LF) followed by one
/// space or tab.
pub fn unfold(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        let nl = if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            2
        } else if bytes[i] == b'\n' {
            1
        } else {
            0
        };
        if nl > 0 && matches!(bytes.get(i + nl), Some(b' ' | b'\t')) {
            out.push_str(&input[start..i]);
            i += nl + 1;
            start = i;
        } else {
            i += nl.max(1);
        }
    }
    out.push_str(&input[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape_text("a,b;c\\d\ne\r\nf\rg\u{7}h"),
            "a\\,b\\;c\\\\d\\ne\\nf\\ng".to_owned() + "h"
        );
        assert_eq!(unescape_text("a\\,b\\;c\\\\d\\ne"), "a,b;c\\d\ne");
    }

    #[test]
    fn quotes_parameter_values_only_when_needed() {
        assert_eq!(param_value("Zhang San"), "Zhang San");
        assert_eq!(param_value("Zhang, San"), "\"Zhang, San\"");
        assert_eq!(param_value("say \"hi\""), "say 'hi'");
    }

    #[test]
    fn folds_at_75_octets_without_splitting_characters() {
        let line = format!("SUMMARY:{}", "会议".repeat(40));
        let folded = fold(&line);
        for physical in folded.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(physical.len() <= LINE_LIMIT, "{} octets", physical.len());
        }
        assert_eq!(unfold(folded.trim_end_matches("\r\n")), line);
        // The first line takes as many whole 3-octet characters as fit.
        assert_eq!(folded.split("\r\n").next().unwrap().len(), 8 + 66);
    }

    #[test]
    fn short_lines_are_untouched() {
        assert_eq!(fold("VERSION:2.0"), "VERSION:2.0\r\n");
        let exact = "X".repeat(75);
        assert_eq!(fold(&exact), format!("{exact}\r\n"));
        let over = "X".repeat(76);
        assert_eq!(fold(&over), format!("{}\r\n X\r\n", "X".repeat(75)));
    }

    proptest! {
        #[test]
        fn fold_unfold_round_trip(s in "[^\r\n]*") {
            let folded = fold(&s);
            prop_assert!(folded.ends_with("\r\n"));
            for physical in folded[..folded.len() - 2].split("\r\n") {
                prop_assert!(physical.len() <= LINE_LIMIT);
            }
            prop_assert_eq!(unfold(&folded[..folded.len() - 2]), s);
        }

        #[test]
        fn escape_round_trip(s in "\\PC*") {
            prop_assert_eq!(unescape_text(&escape_text(&s)), s);
        }
    }
}
