//! A convolutional patch stem: 3×3, stride-2 convolutions with ReLU between them in place of
//! CLIP's single p×p, stride-p `conv1` (Xiao et al., "Early Convolutions Help Transformers See
//! Better", NeurIPS 2021). `k` convolutions give stride 2^k, so a patch size of 8 takes three:
//! 3 → c₁ → c₂ → width. Not part of SegCLIP or CLIP: the small learning-benchmark model uses it
//! because a patchify stem trained from scratch learns shapes far too slowly for its budget
//! (`docs/deviations.md`).
//!
//! Keys: `conv_stem.{i}.weight` (c_out, c_in, 3, 3) as PyTorch's `Conv2d` stores it, and
//! `conv_stem.{i}.bias` for every convolution but the last (which, like `conv1`, has none: a
//! positional embedding and `ln_pre` follow).
//!
//! Each convolution is an im2col (the nine taps of every output position side by side, channels
//! last) and one matmul. On the CPU the im2col is one autograd node (`Im2Col`, its gradient the
//! matching col2im); elsewhere it is built from shifted views of the zero-padded input, which
//! every candle device runs and differentiates.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::cpu::{is_cpu_f32, slice};
use crate::{Error, Result, VisionConfig};

#[derive(Debug, Clone)]
pub struct ConvStem {
    /// (weight (c_out, c_in, 3, 3), bias (c_out)) per convolution.
    convs: Vec<(Tensor, Option<Tensor>)>,
}

/// Channels in and out of every convolution of `cfg`'s stem: 3 → `conv_stem`… → width.
pub fn conv_channels(cfg: &VisionConfig) -> Vec<(usize, usize)> {
    let mut chans = vec![3];
    chans.extend(&cfg.conv_stem);
    chans.push(cfg.width);
    chans.windows(2).map(|w| (w[0], w[1])).collect()
}

impl ConvStem {
    pub fn new(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let layers = conv_channels(cfg);
        if 1usize << layers.len() != cfg.patch_size {
            return Err(Error::Config(format!(
                "a stem of {} stride-2 convolutions has stride {}, not the patch size {}",
                layers.len(),
                1usize << layers.len(),
                cfg.patch_size
            )));
        }
        let last = layers.len() - 1;
        let convs = layers
            .iter()
            .enumerate()
            .map(|(i, &(ci, co))| {
                let vb = vb.pp(i);
                let bias = (i < last).then(|| vb.get(co, "bias")).transpose()?;
                Ok((vb.get((co, ci, 3, 3), "weight")?, bias))
            })
            .collect::<Result<_>>()?;
        Ok(Self { convs })
    }

    /// Normalised pixels (B, 3, H, W), H and W multiples of the patch size → patch tokens
    /// (B, (H/p)·(W/p), width), row-major.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = pixels.permute((0, 2, 3, 1))?.contiguous()?;
        let last = self.convs.len() - 1;
        for (i, (w, b)) in self.convs.iter().enumerate() {
            x = conv3x3_s2(&x, w, b.as_ref())?;
            if i < last {
                x = x.relu()?;
            }
        }
        let (b, h, w, c) = x.dims4()?;
        Ok(x.reshape((b, h * w, c))?)
    }
}

/// A 3×3 convolution with stride 2 and zero padding 1 on channels-last input (B, H, W, C), H
/// and W even: (B, H/2, W/2, c_out). `weight` is (c_out, C, 3, 3).
pub fn conv3x3_s2(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        return Err(Error::Config(format!(
            "the convolutional stem needs even sides, got {h}x{w}"
        )));
    }
    let (ho, wo) = (h / 2, w / 2);
    let cols = if is_cpu_f32(x) {
        x.contiguous()?.apply_op1(Im2Col)?
    } else {
        im2col_views(x)?
    };
    // Columns in (ky, kx, channel) order; the weight permuted to match.
    let cols = cols.reshape((b * ho * wo, 9 * c))?;
    let co = weight.dim(0)?;
    let wmat = weight
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((co, 9 * c))?;
    let mut y = cols.matmul(&wmat.t()?)?;
    if let Some(bias) = bias {
        y = y.broadcast_add(bias)?;
    }
    Ok(y.reshape((b, ho, wo, co))?)
}

/// (B, H, W, C) → (B, H/2, W/2, 9·C): tap (ky, kx) of output (oy, ox) is input
/// (2·oy + ky − 1, 2·ox + kx − 1), zero outside, in (ky, kx, channel) order.
fn im2col_views(x: &Tensor) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    // Padded row 2·o + k is row o + k/2 of parity k%2: split rows and columns by parity.
    let xp = x
        .pad_with_zeros(1, 1, 1)?
        .pad_with_zeros(2, 1, 1)?
        .reshape((b, ho + 1, 2, wo + 1, 2, c))?;
    let mut taps = Vec::with_capacity(9);
    for ky in 0..3 {
        let rows = xp.narrow(1, ky / 2, ho)?.narrow(2, ky % 2, 1)?;
        for kx in 0..3 {
            let tap = rows.narrow(3, kx / 2, wo)?.narrow(4, kx % 2, 1)?;
            taps.push(tap.contiguous()?.reshape((b, ho, wo, c))?);
        }
    }
    Ok(Tensor::cat(&taps, D::Minus1)?)
}

