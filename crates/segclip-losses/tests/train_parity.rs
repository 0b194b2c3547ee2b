//! One training forward + backward against the official code
//! (`fixtures/parity/small/train.safetensors`): intermediates, the three losses and 17
//! gradients within 1e-4 of their scale; hard assignments identical.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use segclip_group::SegClipConfig;
use segclip_losses::{Batch, LossWeights, Noise, TrainingModel};
use segclip_vit::Trace;

fn load(name: &str) -> HashMap<String, Tensor> {
    let p = format!("{}/../../fixtures/parity/small/{name}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn rel_err(ours: &Tensor, theirs: &Tensor) -> f64 {
    let (o, t) = (ours.to_dtype(DType::F64).unwrap().flatten_all().unwrap(), theirs.to_dtype(DType::F64).unwrap().flatten_all().unwrap());
    assert_eq!(o.dims(), t.dims());
    let d = (&o - &t).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    let s = t.abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    if s > 0.0 { d / s } else { d }
}

#[test]
fn training_step_matches_the_official_code() {
    let dev = Device::Cpu;
    let cfg_path = format!("{}/../../fixtures/parity/small/config.json", env!("CARGO_MANIFEST_DIR"));
    let cfg = SegClipConfig::from_file(std::path::Path::new(&cfg_path)).unwrap();
    let seeded = segclip_group::model::seeded_state_dict(&cfg, 0, &dev).unwrap();
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (k, t) in seeded.tensors {
            data.insert(k, Var::from_tensor(&t).unwrap());
        }
    }
    let model = TrainingModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev), &cfg).unwrap();
    let (train, inf) = (load("train.safetensors"), load("inference.safetensors"));
    let b = train["train.input_ids"].dim(0).unwrap();
    let batch = Batch {
        input_ids: train["train.input_ids"].clone(),
        pixels: inf["input.pixels"].clone(),
        image_seg: train["train.image_seg"].reshape((b, 196)).unwrap(),
    };
    let noise = Noise {
        gumbel_plain: train["train.gumbel_noise.0"].clone(),
        ids_keep: train["train.mae.ids_keep"].clone(),
        ids_restore: train["train.mae.ids_restore"].clone(),
        mask: train["train.mae.mask"].clone(),
        gumbel_masked: train["train.gumbel_noise.1"].clone(),
    };
    let mut trace = Trace::default();
    let losses = model.forward(&batch, &noise, &LossWeights::default(), Some(&mut trace)).unwrap();
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
        check(ours, trace.get(ours).unwrap_or_else(|| panic!("{ours} not traced")), &train[theirs]);
    }
    let grads = losses.total.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    let mut n = 0;
    for (name, want) in train.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let key = &name["grad.".len()..];
        let var = vars.get(key).unwrap_or_else(|| panic!("no parameter {key}"));
        let got = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {key}"));
        check(name, got, want);
        n += 1;
    }
    assert_eq!(n, 17);
    assert!(failures.is_empty(), "{failures:?}");
}
