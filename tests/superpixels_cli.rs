//! `segclip superpixels` writes the label map as a 16-bit PNG; with SegCLIP's parameters it is
//! scikit-image's map, ids included.

use std::process::Command;

#[test]
fn felzenszwalb_cli_reproduces_scikit_image() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("segclip-sp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("chelsea.png");
    let overlay = dir.join("chelsea.overlay.png");
    let status = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(["superpixels", "--method", "felzenszwalb", "--overlay"])
        .arg(&overlay)
        .arg(format!("{root}/datasets/samples/chelsea.png"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let ours = image::open(&out).unwrap().into_luma16();
    let theirs = image::open(format!(
        "{root}/fixtures/superpixels/chelsea.felzenszwalb_segclip.png"
    ))
    .unwrap()
    .into_luma16();
    assert_eq!(ours.dimensions(), theirs.dimensions());
    assert!(ours.as_raw() == theirs.as_raw(), "label maps differ");
    assert!(image::open(&overlay).is_ok());
    // Bad input is named, not a panic.
    let bad = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(["superpixels", "/nonexistent.png"])
        .arg(dir.join("x.png"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no such file"));
    std::fs::remove_dir_all(dir).ok();
}
