//! zvcms coupon-list replies through `classify` and into the results record. The check is
//! `lotbridge::fuzzing::zvcms_response`, which `cargo test` also runs over this target's seeds and
//! regressions (`tests/fuzz_seeds.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotbridge::fuzzing::zvcms_response(data));
