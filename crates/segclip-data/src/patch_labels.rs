//! Superpixel id per patch for a training crop (spec section 3.3).
//!
//! The crop box is given as the normalised `[x0, y0, x1, y1]` that the random crop returns. The
//! label map is cropped to rows `int(y0·H) : ceil(y1·H)` and columns `int(x0·W) : ceil(x1·W)` (the
//! whole map if that is under 2 pixels), nearest-resized to the model's input size, then reduced
//! per patch by one of two rules:
//!
//! - [`PatchRule::Majority`] (the default): the most frequent id in the patch (smallest id on a
//!   tie), so every patch carries the id of a superpixel it actually overlaps;
//! - [`PatchRule::OfficialMean`]: the official code's arithmetic mean of the integer ids,
//!   truncated. A boundary patch can then get an id that belongs to neither neighbour, or to an
//!   unrelated segment, which puts unrelated patches into one "superpixel" for the KL loss. It is
//!   kept bit-exact for reproducing the paper (the training parity uses it).

use crate::superpixels::LabelMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchRule {
    #[default]
    Majority,
    OfficialMean,
}

/// PyTorch `interpolate(mode="nearest")` source index.
fn nearest_src(dst: usize, input: usize, output: usize) -> usize {
    let scale = input as f32 / output as f32;
    ((dst as f32 * scale).floor() as usize).min(input - 1)
}

/// Patch labels (grid × grid, row-major) of the crop `box_xyxy` of `map`, for an input of
/// `size` pixels and patches of `patch` pixels.
pub fn patch_labels(
    map: &LabelMap,
    box_xyxy: [f64; 4],
    size: usize,
    patch: usize,
    rule: PatchRule,
) -> Vec<i64> {
    let (h, w) = (map.height, map.width);
    let [x0, y0, x1, y1] = box_xyxy;
    let (mut r0, mut r1) = (
        (y0 * h as f64) as usize,
        ((y1 * h as f64).ceil() as usize).min(h),
    );
    let (mut c0, mut c1) = (
        (x0 * w as f64) as usize,
        ((x1 * w as f64).ceil() as usize).min(w),
    );
    if r1 <= r0 + 1 || c1 <= c0 + 1 {
        (r0, r1, c0, c1) = (0, h, 0, w);
    }
    let (ch, cw) = (r1 - r0, c1 - c0);
    let grid = size / patch;
    let mut out = vec![0i64; grid * grid];
    let mut counts: Vec<(u32, u32)> = Vec::new();
    for gy in 0..grid {
        for gx in 0..grid {
            let mut sum = 0i64;
            counts.clear();
            for py in 0..patch {
                let sy = r0 + nearest_src(gy * patch + py, ch, size);
                for px in 0..patch {
                    let sx = c0 + nearest_src(gx * patch + px, cw, size);
                    let l = map.labels[sy * w + sx];
                    sum += l as i64;
                    match counts.iter_mut().find(|(k, _)| *k == l) {
                        Some((_, c)) => *c += 1,
                        None => counts.push((l, 1)),
                    }
                }
            }
            out[gy * grid + gx] = match rule {
                PatchRule::OfficialMean => (sum as f64 / (patch * patch) as f64) as i64,
                PatchRule::Majority => counts
                    .iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                    .map_or(0, |&(l, _)| l as i64),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_boundary_patch() {
        // A 4x4 map, patches of 2 on a 4-pixel input: the top-left patch holds ids 0, 0, 0, 3.
        let map = LabelMap {
            height: 4,
            width: 4,
            labels: vec![0, 0, 1, 1, 0, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2],
            count: 4,
        };
        let maj = patch_labels(&map, [0.0, 0.0, 1.0, 1.0], 4, 2, PatchRule::Majority);
        let mean = patch_labels(&map, [0.0, 0.0, 1.0, 1.0], 4, 2, PatchRule::OfficialMean);
        assert_eq!(maj, vec![0, 1, 2, 2]);
        // (0 + 0 + 0 + 3) / 4 = 0.75 -> 0; (1+1+1+1)/4 = 1.
        assert_eq!(mean, vec![0, 1, 2, 2]);
        let map = LabelMap {
            height: 2,
            width: 2,
            labels: vec![1, 3, 3, 3],
            count: 4,
        };
        // mean 2.5 -> 2: an id that is in neither segment of the patch.
        assert_eq!(
            patch_labels(&map, [0.0, 0.0, 1.0, 1.0], 2, 2, PatchRule::OfficialMean),
            vec![2]
        );
        assert_eq!(
            patch_labels(&map, [0.0, 0.0, 1.0, 1.0], 2, 2, PatchRule::Majority),
            vec![3]
        );
    }

    #[test]
    fn crop_box_selects_rows_and_columns() {
        // Right half of a map whose columns are 0..8: the crop is columns 4..8.
        let map = LabelMap {
            height: 2,
            width: 8,
            labels: (0..16).map(|i| (i % 8) as u32).collect(),
            count: 8,
        };
        let l = patch_labels(&map, [0.5, 0.0, 1.0, 1.0], 4, 1, PatchRule::Majority);
        assert_eq!(l[..4], [4, 5, 6, 7]);
        // A degenerate box falls back to the whole map.
        let l = patch_labels(&map, [0.5, 0.5, 0.5, 0.5], 8, 1, PatchRule::Majority);
        assert_eq!(l[..8], [0, 1, 2, 3, 4, 5, 6, 7]);
    }
}
