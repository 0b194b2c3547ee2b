//! The official optimiser, `AdaptAdamW` (spec section 3.7), with SegCLIP's parameter groups,
//! freezing and global gradient-norm clipping.
//!
//! Per parameter, at its step t (g = clipped gradient):
//!
//! ```text
//! m = β₁ m + (1 − β₁) g;   v = β₂ v + (1 − β₂) g²
//! lr_t = lr · schedule(t / t_total)
//! p = p · (1 − lr_t · wd)                                  decoupled decay, before the update
//! p = p − lr_t / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)      ε after the bias-corrected root
//! ```
//!
//! candle-nn's `AdamW` differs (it adds ε to √v̂ of bias-corrected v, and is not grouped), so this
//! is our own.

use candle_core::{backprop::GradStore, DType, Tensor, Var};

use crate::comm::Communicator;
use crate::grads::Grads;
use crate::schedule::warmup_cosine;
use crate::Result;

/// Hyper-parameters; the defaults are the official recipe's.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimConfig {
    /// Learning rate of the new modules, `layers2`, `ln_post`, `proj` and the MAE decoder.
    pub lr: f64,
    /// Learning rate of the rest of the backbone (visual `layers0`, the text tower,
    /// `logit_scale`).
    pub lower_lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub warmup: f64,
    pub total_steps: usize,
    /// Global L2 gradient-norm bound.
    pub clip_grad: f64,
    /// Freeze the stem, embeddings and `ln_pre` as the official recipe does. That only makes
    /// sense when they come from a pretrained CLIP; from scratch they must train.
    pub freeze: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 4e-3,
            lower_lr: 4e-6,
            weight_decay: 0.05,
            betas: (0.9, 0.98),
            eps: 1e-6,
            warmup: 0.15,
            total_steps: 1,
            clip_grad: 1.0,
            freeze: true,
        }
    }
}

/// Parameters SegCLIP never trains (spec 3.7): patch stem (a convolutional one too),
/// positional and class embeddings, `ln_pre`, the text token and positional embeddings, the
/// fixed decoder positions.
pub fn is_frozen(name: &str) -> bool {
    name.starts_with("clip.visual.conv_stem.")
        || matches!(
            name,
            "clip.visual.class_embedding"
                | "clip.visual.positional_embedding"
                | "clip.visual.conv1.weight"
                | "clip.visual.ln_pre.weight"
                | "clip.visual.ln_pre.bias"
                | "clip.token_embedding.weight"
                | "clip.positional_embedding"
                | "vis_mae_decoder.decoder_pos_embed"
        )
}

/// Whether `name` trains at the high learning rate.
pub fn is_high_lr(name: &str) -> bool {
    const HIGH: [&str; 6] = [
        "clip.visual.transformer.semantic_layer2.",
        "clip.visual.transformer.layers2.",
        "clip.visual.transformer.layers_mae2.",
        "clip.visual.transformer.reconstruct_layer2.",
        "clip.visual.ln_post.",
        "vis_mae_decoder.",
    ];
    name == "clip.visual.proj" || HIGH.iter().any(|p| name.starts_with(p))
}

struct Param {
    name: String,
    var: Var,
    lr: f64,
    wd: f64,
    m: Option<Tensor>,
    v: Option<Tensor>,
    step: usize,
}

/// The optimiser over named parameters.
pub struct AdaptAdamW {
    params: Vec<Param>,
    cfg: OptimConfig,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// The factor every gradient was multiplied by.
    pub clip_coef: f32,
}

