//! The `segclip` command-line tool.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (not among libmimalloc-sys's
/// constants).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[derive(Parser)]
#[command(
    name = "segclip",
    version,
    about = "Open-vocabulary semantic segmentation with SegCLIP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where `segment`, `eval` and `train` compute: cpu, cuda[:N] (built with `--features
    /// cuda`) or metal[:N] (`--features metal`).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Check this implementation against a parity folder of the official PyTorch code.
    Parity {
        /// Folder with config.json and inference/text/decode .safetensors.
        dir: PathBuf,
    },
    /// Segment an image into any list of classes.
    Segment(SegmentArgs),
    /// Time the SegCLIP ViT-B/16 visual forward (seeded weights) and print JSON.
    Bench {
        /// Crop side in pixels.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Crops per forward.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Time training steps (forward, backward, update) instead of the visual forward.
        #[arg(long)]
        train: bool,
        /// Model configuration (JSON) for `--train`; default ViT-B/16.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Instead of timing, write the seeded ViT-B/16 weights (all 415 tensors) to this
        /// safetensors file: a real-size checkpoint for memory and speed tests.
        #[arg(long)]
        save_seeded: Option<PathBuf>,
        /// After the warm-up, time one forward for each line read from standard input and
        /// print its milliseconds on a line of its own, until end of input: for a peer that
        /// alternates its own forwards with these (`benches/visual_vs_pytorch.py`).
        #[arg(long, conflicts_with_all = ["train", "save_seeded"])]
        paced: bool,
    },
    /// Compute superpixels of an image and write the label map as a 16-bit PNG.
    Superpixels(SuperpixelArgs),
    /// Train SegCLIP from a TOML configuration (see docs/training.md).
    Train(TrainArgs),
    /// Write synthetic captioned scenes: images, captions (pairs.jsonl) and label maps in the
    /// VOC layout (see datasets/synth/README.md).
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// `train` leaves out the held-out colour/shape combinations; `test` draws all;
        /// `pretrain` is `train` with objects also in six colours the benchmark never names
        /// (the synthetic CLIP's world); `pretrain-wide` in sixteen.
        #[arg(long, default_value = "train", value_parser = ["train", "test", "pretrain", "pretrain-wide"])]
        split: String,
        #[arg(long, default_value_t = 112)]
        size: usize,
    },
    /// Zero-shot mIoU on a segmentation dataset or fresh synthetic scenes.
    Eval(EvalArgs),
    /// Write the inference tensors of a checkpoint (training-only parts dropped) as safetensors,
    /// optionally in float16 (loading upcasts to float32).
    Export {
        #[arg(long)]
        weights: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        half: bool,
        /// Record the background threshold these weights are calibrated for (e.g. the best of
        /// `segclip eval --bg-thresh T` on a validation split); `segment` then uses it by
        /// default. Without it, a threshold already in the input's metadata is kept.
        #[arg(long)]
        bg_thresh: Option<f32>,
        /// What that threshold is compared with (`probability`, the official decode, or
        /// `cosine`); needs --bg-thresh.
        #[arg(long, requires = "bg_thresh", value_parser = ["probability", "cosine"])]
        bg_score: Option<String>,
        /// Record the iterations of pixel-adaptive refinement that threshold was calibrated
        /// with (docs/deviations.md item 17); 0 records the official decode. Without it, a
        /// count already in the input's metadata is kept.
        #[arg(long)]
        refine: Option<usize>,
        /// Record the claim margin that threshold was calibrated with (docs/deviations.md
        /// item 18). Without it, a margin already in the input's metadata is kept.
        #[arg(long)]
        claim_margin: Option<f32>,
        /// Record that the regions are named from second views too (docs/deviations.md item
        /// 19): `--reencode` or `--reencode false`. Without it, the input's choice is kept.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        reencode: Option<bool>,
    },
    /// Print the CLIP token ids of a text.
    Tokenize {
        text: String,
        /// Context length (77 for evaluation, 32 for SegCLIP training).
        #[arg(long, default_value_t = 77)]
        context: usize,
    },
}

