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
//! The labels are scikit-image's up to near-ties (`docs/deviations.md`); the speed comes from
//! the same mathematics in cheaper arithmetic: sRGB linearisation by a 256-entry table, Lab's
//! cube root without a division (within 2 ulps of `cbrt`); the assignment chunk by chunk (16
//! pixels of a row, the lanes of one AVX-512 register, four rows at once) in f32 with the
//! distance expanded as `d_xy² + |c|² − 2f·c` (one add and three fused multiply-adds a
//! candidate), every centre whose window reaches the chunk tried in index order (so ties resolve
//! as before) while the best distances and labels stay in registers; the means from exact
//! fixed-point sums, accumulated without a branch per pixel.

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
/// Rows of a chunk assigned together: independent chains of "best so far" that the processor
/// overlaps (one chunk alone waits on each comparison's latency).
const ROWS: usize = 4;

/// A centre as one chunk sees it: its colour times −2, where its `d_x²·w_xy` table starts for
/// this chunk, its index.
#[derive(Clone, Copy)]
struct Candidate {
    minus2c: [f32; 3],
    table: u32,
    index: u32,
}

/// Give each pixel of a chunk its nearest candidate; whether any pixel was reached. Candidates
/// come in centre-index order and strictly nearer wins, so ties keep the earlier centre, as
/// scikit-image does. scikit-image's distance is `d_xy²·w_xy + |f − c|²`; this kernel ranks the
/// candidates by that distance less the pixel's own `|f|²`, the same for every candidate:
/// `(d_x²·w_xy + (d_y²·w_xy + |c|²)) − 2 f·c`, one add and three fused multiply-adds in f32
/// (scikit-image: eleven operations in f64). Only near-ties can be decided differently
/// (`docs/deviations.md`). Outside a centre's window the row term (from `row_terms`, by centre)
/// or `d_x²·w_xy` (from `tables`) is +∞, which never wins.
#[inline(always)]
fn assign_chunk_portable(
    f: [&[f32; LANES]; 3],
    candidates: &[Candidate],
    tables: &[f32],
    row_terms: &[f32],
    nearest: &mut [u32; LANES],
) -> bool {
    // Half a chunk at a time: eight lanes of state fit the registers of SSE, AVX2 and NEON.
    const HALF: usize = LANES / 2;
    let mut reached = false;
    for h in [0, HALF] {
        let mut best = [f32::INFINITY; HALF];
        let mut who: [u32; HALF] = nearest[h..h + HALF].try_into().unwrap();
        let f: [&[f32]; 3] = f.map(|f| &f[h..h + HALF]);
        for c in candidates {
            let row = row_terms[c.index as usize];
            if row == f32::INFINITY {
                continue;
            }
            let t = c.table as usize + h;
            let dx2 = &tables[t..t + HALF];
            // Selects rather than branches, so the lanes vectorise.
            for l in 0..HALF {
                let d = f[0][l].mul_add(c.minus2c[0], dx2[l] + row);
                let d = f[1][l].mul_add(c.minus2c[1], d);
                let d = f[2][l].mul_add(c.minus2c[2], d);
                let better = best[l] > d;
                best[l] = if better { d } else { best[l] };
                who[l] = if better { c.index } else { who[l] };
            }
        }
        nearest[h..h + HALF].copy_from_slice(&who);
        reached |= best.iter().any(|&d| d < f32::INFINITY);
    }
    reached
}

/// One chunk in `ROWS` consecutive rows: row `r`'s lanes start at `at + r·stride` in the
/// feature planes and the labels.
struct Block<'a> {
    feat: [&'a [f32]; 3],
    nearest: &'a mut [u32],
    at: usize,
    stride: usize,
}

impl Block<'_> {
    /// Whether every row's lanes are in bounds (the kernels' one check).
    fn fits(&self) -> bool {
        let end = self.at + (ROWS - 1) * self.stride + LANES;
        self.feat.iter().all(|p| p.len() >= end) && self.nearest.len() >= end
    }
}

/// [`assign_chunk_portable`] on each row of a block; `row_terms` holds `ROWS` rows of one term
/// per centre.
#[inline(always)]
fn assign_block_portable(
    block: Block,
    candidates: &[Candidate],
    tables: &[f32],
    row_terms: &[f32],
) -> bool {
    let k = row_terms.len() / ROWS;
    let mut reached = false;
    for r in 0..ROWS {
        let at = block.at + r * block.stride;
        let f = block.feat.map(|p| p[at..at + LANES].try_into().unwrap());
        let out = (&mut block.nearest[at..at + LANES]).try_into().unwrap();
        let terms = &row_terms[r * k..(r + 1) * k];
        reached |= assign_chunk_portable(f, candidates, tables, terms, out);
    }
    reached
}

