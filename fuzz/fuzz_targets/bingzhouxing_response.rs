//! Bingzhouxing replies through the adapter's `classify`. The check is
//! `lotbridge::fuzzing::bingzhouxing_response`, which `cargo test` also runs over this target's seeds and
//! regressions (`tests/fuzz_seeds.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotbridge::fuzzing::bingzhouxing_response(data));
