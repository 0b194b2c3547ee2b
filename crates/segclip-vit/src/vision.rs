//! The CLIP vision stem and head (spec section 1.2, steps 1–4 and 6).
//!
//! Stem: `conv1` (a 16×16, stride-16 convolution without bias, computed as patchify + matmul;
//! or, when the config asks for one, the convolutional stem of `conv_stem.rs`), the class token, the positional table (bicubically resampled when the patch grid is not the
//! training grid) and `ln_pre`. Head: `ln_post`, then `x @ proj`.

use crate::norm::LayerNorm;
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::block::ln;
use crate::conv_stem::ConvStem;
use crate::interpolate::bicubic_hwc;
use crate::{Result, VisionConfig};

/// How patches become tokens.
#[derive(Debug, Clone)]
enum PatchEmbed {
    /// CLIP's `conv1.weight` flattened to (C, 3·p·p) in (channel, row, column) order.
    Patchify(Tensor),
    Conv(ConvStem),
}

/// Patch embedding, class token, positional embedding and `ln_pre`.
#[derive(Debug, Clone)]
pub struct VisionStem {
    patch: PatchEmbed,
    pub class_embedding: Tensor,
    pub positional_embedding: Tensor,
    pub ln_pre: LayerNorm,
    cfg: VisionConfig,
}

/// (B, 3, H, W) → (B, gh·gw, 3·p·p): each row one patch in (channel, row, column) order, patches
/// row-major. Pixels past the last whole patch are dropped, as a stride-p convolution does.
pub fn patchify_chw(pixels: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = pixels.dims4()?;
    let (gh, gw) = (h / p, w / p);
    if gh == 0 || gw == 0 {
        return Err(crate::Error::Config(format!(
            "an image of {h}x{w} pixels is smaller than one {p}x{p} patch"
        )));
    }
    let x = pixels.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?;
    let x = x
        .reshape((b, c, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?;
    Ok(x.contiguous()?.reshape((b, gh * gw, c * p * p))?)
}

impl VisionStem {
    pub fn new(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let (c, p) = (cfg.width, cfg.patch_size);
        let patch = if cfg.conv_stem.is_empty() {
            PatchEmbed::Patchify(
                vb.get((c, 3, p, p), "conv1.weight")?
                    .reshape((c, 3 * p * p))?,
            )
        } else {
            PatchEmbed::Conv(ConvStem::new(vb.pp("conv_stem"), cfg)?)
        };
        let n = cfg.grid() * cfg.grid() + 1;
        Ok(Self {
            patch,
            class_embedding: vb.get(c, "class_embedding")?,
            positional_embedding: vb.get((n, c), "positional_embedding")?,
            ln_pre: ln(vb.pp("ln_pre"), c, cfg.ln_eps)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// The positional table for a (gh, gw) patch grid: (1 + gh·gw, C), CLS row first. The patch
    /// rows are resampled bicubically when the grid differs from the training grid.
    pub fn positional_for_grid(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let g = self.cfg.grid();
        if (gh, gw) == (g, g) {
            return Ok(self.positional_embedding.clone());
        }
        let c = self.cfg.width;
        let patches = self.positional_embedding.narrow(0, 1, g * g)?;
        let src: Vec<f32> = patches
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        let out = bicubic_hwc(&src, (g, g, c), (gh, gw));
        let out =
            Tensor::from_vec(out, (gh * gw, c), patches.device())?.to_dtype(patches.dtype())?;
        Ok(Tensor::cat(
            &[&self.positional_embedding.narrow(0, 0, 1)?, &out],
            0,
        )?)
    }

    /// Normalised pixels (B, 3, H, W) → `ln_pre` output (B, 1 + N, C), CLS first, and the patch
    /// grid (gh, gw).
    pub fn forward(&self, pixels: &Tensor) -> Result<(Tensor, (usize, usize))> {
        let p = self.cfg.patch_size;
        let (b, _, h, w) = pixels.dims4()?;
        let (gh, gw) = (h / p, w / p);
        let patches = match &self.patch {
            PatchEmbed::Patchify(weight) => {
                patchify_chw(pixels, p)?.broadcast_matmul(&weight.t()?)?
            }
            PatchEmbed::Conv(stem) => {
                if gh == 0 || gw == 0 {
                    return Err(crate::Error::Config(format!(
                        "an image of {h}x{w} pixels is smaller than one {p}x{p} patch"
                    )));
                }
                stem.forward(&pixels.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?)?
            }
        };
        let c = self.cfg.width;
        let cls = self
            .class_embedding
            .reshape((1, 1, c))?
            .broadcast_as((b, 1, c))?;
        let x = Tensor::cat(&[&cls.to_dtype(patches.dtype())?, &patches], 1)?;
        let x = x.broadcast_add(&self.positional_for_grid(gh, gw)?)?;
        Ok((self.ln_pre.forward(&x)?, (gh, gw)))
    }
}

/// `ln_post` then `x @ proj`: width C → joint dimension D.
#[derive(Debug, Clone)]
pub struct VisionHead {
    pub ln_post: LayerNorm,
    pub proj: Tensor,
}

impl VisionHead {
    pub fn new(vb: VarBuilder, cfg: &VisionConfig, embed_dim: usize) -> Result<Self> {
        Ok(Self {
            ln_post: ln(vb.pp("ln_post"), cfg.width, cfg.ln_eps)?,
            proj: vb.get((cfg.width, embed_dim), "proj")?,
        })
    }
}

impl Module for VisionHead {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.ln_post.forward(x)?.broadcast_matmul(&self.proj)
    }
}

/// (B, C, H, W) → (B, (H/p)·(W/p), p·p·C) with each patch in (row, column, channel) order: the
/// MAE reconstruction target layout (spec 2.2), unlike [`patchify_chw`]'s (channel, row,
/// column) stem layout.
pub fn patchify_pqc(x: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (gh, gw) = (h / p, w / p);
    x.reshape((b, c, gh, p, gw, p))?
        .permute((0, 2, 4, 3, 5, 1))?
        .contiguous()?
        .reshape((b, gh * gw, p * p * c))
}
