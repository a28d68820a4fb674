#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bridge_core::fuzzing::ics_text(data));
