//! Bicubic resampling of the positional-embedding grid, with PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)` semantics: source coordinate
//! `(dst + 0.5) · in/out − 0.5` (not clamped), cubic convolution with A = −0.75, taps clamped to
//! the border.

const A: f64 = -0.75;

fn cubic_weights(t: f64) -> [f64; 4] {
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let u = 1.0 - t;
    let w2 = ((A + 2.0) * u - (A + 3.0)) * u * u + 1.0;
    let w3 = ((A * (u + 1.0) - 5.0 * A) * (u + 1.0) + 8.0 * A) * (u + 1.0) - 4.0 * A;
    [w0, w1, w2, w3]
}

/// For each output index: the four clamped source taps and their weights.
fn taps(input: usize, output: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = (o as f64 + 0.5) * scale - 0.5;
            let i0 = src.floor();
            let w = cubic_weights(src - i0);
            let i0 = i0 as i64;
            let idx = [-1i64, 0, 1, 2].map(|d| (i0 + d).clamp(0, input as i64 - 1) as usize);
            (idx, w)
        })
        .collect()
}

/// Resample a channels-last grid `(h, w, c)` to `(oh, ow, c)`.
pub fn bicubic_hwc(
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(src.len(), h * w * c, "grid size does not match its buffer");
    // Along width first, then height (separable; the order does not change the result beyond
    // rounding).
    let tw = taps(w, ow);
    let mut tmp = vec![0f64; h * ow * c];
    for y in 0..h {
        for (x, (idx, wt)) in tw.iter().enumerate() {
            let out = &mut tmp[(y * ow + x) * c..(y * ow + x + 1) * c];
            for k in 0..4 {
                let row = &src[(y * w + idx[k]) * c..(y * w + idx[k] + 1) * c];
                for (o, s) in out.iter_mut().zip(row) {
                    *o += wt[k] * *s as f64;
                }
            }
        }
    }
    let th = taps(h, oh);
    let mut out = vec![0f32; oh * ow * c];
    for (y, (idx, wt)) in th.iter().enumerate() {
        for x in 0..ow {
            let dst = &mut out[(y * ow + x) * c..(y * ow + x + 1) * c];
            for (ch, d) in dst.iter_mut().enumerate() {
                let v: f64 = (0..4)
                    .map(|k| wt[k] * tmp[(idx[k] * ow + x) * c + ch])
                    .sum();
                *d = v as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_sizes_match() {
        let src: Vec<f32> = (0..2 * 3 * 2).map(|v| v as f32 * 0.5).collect();
        let out = bicubic_hwc(&src, (2, 3, 2), (2, 3));
        assert_eq!(src, out);
    }

    #[test]
    fn constant_stays_constant_and_weights_sum_to_one() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f64 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        let src = vec![3.0f32; 4 * 4];
        let out = bicubic_hwc(&src, (4, 4, 1), (7, 3));
        assert!(out.iter().all(|v| (v - 3.0).abs() < 1e-6));
    }

    #[test]
    fn upsample_1d_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0.,1.,4.,9.]]]]), size=(1,8),
        //   mode="bicubic", align_corners=False)
        let out = bicubic_hwc(&[0.0, 1.0, 4.0, 9.0], (1, 4, 1), (1, 8));
        let expected = [
            -0.10546875,
            0.12109375,
            0.45703125,
            1.609375,
            2.828125,
            5.449_218_8,
            7.972_656_3,
            9.527_344,
        ];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn downsample_2d_non_square_matches_pytorch() {
        // F.interpolate(torch.arange(16.).reshape(1,1,4,4)**1.5, size=(3,5), mode="bicubic",
        //   align_corners=False)
        let src: Vec<f32> = (0..16).map(|v| (v as f32).powf(1.5)).collect();
        let out = bicubic_hwc(&src, (4, 4, 1), (3, 5));
        let expected = [
            0.8156968, 1.5997127, 3.093447, 5.1779633, 6.9519935, 14.051378, 16.638287, 20.206583,
            24.010332, 26.991783, 38.78938, 42.251106, 46.957058, 51.857666, 55.64555,
        ];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-4, "{out:?}");
        }
    }
}
