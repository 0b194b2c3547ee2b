//! Felzenszwalb–Huttenlocher graph segmentation as scikit-image's `felzenszwalb` computes it
//! (the superpixels SegCLIP trains with: scale 224, σ 0.9, min_size 224):
//!
//! 1. the image as floats in [0, 1], each channel smoothed with a Gaussian of σ;
//! 2. an 8-connected grid graph whose edge weight is the Euclidean distance between the smoothed
//!    colour vectors (all channels together, not one segmentation per channel as in the paper);
//! 3. edges in increasing weight; two components merge when the weight is below
//!    `min(int(C₁) + k/|C₁|, int(C₂) + k/|C₂|)` with `k = scale / 255`, where `int(C)` is the
//!    weight of the edge that last grew C;
//! 4. a second pass over the same edge order merges any component smaller than `min_size`;
//! 5. labels 0.. numbered by each component's first pixel in raster order.
//!
//! Ties in weight are taken in edge order (right, down, down-right, up-right edges; raster order
//! within each), a stable order; scikit-image's `argsort` breaks ties in its own way, which can
//! only matter between equal-weight edges.

use super::gaussian::gaussian_plane;
use super::LabelMap;

/// Parameters of [`felzenszwalb`]; the default is SegCLIP's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FelzenszwalbParams {
    pub scale: f64,
    pub sigma: f64,
    pub min_size: usize,
}

impl Default for FelzenszwalbParams {
    fn default() -> Self {
        Self {
            scale: 224.0,
            sigma: 0.9,
            min_size: 224,
        }
    }
}

fn find_root(forest: &mut [u32], mut n: u32) -> u32 {
    let mut root = n;
    while forest[root as usize] < root {
        root = forest[root as usize];
    }
    while forest[n as usize] < n {
        let next = forest[n as usize];
        forest[n as usize] = root;
        n = next;
    }
    root
}

/// Edge indices sorted by weight, ties in index order (a stable sort).
///
/// Rounding to f32 never reverses an order, so the edges are radix-sorted on the f32 key (bits
/// 32..63 of `key << 32 | index`: three 11-bit passes, stable), and runs of equal f32 keys (short)
/// are then put in exact f64 order by insertion sort, which keeps ties in index order.
fn sorted_order(costs: &[f64]) -> Vec<u32> {
    let mut a: Vec<u64> = costs
        .iter()
        .enumerate()
        .map(|(i, &c)| ((c as f32).to_bits() as u64) << 32 | i as u64)
        .collect();
    let mut b = vec![0u64; a.len()];
    const BITS: u32 = 11;
    for pass in 0..3 {
        let shift = 32 + pass * BITS;
        let digit = |v: u64| ((v >> shift) & ((1 << BITS) - 1)) as usize;
        let mut count = vec![0usize; 1 << BITS];
        for &v in &a {
            count[digit(v)] += 1;
        }
        if count.contains(&a.len()) {
            continue;
        }
        let mut sum = 0;
        for c in count.iter_mut() {
            let v = *c;
            *c = sum;
            sum += v;
        }
        for &v in &a {
            let d = digit(v);
            b[count[d]] = v;
            count[d] += 1;
        }
        std::mem::swap(&mut a, &mut b);
    }
    let mut idx: Vec<u32> = a.iter().map(|&v| v as u32).collect();
    let mut i = 0;
    while i < a.len() {
        let mut j = i + 1;
        while j < a.len() && a[j] >> 32 == a[i] >> 32 {
            j += 1;
        }
        if j - i > 1 {
            // Stable insertion sort by the exact weight.
            let run = &mut idx[i..j];
            for m in 1..run.len() {
                let mut q = m;
                while q > 0 && costs[run[q - 1] as usize] > costs[run[q] as usize] {
                    run.swap(q - 1, q);
                    q -= 1;
                }
            }
        }
        i = j;
    }
    idx
}

