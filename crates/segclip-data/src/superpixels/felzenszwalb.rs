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
//!
//! How it is fast and still exact (the maps equal scikit-image's, ids included):
//! - an edge is named by a 32-bit id, its kind in the top two bits and its anchor pixel below, so
//!   ids grow in edge order and endpoints are an addition away;
//! - the edges are radix-sorted on `(f32 weight, id)`; runs of equal f32 weights are then put in
//!   exact f64 order;
//! - the first pass decides each merge on the f32 weights and the f32 weights of the edges that
//!   last grew each component; only when the two are closer than their rounding error does it
//!   recompute exact f64 weights (from the smoothed planes, with the same operations: the f64
//!   weights are never stored);
//! - components are joined by size (shallow trees); the labels do not depend on which pixel is a
//!   root, since they are numbered by first pixel;
//! - an edge skipped or merged in the first pass joins one component for ever, so the second
//!   pass visits only the edges the first pass rejected.

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

/// Bits of an edge id below its kind.
const KIND_SHIFT: u32 = 30;
const ANCHOR: u32 = (1 << KIND_SHIFT) - 1;

/// `(key << 32 | id)` values sorted by key, ties in input order: LSD radix, three stable
/// 11-bit passes (a pass whose digit is constant is skipped).
fn radix_sort(mut a: Vec<u64>) -> Vec<u64> {
    const BITS: u32 = 11;
    const B: usize = 1 << BITS;
    let mut counts = vec![[0usize; B]; 3];
    for &v in &a {
        let k = (v >> 32) as usize;
        for (pass, count) in counts.iter_mut().enumerate() {
            count[(k >> (pass as u32 * BITS)) & (B - 1)] += 1;
        }
    }
    let mut b = vec![0u64; a.len()];
    for (pass, count) in counts.iter_mut().enumerate() {
        if count.contains(&a.len()) {
            continue;
        }
        let shift = 32 + pass as u32 * BITS;
        let mut sum = 0;
        for c in count.iter_mut() {
            let v = *c;
            *c = sum;
            sum += v;
        }
        for &v in &a {
            let d = ((v >> shift) as usize) & (B - 1);
            b[count[d]] = v;
            count[d] += 1;
        }
        std::mem::swap(&mut a, &mut b);
    }
    a
}

/// Sort `(f32 weight bits << 32 | id)` into exact `(f64 weight, id)` order: rounding to f32
/// never reverses an order, so only runs of equal f32 keys (short) need the exact weights.
fn sort_edges(keys: Vec<u64>, exact: impl Fn(u32) -> f64) -> Vec<u64> {
    let mut sorted = radix_sort(keys);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] >> 32 == sorted[i] >> 32 {
            j += 1;
        }
        // Stable insertion sort by the exact weight.
        let run = &mut sorted[i..j];
        for m in 1..run.len() {
            let mut q = m;
            while q > 0 && exact(run[q - 1] as u32) > exact(run[q] as u32) {
                run.swap(q - 1, q);
                q -= 1;
            }
        }
        i = j;
    }
    sorted
}

/// Union–find state, one 16-byte node a pixel; all but `parent` are read at roots only.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Node {
    parent: u32,
    size: u32,
    /// `int(C) + k/|C|` from the f32 weight of the edge that last grew C, rounded to f32.
    threshold: f32,
    /// The edge that last grew C, for the exact threshold.
    last: u32,
}

