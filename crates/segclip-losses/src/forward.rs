//! One SegCLIP training forward (spec section 2): text tower, plain visual pass with Gumbel
//! noise, contrastive and superpixel KL losses, masked visual pass, MAE decoder and
//! reconstruction loss; `total = w_c·L_con + w_kl·L_kl + w_mae·L_mae`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use segclip_group::{MaskedBranch, SegClip, SegClipConfig};
use segclip_vit::vision::patchify_pqc;
use segclip_vit::Trace;

use crate::decoder::MaeDecoder;
use crate::losses::{contrastive, masked_mse, superpixel_kl};
use crate::Result;

/// Loss weights; a zero weight switches the term off (and skips its computation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    pub contrastive: f64,
    pub kl: f64,
    pub mae: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            contrastive: 1.0,
            kl: 1.0,
            mae: 1.0,
        }
    }
}

/// A training batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Caption token ids (B, T) (T = 32 in the official recipe).
    pub input_ids: Tensor,
    /// CLIP-normalised images (B, 3, H, W).
    pub pixels: Tensor,
    /// Superpixel id per patch (B, N).
    pub image_seg: Tensor,
}

impl Batch {
    /// Samples `start .. start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            input_ids: self.input_ids.narrow(0, start, len)?,
            pixels: self.pixels.narrow(0, start, len)?,
            image_seg: self.image_seg.narrow(0, start, len)?,
        })
    }

    pub fn len(&self) -> usize {
        self.pixels.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The randomness of one step, injected so that runs are reproducible and testable.
#[derive(Debug, Clone)]
pub struct Noise {
    /// Gumbel noise of the plain pass (B, L, N).
    pub gumbel_plain: Tensor,
    /// Kept token indices (B, K), `ids_restore` (B, 1 + N) and the removed-token mask (B, 1 + N)
    /// of the MAE masking.
    pub ids_keep: Tensor,
    pub ids_restore: Tensor,
    pub mask: Tensor,
    /// Gumbel noise of the masked pass (B, L, K − 1).
    pub gumbel_masked: Tensor,
}

impl Noise {
    /// The noise of samples `start .. start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let n = |t: &Tensor| t.narrow(0, start, len);
        Ok(Self {
            gumbel_plain: n(&self.gumbel_plain)?,
            ids_keep: n(&self.ids_keep)?,
            ids_restore: n(&self.ids_restore)?,
            mask: n(&self.mask)?,
            gumbel_masked: n(&self.gumbel_masked)?,
        })
    }
}

/// The loss terms (0-d tensors; a switched-off term is 0).
#[derive(Debug, Clone)]
pub struct Losses {
    pub contrastive: Tensor,
    pub kl: Tensor,
    pub mae: Tensor,
    pub total: Tensor,
    /// Hard assignment of the plain pass (B, L, N).
    pub hard: Tensor,
}

/// The batch-local part of a training forward ([`TrainingModel::parts`]).
#[derive(Debug, Clone)]
pub struct Parts {
    /// Text embeddings (B, D) and image embeddings (B, D), not normalised.
    pub text_emb: Tensor,
    pub image_emb: Tensor,
    /// Superpixel KL and masked reconstruction losses of this batch (0-d).
    pub kl: Tensor,
    pub mae: Tensor,
    /// Hard assignment of the plain pass (B, L, N).
    pub hard: Tensor,
}

/// SegCLIP with its training-only parts.
#[derive(Debug, Clone)]
pub struct TrainingModel {
    pub model: SegClip,
    pub masked: MaskedBranch,
    pub decoder: MaeDecoder,
}

impl TrainingModel {
    /// `vb` points at the state-dict root.
    pub fn new(vb: VarBuilder, cfg: &SegClipConfig) -> Result<Self> {
        Ok(Self {
            model: SegClip::new(vb.clone(), cfg)?,
            masked: MaskedBranch::new(vb.pp("clip.visual.transformer"), cfg)?,
            decoder: MaeDecoder::new(vb.pp("vis_mae_decoder"), cfg)?,
        })
    }

    /// Everything of one training forward but the contrastive loss, which couples the batch:
    /// the text and image embeddings (not normalised) and the per-sample superpixel-KL and
    /// reconstruction losses (0 where their weight is 0, and then not computed).
    pub fn parts(
        &self,
        batch: &Batch,
        noise: &Noise,
        w: &LossWeights,
        mut trace: Option<&mut Trace>,
    ) -> Result<Parts> {
        let dev = batch.pixels.device();
        let zero = Tensor::zeros((), candle_core::DType::F32, dev)?;
        let m = &self.model;
        let text_emb = m.text.forward(&batch.input_ids, None)?;
        let vis = m.visual.forward(
            &batch.pixels,
            Some(&noise.gumbel_plain),
            trace.as_deref_mut(),
        )?;
        let kl = if w.kl != 0.0 {
            superpixel_kl(&vis.hard, &batch.image_seg)?
        } else {
            zero.clone()
        };
        let mae = if w.mae != 0.0 {
            let out = self.masked.forward(
                &m.visual,
                &batch.pixels,
                &noise.ids_keep,
                &noise.gumbel_masked,
                trace.as_deref_mut(),
            )?;
            let pred = self
                .decoder
                .forward(&out.decoder_input, &noise.ids_restore)?;
            let target = patchify_pqc(&batch.pixels, m.config().vision.patch_size)?;
            if let Some(t) = trace {
                t.record("train.mae.pred", &pred);
            }
            masked_mse(&pred, &target, &noise.mask)?
        } else {
            zero
        };
        Ok(Parts {
            text_emb,
            image_emb: vis.image_emb,
            kl,
            mae,
            hard: vis.hard,
        })
    }

    /// The whole training forward: [`Self::parts`] and the contrastive loss over the batch.
    pub fn forward(
        &self,
        batch: &Batch,
        noise: &Noise,
        w: &LossWeights,
        mut trace: Option<&mut Trace>,
    ) -> Result<Losses> {
        let p = self.parts(batch, noise, w, trace.as_deref_mut())?;
        let m = &self.model;
        let (l_con, t2v) = contrastive(
            &p.text_emb,
            &p.image_emb,
            &m.logit_scale,
            m.config().logit_scale_max,
        )?;
        let l_con = if w.contrastive != 0.0 {
            l_con
        } else {
            l_con.zeros_like()?
        };
        let (text_emb, l_kl, l_mae) = (&p.text_emb, p.kl, p.mae);
        let total = (((&l_con * w.contrastive)? + (&l_kl * w.kl)?)? + (&l_mae * w.mae)?)?;
        if let Some(t) = trace {
            t.record("train.text_emb", text_emb);
            t.record("train.image_emb", &p.image_emb);
            t.record("train.logits_t2v", &t2v);
            t.record("loss.contrastive", &l_con);
            t.record("loss.kl", &l_kl);
            t.record("loss.mae", &l_mae);
            t.record("loss.total", &total);
        }
        Ok(Losses {
            contrastive: l_con,
            kl: l_kl,
            mae: l_mae,
            total,
            hard: p.hard,
        })
    }
}