/// [`assign_block_portable`] in AVX-512 registers: the same operations in the same order, so
/// the same labels, with each row's best distance and centre kept in registers across the
/// candidates (a pixel-centre pair costs no memory traffic) and the candidate's `d_x²·w_xy`
/// and colour loaded once for all rows. A candidate outside a row's window costs that row an
/// addition of +∞ rather than a branch.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn assign_block_avx512(
    block: Block,
    candidates: &[Candidate],
    tables: &[f32],
    row_terms: &[f32],
) -> bool {
    use std::arch::x86_64::*;
    assert!(block.fits(), "SLIC block out of bounds");
    let k = row_terms.len() / ROWS;
    let mut f = [[_mm512_setzero_ps(); 3]; ROWS];
    let mut best = [_mm512_set1_ps(f32::INFINITY); ROWS];
    let mut who = [_mm512_setzero_si512(); ROWS];
    for r in 0..ROWS {
        let at = block.at + r * block.stride;
        for (c, plane) in block.feat.iter().enumerate() {
            // SAFETY: in bounds by `fits`.
            f[r][c] = unsafe { _mm512_loadu_ps(plane.as_ptr().add(at)) };
        }
        // SAFETY: in bounds by `fits`.
        who[r] = unsafe { _mm512_loadu_si512(block.nearest.as_ptr().add(at).cast()) };
    }
    for c in candidates {
        let t = c.table as usize;
        let dx2 = unsafe { _mm512_loadu_ps(tables[t..t + LANES].as_ptr()) };
        let (m0, m1, m2) = (
            _mm512_set1_ps(c.minus2c[0]),
            _mm512_set1_ps(c.minus2c[1]),
            _mm512_set1_ps(c.minus2c[2]),
        );
        let index = _mm512_set1_epi32(c.index as i32);
        let terms = &row_terms[c.index as usize..];
        for r in 0..ROWS {
            let d = _mm512_add_ps(dx2, _mm512_set1_ps(terms[r * k]));
            let d = _mm512_fmadd_ps(f[r][0], m0, d);
            let d = _mm512_fmadd_ps(f[r][1], m1, d);
            let d = _mm512_fmadd_ps(f[r][2], m2, d);
            let better = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d, best[r]);
            best[r] = _mm512_mask_mov_ps(best[r], better, d);
            who[r] = _mm512_mask_mov_epi32(who[r], better, index);
        }
    }
    let mut reached = 0;
    for r in 0..ROWS {
        let at = block.at + r * block.stride;
        // SAFETY: in bounds by `fits`.
        unsafe { _mm512_storeu_si512(block.nearest.as_mut_ptr().add(at).cast(), who[r]) };
        reached |= _mm512_cmp_ps_mask::<_CMP_LT_OQ>(best[r], _mm512_set1_ps(f32::INFINITY));
    }
    reached != 0
}

/// sRGB companding undone (scikit-image's `_prepare_colorarray` then `rgb2xyz`).
fn linear(v: f64) -> f64 {
    if v > 0.04045 {
        ((v + 0.055) / 1.055).powf(2.4)
    } else {
        v / 12.92
    }
}

