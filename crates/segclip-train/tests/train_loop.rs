//! A few dozen steps on a tiny caption set the test makes: the loss falls, the assignment uses
//! more than one center, and a resumed run continues exactly like an uninterrupted one.

use candle_core::Device;
use segclip_data::datasets::CaptionDataset;
use segclip_data::patch_labels::PatchRule;
use segclip_data::superpixels::{FelzenszwalbParams, Method};
use segclip_data::transforms::Rng;
use segclip_group::{DecoderConfig, GroupConfig, SegClipConfig};
use segclip_losses::LossWeights;
use segclip_train::batch::BatchBuilder;
use segclip_train::{OptimConfig, Trainer};
use segclip_vit::{TextConfig, Tokenizer, VisionConfig};

fn tiny() -> SegClipConfig {
    SegClipConfig {
        vision: VisionConfig {
            image_size: 32,
            patch_size: 8,
            width: 64,
            heads: 1,
            ln_eps: 1e-5,
            conv_stem: Vec::new(),
        },
        text: TextConfig {
            vocab_size: 49408,
            context_length: 77,
            width: 64,
            layers: 2,
            heads: 1,
            embed_dim: 32,
            ln_eps: 1e-5,
        },
        embed_dim: 32,
        layers0: 2,
        layers2: 1,
        layers_mae2: 1,
        group: GroupConfig {
            num_centers: 4,
            cross_layers: 1,
            cross_heads: 1,
            conv_groups: 1,
            gumbel_tau: 0.9,
        },
        decoder: DecoderConfig {
            dim: 32,
            depth: 1,
            heads: 2,
            ln_eps: 1e-6,
        },
        logit_scale_max: 100.0,
    }
}

/// Eight images: a coloured square on a plain background, captioned by its colour.
fn dataset(name: &str) -> CaptionDataset {
    // Under target/tmp (cargo's folder for integration tests), emptied at each run.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("segclip-train-loop-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let colours = [
        ("red", [220u8, 30, 30]),
        ("green", [30, 200, 40]),
        ("blue", [30, 40, 220]),
        ("yellow", [230, 220, 40]),
    ];
    let mut lines = String::new();
    for i in 0..8 {
        let (name, c) = colours[i % 4];
        let off = (i / 4) as u32 * 6;
        let img = image::RgbImage::from_fn(40, 40, |x, y| {
            if (8 + off..28 + off).contains(&x) && (10..30).contains(&y) {
                image::Rgb(c)
            } else {
                image::Rgb([120, 120, 120])
            }
        });
        img.save(dir.join(format!("{i}.png"))).unwrap();
        lines += &format!("{{\"image\": \"{i}.png\", \"caption\": \"a {name} square\"}}\n");
    }
    std::fs::write(dir.join("pairs.jsonl"), lines).unwrap();
    CaptionDataset::jsonl(&dir.join("pairs.jsonl")).unwrap()
}

fn builder() -> BatchBuilder {
    BatchBuilder {
        tokenizer: Tokenizer::new(32).unwrap(),
        image_size: 32,
        patch_size: 8,
        superpixels: Method::Felzenszwalb(FelzenszwalbParams {
            scale: 32.0,
            sigma: 0.5,
            min_size: 16,
        }),
        cache: None,
        rule: PatchRule::Majority,
    }
}

fn trainer(steps: usize) -> Trainer {
    let optim = OptimConfig {
        lr: 2e-3,
        lower_lr: 2e-3,
        total_steps: steps,
        warmup: 0.1,
        ..Default::default()
    };
    Trainer::new(
        &tiny(),
        None,
        optim,
        LossWeights::default(),
        7,
        &Device::Cpu,
    )
    .unwrap()
}

