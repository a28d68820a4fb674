//! The Exchange Web Services target (Exchange Server 2016 / 2019 /
//! Subscription Edition on premises, and Exchange Online while it still
//! speaks EWS): a [`Replica`](bridge_target::Replica) over SOAP 1.1.
//!
//! * `config`: `[[sinks]] kind = "ews"` (validation with key paths, `check`).
//! * `client`: the SOAP transport on `bridge-http` (Basic, NTLM or OAuth
//!   client-credentials, impersonation, throttling).
//! * `ntlm`: NTLMv2 over HTTP, one authenticated connection per session.
//! * `folder`: a named calendar folder (found, or created).
//! * `item`: a canonical event as a `t:CalendarItem` in schema order.
//! * `sink`: the replica (batches, identity by extended properties,
//!   adoption, occurrences, drift).
//! * `xml`: reading answers (quick-xml).
//!
//! Time zones, recurrence patterns and the tag property names come from the
//! shared [`crate::microsoft`] module.

pub mod availability;
pub mod client;
pub mod config;
pub mod folder;
pub mod item;
pub mod ntlm;
pub mod sink;
pub mod xml;

pub use client::{ClientConfig, Credentials, EwsClient, EwsError};
pub use sink::{EwsSink, EwsSinkConfig, OnTargetDelete, PAUSE_RETRY};

/// A built EWS sink: its requests feed `/metrics`.
#[derive(Debug)]
pub(crate) struct Built(pub(crate) std::sync::Arc<EwsSink>);

impl crate::config::BuiltTarget for Built {
    fn sink(&self) -> std::sync::Arc<dyn bridge_target::Sink> {
        self.0.clone()
    }

    fn calls(&self) -> std::collections::BTreeMap<(String, u16), u64> {
        self.0.calls()
    }
}
