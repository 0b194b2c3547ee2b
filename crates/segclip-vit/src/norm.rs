//! LayerNorm that is fast at inference and differentiable in training.
//!
//! `(x − mean) / √(var + eps) · w + b`, biased variance. On CPU (f32) one fused kernel of our
//! own, with its backward; at inference it writes its rows `padded_stride` apart for the packed
//! GEMM that reads them next. Elsewhere candle-nn's fused kernel, which has no backward pass,
//! when nothing tracks gradients, and otherwise the composite of tensor ops.

use candle_core::{CpuStorage, Layout, Module, Shape, Tensor, D};
use candle_nn::VarBuilder;

use crate::Result;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    /// `weight` and `bias` of width `size` under `vb`.
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self::new(
            vb.get(size, "weight")?,
            vb.get(size, "bias")?,
            eps,
        ))
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if [x, &self.weight, &self.bias]
            .iter()
            .all(|t| crate::cpu::is_cpu_f32(t))
        {
            // On CPU one fused pass forward (and, in training, one backward: dx, dw, db
            // together). At inference the rows are written `padded_stride` apart where the
            // packed GEMM reads them (the next op is a linear layer).
            let tracked = x.track_op() || self.weight.track_op() || self.bias.track_op();
            let cols = self.weight.elem_count();
            let ldc = if !tracked && crate::packed_gemm::PackedB::supported(cols) {
                crate::packed_gemm::padded_stride(cols)
            } else {
                cols
            };
            let y = x.contiguous()?.apply_op3(
                &self.weight.contiguous()?,
                &self.bias.contiguous()?,
                LayerNormOp {
                    eps: self.eps as f32,
                    ldc,
                },
            )?;
            return if ldc > cols {
                y.narrow(D::Minus1, 0, cols)
            } else {
                Ok(y)
            };
        }
        if !x.track_op() && !self.weight.track_op() && !self.bias.track_op() && x.is_contiguous() {
            return candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Row mean and 1/σ of one row (two passes, as the composite form; each sum in 16 lanes so
/// that it vectorises).
#[inline]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row, |v| v) / n;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `Σ f(v)` over `row`, accumulated in 16 lanes.
#[inline]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// LayerNorm over the last dimension with its gradient, for training on CPU:
///
/// ```text
/// x̂ = (x − μ) / σ,  y = x̂ ⊙ w + b
/// dx = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ   with g = dy ⊙ w
/// dw = Σ_rows dy ⊙ x̂,  db = Σ_rows dy
/// ```
struct LayerNormOp {
    eps: f32,
    /// Row stride of the output (≥ the width; the padding zeroed). Only the width itself when
    /// a gradient is taken.
    ldc: usize,
}

impl candle_core::CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let x = crate::cpu::slice(s1, l1, "layer-norm")?;
        let w = crate::cpu::slice(s2, l2, "layer-norm")?;
        let b = crate::cpu::slice(s3, l3, "layer-norm")?;
        let cols = w.len();
        if cols == 0 || x.len() % cols != 0 || b.len() != cols {
            candle_core::bail!(
                "layer-norm: weight/bias of {cols} do not fit {:?}",
                l1.dims()
            );
        }
        let (rows, ldc) = (x.len() / cols, self.ldc.max(cols));
        let mut out = vec![0f32; rows * ldc];
        let per = (1 << 14) / cols + 1;
        out.par_chunks_mut(per * ldc)
            .zip(x.par_chunks(per * cols))
            .for_each(|(o, x)| {
                for (o, row) in o.chunks_mut(ldc).zip(x.chunks(cols)) {
                    let (mean, rstd) = moments(row, self.eps);
                    for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(w).zip(b) {
                        *o = (v - mean) * rstd * w + b;
                    }
                }
            });
        let mut dims = l1.dims().to_vec();
        let Some(last) = dims.last_mut() else {
            candle_core::bail!("layer-norm: the input has no dimension to normalise over");
        };
        *last = ldc;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use rayon::prelude::*;
        let cols = w.elem_count();
        let eps = self.eps;
        let (dx, dw, db) = crate::cpu::with_f32(x, |x| {
            crate::cpu::with_f32(w, |w| {
                crate::cpu::with_f32(grad, |g| {
                    let mut dx = vec![0f32; x.len()];
                    let block = ((1 << 14) / cols + 1) * cols;
                    let (dw, db) = dx
                        .par_chunks_mut(block)
                        .zip(x.par_chunks(block).zip(g.par_chunks(block)))
                        .map(|(dx, (x, g))| {
                            let (mut dw, mut db) = (vec![0f32; cols], vec![0f32; cols]);
                            let mut xhat = vec![0f32; cols];
                            for ((dx, x), g) in
                                dx.chunks_mut(cols).zip(x.chunks(cols)).zip(g.chunks(cols))
                            {
                                let (mean, rstd) = moments(x, eps);
                                let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                                for c in 0..cols {
                                    xhat[c] = (x[c] - mean) * rstd;
                                    let gw = g[c] * w[c];
                                    sum_g += gw;
                                    sum_gx += gw * xhat[c];
                                    dw[c] += g[c] * xhat[c];
                                    db[c] += g[c];
                                }
                                let (mg, mgx) = (sum_g / cols as f32, sum_gx / cols as f32);
                                for c in 0..cols {
                                    dx[c] = (g[c] * w[c] - mg - xhat[c] * mgx) * rstd;
                                }
                            }
                            (dw, db)
                        })
                        .reduce(
                            || (vec![0f32; cols], vec![0f32; cols]),
                            |(mut a, mut b), (c, d)| {
                                a.iter_mut().zip(&c).for_each(|(p, q)| *p += q);
                                b.iter_mut().zip(&d).for_each(|(p, q)| *p += q);
                                (a, b)
                            },
                        );
                    (dx, dw, db)
                })
            })
        })???;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, w.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_composite_agree_and_gradients_flow() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2., 4.], [-1., 0., 5.]], &dev).unwrap();
        let w = Var::new(&[1f32, 0.5, 2.], &dev).unwrap();
        let b = Tensor::new(&[0f32, 1., -1.], &dev).unwrap();
        let fused = LayerNorm::new(w.as_tensor().detach(), b.clone(), 1e-5)
            .forward(&x)
            .unwrap();
        let ln = LayerNorm::new(w.as_tensor().clone(), b, 1e-5);
        let comp = ln.forward(&x).unwrap();
        let d = crate::cpu::max_abs_diff(&fused, &comp);
        assert!(d < 1e-5, "{d}");
        let g = comp.sum_all().unwrap().backward().unwrap();
        assert!(g.get(w.as_tensor()).is_some());
    }

    /// At inference the rows are written `padded_stride` apart where the packed GEMM runs:
    /// the values equal candle's layer norm, and a linear layer reading the padded rows in
    /// place gives what it gives on a contiguous copy.
    #[test]
    fn inference_output_is_padded_for_the_packed_gemm() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 2., (2, 3, 64), &dev).unwrap() + 1.5).unwrap();
        let w = Tensor::randn(1f32, 0.5, 64, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.5, 64, &dev).unwrap();
        let y = LayerNorm::new(w.clone(), b.clone(), 1e-5)
            .forward(&x)
            .unwrap();
        let want = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
        assert!(crate::cpu::max_abs_diff(&y, &want) < 1e-5);
        let padded = crate::packed_gemm::PackedB::supported(64);
        assert_eq!(y.stride()[1], if padded { 80 } else { 64 });
        let lin = crate::linear::Linear::new(
            Tensor::randn(0f32, 0.2, (32, 64), &dev).unwrap(),
            Some(Tensor::randn(0f32, 0.2, 32, &dev).unwrap()),
        )
        .unwrap();
        let (in_place, copied) = (
            lin.forward(&y).unwrap(),
            lin.forward(&y.contiguous().unwrap()).unwrap(),
        );
        assert_eq!(crate::cpu::max_abs_diff(&in_place, &copied), 0.0);
    }

    #[test]
    fn fused_training_gradients_match_the_composite() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 2., (3, 5, 16), &dev).unwrap();
        let w = Var::randn(1f32, 0.5, 16, &dev).unwrap();
        let b = Var::randn(0f32, 0.5, 16, &dev).unwrap();
        let up = Tensor::randn(0f32, 1., (3, 5, 16), &dev).unwrap();
        let fused = LayerNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), 1e-5)
            .forward(x.as_tensor())
            .unwrap();
        let xt = x.as_tensor();
        let mean = xt.mean_keepdim(D::Minus1).unwrap();
        let xc = xt.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let comp = xc
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(w.as_tensor())
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
        assert!(max((&fused - &comp).unwrap()) < 1e-5);
        let gf = (fused * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (comp * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            let (a, c) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            let d = max((a - c).unwrap());
            assert!(d < 1e-4 * max(c.clone()).max(1.0), "{d}");
        }
    }
}
