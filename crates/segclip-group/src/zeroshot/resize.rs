//! Resampling for evaluation, on plain buffers:
//!
//! - [`rescale_size`]: mmcv `imrescale` to (long ≤ 2048, short = 224):
//!   `sf = min(long_max / long, short / short_side)`, `new = int(dim·sf + 0.5)`;
//! - [`resize_bilinear_u8`]: the cv2 `INTER_LINEAR` formula (half-pixel centres, no
//!   antialiasing), computed in f64 and rounded half-to-even as the parity fixtures do; cv2's own
//!   11-bit fixed-point arithmetic can differ from it by one grey level;
//! - [`bilinear_chw`]: PyTorch `interpolate(mode="bilinear", align_corners=False)` in f32:
//!   `src = max(0, (dst + 0.5)·in/out − 0.5)`.

/// mmcv `imrescale` size for a `(h, w)` image, never below `min_side` pixels.
pub fn rescale_size(
    (h, w): (usize, usize),
    short: usize,
    long_max: usize,
    min_side: usize,
) -> (usize, usize) {
    let (lo, hi) = (h.min(w) as f64, h.max(w) as f64);
    let sf = (long_max as f64 / hi).min(short as f64 / lo);
    let f = |d: usize| ((d as f64 * sf + 0.5) as usize).max(min_side);
    (f(h), f(w))
}

/// Source taps along one axis, half-pixel centres, clamped to the border: (i0, i1, λ).
fn taps_f64(input: usize, output: usize) -> Vec<(usize, usize, f64)> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, src - i0 as f64)
        })
        .collect()
}

/// Bilinear resize of an interleaved u8 image (h, w, c) to (oh, ow, c).
pub fn resize_bilinear_u8(
    src: &[u8],
    (h, w, c): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<u8> {
    assert_eq!(src.len(), h * w * c);
    if (h, w) == (oh, ow) {
        return src.to_vec();
    }
    let ty = taps_f64(h, oh);
    let tx = taps_f64(w, ow);
    let mut out = vec![0u8; oh * ow * c];
    for (y, &(y0, y1, ly)) in ty.iter().enumerate() {
        for (x, &(x0, x1, lx)) in tx.iter().enumerate() {
            for ch in 0..c {
                let p = |yy: usize, xx: usize| src[(yy * w + xx) * c + ch] as f64;
                let v = (1.0 - ly) * ((1.0 - lx) * p(y0, x0) + lx * p(y0, x1))
                    + ly * ((1.0 - lx) * p(y1, x0) + lx * p(y1, x1));
                out[(y * ow + x) * c + ch] = v.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// PyTorch-style taps in f32: (i0, i1, λ0, λ1).
pub fn taps_f32(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize (align_corners = False) of planar f32 data (c, h, w) to (c, oh, ow).
pub fn bilinear_chw(
    src: &[f32],
    (c, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(src.len(), c * h * w);
    let ty = taps_f32(h, oh);
    let tx = taps_f32(w, ow);
    let mut out = vec![0f32; c * oh * ow];
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
        for (y, &(y0, y1, h0, h1)) in ty.iter().enumerate() {
            for (x, &(x0, x1, w0, w1)) in tx.iter().enumerate() {
                dst[y * ow + x] = h0 * (w0 * plane[y0 * w + x0] + w1 * plane[y0 * w + x1])
                    + h1 * (w0 * plane[y1 * w + x0] + w1 * plane[y1 * w + x1]);
            }
        }
    }
    out
}

/// CLIP normalisation of an RGB u8 image (h, w, 3) into planar f32 (3, h, w):
/// `(v − 255·mean) / (255·std)` in f64, rounded to f32.
pub fn normalize_clip(src: &[u8], (h, w): (usize, usize)) -> Vec<f32> {
    const MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
    const STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
    let mut out = vec![0f32; 3 * h * w];
    for ch in 0..3 {
        let (m, s) = (255.0 * MEAN[ch], 255.0 * STD[ch]);
        for i in 0..h * w {
            out[ch * h * w + i] = ((src[i * 3 + ch] as f64 - m) / s) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_follows_mmcv() {
        // VOC 500x375 (w x h) -> 299x224.
        assert_eq!(rescale_size((375, 500), 224, 2048, 16), (224, 299));
        // The long side limit wins for extreme aspect ratios; never below one patch.
        assert_eq!(rescale_size((100, 10000), 224, 2048, 16), (20, 2048));
        assert_eq!(rescale_size((1, 5000), 224, 2048, 16), (16, 2048));
        assert_eq!(rescale_size((1, 1), 224, 2048, 16), (224, 224));
    }

    #[test]
    fn bilinear_u8_matches_hand_values() {
        // 1x2 -> 1x4 : src x = (o + .5) * .5 - .5 = -.25(->0), .25, .75, 1.25(->1 clamp)
        let out = resize_bilinear_u8(&[0, 100], (1, 2, 1), (1, 4));
        assert_eq!(out, vec![0, 25, 75, 100]);
        // Half-to-even rounding: 2.5 -> 2.
        let out = resize_bilinear_u8(&[0, 10], (1, 2, 1), (1, 4));
        assert_eq!(out, vec![0, 2, 8, 10]);
    }

    #[test]
    fn bilinear_chw_matches_pytorch() {
        // F.interpolate(torch.tensor([[[[1.,2.],[3.,4.]]]]), size=(3,3), mode="bilinear",
        //   align_corners=False)
        let out = bilinear_chw(&[1., 2., 3., 4.], (1, 2, 2), (3, 3));
        let want = [1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }
}
