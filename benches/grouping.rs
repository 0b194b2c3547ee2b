//! Criterion benches of the semantic group module at ViT-B/16 size (B = 1 and 8, N = 196 and
//! 784), of the whole SegCLIP visual forward, on seeded weights, and of the decode's refinement
//! of one crop's 8-center assignment map (10 iterations, `--refine 10`) at 112 and 224 pixels.
//!
//! `cargo bench --bench grouping`

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let model = segclip::bench::seeded_vit_b16(&dev).expect("seeded ViT-B/16");
    let mut g = c.benchmark_group("semantic_group");
    g.sample_size(10);
    for (b, n) in [(1usize, 196usize), (8, 196), (1, 784), (8, 784)] {
        let patches = Tensor::randn(0f32, 1., (b, n, 768), &dev).unwrap();
        g.bench_with_input(
            BenchmarkId::new(format!("B{b}"), n),
            &patches,
            |bench, p| {
                bench.iter(|| {
                    let out = model.visual.group.forward(p, None, None).unwrap();
                    // Device sync: bring the result back to the host.
                    out.regions.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                })
            },
        );
    }
    g.finish();
    let mut g = c.benchmark_group("visual_forward");
    g.sample_size(10);
    for (b, size) in [(1usize, 224usize), (8, 224), (1, 448)] {
        let x = segclip::bench::pixels(b, size, &dev).unwrap();
        g.bench_with_input(BenchmarkId::new(format!("B{b}"), size), &x, |bench, x| {
            bench.iter(|| {
                model
                    .visual
                    .forward(x, None, None)
                    .unwrap()
                    .image_emb
                    .to_vec2::<f32>()
                    .unwrap()
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("refine");
    g.sample_size(10);
    for size in [112usize, 224] {
        let n = size * size;
        let image: Vec<f32> = (0..3 * n)
            .map(|i| ((i * 7919) % 251) as f32 / 251.0)
            .collect();
        let amap: Vec<f32> = (0..8 * n)
            .map(|i| ((i * 104729) % 97) as f32 / 97.0)
            .collect();
        g.bench_with_input(BenchmarkId::new("iters10", size), &size, |bench, &size| {
            bench.iter(|| {
                let mut m = amap.clone();
                segclip::group::zeroshot::refine::refine(&mut m, 8, &image, (3, size, size), 10);
                m
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
