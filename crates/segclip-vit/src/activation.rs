//! QuickGELU `x · σ(1.702 x)`, the activation of every CLIP MLP.
//!
//! On CPU it runs as one fused, vectorised pass ([`crate::fastmath`]) (one read, one write) instead of three tensor ops; its
//! gradient `σ(1.702x) · (1 + 1.702 x (1 − σ(1.702x)))` is given to autograd, so training works
//! the same. Other devices use the composite form.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

const ALPHA: f32 = 1.702;

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("quick-gelu: only f32 is fused");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quick-gelu: input must be contiguous");
        };
        let out = quick_gelu_of(&data[start..end]);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // d/dx = s (1 + α x (1 − s)), s = σ(α x): one pass over x and the incoming gradient.
        let d = crate::cpu::with_f32(arg, |x| {
            crate::cpu::with_f32(grad_res, |g| {
                let mut d = g.to_vec();
                quick_gelu_backward_in_place(x, &mut d);
                d
            })
        })??;
        Ok(Some(Tensor::from_vec(d, arg.shape(), arg.device())?))
    }
}

/// QuickGELU of a buffer, in parallel chunks on large inputs.
pub(crate) fn quick_gelu_of(src: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    const CHUNK: usize = 1 << 15;
    if src.len() > 2 * CHUNK {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| crate::fastmath::quick_gelu_into(s, d));
    } else {
        crate::fastmath::quick_gelu_into(src, &mut out);
    }
    out
}

/// `g ← g · QuickGELU′(x)`: the chain rule through QuickGELU, in place.
pub(crate) fn quick_gelu_backward_in_place(x: &[f32], g: &mut [f32]) {
    use rayon::prelude::*;
    g.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(g, x)| {
            for (g, &x) in g.iter_mut().zip(x) {
                let s = 1.0 / (1.0 + crate::fastmath::exp(-ALPHA * x));
                *g = *g * s * (1.0 + ALPHA * x * (1.0 - s));
            }
        });
}

/// `x · σ(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(QuickGelu)
    } else {
        x * candle_nn::ops::sigmoid(&(x * ALPHA as f64)?)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_matches_composite_with_gradient() {
        let dev = Device::Cpu;
        let x = Var::new(&[-3f32, -0.5, 0., 0.25, 2., 7.], &dev).unwrap();
        let composite = (x.as_tensor()
            * candle_nn::ops::sigmoid(&(x.as_tensor() * 1.702).unwrap()).unwrap())
        .unwrap();
        let fused = quick_gelu(x.as_tensor()).unwrap();
        let (a, b) = (
            composite.to_vec1::<f32>().unwrap(),
            fused.to_vec1::<f32>().unwrap(),
        );
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-6, "{a:?} vs {b:?}");
        }
        let ga = composite
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let gb = fused
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (p, q) in ga.iter().zip(&gb) {
            assert!((p - q).abs() < 1e-5, "{ga:?} vs {gb:?}");
        }
    }
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("softmax: only f32 is fused");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax: input must be contiguous");
        };
        let cols = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut out = data[start..end].to_vec();
        use rayon::prelude::*;
        let rows_per_task = (1 << 14) / cols + 1;
        out.par_chunks_mut(cols * rows_per_task).for_each(|block| {
            block
                .chunks_mut(cols)
                .for_each(crate::fastmath::softmax_row)
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // d x = s ⊙ (g − Σ g ⊙ s), row by row in one pass.
        let cols = res.dims().last().copied().unwrap_or(1).max(1);
        let d = crate::cpu::with_f32(res, |s| {
            crate::cpu::with_f32(grad_res, |g| {
                use rayon::prelude::*;
                let mut out = vec![0f32; s.len()];
                let rows_per_task = (1 << 14) / cols + 1;
                let block = rows_per_task * cols;
                out.par_chunks_mut(block)
                    .zip(s.par_chunks(block).zip(g.par_chunks(block)))
                    .for_each(|(o, (s, g))| {
                        for ((o, s), g) in
                            o.chunks_mut(cols).zip(s.chunks(cols)).zip(g.chunks(cols))
                        {
                            let dot: f32 = s.iter().zip(g).map(|(a, b)| a * b).sum();
                            for ((o, &s), &g) in o.iter_mut().zip(s).zip(g) {
                                *o = s * (g - dot);
                            }
                        }
                    });
                out
            })
        })??;
        Ok(Some(Tensor::from_vec(d, res.shape(), res.device())?))
    }
}

/// Softmax over the last dimension (fused and vectorised on CPU for f32).
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

#[cfg(test)]
mod softmax_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn softmax_matches_the_composite_with_gradient() {
        let dev = Device::Cpu;
        let x = Var::new(&[[1f32, -2., 0.5], [3., 3., -1.]], &dev).unwrap();
        let w = Tensor::new(&[[1f32, 2., 3.], [-1., 0.5, 2.]], &dev).unwrap();
        let e = (x
            .as_tensor()
            .broadcast_sub(&x.as_tensor().max_keepdim(1).unwrap())
            .unwrap())
        .exp()
        .unwrap();
        let a = e.broadcast_div(&e.sum_keepdim(1).unwrap()).unwrap();
        let b = softmax_last_dim(x.as_tensor()).unwrap();
        let diff = crate::cpu::max_abs_diff(&a, &b);
        assert!(diff < 1e-6);
        let ga = (a * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .clone();
        let gb = (b * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .clone();
        let diff = crate::cpu::max_abs_diff(&ga, &gb);
        assert!(diff < 1e-6);
    }
}