impl AdaptAdamW {
    /// Group `named` parameters the SegCLIP way; frozen ones are left out.
    pub fn new(named: impl IntoIterator<Item = (String, Var)>, cfg: OptimConfig) -> Self {
        let mut params: Vec<Param> = named
            .into_iter()
            .filter(|(n, _)| {
                !(cfg.freeze && is_frozen(n)) && n != "vis_mae_decoder.decoder_pos_embed"
            })
            .map(|(name, var)| Param {
                lr: if is_high_lr(&name) {
                    cfg.lr
                } else {
                    cfg.lower_lr
                },
                wd: if name.contains("bias") {
                    0.0
                } else {
                    cfg.weight_decay
                },
                name,
                var,
                m: None,
                v: None,
                step: 0,
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Self { params, cfg }
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// The scheduled learning rate of a parameter at its step `t`.
    pub fn lr_at(&self, base: f64, t: usize) -> f64 {
        base * warmup_cosine(
            t as f64 / self.cfg.total_steps.max(1) as f64,
            self.cfg.warmup,
        )
    }

    /// The global L2 norm of the trainable parameters' gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f32> {
        self.norm_by(&|_, var: &Var| grads.get(var.as_tensor()).cloned())
    }

    fn norm_by(&self, grad_of: &dyn Fn(&str, &Var) -> Option<Tensor>) -> Result<f32> {
        let mut total = 0f32;
        for p in &self.params {
            if let Some(g) = grad_of(&p.name, &p.var) {
                let sq = match with_cpu_f32(&g, sum_of_squares)? {
                    Some(sq) => sq,
                    None => g
                        .sqr()?
                        .sum_all()?
                        .to_dtype(DType::F32)?
                        .to_scalar::<f32>()?,
                };
                // As the composite form: the per-tensor norm, squared back.
                let n = sq.sqrt();
                total += n * n;
            }
        }
        Ok(total.sqrt())
    }

    /// Clip the global gradient norm at `clip_grad`, then update every parameter that has a
    /// gradient.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepStats> {
        self.step_by(&|_, var: &Var| grads.get(var.as_tensor()).cloned())
    }

    /// [`Self::step`] with gradients gathered by name (micro-batches and workers summed).
    pub fn step_grads(&mut self, grads: &Grads) -> Result<StepStats> {
        self.step_by(&|name, _: &Var| grads.get(name).cloned())
    }

    fn step_by(&mut self, grad_of: &dyn Fn(&str, &Var) -> Option<Tensor>) -> Result<StepStats> {
        let norm = self.norm_by(grad_of)?;
        let coef = (self.cfg.clip_grad as f32 / (norm + 1e-6)).min(1.0);
        self.apply(grad_of, coef)?;
        Ok(StepStats {
            grad_norm: norm,
            clip_coef: coef,
        })
    }

    /// Add the trainable parameters' gradients in `store` to `into`, by name.
    pub fn collect(&self, store: &GradStore, into: &mut Grads) -> Result<()> {
        for p in &self.params {
            if let Some(g) = store.get(p.var.as_tensor()) {
                into.add(&p.name, g)?;
            }
        }
        Ok(())
    }

    /// Sum `grads` over the workers of `comm`, every trainable parameter in one buffer (a
    /// parameter without a gradient on some worker counts as zeros there).
    pub fn all_reduce(&self, grads: &mut Grads, comm: &dyn Communicator) -> Result<()> {
        if comm.world_size() == 1 {
            return Ok(());
        }
        let mut flat = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let g = match grads.get(&p.name) {
                Some(g) => g.clone(),
                None => p.var.as_tensor().zeros_like()?,
            };
            flat.push(g.to_dtype(DType::F32)?.flatten_all()?);
        }
        let summed = comm.all_reduce_sum(&Tensor::cat(&flat, 0)?)?;
        let mut offset = 0;
        for p in &self.params {
            let t = p.var.as_tensor();
            let n = t.elem_count();
            let g = summed
                .narrow(0, offset, n)?
                .reshape(t.shape())?
                .to_dtype(t.dtype())?;
            grads.set(&p.name, g);
            offset += n;
        }
        Ok(())
    }

    /// Update each parameter whose gradient `grad_of(name, var)` gives, scaled by `coef`.
    pub fn apply(
        &mut self,
        grad_of: &dyn Fn(&str, &Var) -> Option<Tensor>,
        coef: f32,
    ) -> Result<()> {
        let (b1, b2) = self.cfg.betas;
        for i in 0..self.params.len() {
            let Some(g) = grad_of(&self.params[i].name, &self.params[i].var) else {
                continue;
            };
            // Gradients carry the op history of the backward pass (which references the whole
            // forward graph); keeping them in the moments would keep every step's graph alive.
            let g = g.detach();
            if let Some(()) = fused_cpu_update(&mut self.params[i], &g, coef, &self.cfg)? {
                continue;
            }
            let g = if coef == 1.0 { g } else { (g * coef as f64)? };
            let p = &mut self.params[i];
            p.step += 1;
            let t = p.step;
            let m = match &p.m {
                Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                None => (&g * (1.0 - b1))?,
            };
            // PyTorch's `addcmul_(g, g, value)` order: (value · g) · g.
            let gg = ((&g * (1.0 - b2))? * &g)?;
            let v = match &p.v {
                Some(v) => ((v * b2)? + gg)?,
                None => gg,
            };
            let lr_t = p.lr
                * warmup_cosine(
                    t as f64 / self.cfg.total_steps.max(1) as f64,
                    self.cfg.warmup,
                );
            let bc1 = 1.0 - b1.powi(t as i32);
            let bc2 = 1.0 - b2.powi(t as i32);
            let denom = ((v.sqrt()? / bc2.sqrt())? + self.cfg.eps)?;
            let mut value = p.var.as_tensor().detach();
            if p.wd != 0.0 {
                value = (value * (1.0 - lr_t * p.wd))?;
            }
            let value = (value - ((&m * (lr_t / bc1))? / denom)?)?;
            p.var.set(&value)?;
            p.m = Some(m);
            p.v = Some(v);
        }
        Ok(())
    }

