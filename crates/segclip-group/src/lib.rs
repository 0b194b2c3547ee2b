//! # segclip-group
//!
//! SegCLIP's semantic group module and the SegCLIP model built on it (Luo et al., "SegCLIP: Patch
//! Aggregation with Learnable Centers for Open-Vocabulary Semantic Segmentation", ICML 2023),
//! plus zero-shot segmentation.
//!
//! - [`group`]: the learnable centers, cross-attention, hard assignment and region tokens;
//! - [`model`]: the visual path around it and the whole model with its text tower;
//! - [`zeroshot`]: class prompts, per-crop decoding and sliding-window inference;
//! - [`calibration`]: the decode settings a checkpoint records in its metadata.
//!
//! ```no_run
//! # fn main() -> segclip_group::Result<()> {
//! use segclip_group::{zeroshot::*, SegClip};
//! let model = SegClip::load("segclip.bin", &candle_core::Device::Cpu)?;
//! let mut clf = TextClassifier::new(77)?;
//! let text = clf.classify(&model.text, &ClassList::parse_arg("cat,dog")?, Templates::Simple)?;
//! let image = RgbImage::new(2, 1, vec![0; 6])?;
//! let seg = segment(&model, &image, &text, &SegmentOptions::default(), None, &mut |_, _| {})?;
//! # Ok(()) }
//! ```

pub mod calibration;
mod config;
mod error;
pub mod group;
pub mod masked;
pub mod model;
pub mod zeroshot;

pub use calibration::{
    Calibration, BG_SCORE_KEY, BG_THRESH_KEY, CLAIM_KEY, REENCODE_KEY, REFINE_KEY,
};
pub use config::{DecoderConfig, GroupConfig, SegClipConfig};
pub use error::{Error, Result};
pub use group::{GroupOutput, SemanticGroup};
pub use masked::{MaskedBranch, MaskedOutput};
pub use model::{SegClip, SegClipVisual, VisualOutput};
