//! `segclip parity DIR`: run a parity folder (`shared/parity/README.md`) through this code and
//! compare every stored tensor.
//!
//! Rules (from the fixtures' README): a float tensor passes when
//! `max|ours − ref| ≤ 1e-4 · max|ref|`; integer and one-hot tensors must match exactly, except
//! `decode.group` at near-tie pixels (top-1 minus top-2 of the reference `decode.amap` below
//! 1e-4), where the logits are compared on the other pixels only. float16 logits pass when
//! `|ours − ref| ≤ 2⁻¹¹·|ref|`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use segclip_group::model::seeded_state_dict;
use segclip_group::zeroshot::decode::{decode_crop, DecodeOptions};
use segclip_group::zeroshot::resize::normalize_clip;
use segclip_group::zeroshot::segmenter::record_decode;
use segclip_group::zeroshot::{ClassList, Templates, TextClassifier};
use segclip_group::{SegClip, SegClipConfig};
use segclip_vit::Trace;

/// Relative tolerance of float tensors.
pub const REL_TOL: f64 = 1e-4;

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub max_abs: f64,
    pub rel: f64,
    pub ok: bool,
    pub note: String,
}

/// The outcome of a parity run.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Files present in the folder that this code does not check yet, with the reason.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.ok)
    }

    pub fn print(&self) {
        crate::out!(
            "{:<34} {:>12} {:>12}  result",
            "tensor",
            "max abs err",
            "rel err"
        );
        for r in &self.rows {
            crate::out!(
                "{:<60} {:>12.3e} {:>12.3e}  {}{}",
                r.name,
                r.max_abs,
                r.rel,
                if r.ok { "ok" } else { "FAIL" },
                if r.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", r.note)
                }
            );
        }
        for s in &self.skipped {
            crate::out!("not checked: {s}");
        }
        let failed = self.rows.iter().filter(|r| !r.ok).count();
        crate::out!("{} passed, {} failed", self.rows.len() - failed, failed);
    }

    fn float(&mut self, name: &str, ours: &Tensor, reference: &Tensor) -> Result<()> {
        let o = ours.to_dtype(DType::F64)?.flatten_all()?;
        let r = reference.to_dtype(DType::F64)?.flatten_all()?;
        if o.dims() != r.dims() {
            self.rows.push(Row {
                name: name.into(),
                max_abs: f64::NAN,
                rel: f64::NAN,
                ok: false,
                note: format!("shape {:?} vs {:?}", ours.dims(), reference.dims()),
            });
            return Ok(());
        }
        let max_abs = (&o - &r)?.abs()?.max(0)?.to_scalar::<f64>()?;
        let scale = r.abs()?.max(0)?.to_scalar::<f64>()?;
        let rel = if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        };
        self.rows.push(Row {
            name: name.into(),
            max_abs,
            rel,
            ok: rel <= REL_TOL,
            note: String::new(),
        });
        Ok(())
    }

    fn exact(&mut self, name: &str, ours: &[i64], reference: &[i64], allowed: Option<&[bool]>) {
        let mut bad = 0;
        let mut excused = 0;
        for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
            if a != b {
                if allowed.map(|m| m[i]).unwrap_or(false) {
                    excused += 1;
                } else {
                    bad += 1;
                }
            }
        }
        let ok = bad == 0 && ours.len() == reference.len();
        let note = match (bad, excused) {
            (0, 0) => "exact".into(),
            (0, e) => format!("{e} near-tie pixel(s) differ"),
            (b, _) => format!("{b} of {} differ", reference.len()),
        };
        self.rows.push(Row {
            name: name.into(),
            max_abs: bad as f64,
            rel: 0.0,
            ok,
            note,
        });
    }
}

fn load(dir: &Path, file: &str) -> Result<Option<HashMap<String, Tensor>>> {
    let p = dir.join(file);
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(
        candle_core::safetensors::load(&p, &Device::Cpu)
            .with_context(|| format!("reading {}", p.display()))?,
    ))
}

fn ints(t: &Tensor) -> Result<Vec<i64>> {
    Ok(t.to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|v| v as i64)
        .collect())
}

