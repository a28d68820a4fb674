//! The delivery sink the webhook and the long connection talk to when rooms
//! are configured: room deliveries go to [`Rooms`], everything else to the
//! calendar sink it wraps (the engine's hub).
//!
//! Room deliveries are deduplicated by [`Rooms::accept`] in the same
//! transaction that makes them durable, so `seen_or_insert` only *checks*
//! the room set here: a crash between a dedupe insert and the inbox write
//! could otherwise drop a room event for good. Calendar deliveries are
//! deduplicated by the wrapped sink when they are accepted (a repeated
//! calendar hint is harmless).

use std::sync::Arc;

use async_trait::async_trait;
use bridge_feishu::hint::Delivery;
use bridge_feishu::webhook::{DeliveryError, DeliverySink};

use crate::Rooms;

/// Routes deliveries between the room system and a calendar sink.
pub struct Dispatch<S> {
    rooms: Arc<Rooms>,
    calendars: Arc<S>,
}

impl<S> std::fmt::Debug for Dispatch<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatch")
    }
}

impl<S> Dispatch<S> {
    pub fn new(rooms: Arc<Rooms>, calendars: Arc<S>) -> Self {
        Self { rooms, calendars }
    }
}

fn unavailable(e: &crate::RoomsError) -> DeliveryError {
    DeliveryError::Unavailable(e.to_string())
}

#[async_trait]
impl<S: DeliverySink + 'static> DeliverySink for Dispatch<S> {
    async fn seen_or_insert(&self, dedupe_key: &str) -> Result<bool, DeliveryError> {
        self.rooms
            .seen(dedupe_key)
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn accept(&self, delivery: Delivery) -> Result<(), DeliveryError> {
        if Rooms::handles(&delivery) {
            return self
                .rooms
                .accept(&delivery)
                .await
                .map_err(|e| unavailable(&e));
        }
        if self.calendars.seen_or_insert(&delivery.dedupe_key).await? {
            return Ok(());
        }
        let key = delivery.dedupe_key.clone();
        if let Err(e) = self.calendars.accept(delivery).await {
            if let Err(f) = self.calendars.forget(&key).await {
                tracing::error!(dedupe_key = %key, error = %f, "could not forget the dedupe key of a failed delivery");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn forget(&self, _dedupe_key: &str) -> Result<(), DeliveryError> {
        // Nothing to undo: room deliveries are all-or-nothing, calendar
        // ones are forgotten in `accept`.
        Ok(())
    }
}
