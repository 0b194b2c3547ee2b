//! Our superpixels against scikit-image 0.26's label maps (`fixtures/superpixels/`, from
//! `shared/superpixels/`): adjusted Rand index ≥ 0.95 for Felzenszwalb (aim: identical) and
//! ≥ 0.90 for SLIC, on four photos and four parameter sets.

use std::path::PathBuf;

use segclip_data::superpixels::{adjusted_rand_index, FelzenszwalbParams, Method, SlicParams};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn method(case: &str) -> Method {
    match case {
        "felzenszwalb_segclip" => Method::Felzenszwalb(FelzenszwalbParams {
            scale: 224.0,
            sigma: 0.9,
            min_size: 224,
        }),
        "felzenszwalb_fine" => Method::Felzenszwalb(FelzenszwalbParams {
            scale: 100.0,
            sigma: 0.5,
            min_size: 50,
        }),
        "slic_100" => Method::Slic(SlicParams {
            n_segments: 100,
            compactness: 10.0,
            ..Default::default()
        }),
        "slic_200" => Method::Slic(SlicParams {
            n_segments: 200,
            compactness: 20.0,
            sigma: 1.0,
            ..Default::default()
        }),
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn superpixels_match_scikit_image() {
    let mut failures = Vec::new();
    for photo in ["astronaut", "chelsea", "coffee", "rocket"] {
        let img = image::open(root().join(format!("datasets/samples/{photo}.png")))
            .unwrap()
            .into_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        for case in [
            "felzenszwalb_segclip",
            "felzenszwalb_fine",
            "slic_100",
            "slic_200",
        ] {
            let reference =
                image::open(root().join(format!("fixtures/superpixels/{photo}.{case}.png")))
                    .unwrap()
                    .into_luma16();
            let theirs: Vec<u32> = reference.pixels().map(|p| p.0[0] as u32).collect();
            let ours = method(case).run(img.as_raw(), (h, w));
            let count = *theirs.iter().max().unwrap() as usize + 1;
            let ari = adjusted_rand_index(&ours.labels, &theirs);
            println!(
                "{photo:>10} {case:<22} ARI {ari:.4}  segments {} vs {count}",
                ours.count
            );
            let floor = if case.starts_with("felzenszwalb") {
                0.95
            } else {
                0.90
            };
            // Felzenszwalb is deterministic: the very same map, ids included.
            if case.starts_with("felzenszwalb") && ours.labels != theirs {
                failures.push(format!(
                    "{photo}/{case}: not identical to scikit-image's map"
                ));
            }
            if ari < floor {
                failures.push(format!("{photo}/{case}: ARI {ari:.4} < {floor}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
