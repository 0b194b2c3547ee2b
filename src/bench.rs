//! Timing helpers shared by `segclip bench`, the criterion benches and `benches/*.py`: a
//! SegCLIP ViT-B/16 with the parity generator's seeded weights (the speed does not depend on
//! the values) and a median-of-N timer.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use segclip_group::model::seeded_state_dict;
use segclip_group::{SegClip, SegClipConfig};

/// SegCLIP ViT-B/16 with seeded weights, training-only tensors left out.
pub fn seeded_vit_b16(device: &Device) -> Result<SegClip> {
    let cfg = SegClipConfig::vit_b16();
    let mut sd = seeded_state_dict(&cfg, 0, device)?;
    let (_, optional) = cfg.keys();
    for (k, _) in optional {
        sd.tensors.remove(&k);
    }
    Ok(SegClip::from_state_dict(sd, &cfg, device)?)
}

/// A deterministic normalised-pixel batch (B, 3, size, size).
pub fn pixels(batch: usize, size: usize, device: &Device) -> Result<Tensor> {
    let n = batch * 3 * size * size;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Ok(Tensor::from_vec(v, (batch, 3, size, size), device)?)
}

/// Run `f` `warmup` times untimed, then `iters` times; return the sorted times in ms.
pub fn time_ms(warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t)
}

/// This process's peak resident set size in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
