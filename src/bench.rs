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

/// [`time_ms`] with one timed call per line of standard input (until its end), each time
/// printed (milliseconds) on its own line as soon as it is taken: a peer process alternates
/// its own runs with these, so both see the same machine.
pub fn time_ms_paced(warmup: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    use std::io::{BufRead, Write};
    for _ in 0..warmup {
        f()?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut t = Vec::new();
    for line in std::io::stdin().lock().lines() {
        line?;
        let s = Instant::now();
        f()?;
        let ms = s.elapsed().as_secs_f64() * 1e3;
        writeln!(out, "{ms}")?;
        out.flush()?;
        t.push(ms);
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

/// One training step of `cfg` from scratch (every parameter trainable) at `batch`, timed: the
/// sorted step times and the median forward / backward / update split of the timed steps.
/// Inputs: deterministic pixels, 32-token captions, superpixels of 2×2 patch blocks; the same
/// noise every step.
pub fn train_step_ms(
    cfg: &SegClipConfig,
    batch: usize,
    warmup: usize,
    iters: usize,
    device: &Device,
) -> Result<(Vec<f64>, [f64; 3])> {
    use segclip_losses::{Batch, LossWeights};
    use segclip_train::{OptimConfig, SingleProcess, Trainer};
    let optim = OptimConfig {
        total_steps: 1000,
        ..Default::default()
    };
    let mut trainer = Trainer::new(cfg, None, optim, LossWeights::default(), 0, device)?;
    let (s, g) = (cfg.vision.image_size, cfg.vision.grid());
    let ids: Vec<i64> = (0..batch * 32)
        .map(|i| match i % 32 {
            0 => 49406,
            21 => 49407,
            p if p > 21 => 0,
            p => 300 + ((i * 7 + p * 131) % 30000) as i64,
        })
        .collect();
    let seg: Vec<i64> = (0..batch * g * g)
        .map(|i| {
            let (r, c) = ((i % (g * g)) / g, i % g);
            ((r / 2) * g + c / 2) as i64
        })
        .collect();
    let data = Batch {
        input_ids: Tensor::from_vec(ids, (batch, 32), device)?,
        pixels: pixels(batch, s, device)?,
        image_seg: Tensor::from_vec(seg, (batch, g * g), device)?,
    };
    let noise = trainer.sample_noise(batch)?;
    let mut split = Vec::new();
    let times = time_ms(warmup, iters, || {
        let log = trainer.step_with(&data, &noise, 1, &SingleProcess)?;
        split.push([log.forward_ms, log.backward_ms, log.update_ms]);
        Ok(())
    })?;
    let median = |k: usize| {
        let mut v: Vec<f64> = split[warmup..].iter().map(|x| x[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((times, [median(0), median(1), median(2)]))
}
