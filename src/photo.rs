//! Per-sink photo policy: makes a vehicle photo (base64 JPEG) fit a vendor's size limit.
//!
//! Vendors cap the length of the base64 text they accept (Bingzhouxing 50 000 bytes,
//! Inspur 512 KiB). [`fit`] checks the photo cheaply, passes fitting photos through
//! without copying, and applies the sink's [`PhotoPolicy`] to the rest. Recompression
//! estimates the target scale from the size ratio and corrects it from each measured
//! encode, so a typical photo needs one or two encodes. Pure code: no I/O, no async.

use std::borrow::Cow;
use std::io::Cursor;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, GenericImageView, ImageDecoder, ImageFormat, ImageReader};

/// What a sink does with a photo whose base64 text is longer than the vendor's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoPolicy {
    /// Re-encode smaller (resolution first, lower quality after a narrow miss) until it
    /// fits; drop it if it cannot.
    #[default]
    Recompress,
    /// Send the event without its photo.
    Drop,
    /// Send the photo untouched and let the vendor decide.
    AsIs,
}

/// What happened to one photo (the engine counts these in metrics; reason strings are
/// bounded label values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhotoOutcome {
    /// The input text is sent as it is.
    Unchanged,
    /// The photo was re-encoded to fit; sizes are lengths of the base64 text.
    Recompressed {
        /// Length of the input base64 text.
        before_bytes: usize,
        /// Length of the base64 text that is sent.
        after_bytes: usize,
    },
    /// The event is sent without a photo.
    Dropped(DropReason),
}

/// Why a photo was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Over the limit and the policy is [`PhotoPolicy::Drop`].
    TooLarge,
    /// Not well-formed standard base64 with padding.
    InvalidBase64,
    /// Does not start with the JPEG SOI marker, or does not decode as a JPEG.
    NotJpeg,
    /// Recompression could not reach the limit (or the image is too big to decode safely).
    CannotFit,
    /// The JPEG header claims more pixels than [`MAX_PIXELS`] or a side longer than
    /// [`MAX_SIDE`]: refused before decoding.
    TooManyPixels,
}

impl DropReason {
    /// The metric label value for this reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::TooLarge => "too_large",
            DropReason::InvalidBase64 => "invalid_base64",
            DropReason::NotJpeg => "not_jpeg",
            DropReason::CannotFit => "cannot_fit",
            DropReason::TooManyPixels => "too_many_pixels",
        }
    }
}

/// Start of every JPEG file: SOI marker followed by the first byte of the next marker.
const JPEG_SOI: [u8; 3] = [0xFF, 0xD8, 0xFF];
/// Qualities tried in order; a lower one only after a narrow miss, or at the smallest size.
const QUALITIES: [u8; 3] = [80, 65, 50];
/// Upper bound on encodes per photo, so a pathological image cannot stall the sink.
const MAX_ENCODES: usize = 6;
/// Below this long side a vehicle photo is useless to the vendor, so stop shrinking.
const MIN_LONG_SIDE: u32 = 64;
/// Aim this far below the budget: size estimates are rough, and a near miss costs a
/// whole extra encode while a little unused budget costs nothing.
const SIZE_MARGIN: f64 = 0.85;
/// A miss by less than this ratio is fixed by lowering quality rather than resolution.
const NEAR_MISS: f64 = 0.8;
/// A fitting result this full is good enough; a smaller one is worth one more, larger
/// encode (noise in a photo averages out when shrinking, so estimates can undershoot).
const GOOD_FILL: f64 = 0.6;
/// Sum of the 64 entries of the standard luminance table (JPEG spec Annex K), which is
/// what IJG quality 50 uses unscaled.
const IJG_LUMA_TABLE_SUM: u32 = 3688;
/// Photo JPEG size goes roughly as the quantization scale to this power (IJG q95/q80
/// is about 2.3x, q50/q80 about 0.6x).
const QUALITY_EXPONENT: f64 = -0.6;
/// JPEG size grows with pixel count, so with the square of the scale, until an
/// encode of the image itself says otherwise.
const AREA_EXPONENT: f64 = 2.0;
/// Bounds on the measured size exponent, so one odd sample cannot send the search far.
const EXPONENT_RANGE: (f64, f64) = (0.7, 3.0);
/// Stop searching once the fitting and missing scales are this close.
const CONVERGED_RATIO: f64 = 1.05;
/// Largest photo decoded, in pixels: 24 MP (6000 x 4000), above any traffic camera. A
/// few-hundred-byte JPEG can claim 65535 x 65535; its header is read, its pixels never are.
pub const MAX_PIXELS: u64 = 24_000_000;
/// Longest side decoded: 10 000 pixels (8K is 7680). A 65320 x 32 strip is under the pixel
/// bound and would cost seconds of CPU per recompression.
pub const MAX_SIDE: u32 = 10_000;
/// The most memory a decoded photo may take (4 bytes a pixel, as CMYK), checked as well as
/// the pixel bound.
pub(crate) const MAX_DECODED_BYTES: u64 = MAX_PIXELS * 4;
/// Recompression works on at most this many pixels: a larger photo is first cut down with
/// an integer box filter (no float buffer), so the resizes of the search never touch the
/// full image. 4 MP keeps more detail than any vendor's limit holds at quality 80 (ISP's
/// 512 KiB of base64 fits about 2 MP of a photo).
const WORK_PIXELS: u64 = 4_000_000;