/// Segment an interleaved u8 image (h, w, c) (any channel count ≥ 1).
pub fn felzenszwalb(
    pixels: &[u8],
    (h, w, c): (usize, usize, usize),
    p: &FelzenszwalbParams,
) -> LabelMap {
    assert_eq!(
        pixels.len(),
        h * w * c,
        "image buffer does not match its size"
    );
    if h == 0 || w == 0 {
        return LabelMap {
            height: h,
            width: w,
            labels: vec![],
            count: 0,
        };
    }
    let scale = p.scale / 255.0;
    let planes: Vec<Vec<f64>> = (0..c)
        .map(|ch| {
            let mut plane: Vec<f64> = (0..h * w)
                .map(|i| pixels[i * c + ch] as f64 / 255.0)
                .collect();
            gaussian_plane(&mut plane, (h, w), p.sigma);
            plane
        })
        .collect();
    // Edge weights in scikit-image's order: right, down, down-right, up-right; raster order
    // within each. Endpoints are recomputed from the index, never stored.
    let n_right = h * (w - 1);
    let n_down = (h - 1) * w;
    let n_diag = (h - 1) * (w - 1);
    let mut costs: Vec<f64> = vec![0.0; n_right + n_down + 2 * n_diag];
    {
        let (right, rest) = costs.split_at_mut(n_right);
        let (down, rest) = rest.split_at_mut(n_down);
        let (dright, uright) = rest.split_at_mut(n_diag);
        let acc = |out: &mut [f64],
                   a0: usize,
                   b0: usize,
                   len: usize,
                   rows: usize,
                   a_stride: usize,
                   b_stride: usize| {
            for y in 0..rows {
                let o = &mut out[y * len..(y + 1) * len];
                for pl in &planes {
                    let (pa, pb) = (
                        &pl[a0 + y * a_stride..a0 + y * a_stride + len],
                        &pl[b0 + y * b_stride..b0 + y * b_stride + len],
                    );
                    for ((v, &x), &z) in o.iter_mut().zip(pa).zip(pb) {
                        let d = x - z;
                        *v += d * d;
                    }
                }
                o.iter_mut().for_each(|v| *v = v.sqrt());
            }
        };
        acc(right, 1, 0, w - 1, h, w, w);
        acc(down, w, 0, w, h - 1, w, w);
        acc(dright, w + 1, 0, w - 1, h - 1, w, w);
        acc(uright, 1, w, w - 1, h - 1, w, w);
    }
    let w1 = (w - 1) as u32;
    let endpoints = |e: usize| -> (u32, u32) {
        // 32-bit division: several times cheaper than 64-bit on x86.
        let divmod = |f: usize| ((f as u32 / w1) as usize, (f as u32 % w1) as usize);
        let (a, b) = if e < n_right {
            let (y, x) = divmod(e);
            (y * w + x + 1, y * w + x)
        } else if e < n_right + n_down {
            let a = e - n_right;
            (a + w, a)
        } else if e < n_right + n_down + n_diag {
            let (y, x) = divmod(e - n_right - n_down);
            (y * w + x + w + 1, y * w + x)
        } else {
            let (y, x) = divmod(e - n_right - n_down - n_diag);
            (y * w + x + 1, (y + 1) * w + x)
        };
        (a as u32, b as u32)
    };
    let order = sorted_order(&costs);
    let edges: Vec<(u32, u32)> = order.iter().map(|&e| endpoints(e as usize)).collect();
    let costs: Vec<f64> = order.iter().map(|&e| costs[e as usize]).collect();
    let n = h * w;
    let mut forest: Vec<u32> = (0..n as u32).collect();
    let mut size = vec![1u32; n];
    let mut cint = vec![0f64; n];
    let join = |forest: &mut [u32], a: u32, b: u32| -> u32 {
        let root = a.min(b);
        forest[a as usize] = root;
        forest[b as usize] = root;
        root
    };
    for (&(a, b), &cost) in edges.iter().zip(&costs) {
        let (s0, s1) = (find_root(&mut forest, a), find_root(&mut forest, b));
        if s0 == s1 {
            continue;
        }
        let t0 = cint[s0 as usize] + scale / size[s0 as usize] as f64;
        let t1 = cint[s1 as usize] + scale / size[s1 as usize] as f64;
        if cost < t0.min(t1) {
            let r = join(&mut forest, s0, s1);
            size[r as usize] = size[s0 as usize] + size[s1 as usize];
            cint[r as usize] = cost;
        }
    }
    for &(a, b) in &edges {
        let (s0, s1) = (find_root(&mut forest, a), find_root(&mut forest, b));
        if s0 == s1 {
            continue;
        }
        if (size[s0 as usize] as usize) < p.min_size || (size[s1 as usize] as usize) < p.min_size {
            let r = join(&mut forest, s0, s1);
            size[r as usize] = size[s0 as usize] + size[s1 as usize];
        }
    }
    // Roots are each component's smallest pixel index, so numbering roots in increasing order
    // numbers components by first pixel.
    let mut label_of_root = vec![u32::MAX; n];
    let mut labels = vec![0u32; n];
    let mut next = 0u32;
    for i in 0..n {
        let r = find_root(&mut forest, i as u32) as usize;
        if label_of_root[r] == u32::MAX {
            label_of_root[r] = next;
            next += 1;
        }
        labels[i] = label_of_root[r];
    }
    LabelMap {
        height: h,
        width: w,
        labels,
        count: next as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_flat_halves_make_two_segments() {
        let (h, w) = (20, 30);
        let mut img = vec![0u8; h * w * 3];
        for y in 0..h {
            for x in 15..w {
                img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let seg = felzenszwalb(
            &img,
            (h, w, 3),
            &FelzenszwalbParams {
                scale: 1.0,
                sigma: 0.0,
                min_size: 1,
            },
        );
        assert_eq!(seg.count, 2);
        assert_eq!(seg.labels[0], 0);
        assert_eq!(seg.labels[w - 1], 1);
        // min_size merges everything into one component.
        let seg = felzenszwalb(
            &img,
            (h, w, 3),
            &FelzenszwalbParams {
                scale: 1.0,
                sigma: 0.0,
                min_size: 400,
            },
        );
        assert_eq!(seg.count, 1);
    }

    #[test]
    fn radix_order_is_a_stable_sort() {
        let costs = [0.5, 0.0, 0.25, 0.5, 1e-300, 0.25, 3.0];
        let order = sorted_order(&costs);
        assert_eq!(order, vec![1, 4, 2, 5, 0, 3, 6]);
    }
}
