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
//! 4. connectivity: components in raster order, 4-connected, searched breadth-first and cut
//!    off at `max_size` pixels, relabelled from `start_label`; a component under `min_size`
//!    pixels joins the last labelled neighbour met during its search.
//!
//! The labels are scikit-image's (up to f32 near-ties, `docs/deviations.md`); the speed comes
//! from doing the same arithmetic in a better order: sRGB linearisation by a 256-entry table,
//! Lab's cube root by a branch-free Halley iteration (within 2 ulps of `cbrt`), and the
//! assignment chunk by chunk (16 pixels of a row, the lanes of one AVX-512 register): every
//! centre whose window reaches the chunk is tried in index order (so ties resolve as before)
//! while the chunk's best distances and labels stay in registers.

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

/// Pixels a chunk: one AVX-512 register of f32 lanes.
const LANES: usize = 16;
/// Rows that share one list of the centres reaching each chunk.
const BAND: usize = 8;

/// A centre as one chunk sees it: its colour, where its `d_x²` table starts for this chunk, its
/// index.
#[derive(Clone, Copy)]
struct Candidate {
    colour: [f32; 3],
    table: u32,
    index: u32,
}

/// Give each pixel of a chunk its nearest candidate; whether any pixel was reached. Candidates
/// come in centre-index order and strictly nearer wins, so ties keep the earlier centre, as
/// scikit-image does. The distance is scikit-image's, in its order,
/// `(d_y² + d_x²)·w_xy + ((Δ₀² + Δ₁²) + Δ₂²)`, but in f32 (scikit-image: f64): twice the SIMD
/// lanes, at the cost of deciding some near-ties differently (`docs/deviations.md`). Outside a
/// centre's window `d_y²` (from `dy2`, by centre) or `d_x²` (from `tables`) is +∞, which never
/// wins.
fn assign_chunk_portable(
    f: [&[f32; LANES]; 3],
    candidates: &[Candidate],
    tables: &[f32],
    dy2: &[f32],
    spatial: f32,
    nearest: &mut [u32; LANES],
) -> bool {
    // Half a chunk at a time: eight lanes of state fit the registers of SSE, AVX2 and NEON.
    const HALF: usize = LANES / 2;
    let mut reached = false;
    for h in [0, HALF] {
        let mut best = [f32::MAX; HALF];
        let mut who: [u32; HALF] = nearest[h..h + HALF].try_into().unwrap();
        let f: [&[f32]; 3] = f.map(|f| &f[h..h + HALF]);
        for c in candidates {
            let dy = dy2[c.index as usize];
            if dy == f32::INFINITY {
                continue;
            }
            let t = c.table as usize + h;
            let dx2 = &tables[t..t + HALF];
            // Selects rather than branches, so the lanes vectorise.
            for l in 0..HALF {
                let (d0, d1, d2) = (
                    f[0][l] - c.colour[0],
                    f[1][l] - c.colour[1],
                    f[2][l] - c.colour[2],
                );
                let d = (dy + dx2[l]) * spatial + (d0 * d0 + d1 * d1 + d2 * d2);
                let better = best[l] > d;
                best[l] = if better { d } else { best[l] };
                who[l] = if better { c.index } else { who[l] };
            }
        }
        nearest[h..h + HALF].copy_from_slice(&who);
        reached |= best.iter().any(|&d| d < f32::MAX);
    }
    reached
}

