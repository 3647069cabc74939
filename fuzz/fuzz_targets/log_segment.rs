//! Fuzz target `log_segment`: see `roster_fuzz_targets::log_segment` (crates/fuzz-targets) for what it drives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roster_fuzz_targets::log_segment(data));
