//! The three SegCLIP losses (spec section 2).

use candle_core::{DType, Tensor, D};
use candle_nn::ops::{log_softmax, softmax};

use crate::Result;

/// `x / max(‖x‖, 1e-12)` along the last dimension.
fn normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::INFINITY)?;
    Ok(x.broadcast_div(&n)?)
}

/// Symmetric InfoNCE (spec 2.1) over a batch whose pair i is (text i, image i):
/// `s = min(exp(logit_scale), max)`, logits `s·t̂ v̂ᵀ`, mean cross-entropy both ways, halved.
/// Returns (loss, logits_t2v).
pub fn contrastive(
    text_emb: &Tensor,
    image_emb: &Tensor,
    logit_scale: &Tensor,
    max_scale: f64,
) -> Result<(Tensor, Tensor)> {
    let b = text_emb.dim(0)?;
    let s = logit_scale.exp()?.clamp(0f32, max_scale as f32)?;
    let (t, v) = (normalize(text_emb)?, normalize(image_emb)?);
    let t2v = t.matmul(&v.t()?)?.broadcast_mul(&s)?;
    let v2t = v.matmul(&t.t()?)?.broadcast_mul(&s)?;
    let labels = Tensor::arange(0u32, b as u32, text_emb.device())?;
    let ce = |logits: &Tensor| candle_nn::loss::cross_entropy(logits, &labels);
    let loss = ((ce(&t2v)? + ce(&v2t)?)? / 2.0)?;
    Ok((loss, t2v))
}

/// The superpixel KL loss (spec 2.3): `hard` (B, L, N) assignments (straight-through),
/// `labels` (B, N) superpixel id per patch. Symmetric, neither side detached, normalised by
/// B·N·L.
pub fn superpixel_kl(hard: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, l, n) = hard.dims3()?;
    let a = hard.transpose(1, 2)?.contiguous()?; // (B, N, L)
    let lab = labels.to_dtype(DType::F32)?;
    let same = lab
        .unsqueeze(2)?
        .broadcast_eq(&lab.unsqueeze(1)?)?
        .to_dtype(DType::F32)?; // (B, N, N)
    let counts = same.sum_keepdim(D::Minus1)?.clamp(1f32, f32::INFINITY)?;
    let mbar = same.matmul(&a)?.broadcast_div(&counts)?;
    let coef = (b * n * l) as f64;
    let (lsa, lsm) = (log_softmax(&a, D::Minus1)?, log_softmax(&mbar, D::Minus1)?);
    let (pa, pm) = (softmax(&a, D::Minus1)?, softmax(&mbar, D::Minus1)?);
    let kl1 = (pm.clone() * (pm.log()? - &lsa)?)?.sum_all()?;
    let kl2 = (pa.clone() * (pa.log()? - &lsm)?)?.sum_all()?;
    Ok((((kl1 + kl2)? / coef)? / 2.0)?)
}

/// The masked reconstruction loss (spec 2.2): mean squared error per patch, averaged over the
/// removed patches only. `pred`, `target` (B, N, D); `mask` (B, 1 + N), 1 = removed, CLS first.
pub fn masked_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n = pred.dim(1)?;
    let per_patch = (pred - target)?.sqr()?.mean(D::Minus1)?; // (B, N)
    let m = mask.to_dtype(DType::F32)?.narrow(1, 1, n)?;
    Ok(((per_patch * &m)?.sum_all()? / m.sum_all()?)?)
}
