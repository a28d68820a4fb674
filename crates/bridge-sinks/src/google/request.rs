//! One Calendar API request and its successful answer: the types the
//! client, the batch wire format and the sink share (kept apart from the
//! client so that `batch` does not depend on it).

use serde_json::Value;

/// HTTP methods of the Calendar API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The HTTP method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// POST, PUT, PATCH and DELETE.
    pub fn is_write(self) -> bool {
        self != Self::Get
    }

    pub(crate) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Post => reqwest::Method::POST,
            Self::Put => reqwest::Method::PUT,
            Self::Patch => reqwest::Method::PATCH,
            Self::Delete => reqwest::Method::DELETE,
        }
    }
}

/// One Calendar API request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: Method,
    /// Relative to `/calendar/v3`, each segment already percent-encoded
    /// (see [`super::calendar_path`], [`super::event_path`]).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// `If-Match` (an etag, quotes included).
    pub if_match: Option<String>,
}

impl ApiRequest {
    /// A request without query, body or precondition.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            if_match: None,
        }
    }

    /// Adds a query parameter.
    pub fn with_query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Sets the JSON body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sets `If-Match`.
    pub fn with_if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    /// The `ETag` header, else the body's `etag`.
    pub etag: Option<String>,
    /// `Null` for an empty body (204).
    pub body: Value,
}