fn root(nodes: &mut [Node], mut n: u32) -> u32 {
    let mut r = n;
    while nodes[r as usize].parent != r {
        r = nodes[r as usize].parent;
    }
    while nodes[n as usize].parent != r {
        let next = nodes[n as usize].parent;
        nodes[n as usize].parent = r;
        n = next;
    }
    r
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
    let n = h * w;
    assert!(n <= ANCHOR as usize, "image of {n} pixels is too large");
    let scale = p.scale / 255.0;
    let planes: Vec<Vec<f64>> = (0..c)
        .map(|ch| {
            let mut plane: Vec<f64> = (0..n).map(|i| pixels[i * c + ch] as f64 / 255.0).collect();
            gaussian_plane(&mut plane, (h, w), p.sigma);
            plane
        })
        .collect();
    // Endpoint offsets from the anchor per kind: right, down, down-right, up-right.
    let offsets = [
        (1u32, 0u32),
        (w as u32, 0),
        (w as u32 + 1, 0),
        (1, w as u32),
    ];
    let endpoints = |id: u32| {
        let (da, db) = offsets[(id >> KIND_SHIFT) as usize];
        let anchor = id & ANCHOR;
        (anchor + da, anchor + db)
    };
    // Keys (f32 weight, id) in edge order.
    let mut keys: Vec<u64> = Vec::with_capacity(4 * n);
    let mut acc = vec![0f64; w];
    for (kind, &(da, db)) in offsets.iter().enumerate() {
        let (rows, len) = if kind == 1 {
            (h - 1, w)
        } else if kind == 0 {
            (h, w - 1)
        } else {
            (h - 1, w - 1)
        };
        let (da, db) = (da as usize, db as usize);
        for y in 0..rows {
            let acc = &mut acc[..len];
            acc.fill(0.0);
            for pl in &planes {
                let pa = &pl[y * w + da..y * w + da + len];
                let pb = &pl[y * w + db..y * w + db + len];
                for ((v, &x), &z) in acc.iter_mut().zip(pa).zip(pb) {
                    let d = x - z;
                    *v += d * d;
                }
            }
            let id0 = ((kind as u64) << KIND_SHIFT) | (y * w) as u64;
            for (x, v) in acc.iter().enumerate() {
                let cost = v.sqrt();
                keys.push(((cost as f32).to_bits() as u64) << 32 | (id0 + x as u64));
            }
        }
    }
    // The exact weight, recomputed with the same operations in the same order.
    let cost_of = |id: u32| {
        let (a, b) = endpoints(id);
        let mut v = 0f64;
        for pl in &planes {
            let d = pl[a as usize] - pl[b as usize];
            v += d * d;
        }
        v.sqrt()
    };
    let sorted = sort_edges(keys, cost_of);

    let mut nodes: Vec<Node> = (0..n as u32)
        .map(|i| Node {
            parent: i,
            size: 1,
            threshold: scale as f32,
            last: 0,
        })
        .collect();
    let mut rejected: Vec<u32> = Vec::new();
    for &v in &sorted {
        let id = v as u32;
        let (a, b) = endpoints(id);
        let (s0, s1) = (root(&mut nodes, a), root(&mut nodes, b));
        if s0 == s1 {
            continue;
        }
        let (n0, n1) = (nodes[s0 as usize], nodes[s1 as usize]);
        let t = n0.threshold.min(n1.threshold) as f64;
        // The f32 weights are within 2⁻²⁴ relative (2⁻¹⁴⁹ absolute when subnormal) of the
        // exact ones, the f32 thresholds within 2·2⁻²⁴ (weight and rounding); the margin is
        // 4·2⁻²⁴ of the larger.
        let approx = f32::from_bits((v >> 32) as u32) as f64;
        let margin = (approx + t) * f64::powi(2.0, -22) + f64::powi(2.0, -130);
        let merge = if approx + margin < t {
            true
        } else if approx - margin >= t {
            false
        } else {
            let exact = |node: &Node| {
                if node.size == 1 {
                    scale
                } else {
                    cost_of(node.last) + scale / node.size as f64
                }
            };
            cost_of(id) < exact(&n0).min(exact(&n1))
        };
        if merge {
            let (r, o) = if n0.size >= n1.size {
                (s0, s1)
            } else {
                (s1, s0)
            };
            let size = n0.size + n1.size;
            nodes[o as usize].parent = r;
            nodes[r as usize].size = size;
            nodes[r as usize].threshold = (approx + scale / size as f64) as f32;
            nodes[r as usize].last = id;
        } else {
            rejected.push(id);
        }
    }
    for &id in &rejected {
        let (a, b) = endpoints(id);
        let (s0, s1) = (root(&mut nodes, a), root(&mut nodes, b));
        if s0 == s1 {
            continue;
        }
        let (z0, z1) = (nodes[s0 as usize].size, nodes[s1 as usize].size);
        if (z0 as usize) < p.min_size || (z1 as usize) < p.min_size {
            let (r, o) = if z0 >= z1 { (s0, s1) } else { (s1, s0) };
            nodes[o as usize].parent = r;
            nodes[r as usize].size = z0 + z1;
        }
    }
    // Components numbered by first pixel in raster order.
    let mut label_of_root = vec![u32::MAX; n];
    let mut labels = vec![0u32; n];
    let mut next = 0u32;
    for (i, label) in labels.iter_mut().enumerate() {
        let r = root(&mut nodes, i as u32) as usize;
        if label_of_root[r] == u32::MAX {
            label_of_root[r] = next;
            next += 1;
        }
        *label = label_of_root[r];
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
        // 0.1 and 0.1 + 1e-12 share an f32 key; the exact weight orders them.
        let costs = [0.5, 0.0, 0.25, 0.5, 1e-300, 0.25, 3.0, 0.1 + 1e-12, 0.1];
        let keys = costs
            .iter()
            .enumerate()
            .map(|(i, &c)| ((c as f32).to_bits() as u64) << 32 | i as u64)
            .collect();
        let order: Vec<u32> = sort_edges(keys, |i| costs[i as usize])
            .iter()
            .map(|&v| v as u32)
            .collect();
        assert_eq!(order, vec![1, 4, 8, 7, 2, 5, 0, 3, 6]);
    }
}
