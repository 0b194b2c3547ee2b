//! `segclip segment` as a library call: load a model once, segment images into any classes,
//! write the label PNG, the overlay and the JSON summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use segclip_group::zeroshot::{
    segment, ClassList, RgbImage, SegmentOptions, Segmentation, Templates, TextClassifier,
};
use segclip_group::SegClip;
use segclip_vit::Trace;
use serde::Serialize;

use crate::io;

/// Where the published SegCLIP checkpoint lives (README of the official code).
pub const SEGCLIP_CHECKPOINT_URL: &str =
    "https://github.com/ArrowLuo/SegCLIP/releases/download/checkpoint_v0/segclip.bin";

/// A loaded model with its prompt cache.
pub struct Segmenter {
    pub model: SegClip,
    pub classifier: TextClassifier,
    pub options: SegmentOptions,
    pub templates: Templates,
    pub weights: String,
}

/// The files one segmentation wrote.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub labels: PathBuf,
    pub overlay: PathBuf,
    pub json: PathBuf,
}

#[derive(Serialize)]
struct ClassShare {
    label: usize,
    name: String,
    synonyms: Vec<String>,
    fraction: f64,
}

#[derive(Serialize)]
struct Summary<'a> {
    image: String,
    width: usize,
    height: usize,
    weights: &'a str,
    model_input: [usize; 2],
    crops: usize,
    background_threshold: Option<f32>,
    background_score: Option<&'static str>,
    refine_iterations: usize,
    claim_margin: Option<f32>,
    reencode: bool,
    templates: &'static str,
    classes: Vec<ClassShare>,
    timings_ms: serde_json::Value,
}

impl Segmenter {
    /// Load weights from a path or hub id. Without weights, say where to get them.
    pub fn load(weights: &str, device: &Device) -> Result<Self> {
        let model = SegClip::load(weights, device)
            .with_context(|| format!("loading weights `{weights}`"))?;
        // The official evaluation rescales to the model's input side and slides crops of that
        // side (224 for ViT-B/16); a model trained at another size gets its own.
        let side = model.config().vision.image_size;
        let mut options = SegmentOptions {
            short_side: side,
            crop: side,
            stride: side,
            ..Default::default()
        };
        // Weights calibrated for their own decode carry it (`segclip export`); the others get
        // the official VOC threshold.
        model.calibration.apply(&mut options.decode);
        Ok(Self {
            classifier: TextClassifier::new(model.config().text.context_length)?,
            model,
            options,
            templates: Templates::Simple,
            weights: weights.to_string(),
        })
    }

    /// Segment one image into `classes`; `trace` receives the parity-named intermediates of the
    /// first crop.
    pub fn segment(
        &mut self,
        image: &RgbImage,
        classes: &ClassList,
        trace: Option<&mut Trace>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Segmentation, f64)> {
        let t0 = Instant::now();
        let text = self
            .classifier
            .classify(&self.model.text, classes, self.templates)?;
        let text_ms = t0.elapsed().as_secs_f64() * 1e3;
        let seg = segment(&self.model, image, &text, &self.options, trace, progress)?;
        Ok((seg, text_ms))
    }

    /// Read `image_path`, segment it and write `<stem>.labels.png`, `<stem>.overlay.png` and
    /// `<stem>.json` into `out_dir`.
    pub fn segment_file(
        &mut self,
        image_path: &Path,
        classes: &ClassList,
        out_dir: &Path,
        max_pixels: u64,
        dump_tensors: Option<&Path>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Segmentation, Outputs)> {
        let t0 = Instant::now();
        let image = io::read_image(image_path, max_pixels)?;
        let read_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut trace = Trace::default();
        let (seg, text_ms) =
            self.segment(&image, classes, dump_tensors.map(|_| &mut trace), progress)?;
        let stem = image_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("image");
        let outputs = Outputs {
            labels: out_dir.join(format!("{stem}.labels.png")),
            overlay: out_dir.join(format!("{stem}.overlay.png")),
            json: out_dir.join(format!("{stem}.json")),
        };
        let t1 = Instant::now();
        let mut names = vec![if self.options.decode.bg_thresh.is_some() {
            "background".to_string()
        } else {
            "(none)".to_string()
        }];
        names.extend(classes.names());
        io::write_label_png(&outputs.labels, &seg)?;
        io::write_overlay_png(&outputs.overlay, &image, &seg, &names)?;
        let write_ms = t1.elapsed().as_secs_f64() * 1e3;
        let fr = seg.fractions();
        let mut shares = Vec::new();
        if self.options.decode.bg_thresh.is_some() {
            shares.push(ClassShare {
                label: 0,
                name: "background".into(),
                synonyms: vec![],
                fraction: fr[0],
            });
        }
        for (k, c) in classes.classes.iter().enumerate() {
            shares.push(ClassShare {
                label: k + 1,
                name: c.name().into(),
                synonyms: c.synonyms.clone(),
                fraction: fr[k + 1],
            });
        }
        let t = &seg.timings;
        let summary = Summary {
            image: image_path.display().to_string(),
            width: seg.width,
            height: seg.height,
            weights: &self.weights,
            model_input: [seg.model_size.1, seg.model_size.0],
            crops: seg.windows.len(),
            background_threshold: self.options.decode.bg_thresh,
            background_score: self
                .options
                .decode
                .bg_thresh
                .map(|_| self.options.decode.bg_score.name()),
            refine_iterations: self.options.decode.refine,
            claim_margin: self.options.decode.claim,
            reencode: self.options.decode.reencode,
            templates: match self.templates {
                Templates::Simple => "simple",
                Templates::Full => "full",
                Templates::Identity => "identity",
            },
            classes: shares,
            timings_ms: serde_json::json!({
                "read": read_ms, "text": text_ms, "preprocess": t.preprocess_ms, "visual": t.visual_ms,
                "decode": t.decode_ms, "postprocess": t.postprocess_ms, "write_images": write_ms,
            }),
        };
        let json = serde_json::to_string_pretty(&summary)?;
        io::write_atomic(&outputs.json, |w| {
            w.write_all(json.as_bytes()).map_err(|e| e.to_string())
        })?;
        if let Some(path) = dump_tensors {
            let map: std::collections::HashMap<String, candle_core::Tensor> =
                trace.tensors.into_iter().collect();
            segclip_vit::weights::save_safetensors(&map, None, path)?;
        }
        Ok((seg, outputs))
    }
}

