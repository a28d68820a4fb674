#![no_main]
//! The binary has no library target, so its `config.rs` is compiled here as
//! a module of this target, with the registry of sink kinds it reads
//! through (`src/sinks.rs`, which names only other crates and `config`) and
//! the shared harness `src/fuzz_config.rs`.

#[path = "../../src/config.rs"]
#[allow(dead_code, unreachable_pub)]
mod config;
#[path = "../../src/sinks.rs"]
#[allow(dead_code, unreachable_pub)]
mod sinks;
#[path = "../../src/fuzz_config.rs"]
mod fuzz_config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_config::config_text(data));
