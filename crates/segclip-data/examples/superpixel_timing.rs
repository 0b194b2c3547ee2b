//! Best-of-N single-call times of both superpixel algorithms on the bench photo, and a hash of
//! the label maps of the four parity photos (to check that a faster version changes nothing).
//! Alternate two builds of it to compare versions in the same minutes.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p segclip-data --example superpixel_timing`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use segclip_data::superpixels::{felzenszwalb, slic, FelzenszwalbParams, SlicParams};
use std::time::Instant;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // SAFETY: sets a documented mimalloc option (-1 = never purge), as the `segclip` binary does.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/samples/");
    let slic200 = SlicParams {
        n_segments: 200,
        compactness: 20.0,
        sigma: 1.0,
        ..Default::default()
    };
    let fine = FelzenszwalbParams {
        scale: 100.0,
        sigma: 0.5,
        min_size: 50,
    };
    let (mut fh_hash, mut slic_hash) = (0xcbf2_9ce4_8422_2325u64, 0xcbf2_9ce4_8422_2325u64);
    let fnv = |h: &mut u64, labels: &[u32]| {
        for &l in labels {
            *h = (*h ^ l as u64).wrapping_mul(0x100_0000_01b3);
        }
    };
    for photo in ["astronaut", "chelsea", "coffee", "rocket"] {
        let img = image::open(format!("{root}{photo}.png"))
            .expect("sample photo")
            .into_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        for p in [FelzenszwalbParams::default(), fine] {
            fnv(
                &mut fh_hash,
                &felzenszwalb(img.as_raw(), (h, w, 3), &p).labels,
            );
        }
        for p in [SlicParams::default(), slic200] {
            fnv(&mut slic_hash, &slic(img.as_raw(), (h, w), &p).labels);
        }
    }
    let img = image::open(format!("{root}coffee.png"))
        .expect("sample photo")
        .resize_exact(500, 375, image::imageops::FilterType::Triangle)
        .into_rgb8();
    let best = |f: &dyn Fn()| {
        (0..15)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let fh = best(&|| {
        std::hint::black_box(felzenszwalb(
            img.as_raw(),
            (375, 500, 3),
            &FelzenszwalbParams::default(),
        ));
    });
    let sl = best(&|| {
        std::hint::black_box(slic(img.as_raw(), (375, 500), &SlicParams::default()));
    });
    println!("felzenszwalb best {fh:.2} ms (maps {fh_hash:016x}); slic best {sl:.2} ms (maps {slic_hash:016x})");
}
