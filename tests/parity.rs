//! Numerical parity with the official SegCLIP PyTorch code on the vendored fixtures
//! (`fixtures/parity/`, from `shared/parity/`): every float tensor within 1e-4 of its scale,
//! every discrete result identical.

use std::path::PathBuf;

use segclip::group::SegClipConfig;

fn fixture(set: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/parity")
        .join(set)
}

fn check(set: &str) {
    let report = segclip::parity::run(&fixture(set)).unwrap();
    report.print();
    assert!(report.passed(), "parity failed for {set}");
    let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
    for must in [
        "group.hard_attn",
        "vision.image_emb",
        "text.emb",
        "text.emb (up to EOT only)",
        "decode.logits",
        "decode.seg",
        "tokenizer: text.ids",
    ] {
        assert!(names.contains(&must), "{set}: {must} was not compared");
    }
}

#[test]
fn small_set_matches_the_official_code() {
    check("small");
}

#[test]
fn full_vit_b16_set_matches_the_official_code() {
    check("full");
}

/// Our key list (from the config) is exactly the official state dict's.
#[test]
fn key_lists_match_the_official_state_dict() {
    for set in ["small", "full"] {
        let dir = fixture(set);
        let cfg = SegClipConfig::from_file(&dir.join("config.json")).unwrap();
        let (req, opt) = cfg.keys();
        let ours: Vec<(String, Vec<usize>)> = req.into_iter().chain(opt).collect();
        let text = std::fs::read_to_string(dir.join("keys.txt")).unwrap();
        let theirs: Vec<(String, Vec<usize>)> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (key, rest) = l.split_once(' ').unwrap();
                let shape = rest[rest.find('(').unwrap() + 1..rest.find(')').unwrap()]
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse().unwrap())
                    .collect();
                (key.to_string(), shape)
            })
            .collect();
        assert_eq!(theirs.len(), 415);
        let mut a = ours.clone();
        let mut b = theirs.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{set}");
    }
}

/// The configuration read off a checkpoint's shapes is the parity config.
#[test]
fn config_is_inferred_from_checkpoint_shapes() {
    for set in ["small", "full"] {
        let cfg = SegClipConfig::from_file(&fixture(set).join("config.json")).unwrap();
        let sd =
            segclip::group::model::seeded_state_dict(&cfg, 0, &candle_core::Device::Cpu).unwrap();
        assert_eq!(SegClipConfig::infer(&sd).unwrap(), cfg, "{set}");
    }
}

/// A model with a convolutional stem (`datasets/synth/model-conv.json`): its keys, the config
/// read back off their shapes, a forward pass, and a stem that does not match the patch size.
#[test]
fn a_convolutional_stem_is_inferred_and_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = SegClipConfig::from_file(&root.join("datasets/synth/model-conv.json")).unwrap();
    assert_eq!(cfg.vision.conv_stem, [32, 64]);
    let dev = candle_core::Device::Cpu;
    let sd = segclip::group::model::seeded_state_dict(&cfg, 0, &dev).unwrap();
    assert!(sd.tensors.contains_key("clip.visual.conv_stem.2.weight"));
    assert!(!sd.tensors.contains_key("clip.visual.conv_stem.2.bias"));
    assert!(!sd.tensors.contains_key("clip.visual.conv1.weight"));
    assert_eq!(SegClipConfig::infer(&sd).unwrap().vision, cfg.vision);
    let model = segclip::group::SegClip::from_state_dict(sd, &cfg, &dev).unwrap();
    let px = candle_core::Tensor::randn(0f32, 1., (2, 3, 112, 112), &dev).unwrap();
    let out = model.visual.forward(&px, None, None).unwrap();
    assert_eq!(out.image_emb.dims(), &[2, cfg.embed_dim]);
    let mut bad = cfg.clone();
    bad.vision.conv_stem = vec![32];
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("stride 4, not the patch size 8"), "{err}");
}
