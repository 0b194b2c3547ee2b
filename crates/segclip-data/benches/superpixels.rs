//! Criterion benches of the superpixel algorithms on a 500×375 photo (the size of a PASCAL VOC
//! image), one thread each.
//!
//! `cargo bench -p segclip-data --bench superpixels`
//!
//! The allocator is the `segclip` binary's (mimalloc), which keeps freed pages for the next
//! image; with the system allocator each call also pays ~20 MB of fresh page faults.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use segclip_data::superpixels::{felzenszwalb, slic, FelzenszwalbParams, SlicParams};

fn photo() -> (Vec<u8>, usize, usize) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../datasets/samples/coffee.png"
    );
    let img = image::open(path)
        .expect("sample photo")
        .resize_exact(500, 375, image::imageops::FilterType::Triangle)
        .into_rgb8();
    (img.as_raw().clone(), 375, 500)
}

fn bench(c: &mut Criterion) {
    let (img, h, w) = photo();
    let mut g = c.benchmark_group("superpixels_500x375");
    g.sample_size(20);
    g.bench_function("felzenszwalb_segclip", |b| {
        b.iter(|| felzenszwalb(&img, (h, w, 3), &FelzenszwalbParams::default()))
    });
    g.bench_function("slic_100", |b| {
        b.iter(|| slic(&img, (h, w), &SlicParams::default()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
