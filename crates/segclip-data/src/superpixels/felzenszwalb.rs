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
        Self { scale: 224.0, sigma: 0.9, min_size: 224 }
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

/// Sort edge indices by their weight, stably: an LSD radix sort on the weights' bit patterns
/// (non-negative f64s order like their bits), skipping digits that are the same everywhere.
fn sorted_order(costs: &[f64]) -> Vec<u32> {
    let keys: Vec<u64> = costs.iter().map(|c| c.to_bits()).collect();
    let mut idx: Vec<u32> = (0..costs.len() as u32).collect();
    let mut tmp = vec![0u32; idx.len()];
    const BITS: u32 = 11;
    let mut shift = 0;
    while shift < 64 {
        let mut count = vec![0usize; 1 << BITS];
        for &k in &keys {
            count[((k >> shift) & ((1 << BITS) - 1)) as usize] += 1;
        }
        if count.iter().any(|&c| c == keys.len()) {
            shift += BITS;
            continue;
        }
        let mut sum = 0;
        for c in count.iter_mut() {
            let v = *c;
            *c = sum;
            sum += v;
        }
        for &i in &idx {
            let d = ((keys[i as usize] >> shift) & ((1 << BITS) - 1)) as usize;
            tmp[count[d]] = i;
            count[d] += 1;
        }
        std::mem::swap(&mut idx, &mut tmp);
        shift += BITS;
    }
    idx
}

/// Segment an interleaved u8 image (h, w, c) (any channel count ≥ 1).
pub fn felzenszwalb(pixels: &[u8], (h, w, c): (usize, usize, usize), p: &FelzenszwalbParams) -> LabelMap {
    assert_eq!(pixels.len(), h * w * c, "image buffer does not match its size");
    if h == 0 || w == 0 {
        return LabelMap { height: h, width: w, labels: vec![], count: 0 };
    }
    let scale = p.scale / 255.0;
    let planes: Vec<Vec<f64>> = (0..c)
        .map(|ch| {
            let mut plane: Vec<f64> = (0..h * w).map(|i| pixels[i * c + ch] as f64 / 255.0).collect();
            gaussian_plane(&mut plane, (h, w), p.sigma);
            plane
        })
        .collect();
    let dist = |a: usize, b: usize| -> f64 {
        let mut s = 0.0;
        for pl in &planes {
            let d = pl[a] - pl[b];
            s += d * d;
        }
        s.sqrt()
    };
    // Edges in scikit-image's order: right, down, down-right, up-right.
    let n_edges = h * (w - 1) + (h - 1) * w + 2 * (h - 1) * (w - 1);
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(n_edges);
    let mut costs: Vec<f64> = Vec::with_capacity(n_edges);
    for y in 0..h {
        for x in 0..w - 1 {
            let a = y * w + x;
            edges.push((a as u32 + 1, a as u32));
            costs.push(dist(a + 1, a));
        }
    }
    for y in 0..h - 1 {
        for x in 0..w {
            let a = y * w + x;
            edges.push(((a + w) as u32, a as u32));
            costs.push(dist(a + w, a));
        }
    }
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let a = y * w + x;
            edges.push(((a + w + 1) as u32, a as u32));
            costs.push(dist(a + w + 1, a));
        }
    }
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let (a, b) = (y * w + x + 1, (y + 1) * w + x);
            edges.push((a as u32, b as u32));
            costs.push(dist(a, b));
        }
    }
    let order = sorted_order(&costs);
    let n = h * w;
    let mut forest: Vec<u32> = (0..n as u32).collect();
    let mut size = vec![1usize; n];
    let mut cint = vec![0f64; n];
    let join = |forest: &mut [u32], a: u32, b: u32| -> u32 {
        let root = a.min(b);
        forest[a as usize] = root;
        forest[b as usize] = root;
        root
    };
    for &e in &order {
        let (a, b) = edges[e as usize];
        let (s0, s1) = (find_root(&mut forest, a), find_root(&mut forest, b));
        if s0 == s1 {
            continue;
        }
        let t0 = cint[s0 as usize] + scale / size[s0 as usize] as f64;
        let t1 = cint[s1 as usize] + scale / size[s1 as usize] as f64;
        let cost = costs[e as usize];
        if cost < t0.min(t1) {
            let r = join(&mut forest, s0, s1);
            size[r as usize] = size[s0 as usize] + size[s1 as usize];
            cint[r as usize] = cost;
        }
    }
    for &e in &order {
        let (a, b) = edges[e as usize];
        let (s0, s1) = (find_root(&mut forest, a), find_root(&mut forest, b));
        if s0 == s1 {
            continue;
        }
        if size[s0 as usize] < p.min_size || size[s1 as usize] < p.min_size {
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
    LabelMap { height: h, width: w, labels, count: next as usize }
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
        let seg = felzenszwalb(&img, (h, w, 3), &FelzenszwalbParams { scale: 1.0, sigma: 0.0, min_size: 1 });
        assert_eq!(seg.count, 2);
        assert_eq!(seg.labels[0], 0);
        assert_eq!(seg.labels[w - 1], 1);
        // min_size merges everything into one component.
        let seg = felzenszwalb(&img, (h, w, 3), &FelzenszwalbParams { scale: 1.0, sigma: 0.0, min_size: 400 });
        assert_eq!(seg.count, 1);
    }

    #[test]
    fn radix_order_is_a_stable_sort() {
        let costs = [0.5, 0.0, 0.25, 0.5, 1e-300, 0.25, 3.0];
        let order = sorted_order(&costs);
        assert_eq!(order, vec![1, 4, 2, 5, 0, 3, 6]);
    }
}
