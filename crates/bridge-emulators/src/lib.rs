//! Faithful local servers of the services feishu-bridge talks to, for tests
//! and `feishu-bridge demo`. They model the documented behaviour (shared docs
//! `feishu-api.md`, `sinks-api.md`), validate input like the real services and
//! inject faults on demand.
//!
//! Architecture invariant: never used by production code paths.

mod dice;
pub mod feishu;
pub mod google;
