//! Fresh parameters for tensors a checkpoint does not provide (spec section 3.8): Linear and
//! embedding weights N(0, 0.02), biases 0, LayerNorms 1/0, packed `in_proj` weights
//! Xavier-uniform, grouped 1×1 convolutions U(±1/√fan_in), `semantic_center` and `mask_token`
//! truncated N(0, 0.02), the MAE decoder positions the fixed sin-cos table, the logit scale
//! ln(1/0.07) as CLIP starts it; a convolutional stem's kernels U(±1/√fan_in), PyTorch's
//! `Conv2d` default (not in SegCLIP, which has no such stem).

use candle_core::{Device, Tensor};

use crate::Result;
use segclip_data::transforms::Rng;

fn normal(rng: &mut Rng, std: f64, truncate: bool) -> f32 {
    loop {
        // Box–Muller.
        let (u1, u2) = (rng.uniform(f64::MIN_POSITIVE, 1.0), rng.uniform(0.0, 1.0));
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if !truncate || z.abs() <= 2.0 {
            return (z * std) as f32;
        }
    }
}

/// A fresh value for parameter `key` of `shape`; `grid` = image size / patch size.
pub fn fresh(
    key: &str,
    shape: &[usize],
    grid: usize,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let last = key.rsplit('.').next().unwrap_or(key);
    let module = key.rsplit('.').nth(1).unwrap_or("");
    let is_ln = matches!(
        module,
        "ln_pre"
            | "ln_post"
            | "ln_final"
            | "ln_1"
            | "ln_2"
            | "ln_x"
            | "ln_k"
            | "cross_ln"
            | "k_ln"
            | "ln"
            | "norm"
            | "norm1"
            | "norm2"
            | "decoder_norm"
    );
    let v: Vec<f32> = if key == "clip.logit_scale" {
        vec![(1.0f64 / 0.07).ln() as f32; n.max(1)]
    } else if key == "vis_mae_decoder.decoder_pos_embed" {
        segclip_group::model::sincos_table(grid, *shape.last().unwrap_or(&0))
    } else if is_ln {
        vec![if last == "weight" { 1.0 } else { 0.0 }; n]
    } else if last.ends_with("bias") {
        vec![0.0; n]
    } else if last == "in_proj_weight" {
        let a = (6.0 / (shape[0] / 3 + shape[1]) as f64).sqrt();
        (0..n).map(|_| rng.uniform(-a, a) as f32).collect()
    } else if key.starts_with("clip.visual.conv_stem.") && last == "weight" {
        let a = 1.0 / (shape[1..].iter().product::<usize>() as f64).sqrt();
        (0..n).map(|_| rng.uniform(-a, a) as f32).collect()
    } else if module == "k_conv" || module == "v_conv" {
        let a = 1.0 / (shape[1] as f64).sqrt();
        (0..n).map(|_| rng.uniform(-a, a) as f32).collect()
    } else if last == "semantic_center" || last == "mask_token" {
        (0..n).map(|_| normal(rng, 0.02, true)).collect()
    } else if key == "clip.positional_embedding" {
        (0..n).map(|_| normal(rng, 0.01, false)).collect()
    } else {
        (0..n).map(|_| normal(rng, 0.02, false)).collect()
    };
    Ok(Tensor::from_vec(v, shape, device)?)
}
