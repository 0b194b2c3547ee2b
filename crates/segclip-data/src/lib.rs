//! # segclip-data
//!
//! Everything SegCLIP's training and evaluation read, computed natively: superpixels
//! (Felzenszwalb and SLIC as scikit-image defines them), and (with the data issue) patch labels,
//! masking, transforms, caption and segmentation datasets.
//!
//! ```
//! use segclip_data::superpixels::{felzenszwalb, FelzenszwalbParams};
//! let img = vec![0u8; 32 * 32 * 3];
//! let seg = felzenszwalb(&img, (32, 32, 3), &FelzenszwalbParams::default());
//! assert_eq!(seg.count, 1);
//! ```

pub mod superpixels;
