//! Gradient accumulation (GradCache) and data-parallel workers take the same step as one
//! worker with the whole batch: same losses, and the same parameters after the update.

use candle_core::{Device, Tensor};
use segclip_data::transforms::Rng;
use segclip_group::{DecoderConfig, GroupConfig, SegClipConfig};
use segclip_losses::{Batch, LossWeights};
use segclip_train::{
    Communicator, Grads, LocalGroup, OptimConfig, SingleProcess, StepLog, Trainer,
};
use segclip_vit::{TextConfig, VisionConfig};

fn tiny() -> SegClipConfig {
    SegClipConfig {
        vision: VisionConfig {
            image_size: 32,
            patch_size: 8,
            width: 32,
            heads: 2,
            ln_eps: 1e-5,
            conv_stem: Vec::new(),
        },
        text: TextConfig {
            vocab_size: 49408,
            context_length: 77,
            width: 32,
            layers: 1,
            heads: 2,
            embed_dim: 16,
            ln_eps: 1e-5,
        },
        embed_dim: 16,
        layers0: 1,
        layers2: 1,
        layers_mae2: 1,
        group: GroupConfig {
            num_centers: 4,
            cross_layers: 1,
            cross_heads: 2,
            conv_groups: 1,
            gumbel_tau: 0.9,
        },
        decoder: DecoderConfig {
            dim: 16,
            depth: 1,
            heads: 2,
            ln_eps: 1e-6,
        },
        logit_scale_max: 100.0,
    }
}

fn trainer() -> Trainer {
    trainer_with(LossWeights::default())
}

fn trainer_with(weights: LossWeights) -> Trainer {
    let optim = OptimConfig {
        lr: 1e-3,
        lower_lr: 1e-3,
        total_steps: 10,
        warmup: 0.0,
        // No clipping: the comparison is of raw gradients through Adam's first step, which
        // divides each element by its own magnitude.
        clip_grad: 1e9,
        ..Default::default()
    };
    Trainer::new(&tiny(), None, optim, weights, 3, &Device::Cpu).unwrap()
}

/// A random batch of `b` (the same on every run): pixels, captions of 6 tokens ending in the
/// end token, superpixels.
fn batch(b: usize) -> Batch {
    let dev = Device::Cpu;
    let mut rng = Rng::new(5);
    let ids: Vec<i64> = (0..b * 8)
        .map(|i| match i % 8 {
            0 => 49406,
            6 => 49407,
            7 => 0,
            _ => 300 + rng.below(0, 2000) as i64,
        })
        .collect();
    let seg: Vec<i64> = (0..b * 16).map(|_| rng.below(0, 3) as i64).collect();
    Batch {
        input_ids: Tensor::from_vec(ids, (b, 8), &dev).unwrap(),
        pixels: Tensor::from_vec(
            (0..b * 3 * 32 * 32)
                .map(|_| rng.uniform(-1.7, 1.7) as f32)
                .collect::<Vec<_>>(),
            (b, 3, 32, 32),
            &dev,
        )
        .unwrap(),
        image_seg: Tensor::from_vec(seg, (b, 16), &dev).unwrap(),
    }
}

/// The largest absolute element of `t`.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every gradient of `b` within 1e-4 of the largest element of the same tensor of `a`.
fn same_grads(a: &Grads, b: &Grads) {
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 30, "only {} gradients", a.len());
    for (name, ga) in a.iter() {
        let gb = b
            .get(name)
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let scale = max_abs(ga);
        let diff = max_abs(&(ga - gb).unwrap());
        assert!(
            diff <= 1e-4 * scale.max(1e-6),
            "{name}: scale {scale}, differs by {diff}"
        );
    }
}

fn close(a: &StepLog, b: &StepLog) {
    for (x, y, what) in [
        (a.contrastive, b.contrastive, "contrastive"),
        (a.kl, b.kl, "kl"),
        (a.mae, b.mae, "mae"),
        (a.mix, b.mix, "mix"),
    ] {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "{what}: {x} vs {y}"
        );
    }
    // Logs of `gradients` carry no norm (it is taken by the update).
    assert!(
        a.grad_norm.is_nan() && b.grad_norm.is_nan()
            || (a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm,
        "grad norm {} vs {}",
        a.grad_norm,
        b.grad_norm
    );
}