/// Returns the base64 text to send (None = send without photo) and what happened.
///
/// `limit` is the maximum length of the base64 text the vendor accepts. The input must be
/// standard base64 with padding (no line breaks, no `data:` prefix) of a JPEG. A photo
/// that fits is only scanned, never decoded, and is returned borrowed.
pub fn fit(jpeg_base64: &str, limit: usize, policy: PhotoPolicy) -> (Option<Cow<'_, str>>, PhotoOutcome) {
    if let Err(reason) = check_jpeg_base64(jpeg_base64) {
        return (None, PhotoOutcome::Dropped(reason));
    }
    if jpeg_base64.len() <= limit {
        return (Some(Cow::Borrowed(jpeg_base64)), PhotoOutcome::Unchanged);
    }
    match policy {
        PhotoPolicy::AsIs => (Some(Cow::Borrowed(jpeg_base64)), PhotoOutcome::Unchanged),
        PhotoPolicy::Drop => (None, PhotoOutcome::Dropped(DropReason::TooLarge)),
        PhotoPolicy::Recompress => match recompress(jpeg_base64, limit) {
            Ok(text) => {
                let outcome = PhotoOutcome::Recompressed { before_bytes: jpeg_base64.len(), after_bytes: text.len() };
                (Some(Cow::Owned(text)), outcome)
            }
            Err(reason) => (None, PhotoOutcome::Dropped(reason)),
        },
    }
}

/// Validates base64 shape in one scan and decodes only the first and last 4-character
/// groups: the first carries the SOI marker, the last the padding and trailing bits.
fn check_jpeg_base64(text: &str) -> Result<(), DropReason> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return Err(DropReason::InvalidBase64);
    }
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(DropReason::NotJpeg); // empty text is valid base64 of nothing
    };
    let (body, last) = bytes.split_at(body_len);
    if !all_base64_symbols(body) {
        return Err(DropReason::InvalidBase64);
    }
    let mut scratch = [0u8; 3];
    STANDARD.decode_slice(last, &mut scratch).map_err(|_| DropReason::InvalidBase64)?;
    let head = bytes.get(..4).ok_or(DropReason::InvalidBase64)?;
    let decoded = STANDARD.decode_slice(head, &mut scratch).map_err(|_| DropReason::InvalidBase64)?;
    if scratch.get(..decoded) == Some(&JPEG_SOI[..]) {
        Ok(())
    } else {
        Err(DropReason::NotJpeg)
    }
}

/// Whether every byte is in the standard base64 alphabet (`=` padding excluded). Table
/// lookups without early exit per byte: base64 text is random, so a per-byte branch would
/// mispredict constantly.
pub(crate) fn all_base64_symbols(bytes: &[u8]) -> bool {
    // Comparisons rather than a table so the compiler can vectorize: ~10x faster on photos.
    bytes.chunks(256).all(|chunk| chunk.iter().fold(0u8, |bad, &b| bad | u8::from(!is_base64_symbol(b))) == 0)
}

/// One of the 64 symbols of the standard alphabet, without branches.
#[inline(always)]
fn is_base64_symbol(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter | digit | (b == b'+') | (b == b'/')
}

fn recompress(text: &str, limit: usize) -> Result<String, DropReason> {
    let jpeg = STANDARD.decode(text).map_err(|_| DropReason::InvalidBase64)?;
    let image = decode_jpeg(&jpeg)?;
    let (image, full_len) = working_copy(image, reencoded_len_estimate(&jpeg));
    let (shrunk, _encodes) = shrink(&image, full_len, max_jpeg_len(limit))?;
    Ok(STANDARD.encode(shrunk))
}

/// Largest JPEG whose padded base64 text is at most `limit` bytes.
fn max_jpeg_len(limit: usize) -> usize {
    limit / 4 * 3
}

/// Expected size of `jpeg` re-encoded at the first quality, from the scale of its own
/// luminance quantization table: photo size goes roughly as that scale to the power
/// [`QUALITY_EXPONENT`]. Without a readable table, assume the same size.
fn reencoded_len_estimate(jpeg: &[u8]) -> usize {
    let ratio = luma_quant_table(jpeg).map_or(1.0, |table| {
        let sum: u32 = table.iter().map(|&v| u32::from(v)).sum();
        let source_scale = f64::from(sum) * 100.0 / f64::from(IJG_LUMA_TABLE_SUM);
        (ijg_scale(QUALITIES[0]) / source_scale).powf(QUALITY_EXPONENT)
    });
    (jpeg.len() as f64 * ratio.clamp(0.25, 4.0)) as usize
}

