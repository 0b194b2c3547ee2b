//! # segclip-train
//!
//! Training SegCLIP (spec section 3): the official `AdaptAdamW` with SegCLIP's parameter groups
//! and freezing, the warmup-cosine schedule and global gradient-norm clipping. The training loop,
//! checkpoints and `segclip train` build on these (issue 4).

mod error;
pub mod optim;
pub mod schedule;

pub use error::{Error, Result};
pub use optim::{AdaptAdamW, OptimConfig, StepStats};
