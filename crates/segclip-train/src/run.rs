//! The training loop behind `segclip train`: data, model, steps, JSONL log, checkpoints.

use std::io::Write;
use std::path::Path;

use candle_core::Device;
use segclip_data::datasets::{CaptionDataset, SuperpixelCache};
use segclip_data::patch_labels::PatchRule;
use segclip_data::superpixels::{FelzenszwalbParams, Method, SlicParams};
use segclip_data::transforms::Rng;
use segclip_group::SegClipConfig;
use segclip_losses::LossWeights;
use segclip_vit::{StateDict, Tokenizer};

use crate::batch::BatchBuilder;
use crate::config::TrainConfig;
use crate::{checkpoint, Error, OptimConfig, Result, StepLog, Trainer};

/// Progress of the loop, for a progress bar.
pub struct Progress<'a> {
    pub log: &'a StepLog,
    pub total_steps: usize,
    pub images: usize,
    pub skipped_images: usize,
}

fn dataset(cfg: &TrainConfig) -> Result<CaptionDataset> {
    let d = &cfg.data;
    let images = d.images.clone().unwrap_or_default();
    let ds = match d.format.as_str() {
        "jsonl" => CaptionDataset::jsonl(&d.path)?,
        "webdataset" => CaptionDataset::webdataset_dir(&d.path)?,
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
pub fn train(
    cfg: &TrainConfig,
    resume: bool,
    device: &Device,
    on_step: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let ds = dataset(cfg)?;
    if ds.len() < cfg.train.batch {
        return Err(Error::Config(format!(
            "the dataset has {} samples, fewer than one batch of {}",
            ds.len(),
            cfg.train.batch
        )));
    }
    let init = cfg
        .model
        .init
        .as_deref()
        .map(|spec| StateDict::load(spec, 10, device))
        .transpose()?;
    let model_cfg = match &cfg.model.config {
        Some(p) => SegClipConfig::from_file(p)?,
        None => SegClipConfig::vit_b16(),
    };
    let per_epoch = ds.len() / cfg.train.batch;
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
    };
    let mut trainer = Trainer::new(&model_cfg, init.as_ref(), optim, weights, cfg.seed, device)?;
    std::fs::create_dir_all(&cfg.output)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", cfg.output.display())))?;
    if resume {
        if let Some((_, path)) = checkpoint::list(&cfg.output).last() {
            trainer.resume(path)?;
        }
    }
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
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::Config(format!("{}: {e}", log_path.display())))?;
    let (mut images, mut skipped_images) = (0, 0);
    while trainer.step < total {
        let step = trainer.step;
        let order = ds.epoch_order(cfg.seed, (step / per_epoch) as u64);
        let start = (step % per_epoch) * cfg.train.batch;
        let (samples, skipped) = ds.load_batch(&order[start..start + cfg.train.batch]);
        skipped_images += skipped;
        let mut rng = Rng::new(trainer.rng.next_u64());
        if samples.len() < 2 {
            trainer.step += 1;
            continue;
        }
        images += samples.len();
        let batch = builder.build(&samples, &mut rng, device)?;
        let entry = trainer.train_step(&batch)?;
        let mut line = serde_json::to_value(&entry).map_err(|e| Error::Config(e.to_string()))?;
        line["skipped_images"] = skipped.into();
        writeln!(log, "{line}")
            .map_err(|e| Error::Config(format!("{}: {e}", log_path.display())))?;
        on_step(&Progress {
            log: &entry,
            total_steps: total,
            images,
            skipped_images,
        });
        if trainer.step % cfg.train.save_every.max(1) == 0 || trainer.step == total {
            trainer.save(
                &cfg.output,
                cfg.train.keep_last,
                serde_json::json!({"skipped_images": skipped_images}),
            )?;
        }
    }
    Ok(())
}
