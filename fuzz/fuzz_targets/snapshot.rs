//! Fuzz target `snapshot`: see `roster_fuzz_targets::snapshot` (crates/fuzz-targets) for what it drives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roster_fuzz_targets::snapshot(data));
