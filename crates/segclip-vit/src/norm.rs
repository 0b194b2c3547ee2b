//! LayerNorm that is fast at inference and differentiable in training.
//!
//! candle-nn's fused layer-norm kernel has no backward pass, so it is used only when nothing
//! tracks gradients; otherwise the normalisation is composed of tensor ops (the same formula:
//! `(x − mean) / √(var + eps) · w + b`, biased variance).

use candle_core::{Module, Tensor, D};
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
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
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
        let d = (&fused - &comp)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
        let g = comp.sum_all().unwrap().backward().unwrap();
        assert!(g.get(w.as_tensor()).is_some());
    }
}
