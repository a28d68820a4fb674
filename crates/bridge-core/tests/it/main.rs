//! Integration tests of bridge-core (one test binary for the crate).

mod golden;
mod instants;
mod roundtrip;
