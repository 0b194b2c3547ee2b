//! Zero-shot evaluation (spec section 4.6): per-class intersection and union summed over the
//! split exactly as mmseg does (ground truth 255 ignored; classes whose union is empty are left
//! out of the mean), then IoU per class and mIoU.

use segclip_data::datasets::captions::{decode, ImageRef};
use segclip_data::datasets::SegDataset;
use segclip_group::zeroshot::{
    segment, ClassList, RgbImage, SegmentOptions, Templates, TextClassifier,
};
use segclip_group::SegClip;

use crate::{Error, Result};

/// mmseg's `intersect_and_union`, accumulated.
#[derive(Debug, Clone, PartialEq)]
pub struct IouAccumulator {
    pub intersect: Vec<u64>,
    pub union: Vec<u64>,
}

impl IouAccumulator {
    pub fn new(classes: usize) -> Self {
        Self {
            intersect: vec![0; classes],
            union: vec![0; classes],
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

#[cfg(test)]
mod tests {
    use super::*;

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
