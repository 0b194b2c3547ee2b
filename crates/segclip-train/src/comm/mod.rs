//! Data-parallel communication. The official contrastive loss all-gathers every worker's
//! embeddings (spec 2.1) and DDP sums the parameter gradients; the training step
//! ([`crate::Trainer::step_with`]) needs exactly two collectives for that, behind this trait:
//!
//! - [`SingleProcess`]: one worker, both collectives are the identity. `segclip train` on one
//!   device uses it, through the same code path as N workers.
//! - [`LocalGroup`]: N workers as threads of one process, exchanging through shared memory. The
//!   tests use it to check that N workers take the same step as one worker with the whole batch.
//! - `Nccl` (cargo feature `nccl`): one process per GPU over NCCL (`docs/training.md`).

mod local;
#[cfg(feature = "nccl")]
mod nccl;

use candle_core::Tensor;

use crate::Result;

pub use local::LocalGroup;
#[cfg(feature = "nccl")]
pub use nccl::{Nccl, NcclId};

/// The collectives a data-parallel training step needs. Every worker calls them in the same
/// order with tensors of the same shape.
pub trait Communicator {
    /// This worker's index, 0 ≤ rank < world size.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Every worker's `x` (b, …) stacked along dimension 0 in rank order: (b·W, …).
    fn all_gather(&self, x: &Tensor) -> Result<Tensor>;
    /// The element-wise sum of every worker's `x`.
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor>;
}

/// One worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_gather(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}
