//! SLIC superpixels as scikit-image's `slic` computes them (defaults `n_segments` 100,
//! `compactness` 10, `max_num_iter` 10, `sigma` 0, Lab conversion, connectivity enforcement with
//! `min_size_factor` 0.5 and `max_size_factor` 3):
//!
//! 1. pixels as floats in [0, 1], rescaled by the image's own min/max; RGB → CIE Lab (D65, 2°);
//!    Gaussian smoothing of σ per channel when σ > 0;
//! 2. seeds on `regular_grid` (step `round(√(H·W/n))`, offset half a step), colours zero;
//!    colours scaled by `1/compactness`, spatial distances by `1/step²`;
//! 3. up to `max_num_iter` rounds: every pixel within ±2·step of a centre takes the nearest
//!    centre by `d_xy²/step² + d_lab²` (strictly nearer wins; ties keep the earlier centre); centres
//!    become the means of their pixels; stop early when nothing changes;
//! 4. connectivity: components in raster order, 4-connected, relabelled from `start_label`; a
//!    component under `min_size` pixels joins the last labelled neighbour met during its search.
//!
//! The labels are scikit-image's; the speed comes from doing the same arithmetic in a better
//! order: sRGB linearisation by a 256-entry table, Lab's cube root by a branch-free Halley
//! iteration (within 2 ulps of `cbrt`), and the assignment in bands of rows that stay in cache
//! while every centre reaching them is tried (in index order, so ties resolve as before).

use super::gaussian::gaussian_plane;
use super::LabelMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlicParams {
    pub n_segments: usize,
    pub compactness: f64,
    pub max_num_iter: usize,
    pub sigma: f64,
    pub enforce_connectivity: bool,
    pub min_size_factor: f64,
    pub max_size_factor: f64,
    /// Convert RGB to Lab first (scikit-image's default for 3-channel images).
    pub convert2lab: bool,
}

impl Default for SlicParams {
    fn default() -> Self {
        Self {
            n_segments: 100,
            compactness: 10.0,
            max_num_iter: 10,
            sigma: 0.0,
            enforce_connectivity: true,
            min_size_factor: 0.5,
            max_size_factor: 3.0,
            convert2lab: true,
        }
    }
}

/// Rows searched together by every centre whose window reaches them.
const BAND: usize = 16;

/// One row of a centre's window.
struct Row<'a> {
    f: [&'a [f32]; 3],
    dx2: &'a [f32],
    dist: &'a mut [f32],
    nearest: &'a mut [u32],
}

/// Give the row's pixels to centre `ci` where it is strictly nearer; whether any changed. The
/// distance is scikit-image's, in its order, `(dy + dx²)·w_xy + ((Δ₀² + Δ₁²) + Δ₂²)`, but in
/// f32 (scikit-image: f64): twice the SIMD lanes and half the memory traffic, at the cost of
/// deciding some near-ties differently (`docs/deviations.md`).
#[inline(always)]
fn assign_row_body(r: Row, dy: f32, spatial: f32, c: [f32; 3], ci: u32) -> bool {
    let mut any = false;
    let n = r.dist.len();
    let (f0, f1, f2, dx2) = (&r.f[0][..n], &r.f[1][..n], &r.f[2][..n], &r.dx2[..n]);
    let nearest = &mut r.nearest[..n];
    for x in 0..n {
        let (d0, d1, d2) = (f0[x] - c[0], f1[x] - c[1], f2[x] - c[2]);
        let d = (dy + dx2[x]) * spatial + (d0 * d0 + d1 * d1 + d2 * d2);
        let better = r.dist[x] > d;
        r.dist[x] = if better { d } else { r.dist[x] };
        nearest[x] = if better { ci } else { nearest[x] };
        any |= better;
    }
    any
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn assign_row_avx512(r: Row, dy: f32, spatial: f32, c: [f32; 3], ci: u32) -> bool {
    assign_row_body(r, dy, spatial, c, ci)
}

fn assign_row(r: Row, dy: f32, spatial: f32, c: [f32; 3], ci: u32) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has the features the function was compiled for.
        return unsafe { assign_row_avx512(r, dy, spatial, c, ci) };
    }
    assign_row_body(r, dy, spatial, c, ci)
}

/// sRGB companding undone (scikit-image's `_prepare_colorarray` then `rgb2xyz`).
fn linear(v: f64) -> f64 {
    if v > 0.04045 {
        ((v + 0.055) / 1.055).powf(2.4)
    } else {
        v / 12.92
    }
}

