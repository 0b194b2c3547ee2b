//! `segclip export --bg-thresh` records the background threshold a checkpoint was calibrated
//! for in its safetensors metadata (and `--refine` and `--claim-margin` the refinement and the
//! claim margin it was calibrated with); `segment` uses them unless told otherwise, `eval` says
//! so, a re-export keeps them, and a bad value is an error that names it. Runs the `segclip`
//! binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use segclip::group::SegClipConfig;

fn segclip(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("panicked"), "{args:?}: {text}");
    (out.status.code().unwrap_or(-1), text)
}

fn ok(args: &[&str]) -> String {
    let (code, text) = segclip(args);
    assert_eq!(code, 0, "{args:?}: {text}");
    text
}

/// The threshold `segment` wrote into its JSON summary, with `extra` arguments.
fn segment_threshold(dir: &Path, weights: &Path, extra: &[&str]) -> Option<f64> {
    segment_background(dir, weights, extra).0
}

/// The threshold and score `segment` wrote into its JSON summary.
fn segment_background(dir: &Path, weights: &Path, extra: &[&str]) -> (Option<f64>, String) {
    let j = segment_summary(dir, weights, extra);
    (
        j["background_threshold"].as_f64(),
        j["background_score"].as_str().unwrap_or("").to_string(),
    )
}

/// The refinement iterations `segment` wrote into its JSON summary.
fn segment_refine(dir: &Path, weights: &Path, extra: &[&str]) -> u64 {
    segment_summary(dir, weights, extra)["refine_iterations"]
        .as_u64()
        .unwrap()
}

/// The claim margin `segment` wrote into its JSON summary.
fn segment_claim(dir: &Path, weights: &Path, extra: &[&str]) -> Option<f64> {
    segment_summary(dir, weights, extra)["claim_margin"].as_f64()
}

/// `segment`'s JSON summary of the first sample with `extra` arguments.
fn segment_summary(dir: &Path, weights: &Path, extra: &[&str]) -> serde_json::Value {
    let image = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/datasets/samples/synth-scene-0.png"
    );
    let out = dir.join("seg");
    let mut args = vec![
        "segment",
        "--image",
        image,
        "--classes",
        "red circle,blue square",
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&args);
    serde_json::from_str(&std::fs::read_to_string(out.join("synth-scene-0.json")).unwrap()).unwrap()
}

