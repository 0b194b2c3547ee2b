//! A linear layer whose inference weights are stored transposed.
//!
//! `x Wᵀ + b` with `W` (out, in). On CPU the matmul is fastest with a contiguous (in, out)
//! right-hand side (the transposed view costs up to 1.6× on the 3072-wide MLP projection), so a
//! fixed (non-`Var`) weight is transposed once when the layer is built and only that copy is
//! kept. A trainable weight (`Var`) is read in place, in its (out, in) layout, by one autograd
//! node (`LinearOp`) on CPU, so the layer always sees its current value and gradients flow to it.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::packed_gemm::{padded_stride, PackedB, NR};

use crate::Result;

#[derive(Debug, Clone)]
enum Weight {
    /// A trainable weight, (out, in).
    Var(Tensor),
    /// A fixed weight, transposed to (in, out) and contiguous.
    Fixed(Tensor),
    /// A fixed f32 weight on a CPU with AVX-512, transposed to (in, out) and packed for
    /// [`PackedB`] (the only copy kept).
    Packed(Arc<PackedB>, Device),
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    /// From a weight (out, in) and an optional bias (out).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = if weight.is_variable() {
            Weight::Var(weight)
        } else {
            let (n, k) = weight.dims2()?;
            if weight.device().is_cpu() && weight.dtype() == DType::F32 && PackedB::supported(n) {
                let packed = crate::cpu::with_f32(&weight, |w| PackedB::from_transposed(w, n, k))?;
                Weight::Packed(Arc::new(packed), weight.device().clone())
            } else {
                Weight::Fixed(weight.t()?.contiguous()?)
            }
        };
        Ok(Self { weight, bias })
    }

    /// `weight` (out, in) and `bias` (out) under `vb`.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Self::new(
            vb.get((out_dim, in_dim), "weight")?,
            Some(vb.get(out_dim, "bias")?),
        )
    }

    /// The weight as (in, out): the right-hand side of `x @ Wᵀ` (a packed weight unpacked).
    pub fn weight_t(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Var(w) => w.t()?,
            Weight::Fixed(wt) => wt.clone(),
            Weight::Packed(p, device) => Tensor::from_vec(p.unpack(), (p.k(), p.n()), device)?,
        })
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `QuickGELU(x) Wᵀ + b` (the second layer of a CLIP MLP): for a trainable weight on CPU
    /// one autograd node that keeps no activation (see `LinearOp`), otherwise the two steps.
    pub fn forward_quick_gelu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight {
            Weight::Var(w) => trainable_op(x, w, self.bias.as_ref(), true),
            Weight::Fixed(_) | Weight::Packed(..) => {
                self.forward(&crate::activation::quick_gelu(x)?)
            }
        }
    }

    /// `QuickGELU(x Wᵀ + b)` (the first layer of a CLIP MLP) in one pass where the weight is
    /// packed (the activation applied while each block of the product is in registers);
    /// `None` elsewhere, for the caller's own two steps. The result's rows are
    /// [`padded_stride`] apart (a narrow of a wider tensor), which the next packed layer reads
    /// in place.
    pub fn forward_then_quick_gelu(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match &self.weight {
            Weight::Packed(p, _) => {
                packed_linear(x, p, self.bias.as_ref(), (0, p.n()), (true, true))
            }
            _ => Ok(None),
        }
    }

    /// Rows `[start, start + len)` of the output only (a slice of the packed q/k/v projection).
    pub fn forward_rows(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        if let Weight::Packed(p, _) = &self.weight {
            if start.is_multiple_of(NR) && len.is_multiple_of(NR) {
                if let Some(y) =
                    packed_linear(x, p, self.bias.as_ref(), (start, len), (false, false))?
                {
                    return Ok(y);
                }
            }
        }
        let wt = self.weight_t()?.narrow(1, start, len)?;
        let b = self
            .bias
            .as_ref()
            .map(|b| b.narrow(0, start, len))
            .transpose()?;
        match &self.weight {
            Weight::Fixed(full) => {
                if let Some(y) = cpu_linear(x, full, b.as_ref(), Some((start, len)))? {
                    return Ok(y);
                }
            }
            Weight::Var(w) => return Ok(trainable(x, &w.narrow(0, start, len)?, b.as_ref())?),
            Weight::Packed(..) => {}
        }
        Ok(matmul_bias(x, &wt, b.as_ref())?)
    }
}

