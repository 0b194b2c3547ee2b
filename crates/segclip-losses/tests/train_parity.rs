//! One training forward + backward against the official code
//! (`fixtures/parity/small/train.safetensors`): intermediates, the three losses and 17
//! gradients within 1e-4 of their scale; hard assignments identical.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use segclip_group::SegClipConfig;
use segclip_losses::{LossWeights, TrainingModel};
use segclip_vit::Trace;

fn load(name: &str) -> HashMap<String, Tensor> {
    let p = format!(
        "{}/../../fixtures/parity/small/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn rel_err(ours: &Tensor, theirs: &Tensor) -> f64 {
    let (o, t) = (
        ours.to_dtype(DType::F64).unwrap().flatten_all().unwrap(),
        theirs.to_dtype(DType::F64).unwrap().flatten_all().unwrap(),
    );
    assert_eq!(o.dims(), t.dims());
    let d = (&o - &t)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let s = t.abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    if s > 0.0 {
        d / s
    } else {
        d
    }
}

#[test]
fn training_step_matches_the_official_code() {
    let dev = Device::Cpu;
    let cfg_path = format!(
        "{}/../../fixtures/parity/small/config.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let cfg = SegClipConfig::from_file(std::path::Path::new(&cfg_path)).unwrap();
    let varmap = segclip_losses::parity::seeded_varmap(&cfg, 0, &dev).unwrap();
    let model =
        TrainingModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev), &cfg).unwrap();
    let (train, inf) = (load("train.safetensors"), load("inference.safetensors"));
    let (batch, noise) =
        segclip_losses::parity::fixture_inputs(&train, &inf["input.pixels"], 14).unwrap();
    let mut trace = Trace::default();
    let losses = model
        .forward(&batch, &noise, &LossWeights::default(), Some(&mut trace))
        .unwrap();
    let mut failures = Vec::new();
    let mut check = |name: &str, ours: &Tensor, theirs: &Tensor| {
        let e = rel_err(ours, theirs);
        println!("{name:<70} rel {e:.2e}");
        if e > 1e-4 {
            failures.push(format!("{name}: {e:.2e}"));
        }
    };
    for (ours, theirs) in [
        ("train.text_emb", "train.text_emb"),
        ("train.image_emb", "train.image_emb"),
        ("train.logits_t2v", "train.logits_t2v"),
        ("group.soft_attn", "train.soft_attn"),
        ("group.hard_attn", "train.hard_attn"),
        ("group.region_tokens", "train.region_tokens"),
        ("train.mae.region_tokens", "train.mae.region_tokens"),
        ("train.mae.hard_attn", "train.mae.hard_attn"),
        ("train.mae.reconstructed", "train.mae.reconstructed"),
        ("train.mae.hidden", "train.mae.hidden"),
        ("train.mae.pred", "train.mae.pred"),
        ("loss.contrastive", "loss.contrastive"),
        ("loss.kl", "loss.kl"),
        ("loss.mae", "loss.mae"),
        ("loss.total", "loss.total"),
    ] {
        check(
            ours,
            trace
                .get(ours)
                .unwrap_or_else(|| panic!("{ours} not traced")),
            &train[theirs],
        );
    }
    let grads = losses.total.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    let mut n = 0;
    for (name, want) in train.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let key = &name["grad.".len()..];
        let var = vars
            .get(key)
            .unwrap_or_else(|| panic!("no parameter {key}"));
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        check(name, got, want);
        n += 1;
    }
    assert_eq!(n, 17);
    assert!(failures.is_empty(), "{failures:?}");
}
