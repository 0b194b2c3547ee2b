//! Datasets: image–caption pairs for training, segmentation splits for evaluation, and the
//! superpixel cache.

pub mod cache;
pub mod captions;
pub mod classes;
pub mod segmentation;

pub use cache::SuperpixelCache;
pub use captions::{CaptionDataset, CaptionRecord, CaptionSample, ImageRef};
pub use segmentation::{SegDataset, SegKind, SegSample};
