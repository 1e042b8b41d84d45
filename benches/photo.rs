//! Cost of [`lotbridge::photo::fit`] on the hot path: a fitting 30 KB photo (scan only)
//! and a ~300 KB photo recompressed to the Bingzhouxing limit (decode + encodes).

use std::hint::black_box;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, RgbImage};
use lotbridge::photo::{fit, PhotoOutcome, PhotoPolicy};

const BINGZHOUXING_LIMIT: usize = 50_000;
/// (width, height, noise amplitude, JPEG quality): ~29 KB JPEG, ~39 KB of base64.
const SMALL: (u32, u32, u8, u8) = (720, 540, 10, 80);
/// ~275 KB JPEG (~367 KB of base64) with mild noise, like a camera photo: one encode.
const LARGE: (u32, u32, u8, u8) = (1920, 1080, 4, 95);
/// ~317 KB JPEG (~423 KB of base64) with heavy noise, which shrinking averages away, so
/// the first estimate undershoots: two encodes.
const LARGE_NOISY: (u32, u32, u8, u8) = (1280, 960, 24, 87);

/// Base64 of a JPEG of a gradient with sensor-like noise, deterministic across runs.
/// The tuple is (width, height, noise amplitude, JPEG quality).
fn photo_base64((width, height, noise, quality): (u32, u32, u8, u8)) -> String {
    let mut state: u32 = 0x9E37_79B9;
    let pixels = RgbImage::from_fn(width, height, |x, y| {
        let base = [(x * 255 / width) as u8, (y * 255 / height) as u8, 128];
        image::Rgb(base.map(|c| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            c.saturating_add((state >> 24) as u8 % noise.max(1))
        }))
    });
    let mut jpeg = Vec::new();
    DynamicImage::ImageRgb8(pixels)
        .write_with_encoder(JpegEncoder::new_with_quality(&mut jpeg, quality))
        .expect("encoding the benchmark photo");
    STANDARD.encode(jpeg)
}

fn bench_fits(c: &mut Criterion) {
    let photo = photo_base64(SMALL);
    let (_, outcome) = fit(&photo, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
    assert_eq!(outcome, PhotoOutcome::Unchanged, "fast-path photo must fit");
    eprintln!("fits_30kb: {} bytes of base64", photo.len());
    let mut group = c.benchmark_group("photo_fit");
    group.throughput(Throughput::Bytes(photo.len() as u64));
    group.bench_function("fits_30kb", |b| {
        b.iter(|| fit(black_box(&photo), BINGZHOUXING_LIMIT, PhotoPolicy::Recompress))
    });
    group.finish();
}

fn bench_recompress(c: &mut Criterion) {
    let mut group = c.benchmark_group("photo_fit");
    group.sample_size(20);
    for (name, shape) in [("recompress_300kb_to_50000", LARGE), ("recompress_300kb_noisy_to_50000", LARGE_NOISY)] {
        let photo = photo_base64(shape);
        let (_, outcome) = fit(&photo, BINGZHOUXING_LIMIT, PhotoPolicy::Recompress);
        assert!(matches!(outcome, PhotoOutcome::Recompressed { .. }), "{outcome:?}");
        eprintln!("{name}: {outcome:?}");
        group.throughput(Throughput::Bytes(photo.len() as u64));
        group.bench_function(name, |b| b.iter(|| fit(black_box(&photo), BINGZHOUXING_LIMIT, PhotoPolicy::Recompress)));
    }
    group.finish();
}

criterion_group!(benches, bench_fits, bench_recompress);
criterion_main!(benches);
