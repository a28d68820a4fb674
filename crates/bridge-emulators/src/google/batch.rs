//! `POST /batch/calendar/v3` (sinks-api.md A.11): a `multipart/mixed` body
//! whose parts (`Content-Type: application/http`) are HTTP requests with a
//! path only. Each part runs through the normal API stack (token check,
//! rate limiter, faults, recording as a batch part) in order; the answer is
//! `multipart/mixed` with one HTTP response per part in the same order and
//! each `Content-ID: <x>` echoed as `Content-ID: <response-x>`.
//!
//! Outer headers other than `Content-*` apply to every part unless the part
//! sets them itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use super::error::ApiError;
use super::http::BatchPart;
use super::util::rand_urlsafe;
use super::{Inner, parts_router};

/// One parsed part.
#[derive(Debug)]
struct Part {
    content_id: Option<String>,
    request: Result<Request, ApiError>,
}

/// One answered part.
#[derive(Debug)]
struct Answer {
    content_id: Option<String>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mut pieces = ct.split(';').map(str::trim);
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
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// The parts' bytes between the delimiters (RFC 2046 §5.1.1).
fn split_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut out = Vec::new();
    let Some(mut pos) = find(body, d, 0) else {
        return out;
    };
    loop {
        let after = pos + d.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        // Skip transport padding and the line break after the delimiter.
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

/// Splits `headers CRLF CRLF body` (bare LFs accepted).
fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    if let Some(i) = find(bytes, b"\r\n\r\n", 0) {
        return (&bytes[..i], &bytes[i + 4..]);
    }
    if let Some(i) = find(bytes, b"\n\n", 0) {
        return (&bytes[..i], &bytes[i + 2..]);
    }
    (bytes, &[])
}

fn header_lines(head: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Parses the HTTP request inside a part.
fn parse_request(bytes: &[u8], outer: &HeaderMap) -> Result<Request, ApiError> {
    let bad = || {
        ApiError::bad_request("Failed to parse batch request, error: invalid HTTP request in part.")
    };
    let (head, body) = split_head(bytes);
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let request_line = lines.next().ok_or_else(bad)?.trim();
    let mut words = request_line.split_whitespace();
    let method = words
        .next()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(bad)?;
    let target = words.next().ok_or_else(bad)?;
    let path_and_query = if target.starts_with("http://") || target.starts_with("https://") {
        let url = url::Url::parse(target).map_err(|_| bad())?;
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    } else if target.starts_with('/') {
        target.to_owned()
    } else {
        return Err(bad());
    };
    let mut headers = HeaderMap::new();
    for (k, v) in outer {
        let name = k.as_str();
        if name.starts_with("content-") || name == "host" || name == "transfer-encoding" {
            continue;
        }
        headers.insert(k.clone(), v.clone());
    }
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let name = HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(v.trim()).map_err(|_| bad())?;
        headers.insert(name, value);
    }
    let body = match headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) if n <= body.len() => &body[..n],
        _ => body,
    };
    headers.remove(header::CONTENT_LENGTH);
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .body(Body::from(body.to_vec()))
        .map_err(|_| bad())?;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(BatchPart);
    Ok(req)
}

fn response_content_id(id: &str) -> String {
    let trimmed = id.trim();
    match trimmed.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
        Some(inner) => format!("<response-{inner}>"),
        None => format!("response-{trimmed}"),
    }
}

/// `POST /batch/calendar/v3`.
pub(crate) async fn batch(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.batch_count.fetch_add(1, Ordering::SeqCst);
    let Some(boundary) = boundary(&headers) else {
        return ApiError::bad_request(
            "Invalid batch request: Content-Type must be multipart/mixed with a boundary.",
        )
        .into_response();
    };
    let raw_parts = split_parts(&body, &boundary);
    if raw_parts.is_empty() {
        return ApiError::bad_request("Invalid multipart request with 0 mime parts.")
            .into_response();
    }
    let max = inner.config().batch_max_parts;
    if raw_parts.len() > max {
        return ApiError::bad_request(format!(
            "Too many requests in batch: {} parts, the maximum is {max}.",
            raw_parts.len()
        ))
        .into_response();
    }
    let parts: Vec<Part> = raw_parts
        .into_iter()
        .map(|bytes| {
            let (head, rest) = split_head(bytes);
            let part_headers = header_lines(head);
            let content_id = part_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-id"))
                .map(|(_, v)| v.clone());
            let is_http = part_headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("content-type")
                    && v.to_ascii_lowercase().starts_with("application/http")
            });
            let request = if is_http {
                parse_request(rest, &headers)
            } else {
                Err(ApiError::bad_request(
                    "Invalid batch part: Content-Type must be application/http.",
                ))
            };
            Part {
                content_id,
                request,
            }
        })
        .collect();

    let router = parts_router(Arc::clone(&inner));
    let mut answers = Vec::with_capacity(parts.len());
    for part in parts {
        let resp = match part.request {
            Ok(req) => match router.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            },
            Err(e) => e.into_response(),
        };
        let (head, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        answers.push(Answer {
            content_id: part.content_id,
            status: head.status,
            headers: head.headers,
            body,
        });
    }
    render(&answers)
}

fn render(answers: &[Answer]) -> Response {
    let boundary = format!("batch_{}", rand_urlsafe(24).replace(['-', '_'], "x"));
    let mut out: Vec<u8> = Vec::new();
    for a in answers {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(b"Content-Type: application/http\r\n");
        if let Some(id) = &a.content_id {
            out.extend_from_slice(
                format!("Content-ID: {}\r\n", response_content_id(id)).as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\n",
                a.status.as_u16(),
                a.status.canonical_reason().unwrap_or("")
            )
            .as_bytes(),
        );
        for (k, v) in &a.headers {
            if k == header::CONTENT_LENGTH {
                continue;
            }
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", a.body.len()).as_bytes());
        out.extend_from_slice(&a.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parts_and_requests() {
        let body = "preamble\r\n--b1\r\nContent-Type: application/http\r\nContent-ID: <a>\r\n\r\n\
GET /calendar/v3/calendars/primary/events/abc?x=1 HTTP/1.1\r\nIf-Match: \"1\"\r\n\r\n\r\n\
--b1\r\nContent-Type: application/http\r\n\r\nPOST https://www.googleapis.com/calendar/v3/calendars/c/events HTTP/1.1\r\n\
Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}\r\n--b1--\r\n";
        let parts = split_parts(body.as_bytes(), "b1");
        assert_eq!(parts.len(), 2);
        let mut outer = HeaderMap::new();
        outer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        outer.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/mixed; boundary=b1"),
        );
        let (h, rest) = split_head(parts[0]);
        assert!(header_lines(h).contains(&("Content-ID".into(), "<a>".into())));
        let req = parse_request(rest, &outer).unwrap();
        assert_eq!(req.uri(), "/calendar/v3/calendars/primary/events/abc?x=1");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer t");
        assert_eq!(req.headers()[header::IF_MATCH], "\"1\"");
        assert!(req.headers().get(header::CONTENT_TYPE).is_none());
        let (_, rest) = split_head(parts[1]);
        let req = parse_request(rest, &outer).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/calendar/v3/calendars/c/events");
        assert_eq!(req.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn content_ids_and_boundaries() {
        assert_eq!(response_content_id("<item1:1@x>"), "<response-item1:1@x>");
        assert_eq!(response_content_id("7"), "response-7");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/mixed; boundary=\"abc def\""),
        );
        assert_eq!(boundary(&h).as_deref(), Some("abc def"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(boundary(&h), None);
    }
}
