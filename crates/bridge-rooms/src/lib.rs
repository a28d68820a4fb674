//! Meeting rooms: the bridge as a third-party room system (issue #15,
//! `rooms.md`).
//!
//! For rooms whose bookings Feishu leaves to an external system, Feishu
//! pushes `third_party_meeting_room_event_{created,updated,deleted}`; the
//! bridge decides each booking against the room's booking rules (read with
//! `reserve_configs/reserve_scope`, inherited through the level path) and
//! its ledger of accepted bookings, writes accepted bookings to the room's
//! target, and answers Feishu with `meeting_room/instance/reply`.
//!
//! Layering: this crate depends on `bridge-feishu` (client, pushes),
//! `bridge-store` (room tables), `bridge-target` (writing the room's
//! calendar) and `bridge-core`. It is its own crate rather than a module of
//! the engine because it shares nothing with the calendar sync pipeline
//! (no planner, no series diff): it has its own inbox, ledger and outbox,
//! and the binary composes it with the engine's hub through [`Dispatch`].
//!
//! - [`rules`]: booking rules per node and their resolution;
//! - [`decide`]: the decision for one booking (pure);
//! - [`service`]: the registry, the inbox, decisions, targets, replies;
//! - [`target`]: the seam to the room's target;
//! - [`replica`]: rooms written to a replica (Google, EWS, Graph);
//! - [`dispatch`]: the delivery sink shared with the calendar hub;
//! - [`doc`]: the documents kept in the store.

pub mod decide;
pub mod dispatch;
pub mod doc;
pub mod replica;
pub mod rules;
pub mod service;
pub mod target;

pub use dispatch::Dispatch;
pub use replica::{BusyFn, BusyQuery, ReplicaRoom};
pub use service::{AdminDecision, Mapping, RoomNumbers, RoomView, Rooms, Selector, Settings};
pub use target::{Booked, ProjectionRoom, RoomCalendar};

/// What can go wrong in the room system.
#[derive(Debug, thiserror::Error)]
pub enum RoomsError {
    #[error(transparent)]
    Store(#[from] bridge_store::StoreError),
    #[error(transparent)]
    Feishu(#[from] bridge_feishu::FeishuError),
    #[error("the room target failed: {0}")]
    Target(String),
    #[error("the room calendar's busy times cannot be read: {0}")]
    BusyUnavailable(String),
    #[error("stored {what} {key:?} cannot be read: {reason}")]
    Doc {
        what: &'static str,
        key: String,
        reason: String,
    },
    #[error("no such booking or room: {0}")]
    NotFound(String),
    #[error(
        "booking {booking} is {status}, not pending: only pending bookings can be approved or declined"
    )]
    NotPending {
        booking: String,
        status: &'static str,
    },
    #[error(
        "{0:?} is not a booking id (expected <room_id>/<uid>/<original_time>, as `rooms bookings` shows)"
    )]
    BadId(String),
}
