//! Criterion benches of the superpixel algorithms on a 500×375 photo (the size of a PASCAL VOC
//! image), one thread each.
//!
//! `cargo bench -p segclip-data --bench superpixels`
//!
//! The allocator is the `segclip` binary's (mimalloc, set never to purge freed pages, as
//! `src/bin/segclip.rs` does), which keeps freed pages for the next image; with the system
//! allocator, or mimalloc's default purge delay, each call also pays for megabytes of fresh
//! page faults.

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

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn bench(c: &mut Criterion) {
    // SAFETY: sets a documented mimalloc option (-1 = never purge); options may be set at any
    // time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
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
