//! `segclip train --config` on a tiny caption set the test makes: it logs every step as JSON,
//! writes checkpoints whose model file uses the official key names and loads for segmentation,
//! and `--resume` continues from the last checkpoint.

use std::process::Command;

fn segclip(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args(args)
        .output()
        .unwrap()
}

/// A folder with 8 captioned images, one missing image, and a tiny model configuration.
fn setup(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("segclip-train-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut lines = String::new();
    for i in 0..8u32 {
        let c = [[200u8, 30, 30], [30, 30, 200]][(i % 2) as usize];
        image::RgbImage::from_fn(36, 36, |x, _| {
            if x > 10 + i {
                image::Rgb(c)
            } else {
                image::Rgb([90, 90, 90])
            }
        })
        .save(dir.join(format!("data/{i}.png")))
        .unwrap();
        lines += &format!(
            "{{\"image\": \"{i}.png\", \"caption\": \"a {} thing\"}}\n",
            ["red", "blue"][(i % 2) as usize]
        );
    }
    // A missing image is skipped and counted, not fatal.
    lines += "{\"image\": \"missing.png\", \"caption\": \"nothing\"}\n";
    std::fs::write(dir.join("data/pairs.jsonl"), lines).unwrap();
    let model = serde_json::json!({
        "vision": {"image_size": 32, "patch_size": 8, "width": 64, "heads": 1, "ln_eps": 1e-5},
        "text": {"vocab_size": 49408, "context_length": 77, "width": 64, "layers": 1, "heads": 1, "embed_dim": 32, "ln_eps": 1e-5},
        "embed_dim": 32, "layers0": 1, "layers2": 1, "layers_mae2": 1,
        "group": {"num_centers": 4, "cross_layers": 1, "cross_heads": 1, "conv_groups": 1, "gumbel_tau": 0.9},
        "decoder": {"dim": 32, "depth": 1, "heads": 2, "ln_eps": 1e-6},
        "logit_scale_max": 100.0
    });
    std::fs::write(dir.join("model.json"), model.to_string()).unwrap();
    dir
}

#[test]
fn train_writes_log_and_checkpoints_and_resumes() {
    let dir = setup("resume");
    let toml = |epochs: usize| {
        format!(
            "output = \"{out}\"\n[data]\nformat = \"jsonl\"\npath = \"{data}\"\n[model]\nconfig = \"{model}\"\n\
             [optim]\nepochs = {epochs}\nlr = 0.002\nlower_lr = 0.002\n[train]\nbatch = 3\nsave_every = 2\nkeep_last = 2\n\
             [superpixels]\nscale = 32.0\nsigma = 0.5\nmin_size = 16\n",
            out = dir.join("run").display(),
            data = dir.join("data/pairs.jsonl").display(),
            model = dir.join("model.json").display()
        )
    };
    std::fs::write(dir.join("train.toml"), toml(1)).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_segclip"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let cfg = dir.join("train.toml");
    run(&["train", "--config", cfg.to_str().unwrap()]);
    let log = std::fs::read_to_string(dir.join("run/log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3, "9 samples / batch 3 = 3 steps");
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(first["loss"].as_f64().unwrap().is_finite() && first["lr"].as_f64().unwrap() > 0.0);
    let skipped: u64 = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["skipped_images"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(skipped, 1);
    let cks = segclip::train::checkpoint::list(&dir.join("run"));
    assert_eq!(
        cks.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![2, 3],
        "keep_last = 2"
    );
    // The checkpoint is a SegCLIP state dict under official names: it segments.
    let model_file = cks[1].1.join("model.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_segclip"))
        .args([
            "segment",
            "--image",
            dir.join("data/0.png").to_str().unwrap(),
            "--classes",
            "red,blue",
            "--weights",
            model_file.to_str().unwrap(),
            "--out",
            dir.join("seg").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Resume with a second epoch: steps 4..6 are appended.
    std::fs::write(dir.join("train.toml"), toml(2)).unwrap();
    run(&["train", "--config", cfg.to_str().unwrap(), "--resume"]);
    let log = std::fs::read_to_string(dir.join("run/log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn accumulation_and_periodic_evaluation() {
    let dir = setup("accum");
    let toml = format!(
        "output = \"{out}\"\n[data]\nformat = \"jsonl\"\npath = \"{data}\"\n[model]\nconfig = \"{model}\"\n\
         [optim]\nepochs = 1\n[train]\nbatch = 4\naccumulation = 2\n\
         [superpixels]\nscale = 32.0\nsigma = 0.5\nmin_size = 16\n\
         [eval]\nevery = 1\ndataset = \"synth\"\ncount = 2\nsize = 32\n",
        out = dir.join("run").display(),
        data = dir.join("data/pairs.jsonl").display(),
        model = dir.join("model.json").display()
    );
    let cfg = dir.join("train.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = segclip(&["train", "--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("zero-shot mIoU")
            || stderr.contains("zero-shot mIoU"),
        "no evaluation line printed"
    );
    let log = std::fs::read_to_string(dir.join("run/log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 9 samples / batch 4 = 2 steps, each followed by its evaluation.
    assert_eq!(lines.len(), 4, "{log}");
    for (i, l) in lines.iter().enumerate() {
        if i % 2 == 0 {
            assert!(l["contrastive"].as_f64().unwrap().is_finite());
        } else {
            let e = &l["eval"];
            assert_eq!(e["images"], 2);
            let m = e["miou"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&m), "{m}");
            assert!(e["miou_held_out"].is_number() || e["miou_held_out"].is_null());
        }
    }
    // A batch that does not split into the micro-batches is refused before training.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("batch = 4", "batch = 5"),
    )
    .unwrap();
    let out = segclip(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("train.accumulation"));
    // Several processes need the NCCL build.
    let out = segclip(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--world-size",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nccl"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bench_times_training_steps() {
    let dir = setup("bench");
    let out = segclip(&[
        "bench",
        "--train",
        "--model",
        dir.join("model.json").to_str().unwrap(),
        "--batch",
        "2",
        "--iters",
        "2",
        "--warmup",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["times_ms"].as_array().unwrap().len(), 2);
    for k in ["median_ms", "forward_ms", "backward_ms", "update_ms"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `[model] init` with OpenAI CLIP names: the visual blocks split at the model's `layers0`
/// (spec 3.8; block `layers0` becomes `layers2.0`), every tensor of the file is used and the
/// counts are printed; blocks above the model's depth are left out and counted; a tensor of
/// another model is refused, naming it.
#[test]
fn init_from_clip_splits_the_visual_blocks_at_layers0() {
    use candle_core::{DType, Device, Tensor};
    let dir = setup("init");
    let cfg = segclip::group::SegClipConfig::from_file(&dir.join("model.json")).unwrap();
    let layers0 = cfg.layers0;
    // The CLIP part of the model's tensors under OpenAI's names.
    let openai = |key: &str| -> Option<String> {
        let k = key.strip_prefix("clip.")?;
        if k.contains("semantic_layer") || k.contains("layers_mae2") || k.contains("reconstruct") {
            return None;
        }
        let block = |prefix: &str, offset: usize| {
            k.strip_prefix(prefix).map(|rest| {
                let (n, tail) = rest.split_once('.').unwrap();
                format!(
                    "visual.transformer.resblocks.{}.{tail}",
                    n.parse::<usize>().unwrap() + offset
                )
            })
        };
        Some(
            block("visual.transformer.layers0.", 0)
                .or_else(|| block("visual.transformer.layers2.", layers0))
                .unwrap_or_else(|| k.to_string()),
        )
    };
    let (req, opt) = cfg.keys();
    let mut tensors = std::collections::HashMap::new();
    for (key, shape) in req.iter().chain(&opt) {
        if let Some(name) = openai(key) {
            tensors.insert(
                name,
                Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            );
        }
    }
    let n = tensors.len();
    assert!(tensors.contains_key("visual.transformer.resblocks.1.ln_1.weight"));
    candle_core::safetensors::save(&tensors, dir.join("clip.safetensors")).unwrap();
    let toml = format!(
        "output = \"{out}\"\n[data]\nformat = \"jsonl\"\npath = \"{data}\"\n[model]\nconfig = \"{model}\"\n\
         init = \"{init}\"\n[optim]\nepochs = 1\n[train]\nbatch = 8\n[superpixels]\nscale = 32.0\nsigma = 0.5\nmin_size = 16\n",
        out = dir.join("run").display(),
        data = dir.join("data/pairs.jsonl").display(),
        model = dir.join("model.json").display(),
        init = dir.join("clip.safetensors").display(),
    );
    std::fs::write(dir.join("train.toml"), toml).unwrap();
    let cfg_path = dir.join("train.toml");
    let out = segclip(&["train", "--config", cfg_path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("init: {n} tensors from")), "{err}");
    // A visual block above layers0 + layers2 (a deeper CLIP): left out, and said so.
    tensors.insert(
        "visual.transformer.resblocks.2.ln_1.weight".into(),
        Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("clip.safetensors")).unwrap();
    std::fs::remove_dir_all(dir.join("run")).ok();
    let out = segclip(&["train", "--config", cfg_path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("init: {n} tensors from"))
            && err.contains("1 of CLIP visual blocks above the model's 1 + 1 left out"),
        "{err}"
    );
    // A tensor no CLIP has: another model's checkpoint, refused by name.
    tensors.insert(
        "decoder.head.weight".into(),
        Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("clip.safetensors")).unwrap();
    let out = segclip(&["train", "--config", cfg_path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("decoder.head.weight") && err.contains("another model"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}
