//! The batch wire format (sinks-api.md A.11): `multipart/mixed`, one
//! `application/http` part per request with a path-only request line, parts
//! named `Content-ID: <item-N>`; the answer holds one HTTP response per part,
//! named `<response-item-N>`.

use super::error::GoogleError;
use super::request::ApiRequest;

/// Path prefix of the Calendar API inside a batch part.
pub const API_PREFIX: &str = "/calendar/v3";

/// `?a=b&c=d` (form-encoded; empty without pairs).
pub(crate) fn query_string(query: &[(String, String)]) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(k, v);
    }
    format!("?{}", q.finish())
}

/// `/calendar/v3<path>?<query>`: the request target of a part.
pub fn request_target(req: &ApiRequest) -> String {
    format!("{API_PREFIX}{}{}", req.path, query_string(&req.query))
}

/// A random boundary that cannot occur in JSON bodies' escaping.
pub fn new_boundary() -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..32)
        .map(|_| char::from(SET[rand::random_range(0..SET.len())]))
        .collect();
    format!("batch_{tail}")
}

/// `item-N`: the Content-ID of the request with index `n`.
pub fn content_id(n: usize) -> String {
    format!("item-{n}")
}

/// The index in `response-item-N` / `<response-item-N>` (or the request's
/// own `item-N`).
pub fn item_index(content_id: &str) -> Option<usize> {
    let id = content_id.trim();
    let id = id
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(id);
    let id = id.strip_prefix("response-").unwrap_or(id);
    id.strip_prefix("item-")?.parse().ok()
}

/// The body of a batch request; parts are `(index, request)`. The content
/// type is `multipart/mixed; boundary=<boundary>`.
pub fn encode(parts: &[(usize, &ApiRequest)], boundary: &str) -> Vec<u8> {
    let mut out = String::new();
    for (n, req) in parts {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{}>\r\n\r\n",
            content_id(*n)
        ));
        out.push_str(&format!(
            "{} {} HTTP/1.1\r\n",
            req.method.as_str(),
            request_target(req)
        ));
        if let Some(etag) = &req.if_match {
            out.push_str(&format!("If-Match: {etag}\r\n"));
        }
        match &req.body {
            Some(body) => {
                let text = body.to_string();
                out.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}\r\n",
                    text.len()
                ));
            }
            None => out.push_str("\r\n"),
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

/// One decoded part of a batch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartResponse {
    pub content_id: Option<String>,
    pub status: u16,
    /// Headers of the inner HTTP response, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl PartResponse {
    /// A header of the inner response (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The `boundary` of a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';').map(str::trim);
    if !pieces.next()?.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    pieces
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty())
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() || hay.len() - from < needle.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The bytes of each part between the delimiters (RFC 2046 §5.1.1).
fn split_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut out = Vec::new();
    let Some(mut pos) = find(body, d, 0) else {
        return out;
    };
    loop {
        let after = pos + d.len();
        if body.get(after..).is_none_or(|rest| rest.starts_with(b"--")) {
            break;
        }
        let start = find(body, b"\n", after).map_or(body.len(), |i| i + 1);
        let Some(next) = find(body, d, start) else {
            break;
        };
        let mut end = next;
        if end > start && body[end - 1] == b'\n' {
            end -= 1;
            if end > start && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        out.push(&body[start..end]);
        pos = next;
    }
    out
}

/// `head CRLF CRLF rest` (bare LF accepted).
fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    let crlf = find(bytes, b"\r\n\r\n", 0);
    let lf = find(bytes, b"\n\n", 0);
    match (crlf, lf) {
        (Some(a), Some(b)) if b < a => (&bytes[..b], &bytes[b + 2..]),
        (Some(a), _) => (&bytes[..a], &bytes[a + 4..]),
        (None, Some(b)) => (&bytes[..b], &bytes[b + 2..]),
        (None, None) => (bytes, &[]),
    }
}

