//! Vectorisable f32 kernels for the CPU hot spots: `exp` (Cephes' `expf` polynomial, within
//! 2 ulp over the softmax range), QuickGELU and row softmax. Each kernel is compiled for AVX-512,
//! AVX2+FMA and the baseline, and the best one the processor has is picked at run time.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for f32, Cephes' range reduction and degree-6 polynomial. Below −87.3 (where e^x is
/// no longer a normal f32) it returns exactly 0 — masked softmax entries (−∞) must be 0, not
/// the smallest normal: divided by the row sum that becomes a denormal, and denormals make every
/// later multiplication (the attention backward's GEMMs) up to 100× slower.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let tiny = x < -87.3;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 5e-1)
        * z
        + r
        + 1.0;
    // 2^n built from n's bits: n is a whole number in [−126, 128], so adding 1.5·2^23 puts it
    // in the low mantissa bits (exact). (`n as i32` would do the same, but its saturating,
    // NaN-checking conversion does not vectorise.)
    let ni = ((n + 12_582_912.0).to_bits() as i32).wrapping_sub(0x4B40_0000);
    let y = p * f32::from_bits((ni.wrapping_add(127) << 23) as u32);
    if tiny {
        0.0
    } else {
        y
    }
}

#[inline(always)]
fn quick_gelu_body(src: &[f32], dst: &mut [f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = quick_gelu(v);
    }
}

/// QuickGELU of one value, `v·σ(1.702 v)`, as every vectorised loop here computes it.
#[inline(always)]
pub fn quick_gelu(v: f32) -> f32 {
    v / (1.0 + exp(-1.702 * v))
}

/// Lane-wise reductions (16 accumulators) so the compiler can vectorise them.
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(m, |a, &b| a.max(b))
}

#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    chunks.remainder().iter().sum::<f32>() + acc.iter().sum::<f32>()
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let m = max_lanes(row);
    for v in row.iter_mut() {
        *v = exp(*v - m);
    }
    let inv = 1.0 / sum_lanes(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[target_feature(enable = "avx512f,avx2,fma")]
            pub unsafe fn avx512($($arg: $ty),*) { super::$body($($arg),*) }
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn avx2($($arg: $ty),*) { super::$body($($arg),*) }
        }
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the processor has the features the function was compiled for.
                    return unsafe { $name::avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { $name::avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

multiversion!(quick_gelu_into, quick_gelu_body, (src: &[f32], dst: &mut [f32]));
multiversion!(softmax_row, softmax_body, (row: &mut [f32]));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut r = vec![1f32, 2., 3., f32::NEG_INFINITY];
        softmax_row(&mut r);
        let want = [0.09003057f32, 0.24472847, 0.66524096, 0.0];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
    }
}
