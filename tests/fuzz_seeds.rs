//! Every fuzz target's seeds and regressions under stable `cargo test`: each file of
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` (and each
//! `tests/corpus/fuzz-<target>-*.bin`) goes through `lotbridge::fuzzing::<target>`, the
//! check the cargo-fuzz target runs; a panic fails the test naming the file. A folder whose
//! name has no check fails too, and the targets, the fuzz crate's binaries and the seed
//! folders must name the same set: a new target cannot be forgotten.
//!
//! The largest single allocation of each input is measured (this binary's allocator) and
//! must stay within the photo policy's decode bound, so a photo whose header claims more
//! pixels than the bound fails here if the policy ever decodes it.

use lotbridge::fuzzing::{max_decoded_bytes, target, TARGETS};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

/// The system allocator, noting the largest single allocation made by each thread, and
/// refusing (the process aborts, naming the input) any over [`REFUSE_ABOVE`] while an input
/// runs: a regression must fail here, not take the machine's memory (a 695-byte JPEG
/// claiming 65535x65535 pixels makes a decoder ask for 12 GiB at once).
struct Largest;

/// No input may allocate this much at once (many times the photo decode bound).
const REFUSE_ABOVE: usize = 1 << 30;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// The input running on this thread, if any.
    static RUNNING: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Notes an allocation of `size` bytes; false to refuse it.
fn note(size: usize) -> bool {
    // `try_with`: a thread being torn down has no slots left, and must still allocate.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    let running = RUNNING.try_with(Cell::get).ok().flatten();
    match running {
        Some(input) if size > REFUSE_ABOVE => {
            // Written without allocating: this runs inside the allocator.
            use std::io::Write as _;
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"fuzz input ");
            let _ = err.write_all(input.as_bytes());
            let _ = err.write_all(b" asked for one allocation over 1 GiB: refused, aborting\n");
            false
        }
        _ => true,
    }
}

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sub-folders of `dir` (none if it does not exist), by name.
fn target_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut dirs: Vec<(String, PathBuf)> = entries
        .map(|e| e.expect("listing a fuzz folder").path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().expect("a folder name").to_string_lossy().into_owned(), p))
        .collect();
    dirs.sort();
    dirs
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("listing a seed folder")
        .map(|e| e.expect("listing a seed folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs one input (named `name` if the process must abort) through a check: the panic
/// message, or an allocation over the decode bound.
fn run(check: lotbridge::fuzzing::Check, name: &str, input: &[u8]) -> Result<(), String> {
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    LARGEST.with(|l| l.set(0));
    RUNNING.with(|r| r.set(Some(name)));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(input)));
    RUNNING.with(|r| r.set(None));
    let largest = LARGEST.with(Cell::get);
    if let Err(panic) = outcome {
        let text = panic.downcast_ref::<String>().cloned().or(panic.downcast_ref::<&str>().map(|s| s.to_string()));
        return Err(format!("panicked: {}", text.unwrap_or_default()));
    }
    let bound = usize::try_from(max_decoded_bytes()).unwrap_or(usize::MAX);
    if largest > bound {
        return Err(format!("allocated {largest} bytes at once, over the decode bound of {bound}"));
    }
    Ok(())
}

/// The inputs of every target: seeds, regressions, and the decoder crashes kept in
/// `tests/corpus/` as `fuzz-<target>-<hash>.bin`. A folder without a check is an error.
fn inputs() -> (Vec<(String, PathBuf)>, Vec<String>) {
    let (mut inputs, mut errors) = (Vec::new(), Vec::new());
    for folder in ["fuzz/seeds", "fuzz/regressions"] {
        for (name, dir) in target_dirs(&root().join(folder)) {
            if target(&name).is_none() {
                errors.push(format!("{}: no lotbridge::fuzzing check is named {name:?}", dir.display()));
            }
            inputs.extend(files(&dir).into_iter().map(|f| (name.clone(), f)));
        }
    }
    for file in files(&root().join("tests/corpus")) {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some((target, _)) = TARGETS.iter().find(|(t, _)| name.starts_with(&format!("fuzz-{t}-"))) {
            inputs.push((target.to_string(), file));
        }
    }
    (inputs, errors)
}

#[test]
fn every_seed_and_regression_passes_its_target() {
    let (inputs, mut errors) = inputs();
    let mut per_target = std::collections::BTreeMap::<String, usize>::new();
    for (name, file) in &inputs {
        let Some(check) = target(name) else { continue };
        let bytes = std::fs::read(file).expect("reading a seed");
        if let Err(why) = run(check, &file.display().to_string(), &bytes) {
            errors.push(format!("{}: {why}", file.display()));
        }
        *per_target.entry(name.clone()).or_default() += 1;
    }
    println!("inputs per target: {per_target:?}");
    assert!(errors.is_empty(), "{} of {} fuzz inputs fail:\n{}", errors.len(), inputs.len(), errors.join("\n"));
}

/// The checks, the fuzz crate's `[[bin]]` targets and the seed folders name the same set,
/// and each target file calls its check.
#[test]
fn every_target_has_a_check_a_binary_and_seeds() {
    let checks: BTreeSet<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap())
        .expect("fuzz/Cargo.toml parses");
    let bins: BTreeSet<String> = manifest["bin"]
        .as_array()
        .expect("[[bin]] targets")
        .iter()
        .map(|bin| bin["name"].as_str().expect("a bin name").to_string())
        .collect();
    assert_eq!(bins, checks, "fuzz/Cargo.toml [[bin]] names vs lotbridge::fuzzing::TARGETS");
    let seeded: BTreeSet<String> = target_dirs(&root().join("fuzz/seeds"))
        .into_iter()
        .filter(|(_, dir)| !files(dir).is_empty())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(seeded, checks, "non-empty fuzz/seeds/ folders vs lotbridge::fuzzing::TARGETS");
    for name in &checks {
        let path = root().join(format!("fuzz/fuzz_targets/{name}.rs"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(source.contains(&format!("lotbridge::fuzzing::{name}(")), "{} does not call its check", path.display());
    }
}

/// The harness itself can fail: a panicking check and a large allocation are reported.
#[test]
fn a_panic_or_a_large_allocation_fails_the_input() {
    let panics = run(|_| panic!("broken property"), "panics", b"x").unwrap_err();
    assert!(panics.contains("broken property"), "{panics}");
    let large = run(
        |input| {
            let big = vec![input[0] - b'x'; max_decoded_bytes() as usize + 1];
            std::hint::black_box(big);
        },
        "allocates",
        b"x",
    )
    .unwrap_err();
    assert!(large.contains("over the decode bound"), "{large}");
    assert_eq!(run(|_| {}, "passes", b"x"), Ok(()));
}

/// Writes the JPEG seeds of `photo_recompress` (committed; run by hand when they should
/// change: `cargo test --test fuzz_seeds -- --ignored`). Each stays under the 8 KiB inputs
/// `scripts/fuzz.sh` allows.
#[test]
#[ignore = "writes fuzz/seeds/photo_recompress/; run by hand"]
fn write_photo_seeds() {
    use base64::Engine as _;
    let dir = root().join("fuzz/seeds/photo_recompress");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        assert!(bytes.len() <= 8192, "{name} is {} bytes", bytes.len());
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let rgb = seed_jpeg(48, 32, 24, 90, false);
    write("rgb-48x32-q90.jpg", &rgb);
    write("gray-40x30-q80.jpg", &seed_jpeg(40, 30, 16, 80, true));
    write("noisy-64x48-q95.jpg", &seed_jpeg(64, 48, 96, 95, false));
    write("exif-orientation-6.jpg", &with_exif_orientation(&rgb, 6));
    write("header-claims-10000x10000.jpg", &with_claimed_size(&seed_jpeg(16, 16, 8, 80, false), 10_000, 10_000));
    write("header-claims-65535x65535.jpg", &with_claimed_size(&seed_jpeg(16, 16, 8, 80, false), 65_535, 65_535));
    write("truncated-half.jpg", &rgb[..rgb.len() / 2]);
    write("soi-then-garbage.bin", b"\xFF\xD8\xFF\xE0 not really a JPEG body");
    let b64 = base64::engine::general_purpose::STANDARD;
    write("text-rgb-48x32.b64", b64.encode(&rgb).as_bytes());
    write("text-unpadded.b64", b64.encode(&rgb).trim_end_matches('=').as_bytes());
    let example = std::fs::read(root().join("schemas/examples/valid/vehicle.entered.json")).unwrap();
    let example: serde_json::Value = serde_json::from_slice(&example).unwrap();
    write("text-schema-example.b64", example["data"]["photo"]["jpeg_base64"].as_str().unwrap().as_bytes());
}

/// A gradient with deterministic noise of amplitude `noise` (noise compresses badly).
fn seed_jpeg(width: u32, height: u32, noise: u8, quality: u8, gray: bool) -> Vec<u8> {
    use image::codecs::jpeg::JpegEncoder;
    let mut state = 0x9E37_79B9u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 24) as u8 % noise.max(1)
    };
    let rgb = image::RgbImage::from_fn(width, height, |x, y| {
        let base = [(x * 255 / width) as u8, (y * 255 / height) as u8, 128];
        image::Rgb(base.map(|c| c.saturating_add(next())))
    });
    let image = image::DynamicImage::ImageRgb8(rgb);
    let image = if gray { image::DynamicImage::ImageLuma8(image.to_luma8()) } else { image };
    let mut out = Vec::new();
    image.write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality)).unwrap();
    out
}

/// `jpeg` with an APP1 Exif segment holding only an orientation tag, right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0".to_vec();
    exif.extend_from_slice(&[orientation, 0, 0, 0, 0, 0]);
    let len = u16::try_from(exif.len() + 2).unwrap().to_be_bytes();
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1, len[0], len[1]]);
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// `jpeg` whose baseline frame header claims `width` x `height` pixels.
fn with_claimed_size(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline SOF0 marker");
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}
