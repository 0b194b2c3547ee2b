//! Pixel-adaptive refinement of the soft assignment (ours, not the paper's; `docs/deviations.md`
//! item 17). The group module assigns 8×8 or 16×16 *patches* to centers, so every boundary of
//! the official decode is a bilinear blur of the patch grid: on the synthetic scenes, labelling
//! each patch with its true majority class and upsampling scores only 79 % mIoU. This moves the
//! upsampled assignment along the image's own edges, by PAMR (Araslanov & Roth, *Single-Stage
//! Semantic Segmentation from Image Labels*, CVPR 2020), as TCL (Cha et al., CVPR 2023) does for
//! open-vocabulary segmentation:
//!
//! ```text
//! N(i)      = the 8 neighbours of pixel i at each dilation d ∈ D (replicate border)
//! σ_c(i)    = std over {x_c(j) : j ∈ N(i) ∪ {i} at each d}               (unbiased)
//! κ(i, j)   = mean_c −|x_c(i) − x_c(j)| / (1e-8 + 0.1 σ_c(i))           j ∈ N(i)
//! α(i, ·)   = softmax_j κ(i, j)
//! m ← Σ_j α(i, j) m(j)      repeated `iters` times, per channel of the mask
//! ```
//!
//! The affinities depend only on the image, so they are computed once per crop.

use rayon::prelude::*;

/// Pixels per parallel task.
const BLOCK: usize = 256;

/// TCL's dilations.
pub const DILATIONS: [usize; 6] = [1, 2, 4, 8, 12, 24];

/// The neighbourhood affinities of an image (C, h, w), planar: for each pixel, its neighbours'
/// indices and softmax weights.
pub struct Affinity {
    pub(crate) neighbours: Vec<u32>,
    pub(crate) weights: Vec<f32>,
    pub(crate) per_pixel: usize,
}

impl Affinity {
    pub fn new(image: &[f32], (c, h, w): (usize, usize, usize), dilations: &[usize]) -> Self {
        let n = h * w;
        let per_pixel = 8 * dilations.len();
        let mut neighbours = vec![0u32; n * per_pixel];
        let mut weights = vec![0f32; n * per_pixel];
        let clamp = |v: isize, hi: usize| v.clamp(0, hi as isize - 1) as usize;
        let planes: Vec<&[f32]> = image.chunks(n).take(c).collect();
        // σ over the neighbourhood with the centre once per dilation, as a 3×3 kernel at each
        // dilation sees it.
        let m = (per_pixel + dilations.len()) as f32;
        let centre_w = dilations.len() as f32;
        neighbours
            .par_chunks_mut(per_pixel)
            .zip(weights.par_chunks_mut(per_pixel))
            .enumerate()
            .with_min_len(BLOCK)
            .for_each(|(i, (ring, kappa))| {
                let (y, x) = (i / w, i % w);
                let mut k = 0;
                for &d in dilations {
                    let d = d as isize;
                    for dy in [-d, 0, d] {
                        for dx in [-d, 0, d] {
                            if dy != 0 || dx != 0 {
                                let yy = clamp(y as isize + dy, h);
                                let xx = clamp(x as isize + dx, w);
                                ring[k] = (yy * w + xx) as u32;
                                k += 1;
                            }
                        }
                    }
                }
                kappa.fill(0.0);
                for plane in &planes {
                    let centre = plane[i];
                    let sum = ring.iter().map(|&j| plane[j as usize]).sum::<f32>();
                    let mean = (sum + centre * centre_w) / m;
                    let sq = ring
                        .iter()
                        .map(|&j| (plane[j as usize] - mean).powi(2))
                        .sum::<f32>()
                        + (centre - mean).powi(2) * centre_w;
                    let inv = 1.0 / (1e-8 + 0.1 * (sq / (m - 1.0)).sqrt());
                    for (kj, &j) in kappa.iter_mut().zip(ring.iter()) {
                        *kj -= (centre - plane[j as usize]).abs() * inv;
                    }
                }
                let top = kappa
                    .iter()
                    .fold(f32::NEG_INFINITY, |a, &b| a.max(b / c as f32));
                let mut z = 0.0;
                for kj in kappa.iter_mut() {
                    *kj = (*kj / c as f32 - top).exp();
                    z += *kj;
                }
                kappa.iter_mut().for_each(|v| *v /= z);
            });
        Self {
            neighbours,
            weights,
            per_pixel,
        }
    }

