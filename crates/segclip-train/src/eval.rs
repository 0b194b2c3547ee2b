//! Zero-shot evaluation (spec section 4.6): per-class intersection and union summed over the
//! split exactly as mmseg does (ground truth 255 ignored; classes whose union is empty are left
//! out of the mean), then IoU per class and mIoU.

use segclip_data::datasets::captions::{decode, ImageRef};
use std::path::PathBuf;

use segclip_data::datasets::{SegDataset, SegKind};
use segclip_group::zeroshot::{
    segment, ClassList, RgbImage, SegmentOptions, Templates, TextClassifier,
};
use segclip_group::SegClip;

use crate::{Error, Result};

/// mmseg's `intersect_and_union`, accumulated, and where the pixels went.
#[derive(Debug, Clone, PartialEq)]
pub struct IouAccumulator {
    pub intersect: Vec<u64>,
    pub union: Vec<u64>,
    pub outcomes: PixelOutcomes,
}

/// Scored pixels (ground truth 255 left out) by what became of them, class 0 being the
/// background: which part of the error is the background decision and which the naming.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PixelOutcomes {
    pub background_kept: u64,
    pub background_as_object: u64,
    pub object_as_background: u64,
    pub object_misnamed: u64,
    pub object_right: u64,
}

impl PixelOutcomes {
    fn add(&mut self, pred: usize, gt: usize) {
        let slot = match (gt, pred) {
            (0, 0) => &mut self.background_kept,
            (0, _) => &mut self.background_as_object,
            (_, 0) => &mut self.object_as_background,
            (g, p) if g == p => &mut self.object_right,
            _ => &mut self.object_misnamed,
        };
        *slot += 1;
    }

    /// Each outcome in percent of the scored pixels, in field order.
    pub fn percent(&self) -> [f64; 5] {
        let v = [
            self.background_kept,
            self.background_as_object,
            self.object_as_background,
            self.object_misnamed,
            self.object_right,
        ];
        let n = v.iter().sum::<u64>().max(1) as f64;
        v.map(|x| 100.0 * x as f64 / n)
    }
}

impl IouAccumulator {
    pub fn new(classes: usize) -> Self {
        Self {
            intersect: vec![0; classes],
            union: vec![0; classes],
            outcomes: PixelOutcomes::default(),
        }
    }

    /// Add one image: `pred` and `gt` per pixel; gt 255 is ignored; predictions outside the
    /// class range count as wrong.
    pub fn add(&mut self, pred: &[u16], gt: &[u8]) {
        let k = self.intersect.len();
        let (mut area_pred, mut area_gt, mut inter) = (vec![0u64; k], vec![0u64; k], vec![0u64; k]);
        for (&p, &g) in pred.iter().zip(gt) {
            if g == 255 {
                continue;
            }
            let (p, g) = (p as usize, g as usize);
            self.outcomes.add(p, g);
            if g < k {
                area_gt[g] += 1;
            }
            if p < k {
                area_pred[p] += 1;
                if p == g {
                    inter[p] += 1;
                }
            }
        }
        for c in 0..k {
            self.intersect[c] += inter[c];
            self.union[c] += area_pred[c] + area_gt[c] - inter[c];
        }
    }

    /// IoU per class (`None` where the union is empty).
    pub fn iou(&self) -> Vec<Option<f64>> {
        self.intersect
            .iter()
            .zip(&self.union)
            .map(|(&i, &u)| (u > 0).then(|| i as f64 / u as f64))
            .collect()
    }