/// `x @ wt + b` for x (…, in), folding leading dimensions into rows.
fn matmul_bias(x: &Tensor, wt: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x2 = if x.is_contiguous() {
        x.reshape((rows, k))?
    } else {
        x.contiguous()?.reshape((rows, k))?
    };
    let mut y = x2.matmul(wt)?;
    if let Some(b) = b {
        y = if crate::cpu::is_cpu_f32(&y) && crate::cpu::is_cpu_f32(b) {
            y.apply_op2(&b.contiguous()?, BiasAdd)?
        } else {
            y.broadcast_add(b)?
        };
    }
    let mut out = dims;
    let n = out.len();
    out[n - 1] = wt.dim(1)?;
    y.reshape(out)
}

/// `x @ wt + b` on CPU in one GEMM call that accumulates onto the broadcast bias (no separate
/// bias pass), for fixed f32 weights and inputs that track no gradient.
/// Only output columns `[col, col + n)` of `wt` (in, N) are computed when `cols` is given.
/// `y + b` on the rows of a (rows, n) matrix; its bias gradient is one contiguous column sum
/// (candle's broadcast gradient reduces over the leading dimension with strided access).
struct BiasAdd;

impl candle_core::CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let y = crate::cpu::slice(s1, l1, "bias-add")?;
        let b = crate::cpu::slice(s2, l2, "bias-add")?;
        if b.is_empty() || y.len() % b.len() != 0 {
            candle_core::bail!(
                "bias-add: a bias of {} does not fit {:?}",
                b.len(),
                l1.dims()
            );
        }
        let mut out = y.to_vec();
        for row in out.chunks_exact_mut(b.len()) {
            for (o, v) in row.iter_mut().zip(b) {
                *o += v;
            }
        }
        Ok((candle_core::CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = b.elem_count();
        let db = crate::cpu::with_f32(grad, |g| crate::cpu::column_sums(g, n))?;
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}

fn cpu_linear(
    x: &Tensor,
    wt: &Tensor,
    b: Option<&Tensor>,
    cols: Option<(usize, usize)>,
) -> candle_core::Result<Option<Tensor>> {
    use candle_core::{CpuStorage, DType, Storage};
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.track_op() || !wt.is_contiguous() {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let m: usize = dims[..dims.len() - 1].iter().product();
    let full_n = wt.dim(1)?;
    let (col, n) = cols.unwrap_or((0, full_n));
    let mut out = match b {
        Some(b) => b.to_vec1::<f32>()?.repeat(m),
        None => vec![0f32; m * n],
    };
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = wt.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(xd)), Storage::Cpu(CpuStorage::F32(wd))) = (&*xs, &*ws)
    else {
        return Ok(None);
    };
    let (xd, wd) = (
        &xd[xl.start_offset()..xl.start_offset() + m * k],
        &wd[wl.start_offset()..wl.start_offset() + k * full_n],
    );
    let threads = if m * n * k < 1 << 18 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    };
    // SAFETY: out is (m, n), x (m, k), and wt (k, full_n) of which the n columns from `col` are
    // read; all row-major and live for the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            b.is_some(),
            xd.as_ptr(),
            1,
            k as isize,
            wd.as_ptr().add(col),
            1,
            full_n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
    }
    drop((xs, ws));
    let mut shape = dims;
    let last = shape.len() - 1;
    shape[last] = n;
    Ok(Some(Tensor::from_vec(out, shape, x.device())?))
}

/// `x Wᵀ + b` for a trainable weight `w` (out, in): on CPU (f32, with a bias) one autograd node
/// ([`LinearOp`]), otherwise candle's matmul through the transposed view and the bias add.
fn trainable(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    trainable_op(x, w, b, false)
}

