//! The packed GEMM reading its `A` with rows `k` floats apart against rows
//! [`padded_stride`]`(k)` apart, on the ViT-B/16 layers' shapes at batch 1 (196 tokens). The
//! variants alternate call by call (400 calls each), so both see the same machine; each line
//! prints the 10th percentile / median in ms. "cold": 40 copies of the weight used in turn (it
//! comes from memory, as in a forward pass); "warm": one weight.
//!
//! `cargo run --release -p segclip-vit --example padded_rows`

use segclip_vit::packed_gemm::{padded_stride, PackedB};
use std::time::Instant;

const COPIES: usize = 40;
const CALLS: usize = 400;

fn main() {
    if !PackedB::supported(32) {
        eprintln!("padded_rows: this machine has no AVX-512; the packed GEMM does not run");
        return;
    }
    let value = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 1000) as f32 / 1000.0 - 0.5;
    for (m, k, n) in [(196, 768, 2304), (196, 3072, 768), (196, 768, 3072)] {
        let a: Vec<f32> = (0..m * k).map(|i| value(i, 0)).collect();
        let bias: Vec<f32> = (0..n).map(|i| value(i, 1)).collect();
        let packed: Vec<PackedB> = (0..COPIES)
            .map(|s| {
                let b: Vec<f32> = (0..k * n).map(|i| value(i, s + 2)).collect();
                PackedB::new(&b, k, n, 0, n)
            })
            .collect();
        let lda = padded_stride(k);
        let mut padded = vec![0f32; m * lda];
        for (dst, src) in padded.chunks_exact_mut(lda).zip(a.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
        }
        // cold in place, cold padded, warm in place, warm padded
        let mut times: [Vec<f64>; 4] = Default::default();
        for call in 0..CALLS {
            for (v, t) in times.iter_mut().enumerate() {
                let w = if v < 2 {
                    &packed[call % COPIES]
                } else {
                    &packed[0]
                };
                let (x, ld) = if v % 2 == 0 { (&a, k) } else { (&padded, lda) };
                let start = Instant::now();
                let out = w.matmul_strided(x, ld, m, Some(&bias), (0, n), false, n);
                t.push(start.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(out);
            }
        }
        let show = |t: &mut Vec<f64>| {
            t.sort_by(f64::total_cmp);
            format!("{:.3}/{:.3}", t[t.len() / 10], t[t.len() / 2])
        };
        let [c0, c1, w0, w1] = &mut times;
        println!(
            "{m}x{k}x{n} (padded stride {lda}): cold {} → {} ms, warm {} → {} ms",
            show(c0),
            show(c1),
            show(w0),
            show(w1)
        );
    }
}
