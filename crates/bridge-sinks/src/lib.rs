//! Targets, one module each, behind the target seam ([`bridge_target`]):
//! `google` and `graph` are replicas (`microsoft` holds what Graph and EWS share), `ics` and
//! `feed` (served feeds) projections, `memory` an in-memory replica
//! for tests.
//!
//! Architecture invariant: sink modules do not depend on each other, and
//! this crate depends on neither the engine nor the Feishu crate nor the
//! store.

pub mod config;
pub mod ews;
pub mod feed;
pub mod google;
pub mod graph;
pub mod ics;
pub mod memory;
pub mod microsoft;