/// Cube root of `x ≥ 0`: a bit-level first guess (within ~5%), two Halley steps and a Newton
/// step; within two ulps of `f64::cbrt` and free of branches, so loops over it vectorise.
#[inline(always)]
fn cbrt(x: f64) -> f64 {
    let mut y = f64::from_bits(x.to_bits() / 3 + 0x2A9F_7893_782D_A1CE);
    for _ in 0..2 {
        let y3 = y * y * y;
        y *= (y3 + 2.0 * x) / (2.0 * y3 + x);
    }
    y - (y * y * y - x) / (3.0 * y * y)
}

/// The Lab companding of XYZ/white (CIE 1976).
#[inline(always)]
fn lab_f(t: f64) -> f64 {
    let (root, line) = (cbrt(t), 7.787 * t + 16.0 / 116.0);
    if t > 0.008856 {
        root
    } else {
        line
    }
}

/// Linear RGB → CIE Lab (D65, 2° white), as scikit-image's `xyz2lab(rgb2xyz(·))`.
#[inline(always)]
fn lab_of_linear([r, g, b]: [f64; 3]) -> [f64; 3] {
    let x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.95047;
    let y = 0.212671 * r + 0.715160 * g + 0.072169 * b;
    let z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.08883;
    let (fx, fy, fz) = (lab_f(x), lab_f(y), lab_f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// scikit-image `rgb2lab` of one pixel in [0, 1] (sRGB → XYZ → Lab, D65 2° white).
pub fn rgb_to_lab([r, g, b]: [f64; 3]) -> [f64; 3] {
    lab_of_linear([linear(r), linear(g), linear(b)])
}

/// Linear RGB planes → Lab planes, in place.
fn to_lab(planes: [&mut [f64]; 3]) {
    #[inline(always)]
    fn body([r, g, b]: [&mut [f64]; 3]) {
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            [*r, *g, *b] = lab_of_linear([*r, *g, *b]);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn body_avx512(planes: [&mut [f64]; 3]) {
        body(planes)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has the features the function was compiled for.
        return unsafe { body_avx512(planes) };
    }
    body(planes)
}

/// Planar features of an interleaved RGB u8 image: each value rescaled by the image's own
/// min/max to [0, 1] (scikit-image's `img_as_float` then rescale), in Lab if asked. There are
/// only 256 input levels, so rescaling and linearisation are table lookups.
fn features(pixels: &[u8], lab: bool) -> [Vec<f64>; 3] {
    let (lo, hi) = pixels
        .iter()
        .fold((255u8, 0u8), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = (lo as f64 / 255.0, hi as f64 / 255.0);
    let table: Vec<f64> = (0..=255u8)
        .map(|v| {
            let x = v as f64 / 255.0 - lo;
            let x = if hi != lo { x / (hi - lo) } else { x };
            if lab {
                linear(x)
            } else {
                x
            }
        })
        .collect();
    let n = pixels.len() / 3;
    let mut feat = [vec![0f64; n], vec![0f64; n], vec![0f64; n]];
    let [f0, f1, f2] = &mut feat;
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        f0[i] = table[px[0] as usize];
        f1[i] = table[px[1] as usize];
        f2[i] = table[px[2] as usize];
    }
    if lab {
        to_lab([f0, f1, f2]);
    }
    feat
}

/// scikit-image's `regular_grid` for a (1, h, w) volume: per axis (start, step).
fn regular_grid(h: usize, w: usize, n: usize) -> [(usize, usize); 2] {
    let dims = [1usize, h, w];
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by_key(|&i| dims[i]);
    let sorted: Vec<f64> = order.iter().map(|&i| dims[i] as f64).collect();
    let mut space = (h * w) as f64;
    if space <= n as f64 {
        return [(0, 1), (0, 1)];
    }
    let mut steps = [(space / n as f64).powf(1.0 / 3.0); 3];
    if sorted.iter().zip(&steps).any(|(d, s)| d < s) {
        for dim in 0..3 {
            steps[dim] = sorted[dim];
            space = sorted[dim + 1..].iter().product();
            let rest = (space / n as f64).powf(1.0 / (3 - dim - 1) as f64);
            for s in steps.iter_mut().skip(dim + 1) {
                *s = rest;
            }
            if sorted.iter().zip(&steps).all(|(d, s)| d >= s) {
                break;
            }
        }
    }
    let mut per_axis = [(0usize, 1usize); 3];
    for (k, &axis) in order.iter().enumerate() {
        per_axis[axis] = (
            (steps[k] / 2.0).floor() as usize,
            (steps[k].round() as usize).max(1),
        );
    }
    [per_axis[1], per_axis[2]]
}

/// SLIC on an interleaved RGB u8 image (h, w, 3); labels start at 0.
pub fn slic(pixels: &[u8], (h, w): (usize, usize), p: &SlicParams) -> LabelMap {
    assert_eq!(
        pixels.len(),
        h * w * 3,
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
    // Planar features, scaled by 1/compactness.
    let mut feat = features(pixels, p.convert2lab);
    for plane in feat.iter_mut() {
        gaussian_plane(plane, (h, w), p.sigma);
        let ratio = 1.0 / p.compactness;
        plane.iter_mut().for_each(|v| *v *= ratio);
    }
    let [(sy0, step_y), (sx0, step_x)] = regular_grid(h, w, p.n_segments);
    let mut centers: Vec<[f64; 5]> = Vec::new();
    for y in (sy0..h).step_by(step_y) {
        for x in (sx0..w).step_by(step_x) {
            centers.push([y as f64, x as f64, 0.0, 0.0, 0.0]);
        }
    }
    let step = step_y.max(step_x) as f64;
    let spatial = (1.0 / (step * step)) as f32;
    let k = centers.len();
    let mut nearest = vec![0u32; n];
    let mut distance = vec![f32::MAX; n];
    let mut dx2 = vec![0f32; w];
    // The assignment reads f32 copies; the means are taken over the f64 features.
    let feat32: [Vec<f32>; 3] =
        std::array::from_fn(|c| feat[c].iter().map(|&v| v as f32).collect());
    // Windows as scikit-image rounds them: ±2 steps, clipped.
    let window = |c: &[f64; 5]| {
        let (cy, cx) = (c[0], c[1]);
        (
            (cy - 2.0 * step_y as f64).max(0.0) as usize,
            ((cy + 2.0 * step_y as f64 + 1.0).min(h as f64)) as usize,
            (cx - 2.0 * step_x as f64).max(0.0) as usize,
            ((cx + 2.0 * step_x as f64 + 1.0).min(w as f64)) as usize,
        )
    };
    for _ in 0..p.max_num_iter {
        let mut change = false;
        distance.fill(f32::MAX);
        // Band by band, so a band's pixels stay in cache while every centre reaching it is
        // tried. Each pixel still sees the centres in index order, so strictly-nearer-wins
        // leaves it with the earliest of its nearest centres, as scikit-image does.
        for band in (0..h).step_by(BAND) {
            let band_end = (band + BAND).min(h);
            for (ci, c) in centers.iter().enumerate() {
                if c[0].is_nan() {
                    continue;
                }
                let (y0, y1, x0, x1) = window(c);
                let (y0, y1) = (y0.max(band), y1.min(band_end));
                if y0 >= y1 {
                    continue;
                }
                let (cy, cx) = (c[0], c[1]);
                for (x, d) in dx2.iter_mut().enumerate().take(x1).skip(x0) {
                    *d = ((cx - x as f64) * (cx - x as f64)) as f32;
                }
                let colour = [c[2] as f32, c[3] as f32, c[4] as f32];
                for y in y0..y1 {
                    let dy = ((cy - y as f64) * (cy - y as f64)) as f32;
                    let (a, b) = (y * w + x0, y * w + x1);
                    let row = Row {
                        f: [&feat32[0][a..b], &feat32[1][a..b], &feat32[2][a..b]],
                        dx2: &dx2[x0..x1],
                        dist: &mut distance[a..b],
                        nearest: &mut nearest[a..b],
                    };
                    change |= assign_row(row, dy, spatial, colour, ci as u32);
                }
            }
        }
        if !change {
            break;
        }
        // Means in scikit-image's summation order (raster), a run of one label at a time.
        let mut sums = vec![[0f64; 5]; k];
        let mut counts = vec![0usize; k];
        for y in 0..h {
            let row = y * w..(y + 1) * w;
            let (f0, f1, f2) = (
                &feat[0][row.clone()],
                &feat[1][row.clone()],
                &feat[2][row.clone()],
            );
            let labels = &nearest[row];
            let mut x = 0;
            while x < w {
                let label = labels[x] as usize;
                let mut s = sums[label];
                let start = x;
                while x < w && labels[x] as usize == label {
                    s[0] += y as f64;
                    s[1] += x as f64;
                    s[2] += f0[x];
                    s[3] += f1[x];
                    s[4] += f2[x];
                    x += 1;
                }
                sums[label] = s;
                counts[label] += x - start;
            }
        }
        for ((c, s), &m) in centers.iter_mut().zip(&sums).zip(&counts) {
            // An empty cluster's mean is 0/0 in scikit-image; it then wins no pixel again.
            *c = if m == 0 {
                [f64::NAN; 5]
            } else {
                s.map(|v| v / m as f64)
            };
        }
    }
    let labels = nearest;
    if !p.enforce_connectivity {
        let count = labels.iter().max().map_or(0, |&m| m as usize + 1);
        return LabelMap {
            height: h,
            width: w,
            labels,
            count,
        };
    }
    let segment_size = n as f64 / k as f64;
    let min_size = (p.min_size_factor * segment_size) as usize;
    enforce_connectivity(&labels, (h, w), min_size)
}

/// scikit-image's `_enforce_label_connectivity_cython` for a 2-D label map.
fn enforce_connectivity(labels: &[u32], (h, w): (usize, usize), min_size: usize) -> LabelMap {
    let n = h * w;
    let mut out = vec![u32::MAX; n];
    let mut next = 0u32;
    let mut queue: Vec<usize> = Vec::new();
    for start in 0..n {
        if out[start] != u32::MAX {
            continue;
        }
        let label = labels[start];
        let mut adjacent = 0u32;
        out[start] = next;
        queue.clear();
        queue.push(start);
        let mut visited = 0;
        while visited < queue.len() {
            let i = queue[visited];
            let (y, x) = (i / w, i % w);
            // scikit-image's neighbour order: +x, −x, +y, −y.
            let nbrs = [
                (x + 1 < w).then(|| i + 1),
                (x > 0).then(|| i - 1),
                (y + 1 < h).then(|| i + w),
                (y > 0).then(|| i - w),
            ];
            for j in nbrs.into_iter().flatten() {
                if labels[j] == label && out[j] == u32::MAX {
                    out[j] = next;
                    queue.push(j);
                } else if out[j] != u32::MAX && out[j] != next {
                    adjacent = out[j];
                }
            }
            visited += 1;
        }
        if queue.len() < min_size {
            for &i in &queue {
                out[i] = adjacent;
            }
        } else {
            next += 1;
        }
    }
    let count = (next as usize).max(1);
    LabelMap {
        height: h,
        width: w,
        labels: out,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_primaries_matches_scikit_image() {
        // skimage.color.rgb2lab([[[1, 0, 0]]]) and white.
        let red = rgb_to_lab([1.0, 0.0, 0.0]);
        let want = [53.2405879437449, 80.0923082256922, 67.2027510444287];
        for (a, b) in red.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{red:?}");
        }
        let white = rgb_to_lab([1.0, 1.0, 1.0]);
        // rgb2lab([[[1, 1, 1]]]) = [100.0, -0.0024549378620508655, 0.004653421154054982]
        assert!(
            (white[0] - 100.0).abs() < 1e-9 && (white[1] + 0.0024549378620508655).abs() < 1e-12,
            "{white:?}"
        );
    }

    #[test]
    fn fast_cube_root_is_within_two_ulps() {
        let mut worst = 0u64;
        for i in 0..200_000 {
            let x = 0.008 + 1.2 * i as f64 / 200_000.0;
            let (a, b) = (cbrt(x).to_bits(), x.cbrt().to_bits());
            worst = worst.max(a.abs_diff(b));
        }
        assert!(worst <= 2, "{worst} ulps");
    }

    #[test]
    fn grid_follows_regular_grid() {
        // 400x600, 100 segments: step round(sqrt(2400)) = 49, offset 24.
        assert_eq!(regular_grid(400, 600, 100), [(24, 49), (24, 49)]);
    }

    #[test]
    fn stripes_become_stripes() {
        let (h, w) = (40, 60);
        let mut img = vec![0u8; h * w * 3];
        for y in 0..h {
            for x in 0..w {
                let v = if x < 30 { [250, 10, 10] } else { [10, 10, 250] };
                img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&v);
            }
        }
        let seg = slic(
            &img,
            (h, w),
            &SlicParams {
                n_segments: 4,
                ..Default::default()
            },
        );
        // No segment straddles the colour edge.
        for y in 0..h {
            assert_ne!(seg.labels[y * w + 29], seg.labels[y * w + 30]);
        }
        assert!(seg.count >= 2);
    }
}
