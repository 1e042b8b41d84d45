//! The property checks of the fuzz targets, in the library so that stable `cargo test` runs
//! them too. Not an API: hidden from the docs, changed with any release.
//!
//! Each function takes one input and panics when a property is broken; returning means the
//! input passed. `fuzz/fuzz_targets/<name>.rs` is only `fuzz_target!(|data| <name>(data))`
//! (cargo-fuzz, nightly, outside CI), and `tests/fuzz_seeds.rs` runs every file of
//! `fuzz/seeds/<name>/` and `fuzz/regressions/<name>/` through the function of the same
//! name from [`TARGETS`], failing on a folder without one. A check kept here compiles with
//! every change of the code it checks, so a fuzz target cannot rot unnoticed.
//!
//! Beyond "no panic" (and, under cargo-fuzz, no hang and no sanitizer report):
//! - [`decode_event`]: a rejection is bounded and names a field; an accepted event written
//!   back as contract JSON decodes to the same event.
//! - [`map_event`]: a decoded event mapped by each vendor adapter: a `MapError` names a
//!   contract field with a bounded reason; a record is JSON of bounded size; a photo that
//!   was recompressed fits the sink's limit.
//! - [`photo_recompress`]: bytes as a JPEG (and as base64 text) through the photo policy:
//!   the output fits the limit or a drop reason says why; a header claiming more pixels than
//!   the decode bound is dropped undecoded.
//! - [`bingzhouxing_response`], [`isp_response`], [`barrier_response`], [`zvcms_response`]:
//!   a framed vendor reply (`<status>\n<Retry-After>\n<body>`) through the adapter's `classify` and token
//!   parsers: bounded reasons, no invented `Retry-After`, only a 2xx delivered.

mod contract;
mod photo;
mod responses;

pub use contract::{decode_event, map_event};
pub use photo::{max_decoded_bytes, photo_recompress};
pub use responses::{barrier_response, bingzhouxing_response, isp_response, zvcms_response};

/// A target's check: returns when the input passes, panics naming the broken property.
pub type Check = fn(&[u8]);

/// Every fuzz target by name, as `fuzz/Cargo.toml` and the seed folders name them.
pub const TARGETS: &[(&str, Check)] = &[
    ("decode_event", decode_event),
    ("map_event", map_event),
    ("photo_recompress", photo_recompress),
    ("bingzhouxing_response", bingzhouxing_response),
    ("isp_response", isp_response),
    ("barrier_response", barrier_response),
    ("zvcms_response", zvcms_response),
];

/// The check of the target called `name`.
pub fn target(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, check)| *check)
}

/// Most characters of a text that goes into logs and dead-letter headers (vendor reasons
/// and details, mapping reasons): a producer or a vendor must not set its length.
pub const MAX_REASON_CHARS: usize = 600;

fn bounded(what: &str, text: &str) {
    let chars = text.chars().count();
    assert!(chars <= MAX_REASON_CHARS, "{what} is {chars} characters, over {MAX_REASON_CHARS}");
}
