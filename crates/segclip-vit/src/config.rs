//! Sizes of the CLIP towers.
//!
//! Presets cite their source; [`VisionConfig::vit_b16`] and [`TextConfig::vit_b16`] are OpenAI
//! CLIP ViT-B/16 as SegCLIP uses it (spec section 1.1).

use serde::{Deserialize, Serialize};

/// The visual tower: patch stem and transformer width. The number of blocks and where the
/// group module sits are the SegCLIP model's business (`segclip-group`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Training image side; the positional table has `(image_size / patch_size)^2 + 1` rows.
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub heads: usize,
    pub ln_eps: f64,
    /// Hidden channels of a convolutional stem (`conv_stem.rs`): when not empty, 3×3 stride-2
    /// convolutions 3 → `conv_stem`… → width replace the p×p patch convolution `conv1`, and
    /// `patch_size` must be 2^(len + 1). Empty (the default) for CLIP's stem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conv_stem: Vec<usize>,
}

impl VisionConfig {
    /// OpenAI CLIP ViT-B/16 (`ViT-B-16.pt`): 224 px, patch 16, width 768, 12 heads.
    pub fn vit_b16() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            width: 768,
            heads: 12,
            ln_eps: 1e-5,
            conv_stem: Vec::new(),
        }
    }

    /// Patches per side at the training resolution (14 for ViT-B/16).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// The text tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    /// Rows of the positional table (77).
    pub context_length: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    /// Output dimension of `text_projection` (the joint embedding).
    pub embed_dim: usize,
    pub ln_eps: f64,
}

impl TextConfig {
    /// OpenAI CLIP ViT-B/16 text tower: 49408 tokens, context 77, width 512, 12 layers, 8 heads,
    /// projection to 512.
    pub fn vit_b16() -> Self {
        Self {
            vocab_size: 49408,
            context_length: 77,
            width: 512,
            layers: 12,
            heads: 8,
            embed_dim: 512,
            ln_eps: 1e-5,
        }
    }
}