/// [`assign_chunk_portable`] in AVX-512 registers: the same operations in the same order, so
/// the same labels, with the best distance and centre kept in registers across the candidates
/// (a pixel-centre pair costs no memory traffic).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn assign_chunk_avx512(
    f: [&[f32; LANES]; 3],
    candidates: &[Candidate],
    tables: &[f32],
    dy2: &[f32],
    spatial: f32,
    nearest: &mut [u32; LANES],
) -> bool {
    use std::arch::x86_64::*;
    // SAFETY (loads and stores): each pointer is to 16 in-bounds f32 or u32, by the arrays'
    // types or by slicing `tables`.
    let [f0, f1, f2] = f.map(|p| unsafe { _mm512_loadu_ps(p.as_ptr()) });
    let spatial = _mm512_set1_ps(spatial);
    let mut best = _mm512_set1_ps(f32::MAX);
    let mut who = unsafe { _mm512_loadu_si512(nearest.as_ptr().cast()) };
    for c in candidates {
        let dy = dy2[c.index as usize];
        if dy == f32::INFINITY {
            continue;
        }
        let t = c.table as usize;
        let dx2 = unsafe { _mm512_loadu_ps(tables[t..t + LANES].as_ptr()) };
        let d0 = _mm512_sub_ps(f0, _mm512_set1_ps(c.colour[0]));
        let d1 = _mm512_sub_ps(f1, _mm512_set1_ps(c.colour[1]));
        let d2 = _mm512_sub_ps(f2, _mm512_set1_ps(c.colour[2]));
        let xy = _mm512_mul_ps(_mm512_add_ps(_mm512_set1_ps(dy), dx2), spatial);
        let lab = _mm512_add_ps(
            _mm512_add_ps(_mm512_mul_ps(d0, d0), _mm512_mul_ps(d1, d1)),
            _mm512_mul_ps(d2, d2),
        );
        let d = _mm512_add_ps(xy, lab);
        let better = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d, best);
        best = _mm512_mask_mov_ps(best, better, d);
        who = _mm512_mask_set1_epi32(who, better, c.index as i32);
    }
    unsafe { _mm512_storeu_si512(nearest.as_mut_ptr().cast(), who) };
    _mm512_cmp_ps_mask::<_CMP_LT_OQ>(best, _mm512_set1_ps(f32::MAX)) != 0
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

/// The assignment step's state for one image: f32 copies of the features in rows padded to
/// whole chunks (padding lanes lie outside every window), each centre's window and `d_x²`
/// table, and per band of rows the candidates of each chunk.
struct Assignment {
    h: usize,
    w: usize,
    stride: usize,
    steps: [usize; 2],
    feat: [Vec<f32>; 3],
    windows: Vec<(usize, usize, usize, usize)>,
    tables: Vec<f32>,
    table_at: Vec<usize>,
    per_chunk: Vec<Vec<Candidate>>,
    dy2: Vec<f32>,
}

