//! `segclip synth` writes a VOC-layout folder that `segclip eval` reads like a real dataset, and
//! `--dataset synth` evaluates fresh scenes; both write eval.json and eval.csv.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use segclip::group::SegClipConfig;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn synth_folder_and_fresh_scenes_evaluate() {
    let dir = std::env::temp_dir().join(format!("segclip-eval-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = SegClipConfig::from_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/parity/small/config.json"
    )))
    .unwrap();
    let sd = segclip::group::model::seeded_state_dict(&cfg, 0, &Device::Cpu).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("w.safetensors");
    candle_core::safetensors::save(&sd.tensors, &w).unwrap();
    let folder = dir.join("synth");
    run(&[
        "synth",
        "--out",
        folder.to_str().unwrap(),
        "--count",
        "3",
        "--seed",
        "5",
        "--split",
        "test",
        "--size",
        "64",
    ]);
    assert!(
        folder.join("ImageSets/Segmentation/val.txt").exists()
            && folder.join("classes.txt").exists()
    );
    let out = run(&[
        "eval",
        "--dataset",
        "folder",
        "--root",
        folder.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--out",
        dir.join("e1").to_str().unwrap(),
    ]);
    assert!(out.contains("mIoU"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("e1/eval.json")).unwrap()).unwrap();
    let miou = j["miou"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&miou));
    assert_eq!(j["per_class"].as_array().unwrap().len(), 21);
    assert!(std::fs::read_to_string(dir.join("e1/eval.csv"))
        .unwrap()
        .starts_with("class,iou"));
    // The same scenes generated on the fly give the same numbers.
    let out = run(&[
        "eval",
        "--dataset",
        "synth",
        "--seed",
        "5",
        "--count",
        "3",
        "--size",
        "64",
        "--weights",
        w.to_str().unwrap(),
        "--out",
        dir.join("e2").to_str().unwrap(),
    ]);
    assert!(out.contains("held-out"), "{out}");
    let j2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("e2/eval.json")).unwrap()).unwrap();
    assert_eq!(j2["miou"].as_f64().unwrap(), miou);
    // A wrong layout names the missing path.
    let bad = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args([
            "eval",
            "--dataset",
            "voc",
            "--root",
            dir.to_str().unwrap(),
            "--weights",
            w.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("JPEGImages"));
    // A reader that stops early (`segclip eval ... | head -1`) neither panics the command nor
    // keeps it from writing its files.
    let mut child = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(["eval", "--dataset", "synth", "--count", "2", "--size", "64"])
        .args(["--weights", w.to_str().unwrap(), "--out"])
        .arg(dir.join("e3"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
    assert!(dir.join("e3/eval.json").exists());
    std::fs::remove_dir_all(dir).ok();
}
