//! Fuzz target `client_request`: see `roster_fuzz_targets::client_request` (crates/fuzz-targets) for what it drives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roster_fuzz_targets::client_request(data));
