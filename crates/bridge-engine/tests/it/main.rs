//! Integration tests of bridge-engine (one test binary).

mod daemon;
mod model;
mod passes;
