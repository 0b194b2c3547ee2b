//! # segclip-data
//!
//! Everything SegCLIP's training and evaluation read, computed natively: superpixels
//! (Felzenszwalb and SLIC as scikit-image defines them), patch labels, MAE masking and the patch
//! layout, training transforms, caption datasets (WebDataset shards, TSV, COCO Karpathy, JSONL)
//! with a superpixel cache, and the evaluation segmentation datasets (VOC, Context, COCO-Object).
//!
//! ```
//! use segclip_data::superpixels::{felzenszwalb, FelzenszwalbParams};
//! let img = vec![0u8; 32 * 32 * 3];
//! let seg = felzenszwalb(&img, (32, 32, 3), &FelzenszwalbParams::default());
//! assert_eq!(seg.count, 1);
//! ```

pub mod datasets;
mod error;
pub mod masking;
pub mod patch_labels;
pub mod superpixels;
pub mod synth;
pub mod transforms;

pub use error::{Error, Result};
