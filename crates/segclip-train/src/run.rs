//! The training loop behind `segclip train`: data, model, steps, JSONL log, checkpoints.

use std::io::Write;
use std::path::Path;

use candle_core::Device;
use segclip_data::datasets::{CaptionDataset, SuperpixelCache};
use segclip_data::patch_labels::PatchRule;
use segclip_data::superpixels::{FelzenszwalbParams, Method, SlicParams};
use segclip_data::transforms::Rng;
use segclip_group::{SegClip, SegClipConfig};
use segclip_losses::LossWeights;
use segclip_vit::{StateDict, Tokenizer};

use crate::batch::BatchBuilder;
use crate::comm::Communicator;
use crate::config::TrainConfig;
use crate::eval::EvalReport;
use crate::{checkpoint, Error, OptimConfig, Result, StepLog, Trainer};

/// Progress of the loop, for a progress bar.
pub struct Progress<'a> {
    pub log: &'a StepLog,
    pub total_steps: usize,
    pub images: usize,
    pub skipped_images: usize,
    /// The periodic evaluation, on the steps where it ran.
    pub eval: Option<&'a EvalReport>,
}

/// This worker's `batch` samples of the step whose global slice starts at `start` in `order`;
/// unreadable images are replaced by the following readable ones, so every worker keeps the
/// same batch shape. Returns the samples and how many images were skipped.
fn local_batch(
    ds: &CaptionDataset,
    order: &[usize],
    start: usize,
    batch: usize,
    comm: &dyn Communicator,
) -> Result<(Vec<segclip_data::datasets::CaptionSample>, usize)> {
    let first = start + comm.rank() * batch;
    let (mut samples, mut skipped) = ds.load_batch(&order[first..first + batch]);
    // Replacements: this worker's slice of the following steps, wrapping around the epoch.
    let mut next = start + comm.world_size() * batch + comm.rank() * batch;
    let mut tried = batch;
    while samples.len() < batch {
        if tried >= order.len() {
            return Err(Error::Config(format!(
                "fewer than {batch} readable images in the whole dataset ({skipped} skipped)"
            )));
        }
        let want = batch - samples.len();
        let idx: Vec<usize> = (0..want).map(|k| order[(next + k) % order.len()]).collect();
        let (more, s) = ds.load_batch(&idx);
        samples.extend(more);
        skipped += s;
        next += want;
        tried += want;
    }
    Ok((samples, skipped))
}