    /// Mean IoU over the classes in `which` that have a union.
    pub fn miou_of(&self, which: impl Fn(usize) -> bool) -> f64 {
        let v: Vec<f64> = self
            .iou()
            .into_iter()
            .enumerate()
            .filter(|(c, _)| which(*c))
            .filter_map(|(_, x)| x)
            .collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    pub fn miou(&self) -> f64 {
        self.miou_of(|_| true)
    }
}

/// Images with ground truth to evaluate on.
pub trait EvalSource {
    fn classes(&self) -> Vec<String>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image and ground-truth labels (255 = ignore) of sample `i`.
    fn sample(&self, i: usize) -> Result<(RgbImage, Vec<u8>)>;
}

impl EvalSource for SegDataset {
    fn classes(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn sample(&self, i: usize) -> Result<(RgbImage, Vec<u8>)> {
        let image = decode(&ImageRef::File(self.samples[i].image.clone()))?;
        let (w, h, gt) = self.label(i)?;
        if (w, h) != (image.width, image.height) {
            return Err(Error::Config(format!(
                "{}: label is {w}x{h} but the image is {}x{}",
                self.samples[i].id, image.width, image.height
            )));
        }
        Ok((image, gt))
    }
}

/// Freshly generated synthetic test scenes.
pub struct SynthSource {
    pub seed: u64,
    pub count: usize,
    pub size: usize,
}

impl EvalSource for SynthSource {
    fn classes(&self) -> Vec<String> {
        segclip_data::synth::class_names()
    }
    fn len(&self) -> usize {
        self.count
    }
    fn sample(&self, i: usize) -> Result<(RgbImage, Vec<u8>)> {
        let s = segclip_data::synth::scene(
            self.seed,
            i as u64,
            self.size,
            segclip_data::synth::Split::Test,
        );
        Ok((s.image, s.labels))
    }
}

/// Segment every image of `source` (at most `limit`) into its classes and accumulate IoU.
pub fn evaluate(
    model: &SegClip,
    source: &dyn EvalSource,
    opts: &SegmentOptions,
    templates: Templates,
    limit: Option<usize>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<IouAccumulator> {
    let names = source.classes();
    let list = ClassList::new(names.iter().map(|n| vec![n.clone()]).collect())?;
    let mut clf = TextClassifier::new(model.config().text.context_length)?;
    let text = clf.classify(&model.text, &list, templates)?;
    let n = limit.map_or(source.len(), |l| l.min(source.len()));
    let mut acc = IouAccumulator::new(names.len());
    for i in 0..n {
        let (image, gt) = source.sample(i)?;
        let seg = segment(model, &image, &text, opts, None, &mut |_, _| {})?;
        acc.add(&seg.labels, &gt);
        progress(i + 1, n);
    }
    Ok(acc)
}

/// What to evaluate on and how: the `[eval]` section of a training configuration (`every` >
/// 0 turns the periodic evaluation on) and the options of `segclip eval`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// During training: evaluate every this many steps (0 = never).
    pub every: usize,
    /// `voc`, `context`, `coco` (COCO-Object), `folder` (VOC layout with classes.txt) or
    /// `synth` (fresh synthetic test scenes).
    pub dataset: String,
    /// Dataset root, for all but `synth`.
    pub root: Option<PathBuf>,
    pub split: String,
    pub limit: Option<usize>,
    /// Synthetic scenes: stream seed, count and side.
    pub seed: u64,
    pub count: usize,
    pub size: usize,
    /// Background threshold (default: the dataset's official value).
    pub bg_thresh: Option<f32>,
    /// Keep the image-level top-k classes per crop (5, as officially).
    pub topk: usize,
    /// What the threshold is compared with: `probability` (official) or `cosine`.
    pub bg_score: String,
    /// `simple`, `full` (80 templates) or `identity`.
    pub templates: String,
    /// Crop, stride and short side (default: the model's image size).
    pub crop: Option<usize>,
    /// Iterations of pixel-adaptive refinement of the assignment (0: off, the official decode).
    pub refine: usize,
    /// Claim margin (`docs/deviations.md` item 18; `None`: off, the official decode).
    pub claim_margin: Option<f32>,
    /// Name the regions from second views too (`docs/deviations.md` item 19; false: official).
    pub reencode: bool,
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            every: 0,
            dataset: "synth".into(),
            root: None,
            split: "val".into(),
            limit: None,
            seed: 1000,
            count: 200,
            size: 112,
            bg_thresh: None,
            topk: 5,
            bg_score: "probability".into(),
            templates: "simple".into(),
            crop: None,
            refine: 0,
            claim_margin: None,
            reencode: false,
        }
    }
}

