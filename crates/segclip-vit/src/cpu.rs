//! Access to the data of CPU f32 tensors, for the fused kernels and their gradients.

use candle_core::{CpuStorage, Storage, Tensor};

/// A `*mut f32` that may cross threads: the parallel tasks of one kernel write disjoint
/// elements through it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: only used for disjoint writes from the parallel tasks of one call.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `n` f32 that `fill` writes in full before anything reads them, without zeroing them first
/// (a gradient buffer zeroed and then overwritten by a GEMM costs a memset of its size).
///
/// # Safety
/// `fill` must write all `n` elements through the pointer it gets.
pub(crate) unsafe fn written_by(n: usize, fill: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` elements need no initialisation.
    unsafe { v.set_len(n) };
    fill(v.as_mut_ptr().cast());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: the caller's `fill` initialised all `n` elements; same allocation, length and
    // capacity, and `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), n, v.capacity()) }
}

/// Whether `t` lives on the CPU as f32 (the fused kernels' domain).
pub(crate) fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// Run `f` on the row-major f32 values of `t` (made contiguous first).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!("expected an f32 CPU tensor, got {:?}", t.dtype());
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("tensor is not contiguous");
    };
    Ok(f(&data[start..end]))
}

/// The f32 slice of a contiguous CPU storage argument of a custom op.
pub(crate) fn slice<'a>(
    s: &'a CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{what}: only f32 is fused");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: input must be contiguous");
    };
    Ok(&data[start..end])
}

/// Column sums of a (rows, cols) row-major matrix, rows split over threads.
pub(crate) fn column_sums(x: &[f32], cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let rows = x.len() / cols.max(1);
    let per_task = ((1 << 15) / cols.max(1)).max(1);
    if rows <= per_task {
        let mut acc = vec![0f32; cols];
        for row in x.chunks_exact(cols) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        return acc;
    }
    x.par_chunks(per_task * cols)
        .map(|block| {
            let mut acc = vec![0f32; cols];
            for row in block.chunks_exact(cols) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .reduce(
            || vec![0f32; cols],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                a
            },
        )
}

/// The largest absolute difference of two tensors (tests compare fused kernels with this).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
