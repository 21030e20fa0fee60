//! Fuzz target: see `cellpilot_fuzz::wal_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cellpilot_fuzz::wal_replay(data));