/// The class list of `--classes` or `--classes-file`.
pub fn read_classes(list: Option<&str>, file: Option<&Path>) -> Result<ClassList> {
    Ok(match (list, file) {
        (Some(_), Some(_)) => anyhow::bail!("give either --classes or --classes-file, not both"),
        (Some(s), None) => ClassList::parse_arg(s)?,
        (None, Some(f)) => ClassList::parse_file(
            &std::fs::read_to_string(f)
                .with_context(|| format!("reading the class file {}", f.display()))?,
        )?,
        (None, None) => anyhow::bail!(
            "no classes: pass --classes \"cat,dog,sofa\" or --classes-file classes.txt"
        ),
    })
}

/// The error for a run without weights.
pub fn no_weights_error() -> anyhow::Error {
    anyhow::anyhow!(
        "no weights given: name a SegCLIP checkpoint (`--weights` of `segclip segment`), e.g. the official segclip.bin \
         ({SEGCLIP_CHECKPOINT_URL}), a .safetensors file, or a Hugging Face hub id (owner/repo[/file])"
    )
}

/// candle's knob for how long its idle CPU workers spin before they sleep.
const SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Make candle's idle CPU workers sleep soon (200 spins, ≈ 10 µs, instead of 25 000) unless the
/// user set `CANDLE_BARRIER_POOL_SPIN_LIMIT`. Call it first thing in `main`: candle reads the
/// variable once, when its pool starts.
///
/// candle's elementwise ops run on its own pool, and our GEMM and attention kernels on rayon's.
/// After each candle op its idle worker spun for ≈ 1 ms on one of the two cores while rayon's
/// two threads computed the next GEMM: 3.3 % of a 224² forward's CPU samples were that spin
/// (`perf record … segclip bench --iters 30`), none with the shorter limit. For inference:
/// a training step's backward runs thousands of short candle ops back to back, each of which
/// would then wake the sleeping worker (`segclip bench --train --batch 8 --iters 3`, seven
/// alternated pairs: median step 9102 ms with the short limit against 8508 ms with candle's),
/// so `segclip train` keeps candle's default.
pub fn init_cpu_threads() {
    if std::env::var_os(SPIN_LIMIT_VAR).is_none() {
        std::env::set_var(SPIN_LIMIT_VAR, "200");
    }
}

/// Print an error chain for a person (no backtrace) and exit with status 1.
pub fn exit_with(err: anyhow::Error) -> ! {
    eprintln!("error: {err:#}");
    std::process::exit(1)
}

/// The device named `spec`: `cpu`, `cuda` / `cuda:N` or `metal` / `metal:N`. CUDA and Metal
/// need the binary built with the `cuda` or `metal` feature.
pub fn device(spec: &str) -> Result<Device> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => (
            k,
            n.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("device `{spec}`: `{n}` is not a device number"))?,
        ),
        None => (spec, 0),
    };
    let built = |feature: &str, r: candle_core::Result<Device>| {
        r.map_err(|e| {
            anyhow::anyhow!(
                "device `{spec}` is not available ({e}); build with `--features {feature}` on a machine that has one"
            )
        })
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => built("cuda", Device::new_cuda(ordinal)),
        "metal" => built("metal", Device::new_metal(ordinal)),
        _ => anyhow::bail!("device `{spec}` is not cpu, cuda[:N] or metal[:N]"),
    }
}
