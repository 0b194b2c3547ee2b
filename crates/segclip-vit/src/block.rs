//! The CLIP residual block and its multi-head attention with a packed `in_proj`
//! (spec section 1.4):
//!
//! ```text
//! x = x + out_proj(MHA(ln_1(x)))
//! x = x + c_proj(QuickGELU(c_fc(ln_2(x))))
//! ```
//!
//! The same attention serves cross-attention (queries and keys from different tokens), which the
//! semantic group module uses.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

pub use crate::activation::quick_gelu;
use crate::linear::Linear;
pub use crate::norm::LayerNorm;
use crate::Result;

/// Above this many attention scores per call, the composite (autograd) path runs one batch
/// element at a time, so its memory stays bounded whatever the batch (8 crops at 448 px would
/// otherwise hold 8·12·784² scores and their softmax at once).
const MAX_SCORES_PER_CHUNK: usize = 1 << 24;

/// `softmax(q kᵀ / √d + mask) v` for q (B, H, Nq, d), k and v (B, H, Nk, d); `mask` (Nq, Nk)
/// is additive.
///
/// On CPU (f32) this is one fused kernel per (batch, head), in parallel: two single-threaded
/// GEMMs and a vectorised softmax on a per-task (Nq, Nk) buffer, so memory is bounded by one
/// score matrix per thread, and one autograd node whose gradient recomputes the probabilities
/// (`attention_op`). On other devices it is the composite of tensor ops.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, nq, d) = q.dims4()?;
    let nk = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    let fused =
        [q, k, v].iter().all(|t| crate::cpu::is_cpu_f32(t)) && mask.is_none_or(|m| !m.track_op());
    if fused {
        let mask = mask
            .map(|m| {
                m.broadcast_as((nq, nk))?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1::<f32>()
            })
            .transpose()?;
        let op = crate::attention_op::AttentionOp {
            scale: scale as f32,
            mask,
        };
        return Ok(q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?);
    }
    let one = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
        let q = (q * scale)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let p = crate::activation::softmax_last_dim(&scores)?;
        Ok(p.matmul(v)?)
    };
    if b <= 1 || b * h * nq * nk <= MAX_SCORES_PER_CHUNK {
        return one(q, k, v);
    }
    let outs = (0..b)
        .map(|i| {
            one(
                &q.narrow(0, i, 1)?,
                &k.narrow(0, i, 1)?,
                &v.narrow(0, i, 1)?,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&outs, 0)?)
}

/// Row-major rows of `d` values, `stride` apart.
#[derive(Clone, Copy)]
pub(crate) struct Rows {
    pub ptr: *const f32,
    pub stride: usize,
}