    /// `iters` propagation steps of a planar mask (M, h, w) in place.
    pub fn propagate(&self, mask: &mut [f32], channels: usize, iters: usize) {
        let n = self.neighbours.len() / self.per_pixel;
        // Pixel-major, so that one neighbour index and weight serve every channel.
        let mut cur = vec![0f32; n * channels];
        for ch in 0..channels {
            for (i, &v) in mask[ch * n..(ch + 1) * n].iter().enumerate() {
                cur[i * channels + ch] = v;
            }
        }
        let mut next = vec![0f32; n * channels];
        for _ in 0..iters {
            match channels {
                // SegCLIP's 8 centers: a fixed width the compiler vectorises.
                8 => self.step::<8>(&cur, &mut next, 8),
                _ => self.step::<0>(&cur, &mut next, channels),
            }
            std::mem::swap(&mut cur, &mut next);
        }
        for ch in 0..channels {
            for (i, v) in mask[ch * n..(ch + 1) * n].iter_mut().enumerate() {
                *v = cur[i * channels + ch];
            }
        }
    }
}

impl Affinity {
    /// One propagation step of a pixel-major mask of `channels` (= `M` when `M` > 0).
    fn step<const M: usize>(&self, cur: &[f32], next: &mut [f32], channels: usize) {
        let m = if M > 0 { M } else { channels };
        next.par_chunks_mut(m * BLOCK)
            .enumerate()
            .for_each(|(b, block)| {
                for (k, out) in block.chunks_mut(m).enumerate() {
                    let i = b * BLOCK + k;
                    let r = i * self.per_pixel..(i + 1) * self.per_pixel;
                    if M > 0 {
                        let mut acc = [0f32; M];
                        for (&j, &a) in self.neighbours[r.clone()].iter().zip(&self.weights[r]) {
                            let src = &cur[j as usize * M..j as usize * M + M];
                            for (o, s) in acc.iter_mut().zip(src) {
                                *o += a * s;
                            }
                        }
                        out.copy_from_slice(&acc);
                    } else {
                        out.fill(0.0);
                        for (&j, &a) in self.neighbours[r.clone()].iter().zip(&self.weights[r]) {
                            let j = j as usize * m;
                            for (o, s) in out.iter_mut().zip(&cur[j..j + m]) {
                                *o += a * s;
                            }
                        }
                    }
                }
            });
    }
}

/// Refine a planar mask (M, h, w) along the edges of `image` (C, h, w) with `iters` steps at
/// [`DILATIONS`].
pub fn refine(
    mask: &mut [f32],
    channels: usize,
    image: &[f32],
    (c, h, w): (usize, usize, usize),
    iters: usize,
) {
    if iters == 0 || h * w == 0 {
        return;
    }
    Affinity::new(image, (c, h, w), &DILATIONS).propagate(mask, channels, iters);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_a_distribution_that_prefers_like_pixels() {
        // 1×4 image, one channel: 0 0 | 9 9. Pixel 1's like neighbour (0) outweighs its unlike
        // one (2).
        let img = [0.0, 0.0, 9.0, 9.0];
        let a = Affinity::new(&img, (1, 1, 4), &[1]);
        for i in 0..4 {
            let s: f32 = a.weights[i * 8..(i + 1) * 8].iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
        let w_of = |i: usize, j: u32| -> f32 {
            (0..8)
                .filter(|&k| a.neighbours[i * 8 + k] == j)
                .map(|k| a.weights[i * 8 + k])
                .sum()
        };
        assert!(w_of(1, 0) > 100.0 * w_of(1, 2));
    }

    #[test]
    fn a_blurred_boundary_snaps_to_the_image_edge() {
        // 1×8 image with an edge between pixels 4 and 5; the mask's soft boundary sits at 2–5.
        let img = [0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 9.0, 9.0];
        let mut mask = vec![
            1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0, //
            0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0,
        ];
        refine(&mut mask, 2, &img, (1, 1, 8), 10);
        let label: Vec<usize> = (0..8).map(|p| (mask[8 + p] > mask[p]) as usize).collect();
        assert_eq!(label, vec![0, 0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn a_flat_image_only_smooths() {
        // On a constant image every neighbour weighs the same: the mask's mean is kept.
        let img = vec![5.0; 16];
        let mut mask: Vec<f32> = (0..16).map(|v| v as f32).collect();
        refine(&mut mask, 1, &img, (1, 4, 4), 1);
        let w = Affinity::new(&img, (1, 4, 4), &DILATIONS).weights;
        assert!(w.iter().all(|&v| (v - 1.0 / 48.0).abs() < 1e-6));
        assert!(mask.iter().all(|v| v.is_finite()));
    }
}
