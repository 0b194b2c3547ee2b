//! `C = A·B + bias` in f32 for a fixed right-hand side `B` packed once (an inference weight), on
//! AVX-512.
//!
//! The `gemm` crate packs both operands on every call; for a weight that never changes the
//! packing of `B` is wasted work (≈ 11 % of the visual forward). Here `B` (k, n) is stored once
//! as panels of [`NR`] columns, each panel `k` consecutive rows of `NR` floats, so that the
//! microkernel reads it as one stream. The microkernel holds an [`MR`]×[`NR`] block of `C` in 28
//! registers for the whole of `k` (the bias is its starting value): per step of `k`, two loads
//! of `B`, fourteen broadcasts of `A` and 28 fused multiply-adds. `A` is read in place, row-major.
//! Blocks of `MC` rows of `A` stay in L2 while every panel of `B` passes over them; the panels
//! are shared out between threads. At batch 1 every weight streams from memory once, and the
//! kernel's own loads leave too few misses in flight for that, so it prefetches the panel rows
//! it will read next. QuickGELU (the CLIP MLP's activation) can be applied to a block as it is
//! stored. `A`'s rows may be any distance apart: the layers that feed a packed product (layer
//! norm, the MLP's first layer) write rows [`padded_stride`] apart, so that the [`MR`] rows a
//! block reads do not evict each other from L1.
//!
//! Sums run over `k` in order, one fused multiply-add at a time: the rounding differs from
//! `gemm`'s (and from PyTorch's) in the last bits, as any two GEMMs do.

/// Rows of a microkernel block.
pub const MR: usize = 14;
/// Columns of a microkernel block (two AVX-512 registers).
pub const NR: usize = 32;
/// Rows of `A` that stay in cache while the panels of `B` pass over them.
const MC: usize = 14 * 16;
/// Panel rows between a thread's first loads and its prefetches of the same panel.
const AHEAD: usize = 64;

/// The row stride (in floats) for a product of `n` columns that another product will read as
/// its `A`: `n`, or `n + 16` where rows `n` floats apart would fall on few L1 sets. (A block
/// reads [`MR`] rows of `A` at the same column; with `n` a multiple of 32 they share sets —
/// a 3072-wide row maps every row to one set of the 12-way L1 — and evict each other.
/// An odd number of cache lines a row spreads them over [`MR`] sets.)
pub fn padded_stride(n: usize) -> usize {
    if n.is_multiple_of(16) && (n / 16).is_multiple_of(2) {
        n + 16
    } else {
        n
    }
}

