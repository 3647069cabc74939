//! Fuzz target `client_conn`: see `roster_fuzz_targets::client_conn` (crates/fuzz-targets) for what it drives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roster_fuzz_targets::client_conn(data));
