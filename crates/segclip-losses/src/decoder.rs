//! The MAE decoder of the reconstruction loss (spec section 2.2): `decoder_embed`, mask tokens,
//! the fixed 2-D sin-cos positions, timm-style pre-norm blocks (qkv with bias, exact GELU, eps
//! 1e-6), `decoder_norm`, `decoder_pred`.
//!
//! ```text
//! z = decoder_embed(enc)                       (B, 1 + K, E)   [mean token; visible patches]
//! z = unshuffle([z; mask_token × (1 + N − 1 − K)], ids_restore) + pos
//! pred = decoder_pred(decoder_norm(blocks(z)))[:, 1:]           (B, N, p·p·3)
//! ```

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use segclip_group::SegClipConfig;
use segclip_vit::block::attention;
use segclip_vit::linear::Linear;
use segclip_vit::norm::LayerNorm;

use crate::Result;

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(vb: VarBuilder, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load(vb.pp("norm1"), dim, eps)?,
            qkv: Linear::load(vb.pp("attn.qkv"), dim, 3 * dim)?,
            proj: Linear::load(vb.pp("attn.proj"), dim, dim)?,
            norm2: LayerNorm::load(vb.pp("norm2"), dim, eps)?,
            fc1: Linear::load(vb.pp("mlp.fc1"), dim, 4 * dim)?,
            fc2: Linear::load(vb.pp("mlp.fc2"), 4 * dim, dim)?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x)?)?
            .reshape((b, n, 3, self.heads, c / self.heads))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let o = attention(&q, &k, &v, None)?
            .transpose(1, 2)?
            .reshape((b, n, c))?;
        let x = (x + self.proj.forward(&o)?)?;
        let h = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        Ok((x + h)?)
    }
}

/// `vis_mae_decoder`.
#[derive(Debug, Clone)]
pub struct MaeDecoder {
    decoder_embed: Linear,
    mask_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    pred: Linear,
}

impl MaeDecoder {
    /// `vb` points at `vis_mae_decoder`.
    pub fn new(vb: VarBuilder, cfg: &SegClipConfig) -> Result<Self> {
        let (c, d) = (cfg.vision.width, &cfg.decoder);
        let g = cfg.vision.grid();
        let p = cfg.vision.patch_size;
        Ok(Self {
            decoder_embed: Linear::load(vb.pp("decoder_embed"), c, d.dim)?,
            mask_token: vb.get((1, 1, d.dim), "mask_token")?,
            pos_embed: vb.get((1, g * g + 1, d.dim), "decoder_pos_embed")?,
            blocks: (0..d.depth)
                .map(|i| {
                    Block::new(
                        vb.pp(format!("decoder_blocks.{i}")),
                        d.dim,
                        d.heads,
                        d.ln_eps,
                    )
                })
                .collect::<Result<_>>()?,
            norm: LayerNorm::load(vb.pp("decoder_norm"), d.dim, d.ln_eps)?,
            pred: Linear::load(vb.pp("decoder_pred"), d.dim, p * p * 3)?,
        })
    }

    /// Predicted patches (B, N, p·p·3) from the decoder input (B, 1 + K, C) and `ids_restore`
    /// (B, 1 + N).
    pub fn forward(&self, enc: &Tensor, ids_restore: &Tensor) -> Result<Tensor> {
        let z = self.decoder_embed.forward(enc)?;
        let (b, kept, e) = z.dims3()?;
        let total = ids_restore.dim(1)?;
        let masks = self.mask_token.broadcast_as((b, total - kept, e))?;
        let z = Tensor::cat(&[&z, &masks.contiguous()?], 1)?;
        let idx = ids_restore
            .to_dtype(DType::U32)?
            .unsqueeze(2)?
            .broadcast_as((b, total, e))?
            .contiguous()?;
        let mut z = z.gather(&idx, 1)?.broadcast_add(&self.pos_embed)?;
        for blk in &self.blocks {
            z = blk.forward(&z)?;
        }
        let pred = self.pred.forward(&self.norm.forward(&z)?)?;
        Ok(pred.narrow(1, 1, total - 1)?)
    }
}
