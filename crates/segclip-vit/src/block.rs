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
use candle_nn::{layer_norm, linear, LayerNorm, LayerNormConfig, Linear, VarBuilder};

use crate::Result;

/// `x * sigmoid(1.702 x)`, the activation of every CLIP MLP.
pub fn quick_gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

/// Above this many attention scores per call, attention runs one batch element at a time, so its
/// memory stays bounded whatever the batch (8 crops at 448 px would otherwise hold
/// 8·12·784² scores and their softmax at once).
const MAX_SCORES_PER_CHUNK: usize = 1 << 24;

/// `softmax(q kᵀ · scale + mask) v` for q (B, H, Nq, d), k and v (B, H, Nk, d).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, nq, d) = q.dims4()?;
    let nk = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    let one = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
        let q = (q * scale)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(p.matmul(v)?)
    };
    if b <= 1 || b * h * nq * nk <= MAX_SCORES_PER_CHUNK {
        return one(q, k, v);
    }
    let outs = (0..b)
        .map(|i| one(&q.narrow(0, i, 1)?, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&outs, 0)?)
}

/// `nn.MultiheadAttention` with the packed `in_proj_weight` (3C, C), rows `[q; k; v]`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
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
        if heads == 0 || width % heads != 0 {
            return Err(crate::Error::Config(format!("width {width} is not divisible by {heads} heads")));
        }
        Ok(Self {
            in_proj_weight: vb.get((3 * width, width), "in_proj_weight")?,
            in_proj_bias: vb.get(3 * width, "in_proj_bias")?,
            out_proj: linear(width, width, vb.pp("out_proj"))?,
            heads,
            width,
        })
    }

    /// (B, N, C) → (B, H, N, d), contiguous.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        Ok(x.reshape((b, n, self.heads, self.width / self.heads))?.transpose(1, 2)?.contiguous()?)
    }

    fn project(&self, x: &Tensor, part: usize) -> Result<Tensor> {
        let c = self.width;
        let w = self.in_proj_weight.narrow(0, part * c, c)?;
        let bias = self.in_proj_bias.narrow(0, part * c, c)?;
        Ok(x.broadcast_matmul(&w.t()?)?.broadcast_add(&bias)?)
    }

    /// The heads' queries, keys and values for self-attention over `x` (B, N, C): what
    /// training-free modes read from the last block.
    pub fn qkv(&self, x: &Tensor) -> Result<Qkv> {
        let (b, n, c) = x.dims3()?;
        let packed = x.broadcast_matmul(&self.in_proj_weight.t()?)?.broadcast_add(&self.in_proj_bias)?;
        let packed = packed.reshape((b, n, 3, self.heads, c / self.heads))?.permute((2, 0, 3, 1, 4))?;
        Ok(Qkv {
            q: packed.get(0)?.contiguous()?,
            k: packed.get(1)?.contiguous()?,
            v: packed.get(2)?.contiguous()?,
        })
    }

    fn merge_heads(&self, o: &Tensor) -> Result<Tensor> {
        let (b, _, n, _) = o.dims4()?;
        Ok(self.out_proj.forward(&o.transpose(1, 2)?.reshape((b, n, self.width))?)?)
    }

    /// Self-attention over `x` (B, N, C) with an optional additive mask (N, N).
    pub fn forward_self(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let Qkv { q, k, v } = self.qkv(x)?;
        self.merge_heads(&attention(&q, &k, &v, mask)?)
    }

    /// Attention of `queries` (B, Nq, C) over `kv` (B, Nk, C), per sample (no batch mixing).
    pub fn forward_cross(&self, queries: &Tensor, kv: &Tensor) -> Result<Tensor> {
        let q = self.split_heads(&self.project(queries, 0)?)?;
        let k = self.split_heads(&self.project(kv, 1)?)?;
        let v = self.split_heads(&self.project(kv, 2)?)?;
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
        Ok(Self { c_fc: linear(width, 4 * width, vb.pp("c_fc"))?, c_proj: linear(4 * width, width, vb.pp("c_proj"))? })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.c_proj.forward(&quick_gelu(&self.c_fc.forward(x)?)?)
    }
}

/// A LayerNorm with PyTorch's defaults and the given eps.
pub fn ln(vb: VarBuilder, width: usize, eps: f64) -> Result<LayerNorm> {
    Ok(layer_norm(width, LayerNormConfig { eps, ..Default::default() }, vb)?)
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
pub fn blocks(vb: VarBuilder, n: usize, width: usize, heads: usize, eps: f64) -> Result<Vec<ResidualBlock>> {
    (0..n).map(|i| ResidualBlock::new(vb.pp(i.to_string()), width, heads, eps)).collect()
}

/// The additive causal mask (T, T): 0 on and below the diagonal, −inf above.
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?)
}
