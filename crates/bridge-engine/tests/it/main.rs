//! Integration tests of bridge-engine (one test binary).

mod model;
mod passes;