/// Initial weights for `model`: CLIP's visual blocks split at `layers0` (spec 3.8). CLIP visual
/// blocks above the model's `layers0 + layers2` are left out (a model may keep fewer blocks after
/// the group module than the CLIP has: the benchmark's `model-no-layers2.json`), and counted.
/// Every other tensor of the file must be one the model has (else it is another model's
/// checkpoint); the model's tensors the file lacks (the group module, the MAE branch) start
/// fresh, and the counts are printed.
fn load_init(spec: &str, model: &SegClipConfig, device: &Device) -> Result<StateDict> {
    let mut sd = StateDict::load(spec, model.layers0, device)?;
    let before = sd.tensors.len();
    sd.tensors
        .retain(|k, _| surplus_layers2_block(k).is_none_or(|n| n < model.layers2));
    let dropped = before - sd.tensors.len();
    let (req, opt) = model.keys();
    let known: std::collections::HashSet<&str> =
        req.iter().chain(&opt).map(|(k, _)| k.as_str()).collect();
    let mut unused: Vec<&String> = sd
        .tensors
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(Error::Config(format!(
            "initial weights {spec}: {} tensors the model does not have (e.g. {}): a checkpoint \
             of another model or size; check `[model] config`",
            unused.len(),
            unused
                .iter()
                .take(3)
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let fresh = known.len() - sd.tensors.len();
    let dropped = if dropped > 0 {
        format!(
            "; {dropped} of CLIP visual blocks above the model's {} + {} left out",
            model.layers0, model.layers2
        )
    } else {
        String::new()
    };
    eprintln!(
        "init: {} tensors from {spec}; {fresh} start fresh{dropped}",
        sd.tensors.len()
    );
    Ok(sd)
}

/// The block index `n` of a `clip.visual.transformer.layers2.{n}.…` key.
fn surplus_layers2_block(key: &str) -> Option<usize> {
    let rest = key.strip_prefix("clip.visual.transformer.layers2.")?;
    rest.split('.').next()?.parse().ok()
}

fn dataset(cfg: &TrainConfig) -> Result<CaptionDataset> {
    let d = &cfg.data;
    let images = d.images.clone().unwrap_or_default();
    let ds = match d.format.as_str() {
        "jsonl" => CaptionDataset::jsonl(&d.path)?,
        "webdataset" => CaptionDataset::webdataset_dir(&d.path)?,
        "parquet" => CaptionDataset::parquet_dir(&d.path)?,
        "tsv" => CaptionDataset::tsv(&d.path, &images)?,
        _ => CaptionDataset::coco_karpathy(&d.path, &images, &d.split)?,
    };
    Ok(match d.limit {
        Some(n) => ds.limit(n),
        None => ds,
    })
}

/// Train as `cfg` says; with `resume`, continue from the latest complete checkpoint in the
/// output folder.
///
/// Each step takes `batch` samples on each worker of `comm` (one step's global batch is
/// `batch × workers`, in the seeded epoch order), split into `accumulation` micro-batches.
/// Worker 0 writes the log, the checkpoints and runs the periodic evaluation.
pub fn train(
    cfg: &TrainConfig,
    resume: bool,
    device: &Device,
    comm: &dyn Communicator,
    on_step: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let ds = dataset(cfg)?;
    let global = cfg.train.batch * comm.world_size();
    if ds.len() < global {
        return Err(Error::Config(format!(
            "the dataset has {} samples, fewer than one batch of {global}",
            ds.len(),
        )));
    }
    let model_cfg = match &cfg.model.config {
        Some(p) => SegClipConfig::from_file(p)?,
        None => SegClipConfig::vit_b16(),
    };
    let init = match cfg.model.init.as_deref() {
        Some(spec) => Some(load_init(spec, &model_cfg, device)?),
        None => None,
    };
    let per_epoch = ds.len() / global;
    let total = per_epoch * cfg.optim.epochs;
    let o = &cfg.optim;
    let optim = OptimConfig {
        lr: o.lr,
        lower_lr: o.lower_lr,
        weight_decay: o.weight_decay,
        warmup: o.warmup,
        total_steps: total,
        clip_grad: o.clip_grad,
        ..Default::default()
    };
    let weights = LossWeights {
        contrastive: cfg.loss.contrastive,
        kl: cfg.loss.kl,
        mae: cfg.loss.mae,
        mix: cfg.loss.mix,
    };
    let mut trainer = Trainer::new(&model_cfg, init.as_ref(), optim, weights, cfg.seed, device)?;
    std::fs::create_dir_all(&cfg.output)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", cfg.output.display())))?;
    if resume {
        if let Some((_, path)) = checkpoint::list(&cfg.output).last() {
            trainer.resume(path)?;
        }
    }
    if comm.rank() > 0 {
        // Same initial parameters on every worker, different noise and crops.
        let mix = (comm.rank() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        trainer.rng = Rng::new(trainer.rng.next_u64() ^ mix);
    }
    let lead = comm.rank() == 0;
    let sp = &cfg.superpixels;
    let method = if sp.method == "slic" {
        Method::Slic(SlicParams {
            n_segments: sp.n_segments,
            compactness: sp.compactness,
            sigma: sp.sigma,
            ..Default::default()
        })
    } else {
        Method::Felzenszwalb(FelzenszwalbParams {
            scale: sp.scale,
            sigma: sp.sigma,
            min_size: sp.min_size,
        })
    };
    let cache_root = cfg
        .data
        .path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let builder = BatchBuilder {
        tokenizer: Tokenizer::new(32)?,
        image_size: model_cfg.vision.image_size,
        patch_size: model_cfg.vision.patch_size,
        superpixels: method,
        cache: sp.cache.then(|| SuperpixelCache::new(&cache_root, method)),
        rule: if sp.patch_rule == "official" {
            PatchRule::OfficialMean
        } else {
            PatchRule::Majority
        },
    };
    let log_path = cfg.output.join("log.jsonl");
    let mut log = lead
        .then(|| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| Error::Config(format!("{}: {e}", log_path.display())))
        })
        .transpose()?;
    let mut write_line = |line: serde_json::Value| -> Result<()> {
        if let Some(f) = log.as_mut() {
            writeln!(f, "{line}")
                .map_err(|e| Error::Config(format!("{}: {e}", log_path.display())))?;
        }
        Ok(())
    };
    let (mut images, mut skipped_images) = (0, 0);
    while trainer.step < total {
        let step = trainer.step;
        let order = ds.epoch_order(cfg.seed, (step / per_epoch) as u64);
        let start = (step % per_epoch) * global;
        let (samples, skipped) = local_batch(&ds, &order, start, cfg.train.batch, comm)?;
        skipped_images += skipped;
        let mut rng = Rng::new(trainer.rng.next_u64());
        images += samples.len() * comm.world_size();
        let batch = builder.build(&samples, &mut rng, device)?;
        let noise = trainer.sample_noise(batch.len())?;
        let entry = trainer.step_with(&batch, &noise, cfg.train.accumulation, comm)?;
        let mut line = serde_json::to_value(&entry).map_err(|e| Error::Config(e.to_string()))?;
        line["skipped_images"] = skipped.into();
        write_line(line)?;
        let done = trainer.step == total;
        let report = if lead && cfg.eval.every > 0 && (trainer.step % cfg.eval.every == 0 || done) {
            let r = evaluate_now(&trainer, cfg, device)?;
            write_line(serde_json::json!({"step": trainer.step, "eval": r.json()}))?;
            Some(r)
        } else {
            None
        };
        on_step(&Progress {
            log: &entry,
            total_steps: total,
            images,
            skipped_images,
            eval: report.as_ref(),
        });
        if lead && (trainer.step % cfg.train.save_every.max(1) == 0 || done) {
            trainer.save(
                &cfg.output,
                cfg.train.keep_last,
                serde_json::json!({"skipped_images": skipped_images}),
            )?;
        }
    }
    Ok(())
}

/// Zero-shot evaluation of the current parameters (an inference copy of the model, so the
/// evaluation builds no backward graph).
fn evaluate_now(trainer: &Trainer, cfg: &TrainConfig, device: &Device) -> Result<EvalReport> {
    let tensors = trainer
        .named_tensors()?
        .into_iter()
        .map(|(k, t)| (k, t.detach()))
        .collect();
    let sd = StateDict {
        tensors,
        source: format!("training step {}", trainer.step),
        format: segclip_vit::KeyFormat::SegClip,
        metadata: Default::default(),
    };
    let model = SegClip::from_state_dict(sd, &trainer.cfg, device)?;
    cfg.eval.run(&model, &mut |_, _| {})
}
