//! Gate photos for the synthetic city: small JPEGs made with the `image` crate at start,
//! most well under Bingzhouxing's 50 000-character limit and a few over it, so the
//! recompression path shows in the demo.

use base64::Engine as _;
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A pool of base64 JPEGs handed out in turn.
pub struct PhotoPool {
    photos: Vec<String>,
    next: usize,
}

/// How many photos of the pool are large (over 50 000 base64 characters).
const LARGE: usize = 2;
/// How many are small.
const SMALL: usize = 14;

impl PhotoPool {
    /// Makes the pool: `SMALL` smooth frames of a few KB and `LARGE` noisy ones of ~60 KB.
    pub fn new(seed: u64) -> PhotoPool {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut photos: Vec<String> = (0..SMALL).map(|i| jpeg(&frame(&mut rng, 160, 120, 6 + i as u8), 70)).collect();
        photos.extend((0..LARGE).map(|_| jpeg(&frame(&mut rng, 320, 240, 255), 90)));
        PhotoPool { photos, next: 0 }
    }

    /// The next photo (standard base64 with padding).
    pub fn take(&mut self) -> &str {
        let i = self.next % self.photos.len();
        self.next = self.next.wrapping_add(1);
        &self.photos[i]
    }

    /// Sizes of the pool's photos in base64 characters.
    pub fn sizes(&self) -> Vec<usize> {
        self.photos.iter().map(String::len).collect()
    }
}

/// A gradient with noise of amplitude `noise`: more noise, larger JPEG.
fn frame(rng: &mut StdRng, w: u32, h: u32, noise: u8) -> RgbImage {
    let base: [u8; 3] = rng.gen();
    RgbImage::from_fn(w, h, |x, y| {
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().enumerate() {
            let grad = (x * 255 / w.max(1) + y * 255 / h.max(1)) as u8;
            let n: u8 = if noise == 0 { 0 } else { rng.gen_range(0..=noise) };
            *v = base[c].wrapping_add(grad / 2).wrapping_add(n);
        }
        Rgb(px)
    })
}

fn jpeg(img: &RgbImage, quality: u8) -> String {
    let mut out = Vec::new();
    // Encoding an in-memory RGB buffer into a Vec cannot fail; an empty photo would still
    // be a valid base64 string, so nothing downstream depends on this succeeding.
    let _ = JpegEncoder::new_with_quality(&mut out, quality).encode_image(img);
    base64::engine::general_purpose::STANDARD.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_photos_fit_bingzhouxing_and_a_few_do_not() {
        let pool = PhotoPool::new(7);
        let sizes = pool.sizes();
        let over = sizes.iter().filter(|s| **s > 50_000).count();
        assert_eq!(over, LARGE, "sizes {sizes:?}");
        assert!(sizes.iter().all(|s| *s > 1000 && *s < 200_000), "sizes {sizes:?}");
    }
}
