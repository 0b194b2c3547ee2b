//! From caption samples to a training batch (spec sections 3.3–3.5) and the step's noise.
//!
//! Per sample: the image is brought to short side `image_size` (bicubic, only when both sides
//! are larger, as the official offline preprocessing does); its superpixels come from the cache;
//! a RandomResizedCrop box (scale 0.5–1, ratio 3/4–4/3) is cut, resized bicubically to
//! `image_size`² and CLIP-normalised; the box selects the patch labels; the caption becomes at
//! most 32 tokens, and the batch's captions are padded to the longest of them rather than to 32:
//! the text tower's causal mask keeps every position after a caption's end token out of its
//! embedding, so the result is the same and the text tower does a fraction of the work.

use candle_core::{Device, Tensor};
use segclip_data::datasets::{CaptionSample, SuperpixelCache};
use segclip_data::masking::random_masking;
use segclip_data::patch_labels::{patch_labels, PatchRule};
use segclip_data::superpixels::Method;
use segclip_data::transforms::{normalize_clip, random_resized_crop, resize_bicubic_u8, Rng};
use segclip_losses::{Batch, Noise};
use segclip_vit::Tokenizer;

use crate::Result;

pub struct BatchBuilder {
    pub tokenizer: Tokenizer,
    pub image_size: usize,
    pub patch_size: usize,
    pub superpixels: Method,
    pub cache: Option<SuperpixelCache>,
    pub rule: PatchRule,
}

impl BatchBuilder {
    pub fn build(
        &self,
        samples: &[CaptionSample],
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Batch> {
        let (s, p) = (self.image_size, self.patch_size);
        let grid = s / p;
        let mut pixels = Vec::with_capacity(samples.len() * 3 * s * s);
        let mut labels = Vec::with_capacity(samples.len() * grid * grid);
        let mut captions = Vec::with_capacity(samples.len());
        for smp in samples {
            let img = &smp.image;
            let (h, w) = (img.height, img.width);
            let (bh, bw) = if h > s && w > s {
                let sf = s as f64 / h.min(w) as f64;
                (
                    ((h as f64 * sf).round() as usize).max(s),
                    ((w as f64 * sf).round() as usize).max(s),
                )
            } else {
                (h, w)
            };
            let base = if (bh, bw) == (h, w) {
                img.data.clone()
            } else {
                resize_bicubic_u8(&img.data, (h, w), (bh, bw))
            };
            let map = match &self.cache {
                Some(c) => c.get(&smp.key, &base, (bh, bw))?,
                None => self.superpixels.run(&base, (bh, bw)),
            };
            let b = random_resized_crop(rng, (bh, bw), (0.5, 1.0), (0.75, 4.0 / 3.0));
            let mut crop = Vec::with_capacity(b.height * b.width * 3);
            for y in b.top..b.top + b.height {
                crop.extend_from_slice(
                    &base[(y * bw + b.left) * 3..(y * bw + b.left + b.width) * 3],
                );
            }
            let resized = resize_bicubic_u8(&crop, (b.height, b.width), (s, s));
            pixels.extend(normalize_clip(&resized, (s, s)));
            labels.extend(patch_labels(&map, b.coords, s, p, self.rule));
            captions.push(self.tokenizer.encode(&smp.caption)?);
        }
        let n = samples.len();
        let t = captions.iter().map(|c| c.ids.len()).max().unwrap_or(2);
        let ids: Vec<i64> = captions
            .iter()
            .flat_map(|c| c.padded(t).into_iter().map(|v| v as i64))
            .collect();
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (n, t), device)?,
            pixels: Tensor::from_vec(pixels, (n, 3, s, s), device)?,
            image_seg: Tensor::from_vec(labels, (n, grid * grid), device)?,
        })
    }
}

fn gumbel(rng: &mut Rng, n: usize) -> Vec<f32> {
    let (lo, hi) = (f32::MIN_POSITIVE as f64, 1.0 - f32::EPSILON as f64);
    (0..n)
        .map(|_| -(-(rng.uniform(0.0, 1.0).clamp(lo, hi)).ln()).ln() as f32)
        .collect()
}

/// The randomness of one step: Gumbel noise for both passes and the MAE masking of
/// `1 + patches` tokens keeping `int((1 + patches) · (1 − mask_ratio))`.
pub fn sample_noise(
    rng: &mut Rng,
    b: usize,
    centers: usize,
    patches: usize,
    mask_ratio: f64,
    device: &Device,
) -> Result<Noise> {
    let tokens = patches + 1;
    let keep = ((tokens as f64) * (1.0 - mask_ratio)) as usize;
    let keep = keep.clamp(2, tokens);
    let (mut ids_keep, mut ids_restore, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..b {
        let noise: Vec<f32> = (0..tokens).map(|_| rng.uniform(0.0, 1.0) as f32).collect();
        let m = random_masking(&noise, keep);
        ids_keep.extend(m.ids_keep.iter().map(|&v| v as i64));
        ids_restore.extend(m.ids_restore.iter().map(|&v| v as i64));
        mask.extend(m.mask.iter().map(|&v| v as f32));
    }
    Ok(Noise {
        gumbel_plain: Tensor::from_vec(
            gumbel(rng, b * centers * patches),
            (b, centers, patches),
            device,
        )?,
        ids_keep: Tensor::from_vec(ids_keep, (b, keep), device)?,
        ids_restore: Tensor::from_vec(ids_restore, (b, tokens), device)?,
        mask: Tensor::from_vec(mask, (b, tokens), device)?,
        gumbel_masked: Tensor::from_vec(
            gumbel(rng, b * centers * (keep - 1)),
            (b, centers, keep - 1),
            device,
        )?,
    })
}
