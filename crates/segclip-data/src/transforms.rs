//! Training and evaluation image transforms (spec sections 3.4 and 4.3).
//!
//! - [`random_resized_crop`]: torchvision's `RandomResizedCrop.get_params` (10 tries at a random
//!   area fraction and log-uniform aspect ratio, then a centre-crop fallback), returning the box
//!   and the normalised coordinates SegCLIP's patch labels need;
//! - [`resize_bicubic_u8`]: PIL's `Image.resize(BICUBIC)` on 8-bit RGB (cubic a = −0.5, support
//!   widened when downscaling, horizontal pass then vertical, 22-bit fixed-point coefficients,
//!   rounding and clipping to u8 after each pass);
//! - the evaluation resize and CLIP normalisation live in
//!   [`segclip_group::zeroshot::resize`] and are re-exported here.

pub use segclip_group::zeroshot::resize::{normalize_clip, rescale_size, resize_bilinear_u8};

/// A small seeded generator (SplitMix64) for data augmentation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator's state (to checkpoint it); `Rng::new(state)` resumes it exactly.
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [a, b).
    pub fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * ((self.next_u64() >> 11) as f64 * (-53f64).exp2())
    }

    /// Uniform integer in [lo, hi).
    pub fn below(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo).max(1) as u64) as usize
    }
}

/// A crop box in pixels and SegCLIP's normalised coordinates
/// `[j/(W−1), i/(H−1), (j+w−1)/(W−1), (i+h−1)/(H−1)]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
    pub coords: [f64; 4],
}

