//! Where does zero-shot segmentation fail: in the grouping or in the naming? On fresh synthetic
//! test scenes this measures, for a SegCLIP checkpoint:
//!
//! - grouping: for each object, the best IoU between its patches and one center's hard
//!   assignment (1.0 = some center holds exactly that object);
//! - naming: for each center whose patches are mostly one object, whether the nearest class
//!   prompt to its region embedding is that object's class (and its colour, its shape);
//! - image level: whether the image embedding's nearest class is one of the scene's objects;
//! - how alike the 8 region tokens are (mean pairwise cosine), as the group module emits them
//!   and after `layers2`: regions that all look the same all get the same class; and their
//!   mean L2 norm beside that of the patch tokens entering the group module;
//! - what the grouping allows: patch-level mIoU (patch label = majority of its pixels) when
//!   each center is named by the majority ground truth of its patches (a perfect namer), the
//!   same for cosine k-means (k = the number of centers) of the patch tokens and of the raw
//!   pixels (what a better grouping could reach), and the model's centers with background
//!   taken from the ground truth and objects named by their nearest prompt (naming alone,
//!   without the decoder's background threshold); both also at pixel level, on the bilinear
//!   assignment map without and with the decode's refinement (`segclip eval --refine 10`);
//! - what the region embeddings hold: a linear probe (softmax regression) on the object regions'
//!   embeddings, fitted on the first half of the scenes and scored on the second, for shape and
//!   for colour, and the same on the mean and max of each object's patch tokens after the
//!   first blocks. A
//!   shape probe far above the prompts' shape accuracy means the image side encodes shape and
//!   the text alignment does not use it.
//!
//! `WEIGHTS` may be `seeded` for the parity generator's random weights of
//! `datasets/synth/model.json` (a random-features baseline for the probes).
//!
//! ```text
//! cargo run --release --example region_probe -- WEIGHTS [COUNT] [SEED]
//! ```

use candle_core::{Device, IndexOp, Module, Tensor};
use segclip::data::synth::{self, Split};
use segclip::group::model::seeded_state_dict;
use segclip::group::zeroshot::classes::l2_normalize_rows;
use segclip::group::zeroshot::refine;
use segclip::group::zeroshot::resize::{bilinear_chw, normalize_clip};
use segclip::group::zeroshot::{ClassList, Templates, TextClassifier};
use segclip::group::SegClip;
use segclip::group::SegClipConfig;

