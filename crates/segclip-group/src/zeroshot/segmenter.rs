//! Whole-image zero-shot segmentation: the mmseg test pipeline and slide inference
//! (spec sections 4.3–4.4).
//!
//! ```text
//! img   = cv2-bilinear rescale (short side 224, long side ≤ 2048); x = CLIP-normalise(img)
//! for each window (crop 224, stride 224, last window snapped to the border):
//!     preds[:, window] += decode(crop);  count[window] += 1     (crops run as batches)
//!     (with `refine` > 0, decode's assignment map first follows the crop's edges: refine.rs)
//! preds /= count;  seg = argmax_c bilinear(preds → input size)
//! ```

use std::time::Instant;

use candle_core::{DType, Tensor};
use segclip_vit::Trace;

use super::decode::{decode_crop, CropDecode, DecodeOptions};
use super::resize::{normalize_clip, rescale_size, resize_bilinear_u8, taps_f32};
use crate::{Error, Result, SegClip};

/// An RGB image, 8 bits a channel, interleaved, row-major.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::Input(format!(
                "the image is {width}x{height}: it has no pixels"
            )));
        }
        if data.len() != width * height * 3 {
            return Err(Error::Input(format!(
                "{width}x{height} RGB needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

/// Options of whole-image segmentation; the defaults are the official evaluation's.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOptions {
    /// Target short side of the rescale (224).
    pub short_side: usize,
    /// Bound of the long side (2048).
    pub long_max: usize,
    /// Sliding-window crop and stride (224, 224).
    pub crop: usize,
    pub stride: usize,
    /// Crops per forward pass; bounds memory on large images.
    pub max_batch: usize,
    pub decode: DecodeOptions,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            short_side: 224,
            long_max: 2048,
            crop: 224,
            stride: 224,
            max_batch: 8,
            decode: DecodeOptions::default(),
        }
    }
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub visual_ms: f64,
    pub decode_ms: f64,
    pub postprocess_ms: f64,
}

/// The result: a label per input pixel, 0 = background (when enabled), 1 + k = class k.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub width: usize,
    pub height: usize,
    pub labels: Vec<u16>,
    /// Number of channels (1 + K).
    pub channels: usize,
    /// The size the model saw (h, w) and the crop windows (y, x, h, w).
    pub model_size: (usize, usize),
    pub windows: Vec<(usize, usize, usize, usize)>,
    pub timings: Timings,
}

impl Segmentation {
    /// Fraction of pixels per channel.
    pub fn fractions(&self) -> Vec<f64> {
        let mut counts = vec![0usize; self.channels];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / self.labels.len() as f64)
            .collect()
    }
}

/// mmseg's slide windows over an (h, w) image: (y, x, ch, cw).
pub fn slide_windows(
    (h, w): (usize, usize),
    crop: usize,
    stride: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let grids = |n: usize| n.saturating_sub(crop).div_ceil(stride) + 1;
    let mut out = Vec::new();
    for hi in 0..grids(h) {
        for wi in 0..grids(w) {
            let y2 = (hi * stride + crop).min(h);
            let x2 = (wi * stride + crop).min(w);
            let y1 = y2.saturating_sub(crop);
            let x1 = x2.saturating_sub(crop);
            out.push((y1, x1, y2 - y1, x2 - x1));
        }
    }
    out
}

/// Run the model on a batch of same-size crops and decode each one.
pub fn run_crops(
    model: &SegClip,
    pixels: &Tensor,
    text: &[f32],
    opts: &DecodeOptions,
    trace: Option<&mut Trace>,
) -> Result<Vec<CropDecode>> {
    let (b, _, h, w) = pixels.dims4()?;
    let out = model.visual.forward(pixels, None, trace)?;
    let scale = model.logit_scale_exp()?;
    let l = out.soft.dim(1)?;
    let soft: Vec<f32> = out.soft.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let reg: Vec<f32> = out
        .region_emb
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let img: Vec<f32> = out
        .image_emb
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let (n, d) = (out.grid.0 * out.grid.1, img.len() / b);
    Ok((0..b)
        .map(|i| {
            decode_crop(
                &soft[i * l * n..(i + 1) * l * n],
                out.grid,
                &reg[i * l * d..(i + 1) * l * d],
                &img[i * d..(i + 1) * d],
                text,
                scale,
                (h, w),
                opts,
            )
        })
        .collect())
}

