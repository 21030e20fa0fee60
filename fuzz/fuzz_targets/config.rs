//! Fuzz target: see `cellpilot_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cellpilot_fuzz::config(data));
