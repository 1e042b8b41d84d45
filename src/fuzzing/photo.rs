//! Vehicle photos: producer bytes through the photo policy ([`crate::photo::fit`]), where
//! they reach a third-party JPEG decoder.

use crate::photo::{fit, PhotoOutcome, PhotoPolicy, MAX_DECODED_BYTES};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use image::{ImageDecoder, ImageFormat, ImageReader};
use std::borrow::Cow;
use std::io::Cursor;

/// `data` as a JPEG file (sent base64-encoded) and, when it is UTF-8, as the base64 text
/// itself, through every policy at two limits below its length (so `recompress` always
/// runs): a photo within the limit or a drop reason, never a photo over it; a recompressed
/// photo is a JPEG that decodes; a photo whose header claims more than
/// [`max_decoded_bytes`] is never recompressed.
pub fn photo_recompress(data: &[u8]) {
    check_fit(&STANDARD.encode(data));
    if let Ok(text) = std::str::from_utf8(data) {
        check_fit(text);
    }
}

/// The most bytes the photo policy lets the decoder allocate for one photo's pixels
/// (`tests/fuzz_seeds.rs` checks allocations against it).
pub fn max_decoded_bytes() -> u64 {
    MAX_DECODED_BYTES
}

fn check_fit(text: &str) {
    let len = text.len();
    for limit in [len * 2 / 3, len / 4] {
        let (photo, outcome) = fit(text, limit, PhotoPolicy::Recompress);
        check_outcome(text, limit, photo.as_deref(), &outcome);
        match outcome {
            PhotoOutcome::Recompressed { .. } => check_recompressed(text, photo.as_deref()),
            PhotoOutcome::Unchanged => panic!("{len} bytes over a limit of {limit} sent unchanged"),
            PhotoOutcome::Dropped(_) => {}
        }
        let (photo, outcome) = fit(text, limit, PhotoPolicy::Drop);
        check_outcome(text, limit, photo.as_deref(), &outcome);
        assert!(photo.is_none(), "policy drop sent {len} bytes over a limit of {limit}");
        let (photo, outcome) = fit(text, limit, PhotoPolicy::AsIs);
        check_outcome(text, limit, photo.as_deref(), &outcome);
        if let Some(sent) = &photo {
            assert!(matches!(photo, Some(Cow::Borrowed(_))) && *sent == text, "policy as_is changed the photo");
        }
    }
}

/// A photo is sent exactly when the outcome says so, within the limit unless the policy
/// sent it as it is.
fn check_outcome(text: &str, limit: usize, photo: Option<&str>, outcome: &PhotoOutcome) {
    match (photo, outcome) {
        (None, PhotoOutcome::Dropped(_)) | (Some(_), PhotoOutcome::Unchanged) => {}
        (Some(sent), PhotoOutcome::Recompressed { before_bytes, after_bytes }) => {
            assert_eq!((*before_bytes, *after_bytes), (text.len(), sent.len()), "outcome sizes");
            assert!(sent.len() <= limit, "recompressed to {} bytes, over the limit of {limit}", sent.len());
        }
        (photo, outcome) => panic!("outcome {outcome:?} with a photo sent: {}", photo.is_some()),
    }
}

/// What recompression sent decodes as a JPEG, and came from a photo within the decode bound.
fn check_recompressed(input: &str, sent: Option<&str>) {
    let claimed = STANDARD.decode(input).ok().and_then(|jpeg| claimed_bytes(&jpeg));
    assert!(
        claimed.is_some_and(|bytes| bytes <= MAX_DECODED_BYTES),
        "recompressed a photo whose header claims {claimed:?} decoded bytes (bound {MAX_DECODED_BYTES})"
    );
    let jpeg = sent.map(|text| STANDARD.decode(text));
    let Some(Ok(jpeg)) = jpeg else { panic!("recompressed photo is not base64") };
    if let Err(e) = image::load_from_memory_with_format(&jpeg, ImageFormat::Jpeg) {
        panic!("recompressed photo does not decode: {e}");
    }
}

/// The decoded size a JPEG's header claims, read as the photo policy reads it.
fn claimed_bytes(jpeg: &[u8]) -> Option<u64> {
    let reader = ImageReader::with_format(Cursor::new(jpeg), ImageFormat::Jpeg);
    reader.into_decoder().ok().map(|decoder| decoder.total_bytes())
}
