//! Learning-rate schedules (spec section 3.7), driven by each parameter's own step count.

/// The official `warmup_cosine`: linear warmup over the first `warmup` fraction of training,
/// then a half cosine down to 0. `x = step / total_steps`.
pub fn warmup_cosine(x: f64, warmup: f64) -> f64 {
    if x < warmup {
        x / warmup
    } else {
        0.5 * (1.0 + (std::f64::consts::PI * (x - warmup) / (1.0 - warmup)).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values() {
        assert_eq!(warmup_cosine(0.0, 0.15), 0.0);
        assert!((warmup_cosine(0.01, 0.15) - 0.01 / 0.15).abs() < 1e-15);
        assert!((warmup_cosine(0.15, 0.15) - 1.0).abs() < 1e-15);
        assert!((warmup_cosine(0.575, 0.15) - 0.5).abs() < 1e-12);
        assert!(warmup_cosine(1.0, 0.15).abs() < 1e-15);
    }
}