/// [`trainable`], of `QuickGELU(x)` when `quick_gelu_input`.
fn trainable_op(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    quick_gelu_input: bool,
) -> candle_core::Result<Tensor> {
    let Some(b) = b.filter(|b| [x, w, b].iter().all(|t| crate::cpu::is_cpu_f32(t))) else {
        let x = if quick_gelu_input {
            crate::activation::quick_gelu(x)?
        } else {
            x.clone()
        };
        return matmul_bias(&x, &w.t()?, b);
    };
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = x.contiguous()?.reshape((rows, k))?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LinearOp { quick_gelu_input },
    )?;
    let mut out = dims;
    let n = out.len();
    out[n - 1] = w.dim(0)?;
    y.reshape(out)
}

/// The parallelism of one GEMM of m·n·k multiply-adds.
fn gemm_threads(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m * n * k < 1 << 18 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    }
}

/// `y = x Wᵀ + b` over x (rows, in), W (out, in) as stored, b (out), as one node whose gradient
/// writes straight into each operand's layout:
///
/// ```text
/// dx = dy W      (rows, in)
/// dW = dyᵀ x     (out, in)
/// db = Σ_rows dy
/// ```
///
/// Through candle's ops the same layer is a matmul with a transposed view, a bias add and two
/// reshapes, whose gradients are each materialised, zero-accumulated and, for the weight,
/// transposed back with a strided add.
///
/// With `quick_gelu_input` the node computes `QuickGELU(x) Wᵀ + b`, keeping no activation: the
/// forward applies QuickGELU into a scratch buffer for the GEMM, the backward applies it again
/// for dW and turns `dy W` into dx by QuickGELU's derivative. (The MLP's 4×-wide hidden
/// activation and its gradient are then no graph tensors of their own.)
struct LinearOp {
    quick_gelu_input: bool,
}

impl candle_core::CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        if self.quick_gelu_input {
            "quick-gelu-linear"
        } else {
            "linear"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = crate::cpu::slice(s1, l1, "linear")?;
        let activated;
        let x = if self.quick_gelu_input {
            activated = crate::activation::quick_gelu_of(x);
            &activated[..]
        } else {
            x
        };
        let w = crate::cpu::slice(s2, l2, "linear")?;
        let b = crate::cpu::slice(s3, l3, "linear")?;
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k2 != k || b.len() != n {
            candle_core::bail!(
                "linear: x {:?}, W {:?}, b {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let mut out = b.repeat(m);
        // SAFETY: out (m, n), x (m, k) and W (n, k) are live row-major buffers; W is read
        // transposed through its strides.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm_threads(m, n, k),
            );
        }
        Ok((candle_core::CpuStorage::F32(out), (m, n).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let n = w.dim(0)?;
        let (dx, dw, db) = crate::cpu::with_f32(x, |x| {
            crate::cpu::with_f32(w, |w| {
                crate::cpu::with_f32(grad, |g| {
                    let pre = x;
                    let activated;
                    let x = if self.quick_gelu_input {
                        activated = crate::activation::quick_gelu_of(pre);
                        &activated[..]
                    } else {
                        pre
                    };
                    // dx = g W, dW = gᵀ x, each written in full by one GEMM (no zeroing first;
                    // with nothing to sum over, zeros).
                    let dx_into = |dx: *mut f32| {
                        // SAFETY: g (m, n), W (n, k) live row-major buffers, dx (m, k) writable.
                        unsafe {
                            gemm::gemm(
                                m,
                                k,
                                n,
                                dx,
                                1,
                                k as isize,
                                false,
                                g.as_ptr(),
                                1,
                                n as isize,
                                w.as_ptr(),
                                1,
                                k as isize,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm_threads(m, k, n),
                            )
                        }
                    };
                    let dw_into = |dw: *mut f32| {
                        // SAFETY: g (m, n) read transposed through its strides, x (m, k), dW
                        // (n, k) writable.
                        unsafe {
                            gemm::gemm(
                                n,
                                k,
                                m,
                                dw,
                                1,
                                k as isize,
                                false,
                                g.as_ptr(),
                                n as isize,
                                1,
                                x.as_ptr(),
                                1,
                                k as isize,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm_threads(n, k, m),
                            )
                        }
                    };
                    let (mut dx, dw) = if n > 0 && m > 0 {
                        // SAFETY: each GEMM writes every element of its output.
                        unsafe {
                            (
                                crate::cpu::written_by(m * k, dx_into),
                                crate::cpu::written_by(n * k, dw_into),
                            )
                        }
                    } else {
                        (vec![0f32; m * k], vec![0f32; n * k])
                    };
                    if self.quick_gelu_input {
                        crate::activation::quick_gelu_backward_in_place(pre, &mut dx);
                    }
                    (dx, dw, crate::cpu::column_sums(g, n))
                })
            })
        })???;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, b.shape(), dev)?),
        ))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight {
            Weight::Var(w) => trainable(x, w, self.bias.as_ref()),
            Weight::Fixed(wt) => match cpu_linear(x, wt, self.bias.as_ref(), None)? {
                Some(y) => Ok(y),
                None => matmul_bias(x, wt, self.bias.as_ref()),
            },
            Weight::Packed(p, _) => {
                match packed_linear(x, p, self.bias.as_ref(), (0, p.n()), (false, false))? {
                    Some(y) => Ok(y),
                    // An input that tracks gradients: candle's ops on the unpacked weight.
                    None => {
                        let wt = self.weight_t().map_err(candle_core::Error::wrap)?;
                        matmul_bias(x, &wt, self.bias.as_ref())
                    }
                }
            }
        }
    }
}

