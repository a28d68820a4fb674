//! Talking to Feishu / Lark: tokens, calendar v4 reads with paging and sync
//! tokens, subscriptions, rate limits, webhook verification and decryption,
//! and the long-connection (WebSocket) client.
//!
//! Architecture invariant: this crate knows no target (Google, EWS, ICS).

pub mod auth;
pub mod client;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hint;
pub mod ratelimit;
pub mod rooms;
pub mod webhook;
pub mod ws;

pub use error::FeishuError;
