//! The semantic group module (`SemanticLearnerModule`, spec section 1.3): L learnable centers
//! gather context from the patches, each patch is assigned to one center, and the patches of a
//! center are averaged into a region token.
//!
//! ```text
//! Pn = norm(P)                                   P: patch tokens (B, N, C)
//! q  = centers                                   (B, L, C)
//! for blk in cross_att:  q = blk(q, [q; P])      pre-norm cross-attention, per sample
//! q  = cross_ln(q)
//! K  = k_ln(groupconv(k_conv, Pn));  V = groupconv(v_conv, Pn)
//! A  = q Kᵀ                                      (B, L, N), no 1/√C scaling
//! Hard = one_hot(argmax_L softmax((A + g)/τ))    g = Gumbel noise in training, none in eval
//! Soft = softmax_L(A)
//! S  = (Hard V) / max(Σ_N Hard, 1)               mean of each center's patches; empty → 0
//! R  = QuickGELU(fc2(GELU(fc1(LN(q + S)))))      proj_o, no residual
//! ```
//!
//! In training the hard assignment is straight-through: `Hard − stopgrad(y) + y`.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;
use segclip_vit::block::{ln, quick_gelu, Mlp};
use segclip_vit::linear::Linear;
use segclip_vit::norm::LayerNorm;
use segclip_vit::{MultiHeadAttention, Trace};

use crate::{GroupConfig, Result};

/// A pre-norm cross-attention block: `q += MHA(ln_x(q), ln_k(kv), ln_k(kv)); q += MLP(ln_2(q))`.
#[derive(Debug, Clone)]
pub struct CrossAttentionBlock {
    ln_x: LayerNorm,
    ln_k: LayerNorm,
    attn: MultiHeadAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl CrossAttentionBlock {
    pub fn new(vb: VarBuilder, width: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            ln_x: ln(vb.pp("ln_x"), width, eps)?,
            ln_k: ln(vb.pp("ln_k"), width, eps)?,
            attn: MultiHeadAttention::new(vb.pp("attn"), width, heads)?,
            ln_2: ln(vb.pp("ln_2"), width, eps)?,
            mlp: Mlp::new(vb.pp("mlp"), width)?,
        })
    }

    /// Queries (B, L, C) attend over `kv` (B, L + N, C) of the same sample.
    pub fn forward(&self, q: &Tensor, kv: &Tensor) -> Result<Tensor> {
        let kv = self.ln_k.forward(kv)?;
        let q = (q + self.attn.forward_cross(&self.ln_x.forward(q)?, &kv)?)?;
        Ok((&q + self.mlp.forward(&self.ln_2.forward(&q)?)?)?)
    }
}

/// A 1×1 `Conv1d` with `groups` groups and no bias, as a batched matmul over the groups.
#[derive(Debug, Clone)]
pub struct GroupedLinear {
    /// (G, out/G, in/G).
    weight: Tensor,
}

impl GroupedLinear {
    pub fn new(vb: VarBuilder, width: usize, groups: usize) -> Result<Self> {
        let d = width / groups;
        let w = vb.get((width, d, 1), "weight")?;
        Ok(Self {
            weight: w.reshape((groups, d, d))?,
        })
    }
}

impl Module for GroupedLinear {
    /// (B, N, C) → (B, N, C): `out[…, g·d + o] = Σᵢ W[g·d + o, i] · x[…, g·d + i]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let (g, d, _) = self.weight.dims3()?;
        let xg = x.reshape((b * n, g, d))?.transpose(0, 1)?.contiguous()?; // (G, BN, d)
        let y = xg.matmul(&self.weight.transpose(1, 2)?)?; // (G, BN, d)
        y.transpose(0, 1)?.contiguous()?.reshape((b, n, c))
    }
}

/// `proj_o`: LayerNorm, fc1, exact GELU, fc2, QuickGELU.
#[derive(Debug, Clone)]
struct ProjO {
    ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Module for ProjO {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        quick_gelu(
            &self
                .fc2
                .forward(&self.fc1.forward(&self.ln.forward(x)?)?.gelu_erf()?)?,
        )
    }
}

/// What the group module returns.
#[derive(Debug, Clone)]
pub struct GroupOutput {
    /// Region tokens R (B, L, C).
    pub regions: Tensor,
    /// Hard assignment (B, L, N): one-hot over centers (straight-through in training).
    pub hard: Tensor,
    /// Soft assignment softmax_L(A) (B, L, N).
    pub soft: Tensor,
    /// The centers after cross-attention and `cross_ln` (B, L, C).
    pub centers: Tensor,
}

/// The semantic group module.
#[derive(Debug, Clone)]
pub struct SemanticGroup {
    semantic_center: Tensor,
    norm: LayerNorm,
    cross_att: Vec<CrossAttentionBlock>,
    cross_ln: LayerNorm,
    k_conv: GroupedLinear,
    k_ln: LayerNorm,
    v_conv: GroupedLinear,
    proj_o: ProjO,
    cfg: GroupConfig,
}

