//! The delivery log of push messages, shared by the push machinery and its
//! two transports (webhook, long connection): what a transport delivers
//! ([`OutMsg`]) and where it writes down every attempt. Kept apart from
//! `push` so the transports do not depend on the module that calls them.

use serde::Serialize;
use serde_json::Value;

use super::util::now_ms;
use super::{Inner, lock};

/// How a push message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Webhook,
    Ws,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub at_ms: i64,
    /// HTTP status (webhook) or ack `code` (WS); `None` for timeouts, network
    /// errors and dropped connections.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// A re-send of an already delivered message (the `duplicate_rate` fault).
    pub duplicate: bool,
}

/// The delivery record of one push message.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// `header.event_id` (v2) or `uuid` (v1).
    pub event_id: String,
    pub event_type: String,
    pub transport: Transport,
    /// Attempts so far, duplicates included.
    pub attempts: u32,
    pub delivered_ok: bool,
    /// True once every retry failed.
    pub gave_up: bool,
    pub last_status: Option<u16>,
    /// Ack payloads received over WS, in order.
    pub acks: Vec<Value>,
    /// `biz_rt` header values seen on WS acks.
    pub biz_rt: Vec<String>,
    /// Frames per WS transmission (`sum`).
    pub parts: usize,
    /// The plaintext envelope.
    pub payload: Value,
    pub attempt_log: Vec<Attempt>,
}

/// A message ready to be delivered.
#[derive(Debug)]
pub(crate) struct OutMsg {
    pub(crate) id: String,
    pub(crate) event_type: String,
    pub(crate) body: Vec<u8>,
    /// Index into the delivery log.
    pub(crate) slot: usize,
}

/// The delivery log.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    deliveries: std::sync::Mutex<Vec<Delivery>>,
}

impl Outbox {
    /// Logs a new message (no attempt yet); returns what a transport needs.
    pub(crate) fn open(
        &self,
        id: String,
        event_type: String,
        transport: Transport,
        payload: Value,
    ) -> OutMsg {
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let mut log = lock(&self.deliveries);
        log.push(Delivery {
            event_id: id.clone(),
            event_type: event_type.clone(),
            transport,
            attempts: 0,
            delivered_ok: false,
            gave_up: false,
            last_status: None,
            acks: Vec::new(),
            biz_rt: Vec::new(),
            parts: 0,
            payload,
            attempt_log: Vec::new(),
        });
        OutMsg {
            id,
            event_type,
            body,
            slot: log.len() - 1,
        }
    }

    /// Every message so far with its attempts.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    /// The slot of the latest message with this id.
    pub(crate) fn slot_of(&self, event_id: &str) -> Option<usize> {
        lock(&self.deliveries)
            .iter()
            .rposition(|d| d.event_id == event_id)
    }
}

/// Updates one delivery record.
pub(crate) fn update_delivery(inner: &Inner, slot: usize, f: impl FnOnce(&mut Delivery)) {
    if let Some(d) = lock(&inner.outbox.deliveries).get_mut(slot) {
        f(d);
    }
}

/// Logs one attempt.
pub(crate) fn log_attempt(
    inner: &Inner,
    slot: usize,
    status: Option<u16>,
    error: Option<String>,
    duplicate: bool,
) {
    update_delivery(inner, slot, |d| {
        d.attempts += 1;
        d.last_status = status;
        d.attempt_log.push(Attempt {
            at_ms: now_ms(),
            status,
            error,
            duplicate,
        });
    });
}
