//! Decoded events mapped by every vendor adapter. The check is
//! `lotbridge::fuzzing::map_event`, which `cargo test` also runs over this target's seeds and
//! regressions (`tests/fuzz_seeds.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotbridge::fuzzing::map_event(data));