impl SemanticGroup {
    /// `vb` points at `clip.visual.transformer.semantic_layer2`.
    pub fn new(vb: VarBuilder, width: usize, eps: f64, cfg: &GroupConfig) -> Result<Self> {
        Ok(Self {
            semantic_center: vb.get((cfg.num_centers, width), "semantic_center")?,
            norm: ln(vb.pp("norm"), width, eps)?,
            cross_att: (0..cfg.cross_layers)
                .map(|i| {
                    CrossAttentionBlock::new(
                        vb.pp(format!("cross_att.{i}")),
                        width,
                        cfg.cross_heads,
                        eps,
                    )
                })
                .collect::<Result<_>>()?,
            cross_ln: ln(vb.pp("cross_ln"), width, eps)?,
            k_conv: GroupedLinear::new(vb.pp("k_conv"), width, cfg.conv_groups)?,
            k_ln: ln(vb.pp("k_ln"), width, eps)?,
            v_conv: GroupedLinear::new(vb.pp("v_conv"), width, cfg.conv_groups)?,
            proj_o: ProjO {
                ln: ln(vb.pp("proj_o.ln"), width, eps)?,
                fc1: Linear::load(vb.pp("proj_o.mlp.fc1"), width, 4 * width)?,
                fc2: Linear::load(vb.pp("proj_o.mlp.fc2"), 4 * width, width)?,
            },
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// Group patch tokens `p` (B, N, C). `gumbel` is the training noise (B, L, N) (or `None` in
    /// evaluation: no noise, no temperature).
    pub fn forward(
        &self,
        p: &Tensor,
        gumbel: Option<&Tensor>,
        trace: Option<&mut Trace>,
    ) -> Result<GroupOutput> {
        let (b, _, c) = p.dims3()?;
        let l = self.cfg.num_centers;
        let pn = self.norm.forward(p)?;
        let mut q = self
            .semantic_center
            .unsqueeze(0)?
            .broadcast_as((b, l, c))?
            .contiguous()?;
        for blk in &self.cross_att {
            let kv = Tensor::cat(&[&q, p], 1)?;
            q = blk.forward(&q, &kv)?;
        }
        let q = self.cross_ln.forward(&q)?;
        let k = self.k_ln.forward(&self.k_conv.forward(&pn)?)?;
        let v = self.v_conv.forward(&pn)?;
        let a = q.matmul(&k.t()?)?; // (B, L, N)
        let soft = candle_nn::ops::softmax(&a, 1)?;
        let hard = match gumbel {
            None => one_hot_argmax(&soft, 1)?,
            Some(g) => {
                let y = candle_nn::ops::softmax(&((&a + g)? / self.cfg.gumbel_tau)?, 1)?;
                let h = one_hot_argmax(&y, 1)?;
                ((h - y.detach())? + &y)?
            }
        };
        let counts = hard.sum_keepdim(D::Minus1)?; // (B, L, 1)
                                                   // max(count, 1) with PyTorch's clamp gradient: it flows only where count > 1 (candle's
                                                   // clamp would pass half of it at count == 1, a center holding one patch).
        let counts = counts.gt(1f32)?.where_cond(&counts, &counts.ones_like()?)?;
        let s = hard.matmul(&v)?.broadcast_div(&counts)?;
        let regions = self.proj_o.forward(&(&q + s)?)?;
        if let Some(t) = trace {
            t.record("group.centers", &q);
            t.record("group.keys", &k);
            t.record("group.values", &v);
            t.record("group.assign_logits", &a);
            t.record("group.soft_attn", &soft);
            t.record("group.hard_attn", &hard);
            t.record("group.region_tokens", &regions);
        }
        Ok(GroupOutput {
            regions,
            hard,
            soft,
            centers: q,
        })
    }
}

/// One-hot of the argmax along `dim` (first index on exact ties), as f32.
pub fn one_hot_argmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let idx = x.argmax_keepdim(dim)?; // u32
    let n = x.dim(dim)?;
    let mut shape = vec![1usize; x.rank()];
    shape[dim] = n;
    let range = Tensor::arange(0u32, n as u32, x.device())?.reshape(shape)?;
    Ok(range.broadcast_eq(&idx)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    #[test]
    fn one_hot_argmax_picks_the_largest() {
        let x = Tensor::new(&[[[0.1f32, 0.9], [0.7, 0.05], [0.2, 0.05]]], &Device::Cpu).unwrap(); // (1, 3, 2)
        let h = one_hot_argmax(&x, 1).unwrap();
        assert_eq!(
            h.to_vec3::<f32>().unwrap(),
            vec![vec![vec![0., 1.], vec![1., 0.], vec![0., 0.]]]
        );
    }

    #[test]
    fn grouped_linear_is_block_diagonal() {
        // width 4, 2 groups of 2: W[g*2+o, i].
        let dev = Device::Cpu;
        let w = Tensor::new(
            &[[[1f32], [2.]], [[3.], [4.]], [[5.], [6.]], [[7.], [8.]]],
            &dev,
        )
        .unwrap(); // (4, 2, 1)
        let vb =
            VarBuilder::from_tensors(HashMap::from([("weight".to_string(), w)]), DType::F32, &dev);
        let gl = GroupedLinear::new(vb, 4, 2).unwrap();
        let x = Tensor::new(&[[[1f32, 10., 100., 1000.]]], &dev).unwrap();
        let y = gl
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, vec![1. + 20., 3. + 40., 500. + 6000., 700. + 8000.]);
    }
}
