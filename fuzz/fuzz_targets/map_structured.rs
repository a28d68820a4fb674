#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bridge_core::fuzzing::map_structured(data));