/// Cube root of `x > 0` without a division (divisions are the slow vector instructions): the
/// inverse cube root `r` from a bit-level first guess (within ~4 %) and four Newton steps
/// `r ← r·(4/3 − (x/3)·r³)`, then `c = x·r²` and one Newton step for `c` whose `1/(3c²)` is
/// `r²/3`; within two ulps of `f64::cbrt` and free of branches, so loops over it vectorise.
#[inline(always)]
fn cbrt(x: f64) -> f64 {
    // The top half of the bits divided by three: a 32×32-bit multiply, which vector
    // instructions have (a 64-bit division they have not).
    let top = ((x.to_bits() >> 32) * 0xAAAA_AAAB) >> 33;
    let mut r = f64::from_bits(0x553E_F0FF_289D_D796 - (top << 32));
    let third = x * (1.0 / 3.0);
    for _ in 0..4 {
        r *= (-third * (r * r * r)) + 4.0 / 3.0;
    }
    let r2 = r * r;
    let c = x * r2;
    c - (c * c * c - x) * (r2 * (1.0 / 3.0))
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

/// The features of an interleaved RGB u8 image, a row at a time: each value rescaled by the
/// image's own min/max to [0, 1] (scikit-image's `img_as_float` then rescale), in Lab if asked.
/// There are only 256 input levels, so rescaling and linearisation are table lookups.
struct Features {
    table: Vec<f64>,
    lab: bool,
}

impl Features {
    fn new(pixels: &[u8], lab: bool) -> Self {
        let (lo, hi) = pixels
            .iter()
            .fold((255u8, 0u8), |(a, b), &v| (a.min(v), b.max(v)));
        let (lo, hi) = (lo as f64 / 255.0, hi as f64 / 255.0);
        let table = (0..=255u8)
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
        Self { table, lab }
    }

    /// One row of interleaved pixels into three planar rows.
    fn row(&self, pixels: &[u8], [f0, f1, f2]: [&mut [f64]; 3]) {
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            f0[i] = self.table[px[0] as usize];
            f1[i] = self.table[px[1] as usize];
            f2[i] = self.table[px[2] as usize];
        }
        if self.lab {
            to_lab([f0, f1, f2]);
        }
    }

    /// The whole image as three planes.
    fn planes(&self, pixels: &[u8], (h, w): (usize, usize)) -> [Vec<f64>; 3] {
        let mut feat = [0; 3].map(|_| vec![0f64; h * w]);
        let [f0, f1, f2] = &mut feat;
        let rows = f0.chunks_exact_mut(w).zip(f1.chunks_exact_mut(w));
        for (((r0, r1), r2), px) in rows
            .zip(f2.chunks_exact_mut(w))
            .zip(pixels.chunks_exact(3 * w))
        {
            self.row(px, [r0, r1, r2]);
        }
        feat
    }
}

/// The features as the assignment reads them: f32, less a fixed shift to about the middle of
/// their range (which changes no distance and halves the magnitudes the kernel's expanded form
/// cancels), in rows of `stride` (whole chunks) and a height of whole bands; padding lies outside
/// every window.
struct Planes {
    feat: [Vec<f32>; 3],
    stride: usize,
    shift: [f64; 3],
}

/// The largest magnitude of a Lab coordinate of an sRGB colour (b* reaches −107.9).
const LAB_BOUND: f64 = 128.0;

/// Scale the features by `1/compactness` (scikit-image's order: after smoothing) and write both
/// forms the rounds read in one pass: the assignment's [`Planes`] and the update's fixed-point
/// records `[q₀, q₁, q₂, x]`, with their quantum. The quantum comes from the features' bound
/// (Lab of sRGB, or [0, 1]), not from a pass over them.
fn split_features(
    (h, w): (usize, usize),
    lab: bool,
    compactness: f64,
    mut row: impl FnMut(usize, [&mut [f64]; 3]),
) -> (Planes, Vec<[i32; 4]>, f64) {
    let ratio = 1.0 / compactness;
    let (bound, middle) = if lab {
        (LAB_BOUND, [50.0, 0.0, 0.0])
    } else {
        (1.0, [0.5; 3])
    };
    let shift = middle.map(|m| m * ratio);
    // Every |q| under 2³⁰; an out-of-range value (not a colour's) would saturate, not wrap.
    let e = (30.0 - (bound * ratio.abs()).log2())
        .floor()
        .clamp(-1000.0, 1000.0) as i32;
    let scale = 2f64.powi(e);
    let stride = w.div_ceil(LANES) * LANES;
    let rows = h.div_ceil(BAND) * BAND;
    let mut planes = [0; 3].map(|_| vec![0f32; rows * stride]);
    let mut records = Vec::with_capacity(h * w);
    let mut bufs = [0; 3].map(|_| vec![0f64; w]);
    let mut fixed = [0; 3].map(|_| vec![0i32; w]);
    for y in 0..h {
        let [b0, b1, b2] = &mut bufs;
        row(y, [b0, b1, b2]);
        let dst = y * stride..y * stride + w;
        let [p0, p1, p2] = &mut planes;
        let [q0, q1, q2] = &mut fixed;
        split_row(
            &bufs,
            [ratio, scale],
            shift,
            [&mut p0[dst.clone()], &mut p1[dst.clone()], &mut p2[dst]],
            [q0, q1, q2],
        );
        records.extend((0..w).map(|x| [fixed[0][x], fixed[1][x], fixed[2][x], x as i32]));
    }
    let planes = Planes {
        feat: planes,
        stride,
        shift,
    };
    (planes, records, 2f64.powi(-e))
}