#[test]
fn accumulated_step_equals_one_big_batch() {
    let data = batch(8);
    let mut big = trainer();
    let noise = big.sample_noise(8).unwrap();
    let (a, ga) = big.gradients(&data, &noise, 1, &SingleProcess).unwrap();
    let mut acc = trainer();
    let (b, gb) = acc.gradients(&data, &noise, 4, &SingleProcess).unwrap();
    close(&a, &b);
    same_grads(&ga.unwrap(), &gb.unwrap());
    // The update itself: parameters after one step agree as well.
    let (sa, sb) = (
        big.step_with(&data, &noise, 1, &SingleProcess).unwrap(),
        acc.step_with(&data, &noise, 4, &SingleProcess).unwrap(),
    );
    close(&sa, &sb);
    // A batch that does not split is refused with a clear message.
    let err = acc.step_with(&data, &noise, 3, &SingleProcess).unwrap_err();
    assert!(err.to_string().contains("micro-batches"), "{err}");
}

#[test]
fn two_workers_equal_one_big_batch() {
    let data = batch(8);
    let mut big = trainer();
    let noise = big.sample_noise(8).unwrap();
    let (a, ga) = big.gradients(&data, &noise, 1, &SingleProcess).unwrap();
    let ga = ga.unwrap();
    let handles: Vec<_> = LocalGroup::new(2)
        .into_iter()
        .map(|comm| {
            let (data, noise) = (data.clone(), noise.clone());
            std::thread::spawn(move || {
                let r = comm.rank();
                let (d, n) = (
                    data.narrow(r * 4, 4).unwrap(),
                    noise.narrow(r * 4, 4).unwrap(),
                );
                let mut t = trainer();
                // Each worker accumulates over two micro-batches of 2.
                let (log, g) = t.gradients(&d, &n, 2, &comm).unwrap();
                let step = t.step_with(&d, &n, 2, &comm).unwrap();
                (log, g.unwrap(), step, t.named_tensors().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (log, g, _, _) in &results {
        close(&a, log);
        same_grads(&ga, g);
    }
    // The workers end with identical parameters.
    let (p0, p1) = (&results[0].3, &results[1].3);
    for (k, t) in p0 {
        let d = (t - &p1[k]).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{k}");
    }
}

#[test]
fn accumulation_keeps_the_mixed_pairs() {
    // Pairs are samples 2k and 2k + 1, so any even micro-batch holds whole pairs and the step
    // is the one-batch step; an odd one is refused.
    let mix = LossWeights {
        mix: 1.0,
        ..Default::default()
    };
    let data = batch(8);
    let mut big = trainer_with(mix);
    let noise = big.sample_noise(8).unwrap();
    let (a, ga) = big.gradients(&data, &noise, 1, &SingleProcess).unwrap();
    assert!(a.mix.is_finite() && a.mix > 0.0, "mix loss {}", a.mix);
    let ga = ga.unwrap();
    for micro in [2, 4] {
        let mut acc = trainer_with(mix);
        let (b, gb) = acc.gradients(&data, &noise, micro, &SingleProcess).unwrap();
        close(&a, &b);
        same_grads(&ga, &gb.unwrap());
    }
    let err = trainer_with(mix)
        .gradients(&data, &noise, 8, &SingleProcess)
        .unwrap_err();
    assert!(err.to_string().contains("2k + 1"), "{err}");
}

#[test]
fn mixed_pairs_are_independent_and_symmetric() {
    // Samples 2k and 2k + 1 form a pair: swapping them swaps their embeddings, and changing one
    // pair leaves the other's untouched.
    let t = trainer_with(LossWeights {
        mix: 1.0,
        ..Default::default()
    });
    let dev = Device::Cpu;
    let patches = Tensor::randn(0f32, 1., (4, 16, 32), &dev).unwrap();
    let mixed = |p: &Tensor| t.model.mixed_embeddings(p).unwrap();
    let swap = Tensor::new(&[1u32, 0, 3, 2], &dev).unwrap();
    let e = mixed(&patches);
    assert_eq!(e.dims(), &[4, 16]);
    let e_swapped = mixed(&patches.index_select(&swap, 0).unwrap())
        .index_select(&swap, 0)
        .unwrap();
    let max_diff = |a: &Tensor, b: &Tensor| max_abs(&(a - b).unwrap());
    assert!(
        max_diff(&e, &e_swapped) < 1e-4,
        "{}",
        max_diff(&e, &e_swapped)
    );
    let other = Tensor::cat(
        &[
            patches.narrow(0, 0, 2).unwrap(),
            Tensor::randn(0f32, 1., (2, 16, 32), &dev).unwrap(),
        ],
        0,
    )
    .unwrap();
    let e2 = mixed(&other);
    let head = |x: &Tensor| x.narrow(0, 0, 2).unwrap();
    assert_eq!(max_diff(&head(&e), &head(&e2)), 0.0);
    let tail = |x: &Tensor| x.narrow(0, 2, 2).unwrap();
    assert!(max_diff(&tail(&e), &tail(&e2)) > 1e-3);
    // An odd batch cannot be paired.
    let err = t
        .model
        .mixed_embeddings(&patches.narrow(0, 0, 3).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("2k + 1"), "{err}");
}
