//! # segclip-train
//!
//! Training SegCLIP (spec section 3): the official `AdaptAdamW` with SegCLIP's parameter groups
//! and freezing, the warmup-cosine schedule, global gradient-norm clipping, fresh-parameter
//! initialisation, batches from caption samples, the training step and atomic checkpoints.

pub mod batch;
pub mod checkpoint;
pub mod comm;
pub mod config;
mod error;
pub mod eval;
pub mod grads;
pub mod init;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use comm::{Communicator, LocalGroup, SingleProcess};
pub use config::TrainConfig;
pub use error::{Error, Result};
pub use grads::Grads;
pub use optim::{AdaptAdamW, OptimConfig, StepStats};
pub use trainer::{StepLog, Trainer};
