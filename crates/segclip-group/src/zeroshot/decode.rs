//! Per-crop zero-shot decoding (`ViTSegInference.encode_decode`, spec section 4.5):
//!
//! ```text
//! amap  = bilinear(soft (L, gh, gw) → (L, h, w))          align_corners = False
//! group = argmax_L amap                                    pixel → center
//! G     = s · normalize(region_emb) Tᵀ                      (L, K)
//! a     = softmax_K(s · normalize(image_emb) Tᵀ)            image-level class probabilities
//! F     = softmax_K(G with columns outside top-k(a) = −inf) ⊙ softmax_K(G)
//! fg    = F[group]                                          (K, h, w)
//! thr   = min(bg_thresh, max F);  bg = [max_K fg < thr]     strict <
//! ```
//!
//! With [`BgScore::Cosine`] (ours, not the paper's) a center is background when its best raw
//! cosine to the kept classes, `max_{k ∈ top-k} G/s`, is under `min(bg_thresh, the best
//! center's)`: a region that matches two similar names equally well (a synonym, a held-out
//! combination of a seen colour) stays an object, where its split probability would fail the
//! official test.
//!
//! With a claim margin `m` (ours, `docs/deviations.md` item 18) a center whose best kept class
//! is `j` is also background when its cosine to `j` is more than `m` under the highest cosine to
//! `j` of any center of the crop that holds pixels: each class is held by the regions that match
//! it best, and the weaker copies of it that the other regions carry are background. With
//! second views (`reencode`, item 19) the cosines are the mean of the region token's and those
//! of a copy of the crop that holds only the region's pixels.

use super::resize::bilinear_chw;

/// What the background threshold is compared with, per center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BgScore {
    /// Its largest final score `max_K F` (the official decode).
    #[default]
    Probability,
    /// Its best cosine similarity to a kept class (`docs/deviations.md` item 16).
    Cosine,
}

impl BgScore {
    pub fn name(self) -> &'static str {
        match self {
            BgScore::Probability => "probability",
            BgScore::Cosine => "cosine",
        }
    }
}

impl std::str::FromStr for BgScore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "probability" => Ok(BgScore::Probability),
            "cosine" => Ok(BgScore::Cosine),
            _ => Err(format!(
                "background score `{s}` is not `probability` (the official decode) or `cosine`"
            )),
        }
    }
}

/// Options of the decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// Restrict classes to the image-level top-k (5).
    pub topk: usize,
    /// Background threshold; `None` turns background off (every pixel gets a class).
    pub bg_thresh: Option<f32>,
    /// What `bg_thresh` is compared with.
    pub bg_score: BgScore,
    /// Iterations of pixel-adaptive refinement of the assignment map (0: off, the official
    /// decode; [`super::refine`]).
    pub refine: usize,
    /// Claim margin: a center is background when its cosine to its class is more than this
    /// under the crop's best center's cosine to that class (`None`: off, the official decode).
    pub claim: Option<f32>,
    /// Name each region from the mean of its token's cosines and those of a second view of the
    /// crop holding only its pixels ([`CropDecode::reencode`]; false: the official decode).
    pub reencode: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            topk: 5,
            bg_thresh: Some(0.8),
            bg_score: BgScore::Probability,
            refine: 0,
            claim: None,
            reencode: false,
        }
    }
}

/// Everything the decode of one crop computes.
#[derive(Debug, Clone)]
pub struct CropDecode {
    pub centers: usize,
    pub classes: usize,
    pub size: (usize, usize),
    /// Upsampled soft assignment (L, h, w).
    pub amap: Vec<f32>,
    /// Pixel → center (h, w).
    pub group: Vec<u32>,
    /// s · R̂ T̂ᵀ (L, K).
    pub g: Vec<f32>,
    /// Image-level class probabilities (K).
    pub image_probs: Vec<f32>,
    /// The top-k classes, best first.
    pub topk: Vec<usize>,
    /// The logit scale s, and the options the crop is decoded with.
    pub scale: f32,
    pub opts: DecodeOptions,
    /// Final center-to-class scores (L, K), zero outside the top-k.
    pub f: Vec<f32>,
    /// The threshold used (`None` without background).
    pub thr: Option<f32>,
    /// Per center: whether its pixels are background.
    pub center_is_bg: Vec<bool>,
}