    /// The moments and step counts, as tensors named `m.<param>`, `v.<param>`, `t.<param>`
    /// (copies: the moments are updated in place).
    pub fn state(&self) -> Result<std::collections::HashMap<String, Tensor>> {
        let mut out = std::collections::HashMap::new();
        for p in &self.params {
            if let (Some(m), Some(v)) = (&p.m, &p.v) {
                out.insert(format!("m.{}", p.name), m.copy()?);
                out.insert(format!("v.{}", p.name), v.copy()?);
                out.insert(
                    format!("t.{}", p.name),
                    Tensor::new(p.step as u32, m.device())?,
                );
            }
        }
        Ok(out)
    }

    /// Restore what [`AdaptAdamW::state`] saved.
    pub fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for p in &mut self.params {
            if let (Some(m), Some(v), Some(t)) = (
                state.get(&format!("m.{}", p.name)),
                state.get(&format!("v.{}", p.name)),
                state.get(&format!("t.{}", p.name)),
            ) {
                let dev = p.var.as_tensor().device();
                // Own copies: the moments are updated in place.
                p.m = Some(m.to_device(dev)?.copy()?);
                p.v = Some(v.to_device(dev)?.copy()?);
                p.step = t.to_scalar::<u32>()? as usize;
            }
        }
        Ok(())
    }

    /// Clamp `clip.logit_scale` at ln(max) after a step (official: ln 100).
    pub fn clamp_logit_scale(&self, max_exp: f64) -> Result<()> {
        if let Some(p) = self.params.iter().find(|p| p.name == "clip.logit_scale") {
            let v = p
                .var
                .as_tensor()
                .clamp(f32::NEG_INFINITY, max_exp.ln() as f32)?;
            p.var.set(&v)?;
        }
        Ok(())
    }
}

/// `Σ x²` in fixed chunks (16 partial sums each, chunks in parallel, their sums added in
/// order): vectorised and multi-threaded, and the same value whatever the thread count.
fn sum_of_squares(x: &[f32]) -> f32 {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    const LANES: usize = 16;
    let partial = |c: &[f32]| {
        let mut acc = [0f32; LANES];
        let mut rows = c.chunks_exact(LANES);
        for row in &mut rows {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v * v;
            }
        }
        for (a, v) in acc.iter_mut().zip(rows.remainder()) {
            *a += v * v;
        }
        acc.iter().sum::<f32>()
    };
    let sums: Vec<f32> = x.par_chunks(CHUNK).map(partial).collect();
    sums.iter().sum()
}

/// Run `f` on the f32 values of a CPU f32 tensor (made contiguous); `None` on other devices
/// and dtypes.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    use candle_core::{CpuStorage, Storage};
    if !t.device().is_cpu() || t.dtype() != DType::F32 {
        return Ok(None);
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) =
        (&*storage, layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    Ok(Some(f(&data[a..b])))
}

/// An in-place op that hands the f32 values of a contiguous CPU tensor to a closure.
struct Mutate<F>(std::cell::RefCell<F>);

impl<F: FnMut(&mut [f32]) -> candle_core::Result<()>> candle_core::InplaceOp1 for Mutate<F> {
    fn name(&self) -> &'static str {
        "mutate-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let (candle_core::CpuStorage::F32(data), Some((a, b))) =
            (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("mutate-f32: not a contiguous f32 tensor");
        };
        (self.0.borrow_mut())(&mut data[a..b])
    }
}

