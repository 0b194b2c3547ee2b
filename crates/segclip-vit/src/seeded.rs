//! The seeded random weights of the parity fixtures (`shared/parity/README.md`, "Seeded
//! weights"): every value is a pure function of (seed, key, shape), so the repository carries no
//! weight files and any port can rebuild them bit for bit.
//!
//! Per key: `state = seed ^ fnv1a64(key)`; SplitMix64 draws in row-major order;
//! `u = (x >> 11)·2⁻⁵³`; `value = f32(a + b·u)` with `(a, b)` from the key's rule.

use crate::{Error, Result};

const LAYERNORMS: [&str; 14] = [
    "ln_pre",
    "ln_post",
    "ln_final",
    "ln_1",
    "ln_2",
    "ln_x",
    "ln_k",
    "cross_ln",
    "k_ln",
    "ln",
    "norm",
    "norm1",
    "norm2",
    "decoder_norm",
];
const SMALL_EMBEDS: [&str; 4] = [
    "clip.positional_embedding",
    "clip.visual.positional_embedding",
    "clip.visual.class_embedding",
    "vis_mae_decoder.mask_token",
];

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How one key's values are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Constant(f64),
    SinCos,
    /// `a + b·u`, u uniform in [0, 1).
    Uniform {
        a: f64,
        b: f64,
    },
}

/// The rule of `key` with `shape` (first matching row of the README's table).
pub fn rule(key: &str, shape: &[usize]) -> Result<Rule> {
    let parts: Vec<&str> = key.split('.').collect();
    let last = parts[parts.len() - 1];
    let module = if parts.len() > 1 {
        parts[parts.len() - 2]
    } else {
        ""
    };
    let sym = |s: f64| Rule::Uniform { a: -s, b: 2.0 * s };
    Ok(if key == "clip.logit_scale" {
        Rule::Constant(50f64.ln())
    } else if key == "vis_mae_decoder.decoder_pos_embed" {
        Rule::SinCos
    } else if last == "weight" && LAYERNORMS.contains(&module) {
        Rule::Uniform { a: 0.9, b: 0.2 }
    } else if last.ends_with("bias") {
        Rule::Uniform { a: -0.05, b: 0.1 }
    } else if key == "clip.token_embedding.weight" || last == "semantic_center" {
        sym(1.0)
    } else if SMALL_EMBEDS.contains(&key) {
        Rule::Uniform { a: -0.1, b: 0.2 }
    } else if (key == "clip.text_projection" || key == "clip.visual.proj") && shape.len() == 2 {
        sym((3.0 / shape[0] as f64).sqrt())
    } else if last.ends_with("weight") && shape.len() >= 2 {
        sym((3.0 / shape[1..].iter().product::<usize>() as f64).sqrt())
    } else {
        return Err(Error::Config(format!(
            "the seeded-weight generator has no rule for `{key}` {shape:?}"
        )));
    })
}

/// The fixed 2-D sin-cos table (1, 1 + grid², E) of the MAE decoder, CLS row zero, column block
/// first.
pub fn sincos_table(grid: usize, dim: usize) -> Vec<f32> {
    let q = dim / 4;
    let w: Vec<f64> = (0..q)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64))
        .collect();
    let mut out = vec![0f32; dim];
    for t in 0..grid * grid {
        let (r, c) = ((t / grid) as f64, (t % grid) as f64);
        for (p, cos) in [(c, false), (c, true), (r, false), (r, true)] {
            out.extend(w.iter().map(|&wk| {
                if cos {
                    (p * wk).cos() as f32
                } else {
                    (p * wk).sin() as f32
                }
            }));
        }
    }
    out
}

/// The values of one tensor, row-major. `grid` is image size / patch size (for the sin-cos table).
pub fn tensor_values(seed: u64, key: &str, shape: &[usize], grid: usize) -> Result<Vec<f32>> {
    let n: usize = shape.iter().product();
    match rule(key, shape)? {
        Rule::Constant(v) => Ok(vec![v as f32; n]),
        Rule::SinCos => {
            let dim = *shape.last().unwrap_or(&0);
            let t = sincos_table(grid, dim);
            if t.len() != n {
                return Err(Error::Config(format!(
                    "`{key}` {shape:?} does not fit a {grid}x{grid} sin-cos table"
                )));
            }
            Ok(t)
        }
        Rule::Uniform { a, b } => {
            let mut state = seed ^ fnv1a64(key);
            Ok((0..n)
                .map(|_| (a + b * ((splitmix64(&mut state) >> 11) as f64 * (-53f64).exp2())) as f32)
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_sequence() {
        let mut s = 1234567u64;
        assert_eq!(splitmix64(&mut s), 6457827717110365317);
        assert_eq!(splitmix64(&mut s), 3203168211198807973);
    }

    #[test]
    fn worked_example_of_the_readme() {
        assert_eq!(fnv1a64("clip.visual.proj"), 0x150794067e9612bc);
        let v = tensor_values(0, "clip.visual.proj", &[128, 64], 14).unwrap();
        assert_eq!(v[0].to_bits(), 0x3de1e39a);
        assert_eq!(v[1].to_bits(), 0xbd812c9d);
        assert_eq!(
            tensor_values(0, "clip.logit_scale", &[], 14).unwrap()[0].to_bits(),
            0x407a5e96
        );
        assert!(rule("clip.mystery", &[3]).is_err());
    }
}
