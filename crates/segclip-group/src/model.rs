//! The SegCLIP model (Luo et al., "SegCLIP: Patch Aggregation with Learnable Centers for
//! Open-Vocabulary Semantic Segmentation", ICML 2023): CLIP ViT with the semantic group module
//! after block `layers0` (spec section 1.2).
//!
//! ```text
//! x = ln_pre(patches + pos)            CLS dropped after ln_pre: it reaches no output
//! x = layers0(x)                       (B, N, C)
//! R, Hard, Soft = group(x)             (B, L, C)
//! R = layers2(R)
//! h = ln_post([max_L R; R]) @ proj     (B, 1 + L, D)
//! image_emb = h[:, 0], region_emb = h[:, 1:]
//! ```
//!
//! `cargo run --release -- segment --image photo.jpg --classes "cat,dog" --weights segclip.bin`

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use segclip_vit::block::blocks;
use segclip_vit::{ResidualBlock, StateDict, TextTransformer, Trace, VisionHead, VisionStem};

use crate::calibration::Calibration;
use crate::group::{GroupOutput, SemanticGroup};
use crate::{Result, SegClipConfig};

/// The MAE decoder's fixed 2-D sin-cos position table (1 + grid², dim), flattened.
pub use segclip_vit::seeded::sincos_table;

/// What the visual path returns for a batch of crops.
#[derive(Debug, Clone)]
pub struct VisualOutput {
    /// The max-pooled image embedding (B, D), not normalised.
    pub image_emb: Tensor,
    /// Region embeddings (B, L, D), not normalised.
    pub region_emb: Tensor,
    /// Soft assignment (B, L, N), softmax over centers.
    pub soft: Tensor,
    /// Hard assignment (B, L, N), one-hot over centers.
    pub hard: Tensor,
    /// The patch grid (gh, gw); N = gh·gw, row-major.
    pub grid: (usize, usize),
}

/// The SegCLIP visual encoder.
#[derive(Debug, Clone)]
pub struct SegClipVisual {
    pub stem: VisionStem,
    pub layers0: Vec<ResidualBlock>,
    pub group: SemanticGroup,
    pub layers2: Vec<ResidualBlock>,
    pub head: VisionHead,
}

impl SegClipVisual {
    /// `vb` points at `clip.visual`.
    pub fn new(vb: VarBuilder, cfg: &SegClipConfig) -> Result<Self> {
        let v = &cfg.vision;
        let t = vb.pp("transformer");
        Ok(Self {
            stem: VisionStem::new(vb.clone(), v)?,
            layers0: blocks(t.pp("layers0"), cfg.layers0, v.width, v.heads, v.ln_eps)?,
            group: SemanticGroup::new(t.pp("semantic_layer2"), v.width, v.ln_eps, &cfg.group)?,
            layers2: blocks(t.pp("layers2"), cfg.layers2, v.width, v.heads, v.ln_eps)?,
            head: VisionHead::new(vb, v, cfg.embed_dim)?,
        })
    }

    /// Patch tokens after `layers0` (B, N, C) and the grid, from normalised pixels (B, 3, H, W).
    pub fn encode_patches(
        &self,
        pixels: &Tensor,
        mut trace: Option<&mut Trace>,
    ) -> Result<(Tensor, (usize, usize))> {
        let (x, grid) = self.stem.forward(pixels)?;
        if let Some(t) = trace.as_deref_mut() {
            t.record("vision.after_ln_pre", &x);
        }
        let n = x.dim(1)? - 1;
        let mut x = x.narrow(1, 1, n)?;
        for (i, blk) in self.layers0.iter().enumerate() {
            x = blk.forward(&x, None)?;
            if i == 0 {
                if let Some(t) = trace.as_deref_mut() {
                    t.record("vision.after_block0", &x);
                }
            }
        }
        if let Some(t) = trace {
            t.record("vision.after_layers0", &x);
        }
        Ok((x, grid))
    }