/// Steps `from..to` over the dataset in seeded epoch order, 4 samples a batch.
fn run(t: &mut Trainer, ds: &CaptionDataset, from: usize, to: usize) -> Vec<f32> {
    let b = builder();
    let per_epoch = ds.len() / 4;
    let mut losses = Vec::new();
    for step in from..to {
        let order = ds.epoch_order(11, (step / per_epoch) as u64);
        let idx = &order[(step % per_epoch) * 4..(step % per_epoch) * 4 + 4];
        let (samples, skipped) = ds.load_batch(idx);
        assert_eq!(skipped, 0);
        let mut rng = Rng::new(t.rng.next_u64());
        let batch = b.build(&samples, &mut rng, &Device::Cpu).unwrap();
        let log = t.train_step(&batch).unwrap();
        assert!(!log.skipped);
        losses.push(log.loss);
    }
    losses
}

#[test]
fn loss_falls_and_centers_are_used() {
    let ds = dataset("falls");
    let mut t = trainer(40);
    let losses = run(&mut t, &ds, 0, 40);
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[35..].iter().sum::<f32>() / 5.0;
    println!("loss {first:.4} -> {last:.4}: {losses:?}");
    assert!(last < first * 0.9, "loss did not fall: {first} -> {last}");
    // Assignment of a fresh batch uses more than one center.
    let (samples, _) = ds.load_batch(&[0, 1, 2, 3]);
    let batch = builder()
        .build(&samples, &mut Rng::new(1), &Device::Cpu)
        .unwrap();
    let log = t.train_step(&batch).unwrap();
    assert!(log.centers_used > 1, "all patches on one center");
}

#[test]
fn resume_continues_exactly() {
    let ds = dataset("resume");
    let mut straight = trainer(6);
    let a = run(&mut straight, &ds, 0, 6);
    let dir = std::env::temp_dir().join(format!("segclip-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut first = trainer(6);
    run(&mut first, &ds, 0, 3);
    let path = first.save(&dir, 2, serde_json::json!({})).unwrap();
    // A run killed while writing the next checkpoint leaves a temporary folder, which is ignored.
    std::fs::create_dir_all(dir.join(".checkpoint-00000004.tmp-1")).unwrap();
    assert_eq!(
        segclip_train::checkpoint::list(&dir).last().unwrap().1,
        path
    );
    let mut resumed = trainer(6);
    resumed.resume(&path).unwrap();
    assert_eq!(resumed.step, 3);
    let b = run(&mut resumed, &ds, 3, 6);
    assert_eq!(&a[3..], &b[..], "resumed losses differ");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn captions_are_padded_to_the_longest_with_the_same_embeddings() {
    let image =
        |v: u8| segclip_group::zeroshot::RgbImage::new(40, 40, vec![v; 40 * 40 * 3]).unwrap();
    let captions = [
        "a red square",
        "a small green square beside a large blue circle on a grey floor",
        "square",
    ];
    let samples: Vec<_> = captions
        .iter()
        .enumerate()
        .map(|(i, c)| segclip_data::datasets::CaptionSample {
            key: format!("{i}"),
            caption: c.to_string(),
            image: image(40 * i as u8),
        })
        .collect();
    let b = builder();
    let batch = b.build(&samples, &mut Rng::new(3), &Device::Cpu).unwrap();
    let longest = captions
        .iter()
        .map(|c| b.tokenizer.encode(c).unwrap().ids.len())
        .max()
        .unwrap();
    assert!(longest < 32);
    assert_eq!(batch.input_ids.dims(), &[3, longest]);
    // The same captions padded to the full 32 tokens give the same embeddings.
    let full: Vec<i64> = captions
        .iter()
        .flat_map(|c| b.tokenizer.encode(c).unwrap().padded(32))
        .map(|v| v as i64)
        .collect();
    let full = candle_core::Tensor::from_vec(full, (3, 32), &Device::Cpu).unwrap();
    let t = trainer(1);
    let text = &t.model.model.text;
    let short: Vec<Vec<f32>> = text
        .forward(&batch.input_ids, None)
        .unwrap()
        .to_vec2()
        .unwrap();
    let long: Vec<Vec<f32>> = text.forward(&full, None).unwrap().to_vec2().unwrap();
    let diff = short
        .iter()
        .flatten()
        .zip(long.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "embeddings differ by {diff}");
}