#[test]
fn calibrated_background_threshold_travels_with_the_weights() {
    let dir = std::env::temp_dir().join(format!("segclip-export-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = SegClipConfig::from_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/parity/small/config.json"
    )))
    .unwrap();
    let sd = segclip::group::model::seeded_state_dict(&cfg, 0, &Device::Cpu).unwrap();
    let plain = dir.join("plain.safetensors");
    segclip::vit::weights::save_safetensors(&sd.tensors, None, &plain).unwrap();
    let p = |name: &str| -> PathBuf { dir.join(name) };
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let export_args = |from: &PathBuf, to: &PathBuf, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["export", "--weights", &s(from), "--out", &s(to)]
            .map(String::from)
            .into();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let export = |from: &PathBuf, to: &PathBuf, extra: &[&str]| -> String {
        let a = export_args(from, to, extra);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let export_fails = |from: &PathBuf, to: &PathBuf, extra: &[&str]| -> (i32, String) {
        let a = export_args(from, to, extra);
        segclip(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Without metadata: VOC's 0.8.
    assert_eq!(segment_threshold(&dir, &plain, &[]), Some(0.8));

    let calibrated = p("calibrated.safetensors");
    let text = export(&plain, &calibrated, &["--bg-thresh", "0.25"]);
    assert!(
        text.contains("calibrated for --bg-thresh 0.25 --bg-score probability"),
        "{text}"
    );
    assert_eq!(segment_threshold(&dir, &calibrated, &[]), Some(0.25));
    assert_eq!(
        segment_threshold(&dir, &calibrated, &["--bg-thresh", "0.6"]).map(|t| (t * 1e6).round()),
        Some(600000.0)
    );
    assert_eq!(
        segment_threshold(&dir, &calibrated, &["--no-background"]),
        None
    );
    let model = segclip::group::SegClip::load(&s(&calibrated), &Device::Cpu).unwrap();
    assert_eq!(model.calibration.bg_thresh, Some(0.25));

    // Exported files are readable as any file the user creates (the safetensors crate's
    // temporary files are 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let fresh = p("fresh");
        std::fs::write(&fresh, b"x").unwrap();
        let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&calibrated), mode(&fresh));
        assert_eq!(mode(&plain), mode(&fresh));
    }

    // The score travels too: cosine, recorded with its threshold, and overridable.
    let cosine = p("cosine.safetensors");
    let text = export(
        &plain,
        &cosine,
        &["--bg-thresh", "0.5", "--bg-score", "cosine"],
    );
    assert!(
        text.contains("calibrated for --bg-thresh 0.5 --bg-score cosine"),
        "{text}"
    );
    assert_eq!(
        segment_background(&dir, &cosine, &[]),
        (Some(0.5), "cosine".to_string())
    );
    assert_eq!(
        segment_background(&dir, &cosine, &["--bg-score", "probability"]),
        (Some(0.5), "probability".to_string())
    );
    assert_eq!(
        segment_background(&dir, &calibrated, &[]),
        (Some(0.25), "probability".to_string())
    );
    let (code, text) = export_fails(&plain, &p("nothr.safetensors"), &["--bg-score", "cosine"]);
    assert!(code != 0 && text.contains("--bg-thresh"), "{text}");

    // A re-export (here to float16) keeps the threshold unless given a new one.
    let again = p("again.safetensors");
    export(&calibrated, &again, &["--half"]);
    assert_eq!(segment_threshold(&dir, &again, &[]), Some(0.25));

    // `eval` keeps the dataset's official value and says what the weights recommend.
    let eval = |weights: &PathBuf| {
        ok(&[
            "eval",
            "--dataset",
            "synth",
            "--count",
            "2",
            "--size",
            "64",
            "--weights",
            &s(weights),
            "--out",
            &s(&p("eval")),
        ])
    };
    let text = eval(&calibrated);
    assert!(
        text.contains("--bg-thresh 0.25 --bg-score probability: pass them"),
        "{text}"
    );

    // The refinement the threshold was calibrated with travels too, and a re-export that
    // gives none keeps it.
    let refined = p("refined.safetensors");
    let text = export(&cosine, &refined, &["--refine", "10"]);
    assert!(
        text.contains("calibrated for --bg-thresh 0.5 --bg-score cosine --refine 10"),
        "{text}"
    );
    assert_eq!(segment_refine(&dir, &refined, &[]), 10);
    assert_eq!(segment_refine(&dir, &refined, &["--refine", "0"]), 0);
    assert_eq!(segment_refine(&dir, &cosine, &[]), 0);
    let refined_again = p("refined-again.safetensors");
    export(&refined, &refined_again, &[]);
    assert_eq!(segment_refine(&dir, &refined_again, &[]), 10);
    let text = eval(&refined);
    assert!(
        text.contains("calibrated for --bg-thresh 0.5 --bg-score cosine --refine 10: pass them"),
        "{text}"
    );

    // So does the claim margin; `--no-background` turns it off with the background.
    let claimed = p("claimed.safetensors");
    let text = export(&refined, &claimed, &["--claim-margin", "0.02"]);
    assert!(text.contains("--refine 10 --claim-margin 0.02"), "{text}");
    let near = |v: Option<f64>| v.map(|m| (m * 1e6).round());
    assert_eq!(near(segment_claim(&dir, &claimed, &[])), Some(20000.0));
    assert_eq!(
        near(segment_claim(&dir, &claimed, &["--claim-margin", "0"])),
        Some(0.0)
    );
    assert_eq!(segment_claim(&dir, &claimed, &["--no-background"]), None);
    assert_eq!(segment_claim(&dir, &refined, &[]), None);
    let text = eval(&claimed);
    assert!(text.contains("--claim-margin 0.02: pass them"), "{text}");

    // And the second views of the regions, on and off.
    let views = p("views.safetensors");
    let text = export(&claimed, &views, &["--reencode"]);
    assert!(text.contains("--claim-margin 0.02 --reencode"), "{text}");
    let reencode =
        |w: &PathBuf, extra: &[&str]| segment_summary(&dir, w, extra)["reencode"].as_bool();
    assert_eq!(reencode(&views, &[]), Some(true));
    assert_eq!(reencode(&views, &["--reencode", "false"]), Some(false));
    assert_eq!(reencode(&claimed, &[]), Some(false));
    assert_eq!(reencode(&claimed, &["--reencode"]), Some(true));
    let views_off = p("views-off.safetensors");
    export(&views, &views_off, &["--reencode", "false"]);
    assert_eq!(reencode(&views_off, &[]), Some(false));

    // Bad values are named.
    let (code, text) = export_fails(&plain, &p("bad.safetensors"), &["--bg-thresh", "1.5"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[0, 1]"), "{text}");
    assert!(!p("bad.safetensors").exists());
    let (code, text) = export_fails(&plain, &p("bad.safetensors"), &["--claim-margin", "1.5"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--claim-margin 1.5"), "{text}");
    assert!(!p("bad.safetensors").exists());
    // Malformed metadata is an error that names the key and the value.
    let image = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/datasets/samples/synth-scene-0.png"
    );
    for (key, value) in [
        (segclip::group::BG_THRESH_KEY, "high"),
        (segclip::group::REFINE_KEY, "-3"),
        (segclip::group::CLAIM_KEY, "wide"),
        (segclip::group::REENCODE_KEY, "yes"),
    ] {
        let junk = p(&format!("junk-{key}.safetensors"));
        segclip::vit::weights::save_safetensors(
            &sd.tensors,
            Some(HashMap::from([(key.to_string(), value.to_string())])),
            &junk,
        )
        .unwrap();
        let (code, text) = segclip(&[
            "segment",
            "--image",
            image,
            "--classes",
            "red circle",
            "--weights",
            &s(&junk),
            "--out",
            &s(&p("seg")),
        ]);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains(key) && text.contains(value), "{text}");
    }
    std::fs::remove_dir_all(dir).ok();
}
