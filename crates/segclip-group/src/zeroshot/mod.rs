//! Zero-shot segmentation with a trained SegCLIP (spec section 4): class prompts, per-crop
//! decoding, and the sliding-window whole-image pipeline of the official evaluation.

pub mod classes;
pub mod decode;
pub mod refine;
pub mod resize;
pub mod segmenter;
pub mod templates;

pub use classes::{Class, ClassList, TextClassifier};
pub use decode::{decode_crop, BgScore, CropDecode, DecodeOptions};
pub use segmenter::{segment, RgbImage, SegmentOptions, Segmentation, Timings};
pub use templates::Templates;