/// The result of [`EvalSpec::run`].
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub classes: Vec<String>,
    pub acc: IouAccumulator,
    pub images: usize,
    pub bg_thresh: f32,
    /// Synthetic scenes: mIoU of the seen classes (with background) and of the held-out
    /// combinations.
    pub seen_held_out: Option<(f64, f64)>,
}

impl EvalReport {
    pub fn miou(&self) -> f64 {
        self.acc.miou()
    }

    /// A JSON summary: mIoU, per-class IoU, and for synthetic scenes seen / held-out mIoU.
    pub fn json(&self) -> serde_json::Value {
        let iou = self.acc.iou();
        let mut v = serde_json::json!({
            "images": self.images,
            "miou": self.miou(),
            "bg_thresh": self.bg_thresh,
            "pixels": self.acc.outcomes,
            "per_class": self.classes.iter().zip(&iou)
                .map(|(n, v)| serde_json::json!({"class": n, "iou": v}))
                .collect::<Vec<_>>(),
        });
        if let Some((seen, held)) = self.seen_held_out {
            v["miou_seen"] = seen.into();
            v["miou_held_out"] = held.into();
        }
        v
    }
}

impl EvalSpec {
    pub fn validate(&self) -> Result<()> {
        let ok = ["voc", "context", "coco", "folder", "synth"];
        if !ok.contains(&self.dataset.as_str()) {
            return Err(Error::Config(format!(
                "eval dataset `{}` is not one of {}",
                self.dataset,
                ok.join(", ")
            )));
        }
        if self.dataset != "synth" && self.root.is_none() {
            return Err(Error::Config(format!(
                "a root folder is required for eval dataset `{}`",
                self.dataset
            )));
        }
        if self.topk == 0 {
            return Err(Error::Config(
                "eval topk must be at least 1 (5 is the official value)".into(),
            ));
        }
        if let Err(e) = self.bg_score.parse::<segclip_group::zeroshot::BgScore>() {
            return Err(Error::Config(format!("eval: {e}")));
        }
        if let Some(m) = self.claim_margin.filter(|m| !(0.0..=1.0).contains(m)) {
            return Err(Error::Config(format!(
                "eval claim margin {m} is not a cosine margin in [0, 1]"
            )));
        }
        if !["simple", "full", "identity"].contains(&self.templates.as_str()) {
            return Err(Error::Config(format!(
                "eval templates `{}` is not simple, full or identity",
                self.templates
            )));
        }
        Ok(())
    }

    /// The images and the dataset's official background threshold.
    pub fn source(&self) -> Result<(Box<dyn EvalSource>, f32)> {
        self.validate()?;
        let root = || self.root.clone().unwrap_or_default();
        let ds = match self.dataset.as_str() {
            "voc" => SegDataset::voc(&root(), &self.split)?,
            "context" => SegDataset::context(&root(), &self.split)?,
            "coco" => SegDataset::coco_object(&root(), &self.split)?,
            "folder" => SegDataset::folder(&root(), &self.split)?,
            _ => {
                let synth = SynthSource {
                    seed: self.seed,
                    count: self.count,
                    size: self.size,
                };
                return Ok((Box::new(synth), SegKind::Folder.bg_thresh()));
            }
        };
        let bg = ds.kind.bg_thresh();
        Ok((Box::new(ds), bg))
    }

    pub fn templates(&self) -> Templates {
        match self.templates.as_str() {
            "full" => Templates::Full,
            "identity" => Templates::Identity,
            _ => Templates::Simple,
        }
    }

