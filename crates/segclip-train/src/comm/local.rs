//! N workers as threads of one process: each collective publishes this worker's values in a
//! shared slot, waits for all, combines, and waits again before the slots are reused.

use std::sync::{Arc, Barrier, Mutex};

use candle_core::{DType, Tensor};

use super::Communicator;
use crate::{Error, Result};

struct Shared {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

/// One worker's handle; [`LocalGroup::new`] makes all of them.
pub struct LocalGroup {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// Handles for `world` workers, rank order; move each into its own thread.
    pub fn new(world: usize) -> Vec<Self> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![Vec::new(); world]),
            barrier: Barrier::new(world),
        });
        (0..world)
            .map(|rank| Self {
                rank,
                world,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Publish `x`, wait for every worker, and hand all workers' values (rank order) to `f`.
    fn exchange<T>(&self, x: &Tensor, f: impl FnOnce(&[Vec<f32>]) -> T) -> Result<T> {
        let mine = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let poisoned = || Error::Config("a worker of the local group panicked".into());
        self.shared.slots.lock().map_err(|_| poisoned())?[self.rank] = mine;
        self.shared.barrier.wait();
        let out = f(&self.shared.slots.lock().map_err(|_| poisoned())?);
        self.shared.barrier.wait();
        Ok(out)
    }
}

impl Communicator for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_gather(&self, x: &Tensor) -> Result<Tensor> {
        let all = self.exchange(x, |slots| slots.concat())?;
        let mut dims = x.dims().to_vec();
        dims[0] *= self.world;
        Ok(Tensor::from_vec(all, dims, x.device())?.to_dtype(x.dtype())?)
    }
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
        let sum = self.exchange(x, |slots| {
            let mut acc = vec![0f32; slots[0].len()];
            for s in slots {
                for (a, v) in acc.iter_mut().zip(s) {
                    *a += v;
                }
            }
            acc
        })?;
        Ok(Tensor::from_vec(sum, x.dims(), x.device())?.to_dtype(x.dtype())?)
    }
}