/// Percent by which the IJG encoder (libjpeg, and the image crate) scales the standard
/// tables for `quality`.
fn ijg_scale(quality: u8) -> f64 {
    let quality = f64::from(quality.clamp(1, 100));
    if quality < 50.0 {
        5000.0 / quality
    } else {
        200.0 - 2.0 * quality
    }
}

/// The 8-bit quantization table 0 (luminance), if a DQT segment before the scan has one.
fn luma_quant_table(jpeg: &[u8]) -> Option<&[u8]> {
    let mut pos = 2; // after SOI
    loop {
        if *jpeg.get(pos)? != 0xFF {
            return None;
        }
        match *jpeg.get(pos + 1)? {
            0xFF => pos += 1, // fill byte
            0xDA | 0xD9 => return None,
            marker => {
                let len = usize::from(u16::from_be_bytes([*jpeg.get(pos + 2)?, *jpeg.get(pos + 3)?]));
                let segment = jpeg.get(pos + 4..pos + 2 + len)?;
                if let Some(table) = (marker == 0xDB).then(|| table_zero(segment)).flatten() {
                    return Some(table);
                }
                pos += 2 + len;
            }
        }
    }
}

/// Table 0 among the tables of one DQT segment, if it has 8-bit precision.
fn table_zero(mut segment: &[u8]) -> Option<&[u8]> {
    while let Some((&precision_and_id, rest)) = segment.split_first() {
        let size = if precision_and_id >> 4 == 0 { 64 } else { 128 };
        if precision_and_id == 0 {
            return rest.get(..size);
        }
        segment = rest.get(size..)?;
    }
    None
}

/// Decodes with a memory cap and applies the EXIF orientation, which re-encoding drops.
fn decode_jpeg(jpeg: &[u8]) -> Result<DynamicImage, DropReason> {
    let reader = ImageReader::with_format(Cursor::new(jpeg), ImageFormat::Jpeg);
    let mut decoder = reader.into_decoder().map_err(|_| DropReason::NotJpeg)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS || width.max(height) > MAX_SIDE {
        return Err(DropReason::TooManyPixels);
    }
    if decoder.total_bytes() > MAX_DECODED_BYTES {
        return Err(DropReason::CannotFit);
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|_| DropReason::NotJpeg)?;
    image.apply_orientation(orientation);
    Ok(match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    })
}

/// `image` cut down to at most [`WORK_PIXELS`] (aspect kept), with the expected size of its
/// full-scale encode (`full_len` for the image as decoded) scaled by area.
fn working_copy(image: DynamicImage, full_len: usize) -> (DynamicImage, usize) {
    let (width, height) = image.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels <= WORK_PIXELS {
        return (image, full_len);
    }
    let ratio = (WORK_PIXELS as f64 / pixels as f64).sqrt();
    let side = |s: u32| ((f64::from(s) * ratio).floor() as u32).max(1);
    let small = image.thumbnail_exact(side(width), side(height));
    (small, (full_len as f64 * ratio * ratio) as usize)
}

/// Encodes at an estimated scale and corrects from each measured size until the
/// result fits and fills at least [`GOOD_FILL`] of the budget, or attempts run out.
/// `full_len` is the expected size of a full-scale encode at the first quality.
/// Returns the JPEG and how many encodes it took.
fn shrink(image: &DynamicImage, full_len: usize, budget: usize) -> Result<(Vec<u8>, usize), DropReason> {
    let (width, height) = image.dimensions();
    let mut search = Search::new(scale_for(budget, full_len, AREA_EXPONENT));
    let mut encodes = 0;
    while encodes < MAX_ENCODES {
        let (w, h) = scaled_size(width, height, search.scale);
        let jpeg = encode(image, w, h, QUALITIES[search.quality])?;
        encodes += 1;
        let full_size = (w, h) == (width, height);
        if jpeg.len() <= budget && (full_size || jpeg.len() as f64 >= GOOD_FILL * budget as f64) {
            return Ok((jpeg, encodes));
        }
        let tried = f64::from(w.max(h)) / f64::from(width.max(height));
        if !search.advance(tried, jpeg, budget, w.max(h) <= MIN_LONG_SIDE) {
            break;
        }
    }
    let (_, jpeg) = search.fit.ok_or(DropReason::CannotFit)?;
    Ok((jpeg, encodes))
}

/// Search over the scale at one quality: the largest scale known to fit (with its JPEG)
/// brackets it from below, the smallest known to miss from above, and the last two
/// samples tell how fast size falls with scale for this image.
struct Search {
    scale: f64,
    quality: usize,
    fit: Option<(f64, Vec<u8>)>,
    miss: Option<f64>,
    last: Option<(f64, usize)>,
}