fn normalized(x: &[f32]) -> Vec<f32> {
    let n = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    x.iter().map(|v| v / n).collect()
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Pixel → center: the argmax over the `l` planes of `amap`.
fn argmax_centers(amap: &[f32], l: usize) -> Vec<u32> {
    let n = amap.len() / l.max(1);
    (0..n)
        .map(|p| {
            let mut best = 0;
            for c in 1..l {
                if amap[c * n + p] > amap[best * n + p] {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}

/// Decode one crop. `soft` (L, gh, gw) row-major; `region_emb` (L, D); `image_emb` (D);
/// `text` (K, D) already L2-normalised; `scale` = min(exp(logit_scale), 100); `size` the crop's
/// (h, w) in pixels.
#[allow(clippy::too_many_arguments)]
pub fn decode_crop(
    soft: &[f32],
    grid: (usize, usize),
    region_emb: &[f32],
    image_emb: &[f32],
    text: &[f32],
    scale: f32,
    size: (usize, usize),
    opts: &DecodeOptions,
) -> CropDecode {
    let d = image_emb.len();
    let l = region_emb.len() / d;
    let k = text.len() / d;
    let (h, w) = size;
    let amap = bilinear_chw(soft, (l, grid.0, grid.1), (h, w));
    let group = argmax_centers(&amap, l);
    let t_rows: Vec<&[f32]> = text.chunks(d).collect();
    let mut g = vec![0f32; l * k];
    for c in 0..l {
        let r = normalized(&region_emb[c * d..(c + 1) * d]);
        for (j, t) in t_rows.iter().enumerate() {
            g[c * k + j] = scale * dot(&r, t);
        }
    }
    let img = normalized(image_emb);
    let image_probs = softmax(
        &t_rows
            .iter()
            .map(|t| scale * dot(&img, t))
            .collect::<Vec<_>>(),
    );
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| image_probs[b].total_cmp(&image_probs[a]).then(a.cmp(&b)));
    let topk: Vec<usize> = order[..opts.topk.min(k).max(1)].to_vec();
    let mut d = CropDecode {
        centers: l,
        classes: k,
        size,
        scale,
        opts: *opts,
        amap,
        group,
        g,
        image_probs,
        topk,
        f: Vec::new(),
        thr: None,
        center_is_bg: Vec::new(),
    };
    d.decide();
    d
}

impl CropDecode {
    /// F from G and the top-k, then each center's class and the background decision.
    fn decide(&mut self) {
        let (l, k, g, topk) = (self.centers, self.classes, &self.g, &self.topk);
        let opts = &self.opts;
        let mut f = vec![0f32; l * k];
        for c in 0..l {
            let row = &g[c * k..(c + 1) * k];
            let pre = softmax(row);
            let masked: Vec<f32> = (0..k)
                .map(|j| {
                    if topk.contains(&j) {
                        row[j]
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let post = softmax(&masked);
            for j in 0..k {
                f[c * k + j] = post[j] * pre[j];
            }
        }
        let max = |v: &mut dyn Iterator<Item = f32>| v.fold(f32::NEG_INFINITY, f32::max);
        // Each center's class: its best kept one (the argmax of F's row).
        let class: Vec<usize> = (0..l)
            .map(|c| {
                topk.iter()
                    .copied()
                    .reduce(|a, b| if g[c * k + b] > g[c * k + a] { b } else { a })
                    .unwrap_or(0)
            })
            .collect();
        let score: Vec<f32> = (0..l)
            .map(|c| match opts.bg_score {
                BgScore::Probability => max(&mut f[c * k..(c + 1) * k].iter().cloned()),
                BgScore::Cosine => g[c * k + class[c]] / self.scale,
            })
            .collect();
        // The best center is never background.
        let thr = opts
            .bg_thresh
            .map(|t| t.min(max(&mut score.iter().cloned())));
        // A class is claimed among the centers that hold pixels; the best of those stays.
        let mut held = vec![false; l];
        for &c in &self.group {
            held[c as usize] = true;
        }
        let held_max = |v: &dyn Fn(usize) -> f32| max(&mut (0..l).filter(|&o| held[o]).map(v));
        let best_held = held_max(&|o| score[o]);
        self.center_is_bg = (0..l)
            .map(|c| {
                let j = class[c];
                let claimed = opts
                    .claim
                    .is_none_or(|m| g[c * k + j] >= held_max(&|o| g[o * k + j]) - m * self.scale);
                thr.is_some_and(|t| score[c] < t || (!claimed && score[c] < best_held))
            })
            .collect();
        self.f = f;
        self.thr = thr;
    }

    /// Move the assignment map along the edges of the crop's `image` (3, h, w), planar, by
    /// `iters` steps of [`refine`](super::refine::refine), reassign the pixels and decide again.
    pub fn refine(&mut self, image: &[f32], iters: usize) {
        let (h, w) = self.size;
        super::refine::refine(&mut self.amap, self.centers, image, (3, h, w), iters);
        self.group = argmax_centers(&self.amap, self.centers);
        self.decide();
    }

    /// The centers that hold pixels, and for each a copy of the crop's normalised `image`
    /// (3, h, w), planar, with every pixel outside that center set to 0 (the CLIP mean
    /// colour): the views [`Self::reencode`] takes the embeddings of.
    pub fn region_views(&self, image: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let n = self.size.0 * self.size.1;
        let mut held: Vec<usize> = self.group.iter().map(|&c| c as usize).collect();
        held.sort_unstable();
        held.dedup();
        let mut views = vec![0f32; held.len() * 3 * n];
        for (v, &c) in held.iter().enumerate() {
            for ch in 0..3 {
                let dst = &mut views[(v * 3 + ch) * n..(v * 3 + ch + 1) * n];
                for (p, x) in dst.iter_mut().enumerate() {
                    if self.group[p] as usize == c {
                        *x = image[ch * n + p];
                    }
                }
            }
        }
        (held, views)
    }

    /// Second views of the regions (`docs/deviations.md` item 19): `centers` and the image
    /// embeddings (one row of `d` per center, not normalised) of their [`Self::region_views`];
    /// each such center's cosines become the mean of its region token's and its view's, and
    /// the classes and the background are decided again.
    pub fn reencode(&mut self, centers: &[usize], view_emb: &[f32], text: &[f32]) {
        let k = self.classes;
        let d = text.len() / k.max(1);
        for (&c, e) in centers.iter().zip(view_emb.chunks(d)) {
            let e = normalized(e);
            for (j, t) in text.chunks(d).enumerate() {
                let g = &mut self.g[c * k + j];
                *g = 0.5 * (*g + self.scale * dot(&e, t));
            }
        }
        self.decide();
    }

    /// Score of channel `ch` (0 = background, 1 + k = class k) at pixel index `p`.
    #[inline]
    pub fn logit(&self, ch: usize, p: usize) -> f32 {
        let c = self.group[p] as usize;
        if ch == 0 {
            self.center_is_bg[c] as u8 as f32
        } else {
            self.f[c * self.classes + ch - 1]
        }
    }

    /// The official logits (1 + K, h, w).
    pub fn logits(&self) -> Vec<f32> {
        let n = self.size.0 * self.size.1;
        (0..=self.classes)
            .flat_map(|ch| (0..n).map(move |p| self.logit(ch, p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two kept classes, the cosine score at `thr`, the given claim margin.
    fn cosine_claim(thr: f32, claim: Option<f32>) -> DecodeOptions {
        DecodeOptions {
            topk: 2,
            bg_thresh: Some(thr),
            bg_score: BgScore::Cosine,
            refine: 0,
            claim,
            reencode: false,
        }
    }

    #[test]
    fn hand_checked_two_centers_two_classes() {
        // 2 centers on a 1x2 grid: the left patch belongs to center 0, the right to center 1.
        let soft = [0.9, 0.2, 0.1, 0.8];
        // Center 0 points at class 0, center 1 at class 1; the image at class 0.
        let region = [1.0, 0.0, 0.0, 1.0];
        let image = [1.0, 0.2];
        let text = [1.0, 0.0, 0.0, 1.0];
        let opts = DecodeOptions {
            topk: 1,
            bg_thresh: Some(0.9),
            ..Default::default()
        };
        let dec = decode_crop(&soft, (1, 2), &region, &image, &text, 10.0, (1, 4), &opts);
        assert_eq!(dec.group, vec![0, 0, 1, 1]);
        assert_eq!(dec.topk, vec![0]);
        // F[0] = [1 * softmax([10, 0])[0], 0]; F[1] = [1 * softmax([0, 10])[0], 0]
        let p = 1.0 / (1.0 + (-10f32).exp());
        assert!((dec.f[0] - p).abs() < 1e-6 && dec.f[1] == 0.0);
        assert!((dec.f[2] - (1.0 - p)).abs() < 1e-6 && dec.f[3] == 0.0);
        // thr = min(0.9, max F) = 0.9 > F[1, :] → center 1 is background, center 0 is not.
        assert_eq!(dec.thr, Some(0.9));
        assert_eq!(dec.center_is_bg, vec![false, true]);
        let logits = dec.logits();
        assert_eq!(&logits[0..4], &[0.0, 0.0, 1.0, 1.0]);
        // Without background nothing is flagged.
        let dec = decode_crop(
            &soft,
            (1, 2),
            &region,
            &image,
            &text,
            10.0,
            (1, 4),
            &DecodeOptions {
                topk: 5,
                bg_thresh: None,
                ..Default::default()
            },
        );
        assert!(dec.center_is_bg.iter().all(|b| !b));
    }

    #[test]
    fn cosine_background_keeps_regions_between_two_names() {
        // Three centers, two nearly identical class names (a synonym pair) and a third class.
        // Center 0 lies between the two names, center 1 on the third class, center 2 nowhere.
        let soft = [0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.8];
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let (a, b) = (0.05f32, (1.0f32 - 0.05 * 0.05).sqrt());
        #[rustfmt::skip]
        let text = [
            b, a, 0.0,
            b, -a, 0.0,
            0.0, 0.0, 1.0,
        ];
        #[rustfmt::skip]
        let region = [
            1.0, 0.0, 0.0,
            0.0, 0.0, 1.0,
            0.0, s, -s,
        ];
        let image = [1.0, 0.0, 1.0];
        let run = |bg_score| {
            let opts = DecodeOptions {
                topk: 3,
                bg_thresh: Some(0.6),
                bg_score,
                refine: 0,
                claim: None,
                reencode: false,
            };
            decode_crop(&soft, (1, 3), &region, &image, &text, 100.0, (1, 3), &opts)
        };
        // Probability: center 0's mass is split between the two names (max F ≈ 0.25 < 0.6),
        // while center 2, which matches nothing, is sure of the least bad name (cosines 0.035
        // against −0.035 and −0.707 at scale 100: F ≈ 0.998).
        let p = run(BgScore::Probability);
        assert_eq!(p.center_is_bg, vec![true, false, false]);
        // Cosine: its best cosine is b ≈ 0.9987 ≥ 0.6; center 2's best is 0 (the third class
        // at −0.707, the names at ±0.035) and stays background.
        let c = run(BgScore::Cosine);
        assert_eq!(c.thr, Some(0.6));
        assert_eq!(c.center_is_bg, vec![false, false, true]);
        // The floor: with a threshold above every center's best cosine, the best center stays.
        let opts = DecodeOptions {
            topk: 3,
            bg_thresh: Some(1.5),
            bg_score: BgScore::Cosine,
            refine: 0,
            claim: None,
            reencode: false,
        };
        let c = decode_crop(&soft, (1, 3), &region, &image, &text, 100.0, (1, 3), &opts);
        assert_eq!(c.center_is_bg, vec![true, false, true]);
    }

    #[test]
    fn claim_leaves_weaker_copies_of_a_class_to_the_background() {
        // Class A = e0, class B = e1. Center 0 is an A object (cosine 0.9), center 1 a
        // background region that carries some of A (0.7), center 2 a B object (0.6).
        let soft = [0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.8];
        let text = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        #[rustfmt::skip]
        let region = [
            0.9, 0.0, 0.19f32.sqrt(),
            0.7, 0.0, 0.51f32.sqrt(),
            0.0, 0.6, 0.8,
        ];
        let image = [1.0, 1.0, 0.0];
        let run = |claim| {
            let opts = cosine_claim(0.5, claim);
            decode_crop(&soft, (1, 3), &region, &image, &text, 100.0, (1, 3), &opts)
        };
        // Without a claim every center clears the threshold.
        assert_eq!(run(None).center_is_bg, vec![false, false, false]);
        // Margin 0.1: center 1 is 0.2 under A's best center and goes to the background; center
        // 2 is B's best and stays.
        assert_eq!(run(Some(0.1)).center_is_bg, vec![false, true, false]);
        // Margin 0.25 keeps it; margin 0 keeps only each class's best.
        assert_eq!(run(Some(0.25)).center_is_bg, vec![false, false, false]);
        assert_eq!(run(Some(0.0)).center_is_bg, vec![false, true, false]);
        // The claim is a background decision: without background nothing is flagged.
        let opts = DecodeOptions {
            topk: 2,
            bg_thresh: None,
            claim: Some(0.0),
            ..Default::default()
        };
        let d = decode_crop(&soft, (1, 3), &region, &image, &text, 100.0, (1, 3), &opts);
        assert!(d.center_is_bg.iter().all(|b| !b));
        // The best center is never background, whatever the score compares: by probability
        // the best is center 1 (A at 0.5 against B at −0.5, F ≈ 1), which is not A's best
        // center by cosine (center 0 is, at 0.7, but torn between A and B at 0.65).
        #[rustfmt::skip]
        let region = [
            0.7, 0.65, 0.0875f32.sqrt(),
            0.5, -0.5, 0.5f32.sqrt(),
            0.0, 0.6, 0.8,
        ];
        let opts = DecodeOptions {
            topk: 2,
            bg_thresh: Some(0.99999),
            bg_score: BgScore::Probability,
            refine: 0,
            claim: Some(0.0),
            reencode: false,
        };
        let d = decode_crop(&soft, (1, 3), &region, &image, &text, 10.0, (1, 3), &opts);
        assert_eq!(d.center_is_bg, vec![true, false, true]);
    }

    #[test]
    fn second_views_average_the_cosines_and_decide_again() {
        // Two centers on a 1x2 grid; classes A = e0, B = e1; each region token carries both
        // (a scene's content), center 0 leaning to A, center 1 to B.
        let soft = [0.9, 0.1, 0.1, 0.9];
        let text = [1.0, 0.0, 0.0, 1.0];
        let region = [0.8, 0.6, 0.6, 0.8];
        let image = [1.0, 1.0];
        let opts = DecodeOptions {
            reencode: true,
            ..cosine_claim(0.3, Some(0.0))
        };
        let mut d = decode_crop(&soft, (1, 2), &region, &image, &text, 10.0, (1, 2), &opts);
        // Center 0: A 0.8, B 0.6; center 1: A 0.6, B 0.8 → each its own class, both kept.
        assert_eq!(d.center_is_bg, vec![false, false]);
        // The views: each center's pixel kept, the other zeroed.
        let px = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // (3, 1, 2)
        let (centers, views) = d.region_views(&px);
        assert_eq!(centers, vec![0, 1]);
        assert_eq!(
            views,
            vec![1.0, 0.0, 3.0, 0.0, 5.0, 0.0, 0.0, 2.0, 0.0, 4.0, 0.0, 6.0]
        );
        // Center 1's view holds A alone (cosine 1 to A, 0 to B): its cosines become
        // (0.6 + 1) / 2 = 0.8 to A and (0.8 + 0) / 2 = 0.4 to B, so its class is A, where
        // center 0 (view: B alone → A 0.4, B 0.8 → class B at 0.8) no longer competes.
        d.reencode(&centers, &[0.0, 3.0, 2.0, 0.0], &text);
        let cos = |c: usize, j: usize| d.g[c * 2 + j] / d.scale;
        assert!((cos(0, 0) - 0.4).abs() < 1e-6 && (cos(0, 1) - 0.8).abs() < 1e-6);
        assert!((cos(1, 0) - 0.8).abs() < 1e-6 && (cos(1, 1) - 0.4).abs() < 1e-6);
        assert_eq!(d.center_is_bg, vec![false, false]);
        assert!(d.f[1] > d.f[0] && d.f[2] > d.f[3]);
        // Had center 0's view shown A as well, A would be claimed by center 0 (0.9 > 0.8) and
        // center 1 would go to the background.
        let mut d = decode_crop(&soft, (1, 2), &region, &image, &text, 10.0, (1, 2), &opts);
        d.reencode(&centers, &[1.0, 0.0, 2.0, 0.0], &text);
        assert_eq!(d.center_is_bg, vec![false, true]);
    }

    #[test]
    fn a_center_without_pixels_claims_nothing() {
        // Three centers, but the assignment gives every pixel to centers 0 and 1; center 2
        // matches A best of all, and must not take A from center 0.
        let soft = [0.8, 0.1, 0.1, 0.8, 0.1, 0.1];
        let text = [1.0, 0.0, 0.0, 1.0];
        let region = [0.9, 0.1, 0.1, 0.9, 1.0, 0.0];
        let image = [1.0, 0.0];
        let opts = cosine_claim(0.3, Some(0.0));
        let d = decode_crop(&soft, (1, 2), &region, &image, &text, 10.0, (1, 2), &opts);
        assert_eq!(d.group, vec![0, 1]);
        assert_eq!(&d.center_is_bg[..2], &[false, false]);
    }
}