/// Columns `[col, col + len)` of `x @ wt + b` (of its QuickGELU with `quick_gelu`) by the packed
/// kernel, for an f32 CPU input that tracks no gradient (`None` otherwise). `x`'s rows are read
/// in place where they are evenly spaced. With `padded`, the output's rows are
/// [`padded_stride`] apart (a narrow of a wider tensor), for another packed product to read.
fn packed_linear(
    x: &Tensor,
    p: &PackedB,
    b: Option<&Tensor>,
    (col, len): (usize, usize),
    (quick_gelu, padded): (bool, bool),
) -> candle_core::Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.track_op() {
        return Ok(None);
    }
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    if k != p.k() {
        candle_core::bail!("linear: input width {k}, weight expects {}", p.k());
    }
    let bias = b
        .map(|b| b.narrow(0, col, len)?.to_vec1::<f32>())
        .transpose()?;
    let ldc = if padded { padded_stride(len) } else { len };
    let y = crate::cpu::with_rows(x, |xd, m, lda| {
        p.matmul_strided(xd, lda, m, bias.as_deref(), (col, len), quick_gelu, ldc)
    })?;
    let mut shape = dims;
    let last = shape.len() - 1;
    shape[last] = ldc;
    let y = Tensor::from_vec(y, shape, x.device())?;
    Ok(Some(if ldc > len {
        y.narrow(last, 0, len)?
    } else {
        y
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A fixed weight whose width suits the packed kernel gives the trainable layer's outputs:
    /// the whole layer, an aligned and an unaligned window of its outputs, QuickGELU of it, and
    /// an input that tracks gradients (candle's ops on the unpacked weight).
    #[test]
    fn packed_weights_agree_with_trainable_ones() {
        let dev = Device::Cpu;
        let (n, k) = (64, 40);
        let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., n, &dev).unwrap();
        let x = Tensor::randn(0f32, 1., (3, 5, k), &dev).unwrap();
        let fixed = Linear::new(w.clone(), Some(b.clone())).unwrap();
        assert_eq!(
            matches!(fixed.weight, Weight::Packed(..)),
            PackedB::supported(n)
        );
        let var = Var::from_tensor(&w).unwrap();
        let train = Linear::new(var.as_tensor().clone(), Some(b)).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "{d}");
        };
        let want = train.forward(&x).unwrap();
        close(&fixed.forward(&x).unwrap(), &want);
        for (start, len) in [(32, 32), (8, 20)] {
            close(
                &fixed.forward_rows(&x, start, len).unwrap(),
                &want.narrow(2, start, len).unwrap(),
            );
        }
        if let Some(h) = fixed.forward_then_quick_gelu(&x).unwrap() {
            close(&h, &crate::activation::quick_gelu(&want).unwrap());
        }
        let tracked = Var::from_tensor(&x).unwrap();
        close(&fixed.forward(tracked.as_tensor()).unwrap(), &want);
    }

    #[test]
    fn fixed_and_trainable_weights_agree() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).unwrap(); // (out 2, in 3)
        let b = Tensor::new(&[0.5f32, -1.], &dev).unwrap();
        let x = Tensor::new(&[[[1f32, 0., 1.], [0., 1., 0.]]], &dev).unwrap(); // (1, 2, 3)
        let fixed = Linear::new(w.clone(), Some(b.clone())).unwrap();
        let var = Var::from_tensor(&w).unwrap();
        let train = Linear::new(var.as_tensor().clone(), Some(b)).unwrap();
        let want = vec![vec![vec![4.5f32, 9.], vec![2.5, 4.]]];
        assert_eq!(fixed.forward(&x).unwrap().to_vec3::<f32>().unwrap(), want);
        assert_eq!(train.forward(&x).unwrap().to_vec3::<f32>().unwrap(), want);
        assert_eq!(
            fixed
                .forward_rows(&x, 1, 1)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap(),
            vec![vec![vec![9f32], vec![4.]]]
        );
        // Gradients reach the trainable weight.
        let g = train
            .forward(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            g.get(var.as_tensor()).unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1f32, 1., 1.], vec![1., 1., 1.]]
        );
    }
}

