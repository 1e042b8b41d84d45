//! Barrier-gate replies through `classify` and the token-answer parser. The check is
//! `lotbridge::fuzzing::barrier_response`, which `cargo test` also runs over this target's seeds and
//! regressions (`tests/fuzz_seeds.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotbridge::fuzzing::barrier_response(data));
