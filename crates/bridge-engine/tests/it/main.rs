//! Integration tests of bridge-engine (one test binary).

mod attendees;
mod daemon;
mod explain;
mod model;
mod passes;
// The real sinks through the real engine. They live here, not in
// bridge-sinks, so that the sinks crate never depends on the engine, not
// even for its tests (the target seam, ARCHITECTURE.md).
#[allow(dead_code)]
#[path = "../../../bridge-sinks/tests/it/google_common.rs"]
mod google_common;
mod sink_ews;
mod sink_google;
mod sink_graph;
mod sink_ics;
mod static_source;
mod views;
