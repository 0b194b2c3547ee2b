//! One process per GPU over NCCL (cargo feature `nccl`).
//!
//! Each collective copies the tensor to host memory, into a device buffer of this worker's
//! stream, runs the NCCL collective and copies the result back onto the tensor's device. The
//! staging costs two host copies of the gradients a step; it keeps this module independent of
//! candle's CUDA storage internals. The feature implies `cuda`; `.ci/check-cuda` type-checks it
//! on a machine without a CUDA toolkit.
//!
//! Launch: rank 0 creates the NCCL id and writes it to a file that the other ranks read
//! ([`NcclId`]); see `docs/training.md`.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use cudarc::nccl::result::NcclError;
use cudarc::nccl::{Comm, Id, ReduceOp};

use super::Communicator;
use crate::{Error, Result};

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Config(format!("NCCL {what}: {e:?}"))
}

/// The NCCL unique id that every rank must share, exchanged through a file.
pub struct NcclId(Id);

impl NcclId {
    /// Rank 0: create an id and write it atomically to `path` (128 bytes).
    pub fn create(path: &Path) -> Result<Self> {
        let id = Id::new().map_err(|e| nccl_err("unique id", e))?;
        let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                Error::Config(format!(
                    "cannot write the NCCL id to {}: {e}",
                    path.display()
                ))
            })?;
        Ok(Self(id))
    }

    /// Other ranks: wait (up to `timeout`) for rank 0's id file and read it.
    pub fn read(path: &Path, timeout: std::time::Duration) -> Result<Self> {
        let start = std::time::Instant::now();
        loop {
            if let Ok(bytes) = std::fs::read(path) {
                if bytes.len() == 128 {
                    let mut internal = [0 as std::ffi::c_char; 128];
                    for (d, s) in internal.iter_mut().zip(&bytes) {
                        *d = *s as std::ffi::c_char;
                    }
                    return Ok(Self(Id::uninit(internal)));
                }
            }
            if start.elapsed() > timeout {
                return Err(Error::Config(format!(
                    "no NCCL id at {} after {:?}: start rank 0 with the same --nccl-id path",
                    path.display(),
                    timeout
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// This process's NCCL communicator on GPU `ordinal`.
pub struct Nccl {
    stream: Arc<CudaStream>,
    comm: Comm,
}

impl Nccl {
    pub fn new(id: NcclId, ordinal: usize, rank: usize, world_size: usize) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).map_err(|e| nccl_err("CUDA context", e))?;
        let stream = ctx.default_stream();
        let comm = Comm::from_rank(stream.clone(), rank, world_size, id.0)
            .map_err(|e| nccl_err("communicator", e))?;
        Ok(Self { stream, comm })
    }

    /// Copy `x` to this worker's GPU, run `collective(send, recv)` into a buffer of
    /// `out_len` values, and copy the result back as a tensor of `dims` on `x`'s device.
    fn staged(
        &self,
        x: &Tensor,
        out_len: usize,
        dims: Vec<usize>,
        what: &str,
        collective: impl FnOnce(
            &CudaSlice<f32>,
            &mut CudaSlice<f32>,
        ) -> std::result::Result<(), NcclError>,
    ) -> Result<Tensor> {
        let host = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let send = self
            .stream
            .clone_htod(&host)
            .map_err(|e| nccl_err("copy to device", e))?;
        let mut recv = self
            .stream
            .alloc_zeros::<f32>(out_len)
            .map_err(|e| nccl_err("alloc", e))?;
        collective(&send, &mut recv).map_err(|e| nccl_err(what, e))?;
        let out = self
            .stream
            .clone_dtoh(&recv)
            .map_err(|e| nccl_err("copy to host", e))?;
        Ok(Tensor::from_vec(out, dims, x.device())?.to_dtype(x.dtype())?)
    }
}

impl Communicator for Nccl {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    fn all_gather(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[0] *= self.world_size();
        let n = x.elem_count() * self.world_size();
        self.staged(x, n, dims, "all_gather", |s, r| {
            self.comm.all_gather(s, r).map(|_| ())
        })
    }
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
        self.staged(
            x,
            x.elem_count(),
            x.dims().to_vec(),
            "all_reduce",
            |s, r| self.comm.all_reduce(s, r, &ReduceOp::Sum).map(|_| ()),
        )
    }
}