/// One row of features, scaled by `ratio`, into the assignment's f32 (less `shift`) and the
/// update's fixed point (times `scale`, rounded half away from zero).
fn split_row(
    f: &[Vec<f64>; 3],
    [ratio, scale]: [f64; 2],
    shift: [f64; 3],
    planes: [&mut [f32]; 3],
    fixed: [&mut [i32]; 3],
) {
    #[inline(always)]
    fn body(
        f: &[Vec<f64>; 3],
        [ratio, scale]: [f64; 2],
        shift: [f64; 3],
        planes: [&mut [f32]; 3],
        fixed: [&mut [i32]; 3],
    ) {
        for (((f, shift), plane), fixed) in f.iter().zip(shift).zip(planes).zip(fixed) {
            for ((&v, p), q) in f.iter().zip(plane.iter_mut()).zip(fixed.iter_mut()) {
                let v = v * ratio;
                *p = (v - shift) as f32;
                // Clamped (NaN too: `max` returns the number, where `clamp` would keep the
                // NaN) so that the unchecked conversion, which vectorises where `as` does not,
                // is in range.
                #[allow(clippy::manual_clamp)]
                let t = (v * scale + 0.5f64.copysign(v))
                    .max(-2147483648.0)
                    .min(2147483647.0);
                // SAFETY: `t` is finite and within i32's range.
                *q = unsafe { t.to_int_unchecked::<i32>() };
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    unsafe fn body_avx512(
        f: &[Vec<f64>; 3],
        rs: [f64; 2],
        shift: [f64; 3],
        planes: [&mut [f32]; 3],
        fixed: [&mut [i32]; 3],
    ) {
        body(f, rs, shift, planes, fixed)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: the processor has the features the function was compiled for.
        return unsafe { body_avx512(f, [ratio, scale], shift, planes, fixed) };
    }
    body(f, [ratio, scale], shift, planes, fixed)
}

/// Rows whose sums the centre update accumulates side by side, each into its own table: the
/// additions into one label's sums then form independent chains the processor overlaps.
const STREAMS: usize = 4;

/// The centre update: every centre becomes the mean `(y, x, colour)` of its pixels.
///
/// Each pixel is a record `[q₀, q₁, q₂, x]` (its features in fixed point, `v ≈ q · quantum`);
/// its label's sums `[Σq₀, Σq₁, Σq₂, Σx, Σy, n]` grow by the record, its row and one. The sums are
/// integers, exact in any order, so rows add side by side, without a branch per pixel (runs of
/// one label are short, so the branches of run-by-run summing were mispredicted), into
/// `STREAMS` tables summed at the end. The quantum is a power of two with every `|q|` under
/// 2³⁰: for Lab features 2⁻²⁶, below an f32 ulp of the values; scikit-image sums f64 in raster
/// order, so means can differ in the last bits of an f32 and decide near-ties differently.
struct Update {
    w: usize,
    h: usize,
    records: Vec<[i32; 4]>,
    quantum: f64,
    tables: Vec<[i64; 8]>,
}

impl Update {
    fn new(records: Vec<[i32; 4]>, quantum: f64, (h, w): (usize, usize), k: usize) -> Self {
        Self {
            w,
            h,
            records,
            quantum,
            tables: vec![[0; 8]; STREAMS * k],
        }
    }

    /// Every centre's new mean from the labels `nearest` (rows of `stride`); a centre without
    /// pixels becomes NaN (scikit-image's 0/0), which wins no pixel again.
    fn means(&mut self, nearest: &[u32], stride: usize, centers: &mut [[f64; 5]]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has the features the function was compiled for.
            unsafe { self.accumulate_avx512(nearest, stride) };
        } else {
            self.accumulate(nearest, stride);
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.accumulate(nearest, stride);
        let k = centers.len();
        for (ci, c) in centers.iter_mut().enumerate() {
            let mut s = [0i64; 8];
            for table in self.tables.chunks_exact(k) {
                s.iter_mut().zip(&table[ci]).for_each(|(s, v)| *s += v);
            }
            let n = s[5] as f64;
            *c = if s[5] == 0 {
                [f64::NAN; 5]
            } else {
                [
                    s[4] as f64 / n,
                    s[3] as f64 / n,
                    s[0] as f64 * self.quantum / n,
                    s[1] as f64 * self.quantum / n,
                    s[2] as f64 * self.quantum / n,
                ]
            };
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate_avx512(&mut self, nearest: &[u32], stride: usize) {
        use std::arch::x86_64::*;
        let (w, h) = (self.w, self.h);
        let k = self.tables.len() / STREAMS;
        self.tables.iter_mut().for_each(|t| *t = [0; 8]);
        assert!(nearest.len() >= h * stride && self.records.len() >= h * w);
        let tables = self.tables.as_mut_ptr();
        let mut y = 0;
        while y + STREAMS <= h {
            // Per stream: its table, its row's labels and records, and the lanes [y, 1] that
            // every pixel of the row adds after its record.
            let labels: [&[u32]; STREAMS] =
                std::array::from_fn(|r| &nearest[(y + r) * stride..(y + r) * stride + w]);
            let records = self.records[y * w..].as_ptr();
            let mut rows = [_mm512_setzero_si512(); STREAMS];
            for (r, row) in rows.iter_mut().enumerate() {
                let lanes = _mm256_setr_epi64x((y + r) as i64, 1, 0, 0);
                *row = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), lanes);
            }
            // The rows advance together, a pixel of each in turn: indices, not iterators.
            #[allow(clippy::needless_range_loop)]
            for x in 0..w {
                for r in 0..STREAMS {
                    let label = labels[r][x] as usize;
                    assert!(label < k, "SLIC label out of range");
                    // SAFETY: the record is in bounds (asserted above), the label's sums are in
                    // its stream's table (label < k).
                    unsafe {
                        let q = _mm_loadu_si128(records.add(r * w + x).cast());
                        let v = _mm512_inserti64x4::<0>(rows[r], _mm256_cvtepi32_epi64(q));
                        let sums = tables.add(r * k + label).cast::<__m512i>();
                        _mm512_storeu_si512(sums, _mm512_add_epi64(_mm512_loadu_si512(sums), v));
                    }
                }
            }
            y += STREAMS;
        }
        self.accumulate_rows(nearest, stride, y);
    }

    /// The sums of every label, `STREAMS` rows side by side (the last rows one by one).
    fn accumulate(&mut self, nearest: &[u32], stride: usize) {
        let (w, h) = (self.w, self.h);
        let k = self.tables.len() / STREAMS;
        self.tables.iter_mut().for_each(|t| *t = [0; 8]);
        let mut y = 0;
        while y + STREAMS <= h {
            let (mut tables, records) = (self.tables.chunks_exact_mut(k), &self.records);
            let tables: [&mut [[i64; 8]]; STREAMS] =
                std::array::from_fn(|_| tables.next().unwrap());
            let labels: [&[u32]; STREAMS] =
                std::array::from_fn(|r| &nearest[(y + r) * stride..(y + r) * stride + w]);
            let recs: [&[[i32; 4]]; STREAMS] =
                std::array::from_fn(|r| &records[(y + r) * w..(y + r + 1) * w]);
            for x in 0..w {
                for r in 0..STREAMS {
                    add_pixel(&mut tables[r][labels[r][x] as usize], recs[r][x], y + r);
                }
            }
            y += STREAMS;
        }
        self.accumulate_rows(nearest, stride, y);
    }

    /// Rows `from..h` one by one into the first table.
    fn accumulate_rows(&mut self, nearest: &[u32], stride: usize, from: usize) {
        let w = self.w;
        for y in from..self.h {
            let labels = &nearest[y * stride..y * stride + w];
            for (x, &label) in labels.iter().enumerate() {
                add_pixel(&mut self.tables[label as usize], self.records[y * w + x], y);
            }
        }
    }
}

/// One pixel into its label's sums `[Σq₀, Σq₁, Σq₂, Σx, Σy, n, 0, 0]`.
#[inline(always)]
fn add_pixel(sums: &mut [i64; 8], record: [i32; 4], y: usize) {
    let [q0, q1, q2, x] = record.map(i64::from);
    let v = [q0, q1, q2, x, y as i64, 1, 0, 0];
    for (s, v) in sums.iter_mut().zip(v) {
        *s += v;
    }
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

/// The assignment step's state for one image: the features as [`Planes`], each centre's window
/// and `d_x²·w_xy` table, and per band of rows the candidates of each chunk.
struct Assignment {
    h: usize,
    w: usize,
    stride: usize,
    steps: [usize; 2],
    /// `w_xy = 1/step²`.
    spatial: f64,
    shift: [f64; 3],
    feat: [Vec<f32>; 3],
    windows: Vec<(usize, usize, usize, usize)>,
    tables: Vec<f32>,
    table_at: Vec<usize>,
    /// Each centre's colour as the kernel sees it: shifted, in f32, times −2; and its `|c|²`.
    colours: Vec<([f32; 3], f64)>,
    per_chunk: Vec<Vec<Candidate>>,
    row_terms: Vec<f32>,
}

impl Assignment {
    fn new(
        planes: Planes,
        (h, w): (usize, usize),
        steps: [usize; 2],
        spatial: f64,
        k: usize,
    ) -> Self {
        let Planes {
            feat,
            stride,
            shift,
        } = planes;
        let chunks = stride / LANES;
        Self {
            h,
            w,
            stride,
            steps,
            spatial,
            shift,
            feat,
            windows: vec![(0, 0, 0, 0); k],
            tables: Vec::new(),
            table_at: vec![0; k],
            colours: vec![([0.0; 3], 0.0); k],
            per_chunk: vec![Vec::new(); chunks],
            row_terms: vec![f32::INFINITY; BAND * k],
        }
    }

    /// Rows of `stride` that `nearest` must have: the height padded to whole bands.
    fn rows(&self) -> usize {
        self.h.div_ceil(BAND) * BAND
    }

    /// One assignment round over `nearest` (`rows()` rows of `stride`); whether any pixel was
    /// reached.
    fn pass(&mut self, centers: &[[f64; 5]], nearest: &mut [u32]) -> bool {
        self.prepare(centers);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the processor has the features the function was compiled for.
            return unsafe { self.bands_avx512(centers, nearest) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { self.bands_avx2(centers, nearest) };
        }
        // Elsewhere `mul_add` is an instruction (aarch64) or a correct, slower library call.
        self.bands(centers, nearest, assign_block_portable)
    }

    /// The portable kernel where fused multiply-adds are instructions but AVX-512 is absent.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bands_avx2(&mut self, centers: &[[f64; 5]], nearest: &mut [u32]) -> bool {
        self.bands(centers, nearest, assign_block_portable)
    }

    /// Each live centre's window, as scikit-image rounds it (±2 steps, clipped), its
    /// `d_x²·w_xy` over the whole chunks the window touches (+∞ outside the window), and its
    /// colour as the kernel sees it.
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
                    ((cx - x as f64) * (cx - x as f64) * self.spatial) as f32
                } else {
                    f32::INFINITY
                });
            }
            let colour: [f32; 3] = std::array::from_fn(|j| (c[2 + j] - self.shift[j]) as f32);
            let norm = colour.iter().map(|&v| v as f64 * v as f64).sum();
            self.colours[ci] = (colour.map(|v| -2.0 * v), norm);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn bands_avx512(&mut self, centers: &[[f64; 5]], nearest: &mut [u32]) -> bool {
        // SAFETY: this function runs only where AVX-512F and FMA are present.
        self.bands(centers, nearest, |b, c, t, r| unsafe {
            assign_block_avx512(b, c, t, r)
        })
    }

    /// The rows band by band: the candidates of each chunk (every centre whose window meets
    /// the band and the chunk, in index order), each row's `d_y²·w_xy + |c|²` by centre (+∞
    /// outside the window), then the kernel on every chunk, `ROWS` rows at a time.
    #[inline(always)]
    fn bands(
        &mut self,
        centers: &[[f64; 5]],
        nearest: &mut [u32],
        kernel: impl Fn(Block, &[Candidate], &[f32], &[f32]) -> bool,
    ) -> bool {
        let (k, stride) = (centers.len(), self.stride);
        let mut reached = false;
        for band in (0..self.rows()).step_by(BAND) {
            let band_end = band + BAND;
            self.per_chunk.iter_mut().for_each(Vec::clear);
            for ci in 0..k {
                let (y0, y1, x0, x1) = self.windows[ci];
                if y0.max(band) >= y1.min(band_end) || x0 >= x1 {
                    continue;
                }
                let minus2c = self.colours[ci].0;
                let first = x0 / LANES;
                let lists = self.per_chunk.iter_mut().enumerate();
                for (j, list) in lists.take(x1.div_ceil(LANES)).skip(first) {
                    list.push(Candidate {
                        minus2c,
                        table: (self.table_at[ci] + (j - first) * LANES) as u32,
                        index: ci as u32,
                    });
                }
            }
            for (r, y) in (band..band_end).enumerate() {
                for (ci, c) in centers.iter().enumerate() {
                    let (y0, y1, ..) = self.windows[ci];
                    self.row_terms[r * k + ci] = if (y0..y1).contains(&y) {
                        let dy = c[0] - y as f64;
                        (dy * dy * self.spatial + self.colours[ci].1) as f32
                    } else {
                        f32::INFINITY
                    };
                }
            }
            for y in (band..band_end).step_by(ROWS) {
                let row_terms = &self.row_terms[(y - band) * k..(y - band + ROWS) * k];
                for (j, list) in self.per_chunk.iter().enumerate() {
                    let block = Block {
                        feat: self.feat.each_ref().map(Vec::as_slice),
                        nearest: &mut *nearest,
                        at: y * stride + j * LANES,
                        stride,
                    };
                    reached |= kernel(block, list, &self.tables, row_terms);
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
    let [(sy0, step_y), (sx0, step_x)] = regular_grid(h, w, p.n_segments);
    let mut centers: Vec<[f64; 5]> = Vec::new();
    for y in (sy0..h).step_by(step_y) {
        for x in (sx0..w).step_by(step_x) {
            centers.push([y as f64, x as f64, 0.0, 0.0, 0.0]);
        }
    }
    let step = step_y.max(step_x) as f64;
    let k = centers.len();
    let spatial = 1.0 / (step * step);
    let features = Features::new(pixels, p.convert2lab);
    let (lab, compactness) = (p.convert2lab, p.compactness);
    let (planes, records, quantum) = if p.sigma > 0.0 {
        // Smoothing needs whole planes; without it, rows go straight to both forms.
        let mut feat = features.planes(pixels, (h, w));
        for plane in feat.iter_mut() {
            gaussian_plane(plane, (h, w), p.sigma);
        }
        split_features((h, w), lab, compactness, |y, out| {
            for (o, f) in out.into_iter().zip(&feat) {
                o.copy_from_slice(&f[y * w..(y + 1) * w]);
            }
        })
    } else {
        split_features((h, w), lab, compactness, |y, out| {
            features.row(&pixels[y * w * 3..(y + 1) * w * 3], out)
        })
    };
    let mut assignment = Assignment::new(planes, (h, w), [step_y, step_x], spatial, k);
    let stride = assignment.stride;
    let mut nearest = vec![0u32; assignment.rows() * stride];
    let mut update = Update::new(records, quantum, (h, w), k);
    for _ in 0..p.max_num_iter {
        if !assignment.pass(&centers, &mut nearest) {
            break;
        }
        update.means(&nearest, stride, &mut centers);
    }
    if !p.enforce_connectivity {
        let labels: Vec<u32> = nearest
            .chunks_exact(stride)
            .take(h)
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
    /// reach on random chunks of `ROWS` rows, ties and out-of-window centres included; and both
    /// pick the centre nearest by scikit-image's distance `d_xy²·w_xy + |f − c|²`, earliest on
    /// ties. Small integers keep every operation exact, so the ties are real ties.
    #[test]
    fn chunk_kernels_agree() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let spatial = 0.5;
        for round in 0..200 {
            let f: [[[f32; LANES]; 3]; ROWS] = std::array::from_fn(|_| {
                std::array::from_fn(|_| std::array::from_fn(|_| (next() * 4.0).floor()))
            });
            let k = 1 + round % 12;
            let colours: Vec<[f32; 3]> = (0..k)
                .map(|_| std::array::from_fn(|_| (next() * 4.0).floor()))
                .collect();
            let dy2: [Vec<f32>; ROWS] = std::array::from_fn(|_| {
                (0..k)
                    .map(|_| match next() {
                        v if v < 0.3 => f32::INFINITY,
                        v => (v * 8.0).floor(),
                    })
                    .collect()
            });
            let row_terms = dy2.each_ref().map(|dy2| {
                (0..k)
                    .map(|i| dy2[i] * spatial + colours[i].iter().map(|v| v * v).sum::<f32>())
                    .collect::<Vec<f32>>()
            });
            let mut dx2 = Vec::new();
            let candidates: Vec<Candidate> = (0..k)
                .map(|i| {
                    let table = dx2.len() as u32;
                    dx2.extend((0..LANES).map(|_| match next() {
                        v if v < 0.1 => f32::INFINITY,
                        v => (v * 8.0).floor(),
                    }));
                    Candidate {
                        minus2c: colours[i].map(|v| -2.0 * v),
                        table,
                        index: i as u32,
                    }
                })
                .collect();
            let tables: Vec<f32> = dx2.iter().map(|v| v * spatial).collect();
            let before: [[u32; LANES]; ROWS] =
                std::array::from_fn(|r| std::array::from_fn(|l| 100 + (r * LANES + l) as u32));
            // Planes of ROWS rows, the stride one chunk.
            let planes: [Vec<f32>; 3] =
                std::array::from_fn(|c| f.iter().flat_map(|row| row[c]).collect());
            let flat_terms: Vec<f32> = row_terms.concat();
            let run = |kernel: &dyn Fn(Block) -> bool| {
                let mut labels: Vec<u32> = before.concat();
                let block = Block {
                    feat: planes.each_ref().map(Vec::as_slice),
                    nearest: &mut labels,
                    at: 0,
                    stride: LANES,
                };
                let reached = kernel(block);
                let rows: [[u32; LANES]; ROWS] =
                    std::array::from_fn(|r| labels[r * LANES..(r + 1) * LANES].try_into().unwrap());
                (rows, reached)
            };
            let (portable, reached) =
                run(&|b| assign_block_portable(b, &candidates, &tables, &flat_terms));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the processor has AVX-512F and FMA.
                let fast =
                    run(&|b| unsafe { assign_block_avx512(b, &candidates, &tables, &flat_terms) });
                assert_eq!((portable, reached), fast, "round {round}");
            }
            // By hand, scikit-image's distance: the strictly nearest in-window candidate,
            // earliest on ties; unreached lanes keep their label.
            let mut want_reached = false;
            for r in 0..ROWS {
                for l in 0..LANES {
                    let mut want = (f32::INFINITY, before[r][l]);
                    for (i, c) in colours.iter().enumerate() {
                        let f = f[r].map(|f| f[l]);
                        let (d0, d1, d2) = (f[0] - c[0], f[1] - c[1], f[2] - c[2]);
                        let dxy = (dy2[r][i] + dx2[i * LANES + l]) * spatial;
                        let d = dxy + (d0 * d0 + d1 * d1 + d2 * d2);
                        if d < want.0 {
                            want = (d, i as u32);
                        }
                    }
                    assert_eq!(portable[r][l], want.1, "round {round} row {r} lane {l}");
                    want_reached |= want.0 < f32::INFINITY;
                }
            }
            assert_eq!(reached, want_reached, "round {round}");
        }
    }

    /// The centre update's sums, by the portable and (where present) AVX-512 paths, equal the
    /// sums taken pixel by pixel; the means follow from them. 11 rows: two groups of
    /// `STREAMS` rows and three rows one by one.
    #[test]
    fn update_sums_are_exact() {
        let (h, w, k, stride) = (11, 21, 5, 32);
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut nearest = vec![0u32; 16 * stride];
        let mut records = Vec::new();
        let mut want = vec![[0i64; 8]; k];
        for y in 0..h {
            for x in 0..w {
                let label = next() % (k as u32 - 1); // the last centre gets no pixel
                nearest[y * stride + x] = label;
                let q = [0; 3].map(|_| next() as i32 - (1 << 30));
                records.push([q[0], q[1], q[2], x as i32]);
                let s = &mut want[label as usize];
                for c in 0..3 {
                    s[c] += q[c] as i64;
                }
                s[3] += x as i64;
                s[4] += y as i64;
                s[5] += 1;
            }
        }
        let quantum = 2f64.powi(-20);
        let mut update = Update::new(records, quantum, (h, w), k);
        let total = |u: &Update| {
            let mut s = vec![[0i64; 8]; k];
            for table in u.tables.chunks_exact(k) {
                for (s, t) in s.iter_mut().zip(table) {
                    s.iter_mut().zip(t).for_each(|(a, b)| *a += b);
                }
            }
            s
        };
        update.accumulate(&nearest, stride);
        assert_eq!(total(&update), want);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            unsafe { update.accumulate_avx512(&nearest, stride) };
            assert_eq!(total(&update), want);
        }
        let mut centers = vec![[0.0; 5]; k];
        update.means(&nearest, stride, &mut centers);
        let s = want[0];
        let n = s[5] as f64;
        assert_eq!(
            centers[0],
            [
                s[4] as f64 / n,
                s[3] as f64 / n,
                s[0] as f64 * quantum / n,
                s[1] as f64 * quantum / n,
                s[2] as f64 * quantum / n
            ]
        );
        assert!(centers[k - 1].iter().all(|v| v.is_nan()));
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