/// Run `f` on the values of `t` in place (a contiguous CPU f32 tensor; its storage is
/// shared with every clone of `t`, a `Var`'s included).
fn with_mut_f32(
    t: &Tensor,
    f: impl FnMut(&mut [f32]) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    t.inplace_op1(&Mutate(std::cell::RefCell::new(f)))
}

/// The update of [`AdaptAdamW::apply`] for one CPU f32 parameter in a single pass over
/// (p, g, m, v), with the composite form's operations in the same order and f32 constants
/// (so the result matches it to the last bit or so); `None` when not applicable.
fn fused_cpu_update(p: &mut Param, g: &Tensor, coef: f32, cfg: &OptimConfig) -> Result<Option<()>> {
    use rayon::prelude::*;
    let value = p.var.as_tensor();
    let on_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !on_cpu(value) || !on_cpu(g) || p.m.as_ref().is_some_and(|m| !on_cpu(m)) {
        return Ok(None);
    }
    let (b1, b2) = cfg.betas;
    let t = p.step + 1;
    let lr_t = p.lr * warmup_cosine(t as f64 / cfg.total_steps.max(1) as f64, cfg.warmup);
    let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
    let k = [
        coef as f64 as f32,
        b1 as f32,
        (1.0 - b1) as f32,
        b2 as f32,
        (1.0 - b2) as f32,
        (1.0 / bc2.sqrt()) as f32,
        cfg.eps as f32,
        (1.0 - lr_t * p.wd) as f32,
        (lr_t / bc1) as f32,
    ];
    let scale = coef != 1.0;
    let decays = p.wd != 0.0;
    if !value.is_contiguous() || g.elem_count() != value.elem_count() {
        return Ok(None);
    }
    // The moments live in their own tensors, updated in place like the parameter: no
    // allocation, no copy (zeros at the first step give the composite form's first values).
    if p.m.is_none() || p.v.is_none() {
        p.m = Some(value.zeros_like()?);
        p.v = Some(value.zeros_like()?);
    }
    let (m, v) = (p.m.clone().unwrap(), p.v.clone().unwrap());
    let update = |pv: &mut [f32], mv: &mut [f32], vv: &mut [f32], gv: &[f32]| {
        const CHUNK: usize = 1 << 14;
        pv.par_chunks_mut(CHUNK)
            .zip(mv.par_chunks_mut(CHUNK))
            .zip(vv.par_chunks_mut(CHUNK))
            .zip(gv.par_chunks(CHUNK))
            .for_each(|(((pc, mc), vc), gc)| match (scale, decays) {
                (false, false) => adamw_chunk::<false, false>(pc, mc, vc, gc, &k),
                (false, true) => adamw_chunk::<false, true>(pc, mc, vc, gc, &k),
                (true, false) => adamw_chunk::<true, false>(pc, mc, vc, gc, &k),
                (true, true) => adamw_chunk::<true, true>(pc, mc, vc, gc, &k),
            });
    };
    with_mut_f32(value, |pv| {
        with_mut_f32(&m, |mv| {
            with_mut_f32(&v, |vv| {
                match with_cpu_f32(g, |gv| update(&mut *pv, &mut *mv, &mut *vv, gv)) {
                    Ok(Some(())) => Ok(()),
                    Ok(None) => candle_core::bail!("gradient is not a CPU f32 tensor"),
                    Err(e) => candle_core::bail!("{e}"),
                }
            })
        })
    })?;
    p.step = t;
    Ok(Some(()))
}

