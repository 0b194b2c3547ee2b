//! Bad input gets a clear error that names the problem, never a panic (exit status 101), and odd
//! but valid images (1×1, gray, RGBA, 16-bit, palette) segment fine. Runs the `segclip` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use segclip::group::SegClipConfig;

fn workdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/tmp (cargo's folder for integration tests), emptied at each run.
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segclip-bad-input");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// The small parity model's seeded weights as a safetensors file.
fn weights() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let cfg = SegClipConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/parity/small/config.json"
        )))
        .unwrap();
        let sd = segclip::group::model::seeded_state_dict(&cfg, 0, &Device::Cpu).unwrap();
        let p = workdir().join("small.safetensors");
        candle_core::safetensors::save(&sd.tensors, &p).unwrap();
        p
    })
}

fn segment(image: &Path, classes: &str, weights: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(["segment", "--image"])
        .arg(image)
        .args(["--classes", classes, "--weights"])
        .arg(weights)
        .arg("--out")
        .arg(workdir().join("out"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

fn expect_error(image: &Path, classes: &str, weights: &Path, needle: &str) {
    let (code, text) = segment(image, classes, weights);
    assert_eq!(code, 1, "expected a clean error, got status {code}: {text}");
    assert!(
        text.contains(needle),
        "error should mention {needle:?}: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

fn write_png(name: &str, img: image::DynamicImage) -> PathBuf {
    let p = workdir().join(name);
    img.save(&p).unwrap();
    p
}

fn photo() -> PathBuf {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
    });
    write_png("photo.png", img.into())
}

#[test]
fn unreadable_images_are_named() {
    let w = weights();
    let empty = workdir().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    expect_error(&empty, "cat", w, "empty");

    let text = workdir().join("notes.jpg");
    std::fs::write(&text, b"these are not the pixels you are looking for").unwrap();
    expect_error(&text, "cat", w, "not an image");

    let good = std::fs::read(photo()).unwrap();
    let truncated = workdir().join("truncated.png");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    expect_error(&truncated, "cat", w, "corrupt or truncated");

    expect_error(
        &workdir().join("does-not-exist.png"),
        "cat",
        w,
        "no such file",
    );
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

#[test]
fn huge_images_are_refused_before_decoding() {
    // A PNG announcing 20000x20000 RGB pixels whose data stops after a few rows (~1 KB file).
    let p = workdir().join("huge.png");
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 20000u32.to_be_bytes().to_vec();
    ihdr.extend(20000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut file, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &vec![0u8; 4 * (1 + 60000)]).unwrap();
    chunk(&mut file, b"IDAT", &z.finish().unwrap());
    std::fs::write(&p, file).unwrap();
    expect_error(&p, "cat", weights(), "20000x20000");
}

#[test]
fn odd_but_valid_images_segment() {
    let w = weights();
    let cases = [
        (
            "one.png",
            image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
                1,
                1,
                image::Rgb([200, 10, 10]),
            )),
        ),
        (
            "gray.png",
            image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 30, |x, _| {
                image::Luma([x as u8 * 6])
            })),
        ),
        (
            "rgba.png",
            image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(30, 50, |x, y| {
                image::Rgba([x as u8, y as u8, 9, 128])
            })),
        ),
        (
            "deep.png",
            image::DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(33, 17, |x, y| {
                image::Rgb([x as u16 * 1000, y as u16 * 3000, 7])
            })),
        ),
        (
            "thin.png",
            image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
                3,
                900,
                image::Rgb([1, 2, 3]),
            )),
        ),
    ];
    for (name, img) in cases {
        let p = write_png(name, img.clone());
        let (code, text) = segment(&p, "cat,dog", w);
        assert_eq!(code, 0, "{name}: {text}");
        let stem = name.trim_end_matches(".png");
        let labels = image::open(workdir().join("out").join(format!("{stem}.labels.png"))).unwrap();
        assert_eq!(
            (labels.width(), labels.height()),
            (img.width(), img.height()),
            "{name}: labels keep the input size"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(workdir().join("out").join(format!("{stem}.json"))).unwrap(),
        )
        .unwrap();
        let total: f64 = json["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["fraction"].as_f64().unwrap())
            .sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "{name}: fractions sum to {total}"
        );
    }
    // A palette PNG.
    let p = workdir().join("palette.png");
    let f = std::fs::File::create(&p).unwrap();
    let mut enc = png::Encoder::new(f, 4, 2);
    enc.set_color(png::ColorType::Indexed);
    enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(&[0, 1, 0, 1, 1, 0, 1, 0]).unwrap();
    wr.finish().unwrap();
    let (code, text) = segment(&p, "cat", w);
    assert_eq!(code, 0, "palette: {text}");
}

