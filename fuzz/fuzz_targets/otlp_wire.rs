//! Fuzz target: see `cellpilot_fuzz::otlp_wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cellpilot_fuzz::otlp_wire(data));
