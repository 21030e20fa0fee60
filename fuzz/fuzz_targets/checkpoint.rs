//! Fuzz target: see `cellpilot_fuzz::checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cellpilot_fuzz::checkpoint(data));