impl Search {
    fn new(scale: f64) -> Self {
        Search { scale: scale.min(1.0), quality: 0, fit: None, miss: None, last: None }
    }

    /// Records one encode at scale `tried` (the one really used after rounding) and
    /// picks the next attempt; false when another encode cannot help. A narrow first
    /// miss lowers quality instead of size.
    fn advance(&mut self, tried: f64, jpeg: Vec<u8>, budget: usize, at_floor: bool) -> bool {
        let len = jpeg.len();
        let exponent = self.last.map_or(AREA_EXPONENT, |last| size_exponent(last, (tried, len)));
        if len <= budget {
            self.fit = Some((tried, jpeg));
        } else if self.fit.is_none() && self.quality + 1 < QUALITIES.len() {
            if at_floor || budget as f64 >= NEAR_MISS * len as f64 {
                self.quality += 1;
                self.last = None;
                return true;
            }
            self.miss = Some(tried);
        } else if at_floor {
            return false;
        } else {
            self.miss = Some(tried);
        }
        self.last = Some((tried, len));
        self.scale = self.bracketed((tried * scale_for(budget, len, exponent)).min(1.0));
        !self.converged()
    }

    /// Keeps a guess strictly between the known fit and miss (geometric midpoint if not).
    fn bracketed(&self, guess: f64) -> f64 {
        match (&self.fit, self.miss) {
            (Some((low, _)), Some(high)) if guess <= *low || guess >= high => (low * high).sqrt(),
            (None, Some(high)) if guess >= high => high * NEAR_MISS,
            _ => guess,
        }
    }

    fn converged(&self) -> bool {
        match (&self.fit, self.miss) {
            (Some((low, _)), Some(high)) => high / low < CONVERGED_RATIO,
            _ => false,
        }
    }
}

/// Scale factor that would bring a JPEG of `actual` bytes to the margin under `target`
/// bytes, if size grows as scale to the power `exponent`.
fn scale_for(target: usize, actual: usize, exponent: f64) -> f64 {
    (target as f64 * SIZE_MARGIN / actual.max(1) as f64).powf(exponent.recip())
}

/// Measured growth of JPEG size with scale between two encodes, within sane bounds;
/// the area model when the two samples cannot tell.
fn size_exponent((scale_a, len_a): (f64, usize), (scale_b, len_b): (f64, usize)) -> f64 {
    let exponent = (len_a.max(1) as f64 / len_b.max(1) as f64).ln() / (scale_a / scale_b).ln();
    if exponent.is_finite() {
        exponent.clamp(EXPONENT_RANGE.0, EXPONENT_RANGE.1)
    } else {
        AREA_EXPONENT
    }
}

/// Dimensions at `scale` (relative to the decoded image), keeping the aspect ratio and
/// never going below [`MIN_LONG_SIDE`] on the long side nor above the original.
fn scaled_size(width: u32, height: u32, scale: f64) -> (u32, u32) {
    let long = width.max(height);
    let target = ((f64::from(long) * scale).round() as u32).clamp(MIN_LONG_SIDE.min(long), long);
    if target == long {
        return (width, height);
    }
    let ratio = f64::from(target) / f64::from(long);
    let side = |s: u32| ((f64::from(s) * ratio).round() as u32).max(1);
    (side(width), side(height))
}