#[test]
fn bad_class_lists_are_named() {
    let (img, w) = (photo(), weights());
    expect_error(&img, "", w, "no classes");
    expect_error(&img, "cat,dog,cat", w, "unique");
    expect_error(&img, "cat,,dog", w, "empty name");
    let long = vec!["word"; 80].join(" ");
    expect_error(
        &img,
        &format!("cat,{long}"),
        w,
        "longer than the text context of 77 tokens",
    );
}

#[test]
fn an_output_folder_that_is_a_file_is_named() {
    let (img, w) = (photo(), weights());
    let file = workdir().join("not-a-folder");
    std::fs::write(&file, b"keep me").unwrap();
    for out in [file.clone(), file.join("below")] {
        let o = Command::new(env!("CARGO_BIN_EXE_segclip"))
            .args(["segment", "--classes", "cat,dog", "--image"])
            .arg(&img)
            .arg("--weights")
            .arg(w)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{text}");
        assert!(text.contains("exists and is not a folder"), "{text}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn wrong_checkpoints_are_named() {
    let img = photo();
    let dev = Device::Cpu;
    let z = |s: &[usize]| Tensor::zeros(s, candle_core::DType::F32, &dev).unwrap();

    let bert = workdir().join("bert.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "bert.embeddings.word_embeddings.weight".to_string(),
            z(&[4, 2]),
        )]),
        &bert,
    )
    .unwrap();
    expect_error(&img, "cat", &bert, "not a SegCLIP or CLIP checkpoint");

    let clip = workdir().join("clip.safetensors");
    let clip_keys = [
        ("visual.conv1.weight", vec![8, 3, 16, 16]),
        ("visual.positional_embedding", vec![197, 8]),
        ("positional_embedding", vec![77, 8]),
    ];
    candle_core::safetensors::save(
        &clip_keys
            .iter()
            .map(|(k, s)| (k.to_string(), z(s)))
            .collect(),
        &clip,
    )
    .unwrap();
    expect_error(&img, "cat", &clip, "plain CLIP model");

    let cfg = SegClipConfig::from_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/parity/small/config.json"
    )))
    .unwrap();
    let mut sd = segclip::group::model::seeded_state_dict(&cfg, 0, &dev).unwrap();
    sd.tensors
        .insert("clip.visual.ln_post.weight".into(), z(&[5]));
    let bad = workdir().join("misshaped.safetensors");
    candle_core::safetensors::save(&sd.tensors, &bad).unwrap();
    expect_error(&img, "cat", &bad, "`clip.visual.ln_post.weight`");
    expect_error(&img, "cat", &bad, "[5]");

    sd.tensors.remove("clip.visual.ln_post.weight");
    let missing = workdir().join("missing.safetensors");
    candle_core::safetensors::save(&sd.tensors, &missing).unwrap();
    expect_error(&img, "cat", &missing, "clip.visual.ln_post.weight");

    let junk = workdir().join("junk.bin");
    std::fs::write(&junk, b"PK\x03\x04 but not really a zip").unwrap();
    expect_error(&img, "cat", &junk, "junk.bin");
    expect_error(&img, "cat", &workdir().join("nope.bin"), "no such file");
    expect_error(&img, "cat", workdir(), "directory");
}

#[test]
fn unknown_or_unavailable_devices_are_named() {
    let w = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/datasets/default/segclip-synth.safetensors"
    );
    for (device, needle) in [
        ("tpu", "is not cpu, cuda[:N] or metal[:N]"),
        ("cuda:x", "`x` is not a device number"),
        #[cfg(not(feature = "cuda"))]
        ("cuda", "--features cuda"),
        #[cfg(not(feature = "metal"))]
        ("metal:1", "--features metal"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_segclip"))
            .args([
                "--device",
                device,
                "eval",
                "--dataset",
                "synth",
                "--count",
                "1",
                "--weights",
                w,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{device}: {err}");
        assert!(err.contains(needle), "{device}: {err}");
    }
}
