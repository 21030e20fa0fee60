//! Fuzz target: see `cellpilot_fuzz::histogram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cellpilot_fuzz::histogram(data));
