//! Targets, one module each, behind [`bridge_engine::Sink`].
//!
//! Architecture invariant: sink modules do not depend on each other.

pub mod config;
pub mod google;
pub mod ics;