    /// Region tokens (B, L, C) → `layers2`, max-pool, `ln_post`, `proj`: (image_emb, region_emb).
    pub fn embed_regions(
        &self,
        regions: &Tensor,
        trace: Option<&mut Trace>,
    ) -> Result<(Tensor, Tensor)> {
        let mut x = regions.clone();
        for blk in &self.layers2 {
            x = blk.forward(&x, None)?;
        }
        let pooled = x.max_keepdim(1)?;
        let hidden = self.head.forward(&Tensor::cat(&[&pooled, &x], 1)?)?;
        let l = x.dim(1)?;
        let image_emb = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let region_emb = hidden.narrow(1, 1, l)?;
        if let Some(t) = trace {
            t.record("vision.after_layers2", &x);
            t.record("vision.hidden", &hidden);
            t.record("vision.image_emb", &image_emb);
            t.record("vision.region_emb", &region_emb);
        }
        Ok((image_emb, region_emb))
    }

    /// The whole visual path on normalised pixels (B, 3, H, W). Any size of at least one patch
    /// works: the positional table is resampled to the patch grid. `gumbel` (B, L, N) turns on
    /// the training assignment.
    pub fn forward(
        &self,
        pixels: &Tensor,
        gumbel: Option<&Tensor>,
        mut trace: Option<&mut Trace>,
    ) -> Result<VisualOutput> {
        let (x, grid) = self.encode_patches(pixels, trace.as_deref_mut())?;
        let GroupOutput {
            regions,
            hard,
            soft,
            ..
        } = self.group.forward(&x, gumbel, trace.as_deref_mut())?;
        let (image_emb, region_emb) = self.embed_regions(&regions, trace)?;
        Ok(VisualOutput {
            image_emb,
            region_emb,
            soft,
            hard,
            grid,
        })
    }
}

/// SegCLIP for inference: the visual encoder, the text tower and the logit scale.
#[derive(Debug, Clone)]
pub struct SegClip {
    pub visual: SegClipVisual,
    pub text: TextTransformer,
    pub logit_scale: Tensor,
    /// The decode settings these weights were calibrated with, if their file records them
    /// (`segclip export`; the official decode otherwise).
    pub calibration: Calibration,
    cfg: SegClipConfig,
}

impl SegClip {
    /// `vb` points at the state-dict root (keys `clip.…`).
    pub fn new(vb: VarBuilder, cfg: &SegClipConfig) -> Result<Self> {
        cfg.validate()?;
        let clip = vb.pp("clip");
        Ok(Self {
            visual: SegClipVisual::new(clip.pp("visual"), cfg)?,
            text: TextTransformer::new(clip.clone(), &cfg.text)?,
            logit_scale: clip.get((), "logit_scale")?,
            calibration: Calibration::default(),
            cfg: cfg.clone(),
        })
    }

    /// Build from a checked state dict: missing, unexpected or mis-shaped tensors are errors
    /// that name the key; training-only tensors may be absent.
    pub fn from_state_dict(sd: StateDict, cfg: &SegClipConfig, device: &Device) -> Result<Self> {
        let (required, optional) = cfg.keys();
        sd.check(&required, &optional)?;
        let calibration = Calibration::from_metadata(&sd)?;
        let mut model = Self::new(sd.into_var_builder(device), cfg)?;
        model.calibration = calibration;
        Ok(model)
    }

    /// Load a checkpoint from a path or hub id; the configuration is read off its shapes
    /// ([`SegClipConfig::infer`]).
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        let sd = StateDict::load(spec, 10, device)?;
        let cfg = SegClipConfig::infer(&sd)?;
        Self::from_state_dict(sd, &cfg, device)
    }

    pub fn config(&self) -> &SegClipConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.logit_scale.device()
    }

    /// `s = min(exp(logit_scale), max)` (100).
    pub fn logit_scale_exp(&self) -> Result<f32> {
        let raw = self.logit_scale.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(raw.exp().min(self.cfg.logit_scale_max as f32))
    }
}

/// Every tensor of `cfg` (training-only ones included) filled by the parity fixtures' seeded
/// generator (`segclip_vit::seeded`): the weights the parity vectors were computed with.
pub fn seeded_state_dict(cfg: &SegClipConfig, seed: u64, device: &Device) -> Result<StateDict> {
    let (req, opt) = cfg.keys();
    let grid = cfg.vision.grid();
    let mut tensors = std::collections::HashMap::new();
    for (key, shape) in req.iter().chain(&opt) {
        let v = segclip_vit::seeded::tensor_values(seed, key, shape, grid)?;
        tensors.insert(key.clone(), Tensor::from_vec(v, shape.as_slice(), device)?);
    }
    Ok(StateDict {
        tensors,
        source: format!("seeded weights (seed {seed})"),
        format: segclip_vit::KeyFormat::SegClip,
        metadata: Default::default(),
    })
}