/// A right-hand side (k, n) packed into panels of [`NR`] columns; `n` a multiple of [`NR`].
#[derive(Debug, Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Whether this machine runs the packed kernel and `n` suits it; otherwise callers keep
    /// their general GEMM.
    pub fn supported(n: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            n.is_multiple_of(NR)
                && n > 0
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = n;
            false
        }
    }

    /// Columns `[col, col + n)` of a row-major `b` (k, full_n). `n` must be a multiple of
    /// [`NR`].
    pub fn new(b: &[f32], k: usize, full_n: usize, col: usize, n: usize) -> Self {
        assert!(n.is_multiple_of(NR) && col + n <= full_n && b.len() >= k * full_n);
        let mut data = Vec::with_capacity(k * n);
        for p in 0..n / NR {
            for row in b.chunks_exact(full_n).take(k) {
                data.extend_from_slice(&row[col + p * NR..col + (p + 1) * NR]);
            }
        }
        Self { k, n, data }
    }

    /// `B = Wᵀ` from a row-major `w` (n, k), as a linear layer stores its weight, without
    /// materialising the transpose. `n` must be a multiple of [`NR`].
    pub fn from_transposed(w: &[f32], n: usize, k: usize) -> Self {
        assert!(n.is_multiple_of(NR) && w.len() >= n * k);
        let mut data = vec![0f32; k * n];
        for (p, panel) in data.chunks_exact_mut(k * NR).enumerate() {
            for j in 0..NR {
                let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                for (step, &v) in panel.chunks_exact_mut(NR).zip(row) {
                    step[j] = v;
                }
            }
        }
        Self { k, n, data }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The packed matrix back in row-major (k, n).
    pub fn unpack(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut b = vec![0f32; k * n];
        for (p, panel) in self.data.chunks_exact(k * NR).enumerate() {
            for (row, src) in b.chunks_exact_mut(n).zip(panel.chunks_exact(NR)) {
                row[p * NR..(p + 1) * NR].copy_from_slice(src);
            }
        }
        b
    }

    /// `A·B + bias` for a row-major `a` (m, k); `bias` (n) or zero. Returns (m, n) row-major.
    /// Only where [`PackedB::supported`] said so.
    pub fn matmul(&self, a: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        self.matmul_cols(a, m, bias, (0, self.n), false)
    }

    /// Columns `[col, col + len)` of `A·B + bias` (both multiples of [`NR`]); `bias` has `len`
    /// values; with `quick_gelu`, QuickGELU of it, applied to each block while it is in
    /// registers. Returns (m, len) row-major.
    pub fn matmul_cols(
        &self,
        a: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        (col, len): (usize, usize),
        quick_gelu: bool,
    ) -> Vec<f32> {
        self.matmul_strided(a, self.k, m, bias, (col, len), quick_gelu, len)
    }

    /// [`PackedB::matmul_cols`] for an `a` whose rows are `lda ≥ k` floats apart, into an output
    /// whose rows are `ldc ≥ len` floats apart (the padding zeroed).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_strided(
        &self,
        a: &[f32],
        lda: usize,
        m: usize,
        bias: Option<&[f32]>,
        (col, len): (usize, usize),
        quick_gelu: bool,
        ldc: usize,
    ) -> Vec<f32> {
        let k = self.k;
        assert!(col.is_multiple_of(NR) && len.is_multiple_of(NR) && col + len <= self.n);
        assert!(lda >= k && ldc >= len);
        assert!(m == 0 || a.len() >= (m - 1) * lda + k);
        assert!(bias.is_none_or(|b| b.len() == len));
        assert!(
            Self::supported(NR),
            "packed GEMM on a machine without AVX-512"
        );
        let n = len;
        // Every element is written by exactly one kernel call below before `set_len`.
        let mut out: Vec<f32> = Vec::with_capacity(m * ldc);
        if ldc > n {
            let pad = out.spare_capacity_mut();
            for row in pad.chunks_exact_mut(ldc) {
                row[n..].fill(std::mem::MaybeUninit::new(0.0));
            }
        }
        let panels = n / NR;
        let col0 = col / NR;
        let threads = if m * n * k < 1 << 18 {
            1
        } else {
            rayon::current_num_threads().min(panels)
        };
        let out_ptr = SendPtr(out.as_mut_ptr());
        // Work items: (row block, panel) pairs, row blocks outermost, handed out one at a time
        // so that a thread slowed by another process on its core takes fewer of them.
        let items = m.div_ceil(MC) * panels;
        let taken = std::sync::atomic::AtomicUsize::new(0);
        let take = || {
            let i = taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (i < items).then_some(i)
        };
        let run = |_: usize| {
            let (mut item, mut first) = (take(), true);
            while let Some(it) = item {
                // The next item is taken before this one runs, so that its panel can be
                // prefetched meanwhile.
                let next = take();
                let (i0, p) = ((it / panels) * MC, it % panels);
                let rows = MC.min(m - i0);
                let q = col0 + p;
                let b = &self.data[q * k * NR..(q + 1) * k * NR];
                let bias = bias.map(|b| &b[p * NR..(p + 1) * NR]);
                let next_b = next.map(|nx| self.data[(col0 + nx % panels) * k * NR..].as_ptr());
                // The kernel's own loads, one panel row per k-step, leave too few misses in
                // flight to stream a panel from memory, so blocks prefetch: the thread's first
                // panel by its first block, a few rows ahead of the loads; the next item's
                // panel in equal shares of its rows by the blocks (after the first, on the
                // thread's first item).
                let blocks = rows.div_ceil(MR);
                let sharers = if first { blocks - 1 } else { blocks };
                let share = if sharers == 0 { 0 } else { k.div_ceil(sharers) };
                for (j, i) in (i0..i0 + rows).step_by(MR).enumerate() {
                    let mr = MR.min(i0 + rows - i);
                    let ahead = match next_b {
                        _ if first && j == 0 => Some((b.as_ptr().wrapping_add(AHEAD * NR), k)),
                        Some(nb) => {
                            let s = if first { j - 1 } else { j };
                            let start = (s * share).min(k);
                            Some((nb.wrapping_add(start * NR), share.min(k - start)))
                        }
                        None => None,
                    };
                    // SAFETY: rows i..i+mr of `a` and of `out` exist; this item alone writes
                    // columns p·NR..(p+1)·NR of these rows of `out`; AVX-512F and FMA are
                    // present (asserted above).
                    unsafe {
                        kernel(
                            mr,
                            a.as_ptr().add(i * lda),
                            (k, lda),
                            (b, ahead),
                            (bias, quick_gelu),
                            out_ptr.get().add(i * ldc + p * NR),
                            ldc,
                        )
                    };
                }
                (item, first) = (next, false);
            }
        };
        if threads == 1 {
            run(0);
        } else {
            rayon::scope(|s| {
                for t in 0..threads {
                    let run = &run;
                    s.spawn(move |_| run(t));
                }
            });
        }
        // SAFETY: the items cover rows 0..m and columns 0..n, each taken by one thread, and the
        // padding of each row was zeroed, so every one of the m·ldc elements was written.
        unsafe { out.set_len(m * ldc) };
        out
    }
}

