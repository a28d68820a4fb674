//! The Microsoft Graph (Exchange Online) target: configuration, tokens
//! (client secret, certificate assertion, delegated refresh token), the
//! event JSON (pure), a client with `$batch` and per-mailbox concurrency,
//! and the sink. See `graph.md` (shared docs) for the facts it rests on.

pub mod auth;
pub mod authorize;
pub mod client;
pub mod config;
mod drift;
pub mod error;
pub mod resource;
pub mod schedule;
pub mod sink;

pub use auth::{Certificate, Credentials};
pub use client::{ClientConfig, GraphClient};
pub use error::GraphError;
pub use sink::{GraphSink, GraphSinkConfig, OnTargetDelete, TargetCalendar};

/// The store token name of a sink's delegated refresh token.
pub fn token_name(sink_id: &str) -> String {
    format!(
        "graph_refresh:{}",
        sink_id.strip_prefix("graph:").unwrap_or(sink_id)
    )
}
