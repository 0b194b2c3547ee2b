//! The masked (MAE) branch of the visual encoder, training only (spec section 1.8):
//!
//! ```text
//! x  = ln_pre(patches + pos)                (B, 1 + N, C)
//! x  = x[ids_keep][:, 1:]                   the 48 visible patches (CLS always kept, then dropped)
//! x  = layers0(x)
//! S, Hard = group(x, Gumbel noise)          (B, L, C), (B, L, 48)
//! Y  = QuickGELU(a_fc(Hardᵀ) S)             reconstruct layer: each patch a learned mix of regions
//! Y  = layers_mae2(Y)                       (B, 48, C)
//! decoder input = [mean(Y); Y]              (B, 49, C)
//! ```

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use segclip_vit::block::{blocks, quick_gelu};
use segclip_vit::linear::Linear;
use segclip_vit::{ResidualBlock, Trace};

use crate::model::SegClipVisual;
use crate::{Result, SegClipConfig};

/// `reconstruct_layer2` and `layers_mae2`.
#[derive(Debug, Clone)]
pub struct MaskedBranch {
    a_fc: Linear,
    pub layers_mae2: Vec<ResidualBlock>,
}

/// What the masked pass returns.
#[derive(Debug, Clone)]
pub struct MaskedOutput {
    /// `[mean(Y); Y]` (B, 1 + visible, C): the MAE decoder's input.
    pub decoder_input: Tensor,
    /// Hard assignment of the visible patches (B, L, visible).
    pub hard: Tensor,
}

impl MaskedBranch {
    /// `vb` points at `clip.visual.transformer`.
    pub fn new(vb: VarBuilder, cfg: &SegClipConfig) -> Result<Self> {
        let v = &cfg.vision;
        let l = cfg.group.num_centers;
        Ok(Self {
            a_fc: Linear::load(vb.pp("reconstruct_layer2.rec_proj_a.a_fc"), l, l)?,
            layers_mae2: blocks(
                vb.pp("layers_mae2"),
                cfg.layers_mae2,
                v.width,
                v.heads,
                v.ln_eps,
            )?,
        })
    }

    /// The masked pass. `ids_keep` (B, K) are the kept token indices (CLS = 0 first) into the
    /// 1 + N tokens; `gumbel` (B, L, K − 1) the assignment noise of the visible patches.
    pub fn forward(
        &self,
        visual: &SegClipVisual,
        pixels: &Tensor,
        ids_keep: &Tensor,
        gumbel: &Tensor,
        mut trace: Option<&mut Trace>,
    ) -> Result<MaskedOutput> {
        let (x, _) = visual.stem.forward(pixels)?;
        let (b, k) = ids_keep.dims2()?;
        let c = x.dim(2)?;
        let idx = ids_keep
            .to_dtype(DType::U32)?
            .unsqueeze(2)?
            .broadcast_as((b, k, c))?
            .contiguous()?;
        let kept = x.gather(&idx, 1)?;
        let mut x = kept.narrow(1, 1, k - 1)?;
        for blk in &visual.layers0 {
            x = blk.forward(&x, None)?;
        }
        let g = visual.group.forward(&x, Some(gumbel), None)?;
        let mix = self.a_fc.forward(&g.hard.transpose(1, 2)?.contiguous()?)?; // (B, K-1, L)
        let mut y = quick_gelu(&mix.matmul(&g.regions)?)?;
        if let Some(t) = trace.as_deref_mut() {
            t.record("train.mae.region_tokens", &g.regions);
            t.record("train.mae.hard_attn", &g.hard);
            t.record("train.mae.reconstructed", &y);
        }
        for blk in &self.layers_mae2 {
            y = blk.forward(&y, None)?;
        }
        if let Some(t) = trace {
            t.record("train.mae.hidden", &y);
        }
        let decoder_input = Tensor::cat(&[&y.mean_keepdim(1)?, &y], 1)?;
        Ok(MaskedOutput {
            decoder_input,
            hard: g.hard,
        })
    }
}
