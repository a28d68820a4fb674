#![no_main]
//! The binary has no library target, so its `config.rs` is compiled here as
//! a module of this target (it names only other crates, never `crate::`),
//! together with the shared harness `src/fuzz_config.rs`.

#[path = "../../src/config.rs"]
#[allow(dead_code, unreachable_pub)]
mod config;
#[path = "../../src/fuzz_config.rs"]
mod fuzz_config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_config::config_text(data));
