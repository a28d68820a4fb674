//! Reading a Feishu list-events response or a bare JSON array of events, as
//! `convert` does: one malformed event never loses the others.

use serde_json::value::RawValue;

use crate::feishu::Event;
use crate::map::MapError;

/// Why the input as a whole cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("Feishu returned an error: code {code}, msg {msg:?}")]
    Feishu { code: i64, msg: String },
    #[error("{0}")]
    Shape(String),
}

/// Events read from the input, and the items that were not events.
#[derive(Debug, Default)]
pub struct Input {
    pub events: Vec<Event>,
    pub errors: Vec<MapError>,
    /// The response says more pages follow (`data.has_more`): the events
    /// are not the whole calendar.
    pub has_more: bool,
}

fn json_error(e: &serde_json::Error) -> InputError {
    let message = e.to_string();
    // serde_json appends " at line L column C"; we report them separately.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    InputError::Json {
        line: e.line(),
        column: e.column(),
        message,
    }
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    code: Option<&'a RawValue>,
    #[serde(default)]
    msg: Option<serde_json::Value>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct Data<'a> {
    #[serde(default, borrow)]
    items: Option<&'a RawValue>,
    /// Tolerant: a boolean, or absent / anything else (no more pages).
    #[serde(default)]
    has_more: Option<serde_json::Value>,
}

/// Parses `text`: `{"code":0,"data":{"items":[...]}}` or `[...]`. Items are
/// kept raw until each is read on its own, so one bad item costs only itself.
pub fn parse_events(text: &str) -> Result<Input, InputError> {
    // The items are validated (as raw JSON) in this one pass, so syntax
    // errors anywhere carry their line and column in `text`.
    let top = text;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    let mut has_more = false;
    let items: Vec<&RawValue> = match first {
        Some(b'[') => serde_json::from_str(top).map_err(|e| json_error(&e))?,
        Some(b'{') => {
            let env: Envelope<'_> = serde_json::from_str(top).map_err(|e| json_error(&e))?;
            let code = match env.code {
                Some(c) => c.get().parse::<i64>().map_err(|_| {
                    InputError::Shape(format!("\"code\" must be an integer, found {}", c.get()))
                })?,
                None => {
                    return Err(InputError::Shape(
                        "expected a Feishu response {\"code\":0,\"data\":{\"items\":[...]}} \
                         or a JSON array of events; the object has no \"code\""
                            .to_owned(),
                    ));
                }
            };
            if code != 0 {
                let msg = env
                    .msg
                    .as_ref()
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_owned();
                return Err(InputError::Feishu { code, msg });
            }
            let data = match env.data {
                Some(d) if d.get() != "null" => serde_json::from_str::<Data<'_>>(d.get())
                    .map_err(|e| InputError::Shape(format!("\"data\" must be an object: {e}")))?,
                _ => Data {
                    items: None,
                    has_more: None,
                },
            };
            has_more = data.has_more.as_ref().and_then(|v| v.as_bool()) == Some(true);
            match data.items {
                None => Vec::new(),
                Some(raw) if raw.get() == "null" => Vec::new(),
                Some(raw) => serde_json::from_str::<Vec<&RawValue>>(raw.get()).map_err(|_| {
                    let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or_default();
                    InputError::Shape(format!(
                        "\"data.items\" must be an array, found {}",
                        kind(&v)
                    ))
                })?,
            }
        }
        _ => {
            let v: serde_json::Value = serde_json::from_str(top).map_err(|e| json_error(&e))?;
            return Err(InputError::Shape(format!(
                "expected a Feishu response object or a JSON array of events, found {}",
                kind(&v)
            )));
        }
    };
    let mut out = Input {
        has_more,
        ..Input::default()
    };
    out.events.reserve(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match serde_json::from_str::<Event>(item.get()) {
            Ok(ev) => out.events.push(ev),
            Err(e) => {
                #[derive(serde::Deserialize)]
                struct Id {
                    event_id: Option<String>,
                }
                let id = serde_json::from_str::<Id>(item.get())
                    .ok()
                    .and_then(|x| x.event_id)
                    .unwrap_or_else(|| format!("<item {i}>"));
                out.errors.push(MapError {
                    event_id: id,
                    reason: format!("not a Feishu event object: {e}"),
                });
            }
        }
    }
    Ok(out)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_json_names_line_and_column() {
        let err = parse_events("{\n  \"code\": 0,\n  oops\n}").unwrap_err();
        match err {
            InputError::Json { line, column, .. } => assert_eq!((line, column), (3, 3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn feishu_error_envelope_names_code_and_msg() {
        let err = parse_events(r#"{"code":190008,"msg":"page_token or sync_token expired"}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Feishu returned an error: code 190008, msg \"page_token or sync_token expired\""
        );
    }

    #[test]
    fn a_bad_item_does_not_lose_the_others() {
        let input = parse_events(
            r#"[{"event_id":"a_0"},{"event_id":"b_0","start_time":{"timestamp":"later"}},7]"#,
        )
        .unwrap();
        assert_eq!(input.events.len(), 1);
        assert_eq!(input.errors.len(), 2);
        assert_eq!(input.errors[0].event_id, "b_0");
        assert_eq!(input.errors[1].event_id, "<item 2>");
    }

    #[test]
    fn wrong_shapes_are_explained() {
        assert!(
            parse_events("42")
                .unwrap_err()
                .to_string()
                .contains("a number")
        );
        assert!(
            parse_events("{}")
                .unwrap_err()
                .to_string()
                .contains("no \"code\"")
        );
        assert!(
            parse_events(r#"{"code":0,"data":{"items":{}}}"#)
                .unwrap_err()
                .to_string()
                .contains("must be an array")
        );
        assert_eq!(
            parse_events(r#"{"code":0,"data":{}}"#)
                .unwrap()
                .events
                .len(),
            0
        );
    }
}