/// [`im2col_views`] as one CPU node: copies of whole channel runs, and a col2im gradient.
struct Im2Col;

/// For output index `o` and tap `k`: the input index 2·o + k − 1, if inside `0..n`.
fn source(o: usize, k: usize, n: usize) -> Option<usize> {
    (2 * o + k).checked_sub(1).filter(|&i| i < n)
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-3x3-s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "im2col")?;
        let (b, h, w, c) = l.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let mut out = vec![0f32; b * ho * wo * 9 * c];
        out.par_chunks_mut(wo * 9 * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let (bi, oy) = (row / ho, row % ho);
                for ky in 0..3 {
                    let Some(iy) = source(oy, ky, h) else {
                        continue;
                    };
                    let src = &x[(bi * h + iy) * w * c..][..w * c];
                    for ox in 0..wo {
                        for kx in 0..3 {
                            if let Some(ix) = source(ox, kx, w) {
                                let at = (ox * 9 + ky * 3 + kx) * c;
                                dst[at..at + c].copy_from_slice(&src[ix * c..(ix + 1) * c]);
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), (b, ho, wo, 9 * c).into()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, h, w, c) = arg.dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let mut dx = vec![0f32; b * h * w * c];
        crate::cpu::with_f32(grad, |g| {
            // One image per task: the taps of different images never meet.
            dx.par_chunks_mut(h * w * c)
                .zip(g.par_chunks(ho * wo * 9 * c))
                .for_each(|(dst, g)| {
                    for oy in 0..ho {
                        for ky in 0..3 {
                            let Some(iy) = source(oy, ky, h) else {
                                continue;
                            };
                            for ox in 0..wo {
                                for kx in 0..3 {
                                    if let Some(ix) = source(ox, kx, w) {
                                        let from =
                                            &g[((oy * wo + ox) * 9 + ky * 3 + kx) * c..][..c];
                                        let to = &mut dst[(iy * w + ix) * c..][..c];
                                        for (t, f) in to.iter_mut().zip(from) {
                                            *t += f;
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_abs_diff as diff;
    use candle_core::{Device, Var};

    #[test]
    fn equals_candles_conv2d_forward_and_gradients() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 6, 8), &dev).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 3, 3, 3), &dev).unwrap()).unwrap();
        let bias = Var::from_tensor(&Tensor::new(&[0.5f32, -1., 2., 0.], &dev).unwrap()).unwrap();
        let ours = conv3x3_s2(
            &x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap(),
            w.as_tensor(),
            Some(bias.as_tensor()),
        )
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
        let theirs = x
            .conv2d(w.as_tensor(), 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(ours.dims(), &[2, 4, 3, 4]);
        assert!(diff(&ours, &theirs) < 1e-5);
        // Same gradients for a weighted sum of the outputs.
        let r = Tensor::randn(0f32, 1., (2, 4, 3, 4), &dev).unwrap();
        let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&theirs * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&w, &bias] {
            let (a, b) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(diff(a, b) < 1e-4, "{}", diff(a, b));
        }
    }

    #[test]
    fn the_cpu_node_equals_the_shifted_views_with_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 6, 4, 5), &dev).unwrap()).unwrap();
        let a = x.as_tensor().apply_op1(Im2Col).unwrap();
        let b = im2col_views(x.as_tensor()).unwrap();
        assert_eq!(a.dims(), &[2, 3, 2, 45]);
        let d = (&a - &b).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        let r = Tensor::randn(0f32, 1., a.shape(), &dev).unwrap();
        let ga = (&a * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let d = (ga.get(&x).unwrap() - gb.get(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap();
        assert!(
            d.flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                < 1e-5
        );
    }

    #[test]
    fn one_pixel_through_a_hand_checked_kernel() {
        // A 4×6 image with a single 1 at (row 2, column 3); kernel values 1…9 row-major.
        let dev = Device::Cpu;
        let mut img = vec![0f32; 24];
        img[2 * 6 + 3] = 1.0;
        let x = Tensor::from_vec(img, (1, 4, 6, 1), &dev).unwrap();
        let k: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let w = Tensor::from_vec(k, (1, 1, 3, 3), &dev).unwrap();
        let y = conv3x3_s2(&x, &w, None).unwrap();
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        // Output (oy, ox) reads input (2oy + ky − 1, 2ox + kx − 1): the 1 is read by (1, 1)
        // at (ky, kx) = (1, 2) → 6 and by (1, 2) at (1, 0) → 4.
        assert_eq!(y, vec![0., 0., 0., 0., 6., 4.]);
    }
}
