//! What becomes of each object of fresh synthetic test scenes under the zero-shot decode, and
//! why the missed ones are missed: for every object, the center holding most of its pixels
//! (after the refinement) and the decode's verdict on that center.
//!
//! - right / misnamed: most of the object's pixels get its class / another class;
//! - missed, its center another object's or background-majority: a grouping failure;
//! - missed, own center, class not in the image-level top-k;
//! - missed, own center, best cosine under the threshold;
//! - missed, own center, not its class's best match (`--claim-margin`, `docs/deviations.md`
//!   item 18).
//!
//! It also prints the cosine to its own class of the objects named right and of those missed
//! under the threshold, and the best cosine of the background-majority centers.
//!
//! ```text
//! cargo run --release --example missed_objects -- WEIGHTS [COUNT] [SEED] [BG_THRESH] [CLAIM_MARGIN] [reencode]
//! ```
//! (defaults 600 scenes of seed 2000, the validation scenes; cosine 0.44; no claim; no second
//! views; always with 10 refinement iterations; `-` skips the claim margin).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use segclip::data::synth::{self, Split};
use segclip::group::zeroshot::resize::normalize_clip;
use segclip::group::zeroshot::segmenter::{self, run_crops};
use segclip::group::zeroshot::{BgScore, ClassList, DecodeOptions, Templates, TextClassifier};
use segclip::group::SegClip;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let weights = args.first().ok_or_else(|| {
        anyhow::anyhow!("usage: WEIGHTS [COUNT] [SEED] [BG_THRESH] [CLAIM_MARGIN] [reencode]")
    })?;
    let count: usize = args.get(1).map_or(Ok(600), |s| s.parse())?;
    let seed: u64 = args.get(2).map_or(Ok(2000), |s| s.parse())?;
    let thr: f32 = args.get(3).map_or(Ok(0.44), |s| s.parse())?;
    let claim: Option<f32> = args
        .get(4)
        .filter(|s| *s != "-")
        .map(|s| s.parse())
        .transpose()?;
    let reencode = args.get(5).is_some_and(|s| s == "reencode");
    let model = SegClip::load(weights, &Device::Cpu)?;
    let size = model.config().vision.image_size;
    let names = synth::class_names()[1..].to_vec();
    let k = names.len();
    let list = ClassList::new(names.iter().map(|n| vec![n.clone()]).collect())?;
    let mut clf = TextClassifier::new(model.config().text.context_length)?;
    let text: Vec<f32> = clf
        .classify(&model.text, &list, Templates::Simple)?
        .flatten_all()?
        .to_vec1()?;
    let scale = model.logit_scale_exp()?;
    let opts = DecodeOptions {
        topk: 5,
        bg_thresh: Some(thr),
        bg_score: BgScore::Cosine,
        refine: 10,
        claim,
        reencode,
    };
    // verdict → (objects, pixels)
    let mut verdicts = BTreeMap::<&str, (usize, usize)>::new();
    let (mut cos_right, mut cos_under, mut cos_bg) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..count {
        let s = synth::scene(seed, i as u64, size, Split::Test);
        let px = normalize_clip(&s.image.data, (size, size));
        let t = Tensor::from_vec(px.clone(), (1, 3, size, size), &Device::Cpu)?;
        let mut dec = run_crops(&model, &t, &text, &opts, None)?.remove(0);
        dec.refine(&px, opts.refine);
        if reencode {
            segmenter::reencode(&model, &mut dec, &px, &text, 16)?;
        }
        let l = dec.centers;
        // Per center: its pixels per true label.
        let mut hist = vec![vec![0usize; k + 1]; l];
        for (p, &lab) in s.labels.iter().enumerate() {
            hist[dec.group[p] as usize][lab as usize] += 1;
        }
        let cos = |c: usize, j: usize| dec.g[c * k + j] / scale;
        // A center's class: its best kept one (the decode's).
        let class = |c: usize| {
            dec.topk
                .iter()
                .copied()
                .reduce(|a, b| if cos(c, b) > cos(c, a) { b } else { a })
                .unwrap_or(0)
        };
        for (c, h) in hist.iter().enumerate() {
            let total: usize = h.iter().sum();
            if total > 0 && h[0] * 2 > total {
                cos_bg.push(cos(c, class(c)));
            }
        }
        let mut present: Vec<usize> = s.labels.iter().map(|&v| v as usize).collect();
        present.sort_unstable();
        present.dedup();
        for &lab in present.iter().filter(|&&v| v != 0) {
            let pixels: usize = hist.iter().map(|h| h[lab]).sum();
            let (mut as_bg, mut right) = (0, 0);
            for (p, &v) in s.labels.iter().enumerate() {
                if v as usize == lab {
                    let c = dec.group[p] as usize;
                    if dec.center_is_bg[c] {
                        as_bg += 1;
                    } else if class(c) + 1 == lab {
                        right += 1;
                    }
                }
            }
            let hc = (0..l).max_by_key(|&c| hist[c][lab]).unwrap_or(0);
            let total: usize = hist[hc].iter().sum();
            let verdict = if as_bg * 2 > pixels {
                if hist[hc][0] * 2 > total {
                    "missed: its center is background-majority"
                } else if (1..=k).any(|j| j != lab && hist[hc][j] > hist[hc][lab]) {
                    "missed: its center is another object's"
                } else if !dec.topk.contains(&(lab - 1)) {
                    "missed: own center, class not in the top-k"
                } else if cos(hc, class(hc)) < thr {
                    cos_under.push(cos(hc, lab - 1));
                    "missed: own center, best cosine under the threshold"
                } else {
                    "missed: own center, not its class's best match"
                }
            } else if right * 2 > pixels {
                cos_right.push(cos(hc, lab - 1));
                "right"
            } else {
                "misnamed"
            };
            let e = verdicts.entry(verdict).or_default();
            e.0 += 1;
            e.1 += pixels;
        }
    }
    let objects: usize = verdicts.values().map(|v| v.0).sum();
    println!(
        "{objects} objects in {count} scenes (seed {seed}), cosine {thr}, claim margin {claim:?}, \
         second views {reencode}"
    );
    for (v, (n, px)) in &verdicts {
        println!(
            "{n:>6} objects {:5.1} %  {px:>8} pixels  {v}",
            100.0 * *n as f64 / objects.max(1) as f64
        );
    }
    let q = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        if v.is_empty() {
            return "none".to_string();
        }
        let at = |f: usize| v[(v.len() * f / 10).min(v.len() - 1)];
        format!(
            "n {} p10 {:.3} p50 {:.3} p90 {:.3}",
            v.len(),
            at(1),
            at(5),
            at(9)
        )
    };
    println!(
        "own-class cosine of objects named right: {}",
        q(&mut cos_right)
    );
    println!(
        "own-class cosine of objects missed under the threshold: {}",
        q(&mut cos_under)
    );
    println!(
        "best cosine of background-majority centers: {}",
        q(&mut cos_bg)
    );
    Ok(())
}