/// Run every check of the parity folder `dir` (weights rebuilt from its `config.json` seed).
pub fn run(dir: &Path) -> Result<Report> {
    let cfg_text = std::fs::read_to_string(dir.join("config.json"))
        .with_context(|| format!("{} is not a parity folder: no config.json", dir.display()))?;
    let cfg = SegClipConfig::from_parity_json(&cfg_text)?;
    let meta: serde_json::Value = serde_json::from_str(&cfg_text)?;
    let seed = meta["weights"]["seed"].as_u64().unwrap_or(0);
    let classes: Vec<String> = meta["class_names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let device = Device::Cpu;
    let sd = seeded_state_dict(&cfg, seed, &device)?;
    let model = SegClip::from_state_dict(sd, &cfg, &device)?;
    let mut report = Report::default();

    // Visual forward.
    let mut visual_trace = Trace::default();
    if let Some(inf) = load(dir, "inference.safetensors")? {
        let u8s = &inf["input.pixels_u8"];
        let (b, h, w, _) = u8s.dims4()?;
        let raw: Vec<u8> = u8s.flatten_all()?.to_vec1()?;
        let mut planar = Vec::new();
        for i in 0..b {
            planar.extend(normalize_clip(
                &raw[i * h * w * 3..(i + 1) * h * w * 3],
                (h, w),
            ));
        }
        report.float(
            "input.pixels",
            &Tensor::from_vec(planar, (b, 3, h, w), &device)?,
            &inf["input.pixels"],
        )?;
        model
            .visual
            .forward(&inf["input.pixels"], None, Some(&mut visual_trace))?;
        for (name, t) in &visual_trace.tensors {
            let Some(r) = inf.get(name) else { continue };
            if name == "group.hard_attn" {
                report.exact(name, &ints(t)?, &ints(r)?, None);
            } else {
                report.float(name, t, r)?;
            }
        }
        // A batch gives the same numbers as its crops one by one.
        if b > 1 {
            let mut one = Trace::default();
            model
                .visual
                .forward(&inf["input.pixels"].narrow(0, 1, 1)?, None, Some(&mut one))?;
            let ours = one.get("vision.hidden").context("trace")?;
            report.float(
                "batch-vs-single: vision.hidden[1]",
                ours,
                &inf["vision.hidden"].narrow(0, 1, 1)?,
            )?;
        }
    } else {
        report
            .skipped
            .push("inference.safetensors is absent".into());
    }

    // Text tower.
    let mut clf = TextClassifier::new(cfg.text.context_length)?;
    if let Some(txt) = load(dir, "text.safetensors")? {
        let mut trace = Trace::default();
        let emb = model.text.forward(&txt["text.ids"], Some(&mut trace))?;
        report.float("text.emb", &emb, &txt["text.emb"])?;
        let after = trace.get("text.after_block0").context("trace")?;
        let n = txt["text.after_block0"].dim(1)?;
        report.float(
            "text.after_block0",
            &after.narrow(1, 0, n)?,
            &txt["text.after_block0"],
        )?;
        report.float(
            "text.emb32",
            &model.text.forward(&txt["text.ids32"], None)?,
            &txt["text.emb32"],
        )?;
        // Our tokenizer and the trimmed (up-to-EOT) path.
        let prompts: Vec<String> = classes
            .iter()
            .map(|c| Templates::fill(Templates::SIMPLE_TEMPLATE, c))
            .collect();
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| clf.tokenizer().encode(p).map(|e| e.ids))
            .collect::<Result<_, _>>()?;
        let padded: Vec<i64> = ids
            .iter()
            .flat_map(|e| {
                let mut v: Vec<i64> = e.iter().map(|&x| x as i64).collect();
                v.resize(77, 0);
                v
            })
            .collect();
        report.exact(
            "tokenizer: text.ids",
            &padded,
            &ints(&txt["text.ids"])?,
            None,
        );
        report.float(
            "text.emb (up to EOT only)",
            &model.text.encode(&ids)?,
            &txt["text.emb"],
        )?;
    } else {
        report.skipped.push("text.safetensors is absent".into());
    }

    // Per-crop decode of crop 0.
    if let (Some(dec), Some(_)) = (
        load(dir, "decode.safetensors")?,
        visual_trace.get("vision.image_emb"),
    ) {
        let list = ClassList::new(classes.iter().map(|c| vec![c.clone()]).collect())?;
        let text = clf.classify(&model.text, &list, Templates::Simple)?;
        report.float(
            "decode.text_emb_normed",
            &text,
            &dec["decode.text_emb_normed"],
        )?;
        let soft = visual_trace.get("group.soft_attn").context("trace")?.i(0)?;
        let reg = visual_trace
            .get("vision.region_emb")
            .context("trace")?
            .i(0)?;
        let img = visual_trace
            .get("vision.image_emb")
            .context("trace")?
            .i(0)?;
        let g = cfg.vision.grid();
        let (_, h, w) = dec["decode.amap"].dims3()?;
        let v = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let thr_cfg = dec["decode.bg_thresh_cfg"]
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        let opts = DecodeOptions {
            topk: 5,
            bg_thresh: Some(thr_cfg),
            ..Default::default()
        };
        let scale = model.logit_scale_exp()?;
        let crop = decode_crop(
            &v(&soft)?,
            (g, g),
            &v(&reg)?,
            &v(&img)?,
            &v(&text)?,
            scale,
            (h, w),
            &opts,
        );
        let mut t = Trace::default();
        record_decode(&mut t, &crop, &device)?;
        // Near-tie pixels of the reference assignment map.
        let amap_ref = v(&dec["decode.amap"])?;
        let l = amap_ref.len() / (h * w);
        let near_tie: Vec<bool> = (0..h * w)
            .map(|p| {
                let mut vals: Vec<f32> = (0..l).map(|c| amap_ref[c * h * w + p]).collect();
                vals.sort_by(|a, b| b.total_cmp(a));
                vals[0] - vals[1] < 1e-4
            })
            .collect();
        for name in [
            "decode.amap",
            "decode.G",
            "decode.image_probs",
            "decode.F",
            "decode.bg_thresh_used",
        ] {
            report.float(name, t.get(name).context("trace")?, &dec[name])?;
        }
        report.exact(
            "decode.topk_indices",
            &ints(t.get("decode.topk_indices").context("trace")?)?,
            &ints(&dec["decode.topk_indices"])?,
            None,
        );
        let group = ints(t.get("decode.group").context("trace")?)?;
        let group_ref = ints(&dec["decode.group"])?;
        report.exact("decode.group", &group, &group_ref, Some(&near_tie));
        let same: Vec<bool> = group.iter().zip(&group_ref).map(|(a, b)| a == b).collect();
        let logits = v(t.get("decode.logits").context("trace")?)?;
        let logits_ref = v(&dec["decode.logits"])?;
        let half = dec["decode.logits"].dtype() == DType::F16;
        let (mut max_abs, mut worst_rel, mut scale_ref) = (0f64, 0f64, 0f64);
        for (i, (a, b)) in logits.iter().zip(&logits_ref).enumerate() {
            if !same[i % (h * w)] {
                continue;
            }
            let d = (*a as f64 - *b as f64).abs();
            max_abs = max_abs.max(d);
            scale_ref = scale_ref.max((*b as f64).abs());
            if half {
                worst_rel =
                    worst_rel.max(d / (2f64.powi(-11) * (*b as f64).abs()).max(f64::MIN_POSITIVE));
            }
        }
        let (rel, ok) = if half {
            (worst_rel, worst_rel <= 1.0)
        } else {
            (
                max_abs / scale_ref.max(1e-30),
                max_abs <= REL_TOL * scale_ref,
            )
        };
        report.rows.push(Row {
            name: "decode.logits".into(),
            max_abs,
            rel,
            ok,
            note: if half {
                "float16 rule: rel = err / (2^-11 |ref|)".into()
            } else {
                String::new()
            },
        });
        let seg: Vec<i64> = (0..h * w)
            .map(|p| {
                let mut best = (0usize, f32::NEG_INFINITY);
                for ch in 0..=crop.classes {
                    let x = logits[ch * h * w + p];
                    if x > best.1 {
                        best = (ch, x);
                    }
                }
                best.0 as i64
            })
            .collect();
        let excused: Vec<bool> = same.iter().map(|s| !s).collect();
        report.exact(
            "decode.seg",
            &seg,
            &ints(&dec["decode.seg"])?,
            Some(&excused),
        );
        if let (Some(alt_bg), Some(alt_thr)) = (
            dec.get("decode.alt.bg"),
            dec.get("decode.alt.bg_thresh_cfg"),
        ) {
            let thr = alt_thr.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            let alt = decode_crop(
                &v(&soft)?,
                (g, g),
                &v(&reg)?,
                &v(&img)?,
                &v(&text)?,
                scale,
                (h, w),
                &DecodeOptions {
                    topk: 5,
                    bg_thresh: Some(thr),
                    ..Default::default()
                },
            );
            let bg: Vec<i64> = (0..h * w).map(|p| alt.logit(0, p) as i64).collect();
            report.exact("decode.alt.bg", &bg, &ints(alt_bg)?, Some(&excused));
        }
    } else {
        report
            .skipped
            .push("decode.safetensors is absent (or no inference to decode)".into());
    }
    if let (Some(train), Some(inf)) = (
        load(dir, "train.safetensors")?,
        load(dir, "inference.safetensors")?,
    ) {
        training_checks(
            &mut report,
            &cfg,
            seed,
            &train,
            &inf["input.pixels"],
            load(dir, "optim.safetensors")?,
        )?;
    }
    if report.rows.is_empty() {
        bail!(
            "{} holds no parity vectors (inference/text/decode .safetensors)",
            dir.display()
        );
    }
    Ok(report)
}