/// Refinement iterations for the pixel-level figures (`segclip eval --refine`).
const REFINE: usize = 10;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let weights = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("usage: WEIGHTS [COUNT] [SEED]"))?;
    let count: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let seed: u64 = args.get(2).map_or(Ok(1000), |s| s.parse())?;
    let device = Device::Cpu;
    let model = if weights == "seeded" {
        let cfg = SegClipConfig::from_file(std::path::Path::new("datasets/synth/model.json"))?;
        SegClip::from_state_dict(seeded_state_dict(&cfg, 0, &device)?, &cfg, &device)?
    } else {
        SegClip::load(weights, &device)?
    };
    let cfg = model.config().clone();
    let size = cfg.vision.image_size;
    let patch = cfg.vision.patch_size;
    let names = synth::class_names()[1..].to_vec();
    let list = ClassList::new(names.iter().map(|n| vec![n.clone()]).collect())?;
    let mut clf = TextClassifier::new(cfg.text.context_length)?;
    let text = clf.classify(&model.text, &list, Templates::Simple)?; // (K, D)
    let nshapes = synth::SHAPES.len();
    {
        // How far apart the text side keeps the class prompts: mean cosine of prompt pairs that
        // share their colour, their shape, or neither.
        let t = text.matmul(&text.t()?)?.to_vec2::<f32>()?;
        let mut acc = [(0f64, 0usize); 3];
        for (a, row) in t.iter().enumerate() {
            for (b, &c) in row.iter().enumerate().filter(|&(b, _)| b != a) {
                let kind = if a / nshapes == b / nshapes {
                    0
                } else if a % nshapes == b % nshapes {
                    1
                } else {
                    2
                };
                acc[kind].0 += c as f64;
                acc[kind].1 += 1;
            }
        }
        let m = |k: usize| acc[k].0 / acc[k].1.max(1) as f64;
        println!(
            "class prompts, mean cosine: same colour {:.3}, same shape {:.3}, neither {:.3}",
            m(0),
            m(1),
            m(2)
        );
    }

    let (mut obj_n, mut best_iou_sum) = (0usize, 0f64);
    let (mut reg_n, mut reg_ok, mut reg_col, mut reg_shape, mut purity_sum) = (0, 0, 0, 0, 0f64);
    let (mut bg_regions, mut centers_used) = (0usize, 0usize);
    let (mut img_n, mut img_ok) = (0usize, 0usize);
    // (region embedding, colour, shape, scene index) of object-majority regions.
    let mut probe: Vec<(Vec<f32>, usize, usize, usize)> = Vec::new();
    // The same for each object's mean patch token (B = 1).
    let mut probe_patch: Vec<(Vec<f32>, usize, usize, usize)> = Vec::new();
    let reg_rows_of = |t: &Tensor| t.to_vec2::<f32>();
    // Σ over scenes of the mean pairwise cosine between the region tokens, as the group module
    // emits them and after `layers2` (where they are max-pooled into the image embedding).
    let mut region_cos = [0f64; 2];
    let mut region_norm = [0f64; 3];
    let mut qs_norm = (0f64, 0f64, 0usize);
    // (right, all) object regions by the number of objects in the scene (1, 2, 3).
    let mut by_count = [(0usize, 0usize); 3];
    let mut by_count_diag = [0usize; 3];
    // Object regions of multi-object scenes named as another object of the same scene.
    let (mut named_other, mut multi_regions) = (0usize, 0usize);
    // (right, named as another object of the scene, all) for those holding no other object.
    let mut clean = (0usize, 0usize, 0usize);
    let mut held = (0usize, 0usize, 0usize, 0usize);
    // Per held-out class: how often each class name was given to its regions.
    let mut held_names: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    let mut kmeans_iou_sum = 0f64;
    let mut kmeans_pix_sum = 0f64;
    // Patch-level (intersection, union) per class when each group is named by its majority
    // ground truth: the mIoU a perfect namer would reach on the model's centers, on k-means of
    // the patch tokens, on k-means of the pixels.
    let mut oracle = [Confusion::default(); 4];
    // Pixel level: the model's centers named by their majority, without and with refinement;
    // then naming alone, the same two.
    let mut pixel = [Confusion::default(); 4];
    // Each patch labelled with its majority ground truth: the best any patch-level grouping can
    // do at pixel level.
    let mut grid_ceiling = Confusion::default();
    for i in 0..count {
        let s = synth::scene(seed, i as u64, size, Split::Test);
        let px = normalize_clip(&s.image.data, (size, size));
        let px = Tensor::from_vec(px, (1, 3, size, size), &device)?;
        let mut trace = segclip::vit::Trace::default();
        let out = model.visual.forward(&px, None, Some(&mut trace))?;
        if let (Some(q), Some(h), Some(v)) = (
            trace.get("group.centers"),
            trace.get("group.hard_attn"),
            trace.get("group.values"),
        ) {
            // |q| and |S| (mean value of the assigned patches) over the centers holding patches.
            let (q, h, v) = (q.i(0)?, h.i(0)?, v.i(0)?);
            let counts = h.sum(1)?.to_vec1::<f32>()?;
            let sv = h.matmul(&v)?;
            let qn = q.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
            let sn = sv.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
            for k in (0..counts.len()).filter(|&k| counts[k] > 0.0) {
                qs_norm.0 += qn[k] as f64;
                qs_norm.1 += (sn[k] / counts[k]) as f64;
                qs_norm.2 += 1;
            }
        }
        if let Some(t) = trace.get("vision.after_layers0") {
            region_norm[2] += mean_row_norm(&t.i(0)?)?;
        }
        for (k, name) in ["group.region_tokens", "vision.after_layers2"]
            .iter()
            .enumerate()
        {
            if let Some(t) = trace.get(name) {
                region_cos[k] += mean_pairwise_cosine(&t.i(0)?)?;
                region_norm[k] += mean_row_norm(&t.i(0)?)?;
            }
        }
        let (gh, gw) = out.grid;
        let n = gh * gw;
        // Patch ground truth: majority class of each patch's pixels.
        let mut patch_gt = vec![0u8; n];
        for (p, g) in patch_gt.iter_mut().enumerate() {
            let (py, pxx) = (p / gw, p % gw);
            let mut hist = [0usize; 32];
            for y in py * patch..(py + 1) * patch {
                for x in pxx * patch..(pxx + 1) * patch {
                    hist[s.labels[y * size + x] as usize] += 1;
                }
            }
            *g = (0..32).max_by_key(|&c| hist[c]).unwrap() as u8;
        }
        // (N) center per patch.
        let hard: Vec<usize> = out
            .hard
            .i(0)?
            .argmax(0)?
            .to_vec1::<u32>()?
            .iter()
            .map(|&h| h as usize)
            .collect();
        let l = out.region_emb.dim(1)?;
        let reg = l2_normalize_rows(&out.region_emb.i(0)?)?;
        let sims = reg.matmul(&text.t()?)?.to_vec2::<f32>()?; // (L, K)
        let reg_rows = reg_rows_of(&reg)?;
        // Ablation: the same regions with `layers2`'s attention kept to each region itself (an
        // additive mask, -inf off the diagonal), to see how much of the naming's cross-talk
        // between a scene's objects that attention brings.
        let sims_diag = {
            let regions = trace
                .get("group.region_tokens")
                .ok_or_else(|| anyhow::anyhow!("no group.region_tokens in the trace"))?;
            let mask: Vec<f32> = (0..l * l)
                .map(|i| {
                    if i / l == i % l {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (l, l), &device)?;
            let mut x = regions.clone();
            for blk in &model.visual.layers2 {
                x = blk.forward(&x, Some(&mask))?;
            }
            let hidden = model
                .visual
                .head
                .forward(&Tensor::cat(&[&x.max_keepdim(1)?, &x], 1)?)?;
            let r = l2_normalize_rows(&hidden.i(0)?.narrow(0, 1, l)?)?;
            r.matmul(&text.t()?)?.to_vec2::<f32>()?
        };
        let img = l2_normalize_rows(&out.image_emb)?;
        let isim = img.matmul(&text.t()?)?.to_vec2::<f32>()?[0].clone();
        let present: Vec<u8> = {
            let mut v: Vec<u8> = patch_gt.iter().copied().filter(|&c| c > 0).collect();
            v.sort();
            v.dedup();
            v
        };
        if !present.is_empty() {
            img_n += 1;
            let top = argmax(&isim) as u8 + 1;
            img_ok += present.contains(&top) as usize;
        }
        let tokens = model
            .visual
            .encode_patches(&px, None)?
            .0
            .i(0)?
            .to_vec2::<f32>()?;
        let km = kmeans(&tokens, l);
        // The same on each patch's raw pixels (normalised RGB, 8x8x3 values).
        let pix: Vec<Vec<f32>> = {
            let raw = px.i(0)?.to_vec3::<f32>()?;
            (0..n)
                .map(|p| {
                    let (py, pxx) = (p / gw, p % gw);
                    let mut v = Vec::new();
                    for ch in raw.iter() {
                        for row in &ch[py * patch..(py + 1) * patch] {
                            v.extend_from_slice(&row[pxx * patch..(pxx + 1) * patch]);
                        }
                    }
                    v
                })
                .collect()
        };
        let kmp = kmeans(&pix, l);
        // Each group named by its patches' majority ground truth (background included), on the
        // model's centers, on k-means of the patch tokens and of the pixels; then the model's
        // centers with background from the ground truth and objects by the nearest prompt.
        for (o, groups) in [&hard, &km, &kmp].into_iter().enumerate() {
            let maj = group_majority(groups, &patch_gt, l);
            for p in 0..n {
                oracle[o].add(maj[groups[p]], patch_gt[p] as usize);
            }
        }
        let maj = group_majority(&hard, &patch_gt, l);
        for p in 0..n {
            let k = hard[p];
            let pred = if maj[k] == 0 { 0 } else { argmax(&sims[k]) + 1 };
            oracle[3].add(pred, patch_gt[p] as usize);
        }
        // The same two at pixel level, on the bilinear assignment map as the decode reads it,
        // without and with the decode's refinement along the image's edges: what the patch grid
        // costs, and what refinement wins back.
        {
            let soft = out.soft.i(0)?.flatten_all()?.to_vec1::<f32>()?;
            let image = px.i(0)?.flatten_all()?.to_vec1::<f32>()?;
            for (q, &gt) in s.labels.iter().enumerate() {
                grid_ceiling.add(
                    patch_gt[(q / size / patch) * gw + q % size / patch] as usize,
                    gt as usize,
                );
            }
            let mut amap = bilinear_chw(&soft, (l, gh, gw), (size, size));
            for (r, iters) in [0, REFINE].into_iter().enumerate() {
                refine::refine(&mut amap, l, &image, (3, size, size), iters);
                let groups: Vec<usize> = (0..size * size)
                    .map(|q| {
                        (0..l)
                            .max_by(|&a, &b| {
                                amap[a * size * size + q].total_cmp(&amap[b * size * size + q])
                            })
                            .unwrap()
                    })
                    .collect();
                let maj = group_majority(&groups, &s.labels, l);
                for (q, &g) in groups.iter().enumerate() {
                    let gt = s.labels[q] as usize;
                    pixel[r].add(maj[g], gt);
                    let named = if maj[g] == 0 { 0 } else { argmax(&sims[g]) + 1 };
                    pixel[2 + r].add(named, gt);
                }
            }
        }
        for &c in &present {
            let obj: Vec<bool> = patch_gt.iter().map(|&g| g == c).collect();
            kmeans_iou_sum += best_group_iou(&obj, &km, l);
            kmeans_pix_sum += best_group_iou(&obj, &kmp, l);
        }
        for &c in &present {
            obj_n += 1;
            let obj: Vec<bool> = patch_gt.iter().map(|&g| g == c).collect();
            // Mean and max of the object's patch tokens (a max can keep a corner's feature).
            let dim = tokens[0].len();
            let mut pooled = vec![0f32; dim];
            pooled.extend(std::iter::repeat_n(f32::MIN, dim));
            let members = obj.iter().filter(|&&o| o).count() as f32;
            for (t, _) in tokens.iter().zip(&obj).filter(|(_, &o)| o) {
                for (j, v) in t.iter().enumerate() {
                    pooled[j] += v / members;
                    pooled[dim + j] = pooled[dim + j].max(*v);
                }
            }
            let c0 = c as usize - 1;
            probe_patch.push((pooled, c0 / nshapes, c0 % nshapes, i));
            best_iou_sum += best_group_iou(&obj, &hard, l);
        }
        for k in 0..l {
            let members: Vec<u8> = (0..n)
                .filter(|&p| hard[p] == k)
                .map(|p| patch_gt[p])
                .collect();
            if members.is_empty() {
                continue;
            }
            centers_used += 1;
            let mut hist = [0usize; 32];
            for &m in &members {
                hist[m as usize] += 1;
            }
            let maj = (0..32).max_by_key(|&c| hist[c]).unwrap();
            if maj == 0 {
                bg_regions += 1;
                continue;
            }
            reg_n += 1;
            probe.push((
                reg_rows[k].clone(),
                (maj - 1) / nshapes,
                (maj - 1) % nshapes,
                i,
            ));
            purity_sum += hist[maj] as f64 / members.len() as f64;
            let pred = argmax(&sims[k]) + 1;
            reg_ok += (pred == maj) as usize;
            let objects = present.len().clamp(1, 3) - 1;
            by_count[objects].0 += (pred == maj) as usize;
            by_count[objects].1 += 1;
            by_count_diag[objects] += (argmax(&sims_diag[k]) + 1 == maj) as usize;
            if objects > 0 && pred != maj && present.contains(&(pred as u8)) {
                named_other += 1;
            }
            multi_regions += (objects > 0) as usize;
            // Regions holding no patch of another object: cross-talk cannot come from the
            // grouping there.
            if objects > 0 && members.iter().all(|&m| m == 0 || m as usize == maj) {
                clean.0 += (pred == maj) as usize;
                clean.1 += (pred != maj && present.contains(&(pred as u8))) as usize;
                clean.2 += 1;
            }
            reg_col += ((pred - 1) / nshapes == (maj - 1) / nshapes) as usize;
            reg_shape += ((pred - 1) % nshapes == (maj - 1) % nshapes) as usize;
            if segclip::data::synth::is_held_out(maj) {
                held.0 += (pred == maj) as usize;
                held.1 += ((pred - 1) / nshapes == (maj - 1) / nshapes) as usize;
                held.2 += ((pred - 1) % nshapes == (maj - 1) % nshapes) as usize;
                held.3 += 1;
                held_names
                    .entry(maj)
                    .or_insert_with(|| vec![0; names.len() + 1])[pred] += 1;
            }
        }
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!("scenes {count}, objects {obj_n}");
    println!(
        "grouping: mean best center IoU per object {:.3}",
        best_iou_sum / obj_n.max(1) as f64
    );
    println!(
        "k-means (k = centers) on the patch tokens after layers0: mean best cluster IoU per object {:.3}",
        kmeans_iou_sum / obj_n.max(1) as f64
    );
    println!(
        "k-means on raw patch pixels: mean best cluster IoU per object {:.3}",
        kmeans_pix_sum / obj_n.max(1) as f64
    );
    for (what, o) in [
        "the model's centers, each named by its majority ground truth",
        "k-means of the patch tokens, each cluster named by its majority ground truth",
        "k-means of the pixels, each cluster named by its majority ground truth",
        "the model's centers, background from the ground truth, objects by the nearest prompt",
    ]
    .iter()
    .zip(&oracle)
    {
        println!("patch-level mIoU, {what}: {:.1}", o.miou());
    }
    println!(
        "pixel-level mIoU, every patch labelled with its majority ground truth: {:.1}",
        grid_ceiling.miou()
    );
    for (what, o) in [
        "the model's centers named by their majority ground truth, bilinear map",
        format!("the same after {REFINE} refinement iterations").as_str(),
        "background from the ground truth, objects by the nearest prompt, bilinear map",
        format!("the same after {REFINE} refinement iterations").as_str(),
    ]
    .iter()
    .zip(&pixel)
    {
        println!("pixel-level mIoU, {what}: {:.1}", o.miou());
    }
    println!(
        "centers used per scene {:.2}; background-majority centers {:.2} per scene",
        centers_used as f64 / count as f64,
        bg_regions as f64 / count as f64
    );
    println!(
        "object regions {reg_n}: purity {:.3}; class {:.1}%  colour {:.1}%  shape {:.1}% (chance 5/20/25)",
        purity_sum / reg_n.max(1) as f64,
        pct(reg_ok, reg_n),
        pct(reg_col, reg_n),
        pct(reg_shape, reg_n)
    );
    println!(
        "object regions of held-out combinations {}: class {:.1}%  colour {:.1}%  shape {:.1}%",
        held.3,
        pct(held.0, held.3),
        pct(held.1, held.3),
        pct(held.2, held.3)
    );
    for (c, given) in &held_names {
        let total: usize = given.iter().sum();
        let mut top: Vec<usize> = (1..given.len()).filter(|&k| given[k] > 0).collect();
        top.sort_by_key(|&k| std::cmp::Reverse(given[k]));
        let top: Vec<String> = top
            .iter()
            .take(3)
            .map(|&k| format!("{} {:.0}%", names[k - 1], pct(given[k], total)))
            .collect();
        println!("  {} ({total}): named {}", names[c - 1], top.join(", "));
    }
    println!(
        "object regions named right in scenes of 1 / 2 / 3 objects: {:.1}% / {:.1}% / {:.1}% ({} / {} / {} regions)",
        pct(by_count[0].0, by_count[0].1),
        pct(by_count[1].0, by_count[1].1),
        pct(by_count[2].0, by_count[2].1),
        by_count[0].1,
        by_count[1].1,
        by_count[2].1
    );
    println!(
        "  the same with layers2 attending each region to itself only: {:.1}% / {:.1}% / {:.1}%",
        pct(by_count_diag[0], by_count[0].1),
        pct(by_count_diag[1], by_count[1].1),
        pct(by_count_diag[2], by_count[2].1),
    );
    println!(
        "object regions of multi-object scenes named as another object of the scene: {:.1}%",
        pct(named_other, multi_regions)
    );
    println!(
        "  of those holding no patch of another object ({}): named right {:.1}%, as another object of the scene {:.1}%",
        clean.2,
        pct(clean.0, clean.2),
        pct(clean.1, clean.2)
    );
    println!("image top-1 class present: {:.1}%", pct(img_ok, img_n));
    println!(
        "region tokens, mean pairwise cosine: group output {:.3}, after layers2 {:.3} (1 = all alike)",
        region_cos[0] / count as f64,
        region_cos[1] / count as f64
    );
    println!(
        "mean L2 norm: patch tokens after layers0 {:.3}, region tokens from the group module {:.3}, after layers2 {:.3}",
        region_norm[2] / count as f64,
        region_norm[0] / count as f64,
        region_norm[1] / count as f64
    );
    println!(
        "group module input to proj_o, mean L2 norm over centers holding patches: center query q {:.3}, mean value S {:.3}",
        qs_norm.0 / qs_norm.2.max(1) as f64,
        qs_norm.1 / qs_norm.2.max(1) as f64
    );
    type Row = (Vec<f32>, usize, usize, usize);
    let probe_fit = |rows: &[Row], label: fn(&Row) -> usize, classes: usize| {
        let (train, test): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.3 < count / 2);
        let xs: Vec<&[f32]> = train.iter().map(|r| r.0.as_slice()).collect();
        let ys: Vec<usize> = train.iter().map(|r| label(r)).collect();
        let w = softmax_regression(&xs, &ys, classes);
        let ok = test
            .iter()
            .filter(|r| argmax(&logits(&w, &r.0)) == label(r))
            .count();
        (pct(ok, test.len()), train.len(), test.len())
    };
    for (what, rows) in [
        ("region embeddings", &probe),
        ("object patch tokens (mean, max)", &probe_patch),
    ] {
        let (shape, ntrain, ntest) = probe_fit(rows, |r| r.2, nshapes);
        let (colour, _, _) = probe_fit(rows, |r| r.1, synth::COLOURS.len());
        println!(
            "linear probe on {what} ({ntrain} train / {ntest} test): shape {shape:.1}%  colour {colour:.1}%"
        );
    }
    Ok(())
}

/// Class scores of `x` under weights `w` ((classes, dim + 1), bias last).
fn logits(w: &[Vec<f32>], x: &[f32]) -> Vec<f32> {
    w.iter()
        .map(|row| row[x.len()] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>())
        .collect()
}

/// Multinomial logistic regression by full-batch gradient descent (L2 1e-4), 2000 steps.
fn softmax_regression(xs: &[&[f32]], ys: &[usize], classes: usize) -> Vec<Vec<f32>> {
    let dim = xs.first().map_or(0, |x| x.len());
    let mut w = vec![vec![0f32; dim + 1]; classes];
    let n = xs.len().max(1) as f32;
    for _ in 0..2000 {
        let mut grad = vec![vec![0f32; dim + 1]; classes];
        for (x, &y) in xs.iter().zip(ys) {
            let z = logits(&w, x);
            let m = z.iter().fold(f32::MIN, |a, &b| a.max(b));
            let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            for (c, g) in grad.iter_mut().enumerate() {
                let d = e[c] / sum - (c == y) as u8 as f32;
                for (gj, xj) in g.iter_mut().zip(x.iter()) {
                    *gj += d * xj;
                }
                g[dim] += d;
            }
        }
        for (row, g) in w.iter_mut().zip(&grad) {
            for (wj, gj) in row.iter_mut().zip(g) {
                *wj -= 2.0 * (gj / n + 1e-4 * *wj);
            }
        }
    }
    w
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

/// Mean cosine similarity over distinct pairs of the rows of `x` (L, C).
fn mean_pairwise_cosine(x: &Tensor) -> anyhow::Result<f64> {
    let n = l2_normalize_rows(x)?;
    let l = n.dim(0)?;
    let total = n.matmul(&n.t()?)?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((total - l as f64) / (l * (l - 1)).max(1) as f64)
}

/// Cosine k-means of the rows of `x` into `k` clusters (farthest-point start, 20 rounds).
fn kmeans(x: &[Vec<f32>], k: usize) -> Vec<usize> {
    let norm = |v: &[f32]| {
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        v.iter().map(|a| a / n).collect::<Vec<f32>>()
    };
    let xs: Vec<Vec<f32>> = x.iter().map(|v| norm(v)).collect();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f32>();
    let mut cent = vec![xs[0].clone()];
    while cent.len() < k.min(xs.len()) {
        let far = (0..xs.len())
            .min_by(|&i, &j| {
                let bi = cent.iter().map(|c| dot(c, &xs[i])).fold(f32::MIN, f32::max);
                let bj = cent.iter().map(|c| dot(c, &xs[j])).fold(f32::MIN, f32::max);
                bi.total_cmp(&bj)
            })
            .unwrap();
        cent.push(xs[far].clone());
    }
    let mut assign = vec![0usize; xs.len()];
    for _ in 0..20 {
        for (i, v) in xs.iter().enumerate() {
            assign[i] = (0..cent.len())
                .max_by(|&a, &b| dot(&cent[a], v).total_cmp(&dot(&cent[b], v)))
                .unwrap();
        }
        for (c, cv) in cent.iter_mut().enumerate() {
            let mut sum = vec![0f32; cv.len()];
            for (v, _) in xs.iter().zip(&assign).filter(|(_, &a)| a == c) {
                for (s, a) in sum.iter_mut().zip(v) {
                    *s += a;
                }
            }
            if sum.iter().any(|&a| a != 0.0) {
                *cv = norm(&sum);
            }
        }
    }
    assign
}

/// Patch-level intersections and unions per class (0 = background).
#[derive(Clone, Copy, Default)]
struct Confusion {
    inter: [usize; 32],
    union: [usize; 32],
}

impl Confusion {
    fn add(&mut self, pred: usize, gt: usize) {
        self.union[gt] += 1;
        if pred == gt {
            self.inter[gt] += 1;
        } else {
            self.union[pred] += 1;
        }
    }

    /// Mean IoU in percent over the classes with a union, as `segclip eval` averages.
    fn miou(&self) -> f64 {
        let ious: Vec<f64> = (0..32)
            .filter(|&c| self.union[c] > 0)
            .map(|c| self.inter[c] as f64 / self.union[c] as f64)
            .collect();
        100.0 * ious.iter().sum::<f64>() / ious.len().max(1) as f64
    }
}

/// The majority ground-truth class of each of `l` groups' patches (0 for an empty group).
fn group_majority(groups: &[usize], gt: &[u8], l: usize) -> Vec<usize> {
    let mut hist = vec![[0usize; 32]; l];
    for (&g, &c) in groups.iter().zip(gt) {
        hist[g][c as usize] += 1;
    }
    hist.iter()
        .map(|h| (0..32).max_by_key(|&c| h[c]).unwrap_or(0))
        .collect()
}

/// The best IoU between the patches of one object and those of one of `l` groups.
fn best_group_iou(obj: &[bool], groups: &[usize], l: usize) -> f64 {
    (0..l)
        .map(|k| {
            let inter = obj
                .iter()
                .zip(groups)
                .filter(|(&o, &g)| o && g == k)
                .count();
            let uni = obj
                .iter()
                .zip(groups)
                .filter(|(&o, &g)| o || g == k)
                .count();
            inter as f64 / uni.max(1) as f64
        })
        .fold(0f64, f64::max)
}

/// Mean L2 norm of the rows of `x` (L, C).
fn mean_row_norm(x: &Tensor) -> anyhow::Result<f64> {
    Ok(x.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64)
}