fn header_lines(head: &str) -> Vec<(String, String)> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn trim_crlf(mut b: &[u8]) -> &[u8] {
    while let Some(rest) = b.strip_suffix(b"\n") {
        b = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    b
}

/// Decodes a batch answer into its parts, in the order received.
pub fn decode(content_type: &str, body: &[u8]) -> Result<Vec<PartResponse>, GoogleError> {
    let boundary = boundary_of(content_type).ok_or_else(|| {
        GoogleError::Decode(format!(
            "batch answer is not multipart/mixed with a boundary: {content_type:?}"
        ))
    })?;
    split_parts(body, &boundary)
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let bad = |what: &str| GoogleError::Decode(format!("batch answer part {i}: {what}"));
            let (part_head, http) = split_head(raw);
            let part_headers = header_lines(&String::from_utf8_lossy(part_head));
            let content_id = part_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-id"))
                .map(|(_, v)| v.clone());
            let (head, rest) = split_head(http);
            let head = String::from_utf8_lossy(head);
            let mut lines = head.lines();
            let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
            let mut words = status_line.split_whitespace();
            if !words.next().is_some_and(|v| v.starts_with("HTTP/")) {
                return Err(bad(&format!("bad status line {status_line:?}")));
            }
            let status: u16 = words
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
            let headers = header_lines(&lines.collect::<Vec<_>>().join("\n"));
            let length = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok());
            let body = match length {
                Some(n) if n <= rest.len() => &rest[..n],
                _ => trim_crlf(rest),
            };
            Ok(PartResponse {
                content_id,
                status,
                headers,
                body: body.to_vec(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::google::request::Method;

    fn req(method: Method, path: &str) -> ApiRequest {
        ApiRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            if_match: None,
        }
    }

    #[test]
    fn encodes_parts_per_the_guide() {
        let mut put = req(Method::Put, "/calendars/a%40b/events/abc");
        put.body = Some(json!({"summary": "x"}));
        put.if_match = Some("\"etag1\"".into());
        put.query = vec![("sendUpdates".into(), "none".into())];
        let del = req(Method::Delete, "/calendars/a%40b/events/def");
        let body = encode(&[(0, &put), (7, &del)], "BOUND");
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "--BOUND\r\nContent-Type: application/http\r\nContent-ID: <item-0>\r\n\r\n\
             PUT /calendar/v3/calendars/a%40b/events/abc?sendUpdates=none HTTP/1.1\r\n\
             If-Match: \"etag1\"\r\n\
             Content-Type: application/json\r\nContent-Length: 15\r\n\r\n\
             {\"summary\":\"x\"}\r\n\
             --BOUND\r\nContent-Type: application/http\r\nContent-ID: <item-7>\r\n\r\n\
             DELETE /calendar/v3/calendars/a%40b/events/def HTTP/1.1\r\n\r\n\
             --BOUND--\r\n"
        );
    }

    #[test]
    fn decodes_answers_with_and_without_lengths() {
        let body = "--xyz\r\nContent-Type: application/http\r\nContent-ID: <response-item-3>\r\n\r\n\
HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"id\":\"abc\"}\n\r\n\
--xyz\r\nContent-Type: application/http\r\nContent-ID: response-item-4\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\r\n\
--xyz\r\nContent-Type: application/http\r\n\r\n\
HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n{\"error\":{}}\r\n--xyz--\r\n";
        let parts = decode("multipart/mixed; boundary=\"xyz\"", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].status, 200);
        assert_eq!(parts[0].header("etag"), Some("\"e1\""));
        assert_eq!(parts[0].body, b"{\"id\":\"abc\"}\n");
        assert_eq!(item_index(parts[0].content_id.as_deref().unwrap()), Some(3));
        assert_eq!(parts[1].status, 204);
        assert!(parts[1].body.is_empty());
        assert_eq!(item_index(parts[1].content_id.as_deref().unwrap()), Some(4));
        assert_eq!(parts[2].content_id, None);
        assert_eq!(parts[2].body, b"{\"error\":{}}");
        assert!(decode("application/json", b"{}").is_err());
        let junk = "--q\r\nContent-Type: application/http\r\n\r\nnot http\r\n--q--";
        assert!(decode("multipart/mixed; boundary=q", junk.as_bytes()).is_err());
    }

    #[test]
    fn content_ids() {
        assert_eq!(item_index("<response-item-12>"), Some(12));
        assert_eq!(item_index("item-0"), Some(0));
        assert_eq!(item_index("<response-other>"), None);
        let b = new_boundary();
        assert!(b.starts_with("batch_") && b.len() == 38);
    }
}