/// One training forward + backward and one optimiser step (the `small` sets).
fn training_checks(
    report: &mut Report,
    cfg: &SegClipConfig,
    seed: u64,
    train: &HashMap<String, Tensor>,
    pixels: &Tensor,
    optim: Option<HashMap<String, Tensor>>,
) -> Result<()> {
    use segclip_losses::{LossWeights, TrainingModel};
    let device = Device::Cpu;
    let varmap = segclip_losses::parity::seeded_varmap(cfg, seed, &device)?;
    let model = TrainingModel::new(
        candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &device),
        cfg,
    )?;
    let (batch, noise) = segclip_losses::parity::fixture_inputs(train, pixels, cfg.vision.grid())?;
    let mut trace = Trace::default();
    let losses = model.forward(&batch, &noise, &LossWeights::default(), Some(&mut trace))?;
    for (ours, theirs) in [
        ("train.text_emb", "train.text_emb"),
        ("train.image_emb", "train.image_emb"),
        ("train.logits_t2v", "train.logits_t2v"),
        ("group.soft_attn", "train.soft_attn"),
        ("group.region_tokens", "train.region_tokens"),
        ("train.mae.region_tokens", "train.mae.region_tokens"),
        ("train.mae.reconstructed", "train.mae.reconstructed"),
        ("train.mae.hidden", "train.mae.hidden"),
        ("train.mae.pred", "train.mae.pred"),
        ("loss.contrastive", "loss.contrastive"),
        ("loss.kl", "loss.kl"),
        ("loss.mae", "loss.mae"),
        ("loss.total", "loss.total"),
    ] {
        if let (Some(t), Some(r)) = (trace.get(ours), train.get(theirs)) {
            report.float(theirs, t, r)?;
        }
    }
    for (ours, theirs) in [
        ("group.hard_attn", "train.hard_attn"),
        ("train.mae.hard_attn", "train.mae.hard_attn"),
    ] {
        if let (Some(t), Some(r)) = (trace.get(ours), train.get(theirs)) {
            report.exact(theirs, &ints(t)?, &ints(r)?, None);
        }
    }
    let grads = losses.total.backward()?;
    {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut names: Vec<&String> = train.keys().filter(|k| k.starts_with("grad.")).collect();
        names.sort();
        for name in names {
            let var = vars
                .get(&name["grad.".len()..])
                .with_context(|| format!("no parameter for {name}"))?;
            let g = grads
                .get(var.as_tensor())
                .with_context(|| format!("no gradient for {name}"))?;
            report.float(name, g, &train[name])?;
        }
    }
    let Some(optim) = optim else { return Ok(()) };
    let named: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let total_steps = 100;
    let mut opt = segclip_train::AdaptAdamW::new(
        named,
        segclip_train::OptimConfig {
            total_steps,
            ..Default::default()
        },
    );
    let stats = opt.step(&grads)?;
    opt.clamp_logit_scale(cfg.logit_scale_max)?;
    report.float(
        "optim.grad_norm",
        &Tensor::new(stats.grad_norm, &device)?,
        &optim["optim.grad_norm"],
    )?;
    report.float(
        "optim.clip_coef",
        &Tensor::new(stats.clip_coef, &device)?,
        &optim["optim.clip_coef"],
    )?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut names: Vec<&String> = optim.keys().filter(|k| k.starts_with("param.")).collect();
    names.sort();
    for name in names {
        let key = &name["param.".len()..];
        let got = vars
            .get(key)
            .with_context(|| format!("no parameter {key}"))?
            .as_tensor();
        // Adam's first step divides each gradient by its own size, which amplifies float32
        // noise in near-zero gradient elements: compare the parameters at 1e-4 of their scale
        // (the update formulas alone match the fixture within 1e-7; see segclip-train's tests).
        let (o, r) = (got.to_dtype(DType::F64)?, optim[name].to_dtype(DType::F64)?);
        let max_abs = (&o - &r)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        let scale = r.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
        report.rows.push(Row {
            name: name.clone(),
            max_abs,
            rel: max_abs / scale,
            ok: max_abs <= REL_TOL * scale,
            note: String::new(),
        });
    }
    Ok(())
}
