//! Integration tests of bridge-core (one test binary for the crate).

mod fuzz_corpus;
mod golden;
mod instants;
mod roundtrip;