/// One head: `out = softmax(q kᵀ · scale + mask) v` with two single-threaded GEMMs and a
/// vectorised softmax on an (nq, nk) buffer.
///
/// # Safety
/// `q` must address nq rows, `k` and `v` nk rows, of `d` readable values each, and `out` nq
/// rows of `d` writable values `out_stride` apart, none of it written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn one_head(
    q: Rows,
    k: Rows,
    v: Rows,
    out: *mut f32,
    out_stride: usize,
    (nq, nk, d): (usize, usize, usize),
    scale: f32,
    mask: Option<&[f32]>,
) {
    // SAFETY: the GEMM writes all nq·nk scores without reading them (`read_dst` false).
    let mut s = crate::cpu::written_by(nq * nk, |scores| {
        gemm::gemm(
            nq,
            nk,
            d,
            scores,
            1,
            nk as isize,
            false,
            q.ptr,
            1,
            q.stride as isize,
            k.ptr,
            k.stride as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    });
    for (r, row) in s.chunks_mut(nk).enumerate() {
        if let Some(m) = mask {
            row.iter_mut()
                .zip(&m[r * nk..(r + 1) * nk])
                .for_each(|(x, a)| *x += a);
        }
        crate::fastmath::softmax_row(row);
    }
    gemm::gemm(
        nq,
        d,
        nk,
        out,
        1,
        out_stride as isize,
        false,
        s.as_ptr(),
        1,
        nk as isize,
        v.ptr,
        1,
        v.stride as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `nn.MultiheadAttention` with the packed `in_proj_weight` (3C, C), rows `[q; k; v]`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    /// The packed `[q; k; v]` projection, (3C, C) as stored.
    in_proj: Linear,
    out_proj: Linear,
    heads: usize,
    width: usize,
}

/// Queries, keys and values of one attention call, each (B, H, N, d).
#[derive(Debug, Clone)]
pub struct Qkv {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
}

impl MultiHeadAttention {
    pub fn new(vb: VarBuilder, width: usize, heads: usize) -> Result<Self> {
        if heads == 0 || !width.is_multiple_of(heads) {
            return Err(crate::Error::Config(format!(
                "width {width} is not divisible by {heads} heads"
            )));
        }
        Ok(Self {
            in_proj: Linear::new(
                vb.get((3 * width, width), "in_proj_weight")?,
                Some(vb.get(3 * width, "in_proj_bias")?),
            )?,
            out_proj: Linear::load(vb.pp("out_proj"), width, width)?,
            heads,
            width,
        })
    }

    /// (B, N, C) → (B, H, N, d), contiguous.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        Ok(x.reshape((b, n, self.heads, self.width / self.heads))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// The heads' queries, keys and values for self-attention over `x` (B, N, C): what
    /// training-free modes read from the last block.
    pub fn qkv(&self, x: &Tensor) -> Result<Qkv> {
        self.split_packed(&self.in_proj.forward(x)?)
    }

    fn split_packed(&self, packed: &Tensor) -> Result<Qkv> {
        let (b, n, c3) = packed.dims3()?;
        let c = c3 / 3;
        let packed = packed
            .reshape((b, n, 3, self.heads, c / self.heads))?
            .permute((2, 0, 3, 1, 4))?;
        Ok(Qkv {
            q: packed.get(0)?.contiguous()?,
            k: packed.get(1)?.contiguous()?,
            v: packed.get(2)?.contiguous()?,
        })
    }

    fn merge_heads(&self, o: &Tensor) -> Result<Tensor> {
        let (b, _, n, _) = o.dims4()?;
        Ok(self
            .out_proj
            .forward(&o.transpose(1, 2)?.reshape((b, n, self.width))?)?)
    }

    /// Self-attention over `x` (B, N, C) with an optional additive mask (N, N).
    pub fn forward_self(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let packed = self.in_proj.forward(x)?;
        if crate::cpu::is_cpu_f32(&packed) && mask.is_none_or(|m| !m.track_op()) {
            let op = crate::attention_op::PackedAttentionOp::new(
                self.heads,
                self.width / self.heads,
                packed.dim(1)?,
                mask,
            )?;
            return Ok(self
                .out_proj
                .forward(&packed.contiguous()?.apply_op1(op)?)?);
        }
        let Qkv { q, k, v } = self.split_packed(&packed)?;
        self.merge_heads(&attention(&q, &k, &v, mask)?)
    }

    /// Attention of `queries` (B, Nq, C) over `kv` (B, Nk, C), per sample (no batch mixing).
    pub fn forward_cross(&self, queries: &Tensor, kv: &Tensor) -> Result<Tensor> {
        let c = self.width;
        let q = self.split_heads(&self.in_proj.forward_rows(queries, 0, c)?)?;
        let kv = self.in_proj.forward_rows(kv, c, 2 * c)?;
        let k = self.split_heads(&kv.narrow(2, 0, c)?)?;
        let v = self.split_heads(&kv.narrow(2, c, c)?)?;
        self.merge_heads(&attention(&q, &k, &v, None)?)
    }
}

/// The CLIP MLP `c_proj(QuickGELU(c_fc(x)))`, ratio 4.
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

impl Mlp {
    pub fn new(vb: VarBuilder, width: usize) -> Result<Self> {
        Ok(Self {
            c_fc: Linear::load(vb.pp("c_fc"), width, 4 * width)?,
            c_proj: Linear::load(vb.pp("c_proj"), 4 * width, width)?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.c_fc.forward_then_quick_gelu(x)? {
            Some(h) => self.c_proj.forward(&h),
            None => self.c_proj.forward_quick_gelu(&self.c_fc.forward(x)?),
        }
    }
}

/// A LayerNorm with PyTorch's defaults and the given eps.
pub fn ln(vb: VarBuilder, width: usize, eps: f64) -> Result<LayerNorm> {
    LayerNorm::load(vb, width, eps)
}

/// One pre-norm CLIP residual block (`ln_1`, `attn`, `ln_2`, `mlp`).
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    pub ln_1: LayerNorm,
    pub attn: MultiHeadAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl ResidualBlock {
    pub fn new(vb: VarBuilder, width: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            ln_1: ln(vb.pp("ln_1"), width, eps)?,
            attn: MultiHeadAttention::new(vb.pp("attn"), width, heads)?,
            ln_2: ln(vb.pp("ln_2"), width, eps)?,
            mlp: Mlp::new(vb.pp("mlp"), width)?,
        })
    }

    /// `x` (B, N, C); `mask` an additive (N, N) mask (the text tower's causal mask) or none.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.forward_self(&self.ln_1.forward(x)?, mask)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }
}

/// A stack of residual blocks named `prefix.{0..n}`.
pub fn blocks(
    vb: VarBuilder,
    n: usize,
    width: usize,
    heads: usize,
    eps: f64,
) -> Result<Vec<ResidualBlock>> {
    (0..n)
        .map(|i| ResidualBlock::new(vb.pp(i.to_string()), width, heads, eps))
        .collect()
}

/// The additive causal mask (T, T): 0 on and below the diagonal, −inf above.
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused kernel equals softmax(q kᵀ / √d + mask) v composed of tensor ops, with and
    /// without a mask.
    #[test]
    fn fused_attention_matches_the_composite() {
        let dev = Device::Cpu;
        for (nq, nk, d) in [(5, 7, 4), (20, 45, 32)] {
            let q = Tensor::randn(0f32, 1., (2, 3, nq, d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (2, 3, nk, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1., (2, 3, nk, d), &dev).unwrap();
            let mask = causal_mask(nk, &dev)
                .unwrap()
                .narrow(0, nk - nq, nq)
                .unwrap();
            for m in [None, Some(&mask)] {
                let fused = attention(&q, &k, &v, m).unwrap();
                let scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
                let scores = match m {
                    Some(m) => scores.broadcast_add(m).unwrap(),
                    None => scores,
                };
                let p = candle_nn::ops::softmax_last_dim(&scores).unwrap();
                let comp = p.matmul(&v).unwrap();
                let diff = crate::cpu::max_abs_diff(&fused, &comp);
                assert!(diff < 1e-5, "{nq}x{nk}x{d}: {diff}");
            }
        }
    }

    /// Self-attention on the packed projection (one node) gives the split path's output and
    /// the same gradient for the packed tensor, with and without a causal mask.
    #[test]
    fn packed_attention_matches_the_split_path() {
        let dev = Device::Cpu;
        let (b, n, heads, d) = (2, 6, 3, 4);
        let c = heads * d;
        let packed = Var::randn(0f32, 1., (b, n, 3 * c), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (b, n, c), &dev).unwrap();
        let mask = causal_mask(n, &dev).unwrap();
        for m in [None, Some(&mask)] {
            let op = crate::attention_op::PackedAttentionOp::new(heads, d, n, m).unwrap();
            let fast = packed.as_tensor().apply_op1(op).unwrap();
            let split = |i: usize| {
                packed
                    .narrow(2, i * c, c)
                    .unwrap()
                    .reshape((b, n, heads, d))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let o = attention(&split(0), &split(1), &split(2), m).unwrap();
            let slow = o.transpose(1, 2).unwrap().reshape((b, n, c)).unwrap();
            assert!(crate::cpu::max_abs_diff(&fast, &slow) < 1e-5, "output");
            let grad = |o: &Tensor| {
                let g = (o * &w).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(packed.as_tensor()).unwrap().clone()
            };
            let diff = crate::cpu::max_abs_diff(&grad(&fast), &grad(&slow));
            assert!(diff < 1e-5, "gradient (masked {}): {diff}", m.is_some());
        }
    }
}
