//! One SegCLIP training forward (spec section 2): text tower, plain visual pass with Gumbel
//! noise, contrastive and superpixel KL losses, masked visual pass, MAE decoder and
//! reconstruction loss; `total = w_c·L_con + w_kl·L_kl + w_mae·L_mae`, plus `w_mix·L_mix`, our
//! mixed-pair loss (off in the paper's recipe; [`TrainingModel::mixed_embeddings`]).

use candle_core::{Module, Tensor};
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
    /// The mixed-pair contrastive loss (a deviation, see [`TrainingModel::mixed_embeddings`]);
    /// 0 in the paper's recipe.
    pub mix: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            contrastive: 1.0,
            kl: 1.0,
            mae: 1.0,
            mix: 0.0,
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
    pub mix: Tensor,
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
    /// Each sample's part of its mixed pair (B, D), not normalised; `None` when the
    /// mixed-pair loss is off.
    pub mixed: Option<Tensor>,
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
        let (patches, _) = m
            .visual
            .encode_patches(&batch.pixels, trace.as_deref_mut())?;
        let vis =
            m.visual
                .group
                .forward(&patches, Some(&noise.gumbel_plain), trace.as_deref_mut())?;
        let (image_emb, _) = m.visual.embed_regions(&vis.regions, trace.as_deref_mut())?;
        let mixed = if w.mix != 0.0 {
            Some(self.mixed_embeddings(&patches)?)
        } else {
            None
        };
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
            image_emb,
            kl,
            mae,
            mixed,
            hard: vis.hard,
        })
    }

    /// Mixed pairs (a deviation from the paper, docs/deviations.md item 15): the patch tokens
    /// after `layers0` of samples 2k and 2k + 1 are grouped together, as one image of 2N
    /// patches, by the same centers; each region belongs to the sample holding most of its
    /// patches, and each sample's regions are max-pooled through `layers2` and the head into an
    /// embedding of that sample's part alone (B, D). Matching it to its own caption against the
    /// batch's (the partner's among them) penalises a region token that carries content of
    /// patches it does not hold, which the plain max-pooled loss never does. The assignment is
    /// the inference one (no Gumbel noise, no gradient): this loss teaches the regions' naming
    /// and leaves the grouping to the paper's losses. B must be even.
    ///
    /// ```text
    /// X = [P_2k ; P_2k+1]  (2N, C)        R, Hard = group(X)   (L, C), (L, 2N)
    /// own_k(2k) = |Hard_k ∩ P_2k| > |Hard_k ∩ P_2k+1|, and the other way for 2k + 1
    /// H = layers2(R);   e_2k = head(max_{k: own_k(2k)} H_k),  e_2k+1 likewise
    /// ```
    ///
    /// A sample that holds the majority of no region (the partner's patches took every center)
    /// owns the region where it comes closest ([`own_regions`]), so that its embedding is
    /// pooled from a region and not from nothing.
    pub fn mixed_embeddings(&self, patches: &Tensor) -> Result<Tensor> {
        let v = &self.model.visual;
        let (b, n, c) = patches.dims3()?;
        if !b.is_multiple_of(2) {
            return Err(crate::Error::OddMixedBatch(b));
        }
        let joint = patches.reshape((b / 2, 2 * n, c))?;
        let g = v.group.forward(&joint, None, None)?;
        let mut h = g.regions;
        for blk in &v.layers2 {
            h = blk.forward(&h, None)?;
        }
        let hard = g.hard.detach();
        let first = hard.narrow(2, 0, n)?.sum(2)?; // (B/2, L)
        let second = hard.narrow(2, n, n)?.sum(2)?;
        let floor = h.ones_like()?.affine(0.0, -1e4)?;
        let pool = |keep: Tensor| -> Result<Tensor> {
            let keep = keep.unsqueeze(2)?.broadcast_as(h.shape())?;
            Ok(keep.where_cond(&h, &floor)?.max_keepdim(1)?) // (B/2, 1, C)
        };
        let diff = (&first - &second)?;
        let pooled = Tensor::cat(
            &[
                pool(own_regions(&diff)?)?,
                pool(own_regions(&diff.neg()?)?)?,
            ],
            1,
        )?;
        Ok(v.head.forward(&pooled)?.reshape((b, ()))?)
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
        let l_mix = match &p.mixed {
            Some(mixed) => {
                contrastive(
                    &p.text_emb,
                    mixed,
                    &m.logit_scale,
                    m.config().logit_scale_max,
                )?
                .0
            }
            None => l_con.zeros_like()?,
        };
        let (text_emb, l_kl, l_mae) = (&p.text_emb, p.kl, p.mae);
        let total = (((&l_con * w.contrastive)? + (&l_kl * w.kl)?)? + (&l_mae * w.mae)?)?;
        let total = (total + (&l_mix * w.mix)?)?;
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
            mix: l_mix,
            total,
            hard: p.hard,
        })
    }
}

/// Which regions a sample of a mixed pair owns, from `diff` (B/2, L): its patch count in each
/// region minus its partner's. A region is its own where it holds more patches (diff > 0); a
/// sample that holds the majority of none owns the regions where diff is highest, so every
/// sample owns at least one. Counts are whole numbers, so the threshold is
/// min(max_k diff_k, 0.5).
pub fn own_regions(diff: &Tensor) -> Result<Tensor> {
    let t = diff.max_keepdim(1)?.clamp(f32::MIN, 0.5f32)?;
    Ok(diff.broadcast_ge(&t)?)
}

#[cfg(test)]
mod tests {
    use super::own_regions;
    use candle_core::{Device, Tensor};

    #[test]
    fn every_sample_of_a_pair_owns_a_region() {
        let dev = Device::Cpu;
        // Pair 1: regions held 5:1, 3:3, 0:4. Pair 2: the second sample holds every region.
        let first = Tensor::new(&[[5f32, 3., 0.], [1., 2., 0.]], &dev).unwrap();
        let second = Tensor::new(&[[1f32, 3., 4.], [5., 4., 3.]], &dev).unwrap();
        let diff = (&first - &second).unwrap();
        let own = |d: &Tensor| own_regions(d).unwrap().to_vec2::<u8>().unwrap();
        assert_eq!(own(&diff), vec![vec![1, 0, 0], vec![0, 1, 0]]);
        assert_eq!(
            own(&diff.neg().unwrap()),
            vec![vec![0, 0, 1], vec![1, 1, 1]]
        );
    }
}