#[cfg(test)]
mod bias_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_bias_gradient_matches_broadcast_add() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (40, 7), &dev).unwrap();
        let w = Var::randn(0f32, 1., (5, 7), &dev).unwrap();
        let b = Var::randn(0f32, 1., 5, &dev).unwrap();
        let up = Tensor::randn(0f32, 1., (40, 5), &dev).unwrap();
        let lin = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())).unwrap();
        let y = lin.forward(x.as_tensor()).unwrap();
        let r = x
            .as_tensor()
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        let max = |t: Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(max((&y - &r).unwrap()) < 1e-5);
        let gy = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (r * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            let d = max((gy.get(v.as_tensor()).unwrap() - gr.get(v.as_tensor()).unwrap()).unwrap());
            assert!(d < 1e-4, "{d}");
        }
    }
}

#[cfg(test)]
mod quick_gelu_tests {
    use super::*;
    use candle_core::{Device, Var};

    /// `QuickGELU(z) Wᵀ + b` as one node equals the two steps through candle's ops: output and
    /// the gradients of z, W and b.
    #[test]
    fn fused_quick_gelu_linear_matches_the_composite() {
        let dev = Device::Cpu;
        let z = Var::randn(0f32, 2., (2, 30, 12), &dev).unwrap();
        let w = Var::randn(0f32, 1., (5, 12), &dev).unwrap();
        let b = Var::randn(0f32, 1., 5, &dev).unwrap();
        let up = Tensor::randn(0f32, 1., (2, 30, 5), &dev).unwrap();
        let lin = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())).unwrap();
        let y = lin.forward_quick_gelu(z.as_tensor()).unwrap();
        let zt = z.as_tensor();
        let h = (zt * candle_nn::ops::sigmoid(&(zt * 1.702).unwrap()).unwrap()).unwrap();
        let r = h
            .broadcast_matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        let max = |t: Tensor| {
            t.abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(max((&y - &r).unwrap()) < 1e-5);
        let gy = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (r * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&z, &w, &b] {
            let (a, e) = (
                gy.get(v.as_tensor()).unwrap(),
                gr.get(v.as_tensor()).unwrap(),
            );
            let d = max((a - e).unwrap());
            assert!(d < 1e-4, "{d}");
        }
    }
}
