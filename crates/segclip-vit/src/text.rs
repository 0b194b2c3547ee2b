//! The CLIP text tower (spec section 1.5):
//!
//! ```text
//! x = token_embedding[ids] + positional_embedding[:T]
//! x = layers × CLIP block (causal mask)
//! text_emb = (ln_final(x) @ text_projection)[argmax(ids)]      # pooled at the end-of-text token
//! ```
//!
//! Attention is causal, so the end-of-text output never depends on later (padding) positions:
//! [`TextTransformer::encode`] runs only up to the longest prompt's end token, which gives the
//! same embedding as the full 77-token run for a fraction of the work.

use crate::norm::LayerNorm;
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{embedding, Embedding, VarBuilder};

use crate::block::{blocks, causal_mask, ln, ResidualBlock};
use crate::{Error, Result, TextConfig, Trace};

#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Embedding,
    positional_embedding: Tensor,
    pub resblocks: Vec<ResidualBlock>,
    ln_final: LayerNorm,
    text_projection: Tensor,
    cfg: TextConfig,
}

impl TextTransformer {
    /// `vb` points at the SegCLIP `clip.` prefix (keys `token_embedding.weight`,
    /// `positional_embedding`, `transformer.resblocks.{i}.*`, `ln_final.*`, `text_projection`).
    pub fn new(vb: VarBuilder, cfg: &TextConfig) -> Result<Self> {
        Ok(Self {
            token_embedding: embedding(cfg.vocab_size, cfg.width, vb.pp("token_embedding"))?,
            positional_embedding: vb
                .get((cfg.context_length, cfg.width), "positional_embedding")?,
            resblocks: blocks(
                vb.pp("transformer.resblocks"),
                cfg.layers,
                cfg.width,
                cfg.heads,
                cfg.ln_eps,
            )?,
            ln_final: ln(vb.pp("ln_final"), cfg.width, cfg.ln_eps)?,
            text_projection: vb.get((cfg.width, cfg.embed_dim), "text_projection")?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.positional_embedding.device()
    }

    /// Embeddings (K, D) of token-id rows `ids` (K, T), T ≤ context length, each row holding its
    /// end-of-text token (the largest id) somewhere; nothing is normalised. All T positions run.
    pub fn forward(&self, ids: &Tensor, mut trace: Option<&mut Trace>) -> Result<Tensor> {
        let (k, t) = ids.dims2()?;
        if t > self.cfg.context_length {
            return Err(Error::Text(format!(
                "{t} tokens exceed the context of {}",
                self.cfg.context_length
            )));
        }
        let ids = ids.to_dtype(DType::U32)?;
        let eot: Vec<u32> = ids.argmax(1)?.to_vec1()?;
        let mut x = self
            .token_embedding
            .forward(&ids)?
            .broadcast_add(&self.positional_embedding.i(..t)?)?;
        let mask = causal_mask(t, ids.device())?;
        for (i, block) in self.resblocks.iter().enumerate() {
            x = block.forward(&x, Some(&mask))?;
            if i == 0 {
                if let Some(tr) = trace.as_deref_mut() {
                    tr.record("text.after_block0", &x);
                }
            }
        }
        let rows: Vec<u32> = eot
            .iter()
            .enumerate()
            .map(|(r, &p)| r as u32 * t as u32 + p)
            .collect();
        let rows = Tensor::from_vec(rows, k, ids.device())?;
        let pooled = x.reshape((k * t, self.cfg.width))?.index_select(&rows, 0)?;
        Ok(self
            .ln_final
            .forward(&pooled)?
            .matmul(&self.text_projection)?)
    }

    /// Embeddings (K, D) of tokenised prompts (each `[SOT, …, EOT]`, unpadded), computed only up
    /// to the longest prompt's end token.
    pub fn encode(&self, prompts: &[Vec<u32>]) -> Result<Tensor> {
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if t == 0 {
            return Err(Error::Text("no prompt to encode".into()));
        }
        let mut ids = vec![0u32; prompts.len() * t];
        for (row, p) in prompts.iter().enumerate() {
            ids[row * t..row * t + p.len()].copy_from_slice(p);
        }
        let ids = Tensor::from_vec(ids, (prompts.len(), t), self.device())?;
        self.forward(&ids, None)
    }
}
