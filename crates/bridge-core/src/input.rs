//! Reading a Feishu list-events response or a bare JSON array of events, as
//! `convert` does: one malformed event never loses the others.

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

/// Parses `text`: `{"code":0,"data":{"items":[...]}}` or `[...]`.
pub fn parse_events(text: &str) -> Result<Input, InputError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut obj) => {
            let code = match obj.get("code") {
                Some(c) => c.as_i64().ok_or_else(|| {
                    InputError::Shape(format!("\"code\" must be an integer, found {c}"))
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
                let msg = obj
                    .get("msg")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_owned();
                return Err(InputError::Feishu { code, msg });
            }
            match obj
                .remove("data")
                .and_then(|mut d| d.get_mut("items").map(std::mem::take))
            {
                Some(serde_json::Value::Array(items)) => items,
                Some(serde_json::Value::Null) | None => Vec::new(),
                Some(other) => {
                    return Err(InputError::Shape(format!(
                        "\"data.items\" must be an array, found {}",
                        kind(&other)
                    )));
                }
            }
        }
        other => {
            return Err(InputError::Shape(format!(
                "expected a Feishu response object or a JSON array of events, found {}",
                kind(&other)
            )));
        }
    };
    let mut out = Input::default();
    for (i, item) in items.into_iter().enumerate() {
        let id = item
            .get("event_id")
            .and_then(|v| v.as_str())
            .map_or_else(|| format!("<item {i}>"), str::to_owned);
        match serde_json::from_value::<Event>(item) {
            Ok(ev) => out.events.push(ev),
            Err(e) => out.errors.push(MapError {
                event_id: id,
                reason: format!("not a Feishu event object: {e}"),
            }),
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