/// A pointer that threads writing disjoint columns share.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: every thread writes its own columns of the buffer, which outlives the scope.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One block: `mr ≤ MR` rows of `C` (row stride `ldc`), [`NR`] columns.
///
/// # Safety
/// `a` points at `mr` rows of `k` floats (row stride `k`), `c` at `mr` rows of `NR` writable
/// floats (row stride `ldc`); AVX-512F and FMA are present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn kernel(
    mr: usize,
    a: *const f32,
    (k, lda): (usize, usize),
    b: (&[f32], Option<(*const f32, usize)>),
    epilogue: (Option<&[f32]>, bool),
    c: *mut f32,
    ldc: usize,
) {
    macro_rules! rows {
        ($($r:literal)*) => {
            match mr {
                $($r => unsafe {
                    let (ahead, steps) = b.1.unwrap_or((b.0.as_ptr(), 0));
                    block::<$r>(a, (k, lda), b.0, (ahead, steps), epilogue, c, ldc)
                },)*
                _ => unreachable!("block of {mr} rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(
    _: usize,
    _: *const f32,
    _: (usize, usize),
    _: (&[f32], Option<(*const f32, usize)>),
    _: (Option<&[f32]>, bool),
    _: *mut f32,
    _: usize,
) {
    unreachable!("packed GEMM without AVX-512")
}

/// [`kernel`] for `R` rows, the accumulators in registers; the first `steps` k-steps also ask
/// for one panel row each from `ahead` on (into L2; prefetches never fault, so `ahead` may run
/// past the data, and its arithmetic wraps).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn block<const R: usize>(
    a: *const f32,
    (k, lda): (usize, usize),
    b: &[f32],
    (ahead, steps): (*const f32, usize),
    (bias, quick_gelu): (Option<&[f32]>, bool),
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(b.len() >= k * NR && steps <= k);
    let (init0, init1) = match bias {
        // SAFETY: the bias has NR floats.
        Some(bias) => unsafe {
            (
                _mm512_loadu_ps(bias.as_ptr()),
                _mm512_loadu_ps(bias.as_ptr().add(16)),
            )
        },
        None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
    };
    let mut acc0 = [init0; R];
    let mut acc1 = [init1; R];
    // One k-step: two loads of the panel row, R broadcasts, 2R fused multiply-adds. (A macro,
    // not a closure: the accumulators must stay in registers.)
    macro_rules! step {
        ($kk:expr) => {
            // SAFETY: `b` holds k rows of NR floats; `a` R rows of k floats (caller).
            unsafe {
                let kk = $kk;
                let bp = b.as_ptr().add(kk * NR);
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for r in 0..R {
                    let x = _mm512_set1_ps(*a.add(r * lda + kk));
                    acc0[r] = _mm512_fmadd_ps(x, b0, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(x, b1, acc1[r]);
                }
            }
        };
    }
    for kk in 0..steps {
        let pf = ahead.wrapping_add(kk * NR);
        _mm_prefetch::<_MM_HINT_T1>(pf.cast());
        _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(16).cast());
        step!(kk);
    }
    for kk in steps..k {
        step!(kk);
    }
    for r in 0..R {
        // SAFETY: row r of `c` has NR writable floats (caller).
        unsafe {
            if quick_gelu {
                let mut row = [0f32; NR];
                _mm512_storeu_ps(row.as_mut_ptr(), acc0[r]);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), acc1[r]);
                for v in row.iter_mut() {
                    *v = crate::fastmath::quick_gelu(*v);
                }
                std::ptr::copy_nonoverlapping(row.as_ptr(), c.add(r * ldc), NR);
            } else {
                _mm512_storeu_ps(c.add(r * ldc), acc0[r]);
                _mm512_storeu_ps(c.add(r * ldc + 16), acc1[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_rows_span_an_odd_number_of_cache_lines() {
        assert_eq!(padded_stride(768), 784);
        assert_eq!(padded_stride(3072), 3088);
        assert_eq!(padded_stride(2304), 2320);
        assert_eq!(padded_stride(48), 48); // 3 lines already
        assert_eq!(padded_stride(20), 20); // not whole lines
    }

    /// Against a plain triple loop in f64, on shapes with partial row blocks, several row
    /// blocks of `MC`, one and many panels, with and without a bias, and a column window.
    #[test]
    fn matches_a_reference_product() {
        if !PackedB::supported(NR) {
            return;
        }
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for (m, k, full_n, col, n, with_bias) in [
            (1, 1, 32, 0, 32, false),
            (13, 7, 64, 32, 32, true),
            (15, 33, 96, 0, 96, true),
            (MC + 17, 50, 64, 0, 64, false),
            (300, 128, 160, 32, 128, true),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * full_n).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let packed = PackedB::new(&b, k, full_n, col, n);
            let window: Vec<f32> = b
                .chunks_exact(full_n)
                .flat_map(|row| &row[col..col + n])
                .copied()
                .collect();
            assert_eq!(packed.unpack(), window);
            let w: Vec<f32> = (0..n)
                .flat_map(|j| (0..k).map(move |t| (t, j)))
                .map(|(t, j)| window[t * n + j])
                .collect();
            assert_eq!(PackedB::from_transposed(&w, n, k).data, packed.data);
            let got = packed.matmul(&a, m, with_bias.then_some(&bias[..]));
            // The QuickGELU epilogue is the activation of the product, to the bit.
            let activated = packed.matmul_cols(&a, m, with_bias.then_some(&bias[..]), (0, n), true);
            let want: Vec<f32> = got
                .iter()
                .map(|&v| crate::fastmath::quick_gelu(v))
                .collect();
            assert_eq!(activated, want);
            // Rows of `a` read `lda` apart, the product's written `ldc` apart (the padding
            // zeroed): the same values.
            let (lda, ldc) = (k + 5, padded_stride(n).max(n + 3));
            let mut spaced = vec![f32::NAN; (m - 1) * lda + k];
            for (i, row) in a.chunks_exact(k).enumerate() {
                spaced[i * lda..i * lda + k].copy_from_slice(row);
            }
            let bias_opt = with_bias.then_some(&bias[..]);
            let strided = packed.matmul_strided(&spaced, lda, m, bias_opt, (0, n), false, ldc);
            for (i, row) in strided.chunks_exact(ldc).enumerate() {
                assert_eq!(row[..n], got[i * n..(i + 1) * n]);
                assert!(row[n..].iter().all(|&v| v == 0.0));
            }
            if n > NR {
                // The last panel alone equals the same columns of the whole product.
                let tail = packed.matmul_cols(
                    &a,
                    m,
                    with_bias.then_some(&bias[n - NR..]),
                    (n - NR, NR),
                    false,
                );
                for i in 0..m {
                    assert_eq!(tail[i * NR..(i + 1) * NR], got[i * n + n - NR..(i + 1) * n]);
                }
            }
            for i in 0..m {
                for j in 0..n {
                    let mut want = if with_bias { bias[j] as f64 } else { 0.0 };
                    for t in 0..k {
                        want += a[i * k + t] as f64 * b[t * full_n + col + j] as f64;
                    }
                    let g = got[i * n + j] as f64;
                    assert!(
                        (g - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                        "{m}x{k}x{n}: ({i}, {j}) {g} vs {want}"
                    );
                }
            }
        }
    }
}
