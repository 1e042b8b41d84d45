//! The contract v1 decoder on arbitrary bytes. The check is
//! `lotbridge::fuzzing::decode_event`, which `cargo test` also runs over this target's seeds and
//! regressions (`tests/fuzz_seeds.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotbridge::fuzzing::decode_event(data));