    /// Evaluate `model`; `progress(done, total)` after each image.
    pub fn run(
        &self,
        model: &SegClip,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<EvalReport> {
        let (source, official_bg) = self.source()?;
        let mut opts = SegmentOptions::default();
        let side = self.crop.unwrap_or(model.config().vision.image_size);
        (opts.crop, opts.stride, opts.short_side) = (side, side, side);
        let bg_thresh = self.bg_thresh.unwrap_or(official_bg);
        opts.decode.bg_thresh = Some(bg_thresh);
        opts.decode.topk = self.topk;
        opts.decode.refine = self.refine;
        opts.decode.claim = self.claim_margin;
        opts.decode.reencode = self.reencode;
        opts.decode.bg_score = self
            .bg_score
            .parse()
            .map_err(|e: String| Error::Config(format!("eval: {e}")))?;
        let acc = evaluate(
            model,
            source.as_ref(),
            &opts,
            self.templates(),
            self.limit,
            progress,
        )?;
        let images = self.limit.map_or(source.len(), |l| l.min(source.len()));
        let seen_held_out = (self.dataset == "synth").then(|| {
            use segclip_data::synth::is_held_out;
            (acc.miou_of(|c| !is_held_out(c)), acc.miou_of(is_held_out))
        });
        Ok(EvalReport {
            classes: source.classes(),
            acc,
            images,
            bg_thresh,
            seen_held_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_are_named() {
        assert!(EvalSpec::default().validate().is_ok());
        let e = EvalSpec {
            topk: 0,
            ..Default::default()
        };
        assert!(e.validate().unwrap_err().to_string().contains("topk"));
        let e = EvalSpec {
            dataset: "voc".into(),
            ..Default::default()
        };
        assert!(e.validate().unwrap_err().to_string().contains("root"));
        let e = EvalSpec {
            claim_margin: Some(2.0),
            ..Default::default()
        };
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("claim margin 2"));
    }

    #[test]
    fn hand_made_maps() {
        let mut acc = IouAccumulator::new(3);
        // gt:   0 0 1 1 2 255
        // pred: 0 1 1 1 0 2
        acc.add(&[0, 1, 1, 1, 0, 2], &[0, 0, 1, 1, 2, 255]);
        // class 0: I=1, U = pred 2 + gt 2 - 1 = 3; class 1: I=2, U = 3 + 2 - 2 = 3; class 2: I=0, U=0+1=1.
        assert_eq!(acc.intersect, vec![1, 2, 0]);
        assert_eq!(acc.union, vec![3, 3, 1]);
        let iou = acc.iou();
        assert_eq!(iou, vec![Some(1.0 / 3.0), Some(2.0 / 3.0), Some(0.0)]);
        assert!((acc.miou() - 1.0 / 3.0).abs() < 1e-12);
        // Of the five scored pixels: one background kept, one called class 1, one object (2)
        // called background, two objects right.
        let o = acc.outcomes;
        assert_eq!(
            [
                o.background_kept,
                o.background_as_object,
                o.object_as_background,
                o.object_misnamed,
                o.object_right
            ],
            [1, 1, 1, 0, 2]
        );
        assert_eq!(o.percent(), [20.0, 20.0, 20.0, 0.0, 40.0]);
        let mut acc = IouAccumulator::new(3);
        acc.add(&[2], &[1]);
        assert_eq!(acc.outcomes.object_misnamed, 1);
        // A class absent from both prediction and ground truth is excluded from the mean.
        let mut acc = IouAccumulator::new(4);
        acc.add(&[1, 1], &[1, 1]);
        assert_eq!(acc.iou(), vec![None, Some(1.0), None, None]);
        assert_eq!(acc.miou(), 1.0);
        // Sums over images, not a mean of per-image IoUs.
        let mut acc = IouAccumulator::new(2);
        acc.add(&[1, 1, 1, 1], &[1, 1, 1, 1]);
        acc.add(&[0, 0], &[1, 1]);
        assert_eq!(acc.iou()[1], Some(4.0 / 6.0));
    }
}
