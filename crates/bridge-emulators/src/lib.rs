//! Faithful local servers of the services feishu-bridge talks to, for tests
//! and `feishu-bridge demo`. They model the documented behaviour (shared docs
//! `feishu-api.md`, `sinks-api.md`), validate input like the real services and
//! inject faults on demand.
//!
//! Every emulator stands on the `kit` module (server, call log, faults, signed
//! cursors, the `/_emulator` control routes) and adds only its model, routes
//! and error shapes; the kit's module docs say how to add one.
//!
//! Architecture invariant: never used by production code paths.

pub mod ews;
pub mod feishu;
pub mod google;
pub mod graph;
pub(crate) mod kit;
