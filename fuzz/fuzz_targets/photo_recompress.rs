//! Bytes as a JPEG (and as base64 text) through the photo policy. The check is
//! `lotbridge::fuzzing::photo_recompress`, which `cargo test` also runs over this target's seeds and
//! regressions (`tests/fuzz_seeds.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lotbridge::fuzzing::photo_recompress(data));
