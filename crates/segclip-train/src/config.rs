//! The `segclip train` configuration (TOML). Every field has a default, so a file needs only the
//! data source; see `docs/training.md` for a full example.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_output")]
    pub output: PathBuf,
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub superpixels: SuperpixelSection,
    /// Periodic zero-shot evaluation (off unless `every` > 0).
    #[serde(default)]
    pub eval: crate::eval::EvalSpec,
}

fn default_seed() -> u64 {
    42
}
fn default_output() -> PathBuf {
    PathBuf::from("runs/segclip")
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `jsonl`, `webdataset` (a folder of .tar shards), `tsv` or `coco` (Karpathy JSON).
    pub format: String,
    pub path: PathBuf,
    /// Image root for `tsv` and `coco`.
    pub images: Option<PathBuf>,
    #[serde(default = "default_split")]
    pub split: String,
    pub limit: Option<usize>,
}

fn default_split() -> String {
    "train".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `vit-b16` (default), or a model configuration JSON (our format or a parity config.json).
    pub config: Option<PathBuf>,
    /// Initial weights: OpenAI/Hugging Face CLIP or SegCLIP, a path or hub id. Missing tensors
    /// (the group module, the MAE branch) start fresh.
    pub init: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    pub contrastive: f64,
    pub kl: f64,
    pub mae: f64,
    /// The mixed-pair contrastive loss (a deviation from the paper, docs/deviations.md).
    #[serde(default)]
    pub mix: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            contrastive: 1.0,
            kl: 1.0,
            mae: 1.0,
            mix: 0.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    pub lower_lr: f64,
    pub weight_decay: f64,
    pub warmup: f64,
    pub epochs: usize,
    pub clip_grad: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 4e-3,
            lower_lr: 4e-6,
            weight_decay: 0.05,
            warmup: 0.15,
            epochs: 10,
            clip_grad: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Samples per step on each worker (the contrastive loss sees batch × workers).
    pub batch: usize,
    /// Micro-batches the batch is split into, to bound memory: the step and its result are the
    /// same whatever this is (cached-embedding accumulation, see docs/training.md).
    pub accumulation: usize,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    pub save_every: usize,
    pub keep_last: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            batch: 8,
            accumulation: 1,
            threads: 0,
            save_every: 500,
            keep_last: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SuperpixelSection {
    /// `felzenszwalb` (official) or `slic`.
    pub method: String,
    pub scale: f64,
    pub sigma: f64,
    pub min_size: usize,
    pub n_segments: usize,
    pub compactness: f64,
    /// `majority` (default) or `official` (truncated mean).
    pub patch_rule: String,
    /// Cache the label maps beside the data.
    pub cache: bool,
}

impl Default for SuperpixelSection {
    fn default() -> Self {
        Self {
            method: "felzenszwalb".into(),
            scale: 224.0,
            sigma: 0.9,
            min_size: 224,
            n_segments: 100,
            compactness: 10.0,
            patch_rule: "majority".into(),
            cache: true,
        }
    }
}

impl TrainConfig {
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !["jsonl", "webdataset", "parquet", "tsv", "coco"].contains(&self.data.format.as_str()) {
            return bad(format!(
                "data.format `{}` is not one of jsonl, webdataset, parquet, tsv, coco",
                self.data.format
            ));
        }
        if matches!(self.data.format.as_str(), "tsv" | "coco") && self.data.images.is_none() {
            return bad(format!(
                "data.images (the image root) is required for format `{}`",
                self.data.format
            ));
        }
        if self.train.batch < 2 {
            return bad(
                "train.batch must be at least 2: the contrastive loss needs negatives".into(),
            );
        }
        if self.train.accumulation == 0 || !self.train.batch.is_multiple_of(self.train.accumulation)
        {
            return bad(format!(
                "train.batch {} must split into train.accumulation = {} equal micro-batches",
                self.train.batch, self.train.accumulation
            ));
        }
        if self.loss.mix != 0.0 && !(self.train.batch / self.train.accumulation).is_multiple_of(2) {
            return bad(format!(
                "loss.mix pairs samples 2k and 2k + 1 of each micro-batch, and train.batch {} / \
                 train.accumulation {} is odd: make it even",
                self.train.batch, self.train.accumulation
            ));
        }
        if self.eval.every > 0 {
            self.eval.validate()?;
        }
        if !["felzenszwalb", "slic"].contains(&self.superpixels.method.as_str()) {
            return bad(format!(
                "superpixels.method `{}` is not felzenszwalb or slic",
                self.superpixels.method
            ));
        }
        if !["majority", "official"].contains(&self.superpixels.patch_rule.as_str()) {
            return bad(format!(
                "superpixels.patch_rule `{}` is not majority or official",
                self.superpixels.patch_rule
            ));
        }
        if self.optim.epochs == 0 {
            return bad("optim.epochs must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults_and_bad_values_are_named() {
        let c =
            TrainConfig::from_toml("[data]\nformat = \"jsonl\"\npath = \"pairs.jsonl\"\n").unwrap();
        assert_eq!(c.train.batch, 8);
        assert_eq!(c.optim.lr, 4e-3);
        assert_eq!(c.superpixels.min_size, 224);
        // The eval hook takes the decode options `segclip eval` does.
        let c = TrainConfig::from_toml(
            "[data]\nformat = \"jsonl\"\npath = \"x\"\n[eval]\nevery = 5\nrefine = 10\n\
             claim_margin = 0.0\nreencode = true\n",
        )
        .unwrap();
        assert_eq!(
            (c.eval.refine, c.eval.claim_margin, c.eval.reencode),
            (10, Some(0.0), true)
        );
        for (text, needle) in [
            ("[data]\nformat = \"csv\"\npath = \"x\"\n", "data.format"),
            ("[data]\nformat = \"coco\"\npath = \"x\"\n", "data.images"),
            (
                "[data]\nformat = \"jsonl\"\npath = \"x\"\n[train]\nbatch = 1\n",
                "train.batch",
            ),
            (
                "[data]\nformat = \"jsonl\"\npath = \"x\"\n[train]\nbatchsize = 4\n",
                "batchsize",
            ),
            (
                "[data]\nformat = \"jsonl\"\npath = \"x\"\n[train]\nbatch = 6\naccumulation = 4\n",
                "accumulation",
            ),
            (
                "[data]\nformat = \"jsonl\"\npath = \"x\"\n[train]\nbatch = 6\naccumulation = 2\n\
                 [loss]\ncontrastive = 1.0\nkl = 1.0\nmae = 1.0\nmix = 1.0\n",
                "loss.mix",
            ),
            (
                "[data]\nformat = \"jsonl\"\npath = \"x\"\n[eval]\nevery = 5\ndataset = \"voc\"\n",
                "root",
            ),
        ] {
            let e = TrainConfig::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