impl Assignment {
    fn new(feat: &[Vec<f64>; 3], (h, w): (usize, usize), steps: [usize; 2], k: usize) -> Self {
        let chunks = w.div_ceil(LANES);
        let stride = chunks * LANES;
        let feat = std::array::from_fn(|c| {
            let mut v = vec![0f32; h * stride];
            for (dst, src) in v.chunks_exact_mut(stride).zip(feat[c].chunks_exact(w)) {
                dst[..w]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(d, &s)| *d = s as f32);
            }
            v
        });
        Self {
            h,
            w,
            stride,
            steps,
            feat,
            windows: vec![(0, 0, 0, 0); k],
            tables: Vec::new(),
            table_at: vec![0; k],
            per_chunk: vec![Vec::new(); chunks],
            dy2: vec![f32::INFINITY; BAND * k],
        }
    }

    /// One assignment round over `nearest` (rows of `stride`); whether any pixel was reached.
    fn pass(&mut self, centers: &[[f64; 5]], spatial: f32, nearest: &mut [u32]) -> bool {
        self.prepare(centers);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has the features the function was compiled for.
            return unsafe { self.bands_avx512(centers, spatial, nearest) };
        }
        self.bands(centers, spatial, nearest, assign_chunk_portable)
    }

    /// Each live centre's window, as scikit-image rounds it (±2 steps, clipped), and its `d_x²`
    /// over the whole chunks the window touches (+∞ outside the window).
    fn prepare(&mut self, centers: &[[f64; 5]]) {
        let ([sy, sx], h, w) = (self.steps.map(|s| s as f64), self.h as f64, self.w as f64);
        self.tables.clear();
        for (ci, c) in centers.iter().enumerate() {
            if c[0].is_nan() {
                self.windows[ci] = (0, 0, 0, 0);
                continue;
            }
            let (cy, cx) = (c[0], c[1]);
            let (x0, x1) = (
                (cx - 2.0 * sx).max(0.0) as usize,
                ((cx + 2.0 * sx + 1.0).min(w)) as usize,
            );
            self.windows[ci] = (
                (cy - 2.0 * sy).max(0.0) as usize,
                ((cy + 2.0 * sy + 1.0).min(h)) as usize,
                x0,
                x1,
            );
            self.table_at[ci] = self.tables.len();
            for x in (x0 / LANES * LANES)..x1.div_ceil(LANES) * LANES {
                self.tables.push(if (x0..x1).contains(&x) {
                    ((cx - x as f64) * (cx - x as f64)) as f32
                } else {
                    f32::INFINITY
                });
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn bands_avx512(
        &mut self,
        centers: &[[f64; 5]],
        spatial: f32,
        nearest: &mut [u32],
    ) -> bool {
        // SAFETY: this function runs only where AVX-512F is present.
        self.bands(centers, spatial, nearest, |f, c, t, d, s, n| unsafe {
            assign_chunk_avx512(f, c, t, d, s, n)
        })
    }

    /// The rows band by band: the candidates of each chunk (every centre whose window meets
    /// the band and the chunk, in index order), each row's `d_y²` by centre, then the kernel
    /// on every chunk.
    #[inline(always)]
    fn bands(
        &mut self,
        centers: &[[f64; 5]],
        spatial: f32,
        nearest: &mut [u32],
        kernel: impl Fn(
            [&[f32; LANES]; 3],
            &[Candidate],
            &[f32],
            &[f32],
            f32,
            &mut [u32; LANES],
        ) -> bool,
    ) -> bool {
        let (h, k, stride) = (self.h, centers.len(), self.stride);
        let mut reached = false;
        for band in (0..h).step_by(BAND) {
            let band_end = (band + BAND).min(h);
            self.per_chunk.iter_mut().for_each(Vec::clear);
            for (ci, c) in centers.iter().enumerate() {
                let (y0, y1, x0, x1) = self.windows[ci];
                if y0.max(band) >= y1.min(band_end) || x0 >= x1 {
                    continue;
                }
                let colour = [c[2] as f32, c[3] as f32, c[4] as f32];
                let first = x0 / LANES;
                let lists = self.per_chunk.iter_mut().enumerate();
                for (j, list) in lists.take(x1.div_ceil(LANES)).skip(first) {
                    list.push(Candidate {
                        colour,
                        table: (self.table_at[ci] + (j - first) * LANES) as u32,
                        index: ci as u32,
                    });
                }
            }
            for (r, y) in (band..band_end).enumerate() {
                for (ci, c) in centers.iter().enumerate() {
                    let (y0, y1, ..) = self.windows[ci];
                    self.dy2[r * k + ci] = if (y0..y1).contains(&y) {
                        ((c[0] - y as f64) * (c[0] - y as f64)) as f32
                    } else {
                        f32::INFINITY
                    };
                }
            }
            for y in band..band_end {
                let dy2 = &self.dy2[(y - band) * k..(y - band + 1) * k];
                let out = nearest[y * stride..(y + 1) * stride].chunks_exact_mut(LANES);
                for (j, (list, out)) in self.per_chunk.iter().zip(out).enumerate() {
                    let at = y * stride + j * LANES;
                    let f = [0, 1, 2].map(|c| self.feat[c][at..at + LANES].try_into().unwrap());
                    let out = out.try_into().unwrap();
                    reached |= kernel(f, list, &self.tables, dy2, spatial, out);
                }
            }
        }
        reached
    }
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
    let k = centers.len();
    let mut assignment = Assignment::new(&feat, (h, w), [step_y, step_x], k);
    let spatial = (1.0 / (step * step)) as f32;
    let stride = assignment.stride;
    let mut nearest = vec![0u32; h * stride];
    for _ in 0..p.max_num_iter {
        if !assignment.pass(&centers, spatial, &mut nearest) {
            break;
        }
        // Means in scikit-image's summation order (raster), a run of one label at a time. The
        // coordinate sums are sums of integers, exact in f64 in any order, so a run adds them
        // in closed form.
        let mut sums = vec![[0f64; 5]; k];
        let mut counts = vec![0usize; k];
        for y in 0..h {
            let row = y * w..(y + 1) * w;
            let (f0, f1, f2) = (
                &feat[0][row.clone()],
                &feat[1][row.clone()],
                &feat[2][row.clone()],
            );
            let labels = &nearest[y * stride..y * stride + w];
            let mut x = 0;
            while x < w {
                let label = labels[x] as usize;
                let mut s = sums[label];
                let start = x;
                while x < w && labels[x] as usize == label {
                    s[2] += f0[x];
                    s[3] += f1[x];
                    s[4] += f2[x];
                    x += 1;
                }
                let len = x - start;
                s[0] += (y * len) as f64;
                s[1] += ((start + x - 1) * len / 2) as f64;
                sums[label] = s;
                counts[label] += len;
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
    if !p.enforce_connectivity {
        let labels: Vec<u32> = nearest
            .chunks_exact(stride)
            .flat_map(|row| &row[..w])
            .copied()
            .collect();
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
    let max_size = (p.max_size_factor * segment_size) as usize;
    enforce_connectivity(&nearest, stride, (h, w), [min_size, max_size])
}

/// scikit-image's `_enforce_label_connectivity_cython` for a 2-D label map (rows of `stride`):
/// components in raster order, found breadth-first over 4-neighbours in the order +x, −x, +y,
/// −y and cut off at `max_size` pixels (the rest of the region starts a new component later);
/// a component under `min_size` pixels takes the label of the last already-labelled
/// neighbour its search met.
fn enforce_connectivity(
    labels: &[u32],
    stride: usize,
    (h, w): (usize, usize),
    [min_size, max_size]: [usize; 2],
) -> LabelMap {
    const UNSET: u32 = u32::MAX;
    // A one-pixel border of a label no pixel has (and never labelled itself) spares the search
    // its bounds checks: neighbours are ±1 and ±row.
    const BORDER: u32 = u32::MAX;
    let row = w + 2;
    let mut grid = vec![BORDER; (h + 2) * row];
    for y in 0..h {
        grid[(y + 1) * row + 1..(y + 1) * row + 1 + w]
            .copy_from_slice(&labels[y * stride..y * stride + w]);
    }
    let mut out = vec![UNSET; (h + 2) * row];
    let mut next = 0u32;
    let mut queue: Vec<u32> = Vec::new();
    for y0 in 1..=h {
        for start in y0 * row + 1..y0 * row + 1 + w {
            if out[start] != UNSET {
                continue;
            }
            let label = grid[start];
            let mut adjacent = next;
            out[start] = next;
            queue.clear();
            queue.push(start as u32);
            let mut visited = 0;
            'search: while visited < queue.len() && queue.len() < max_size {
                let i = queue[visited] as usize;
                visited += 1;
                // scikit-image's neighbour order: +x, −x, +y, −y.
                for j in [i + 1, i - 1, i + row, i - row] {
                    let o = out[j];
                    if grid[j] == label && o == UNSET {
                        out[j] = next;
                        queue.push(j as u32);
                        if queue.len() >= max_size {
                            break 'search;
                        }
                    } else if o != UNSET && o != next {
                        adjacent = o;
                    }
                }
            }
            if queue.len() < min_size {
                for &i in &queue {
                    out[i as usize] = adjacent;
                }
            } else {
                next += 1;
            }
        }
    }
    let labels = (1..=h)
        .flat_map(|y| out[y * row + 1..y * row + 1 + w].iter().copied())
        .collect();
    LabelMap {
        height: h,
        width: w,
        labels,
        count: (next as usize).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 kernel (where the processor has it) gives the portable kernel's labels and
    /// reach on random chunks, ties and out-of-window centres included.
    #[test]
    fn chunk_kernels_agree() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        for round in 0..200 {
            let f: [[f32; LANES]; 3] = std::array::from_fn(|_| {
                // Coarse values so that some distances tie exactly.
                std::array::from_fn(|_| (next() * 4.0).floor())
            });
            let k = 1 + round % 12;
            let dy2: Vec<f32> = (0..k)
                .map(|_| match next() {
                    v if v < 0.2 => f32::INFINITY,
                    v => (v * 8.0).floor(),
                })
                .collect();
            let mut tables = Vec::new();
            let candidates: Vec<Candidate> = (0..k)
                .map(|i| {
                    let table = tables.len() as u32;
                    tables.extend((0..LANES).map(|_| match next() {
                        v if v < 0.1 => f32::INFINITY,
                        v => (v * 8.0).floor(),
                    }));
                    Candidate {
                        colour: std::array::from_fn(|_| (next() * 4.0).floor()),
                        table,
                        index: i as u32,
                    }
                })
                .collect();
            let before: [u32; LANES] = std::array::from_fn(|l| 100 + l as u32);
            let fr = [&f[0], &f[1], &f[2]];
            let mut portable = before;
            let reached = assign_chunk_portable(fr, &candidates, &tables, &dy2, 0.5, &mut portable);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut fast = before;
                // SAFETY: the processor has AVX-512F.
                let fast_reached =
                    unsafe { assign_chunk_avx512(fr, &candidates, &tables, &dy2, 0.5, &mut fast) };
                assert_eq!((portable, reached), (fast, fast_reached), "round {round}");
            }
            // The kernel itself, by hand: the strictly nearest in-window candidate, earliest
            // on ties; unreached lanes keep their label.
            for l in 0..LANES {
                let mut want = (f32::MAX, before[l]);
                for c in &candidates {
                    let dx2 = tables[c.table as usize + l];
                    let dy = dy2[c.index as usize];
                    let (d0, d1, d2) = (
                        f[0][l] - c.colour[0],
                        f[1][l] - c.colour[1],
                        f[2][l] - c.colour[2],
                    );
                    let d = (dy + dx2) * 0.5 + (d0 * d0 + d1 * d1 + d2 * d2);
                    if d < want.0 {
                        want = (d, c.index);
                    }
                }
                assert_eq!(portable[l], want.1, "round {round} lane {l}");
            }
        }
    }

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

    /// scikit-image's connectivity pass by hand on one 4×4 region: searches stop at `max_size`
    /// pixels (the rest starts new components), and a component under `min_size` takes the
    /// label of the last labelled neighbour its search met.
    #[test]
    fn connectivity_cuts_at_max_size_and_merges_small() {
        let one_region = vec![7u32; 16];
        let cut = enforce_connectivity(&one_region, 4, (4, 4), [0, 5]);
        #[rustfmt::skip]
        let want = [0, 0, 0, 1,
                    0, 0, 1, 1,
                    2, 2, 1, 1,
                    2, 2, 2, 3];
        assert_eq!((cut.labels.as_slice(), cut.count), (&want[..], 4));
        let merged = enforce_connectivity(&one_region, 4, (4, 4), [2, 5]);
        assert_eq!(merged.labels[15], 1);
        assert_eq!(merged.count, 3);
        // Padded rows: the stride is honoured.
        let padded: Vec<u32> = (0..4).flat_map(|_| [7, 7, 7, 7, 9, 9]).collect();
        assert_eq!(
            enforce_connectivity(&padded, 6, (4, 4), [0, 5]).labels,
            want
        );
    }

    /// Images thinner than a chunk, or than a window, segment without panicking, every pixel
    /// labelled.
    #[test]
    fn tiny_images_segment() {
        for (h, w) in [(1, 1), (1, 17), (17, 1), (3, 3), (2, 33), (40, 15)] {
            let img: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
            let seg = slic(&img, (h, w), &SlicParams::default());
            assert_eq!(seg.labels.len(), h * w);
            assert!(
                seg.labels.iter().all(|&l| (l as usize) < seg.count),
                "{h}x{w}"
            );
        }
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
