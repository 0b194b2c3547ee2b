//! # segclip-vit
//!
//! The CLIP towers SegCLIP is built on (Radford et al., "Learning Transferable Visual Models From
//! Natural Language Supervision", 2021; SegCLIP, Luo et al., ICML 2023): the vision stem and head,
//! the pre-norm residual block with a packed `in_proj`, the causal text tower, the CLIP BPE
//! tokenizer, and checkpoint loading under official SegCLIP, OpenAI CLIP and Hugging Face names.
//!
//! ```no_run
//! # fn main() -> segclip_vit::Result<()> {
//! let tok = segclip_vit::Tokenizer::new(77)?;
//! assert_eq!(tok.encode("a photo of a dog.")?.ids, [49406, 320, 1125, 539, 320, 1929, 269, 49407]);
//! # Ok(()) }
//! ```
//!
//! The SegCLIP visual path (blocks, group module, max-pool) is assembled in `segclip-group`.

pub mod activation;
mod attention_op;
pub mod block;
mod config;
pub mod conv_stem;
mod cpu;
mod error;
pub mod fastmath;
pub mod interpolate;
pub mod linear;
pub mod norm;
pub mod packed_gemm;
pub mod seeded;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;

pub use block::{MultiHeadAttention, ResidualBlock};
pub use config::{TextConfig, VisionConfig};
pub use error::{Error, Result};
pub use text::TextTransformer;
pub use tokenizer::{Encoding, Tokenizer};
pub use vision::{VisionHead, VisionStem};
pub use weights::{KeyFormat, KeySpec, StateDict};

/// Named intermediate tensors recorded during a forward pass, under the parity fixtures' names
/// (`vision.after_ln_pre`, `group.soft_attn`, …). Passing `None` records nothing and costs
/// nothing.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub tensors: Vec<(String, candle_core::Tensor)>,
}

impl Trace {
    pub fn record(&mut self, name: &str, t: &candle_core::Tensor) {
        self.tensors.push((name.to_string(), t.clone()));
    }

    pub fn get(&self, name: &str) -> Option<&candle_core::Tensor> {
        self.tensors
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }
}
