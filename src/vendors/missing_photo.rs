//! What a record sends when its vendor requires a photo field and the vehicle has no
//! usable photo (none was taken, it was not a JPEG, or the photo policy dropped it).
//!
//! ISP's `enter_pic`/`depart_pic` and Bingzhouxing's `imgData` are required by their specs;
//! an empty string is what a lenient platform accepts and a strict one refuses. Each sink
//! chooses (`missing_photo`), and a placeholder or an empty field is counted and logged as
//! an adjusted field, never silent.

use std::sync::LazyLock;

pub use crate::config::vendor::MissingPhoto;

impl MissingPhoto {
    /// The base64 text a required photo `field` of `vendor` gets without a usable photo, with
    /// the change to count, or the map error of `reject`.
    pub fn fill(
        self,
        vendor: &str,
        field: &'static str,
    ) -> Result<(&'static str, crate::vendors::adjust::Adjusted), crate::vendors::MapError> {
        use crate::vendors::adjust::{Adjusted, Change};
        match self {
            MissingPhoto::Placeholder => Ok((placeholder_base64(), Adjusted::filled(field, Change::Placeholder))),
            MissingPhoto::Empty => Ok(("", Adjusted::filled(field, Change::Empty))),
            MissingPhoto::Reject => Err(crate::vendors::MapError::new(
                "data.photo",
                format!("no usable photo, and {vendor} requires {field} (missing_photo = \"reject\")"),
            )),
        }
    }
}

/// Side of the placeholder image, in pixels.
pub const PLACEHOLDER_SIDE: u32 = 8;
/// Its grey level.
pub const PLACEHOLDER_GREY: u8 = 128;

static PLACEHOLDER: LazyLock<String> = LazyLock::new(|| {
    use base64::Engine as _;
    let image = image::GrayImage::from_pixel(PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, image::Luma([PLACEHOLDER_GREY]));
    let mut jpeg = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 50);
    match image::DynamicImage::ImageLuma8(image).write_with_encoder(encoder) {
        Ok(()) => base64::engine::general_purpose::STANDARD.encode(jpeg),
        // Encoding a constant in-memory image does not fail; an empty text would be refused
        // visibly by a strict platform rather than panic here.
        Err(_) => String::new(),
    }
});

/// The placeholder JPEG as standard base64 (a few hundred bytes, the same in every build).
pub fn placeholder_base64() -> &'static str {
    &PLACEHOLDER
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn placeholder_is_a_small_grey_jpeg() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(placeholder_base64()).unwrap();
        assert!(bytes.starts_with(&[0xFF, 0xD8]) && bytes.len() < 1024, "{} bytes", bytes.len());
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((image.width(), image.height()), (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE));
    }
}