#[derive(clap::Args)]
struct SegmentArgs {
    /// The image (PNG, JPEG, GIF, BMP, TIFF, WebP, PNM).
    #[arg(long)]
    image: PathBuf,
    /// Classes separated by commas; synonyms of one class by `|` ("cat,dog,sofa|couch").
    #[arg(long)]
    classes: Option<String>,
    /// A file with one class a line (synonyms separated by commas).
    #[arg(long, conflicts_with = "classes")]
    classes_file: Option<PathBuf>,
    /// SegCLIP weights: a .bin/.pth/.safetensors path or a Hugging Face hub id (owner/repo[/file]).
    #[arg(long)]
    weights: Option<String>,
    /// Output folder for <stem>.labels.png, <stem>.overlay.png and <stem>.json.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Background threshold (VOC 0.80, Context 0.25, COCO 0.65). Default: the one the weights
    /// were calibrated with (`segclip export --bg-thresh`), else 0.80.
    #[arg(long)]
    bg_thresh: Option<f32>,
    /// Compare the threshold with each region's best class `probability` (the official
    /// decode) or its best `cosine` similarity (docs/deviations.md item 16). Default: the
    /// weights' calibrated choice, else probability.
    #[arg(long, value_parser = ["probability", "cosine"])]
    bg_score: Option<String>,
    /// Give every pixel a class: no background.
    #[arg(long, conflicts_with_all = ["bg_thresh", "bg_score"])]
    no_background: bool,
    /// Iterations of pixel-adaptive refinement of the regions along the image's edges
    /// (docs/deviations.md item 17; 0 = the official decode). Default: the weights' calibrated
    /// choice, else 0.
    #[arg(long)]
    refine: Option<usize>,
    /// Claim margin: a region is background when its cosine to its class is more than this
    /// under the best region's of the crop for that class (docs/deviations.md item 18).
    /// Default: the weights' calibrated choice, else off (the official decode).
    #[arg(long, conflicts_with = "no_background")]
    claim_margin: Option<f32>,
    /// Name each region from its token and from a second view of the crop holding only its
    /// pixels, one more forward per region (docs/deviations.md item 19): `--reencode` or
    /// `--reencode false`. Default: the weights' calibrated choice, else off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    reencode: Option<bool>,
    /// Prompt templates: `simple` ("a photo of a {}."), `full` (CLIP's 80) or `identity` ("{}").
    #[arg(long, default_value = "simple", value_parser = ["simple", "full", "identity"])]
    templates: String,
    /// Keep the image-level top-k classes per crop.
    #[arg(long, default_value_t = 5)]
    topk: usize,
    /// Sliding-window crop and stride, in pixels of the rescaled image (default: the model's
    /// image size, 224 for ViT-B/16).
    #[arg(long)]
    crop: Option<usize>,
    #[arg(long)]
    stride: Option<usize>,
    /// Short side the image is rescaled to (default: the model's image size).
    #[arg(long)]
    short_side: Option<usize>,
    /// Refuse images with more pixels than this.
    #[arg(long, default_value_t = segclip::io::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Write the intermediate tensors of the first crop (parity names) to this safetensors file.
    #[arg(long)]
    dump_tensors: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SuperpixelArgs {
    /// `felzenszwalb` (SegCLIP's training superpixels) or `slic`.
    #[arg(long, default_value = "felzenszwalb", value_parser = ["felzenszwalb", "slic"])]
    method: String,
    /// Felzenszwalb: scale (higher = larger segments).
    #[arg(long, default_value_t = 224.0)]
    scale: f64,
    /// Gaussian pre-smoothing σ (Felzenszwalb default 0.9; SLIC default 0).
    #[arg(long)]
    sigma: Option<f64>,
    /// Felzenszwalb: minimum segment size in pixels.
    #[arg(long, default_value_t = 224)]
    min_size: usize,
    /// SLIC: approximate number of segments.
    #[arg(long, default_value_t = 100)]
    n_segments: usize,
    /// SLIC: colour vs space balance (higher = squarer segments).
    #[arg(long, default_value_t = 10.0)]
    compactness: f64,
    /// SLIC: k-means iterations.
    #[arg(long, default_value_t = 10)]
    max_num_iter: usize,
    /// Also write the image with segment boundaries drawn in red.
    #[arg(long)]
    overlay: Option<PathBuf>,
    #[arg(long, default_value_t = segclip::io::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    image: PathBuf,
    out: PathBuf,
}

fn run_superpixels(a: SuperpixelArgs) -> Result<()> {
    use segclip::data::superpixels::{FelzenszwalbParams, Method, SlicParams};
    let img = segclip::io::read_image(&a.image, a.max_pixels)?;
    let method = if a.method == "slic" {
        Method::Slic(SlicParams {
            n_segments: a.n_segments.max(1),
            compactness: a.compactness,
            max_num_iter: a.max_num_iter,
            sigma: a.sigma.unwrap_or(0.0),
            ..Default::default()
        })
    } else {
        Method::Felzenszwalb(FelzenszwalbParams {
            scale: a.scale,
            sigma: a.sigma.unwrap_or(0.9),
            min_size: a.min_size,
        })
    };
    if a.compactness <= 0.0 || a.scale <= 0.0 {
        anyhow::bail!("--compactness and --scale must be positive");
    }
    let t = std::time::Instant::now();
    let map = method.run(&img.data, (img.height, img.width));
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if map.count > 65536 {
        anyhow::bail!("{} segments do not fit a 16-bit PNG", map.count);
    }
    segclip::io::write_gray16_png(&a.out, img.width, img.height, &map.labels)?;
    if let Some(o) = &a.overlay {
        segclip::io::write_boundary_png(o, &img, &map.labels)?;
    }
    segclip::out!(
        "{} segments ({}) in {ms:.1} ms -> {}",
        map.count,
        method.key(),
        a.out.display()
    );
    Ok(())
}

/// This process's communicator: one process, or one rank of an NCCL group.
fn communicator(a: &TrainArgs) -> Result<Box<dyn segclip::train::Communicator>> {
    if a.world_size <= 1 {
        return Ok(Box::new(segclip::train::SingleProcess));
    }
    anyhow::ensure!(
        a.rank < a.world_size,
        "--rank {} is not below --world-size {}",
        a.rank,
        a.world_size
    );
    #[cfg(feature = "nccl")]
    {
        use segclip::train::comm::{Nccl, NcclId};
        let path = a
            .nccl_id
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--nccl-id FILE is required with --world-size > 1"))?;
        let id = if a.rank == 0 {
            NcclId::create(path)?
        } else {
            NcclId::read(path, std::time::Duration::from_secs(300))?
        };
        Ok(Box::new(Nccl::new(id, a.rank, a.rank, a.world_size)?))
    }
    #[cfg(not(feature = "nccl"))]
    anyhow::bail!("--world-size > 1 needs a binary built with `--features nccl,cuda`")
}

fn run_train(a: &TrainArgs, device: &candle_core::Device) -> Result<()> {
    use anyhow::Context;
    let (config, resume) = (a.config.as_path(), a.resume);
    let comm = communicator(a)?;
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg = segclip::train::TrainConfig::from_toml(&text)
        .with_context(|| format!("in {}", config.display()))?;
    if cfg.train.threads > 0 {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.train.threads)
            .build_global();
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    let start = std::time::Instant::now();
    segclip::train::run::train(&cfg, resume, device, comm.as_ref(), &mut |p| {
        if let Some(r) = p.eval {
            let split = r.seen_held_out.map_or(String::new(), |(s, h)| {
                format!(" (seen {:.2}, held-out {:.2})", s * 100.0, h * 100.0)
            });
            bar.suspend(|| {
                segclip::out!(
                    "step {}: zero-shot mIoU {:.2}{split} on {} images",
                    p.log.step,
                    r.miou() * 100.0,
                    r.images
                )
            });
        }
        bar.set_length(p.total_steps as u64);
        bar.set_position(p.log.step as u64);
        let l = p.log;
        bar.set_message(format!(
            "loss {:.4} (con {:.4} kl {:.5} mae {:.4}{})  lr {:.2e}  {:.1} img/s{}",
            l.loss,
            l.contrastive,
            l.kl,
            l.mae,
            if l.mix != 0.0 {
                format!(" mix {:.4}", l.mix)
            } else {
                String::new()
            },
            l.lr,
            p.images as f64 / start.elapsed().as_secs_f64(),
            if p.skipped_images > 0 {
                format!("  skipped images {}", p.skipped_images)
            } else {
                String::new()
            }
        ));
    })?;
    bar.finish();
    segclip::out!(
        "log: {}  checkpoints: {}",
        cfg.output.join("log.jsonl").display(),
        cfg.output.display()
    );
    Ok(())
}

#[derive(clap::Args)]
struct TrainArgs {
    #[arg(long)]
    config: PathBuf,
    /// Continue from the latest checkpoint in the output folder.
    #[arg(long)]
    resume: bool,
    /// Data-parallel training over NCCL (built with `--features nccl`): the number of
    /// processes, one per GPU, each started with its own --rank (docs/training.md).
    #[arg(long, default_value_t = 1)]
    world_size: usize,
    #[arg(long, default_value_t = 0)]
    rank: usize,
    /// A file path every rank can see: rank 0 writes the NCCL id there, the others read it.
    #[arg(long)]
    nccl_id: Option<PathBuf>,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// `voc`, `context`, `coco` (COCO-Object), `folder` (VOC layout with classes.txt) or `synth`.
    #[arg(long, value_parser = ["voc", "context", "coco", "folder", "synth"])]
    dataset: String,
    /// Dataset root (VOCdevkit/VOC2012, VOCdevkit/VOC2010, coco_stuff164k, or the folder).
    #[arg(long)]
    root: Option<PathBuf>,
    #[arg(long, default_value = "val")]
    split: String,
    #[arg(long)]
    weights: String,
    #[arg(long)]
    limit: Option<usize>,
    /// Synthetic scenes: stream seed, count and size.
    #[arg(long, default_value_t = 1000)]
    seed: u64,
    #[arg(long, default_value_t = 200)]
    count: usize,
    #[arg(long, default_value_t = 112)]
    size: usize,
    /// Background threshold (default: the dataset's official value).
    #[arg(long)]
    bg_thresh: Option<f32>,
    /// Keep the image-level top-k classes per crop.
    #[arg(long, default_value_t = 5)]
    topk: usize,
    /// What the threshold is compared with: `probability` (official) or `cosine`.
    #[arg(long, default_value = "probability", value_parser = ["probability", "cosine"])]
    bg_score: String,
    #[arg(long, default_value = "simple", value_parser = ["simple", "full", "identity"])]
    templates: String,
    /// Crop, stride and short side (default: the model's image size).
    #[arg(long)]
    crop: Option<usize>,
    /// Iterations of pixel-adaptive refinement of the regions along the image's edges
    /// (docs/deviations.md item 17); without it, 0: the official decode.
    #[arg(long)]
    refine: Option<usize>,
    /// Claim margin (docs/deviations.md item 18): a region is background when its cosine to
    /// its class is more than this under the crop's best region's for it; without it, off.
    #[arg(long)]
    claim_margin: Option<f32>,
    /// Name each region from its token and from a second view of the crop holding only its
    /// pixels (docs/deviations.md item 19); without it, the official decode.
    #[arg(long)]
    reencode: bool,
    /// Folder for eval.json and eval.csv.
    #[arg(long, default_value = "out")]
    out: PathBuf,
}

fn run_eval(a: EvalArgs, device: &candle_core::Device) -> Result<()> {
    let model = segclip::group::SegClip::load(&a.weights, device)?;
    let spec = segclip::train::eval::EvalSpec {
        every: 0,
        dataset: a.dataset.clone(),
        root: a.root.clone(),
        split: a.split.clone(),
        limit: a.limit,
        seed: a.seed,
        count: a.count,
        size: a.size,
        bg_thresh: a.bg_thresh,
        topk: a.topk,
        bg_score: a.bg_score.clone(),
        templates: a.templates.clone(),
        crop: a.crop,
        refine: a.refine.unwrap_or(0),
        claim_margin: a.claim_margin,
        reencode: a.reencode,
    };
    let bar = indicatif::ProgressBar::new(0);
    let report = spec.run(&model, &mut |i, n| {
        bar.set_length(n as u64);
        bar.set_position(i as u64)
    })?;
    bar.finish_and_clear();
    let iou = report.acc.iou();
    let mut csv = String::from("class,iou,intersection,union\n");
    for (c, name) in report.classes.iter().enumerate() {
        let v = iou[c].map_or("-".to_string(), |x| format!("{:.2}", x * 100.0));
        segclip::out!("{c:>3} {name:<24} {v:>7}");
        csv += &format!(
            "{name},{},{},{}\n",
            iou[c].map_or(String::new(), |x| x.to_string()),
            report.acc.intersect[c],
            report.acc.union[c]
        );
    }
    let mut summary = report.json();
    summary["dataset"] = a.dataset.clone().into();
    summary["weights"] = a.weights.clone().into();
    segclip::out!(
        "mIoU {:.2} over {} images",
        report.miou() * 100.0,
        report.images
    );
    let [kept, fp, missed, misnamed, right] = report.acc.outcomes.percent();
    segclip::out!(
        "pixels: background kept {kept:.1}%, background called an object {fp:.1}%, objects \
         called background {missed:.1}%, objects misnamed {misnamed:.1}%, objects right {right:.1}%"
    );
    if let Some((seen, held)) = report.seen_held_out {
        segclip::out!(
            "seen classes (with background) mIoU {:.2}; held-out combinations mIoU {:.2}",
            seen * 100.0,
            held * 100.0
        );
    }
    segclip::out!(
        "background threshold {} on {}{}{}{}",
        report.bg_thresh,
        a.bg_score,
        a.refine
            .filter(|&r| r > 0)
            .map_or(String::new(), |r| format!(", {r} refinement iterations")),
        a.claim_margin
            .map_or(String::new(), |m| format!(", claim margin {m}")),
        if a.reencode { ", second views" } else { "" }
    );
    let used = segclip::group::Calibration {
        bg_thresh: Some(report.bg_thresh),
        bg_score: a.bg_score.parse().map_err(anyhow::Error::msg)?,
        refine: a.refine.unwrap_or(0),
        claim: a.claim_margin,
        reencode: a.reencode,
    };
    let recorded = model.calibration;
    if recorded != segclip::group::Calibration::default() && recorded.options() != used.options() {
        segclip::out!(
            "these weights are calibrated for {}: pass them to use it (eval keeps the dataset's \
             official decode unless told)",
            recorded.options()
        );
    }
    segclip::io::create_dir(&a.out)?;
    segclip::io::write_atomic(&a.out.join("eval.json"), |w| {
        w.write_all(
            serde_json::to_string_pretty(&summary)
                .unwrap_or_default()
                .as_bytes(),
        )
        .map_err(|e| e.to_string())
    })?;
    segclip::io::write_atomic(&a.out.join("eval.csv"), |w| {
        w.write_all(csv.as_bytes()).map_err(|e| e.to_string())
    })?;
    segclip::out!(
        "wrote {} and {}",
        a.out.join("eval.json").display(),
        a.out.join("eval.csv").display()
    );
    Ok(())
}

/// Run `segment`: shared by the command and `examples/zero_shot.rs`.
fn run_segment(a: SegmentArgs, device: &candle_core::Device) -> Result<()> {
    use segclip::pipeline::{read_classes, Segmenter};
    let classes = read_classes(a.classes.as_deref(), a.classes_file.as_deref())?;
    let weights = a.weights.ok_or_else(segclip::pipeline::no_weights_error)?;
    let mut seg = Segmenter::load(&weights, device)?;
    seg.templates = if a.templates == "full" {
        segclip::group::zeroshot::Templates::Full
    } else {
        Default::default()
    };
    seg.options.crop = a.crop.unwrap_or(seg.options.crop);
    seg.options.stride = a.stride.unwrap_or(seg.options.stride);
    seg.options.short_side = a.short_side.unwrap_or(seg.options.short_side);
    seg.options.decode.topk = a.topk;
    if a.no_background {
        seg.options.decode.bg_thresh = None;
    } else if let Some(t) = a.bg_thresh {
        seg.options.decode.bg_thresh = Some(t);
    }
    if let Some(score) = &a.bg_score {
        seg.options.decode.bg_score = score.parse().map_err(anyhow::Error::msg)?;
    }
    seg.options.decode.refine = a.refine.unwrap_or(seg.options.decode.refine);
    if a.no_background {
        seg.options.decode.claim = None;
    } else if let Some(m) = a.claim_margin {
        anyhow::ensure!(
            (0.0..=1.0).contains(&m),
            "--claim-margin {m}: a claim margin is a cosine difference in [0, 1]"
        );
        seg.options.decode.claim = Some(m);
    }
    seg.options.decode.reencode = a.reencode.unwrap_or(seg.options.decode.reencode);
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} crops ({elapsed})")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_message(a.image.display().to_string());
    let (s, out) = seg.segment_file(
        &a.image,
        &classes,
        &a.out,
        a.max_pixels,
        a.dump_tensors.as_deref(),
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let fr = s.fractions();
    segclip::out!(
        "{}x{} -> {} crop(s) at {}x{}",
        s.width,
        s.height,
        s.windows.len(),
        s.model_size.1,
        s.model_size.0
    );
    let mut names = vec!["background".to_string()];
    names.extend(classes.names());
    for (i, f) in fr.iter().enumerate() {
        if *f > 0.0 {
            segclip::out!("{:>3} {:<24} {:>6.2}%", i, names[i], f * 100.0);
        }
    }
    segclip::out!(
        "wrote {}, {}, {}",
        out.labels.display(),
        out.overlay.display(),
        out.json.display()
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    // Inference only: a training step's backward pass runs thousands of short candle ops back
    // to back, which candle's spinning worker answers sooner (see `init_cpu_threads`).
    let trains = matches!(
        cli.command,
        Command::Train(_) | Command::Bench { train: true, .. }
    );
    if !trains {
        segclip::pipeline::init_cpu_threads();
    }
    // Keep freed memory committed for reuse instead of returning it to the OS after mimalloc's
    // purge delay (1 s): a training step frees and reallocates gigabytes of activations and
    // gradients, and re-faulting them cost a quarter of the step (`segclip bench --train
    // --batch 2`: 6139 → 4552 ms). RSS stays at its peak, which the step reaches anyway.
    // SAFETY: sets a documented mimalloc option (`mi_option_purge_delay`, -1 = never purge);
    // options may be set at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    if let Err(e) = run(cli) {
        segclip::pipeline::exit_with(e);
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = |spec: &str| segclip::pipeline::device(spec);
    match cli.command {
        Command::Parity { dir } => {
            let report = segclip::parity::run(&dir)?;
            report.print();
            if !report.passed() {
                anyhow::bail!("parity failed for {}", dir.display());
            }
        }
        Command::Segment(a) => run_segment(a, &device(&cli.device)?)?,
        Command::Superpixels(a) => run_superpixels(a)?,
        Command::Train(a) => {
            // NCCL ranks default to GPU `rank`.
            let spec = if cli.device == "cuda" && a.world_size > 1 {
                format!("cuda:{}", a.rank)
            } else {
                cli.device.clone()
            };
            run_train(&a, &device(&spec)?)?
        }
        Command::Eval(a) => run_eval(a, &device(&cli.device)?)?,
        Command::Export {
            weights,
            out,
            half,
            bg_thresh,
            bg_score,
            refine,
            claim_margin,
            reencode,
        } => {
            for (flag, v) in [("--bg-thresh", bg_thresh), ("--claim-margin", claim_margin)] {
                if let Some(t) = v.filter(|t| !(0.0..=1.0).contains(t)) {
                    anyhow::bail!("{flag} {t}: it is a probability or cosine in [0, 1]");
                }
            }
            let device = candle_core::Device::Cpu;
            let sd = segclip::vit::StateDict::load(&weights, 10, &device)?;
            let mut cal = segclip::group::Calibration::from_metadata(&sd)?;
            if let Some(t) = bg_thresh {
                cal.bg_thresh = Some(t);
                cal.bg_score = bg_score
                    .unwrap_or_else(|| "probability".into())
                    .parse()
                    .map_err(anyhow::Error::msg)?;
            }
            cal.refine = refine.unwrap_or(cal.refine);
            cal.claim = claim_margin.or(cal.claim);
            cal.reencode = reencode.unwrap_or(cal.reencode);
            let cfg = segclip::group::SegClipConfig::infer(&sd)?;
            let (required, optional) = cfg.keys();
            sd.check(&required, &optional)?;
            let dtype = if half {
                candle_core::DType::F16
            } else {
                candle_core::DType::F32
            };
            let mut tensors = std::collections::HashMap::new();
            for (k, _) in &required {
                tensors.insert(k.clone(), sd.tensors[k].to_dtype(dtype)?);
            }
            let metadata = cal.to_metadata();
            let metadata = (!metadata.is_empty()).then_some(metadata);
            segclip::vit::weights::save_safetensors(&tensors, metadata, &out)?;
            let options = cal.options();
            segclip::out!(
                "wrote {} ({} tensors{}{})",
                out.display(),
                tensors.len(),
                if half { ", float16" } else { "" },
                if options.is_empty() {
                    String::new()
                } else {
                    format!(", calibrated for {options}")
                }
            );
        }
        Command::Synth {
            out,
            count,
            seed,
            split,
            size,
        } => {
            use segclip::data::synth;
            let split = match split.as_str() {
                "test" => synth::Split::Test,
                "pretrain" => synth::Split::Pretrain,
                "pretrain-wide" => synth::Split::PretrainWide,
                _ => synth::Split::Train,
            };
            for d in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
                segclip::io::create_dir(&out.join(d))?;
            }
            std::fs::write(
                out.join("classes.txt"),
                synth::class_names_of(split).join("\n") + "\n",
            )?;
            let bar = indicatif::ProgressBar::new(count);
            let mut jsonl = String::new();
            let mut ids = String::new();
            for i in 0..count {
                let s = synth::scene(seed, i, size, split);
                let id = format!("{i:06}");
                segclip::io::write_rgb_png(&out.join(format!("JPEGImages/{id}.png")), &s.image)?;
                segclip::io::write_index_png(
                    &out.join(format!("SegmentationClass/{id}.png")),
                    size,
                    size,
                    &s.labels,
                )?;
                jsonl += &(serde_json::json!({"image": format!("JPEGImages/{id}.png"), "caption": s.caption}).to_string() + "\n");
                ids += &(id + "\n");
                bar.inc(1);
            }
            std::fs::write(out.join("pairs.jsonl"), jsonl)?;
            std::fs::write(out.join("ImageSets/Segmentation/val.txt"), ids)?;
            bar.finish_and_clear();
            segclip::out!("wrote {count} scenes to {}", out.display());
        }
        Command::Bench {
            save_seeded: Some(path),
            ..
        } => {
            let cfg = segclip::group::SegClipConfig::vit_b16();
            let sd = segclip::group::model::seeded_state_dict(&cfg, 0, &candle_core::Device::Cpu)?;
            candle_core::safetensors::save(&sd.tensors, &path)?;
            segclip::out!("wrote {} ({} tensors)", path.display(), sd.tensors.len());
        }
        Command::Bench {
            batch,
            iters,
            warmup,
            train: true,
            model,
            ..
        } => {
            let dev = candle_core::Device::Cpu;
            let cfg = match model {
                Some(p) => segclip::group::SegClipConfig::from_file(&p)?,
                None => segclip::group::SegClipConfig::vit_b16(),
            };
            let (t, [f, b, u]) =
                segclip::bench::train_step_ms(&cfg, batch, warmup, iters.max(1), &dev)?;
            segclip::out!(
                "{}",
                serde_json::json!({"batch": batch, "median_ms": t[t.len() / 2], "min_ms": t[0], "times_ms": t,
                    "forward_ms": f, "backward_ms": b, "update_ms": u, "peak_rss_mib": segclip::bench::peak_rss_mib()})
            );
        }
        Command::Bench {
            size,
            batch,
            iters,
            warmup,
            save_seeded: None,
            paced,
            ..
        } => {
            let dev = candle_core::Device::Cpu;
            let model = segclip::bench::seeded_vit_b16(&dev)?;
            let x = segclip::bench::pixels(batch, size, &dev)?;
            let forward = || {
                let out = model.visual.forward(&x, None, None)?;
                out.image_emb.to_vec2::<f32>()?;
                Ok(())
            };
            let t = if paced {
                segclip::bench::time_ms_paced(warmup, forward)?
            } else {
                segclip::bench::time_ms(warmup, iters.max(1), forward)?
            };
            segclip::out!(
                "{}",
                serde_json::json!({"size": size, "batch": batch, "median_ms": t[t.len() / 2], "min_ms": t[0],
                    "times_ms": t, "peak_rss_mib": segclip::bench::peak_rss_mib()})
            );
        }
        Command::Tokenize { text, context } => {
            let tok = segclip::vit::Tokenizer::new(context)?;
            let e = tok.encode(&text)?;
            if e.truncated {
                eprintln!("warning: the text is longer than {context} tokens and was truncated (end token kept)");
            }
            segclip::out!(
                "{}",
                e.ids
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    Ok(())
}
