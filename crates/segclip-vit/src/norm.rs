//! LayerNorm that is fast at inference and differentiable in training.
//!
//! candle-nn's fused layer-norm kernel has no backward pass, so it is used only when nothing
//! tracks gradients; otherwise the normalisation is composed of tensor ops (the same formula:
//! `(x − mean) / √(var + eps) · w + b`, biased variance).

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
        let tracked = x.track_op() || self.weight.track_op() || self.bias.track_op();
        if !tracked && x.is_contiguous() {
            return candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32);
        }
        if [x, &self.weight, &self.bias]
            .iter()
            .all(|t| crate::cpu::is_cpu_f32(t))
        {
            // Training on CPU: one fused pass forward and one backward (dx, dw, db together).
            return x.contiguous()?.apply_op3(
                &self.weight.contiguous()?,
                &self.bias.contiguous()?,
                LayerNormOp {
                    eps: self.eps as f32,
                },
            );
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Row mean and 1/σ of one row (two passes, as the composite form).
#[inline]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
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
        let mut out = vec![0f32; x.len()];
        let block = ((1 << 14) / cols + 1) * cols;
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .for_each(|(o, x)| {
                for (o, row) in o.chunks_mut(cols).zip(x.chunks(cols)) {
                    let (mean, rstd) = moments(row, self.eps);
                    for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(w).zip(b) {
                        *o = (v - mean) * rstd * w + b;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
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
