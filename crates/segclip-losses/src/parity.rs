//! Helpers to run the official training fixtures (`train.safetensors`, see the parity README)
//! through this code: trainable seeded weights and the fixture's batch and injected noise.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use segclip_group::SegClipConfig;

use crate::{Batch, Noise, Result};

/// Every tensor of `cfg` as a trainable `Var` holding the parity generator's seeded values.
pub fn seeded_varmap(cfg: &SegClipConfig, seed: u64, device: &Device) -> Result<VarMap> {
    let sd = segclip_group::model::seeded_state_dict(cfg, seed, device)?;
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("fresh VarMap");
        for (k, t) in sd.tensors {
            data.insert(k, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

/// The batch and noise of a training fixture; `pixels` are `input.pixels` of the inference
/// fixture (the training image is not stored twice).
pub fn fixture_inputs(
    train: &HashMap<String, Tensor>,
    pixels: &Tensor,
    grid: usize,
) -> Result<(Batch, Noise)> {
    let get = |k: &str| -> Result<Tensor> {
        train.get(k).cloned().ok_or_else(|| {
            candle_core::Error::Msg(format!("the training fixture lacks `{k}`")).into()
        })
    };
    let ids = get("train.input_ids")?;
    let b = ids.dim(0)?;
    let batch = Batch {
        input_ids: ids,
        pixels: pixels.clone(),
        image_seg: get("train.image_seg")?.reshape((b, grid * grid))?,
    };
    let noise = Noise {
        gumbel_plain: get("train.gumbel_noise.0")?,
        ids_keep: get("train.mae.ids_keep")?,
        ids_restore: get("train.mae.ids_restore")?,
        mask: get("train.mae.mask")?,
        gumbel_masked: get("train.gumbel_noise.1")?,
    };
    Ok((batch, noise))
}
