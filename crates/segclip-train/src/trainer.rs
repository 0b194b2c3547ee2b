//! The training step and its state: model parameters as `Var`s, the optimiser, the RNG and the
//! step counter, with checkpoint save and resume.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use segclip_data::transforms::Rng;
use segclip_group::SegClipConfig;
use segclip_losses::losses::contrastive;
use segclip_losses::{Batch, LossWeights, Noise, TrainingModel};
use segclip_vit::StateDict;

use crate::batch::sample_noise;
use crate::checkpoint::{self, CheckpointData};
use crate::comm::{Communicator, SingleProcess};
use crate::grads::Grads;
use crate::init::fresh;
use crate::optim::{AdaptAdamW, OptimConfig};
use crate::{Error, Result};

/// What one step did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f32,
    pub contrastive: f32,
    pub kl: f32,
    pub mae: f32,
    /// The mixed-pair contrastive loss (0 when off).
    pub mix: f32,
    pub grad_norm: f32,
    pub lr: f64,
    /// The loss was not finite and the update was skipped.
    pub skipped: bool,
    /// Centers that received at least one patch in the plain pass.
    pub centers_used: usize,
    /// Wall time of the forward, the backward and the optimiser update, in milliseconds.
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub update_ms: f64,
}

pub struct Trainer {
    pub cfg: SegClipConfig,
    pub varmap: VarMap,
    pub model: TrainingModel,
    pub opt: AdaptAdamW,
    pub weights: LossWeights,
    pub rng: Rng,
    pub step: usize,
    pub mask_ratio: f64,
    device: Device,
}

