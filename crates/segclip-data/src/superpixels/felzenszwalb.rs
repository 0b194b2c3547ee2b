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
//! - the edge keys `(f32 weight, id)` are computed eight lanes at a time and sorted by one
//!   radix pass on the key's top 12 bits (8 buckets an octave), then bucket by bucket while the
//!   bucket is in cache (two 10-bit passes); runs of equal f32 weights are then put in exact f64
//!   order;
//! - the first pass decides each merge on the f32 weights and the f32 weights of the edges that
//!   last grew each component; only when the two are closer than their rounding error does it
//!   recompute exact f64 weights (from the smoothed planes, with the same operations: the f64
//!   weights are never stored);
//! - components are joined by size (shallow trees) in a parent array apart from the roots'
//!   states; the labels do not depend on which pixel is a root, since they are numbered by
//!   first pixel;
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

/// `(key << 32 | id)` values in increasing order (for distinct ids: by key, ties by id). One
/// stable pass scatters by the key's top 12 bits (sign, exponent and 3 mantissa bits of an f32:
/// 8 buckets an octave), then each bucket, small enough to stay in cache, is sorted on the
/// key's low 20 bits: two stable 10-bit passes, or a comparison sort when it is short. One trip
/// through memory instead of three.
fn radix_sort(a: Vec<u64>, mut then: impl FnMut(&mut [u64])) -> Vec<u64> {
    const TOP: u32 = 12;
    const LOW: u32 = 10;
    let mut starts = vec![0usize; (1 << TOP) + 1];
    for &v in &a {
        starts[(v >> (64 - TOP)) as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut sorted = vec![0u64; a.len()];
    let mut next = starts.clone();
    for &v in &a {
        let d = (v >> (64 - TOP)) as usize;
        sorted[next[d]] = v;
        next[d] += 1;
    }
    let mut scratch = a;
    let mut count = [0usize; 1 << LOW];
    for bucket in starts.windows(2) {
        let (lo, hi) = (bucket[0], bucket[1]);
        let (out, tmp) = (&mut sorted[lo..hi], &mut scratch[lo..hi]);
        if out.len() < 256 {
            out.sort_unstable();
            then(out);
            continue;
        }
        // Low digit into `tmp`, high digit back into `out`.
        for (shift, from_out) in [(32, true), (32 + LOW, false)] {
            let (src, dst): (&[u64], &mut [u64]) = if from_out {
                (&*out, &mut *tmp)
            } else {
                (&*tmp, &mut *out)
            };
            count.fill(0);
            for &v in src {
                count[((v >> shift) as usize) & ((1 << LOW) - 1)] += 1;
            }
            let mut sum = 0;
            for c in count.iter_mut() {
                let v = *c;
                *c = sum;
                sum += v;
            }
            for &v in src {
                let d = ((v >> shift) as usize) & ((1 << LOW) - 1);
                dst[count[d]] = v;
                count[d] += 1;
            }
        }
        then(out);
    }
    sorted
}

/// Sort `(f32 weight bits << 32 | id)` into exact `(f64 weight, id)` order: rounding to f32
/// never reverses an order, so only runs of equal f32 keys (short) need the exact weights.
fn sort_edges(keys: Vec<u64>, exact: impl Fn(u32) -> f64) -> Vec<u64> {
    // Equal keys share a bucket, so each bucket's runs are put in order while it is in cache.
    radix_sort(keys, |bucket| {
        let mut i = 0;
        while i < bucket.len() {
            // Ties are rare: skip 16 keys at a time while no two neighbours share a key.
            if let Some(block) = bucket.get(i..i + 17) {
                let tie = (0..16).fold(false, |t, l| t | (block[l] >> 32 == block[l + 1] >> 32));
                if !tie {
                    i += 16;
                    continue;
                }
            }
            let mut j = i + 1;
            while j < bucket.len() && bucket[j] >> 32 == bucket[i] >> 32 {
                j += 1;
            }
            // Stable insertion sort by the exact weight.
            let run = &mut bucket[i..j];
            for m in 1..run.len() {
                let mut q = m;
                while q > 0 && exact(run[q - 1] as u32) > exact(run[q] as u32) {
                    run.swap(q - 1, q);
                    q -= 1;
                }
            }
            i = j;
        }
    })
}

/// A component's state, read at its root only.
#[derive(Clone, Copy)]
struct Component {
    size: u32,
    /// `int(C) + k/|C|` from the f32 weight of the edge that last grew C, rounded to f32.
    threshold: f32,
    /// The edge that last grew C, for the exact threshold.
    last: u32,
}

/// The root of `n`'s tree, halving the path on the way. The parents are an array of their
/// own (4 bytes a pixel, so a VOC-size forest stays in L2) apart from the roots' states.
fn root(parent: &mut [u32], mut n: u32) -> u32 {
    loop {
        let p = parent[n as usize];
        if p == n {
            return n;
        }
        let g = parent[p as usize];
        parent[n as usize] = g;
        n = g;
    }
}

/// `(f32 weight bits << 32 | id)` of every edge, in edge order (kind by kind, raster order
/// within a kind); `offsets` are each kind's endpoints from its anchor pixel.
fn edge_keys(planes: &[Vec<f64>], (h, w): (usize, usize), offsets: &[(u32, u32); 4]) -> Vec<u64> {
    #[inline(always)]
    fn body(planes: &[Vec<f64>], (h, w): (usize, usize), offsets: &[(u32, u32); 4]) -> Vec<u64> {
        let mut keys: Vec<u64> = Vec::with_capacity(4 * h * w);
        let mut acc = vec![0f64; w];
        for (kind, &(da, db)) in offsets.iter().enumerate() {
            let (rows, len) = match kind {
                0 => (h, w - 1),
                1 => (h - 1, w),
                _ => (h - 1, w - 1),
            };
            let (da, db) = (da as usize, db as usize);
            for y in 0..rows {
                let acc = &mut acc[..len];
                acc.fill(0.0);
                for pl in planes {
                    let pa = &pl[y * w + da..y * w + da + len];
                    let pb = &pl[y * w + db..y * w + db + len];
                    for ((v, &x), &z) in acc.iter_mut().zip(pa).zip(pb) {
                        let d = x - z;
                        *v += d * d;
                    }
                }
                let id0 = ((kind as u64) << KIND_SHIFT) | (y * w) as u64;
                keys.extend(
                    acc.iter()
                        .zip(id0..)
                        .map(|(v, id)| ((v.sqrt() as f32).to_bits() as u64) << 32 | id),
                );
            }
        }
        keys
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn body_avx512(
        planes: &[Vec<f64>],
        hw: (usize, usize),
        o: &[(u32, u32); 4],
    ) -> Vec<u64> {
        body(planes, hw, o)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has the features the function was compiled for.
        return unsafe { body_avx512(planes, (h, w), offsets) };
    }
    body(planes, (h, w), offsets)
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
    let unit: Vec<f64> = (0..=255u8).map(|v| v as f64 / 255.0).collect();
    let planes: Vec<Vec<f64>> = (0..c)
        .map(|ch| {
            let mut plane: Vec<f64> = (0..n).map(|i| unit[pixels[i * c + ch] as usize]).collect();
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
    let keys = edge_keys(&planes, (h, w), &offsets);
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

    let mut parent: Vec<u32> = (0..n as u32).collect();
    let mut comp = vec![
        Component {
            size: 1,
            threshold: scale as f32,
            last: 0,
        };
        n
    ];
    let mut rejected: Vec<u32> = Vec::new();
    for &v in &sorted {
        let id = v as u32;
        let (a, b) = endpoints(id);
        let (s0, s1) = (root(&mut parent, a), root(&mut parent, b));
        if s0 == s1 {
            continue;
        }
        let (n0, n1) = (comp[s0 as usize], comp[s1 as usize]);
        let t = n0.threshold.min(n1.threshold) as f64;
        let approx = f32::from_bits((v >> 32) as u32) as f64;
        let margin = (approx + t) * f64::powi(2.0, -22) + f64::powi(2.0, -130);
        let merge = if approx + margin < t {
            true
        } else if approx - margin >= t {
            false
        } else {
            let exact = |c: &Component| {
                if c.size == 1 {
                    scale
                } else {
                    cost_of(c.last) + scale / c.size as f64
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
            parent[o as usize] = r;
            comp[r as usize] = Component {
                size,
                threshold: (approx + scale / size as f64) as f32,
                last: id,
            };
        } else {
            rejected.push(id);
        }
    }
    for &id in &rejected {
        let (a, b) = endpoints(id);
        let (s0, s1) = (root(&mut parent, a), root(&mut parent, b));
        if s0 == s1 {
            continue;
        }
        let (z0, z1) = (comp[s0 as usize].size, comp[s1 as usize].size);
        if (z0 as usize) < p.min_size || (z1 as usize) < p.min_size {
            let (r, o) = if z0 >= z1 { (s0, s1) } else { (s1, s0) };
            parent[o as usize] = r;
            comp[r as usize].size = z0 + z1;
        }
    }
    // Components numbered by first pixel in raster order.
    let mut label_of_root = vec![u32::MAX; n];
    let mut labels = vec![0u32; n];
    let mut next = 0u32;
    for (i, label) in labels.iter_mut().enumerate() {
        let r = root(&mut parent, i as u32) as usize;
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

    /// Buckets big enough for the two in-cache passes, skewed keys included, come out as a
    /// comparison sort orders them, and every bucket is handed over sorted.
    #[test]
    fn radix_sort_matches_a_comparison_sort() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let keys: Vec<u64> = (0..40_000u64)
            .map(|id| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Half the weights in one octave, so one bucket holds thousands.
                let w = if state.is_multiple_of(2) {
                    0.5 + (state >> 40) as f32 / (1u64 << 25) as f32
                } else {
                    (state >> 40) as f32 / (1u64 << 20) as f32
                };
                (w.to_bits() as u64) << 32 | id
            })
            .collect();
        let mut want = keys.clone();
        want.sort_unstable();
        let mut handed = 0;
        let got = radix_sort(keys, |bucket| {
            assert!(bucket.windows(2).all(|p| p[0] < p[1]));
            handed += bucket.len();
        });
        assert_eq!(got, want);
        assert_eq!(handed, got.len());
    }

    /// One-pixel-wide and tiny images segment without panicking, every pixel labelled.
    #[test]
    fn tiny_images_segment() {
        for (h, w) in [(1, 1), (1, 2), (2, 1), (1, 40), (40, 1), (3, 3)] {
            let img: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
            let seg = felzenszwalb(&img, (h, w, 3), &FelzenszwalbParams::default());
            assert_eq!(seg.labels.len(), h * w);
            assert!(
                seg.labels.iter().all(|&l| (l as usize) < seg.count),
                "{h}x{w}"
            );
        }
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
