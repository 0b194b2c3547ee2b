//! How fast can the learning benchmark's visual tower learn shape when it is *told* the shapes?
//! A ceiling for caption supervision: the same tower (`datasets/synth/model.json`, fresh weights),
//! a linear head on its pooled output, trained with binary cross-entropy on which shapes and
//! colours a scene holds (AdamW, batch 16, fresh training scenes every step), scored on 256
//! fresh test scenes every 50 steps.
//!
//! `MODE` picks the tower and the pooling:
//! - `vit-group`: the model's own image embedding (stem, `layers0`, grouping, `layers2`, max over
//!   regions, `proj`), with Gumbel noise as in training;
//! - `vit-mean`, `vit-max`: the patch tokens after `layers0`, mean- or max-pooled;
//! - `convvit-mean`, `convvit-max`: the patch stem replaced by three 3×3 stride-2 convolutions
//!   (3→32→64→128, ReLU; the same 14×14 grid), then `layers0`, pooled;
//! - `cnn-mean`, `cnn-max`: those three convolutions alone, pooled.
//!
//! `single` draws only one-object scenes and adds the 4-way shape accuracy (argmax of the shape
//! logits; chance 25 %).
//!
//! `MODEL=file.json` trains another model configuration's tower (default
//! `datasets/synth/model.json`), e.g. one with a convolutional stem.
//!
//! ```text
//! cargo run --release --example shape_supervised -- STEPS LR MODE [single]
//! ```

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use segclip::data::synth::{self, Split, COLOURS, SHAPES};
use segclip::data::transforms::Rng;
use segclip::group::zeroshot::resize::normalize_clip;
use segclip::group::SegClipConfig;
use segclip::train::trainer::Trainer;

const NS: usize = SHAPES.len();
const NT: usize = SHAPES.len() + COLOURS.len();

/// `b` scenes of stream `seed` from index `start` on (one-object scenes only if `single`):
/// pixels (b, 3, S, S) and targets (b, shapes + colours).
fn scenes(
    seed: u64,
    start: u64,
    b: usize,
    size: usize,
    split: Split,
    single: bool,
) -> anyhow::Result<(Tensor, Tensor)> {
    let (mut px, mut y) = (Vec::new(), Vec::new());
    let mut i = start;
    while y.len() < b * NT {
        let s = synth::scene(seed, i, size, split);
        i += 1;
        if single && s.objects.len() != 1 {
            continue;
        }
        px.extend(normalize_clip(&s.image.data, (size, size)));
        let mut t = [0f32; NT];
        for &(c, sh) in &s.objects {
            t[sh] = 1.0;
            t[NS + c] = 1.0;
        }
        y.extend(t);
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(px, (b, 3, size, size), &dev)?,
        Tensor::from_vec(y, (b, NT), &dev)?,
    ))
}

