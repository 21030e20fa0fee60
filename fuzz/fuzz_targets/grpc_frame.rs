//! Fuzz target: see `cellpilot_fuzz::grpc_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cellpilot_fuzz::grpc_frame(data));