impl Trainer {
    /// Parameters from `init` where it has them (e.g. OpenAI CLIP weights renamed to SegCLIP
    /// keys), fresh ones elsewhere.
    /// Without `init` (training from scratch) nothing is frozen, whatever `optim.freeze` says.
    pub fn new(
        cfg: &SegClipConfig,
        init: Option<&StateDict>,
        mut optim: OptimConfig,
        weights: LossWeights,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        optim.freeze &= init.is_some();
        let mut rng = Rng::new(seed);
        let varmap = VarMap::new();
        let (req, opt) = cfg.keys();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::Config("poisoned parameter store".into()))?;
            for (key, shape) in req.iter().chain(&opt) {
                let t = match init.and_then(|sd| sd.tensors.get(key)) {
                    Some(t) if t.dims() == shape.as_slice() => {
                        t.to_dtype(DType::F32)?.to_device(device)?
                    }
                    Some(t) => {
                        return Err(Error::Config(format!(
                            "initial weights: `{key}` has shape {:?}, the model expects {shape:?}",
                            t.dims()
                        )))
                    }
                    None => fresh(key, shape, cfg.vision.grid(), &mut rng, device)?,
                };
                data.insert(key.clone(), Var::from_tensor(&t)?);
            }
        }
        let model = TrainingModel::new(VarBuilder::from_varmap(&varmap, DType::F32, device), cfg)?;
        let named: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("poisoned".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            opt: AdaptAdamW::new(named, optim),
            varmap,
            model,
            weights,
            rng,
            step: 0,
            mask_ratio: 0.75,
            device: device.clone(),
        })
    }

    /// One step on `batch` on one worker, without accumulation: forward with fresh noise,
    /// backward, clip, update, clamp the logit scale. A non-finite loss skips the update.
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepLog> {
        let noise = self.sample_noise(batch.len())?;
        self.step_with(batch, &noise, 1, &SingleProcess)
    }

    /// The step's noise for `b` samples, from the trainer's RNG.
    pub fn sample_noise(&mut self, b: usize) -> Result<Noise> {
        let n = self.cfg.vision.grid() * self.cfg.vision.grid();
        sample_noise(
            &mut self.rng,
            b,
            self.cfg.group.num_centers,
            n,
            self.mask_ratio,
            &self.device,
        )
    }

    /// One step of this worker on its `batch` (and its `noise`), split into `micro` equal
    /// micro-batches, the contrastive loss taken over the batches of all workers of `comm`.
    ///
    /// The gradient is the one of a single batch made of every worker's samples, whatever
    /// `micro` and the number of workers: with `micro` = 1 on one worker the step is a plain
    /// forward and backward; otherwise it is the cached-embedding two-pass scheme (GradCache,
    /// Gao et al. 2021):
    ///
    /// ```text
    /// pass 1, no graph kept:  t_j, v_j = embeddings of micro-batch j           (b/micro, D)
    /// T, V = all_gather(cat_j t_j), all_gather(cat_j v_j)                      (b·W, D)
    /// L_con(T, V, s) on the whole batch; dT, dV, ds = ∂(w_c·L_con)/∂(T, V, s)
    /// pass 2, per micro-batch, same noise:
    ///     backward of  Σ t_j ⊙ dT_j + Σ v_j ⊙ dV_j + (w_kl·L_kl,j + w_mae·L_mae,j) / (micro·W)
    /// grads = all_reduce_sum(Σ_j grads_j + ds / W)
    /// ```
    ///
    /// Every worker computes the same L_con on the gathered embeddings, so no reduce-scatter is
    /// needed; the KL and reconstruction losses are per-sample means, averaged over micro-batches
    /// and workers as the official DDP average does.
    pub fn step_with(
        &mut self,
        batch: &Batch,
        noise: &Noise,
        micro: usize,
        comm: &dyn Communicator,
    ) -> Result<StepLog> {
        self.step += 1;
        let (mut log, grads) = self.gradients(batch, noise, micro, comm)?;
        log.step = self.step;
        log.lr = self.opt.lr_at(self.opt.config().lr, self.step);
        let Some(grads) = grads else {
            return Ok(log);
        };
        let t2 = std::time::Instant::now();
        let stats = self.opt.step_grads(&grads)?;
        self.opt.clamp_logit_scale(self.cfg.logit_scale_max)?;
        log.grad_norm = stats.grad_norm;
        log.update_ms = ms(t2);
        Ok(log)
    }

    /// The gradients of the trainable parameters for [`Self::step_with`], summed over
    /// micro-batches and workers, and the step's log; `None` when the loss is not finite.
    pub fn gradients(
        &mut self,
        batch: &Batch,
        noise: &Noise,
        micro: usize,
        comm: &dyn Communicator,
    ) -> Result<(StepLog, Option<Grads>)> {
        let b = batch.len();
        if micro == 0 || !b.is_multiple_of(micro) {
            return Err(Error::Config(format!(
                "a batch of {b} does not split into {micro} equal micro-batches"
            )));
        }
        let t0 = std::time::Instant::now();
        let mut log = StepLog {
            step: self.step,
            loss: f32::NAN,
            contrastive: f32::NAN,
            kl: f32::NAN,
            mae: f32::NAN,
            mix: 0.0,
            grad_norm: f32::NAN,
            lr: self.opt.lr_at(self.opt.config().lr, self.step),
            skipped: false,
            centers_used: 0,
            forward_ms: 0.0,
            backward_ms: 0.0,
            update_ms: 0.0,
        };
        let grads = if micro == 1 && comm.world_size() == 1 {
            let losses = self.model.forward(batch, noise, &self.weights, None)?;
            log.contrastive = scalar(&losses.contrastive)?;
            log.kl = scalar(&losses.kl)?;
            log.mae = scalar(&losses.mae)?;
            log.mix = scalar(&losses.mix)?;
            log.loss = scalar(&losses.total)?;
            log.centers_used = centers_used(&losses.hard)?;
            log.forward_ms = ms(t0);
            if !log.loss.is_finite() {
                log.skipped = true;
                return Ok((log, None));
            }
            let t1 = std::time::Instant::now();
            let store = losses.total.backward()?;
            let mut grads = Grads::new();
            self.opt.collect(&store, &mut grads)?;
            log.backward_ms = ms(t1);
            grads
        } else {
            match self.grad_cache(batch, noise, micro, comm, &mut log)? {
                Some(g) => g,
                None => return Ok((log, None)),
            }
        };
        Ok((log, Some(grads)))
    }

    /// The two passes of [`Self::step_with`]; `None` when the loss is not finite (the update is
    /// skipped, on every worker alike since the contrastive loss is the same everywhere).
    fn grad_cache(
        &mut self,
        batch: &Batch,
        noise: &Noise,
        micro: usize,
        comm: &dyn Communicator,
        log: &mut StepLog,
    ) -> Result<Option<Grads>> {
        let t0 = std::time::Instant::now();
        let (b, world) = (batch.len(), comm.world_size());
        let mb = b / micro;
        let chunks = (0..micro)
            .map(|j| Ok((batch.narrow(j * mb, mb)?, noise.narrow(j * mb, mb)?)))
            .collect::<Result<Vec<_>>>()?;
        // Pass 1: embeddings only, detached.
        let embed_only = LossWeights {
            kl: 0.0,
            mae: 0.0,
            ..self.weights
        };
        let mix = self.weights.mix != 0.0;
        let (mut ts, mut vs, mut xs) = (Vec::new(), Vec::new(), Vec::new());
        for (bj, nj) in &chunks {
            let p = self.model.parts(bj, nj, &embed_only, None)?;
            ts.push(p.text_emb.detach());
            vs.push(p.image_emb.detach());
            if let Some(x) = p.mixed {
                xs.push(x.detach());
            }
        }
        let gather = |parts: &[Tensor]| -> Result<Var> {
            Ok(Var::from_tensor(
                &comm.all_gather(&Tensor::cat(parts, 0)?)?,
            )?)
        };
        let t_all = gather(&ts)?;
        let v_all = gather(&vs)?;
        let x_all = if mix { Some(gather(&xs)?) } else { None };
        let m = &self.model.model;
        let con = |v: &Var| {
            contrastive(
                t_all.as_tensor(),
                v.as_tensor(),
                &m.logit_scale,
                m.config().logit_scale_max,
            )
            .map(|(l, _)| l)
        };
        let l_con = con(&v_all)?;
        log.contrastive = scalar(&l_con)?;
        let mut coupled = (&l_con * self.weights.contrastive)?;
        if let Some(x) = &x_all {
            let l_mix = con(x)?;
            log.mix = scalar(&l_mix)?;
            coupled = (coupled + (l_mix * self.weights.mix)?)?;
        }
        if !scalar(&coupled)?.is_finite() {
            log.skipped = true;
            log.loss = scalar(&coupled)?;
            return Ok(None);
        }
        let store = coupled.backward()?;
        // This worker's rows of the cached gradient of `v` (zero where it did not reach).
        let cached = |v: &Var| -> Result<Tensor> {
            let g = match store.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => v.as_tensor().zeros_like()?,
            };
            Ok(g.narrow(0, comm.rank() * b, b)?)
        };
        let (d_t, d_v) = (cached(&t_all)?, cached(&v_all)?);
        let d_x = x_all.as_ref().map(cached).transpose()?;
        let mut grads = Grads::new();
        if let Some(ds) = store.get(&m.logit_scale) {
            grads.add("clip.logit_scale", &(ds / world as f64)?)?;
        }
        drop(store);
        log.forward_ms = ms(t0);
        // Pass 2: the same forward with its graph, back-propagating the cached gradients.
        let t1 = std::time::Instant::now();
        let local_scale = 1.0 / (micro * world) as f64;
        let (mut kl, mut mae, mut used) = (0f32, 0f32, 0usize);
        for (j, (bj, nj)) in chunks.iter().enumerate() {
            let p = self.model.parts(bj, nj, &self.weights, None)?;
            let mut surrogate = ((p.text_emb * d_t.narrow(0, j * mb, mb)?)?.sum_all()?
                + (p.image_emb * d_v.narrow(0, j * mb, mb)?)?.sum_all()?)?;
            if let (Some(x), Some(d)) = (p.mixed, &d_x) {
                surrogate = (surrogate + (x * d.narrow(0, j * mb, mb)?)?.sum_all()?)?;
            }
            let local = ((&p.kl * self.weights.kl)? + (&p.mae * self.weights.mae)?)?;
            // A non-finite term makes the reduced loss below non-finite on every worker alike,
            // so all of them skip the update together.
            kl += scalar(&p.kl)? / micro as f32;
            mae += scalar(&p.mae)? / micro as f32;
            used = used.max(centers_used(&p.hard)?);
            let total = (surrogate + (local * local_scale)?)?;
            self.opt.collect(&total.backward()?, &mut grads)?;
        }
        let local = Tensor::new(&[kl, mae], &self.device)?;
        let mean = (comm.all_reduce_sum(&local)? / world as f64)?.to_vec1::<f32>()?;
        (log.kl, log.mae, log.centers_used) = (mean[0], mean[1], used);
        log.loss = (log.contrastive as f64 * self.weights.contrastive
            + log.kl as f64 * self.weights.kl
            + log.mae as f64 * self.weights.mae
            + log.mix as f64 * self.weights.mix) as f32;
        if !log.loss.is_finite() {
            log.skipped = true;
            return Ok(None);
        }
        self.opt.all_reduce(&mut grads, comm)?;
        log.backward_ms = ms(t1);
        Ok(Some(grads))
    }

    /// The parameters under their official names.
    pub fn named_tensors(&self) -> Result<std::collections::HashMap<String, Tensor>> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("poisoned".into()))?;
        Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect())
    }

    /// Write a checkpoint of the current state under `dir` (keeping the last `keep`).
    pub fn save(
        &self,
        dir: &std::path::Path,
        keep: usize,
        extra: serde_json::Value,
    ) -> Result<std::path::PathBuf> {
        let state = serde_json::json!({"step": self.step, "rng": self.rng.state(), "model": self.cfg, "extra": extra});
        checkpoint::save(
            dir,
            self.step,
            &CheckpointData {
                model: self.named_tensors()?,
                optimizer: self.opt.state()?,
                state,
            },
            keep,
        )
    }

    /// Continue from a checkpoint folder: parameters, optimiser moments, step and RNG.
    pub fn resume(&mut self, path: &std::path::Path) -> Result<()> {
        let ck = checkpoint::load(path)?;
        {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| Error::Config("poisoned".into()))?;
            for (k, var) in data.iter() {
                let t = ck
                    .model
                    .get(k)
                    .ok_or_else(|| Error::Checkpoint(format!("{} lacks `{k}`", path.display())))?;
                var.set(&t.to_device(&self.device)?)?;
            }
        }
        self.opt.load_state(&ck.optimizer)?;
        self.step = ck.state["step"]
            .as_u64()
            .ok_or_else(|| Error::Checkpoint("state.json has no step".into()))?
            as usize;
        self.rng = Rng::new(
            ck.state["rng"]
                .as_u64()
                .ok_or_else(|| Error::Checkpoint("state.json has no rng".into()))?,
        );
        Ok(())
    }
}

fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}

fn ms(since: std::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Centers holding at least one patch, the most over the samples of `hard` (B, L, N).
fn centers_used(hard: &Tensor) -> Result<usize> {
    Ok(hard
        .sum(2)?
        .gt(0.5f32)?
        .to_dtype(DType::F32)?
        .sum(1)?
        .max(0)?
        .to_scalar::<f32>()? as usize)
}
