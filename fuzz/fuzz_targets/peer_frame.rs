//! Fuzz target `peer_frame`: see `roster_fuzz_targets::peer_frame` (crates/fuzz-targets) for what it drives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roster_fuzz_targets::peer_frame(data));