/// torchvision's `RandomResizedCrop.get_params` for an (h, w) image with SegCLIP's
/// `scale = (0.5, 1.0)`, `ratio = (3/4, 4/3)` or others.
pub fn random_resized_crop(
    rng: &mut Rng,
    (h, w): (usize, usize),
    scale: (f64, f64),
    ratio: (f64, f64),
) -> CropBox {
    let area = (h * w) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    let mut pick = None;
    for _ in 0..10 {
        let target = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let chh = (target / aspect).sqrt().round() as usize;
        if cw > 0 && cw <= w && chh > 0 && chh <= h {
            let i = rng.below(0, h - chh + 1);
            let j = rng.below(0, w - cw + 1);
            pick = Some((i, j, chh, cw));
            break;
        }
    }
    let (i, j, ch, cw) = pick.unwrap_or_else(|| {
        let in_ratio = w as f64 / h as f64;
        let (cw, ch) = if in_ratio < ratio.0 {
            (w, (w as f64 / ratio.0).round() as usize)
        } else if in_ratio > ratio.1 {
            ((h as f64 * ratio.1).round() as usize, h)
        } else {
            (w, h)
        };
        ((h - ch) / 2, (w - cw) / 2, ch, cw)
    });
    let (fw, fh) = ((w.max(2) - 1) as f64, (h.max(2) - 1) as f64);
    CropBox {
        top: i,
        left: j,
        height: ch,
        width: cw,
        coords: [
            j as f64 / fw,
            i as f64 / fh,
            (j + cw - 1) as f64 / fw,
            (i + ch - 1) as f64 / fh,
        ],
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's resampling coefficients for one axis: per output index the first source index and
/// fixed-point weights.
fn coefficients(input: usize, output: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..output)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as isize).max(0) as usize;
            let xmax = ((center + support + 0.5) as isize).min(input as isize) as usize;
            let ws: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = ws.iter().sum();
            let ks = ws
                .iter()
                .map(|w| {
                    let v = if total != 0.0 { w / total } else { 0.0 }
                        * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, ks)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass along width (`vertical = false`) or height of an (h, w, 3) u8 image.
fn pass(src: &[u8], (h, w): (usize, usize), out_len: usize, vertical: bool) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let (oh, ow) = if vertical { (out_len, w) } else { (h, out_len) };
    let coeffs = coefficients(if vertical { h } else { w }, out_len);
    let mut out = vec![0u8; oh * ow * 3];
    for y in 0..oh {
        for x in 0..ow {
            let (i0, k) = &coeffs[if vertical { y } else { x }];
            for c in 0..3 {
                let mut ss = half;
                for (t, &kv) in k.iter().enumerate() {
                    let (sy, sx) = if vertical { (i0 + t, x) } else { (y, i0 + t) };
                    ss += src[(sy * w + sx) * 3 + c] as i64 * kv as i64;
                }
                out[(y * ow + x) * 3 + c] = clip8(ss);
            }
        }
    }
    out
}

/// PIL `Image.resize((ow, oh), BICUBIC)` of an interleaved RGB u8 image (h, w, 3). Like Pillow,
/// the vertical pass runs first when the width grows and the height shrinks, else the
/// horizontal one (the order changes the rounding of the u8 intermediate).
pub fn resize_bicubic_u8(src: &[u8], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<u8> {
    assert_eq!(src.len(), h * w * 3);
    let (hz, vt) = (ow != w, oh != h);
    match (hz, vt) {
        (false, false) => src.to_vec(),
        (true, false) => pass(src, (h, w), ow, false),
        (false, true) => pass(src, (h, w), oh, true),
        (true, true) if ow > w && oh < h => pass(&pass(src, (h, w), oh, true), (oh, w), ow, false),
        (true, true) => pass(&pass(src, (h, w), ow, false), (h, ow), oh, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_stay_inside_and_cover_the_area_range() {
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            let b = random_resized_crop(&mut rng, (300, 451), (0.5, 1.0), (0.75, 4.0 / 3.0));
            assert!(b.top + b.height <= 300 && b.left + b.width <= 451);
            let frac = (b.height * b.width) as f64 / (300.0 * 451.0);
            assert!((0.45..=1.0).contains(&frac), "{frac}");
            assert!(b.coords.iter().all(|c| (0.0..=1.0).contains(c)));
        }
    }

    #[test]
    fn fallback_is_the_centre_crop() {
        // A 10x1000 strip: no try can fit the ratio range, so torchvision's fallback applies:
        // in_ratio 100 > 4/3 -> h = 10, w = round(10 * 4/3) = 13, centred.
        let mut rng = Rng::new(1);
        let b = random_resized_crop(&mut rng, (10, 1000), (0.5, 1.0), (0.75, 4.0 / 3.0));
        assert_eq!((b.top, b.left, b.height, b.width), (0, 493, 10, 13));
        assert_eq!(b.coords, [493.0 / 999.0, 0.0, 505.0 / 999.0, 1.0]);
    }

    #[test]
    fn bicubic_matches_pil() {
        // PIL: Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5)
        //        .resize((3, 2), Image.BICUBIC)
        let src: Vec<u8> = (0..48u32).map(|v| (v * 5) as u8).collect();
        let out = resize_bicubic_u8(&src, (4, 4), (2, 3));
        assert_eq!(out, PIL_4X4_TO_3X2.to_vec());
        // Upscaling: .resize((5, 3), Image.BICUBIC)
        let out = resize_bicubic_u8(&src, (4, 4), (3, 5));
        assert_eq!(out, PIL_4X4_TO_5X3.to_vec());
        // Both sides grow: .resize((6, 6), Image.BICUBIC)
        let out = resize_bicubic_u8(&src, (4, 4), (6, 6));
        assert_eq!(out, PIL_4X4_TO_6X6.to_vec());
    }

    const PIL_4X4_TO_6X6: [u8; 108] = [
        0, 0, 5, 2, 7, 12, 14, 19, 24, 23, 28, 33, 35, 40, 45, 42, 47, 52, 24, 29, 34, 31, 36, 41,
        43, 48, 53, 52, 57, 62, 64, 69, 74, 71, 76, 81, 69, 74, 79, 76, 81, 86, 88, 93, 98, 97,
        102, 107, 109, 114, 119, 116, 121, 126, 109, 114, 119, 116, 121, 126, 128, 133, 138, 137,
        142, 147, 149, 154, 159, 156, 161, 166, 154, 159, 164, 161, 166, 171, 173, 178, 183, 182,
        187, 192, 194, 199, 204, 201, 206, 211, 183, 188, 193, 190, 195, 200, 202, 207, 212, 211,
        216, 221, 223, 228, 233, 230, 235, 240,
    ];

    const PIL_4X4_TO_3X2: [u8; 18] = [
        38, 43, 48, 58, 63, 68, 77, 82, 87, 148, 153, 158, 168, 173, 178, 187, 192, 197,
    ];
    const PIL_4X4_TO_5X3: [u8; 45] = [
        10, 15, 20, 21, 26, 31, 34, 39, 44, 46, 51, 56, 57, 62, 67, 89, 94, 99, 100, 105, 110, 113,
        118, 123, 125, 130, 135, 136, 141, 146, 168, 173, 178, 179, 184, 189, 192, 197, 202, 204,
        209, 214, 215, 220, 225,
    ];
}
