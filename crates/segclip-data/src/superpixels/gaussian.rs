//! `scipy.ndimage.gaussian_filter` on planar f64 images: separable correlation along rows then
//! columns, mode `reflect` (edge sample repeated), kernel radius `int(truncate·σ + 0.5)` with
//! truncate 4, weights `exp(−x²/2σ²)` normalised to sum 1. The sum is taken in scipy's order for
//! symmetric kernels (centre, then outer pairs inwards), so results match to the last bits.

fn kernel(sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma + 0.5) as usize;
    let w: Vec<f64> = (0..=2 * r)
        .map(|i| (-0.5 / (sigma * sigma) * ((i as f64 - r as f64).powi(2))).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| v / s).collect()
}

/// Index of `i` (possibly outside [0, n)) under scipy's `reflect` boundary.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * n;
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - 1 - m;
    }
    m as usize
}

/// Filter one line: `src` extended by reflection into `line`, then each output as the centre
/// tap plus outer pairs inwards, accumulated across the whole line at once (so it vectorises).
fn filter_line(src: &[f64], dst: &mut [f64], w: &[f64], line: &mut Vec<f64>) {
    let n = src.len();
    let r = w.len() / 2;
    line.clear();
    line.extend((0..r).map(|i| src[reflect(i as isize - r as isize, n)]));
    line.extend_from_slice(src);
    line.extend((n..n + r).map(|i| src[reflect(i as isize, n)]));
    for (d, &c) in dst.iter_mut().zip(&line[r..r + n]) {
        *d = c * w[r];
    }
    for j in (1..=r).rev() {
        let wj = w[r - j];
        let (left, right) = (&line[r - j..r - j + n], &line[r + j..r + j + n]);
        for ((d, &a), &b) in dst.iter_mut().zip(left).zip(right) {
            *d += (a + b) * wj;
        }
    }
}

/// Smooth one (h, w) plane in place with σ along both axes (axis 0 first, as scipy).
pub fn gaussian_plane(plane: &mut [f64], (h, w): (usize, usize), sigma: f64) {
    if sigma <= 0.0 {
        return;
    }
    let k = kernel(sigma);
    let r = k.len() / 2;
    // Along axis 0 (columns), whole rows at a time: the same sums as `filter_line`, in the same
    // order, vectorised across x.
    let src = plane.to_vec();
    let row = |y: isize| &src[reflect(y, h) * w..reflect(y, h) * w + w];
    for y in 0..h {
        let out = &mut plane[y * w..(y + 1) * w];
        let centre = row(y as isize);
        for (o, &c) in out.iter_mut().zip(centre) {
            *o = c * k[r];
        }
        for j in (1..=r).rev() {
            let (up, down) = (row(y as isize - j as isize), row(y as isize + j as isize));
            let wj = k[r - j];
            for ((o, &a), &b) in out.iter_mut().zip(up).zip(down) {
                *o += (a + b) * wj;
            }
        }
    }
    let mut line = Vec::new();
    let mut row = vec![0f64; w];
    for y in 0..h {
        row.copy_from_slice(&plane[y * w..(y + 1) * w]);
        filter_line(&row, &mut plane[y * w..(y + 1) * w], &k, &mut line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_repeats_the_edge() {
        let idx: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
    }

    #[test]
    fn matches_scipy_on_a_small_ramp() {
        // scipy.ndimage.gaussian_filter(np.array([[0.,1,4,9,16]]), sigma=[1.0, 1.0])
        let mut p = vec![0.0, 1.0, 4.0, 9.0, 16.0];
        gaussian_plane(&mut p, (1, 5), 1.0);
        // Axis 0 has one row, so only the row filter changes values (reflect of one sample is
        // itself).
        let want = [
            0.5728870494358977,
            1.9307676588016667,
            4.951594464888316,
            9.388191380567608,
            13.15655944630651,
        ];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
    }
}