/// One chunk of the fused AdamW update, `k` = [coef, β₁, 1−β₁, β₂, 1−β₂, 1/√bc₂, ε, 1−lr·wd,
/// lr/bc₁]: indexed loops over equal lengths with the branches hoisted into the type, so the
/// compiler vectorises it (the same IEEE operations in the same order per element: the same
/// bits as a scalar loop), in AVX-512 registers where the processor has them.
fn adamw_chunk<const SCALE: bool, const DECAY: bool>(
    x: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    k: &[f32; 9],
) {
    #[inline(always)]
    fn body<const SCALE: bool, const DECAY: bool>(
        x: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        k: &[f32; 9],
    ) {
        let [c, b1, nb1, b2, nb2, rbc2, eps, decay, step] = *k;
        let n = x.len().min(m.len()).min(v.len()).min(g.len());
        let (x, m, v, g) = (&mut x[..n], &mut m[..n], &mut v[..n], &g[..n]);
        for i in 0..n {
            let g = if SCALE { g[i] * c } else { g[i] };
            m[i] = m[i] * b1 + g * nb1;
            v[i] = v[i] * b2 + (g * nb2) * g;
            let denom = v[i].sqrt() * rbc2 + eps;
            if DECAY {
                x[i] *= decay;
            }
            x[i] -= (m[i] * step) / denom;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn body_avx512<const SCALE: bool, const DECAY: bool>(
        x: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        k: &[f32; 9],
    ) {
        body::<SCALE, DECAY>(x, m, v, g, k)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has the features the function was compiled for.
        return unsafe { body_avx512::<SCALE, DECAY>(x, m, v, g, k) };
    }
    body::<SCALE, DECAY>(x, m, v, g, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The in-place CPU update against the module doc's formulas in f64, over three steps (the
    /// moments' first values and their updates), with decay and a clip coefficient.
    #[test]
    fn in_place_update_follows_the_formulas() {
        let cfg = OptimConfig {
            lr: 1e-2,
            lower_lr: 1e-2,
            total_steps: 10,
            warmup: 0.0,
            freeze: false,
            ..Default::default()
        };
        let p0 = [0.5f32, -1.0, 2.0, 0.0];
        let var = Var::from_slice(&p0, 4, &Device::Cpu).unwrap();
        let mut opt = AdaptAdamW::new([("blocks.w".to_string(), var.clone())], cfg.clone());
        let grads = [
            [0.1f32, -0.2, 0.3, 0.0],
            [1.0, 0.5, -0.5, 2.0],
            [-0.3, 0.0, 0.1, 1.0],
        ];
        let coef = 0.5f64;
        let (mut p, mut m, mut v) = (p0.map(|x| x as f64), [0f64; 4], [0f64; 4]);
        let (b1, b2) = cfg.betas;
        for (t, g) in grads.iter().enumerate() {
            let gt = Tensor::from_slice(g, 4, &Device::Cpu).unwrap();
            opt.apply(&|_, _| Some(gt.clone()), coef as f32).unwrap();
            let t = t + 1;
            let lr = cfg.lr * warmup_cosine(t as f64 / cfg.total_steps as f64, cfg.warmup);
            for j in 0..4 {
                let g = g[j] as f64 * coef;
                m[j] = b1 * m[j] + (1.0 - b1) * g;
                v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                p[j] *= 1.0 - lr * cfg.weight_decay;
                let denom = v[j].sqrt() / (1.0 - b2.powi(t as i32)).sqrt() + cfg.eps;
                p[j] -= lr / (1.0 - b1.powi(t as i32)) * m[j] / denom;
            }
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            for j in 0..4 {
                assert!(
                    (got[j] as f64 - p[j]).abs() < 1e-6,
                    "step {t}: {got:?} vs {p:?}"
                );
            }
        }
        // The moments are saved for checkpoints.
        let state = opt.state().unwrap();
        let saved_m = state["m.blocks.w"].to_vec1::<f32>().unwrap();
        for j in 0..4 {
            assert!((saved_m[j] as f64 - m[j]).abs() < 1e-7);
        }
    }

    /// The two rates land on the right groups; frozen names are left out.
    #[test]
    fn groups_take_their_rates() {
        let names = [
            "clip.visual.transformer.semantic_layer2.centers",
            "clip.visual.proj",
            "clip.visual.transformer.layers0.0.attn.in_proj_weight",
            "clip.transformer.resblocks.0.attn.in_proj_weight",
            "clip.logit_scale",
            "clip.visual.conv1.weight",
        ];
        let named = names.map(|n| {
            (
                n.to_string(),
                Var::zeros(2, DType::F32, &Device::Cpu).unwrap(),
            )
        });
        let cfg = OptimConfig {
            lr: 1.0,
            lower_lr: 0.01,
            ..Default::default()
        };
        let opt = AdaptAdamW::new(named, cfg);
        let rates: Vec<(&str, f64)> = opt.params.iter().map(|p| (p.name.as_str(), p.lr)).collect();
        // Sorted by name; conv1 is frozen.
        assert_eq!(
            rates,
            [
                ("clip.logit_scale", 0.01),
                ("clip.transformer.resblocks.0.attn.in_proj_weight", 0.01),
                ("clip.visual.proj", 1.0),
                (
                    "clip.visual.transformer.layers0.0.attn.in_proj_weight",
                    0.01
                ),
                ("clip.visual.transformer.semantic_layer2.centers", 1.0),
            ]
        );
    }
}
