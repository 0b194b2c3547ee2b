//! What a checkpoint's decode was calibrated with, carried in its safetensors metadata
//! (`segclip export`): the background threshold and what it is compared with
//! (`docs/deviations.md` item 16), the refinement iterations (item 17), the claim margin
//! (item 18) and the second views of the regions (item 19). Files without these keys — the official `segclip.bin`, every training
//! checkpoint — decode as the official code does.
//!
//! `cargo run --release -- export --weights W --out calibrated.safetensors --bg-thresh 0.38
//! --bg-score cosine --refine 10 --claim-margin 0`

use std::collections::HashMap;

use segclip_vit::StateDict;

use crate::zeroshot::{BgScore, DecodeOptions};
use crate::{Error, Result};

/// The metadata key of the calibrated background threshold.
pub const BG_THRESH_KEY: &str = "segclip.bg_thresh";
/// The metadata key of what the threshold is compared with: `probability` or `cosine`.
pub const BG_SCORE_KEY: &str = "segclip.bg_score";
/// The metadata key of the refinement iterations the threshold was calibrated with.
pub const REFINE_KEY: &str = "segclip.refine";
/// The metadata key of the claim margin the threshold was calibrated with.
pub const CLAIM_KEY: &str = "segclip.claim_margin";
/// The metadata key of whether the regions are named from second views (`true`).
pub const REENCODE_KEY: &str = "segclip.reencode";

/// A checkpoint's recorded decode settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Calibration {
    /// The background threshold (`None`: not recorded; the decode keeps its own).
    pub bg_thresh: Option<f32>,
    /// What that threshold is compared with (the official probability when absent).
    pub bg_score: BgScore,
    /// Iterations of pixel-adaptive refinement (0, the official decode, when absent).
    pub refine: usize,
    /// The claim margin (`None`, the official decode, when absent).
    pub claim: Option<f32>,
    /// Whether the regions are named from second views (false, the official decode, when
    /// absent).
    pub reencode: bool,
}

impl Calibration {
    /// Read it from `sd`'s metadata; a malformed value is an error naming the file, the key
    /// and what to do.
    pub fn from_metadata(sd: &StateDict) -> Result<Self> {
        let bad = |key: &str, v: &str, what: &str| {
            Error::Config(format!(
                "{}: metadata `{key}` = `{v}` is not {what}; re-export the weights with \
                 `segclip export` and the options they were calibrated with",
                sd.source
            ))
        };
        let get = |key: &str| sd.metadata.get(key).map(|v| v.trim());
        let bg_score = match get(BG_SCORE_KEY) {
            Some(v) => v
                .parse::<BgScore>()
                .map_err(|_| bad(BG_SCORE_KEY, v, "`probability` or `cosine`"))?,
            None => BgScore::Probability,
        };
        let unit = |key: &str, what: &str| -> Result<Option<f32>> {
            get(key)
                .map(|v| match v.parse::<f32>() {
                    Ok(t) if (0.0..=1.0).contains(&t) => Ok(t),
                    _ => Err(bad(key, v, what)),
                })
                .transpose()
        };
        let refine = match get(REFINE_KEY) {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| bad(REFINE_KEY, v, "a count of iterations"))?,
            None => 0,
        };
        let reencode = match get(REENCODE_KEY) {
            Some(v) => v
                .parse::<bool>()
                .map_err(|_| bad(REENCODE_KEY, v, "`true` or `false`"))?,
            None => false,
        };
        Ok(Self {
            bg_thresh: unit(BG_THRESH_KEY, "a number in [0, 1]")?,
            bg_score,
            refine,
            claim: unit(CLAIM_KEY, "a cosine margin in [0, 1]")?,
            reencode,
        })
    }

    /// The metadata entries that record it (none for the official decode).
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Some(t) = self.bg_thresh {
            m.insert(BG_THRESH_KEY.into(), t.to_string());
            m.insert(BG_SCORE_KEY.into(), self.bg_score.name().into());
        }
        if self.refine > 0 {
            m.insert(REFINE_KEY.into(), self.refine.to_string());
        }
        if let Some(c) = self.claim {
            m.insert(CLAIM_KEY.into(), c.to_string());
        }
        if self.reencode {
            m.insert(REENCODE_KEY.into(), "true".into());
        }
        m
    }

    /// Decode with it: the threshold and its score only where recorded.
    pub fn apply(&self, opts: &mut DecodeOptions) {
        if let Some(t) = self.bg_thresh {
            opts.bg_thresh = Some(t);
            opts.bg_score = self.bg_score;
        }
        opts.refine = self.refine;
        opts.claim = self.claim;
        opts.reencode = self.reencode;
    }

    /// The settings as `segclip segment` / `eval` options, for messages.
    pub fn options(&self) -> String {
        let mut s = Vec::new();
        if let Some(t) = self.bg_thresh {
            s.push(format!(
                "--bg-thresh {t} --bg-score {}",
                self.bg_score.name()
            ));
        }
        if self.refine > 0 {
            s.push(format!("--refine {}", self.refine));
        }
        if let Some(c) = self.claim {
            s.push(format!("--claim-margin {c}"));
        }
        if self.reencode {
            s.push("--reencode".into());
        }
        s.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd(meta: &[(&str, &str)]) -> StateDict {
        StateDict {
            tensors: HashMap::new(),
            source: "w.safetensors".into(),
            format: segclip_vit::weights::KeyFormat::SegClip,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn round_trips_through_metadata() {
        let c = Calibration {
            bg_thresh: Some(0.38),
            bg_score: BgScore::Cosine,
            refine: 10,
            claim: Some(0.0),
            reencode: true,
        };
        let m = c.to_metadata();
        let pairs: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(Calibration::from_metadata(&sd(&pairs)).unwrap(), c);
        assert_eq!(
            c.options(),
            "--bg-thresh 0.38 --bg-score cosine --refine 10 --claim-margin 0 --reencode"
        );
        // Nothing recorded: the official decode, and no metadata.
        let none = Calibration::from_metadata(&sd(&[])).unwrap();
        assert_eq!(none, Calibration::default());
        assert!(none.to_metadata().is_empty());
        let mut opts = DecodeOptions::default();
        none.apply(&mut opts);
        assert_eq!(opts, DecodeOptions::default());
        c.apply(&mut opts);
        assert_eq!(
            (
                opts.bg_thresh,
                opts.bg_score,
                opts.refine,
                opts.claim,
                opts.reencode
            ),
            (Some(0.38), BgScore::Cosine, 10, Some(0.0), true)
        );
    }

    #[test]
    fn malformed_values_name_the_key() {
        for (k, v) in [
            (BG_THRESH_KEY, "high"),
            (BG_THRESH_KEY, "1.5"),
            (BG_SCORE_KEY, "logit"),
            (REFINE_KEY, "-3"),
            (CLAIM_KEY, "wide"),
            (REENCODE_KEY, "yes"),
        ] {
            let e = Calibration::from_metadata(&sd(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(k) && e.contains(v) && e.contains("w.safetensors"),
                "{e}"
            );
        }
    }
}
