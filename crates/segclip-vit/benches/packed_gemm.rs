//! The inference GEMM (`packed_gemm`) against the `gemm` crate on the ViT-B/16 linear layers'
//! shapes at batch 1 (196 tokens) and 8: `A·B + bias` with `B` a fixed weight.
//!
//! "warm": one weight, reused every iteration (it stays in cache). "cold": 40 copies of the
//! weight used in turn (≈ 280 MB for the 768×2304 shape), so each iteration reads its weight
//! from memory, as a forward pass at batch 1 does.
//!
//! `cargo bench -p segclip-vit --bench packed_gemm`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use segclip_vit::packed_gemm::PackedB;

const COPIES: usize = 40;

fn gemm_crate(a: &[f32], b: &[f32], bias: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    let mut out = bias.repeat(m);
    // SAFETY: out (m, n), a (m, k) and b (k, n) are live row-major buffers.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    if !PackedB::supported(32) {
        eprintln!("packed_gemm: this machine has no AVX-512; nothing to compare");
        return;
    }
    let mut group = c.benchmark_group("linear");
    group.sample_size(10);
    let value = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 1000) as f32 / 1000.0 - 0.5;
    for (m, k, n) in [
        (196, 768, 2304),
        (196, 768, 3072),
        (196, 3072, 768),
        (1568, 768, 3072),
    ] {
        let shape = format!("{m}x{k}x{n}");
        let a: Vec<f32> = (0..m * k).map(|i| value(i, 0)).collect();
        let bias: Vec<f32> = (0..n).map(|i| value(i, 1)).collect();
        let weights: Vec<Vec<f32>> = (0..COPIES)
            .map(|s| (0..k * n).map(|i| value(i, s + 2)).collect())
            .collect();
        let packed: Vec<PackedB> = weights
            .iter()
            .map(|b| PackedB::new(b, k, n, 0, n))
            .collect();
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::new("packed/warm", &shape), |bench| {
            bench.iter(|| packed[0].matmul(&a, m, Some(&bias)))
        });
        group.bench_function(BenchmarkId::new("gemm-crate/warm", &shape), |bench| {
            bench.iter(|| gemm_crate(&a, &weights[0], &bias, (m, k, n)))
        });
        let mut turn = 0;
        group.bench_function(BenchmarkId::new("packed/cold", &shape), |bench| {
            bench.iter(|| {
                turn = (turn + 1) % COPIES;
                packed[turn].matmul(&a, m, Some(&bias))
            })
        });
        group.bench_function(BenchmarkId::new("gemm-crate/cold", &shape), |bench| {
            bench.iter(|| {
                turn = (turn + 1) % COPIES;
                gemm_crate(&a, &weights[turn], &bias, (m, k, n))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
