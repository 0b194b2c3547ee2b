//! Checkpoints: `checkpoint-<step>/` holding `model.safetensors` (official SegCLIP key names, so
//! the official code loads it and we load theirs), `optimizer.safetensors` (Adam moments and
//! per-parameter steps) and `state.json` (step, RNG state, configuration).
//!
//! A checkpoint is written into a temporary folder and renamed into place only when complete, so
//! a run killed mid-write leaves the previous checkpoints intact; only the last `keep` complete
//! ones are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::{Error, Result};

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("{}: {e}", path.display()))
}

/// Everything a checkpoint holds.
pub struct CheckpointData {
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub state: serde_json::Value,
}

/// The complete checkpoints under `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .exists()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Write checkpoint `step` under `dir`, keeping the last `keep` complete ones.
pub fn save(dir: &Path, step: usize, data: &CheckpointData, keep: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let final_dir = dir.join(format!("checkpoint-{step:08}"));
    let tmp = dir.join(format!(".checkpoint-{step:08}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    for (name, tensors) in [
        ("model.safetensors", &data.model),
        ("optimizer.safetensors", &data.optimizer),
    ] {
        segclip_vit::weights::save_safetensors(tensors, None, &tmp.join(name))
            .map_err(|e| io(&tmp, e))?;
    }
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_vec_pretty(&data.state).map_err(|e| io(&tmp, e))?,
    )
    .map_err(|e| io(&tmp, e))?;
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::File::open(tmp.join(f))
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
    }
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    let all = list(dir);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(final_dir)
}

/// Read a checkpoint folder.
pub fn load(path: &Path) -> Result<CheckpointData> {
    let dev = candle_core::Device::Cpu;
    let model = candle_core::safetensors::load(path.join("model.safetensors"), &dev)
        .map_err(|e| io(path, e))?;
    let optimizer = candle_core::safetensors::load(path.join("optimizer.safetensors"), &dev)
        .map_err(|e| io(path, e))?;
    let text = std::fs::read_to_string(path.join("state.json")).map_err(|e| io(path, e))?;
    let state = serde_json::from_str(&text).map_err(|e| io(path, e))?;
    Ok(CheckpointData {
        model,
        optimizer,
        state,
    })
}
