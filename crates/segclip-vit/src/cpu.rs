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

/// Run `f` on the rows of `t` (…, k) as `(data, rows, lda)`: row `i` is
/// `data[i·lda..i·lda + k]`. A tensor whose rows are evenly spaced (contiguous, or a narrow of
/// the last dimension of a contiguous one) is read in place; any other is made contiguous.
pub(crate) fn with_rows<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32], usize, usize) -> R,
) -> candle_core::Result<R> {
    let k = t.dims().last().copied().unwrap_or(1);
    let rows = t.elem_count().checked_div(k).unwrap_or(0);
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some(lda)) = (&*storage, row_stride(layout)) {
            let start = layout.start_offset();
            let end = start + (rows - 1) * lda + k;
            return Ok(f(&data[start..end], rows, lda));
        }
    }
    with_f32(t, |d| f(d, rows, k))
}

/// The distance between consecutive rows (last-dimension vectors) of `l` where it is the same
/// for all rows and each row is contiguous; `None` otherwise or for an empty layout.
fn row_stride(l: &candle_core::Layout) -> Option<usize> {
    let (dims, stride) = (l.dims(), l.stride());
    let (&k, lead) = dims.split_last()?;
    if k == 0 || lead.contains(&0) || (k > 1 && stride[lead.len()] != 1) {
        return None;
    }
    // The innermost leading dimension longer than 1 sets the row stride; each outer one must
    // step over all rows inside it.
    let (mut lda, mut span) = (None, 0);
    for (&d, &s) in lead.iter().zip(stride).rev().filter(|(&d, _)| d > 1) {
        match lda {
            None => (lda, span) = (Some(s), s * d),
            Some(_) if s == span => span *= d,
            Some(_) => return None,
        }
    }
    let lda = lda.unwrap_or(k);
    (lda >= k).then_some(lda)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Evenly spaced rows are read in place with their stride; other layouts are copied.
    #[test]
    fn rows_are_read_in_place_where_evenly_spaced() {
        let dev = Device::Cpu;
        let t = Tensor::arange(0f32, 48., &dev)
            .unwrap()
            .reshape((2, 3, 8))
            .unwrap();
        let rows = |t: &Tensor| {
            let k = t.dims()[t.rank() - 1];
            with_rows(t, |d, m, lda| {
                let values: Vec<f32> = (0..m)
                    .flat_map(|i| d[i * lda..i * lda + k].to_vec())
                    .collect();
                (lda, values)
            })
            .unwrap()
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // contiguous; narrows of the last dimension; a single row
        for view in [
            t.clone(),
            t.narrow(2, 0, 5).unwrap(),
            t.narrow(2, 3, 5).unwrap(),
            t.narrow(0, 1, 1).unwrap().narrow(1, 2, 1).unwrap(),
        ] {
            assert_eq!(rows(&view), (8, flat(&view)));
        }
        // rows not evenly spaced (a narrow of the middle dimension), a transposed view
        let gappy = t.narrow(1, 0, 2).unwrap();
        assert_eq!(row_stride(gappy.layout()), None);
        assert_eq!(rows(&gappy), (8, flat(&gappy)));
        let tr = t.transpose(1, 2).unwrap();
        assert_eq!(row_stride(tr.layout()), None);
        assert_eq!(rows(&tr), (3, flat(&tr)));
    }
}