/// Name the regions of a decoded crop again from views of the crop holding one region each
/// (`docs/deviations.md` item 19): `image` is the crop (3, h, w), normalised and planar.
pub fn reencode(
    model: &SegClip,
    dec: &mut CropDecode,
    image: &[f32],
    text: &[f32],
    max_batch: usize,
) -> Result<()> {
    let (h, w) = dec.size;
    let (centers, views) = dec.region_views(image);
    let device = model.device();
    let mut emb = Vec::with_capacity(centers.len() * text.len() / dec.classes.max(1));
    for chunk in views.chunks(max_batch.max(1) * 3 * h * w) {
        let v = Tensor::from_slice(chunk, (chunk.len() / (3 * h * w), 3, h, w), device)?;
        let out = model.visual.forward(&v, None, None)?;
        emb.extend(
            out.image_emb
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    dec.reencode(&centers, &emb, text);
    Ok(())
}

/// Segment `image` into the classes whose normalised embeddings are `text` (K, D).
/// `progress(done, total)` is called after each batch of crops.
pub fn segment(
    model: &SegClip,
    image: &RgbImage,
    text: &Tensor,
    opts: &SegmentOptions,
    mut trace: Option<&mut Trace>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Segmentation> {
    if opts.crop < model.config().vision.patch_size || opts.stride == 0 || opts.max_batch == 0 {
        return Err(Error::Input(format!(
            "crop {} / stride {} / batch {} are not usable",
            opts.crop, opts.stride, opts.max_batch
        )));
    }
    let mut timings = Timings::default();
    let t0 = Instant::now();
    let (h0, w0) = (image.height, image.width);
    let p = model.config().vision.patch_size;
    let (h, w) = rescale_size((h0, w0), opts.short_side, opts.long_max, p);
    let resized = resize_bilinear_u8(&image.data, (h0, w0, 3), (h, w));
    let planar = normalize_clip(&resized, (h, w));
    let device = model.device().clone();
    let full = Tensor::from_vec(planar, (1, 3, h, w), &device)?;
    let text_v: Vec<f32> = text.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let k = text.dim(0)?;
    let channels = 1 + k;
    let windows = slide_windows((h, w), opts.crop, opts.stride);
    timings.preprocess_ms = t0.elapsed().as_secs_f64() * 1e3;

    let mut preds = vec![0f32; channels * h * w];
    let mut count = vec![0u16; h * w];
    // Windows of one size form a batch (the last row/column may be narrower on small images).
    let mut done = 0;
    type Window = (usize, usize, usize, usize);
    let mut groups: Vec<((usize, usize), Vec<Window>)> = Vec::new();
    for win in &windows {
        match groups.iter_mut().find(|(s, _)| *s == (win.2, win.3)) {
            Some((_, v)) => v.push(*win),
            None => groups.push(((win.2, win.3), vec![*win])),
        }
    }
    for (_, wins) in &groups {
        for chunk in wins.chunks(opts.max_batch) {
            let t1 = Instant::now();
            let crops = chunk
                .iter()
                .map(|&(y, x, ch, cw)| full.narrow(2, y, ch)?.narrow(3, x, cw))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let batch = Tensor::cat(&crops, 0)?;
            let mut decoded = run_crops(
                model,
                &batch,
                &text_v,
                &opts.decode,
                if done == 0 {
                    trace.as_deref_mut()
                } else {
                    None
                },
            )?;
            timings.visual_ms += t1.elapsed().as_secs_f64() * 1e3;
            let t2 = Instant::now();
            if opts.decode.refine > 0 || opts.decode.reencode {
                let px: Vec<f32> = batch.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                for (dec, img) in decoded.iter_mut().zip(px.chunks(px.len() / chunk.len())) {
                    if opts.decode.refine > 0 {
                        dec.refine(img, opts.decode.refine);
                    }
                    if opts.decode.reencode {
                        reencode(model, dec, img, &text_v, opts.max_batch)?;
                    }
                }
            }
            for (&(y, x, ch, cw), dec) in chunk.iter().zip(&decoded) {
                if done == 0 {
                    if let Some(t) = trace.as_deref_mut() {
                        record_decode(t, dec, &device)?;
                    }
                }
                for c in 0..channels {
                    for yy in 0..ch {
                        let row =
                            &mut preds[(c * h + y + yy) * w + x..(c * h + y + yy) * w + x + cw];
                        for (xx, v) in row.iter_mut().enumerate() {
                            *v += dec.logit(c, yy * cw + xx);
                        }
                    }
                }
                for yy in 0..ch {
                    for v in &mut count[(y + yy) * w + x..(y + yy) * w + x + cw] {
                        *v += 1;
                    }
                }
                done += 1;
            }
            timings.decode_ms += t2.elapsed().as_secs_f64() * 1e3;
            progress(done, windows.len());
        }
    }
    let t3 = Instant::now();
    for c in 0..channels {
        for (v, &n) in preds[c * h * w..(c + 1) * h * w].iter_mut().zip(&count) {
            *v /= n.max(1) as f32;
        }
    }
    // Bilinear resize to the input size and argmax, one output pixel at a time: the full-size
    // score volume is never materialised.
    let ty = taps_f32(h, h0);
    let tx = taps_f32(w, w0);
    let mut labels = vec![0u16; h0 * w0];
    for (oy, &(y0, y1, a0, a1)) in ty.iter().enumerate() {
        for (ox, &(x0, x1, b0, b1)) in tx.iter().enumerate() {
            let mut best = (0usize, f32::NEG_INFINITY);
            for c in 0..channels {
                let pl = &preds[c * h * w..(c + 1) * h * w];
                let v = a0 * (b0 * pl[y0 * w + x0] + b1 * pl[y0 * w + x1])
                    + a1 * (b0 * pl[y1 * w + x0] + b1 * pl[y1 * w + x1]);
                if v > best.1 {
                    best = (c, v);
                }
            }
            labels[oy * w0 + ox] = best.0 as u16;
        }
    }
    timings.postprocess_ms = t3.elapsed().as_secs_f64() * 1e3;
    Ok(Segmentation {
        width: w0,
        height: h0,
        labels,
        channels,
        model_size: (h, w),
        windows,
        timings,
    })
}

/// Record a crop's decode under the parity names (`decode.*`).
pub fn record_decode(t: &mut Trace, d: &CropDecode, device: &candle_core::Device) -> Result<()> {
    let (l, k, (h, w)) = (d.centers, d.classes, d.size);
    t.record(
        "decode.amap",
        &Tensor::from_slice(&d.amap, (l, h, w), device)?,
    );
    let group: Vec<i64> = d.group.iter().map(|&g| g as i64).collect();
    t.record("decode.group", &Tensor::from_vec(group, (h, w), device)?);
    t.record("decode.G", &Tensor::from_slice(&d.g, (l, k), device)?);
    t.record(
        "decode.image_probs",
        &Tensor::from_slice(&d.image_probs, k, device)?,
    );
    let topk: Vec<i64> = d.topk.iter().map(|&v| v as i64).collect();
    t.record(
        "decode.topk_indices",
        &Tensor::from_vec(topk, d.topk.len(), device)?,
    );
    t.record("decode.F", &Tensor::from_slice(&d.f, (l, k), device)?);
    if let Some(thr) = d.thr {
        t.record("decode.bg_thresh_used", &Tensor::new(thr, device)?);
    }
    t.record(
        "decode.logits",
        &Tensor::from_vec(d.logits(), (1 + k, h, w), device)?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_mmseg() {
        // VOC 500x375 -> 299x224: two crops, the last snapped back to the border.
        assert_eq!(
            slide_windows((224, 299), 224, 224),
            vec![(0, 0, 224, 224), (0, 75, 224, 224)]
        );
        assert_eq!(slide_windows((224, 224), 224, 224), vec![(0, 0, 224, 224)]);
        // Smaller than a crop: one window covering the image.
        assert_eq!(slide_windows((100, 50), 224, 224), vec![(0, 0, 100, 50)]);
        // Overlapping stride.
        assert_eq!(slide_windows((224, 448), 224, 112).len(), 3);
    }
}
