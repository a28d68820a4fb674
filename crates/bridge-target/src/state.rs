use std::fmt;

use async_trait::async_trait;

/// Why the state could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state: {0}")]
pub struct StateError(pub String);

/// A target's own small state (the calendars it created, ...), scoped to
/// the target: `name` is a kind of state, `key` one entry of it, values are
/// JSON text. The engine implements it over the store; a target never sees
/// the store itself.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    async fn get(&self, name: &str, key: &str) -> Result<Option<String>, StateError>;
    /// Durable on return.
    async fn put(&self, name: &str, key: &str, value_json: &str) -> Result<(), StateError>;
    /// Returns whether it existed.
    async fn delete(&self, name: &str, key: &str) -> Result<bool, StateError>;
}