/// Encodes `image` at `width` x `height`; always resized from the full decoded image so
/// losses from earlier attempts do not compound.
fn encode(image: &DynamicImage, width: u32, height: u32, quality: u8) -> Result<Vec<u8>, DropReason> {
    let resized;
    let source = if (width, height) == image.dimensions() {
        image
    } else {
        resized = image.resize_exact(width, height, FilterType::Triangle);
        &resized
    };
    let mut out = Vec::new();
    source.write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality)).map_err(|_| DropReason::CannotFit)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageEncoder, RgbImage};

    const BINGZHOUXING_LIMIT: usize = 50_000;

    #[test]
    fn base64_alphabet_is_exactly_the_64_symbols() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
            assert_eq!(all_base64_symbols(&[b]), expected, "byte {b:#04x}");
            let mut long = vec![b'A'; 1000];
            long[700] = b;
            assert_eq!(all_base64_symbols(&long), expected, "byte {b:#04x} deep in a long text");
        }
    }

    /// Deterministic xorshift so test photos are identical on every run.
    struct Noise(u32);

    impl Noise {
        fn next(&mut self) -> u8 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            (self.0 >> 24) as u8
        }
    }

    /// A gradient with `noise` amplitude (0-255); noise makes JPEG compress badly.
    fn noisy_rgb(width: u32, height: u32, noise: u8) -> RgbImage {
        let mut rng = Noise(0x9E37_79B9);
        RgbImage::from_fn(width, height, |x, y| {
            let base = [(x * 255 / width) as u8, (y * 255 / height) as u8, 128];
            image::Rgb(base.map(|c| c.saturating_add(rng.next() % noise.max(1))))
        })
    }

    fn jpeg_bytes(image: &DynamicImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        image.write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality)).expect("encoding a test image");
        out
    }

    fn noisy_jpeg(width: u32, height: u32, noise: u8, quality: u8) -> Vec<u8> {
        jpeg_bytes(&DynamicImage::ImageRgb8(noisy_rgb(width, height, noise)), quality)
    }

    fn decode_b64_jpeg(text: &str) -> DynamicImage {
        let bytes = STANDARD.decode(text).expect("output is base64");
        image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).expect("output is a JPEG")
    }

    fn assert_dropped(text: &str, limit: usize, reason: DropReason) {
        for policy in [PhotoPolicy::Recompress, PhotoPolicy::Drop, PhotoPolicy::AsIs] {
            let (photo, outcome) = fit(text, limit, policy);
            assert_eq!(photo, None, "{text:?} with {policy:?}");
            assert_eq!(outcome, PhotoOutcome::Dropped(reason), "{text:?} with {policy:?}");
        }
    }

    /// A real JPEG whose frame header (SOF0) is rewritten to claim `width` x `height`:
    /// a few hundred bytes that a decoder would expand to the claimed size.
    fn claiming(width: u16, height: u16) -> String {
        let mut jpeg = noisy_jpeg(16, 16, 40, 80);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        STANDARD.encode(jpeg)
    }

    /// Found by the `photo_recompress` fuzz target: 8000 x 8000 passed the old bound on
    /// decoded bytes and then took about 950 MB in recompression; 65320 x 32 took over 10 s
    /// of CPU. Both are refused from the header, before any pixel is decoded.
    #[test]
    fn photos_claiming_too_many_pixels_or_too_long_a_side_are_refused_unread() {
        for (w, h) in [(8000, 8000), (65320, 32), (32, 65320), (6001, 4001)] {
            let text = claiming(w, h);
            let (photo, outcome) = fit(&text, text.len() / 2, PhotoPolicy::Recompress);
            assert_eq!((photo, outcome), (None, PhotoOutcome::Dropped(DropReason::TooManyPixels)), "{w} x {h}");
        }
        let fine = claiming(1920, 1080);
        let (_, outcome) = fit(&fine, fine.len() / 2, PhotoPolicy::Recompress);
        assert_ne!(outcome, PhotoOutcome::Dropped(DropReason::TooManyPixels), "a 1920 x 1080 photo is decoded");
    }

    #[test]
    fn fitting_photo_is_borrowed_unchanged() {
        let text = STANDARD.encode(noisy_jpeg(320, 240, 40, 80));
        for limit in [text.len(), text.len() + 1, usize::MAX] {
            for policy in [PhotoPolicy::Recompress, PhotoPolicy::Drop, PhotoPolicy::AsIs] {
                let (photo, outcome) = fit(&text, limit, policy);
                assert_eq!(outcome, PhotoOutcome::Unchanged);
                match photo {
                    Some(Cow::Borrowed(sent)) => assert!(std::ptr::eq(sent, text.as_str())),
                    other => panic!("expected the input borrowed back, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn fitting_photo_is_not_decoded() {
        // The fast path promises a scan, not a decode: a valid SOI with junk after it
        // passes when it fits. Full decoding here would make every photo cost a decode.
        let mut bytes = JPEG_SOI.to_vec();
        bytes.extend_from_slice(b"not really a jpeg body");
        let text = STANDARD.encode(&bytes);
        let (photo, outcome) = fit(&text, text.len(), PhotoPolicy::Recompress);
        assert_eq!(outcome, PhotoOutcome::Unchanged);
        assert_eq!(photo.as_deref(), Some(text.as_str()));
    }

    #[test]
    fn recompress_fits_bingzhouxing_limit_and_stays_a_jpeg() {
        let source = noisy_jpeg(1600, 1200, 96, 90);
        let text = STANDARD.encode(&source);
        assert!(text.len() > 10 * BINGZHOUXING_LIMIT, "test photo too small: {}", text.len());

        let (photo, outcome) = fit(&text, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
        let Some(Cow::Owned(sent)) = photo else {
            panic!("expected a new photo, got {photo:?} / {outcome:?}");
        };
        assert!(sent.len() <= BINGZHOUXING_LIMIT, "{} bytes", sent.len());
        assert_eq!(outcome, PhotoOutcome::Recompressed { before_bytes: text.len(), after_bytes: sent.len() });
        let decoded = decode_b64_jpeg(&sent);
        let (w, h) = decoded.dimensions();
        assert!((MIN_LONG_SIDE..1600).contains(&w), "width {w}");
        assert_eq!((w * 3 + 2) / 4, h, "aspect ratio 4:3 kept: {w}x{h}");
    }

    #[test]
    fn recompress_uses_the_budget_not_a_thumbnail() {
        // Shrinking far below the limit would throw away plate detail for nothing.
        let text = STANDARD.encode(noisy_jpeg(1600, 1200, 96, 90));
        let (photo, _) = fit(&text, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
        let sent = photo.expect("recompressed");
        assert!(sent.len() >= BINGZHOUXING_LIMIT / 2, "only {} bytes", sent.len());
    }

    #[test]
    fn photo_like_sources_need_one_encode() {
        // Low sensor noise at the qualities cameras use: the quantization-table estimate
        // must land the first encode between GOOD_FILL and the budget.
        let cases = [
            (noisy_jpeg(1920, 1080, 12, 75), BINGZHOUXING_LIMIT),
            (noisy_jpeg(1920, 1080, 6, 90), BINGZHOUXING_LIMIT),
            (noisy_jpeg(1920, 1080, 4, 95), BINGZHOUXING_LIMIT),
            (noisy_jpeg(1280, 960, 8, 80), BINGZHOUXING_LIMIT),
        ];
        assert_encodes_at_most(1, &cases);
    }

    #[test]
    fn noisy_sources_need_at_most_two_encodes() {
        let cases = [
            (noisy_jpeg(1920, 1080, 4, 60), BINGZHOUXING_LIMIT),
            (noisy_jpeg(1280, 960, 24, 85), BINGZHOUXING_LIMIT),
            (noisy_jpeg(2560, 1920, 8, 92), 524_288),
        ];
        assert_encodes_at_most(2, &cases);
    }

    #[test]
    fn noise_dominated_sources_need_at_most_three_encodes() {
        // Shrinking averages noise away, so the area estimate undershoots badly; the
        // exponent measured from the first two encodes must correct it at once.
        let cases = [(noisy_jpeg(1600, 1200, 96, 90), BINGZHOUXING_LIMIT), (noisy_jpeg(2560, 1920, 48, 92), 524_288)];
        assert_encodes_at_most(3, &cases);
    }

    #[test]
    fn quantization_table_reveals_source_quality() {
        let image = DynamicImage::ImageRgb8(noisy_rgb(64, 48, 8));
        for quality in [30, 50, 75, 80, 90] {
            let jpeg = jpeg_bytes(&image, quality);
            let table = luma_quant_table(&jpeg).expect("table 0 present");
            let sum: u32 = table.iter().map(|&v| u32::from(v)).sum();
            let scale = f64::from(sum) * 100.0 / f64::from(IJG_LUMA_TABLE_SUM);
            let expected = ijg_scale(quality);
            assert!((scale / expected - 1.0).abs() < 0.03, "q{quality}: scale {scale}, expected {expected}");
        }
        let at = |quality| {
            let jpeg = jpeg_bytes(&image, quality);
            reencoded_len_estimate(&jpeg) as f64 / jpeg.len() as f64
        };
        assert!(at(95) < 0.5 && at(60) > 1.2, "q95 {}, q60 {}", at(95), at(60));
        assert!((at(QUALITIES[0]) - 1.0).abs() < 0.05);
    }

    #[test]
    fn unreadable_quantization_tables_leave_the_estimate_alone() {
        let real = jpeg_bytes(&DynamicImage::ImageRgb8(noisy_rgb(64, 48, 8)), 90);
        let dqt = real.windows(2).position(|w| w == [0xFF, 0xDB]).expect("DQT marker");
        let mut zero_length = real.clone();
        zero_length[dqt + 2..dqt + 4].copy_from_slice(&[0, 0]);
        let mut past_the_end = real.clone();
        past_the_end[dqt + 2..dqt + 4].copy_from_slice(&[0xFF, 0xFF]);
        let mut only_table_one = real.clone();
        only_table_one[dqt + 4] = 0x01;
        let cases = [
            JPEG_SOI.to_vec(),
            real[..dqt + 3].to_vec(),
            real[..dqt + 30].to_vec(),
            zero_length,
            past_the_end,
            [&JPEG_SOI[..2], &[0xFF, 0xDA, 0, 2][..], &real[2..]].concat(),
        ];
        for jpeg in cases {
            assert_eq!(reencoded_len_estimate(&jpeg), jpeg.len(), "{:02X?}", &jpeg[..jpeg.len().min(8)]);
        }
        assert_ne!(luma_quant_table(&only_table_one), luma_quant_table(&real));
    }

    fn assert_encodes_at_most(most: usize, cases: &[(Vec<u8>, usize)]) {
        assert!(!cases.is_empty());
        for (source, limit) in cases {
            let image = decode_jpeg(source).expect("test photo decodes");
            let budget = max_jpeg_len(*limit);
            let (jpeg, encodes) = shrink(&image, reencoded_len_estimate(source), budget).expect("fits");
            assert!(jpeg.len() <= budget);
            assert!(jpeg.len() as f64 >= GOOD_FILL * budget as f64, "budget wasted");
            assert!(encodes <= most, "{encodes} encodes for {} bytes -> {limit}", source.len());
        }
    }

    #[test]
    fn recompress_handles_grayscale() {
        let gray = GrayImage::from_fn(1200, 900, |x, y| image::Luma([((x * 7 + y * 13) ^ (x * y)) as u8]));
        let text = STANDARD.encode(jpeg_bytes(&DynamicImage::ImageLuma8(gray), 95));
        assert!(text.len() > BINGZHOUXING_LIMIT);
        let (photo, outcome) = fit(&text, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
        assert!(matches!(outcome, PhotoOutcome::Recompressed { .. }), "{outcome:?}");
        let sent = photo.expect("recompressed");
        assert!(sent.len() <= BINGZHOUXING_LIMIT);
        assert_eq!(decode_b64_jpeg(&sent).color(), image::ColorType::L8);
    }

    #[test]
    fn recompress_applies_exif_orientation() {
        // Re-encoding drops EXIF, so a camera's "rotate 90" tag must be baked into pixels.
        let exif_rotate_90 = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0".to_vec();
        let image = DynamicImage::ImageRgb8(noisy_rgb(800, 400, 96));
        let mut source = Vec::new();
        let mut encoder = JpegEncoder::new_with_quality(&mut source, 95);
        encoder.set_exif_metadata(exif_rotate_90).expect("jpeg takes exif");
        encoder.write_image(image.as_bytes(), 800, 400, image::ExtendedColorType::Rgb8).expect("encoding a test image");
        let text = STANDARD.encode(&source);
        assert!(text.len() > BINGZHOUXING_LIMIT);

        let (photo, _) = fit(&text, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
        let (w, h) = decode_b64_jpeg(&photo.expect("recompressed")).dimensions();
        assert!(h > w, "portrait expected after rotation, got {w}x{h}");
    }

    #[test]
    fn drop_policy_drops_only_oversized_photos() {
        let text = STANDARD.encode(noisy_jpeg(640, 480, 96, 90));
        let (photo, outcome) = fit(&text, text.len() - 1, PhotoPolicy::Drop);
        assert_eq!(photo, None);
        assert_eq!(outcome, PhotoOutcome::Dropped(DropReason::TooLarge));
        let (photo, outcome) = fit(&text, text.len(), PhotoPolicy::Drop);
        assert_eq!(photo.as_deref(), Some(text.as_str()));
        assert_eq!(outcome, PhotoOutcome::Unchanged);
    }

    #[test]
    fn as_is_policy_sends_oversized_photo_borrowed() {
        let text = STANDARD.encode(noisy_jpeg(640, 480, 96, 90));
        let (photo, outcome) = fit(&text, 1_000, PhotoPolicy::AsIs);
        assert_eq!(outcome, PhotoOutcome::Unchanged);
        assert!(matches!(photo, Some(Cow::Borrowed(sent)) if std::ptr::eq(sent, text.as_str())));
    }

    #[test]
    fn malformed_base64_is_dropped_whatever_the_policy() {
        let valid = STANDARD.encode(noisy_jpeg(64, 48, 8, 80));
        let cases = [
            "/9j/4A*A".to_string(),                        // character outside the alphabet
            "/9j/4A-_".to_string(),                        // URL-safe alphabet
            "/9j/4A".to_string(),                          // missing padding
            "/9j/4A=A".to_string(),                        // padding in the middle
            "/9j/4A==AAAA".to_string(),                    // padding before the end
            "/9j/4B==".to_string(),                        // non-zero trailing bits
            "/9j/====".to_string(),                        // only padding in the last group
            format!("{}\n{}", &valid[..76], &valid[76..]), // MIME line break
            format!("data:image/jpeg;base64,{valid}"),
            format!("{valid} "),
        ];
        for text in cases {
            for limit in [text.len(), 4] {
                assert_dropped(&text, limit, DropReason::InvalidBase64);
            }
        }
    }

    #[test]
    fn non_jpeg_payloads_are_dropped_whatever_the_policy() {
        let png_header = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
        let cases = [
            STANDARD.encode(png_header),
            STANDARD.encode("hello, this is plain text"),
            STANDARD.encode([0xFF, 0xD8]), // SOI cut short
            STANDARD.encode([0xFF, 0xD9, 0xFF, 0xE0]),
            String::new(),
        ];
        for text in cases {
            for limit in [text.len(), 0] {
                assert_dropped(&text, limit, DropReason::NotJpeg);
            }
        }
    }

    #[test]
    fn soi_followed_by_garbage_cannot_be_recompressed() {
        let mut rng = Noise(7);
        let mut bytes = JPEG_SOI.to_vec();
        bytes.extend((0..100_000).map(|_| rng.next()));
        let text = STANDARD.encode(&bytes);
        let (photo, outcome) = fit(&text, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
        assert_eq!(photo, None);
        assert!(matches!(outcome, PhotoOutcome::Dropped(DropReason::NotJpeg | DropReason::CannotFit)), "{outcome:?}");
    }

    #[test]
    fn truncated_jpeg_never_yields_an_oversized_or_broken_photo() {
        let source = noisy_jpeg(1600, 1200, 96, 90);
        for keep in [3, 20, 200, source.len() / 10, source.len() / 2, source.len() - 2] {
            let text = STANDARD.encode(&source[..keep]);
            let (photo, outcome) = fit(&text, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
            match (photo, outcome) {
                (Some(sent), PhotoOutcome::Unchanged) => assert_eq!(sent, text),
                (Some(sent), PhotoOutcome::Recompressed { after_bytes, .. }) => {
                    assert!(sent.len() <= BINGZHOUXING_LIMIT);
                    assert_eq!(sent.len(), after_bytes);
                    decode_b64_jpeg(&sent);
                }
                (None, PhotoOutcome::Dropped(DropReason::NotJpeg | DropReason::CannotFit)) => {}
                other => panic!("kept {keep} bytes: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn decompression_bomb_header_is_refused() {
        // A JPEG header may claim 65535x65535 pixels (12 GB of RGB) in a few bytes.
        let mut source = noisy_jpeg(16, 16, 8, 80);
        let sof = source.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0 marker");
        source[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let text = STANDARD.encode(&source);
        let (photo, outcome) = fit(&text, 100, PhotoPolicy::Recompress);
        assert_eq!(photo, None);
        assert_eq!(outcome, PhotoOutcome::Dropped(DropReason::TooManyPixels));
    }

    /// A photo over [`WORK_PIXELS`] is cut down before the search: whatever the limit, the
    /// result never has more pixels than that, and keeps the aspect ratio.
    #[test]
    fn large_photos_are_recompressed_from_a_working_copy_of_bounded_pixels() {
        let text = STANDARD.encode(noisy_jpeg(2800, 1600, 4, 95));
        let (photo, outcome) = fit(&text, text.len() - 1, PhotoPolicy::Recompress);
        assert!(matches!(outcome, PhotoOutcome::Recompressed { .. }), "{outcome:?}");
        let image = decode_b64_jpeg(&photo.expect("a photo"));
        let (w, h) = image.dimensions();
        assert!(u64::from(w) * u64::from(h) <= 4_000_000, "{w} x {h}: over the 4 MP working copy");
        assert!((f64::from(w) / f64::from(h) - 1.75).abs() < 0.01, "aspect kept: {w} x {h}");
    }

    #[test]
    fn unreachable_limit_gives_up_with_cannot_fit() {
        let text = STANDARD.encode(noisy_jpeg(1600, 1200, 96, 90));
        for limit in [0, 200] {
            let (photo, outcome) = fit(&text, limit, PhotoPolicy::Recompress);
            assert_eq!(photo, None);
            assert_eq!(outcome, PhotoOutcome::Dropped(DropReason::CannotFit));
        }
    }

    #[test]
    fn scaled_size_keeps_aspect_and_bounds() {
        assert_eq!(scaled_size(1600, 1200, 1.5), (1600, 1200));
        assert_eq!(scaled_size(1600, 1200, 0.5), (800, 600));
        assert_eq!(scaled_size(1200, 1600, 0.0), (48, 64));
        assert_eq!(scaled_size(1600, 1200, f64::NAN), (64, 48));
        assert_eq!(scaled_size(40, 30, 0.1), (40, 30));
        assert_eq!(scaled_size(6000, 1, 0.01), (64, 1));
    }

    #[test]
    fn drop_reasons_have_stable_labels() {
        let labels = [
            DropReason::TooLarge,
            DropReason::InvalidBase64,
            DropReason::NotJpeg,
            DropReason::CannotFit,
            DropReason::TooManyPixels,
        ]
        .map(|r| r.as_str());
        assert_eq!(labels, ["too_large", "invalid_base64", "not_jpeg", "cannot_fit", "too_many_pixels"]);
    }

    #[test]
    fn policy_config_names() {
        let parse = |s: &str| serde_json::from_str::<PhotoPolicy>(s).expect(s);
        assert_eq!(parse("\"recompress\""), PhotoPolicy::Recompress);
        assert_eq!(parse("\"drop\""), PhotoPolicy::Drop);
        assert_eq!(parse("\"as_is\""), PhotoPolicy::AsIs);
        assert!(serde_json::from_str::<PhotoPolicy>("\"AsIs\"").is_err());
        assert_eq!(PhotoPolicy::default(), PhotoPolicy::Recompress);
    }
}
