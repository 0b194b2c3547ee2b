//! Superpixels computed natively and fast: Felzenszwalb–Huttenlocher (what SegCLIP trains
//! with) and SLIC, both as scikit-image defines them, plus the adjusted Rand index used to
//! compare partitions.

pub mod felzenszwalb;
mod gaussian;
pub mod slic;

pub use felzenszwalb::{felzenszwalb, FelzenszwalbParams};
pub use slic::{slic, SlicParams};

/// A label map: one segment id per pixel, row-major, ids `0..count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    pub height: usize,
    pub width: usize,
    pub labels: Vec<u32>,
    pub count: usize,
}

/// Which algorithm, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Felzenszwalb(FelzenszwalbParams),
    Slic(SlicParams),
}

impl Method {
    /// Run on an interleaved RGB u8 image (h, w, 3).
    pub fn run(&self, rgb: &[u8], (h, w): (usize, usize)) -> LabelMap {
        match self {
            Method::Felzenszwalb(p) => felzenszwalb(rgb, (h, w, 3), p),
            Method::Slic(p) => slic(rgb, (h, w), p),
        }
    }

    /// A stable text key of the method and every parameter (for caches).
    pub fn key(&self) -> String {
        match self {
            Method::Felzenszwalb(p) => format!(
                "felzenszwalb-scale{}-sigma{}-min{}",
                p.scale, p.sigma, p.min_size
            ),
            Method::Slic(p) => format!(
                "slic-n{}-c{}-it{}-sigma{}-conn{}-min{}-max{}-lab{}",
                p.n_segments,
                p.compactness,
                p.max_num_iter,
                p.sigma,
                p.enforce_connectivity,
                p.min_size_factor,
                p.max_size_factor,
                p.convert2lab
            ),
        }
    }
}

/// Adjusted Rand index of two partitions of the same pixels (1 = identical up to renaming).
pub fn adjusted_rand_index(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len(), "partitions of different sizes");
    let n = a.len() as f64;
    let mut pairs: std::collections::HashMap<(u32, u32), u64> = std::collections::HashMap::new();
    let mut ca: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    let mut cb: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *pairs.entry((x, y)).or_default() += 1;
        *ca.entry(x).or_default() += 1;
        *cb.entry(y).or_default() += 1;
    }
    let c2 = |v: u64| (v as f64) * (v as f64 - 1.0) / 2.0;
    let index: f64 = pairs.values().map(|&v| c2(v)).sum();
    let sa: f64 = ca.values().map(|&v| c2(v)).sum();
    let sb: f64 = cb.values().map(|&v| c2(v)).sum();
    let expected = sa * sb / (n * (n - 1.0) / 2.0);
    let max = (sa + sb) / 2.0;
    if max == expected {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_of_hand_made_partitions() {
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[5, 5, 7, 7]), 1.0);
        // sklearn.metrics.adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.5714285714285715
        assert!(
            (adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 0.5714285714285715).abs() < 1e-12
        );
        // adjusted_rand_score([0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 2, 2]) = 0.2424...
        let v = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 1, 0, 1, 2, 2]);
        assert!((v - 0.24242424242424243).abs() < 1e-12, "{v}");
    }
}
