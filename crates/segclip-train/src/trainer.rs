//! The training step and its state: model parameters as `Var`s, the optimiser, the RNG and the
//! step counter, with checkpoint save and resume.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use segclip_data::transforms::Rng;
use segclip_group::SegClipConfig;
use segclip_losses::{Batch, LossWeights, TrainingModel};
use segclip_vit::StateDict;

use crate::batch::sample_noise;
use crate::checkpoint::{self, CheckpointData};
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
    pub grad_norm: f32,
    pub lr: f64,
    /// The loss was not finite and the update was skipped.
    pub skipped: bool,
    /// Centers that received at least one patch in the plain pass.
    pub centers_used: usize,
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
                let t =
                    match init.and_then(|sd| sd.tensors.get(key)) {
                        Some(t) if t.dims() == shape.as_slice() => {
                            t.to_dtype(DType::F32)?.to_device(device)?
                        }
                        Some(t) => return Err(Error::Config(format!(
                            "initial weights: `{key}` has shape {:?}, the model expects {shape:?}",
                            t.dims()
                        ))),
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

    /// One step on `batch`: forward with fresh noise, backward, clip, update, clamp the logit
    /// scale. A non-finite loss skips the update.
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepLog> {
        let b = batch.pixels.dim(0)?;
        let n = self.cfg.vision.grid() * self.cfg.vision.grid();
        let noise = sample_noise(
            &mut self.rng,
            b,
            self.cfg.group.num_centers,
            n,
            self.mask_ratio,
            &self.device,
        )?;
        let losses = self.model.forward(batch, &noise, &self.weights, None)?;
        let scalar =
            |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
        let loss = scalar(&losses.total)?;
        let used = losses
            .hard
            .sum(2)?
            .gt(0.5f32)?
            .to_dtype(DType::F32)?
            .sum(1)?
            .max(0)?
            .to_scalar::<f32>()? as usize;
        self.step += 1;
        let mut log = StepLog {
            step: self.step,
            loss,
            contrastive: scalar(&losses.contrastive)?,
            kl: scalar(&losses.kl)?,
            mae: scalar(&losses.mae)?,
            grad_norm: f32::NAN,
            lr: self.opt.lr_at(self.opt.config().lr, self.step),
            skipped: !loss.is_finite(),
            centers_used: used,
        };
        if log.skipped {
            return Ok(log);
        }
        let grads = losses.total.backward()?;
        let stats = self.opt.step(&grads)?;
        self.opt.clamp_logit_scale(self.cfg.logit_scale_max)?;
        log.grad_norm = stats.grad_norm;
        Ok(log)
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