/// A N(0, std²) parameter from our seeded generator.
fn normal_var(rng: &mut Rng, shape: &[usize], std: f64) -> anyhow::Result<Var> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2) = (rng.uniform(f64::MIN_POSITIVE, 1.0), rng.uniform(0.0, 1.0));
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(
        v,
        shape,
        &Device::Cpu,
    )?)?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: STEPS LR MODE [single]";
    let steps: usize = args
        .first()
        .ok_or_else(|| anyhow::anyhow!(usage))?
        .parse()?;
    let lr: f64 = args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let mode = args.get(2).ok_or_else(|| anyhow::anyhow!(usage))?.as_str();
    let single = args.get(3).is_some_and(|s| s == "single");
    let (conv, tower) = match mode {
        "vit-group" | "vit-mean" | "vit-max" => (false, true),
        "convvit-mean" | "convvit-max" => (true, true),
        "cnn-mean" | "cnn-max" => (true, false),
        _ => anyhow::bail!("unknown MODE `{mode}`; {usage}"),
    };
    let dev = Device::Cpu;
    let model = std::env::var("MODEL").unwrap_or_else(|_| "datasets/synth/model.json".into());
    let cfg = SegClipConfig::from_file(std::path::Path::new(&model))?;
    let tr = Trainer::new(&cfg, None, Default::default(), Default::default(), 1, &dev)?;
    let vis = &tr.model.model.visual;
    let (size, grid, centers) = (
        cfg.vision.image_size,
        cfg.vision.grid(),
        cfg.group.num_centers,
    );
    let mut rng = Rng::new(7);
    let width = cfg.vision.width;
    let kernels = [
        normal_var(&mut rng, &[32, 3, 3, 3], (2.0f64 / 27.0).sqrt())?,
        normal_var(&mut rng, &[64, 32, 3, 3], (2.0f64 / 288.0).sqrt())?,
        normal_var(&mut rng, &[width, 64, 3, 3], (1.0f64 / 576.0).sqrt())?,
    ];
    let d = if mode == "vit-group" {
        cfg.embed_dim
    } else {
        width
    };
    let head = normal_var(&mut rng, &[NT, d], 0.02)?;
    let mut vars = vec![head.clone()];
    if conv {
        vars.extend(kernels.iter().cloned());
    }
    if tower {
        vars.extend(tr.varmap.all_vars());
    }
    let params = ParamsAdamW {
        lr,
        weight_decay: 0.05,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars, params)?;

    // Tokens (B, N, C) before pooling.
    let tokens = |px: &Tensor| -> anyhow::Result<Tensor> {
        if !conv {
            return Ok(vis.encode_patches(px, None)?.0);
        }
        let x = px.conv2d(&kernels[0], 1, 2, 1, 1)?.relu()?;
        let x = x.conv2d(&kernels[1], 1, 2, 1, 1)?.relu()?;
        let x = x.conv2d(&kernels[2], 1, 2, 1, 1)?; // (B, C, grid, grid)
        let x = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        if !tower {
            return Ok(x.relu()?);
        }
        let pos = vis.stem.positional_embedding.narrow(0, 1, grid * grid)?;
        let mut x = vis.stem.ln_pre.forward(&x.broadcast_add(&pos)?)?;
        for blk in &vis.layers0 {
            x = blk.forward(&x, None)?;
        }
        Ok(x)
    };
    let logits = |px: &Tensor, rng: &mut Rng| -> anyhow::Result<Tensor> {
        let e = if mode == "vit-group" {
            let b = px.dim(0)?;
            let g: Vec<f32> = (0..b * centers * grid * grid)
                .map(|_| -(-(rng.uniform(1e-10, 1.0).ln())).ln() as f32)
                .collect();
            let g = Tensor::from_vec(g, (b, centers, grid * grid), &dev)?;
            vis.forward(px, Some(&g), None)?.image_emb
        } else if mode.ends_with("max") {
            tokens(px)?.max(1)?
        } else {
            tokens(px)?.mean(1)?
        };
        Ok(e.matmul(&head.as_tensor().t()?)?)
    };

    let (test_px, test_y) = scenes(999, 0, 256, size, Split::Test, single)?;
    let shape_y = test_y.narrow(1, 0, NS)?;
    let absent = (1.0 - shape_y.mean_all()?.to_scalar::<f32>()?) * 100.0;
    println!(
        "{mode}, lr {lr}, {}: shape bits all-absent baseline {absent:.1} %",
        if single {
            "one-object scenes"
        } else {
            "1-3 objects"
        }
    );
    let t0 = std::time::Instant::now();
    for step in 1..=steps {
        let (px, y) = scenes(1, (step * 64) as u64, 16, size, Split::Train, single)?;
        let p = candle_nn::ops::sigmoid(&logits(&px, &mut rng)?)?.clamp(1e-6, 1.0 - 1e-6)?;
        let bce = ((&y * p.log()?)? + ((1.0 - &y)? * (1.0 - &p)?.log()?)?)?;
        let loss = bce.mean_all()?.neg()?;
        opt.backward_step(&loss)?;
        if step % 50 != 0 && step != steps {
            continue;
        }
        let l = Tensor::cat(
            &(0..4)
                .map(|k| logits(&test_px.narrow(0, k * 64, 64)?, &mut rng))
                .collect::<anyhow::Result<Vec<_>>>()?,
            0,
        )?;
        let ok = l
            .ge(0.0)?
            .to_dtype(DType::F32)?
            .eq(&test_y)?
            .to_dtype(DType::F32)?;
        let bits = |a: usize, n: usize| -> anyhow::Result<f32> {
            Ok(ok.narrow(1, a, n)?.mean_all()?.to_scalar::<f32>()? * 100.0)
        };
        let mut line = format!(
            "step {step:4} loss {:.3}  shape bits {:.1} %  colour bits {:.1} %",
            loss.to_scalar::<f32>()?,
            bits(0, NS)?,
            bits(NS, COLOURS.len())?
        );
        if single {
            let pred = l.narrow(1, 0, NS)?.argmax(1)?;
            let truth = shape_y.argmax(1)?;
            let acc = pred
                .eq(&truth)?
                .to_dtype(DType::F32)?
                .mean_all()?
                .to_scalar::<f32>()?;
            line += &format!("  shape (4-way) {:.1} %", acc * 100.0);
        }
        println!("{line}  ({:.0} s)", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
