//! The SegCLIP model configuration: CLIP tower sizes, where the group module sits, the group
//! module and the (training-only) MAE decoder.

use std::path::Path;

use segclip_vit::{KeySpec, TextConfig, VisionConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The semantic group module (spec section 1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// L, the number of learnable centers (8).
    pub num_centers: usize,
    /// Cross-attention blocks the centers run over the patches (2).
    pub cross_layers: usize,
    pub cross_heads: usize,
    /// Groups of the 1×1 K/V convolutions (12 at width 768: 64-wide blocks).
    pub conv_groups: usize,
    /// Gumbel-softmax temperature in training (0.9).
    pub gumbel_tau: f64,
}

/// The MAE decoder of the reconstruction loss (spec section 2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub ln_eps: f64,
}

/// The whole model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegClipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// Joint embedding dimension D.
    pub embed_dim: usize,
    /// Visual blocks before the group module (`first_stage_layer`, 10).
    pub layers0: usize,
    /// Visual blocks after it, on the region tokens (2).
    pub layers2: usize,
    /// Blocks of the MAE branch after the reconstruct layer (2, training only).
    pub layers_mae2: usize,
    pub group: GroupConfig,
    pub decoder: DecoderConfig,
    /// Upper bound of `exp(logit_scale)` (100).
    pub logit_scale_max: f64,
}

/// The fields of a parity `config.json` this crate reads.
#[derive(Deserialize)]
struct ParityJson {
    image_size: usize,
    patch_size: usize,
    vision_width: usize,
    vision_heads: usize,
    layers0: usize,
    layers2: usize,
    layers_mae2: usize,
    group_num: usize,
    cross_layer: usize,
    cross_heads: usize,
    group_conv_groups: usize,
    gumbel_tau: f64,
    embed_dim: usize,
    text_width: usize,
    text_layers: usize,
    text_heads: usize,
    vocab_size: usize,
    context_length: usize,
    decoder_embed_dim: usize,
    decoder_depth: usize,
    decoder_heads: usize,
    decoder_ln_eps: f64,
    ln_eps: f64,
    logit_scale_max_exp: f64,
}

impl SegClipConfig {
    /// SegCLIP ViT-B/16 as released (spec section 1.1; `checkpoints/segclip.bin`).
    pub fn vit_b16() -> Self {
        Self {
            vision: VisionConfig::vit_b16(),
            text: TextConfig::vit_b16(),
            embed_dim: 512,
            layers0: 10,
            layers2: 2,
            layers_mae2: 2,
            group: GroupConfig {
                num_centers: 8,
                cross_layers: 2,
                cross_heads: 12,
                conv_groups: 12,
                gumbel_tau: 0.9,
            },
            decoder: DecoderConfig {
                dim: 384,
                depth: 3,
                heads: 8,
                ln_eps: 1e-6,
            },
            logit_scale_max: 100.0,
        }
    }

    /// A configuration written as the parity fixtures' `config.json`.
    pub fn from_parity_json(text: &str) -> Result<Self> {
        let p: ParityJson =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let cfg = Self {
            vision: VisionConfig {
                image_size: p.image_size,
                patch_size: p.patch_size,
                width: p.vision_width,
                heads: p.vision_heads,
                ln_eps: p.ln_eps,
                conv_stem: Vec::new(),
            },
            text: TextConfig {
                vocab_size: p.vocab_size,
                context_length: p.context_length,
                width: p.text_width,
                layers: p.text_layers,
                heads: p.text_heads,
                embed_dim: p.embed_dim,
                ln_eps: p.ln_eps,
            },
            embed_dim: p.embed_dim,
            layers0: p.layers0,
            layers2: p.layers2,
            layers_mae2: p.layers_mae2,
            group: GroupConfig {
                num_centers: p.group_num,
                cross_layers: p.cross_layer,
                cross_heads: p.cross_heads,
                conv_groups: p.group_conv_groups,
                gumbel_tau: p.gumbel_tau,
            },
            decoder: DecoderConfig {
                dim: p.decoder_embed_dim,
                depth: p.decoder_depth,
                heads: p.decoder_heads,
                ln_eps: p.decoder_ln_eps,
            },
            logit_scale_max: p.logit_scale_max_exp,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read a configuration file: our own serialisation or a parity `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        if let Ok(cfg) = serde_json::from_str::<Self>(&text) {
            cfg.validate()?;
            return Ok(cfg);
        }
        Self::from_parity_json(&text)
    }

    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        let bad = |m: String| Err(Error::Config(m));
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!(
                "image size {} is not a multiple of patch size {}",
                v.image_size, v.patch_size
            ));
        }
        if !v.conv_stem.is_empty() && 2usize << v.conv_stem.len() != v.patch_size {
            return bad(format!(
                "a convolutional stem with {} hidden layers has stride {}, not the patch size {}",
                v.conv_stem.len(),
                2usize << v.conv_stem.len(),
                v.patch_size
            ));
        }
        for (name, w, h) in [
            ("vision", v.width, v.heads),
            ("cross-attention", v.width, self.group.cross_heads),
            ("text", self.text.width, self.text.heads),
            ("K/V conv groups", v.width, self.group.conv_groups),
            ("decoder", self.decoder.dim, self.decoder.heads),
        ] {
            if h == 0 || w % h != 0 {
                return bad(format!("{name} width {w} is not divisible by {h}"));
            }
        }
        if self.group.num_centers == 0 {
            return bad("the group module needs at least one center".into());
        }
        Ok(())
    }

    /// Every tensor of the official state dict, (key, shape), in the official order; the second
    /// list holds the training-only tensors (`layers_mae2`, `reconstruct_layer2`,
    /// `vis_mae_decoder`), which inference does not need.
    pub fn keys(&self) -> (Vec<KeySpec>, Vec<KeySpec>) {
        let (c, t, d) = (self.vision.width, self.text.width, self.embed_dim);
        let g = self.vision.grid();
        let mut req: Vec<KeySpec> = Vec::new();
        push(
            &mut req,
            "clip.positional_embedding".into(),
            &[self.text.context_length, t],
        );
        push(&mut req, "clip.text_projection".into(), &[t, d]);
        push(&mut req, "clip.logit_scale".into(), &[]);
        push(&mut req, "clip.visual.class_embedding".into(), &[c]);
        push(
            &mut req,
            "clip.visual.positional_embedding".into(),
            &[g * g + 1, c],
        );
        push(&mut req, "clip.visual.proj".into(), &[c, d]);
        if self.vision.conv_stem.is_empty() {
            push(
                &mut req,
                "clip.visual.conv1.weight".into(),
                &[c, 3, self.vision.patch_size, self.vision.patch_size],
            );
        } else {
            let convs = segclip_vit::conv_stem::conv_channels(&self.vision);
            for (i, &(ci, co)) in convs.iter().enumerate() {
                let k = format!("clip.visual.conv_stem.{i}");
                push(&mut req, format!("{k}.weight"), &[co, ci, 3, 3]);
                if i + 1 < convs.len() {
                    push(&mut req, format!("{k}.bias"), &[co]);
                }
            }
        }
        push(&mut req, "clip.visual.ln_pre.weight".into(), &[c]);
        push(&mut req, "clip.visual.ln_pre.bias".into(), &[c]);
        for i in 0..self.layers0 {
            block_keys(&mut req, &format!("clip.visual.transformer.layers0.{i}"), c);
        }
        let s = "clip.visual.transformer.semantic_layer2";
        push(
            &mut req,
            format!("{s}.semantic_center"),
            &[self.group.num_centers, c],
        );
        push(&mut req, format!("{s}.norm.weight"), &[c]);
        push(&mut req, format!("{s}.norm.bias"), &[c]);
        for i in 0..self.group.cross_layers {
            let p = format!("{s}.cross_att.{i}");
            push(&mut req, format!("{p}.attn.in_proj_weight"), &[3 * c, c]);
            push(&mut req, format!("{p}.attn.in_proj_bias"), &[3 * c]);
            push(&mut req, format!("{p}.attn.out_proj.weight"), &[c, c]);
            push(&mut req, format!("{p}.attn.out_proj.bias"), &[c]);
            for n in ["ln_x", "ln_k", "ln_2"] {
                push(&mut req, format!("{p}.{n}.weight"), &[c]);
                push(&mut req, format!("{p}.{n}.bias"), &[c]);
            }
            push(&mut req, format!("{p}.mlp.c_fc.weight"), &[4 * c, c]);
            push(&mut req, format!("{p}.mlp.c_fc.bias"), &[4 * c]);
            push(&mut req, format!("{p}.mlp.c_proj.weight"), &[c, 4 * c]);
            push(&mut req, format!("{p}.mlp.c_proj.bias"), &[c]);
        }
        let cg = c / self.group.conv_groups;
        push(&mut req, format!("{s}.cross_ln.weight"), &[c]);
        push(&mut req, format!("{s}.cross_ln.bias"), &[c]);
        push(&mut req, format!("{s}.k_conv.weight"), &[c, cg, 1]);
        push(&mut req, format!("{s}.k_ln.weight"), &[c]);
        push(&mut req, format!("{s}.k_ln.bias"), &[c]);
        push(&mut req, format!("{s}.v_conv.weight"), &[c, cg, 1]);
        push(&mut req, format!("{s}.proj_o.ln.weight"), &[c]);
        push(&mut req, format!("{s}.proj_o.ln.bias"), &[c]);
        push(&mut req, format!("{s}.proj_o.mlp.fc1.weight"), &[4 * c, c]);
        push(&mut req, format!("{s}.proj_o.mlp.fc1.bias"), &[4 * c]);
        push(&mut req, format!("{s}.proj_o.mlp.fc2.weight"), &[c, 4 * c]);
        push(&mut req, format!("{s}.proj_o.mlp.fc2.bias"), &[c]);
        for i in 0..self.layers2 {
            block_keys(&mut req, &format!("clip.visual.transformer.layers2.{i}"), c);
        }
        push(&mut req, "clip.visual.ln_post.weight".into(), &[c]);
        push(&mut req, "clip.visual.ln_post.bias".into(), &[c]);
        push(
            &mut req,
            "clip.token_embedding.weight".into(),
            &[self.text.vocab_size, t],
        );
        for i in 0..self.text.layers {
            block_keys(&mut req, &format!("clip.transformer.resblocks.{i}"), t);
        }
        push(&mut req, "clip.ln_final.weight".into(), &[t]);
        push(&mut req, "clip.ln_final.bias".into(), &[t]);

        let mut opt: Vec<KeySpec> = Vec::new();
        for i in 0..self.layers_mae2 {
            block_keys(
                &mut opt,
                &format!("clip.visual.transformer.layers_mae2.{i}"),
                c,
            );
        }
        let l = self.group.num_centers;
        push(
            &mut opt,
            "clip.visual.transformer.reconstruct_layer2.rec_proj_a.a_fc.weight".into(),
            &[l, l],
        );
        push(
            &mut opt,
            "clip.visual.transformer.reconstruct_layer2.rec_proj_a.a_fc.bias".into(),
            &[l],
        );
        let (e, p) = (self.decoder.dim, self.vision.patch_size);
        let m = "vis_mae_decoder";
        push(&mut opt, format!("{m}.mask_token"), &[1, 1, e]);
        push(
            &mut opt,
            format!("{m}.decoder_pos_embed"),
            &[1, g * g + 1, e],
        );
        push(&mut opt, format!("{m}.decoder_embed.weight"), &[e, c]);
        push(&mut opt, format!("{m}.decoder_embed.bias"), &[e]);
        for i in 0..self.decoder.depth {
            let b = format!("{m}.decoder_blocks.{i}");
            push(&mut opt, format!("{b}.norm1.weight"), &[e]);
            push(&mut opt, format!("{b}.norm1.bias"), &[e]);
            push(&mut opt, format!("{b}.attn.qkv.weight"), &[3 * e, e]);
            push(&mut opt, format!("{b}.attn.qkv.bias"), &[3 * e]);
            push(&mut opt, format!("{b}.attn.proj.weight"), &[e, e]);
            push(&mut opt, format!("{b}.attn.proj.bias"), &[e]);
            push(&mut opt, format!("{b}.norm2.weight"), &[e]);
            push(&mut opt, format!("{b}.norm2.bias"), &[e]);
            push(&mut opt, format!("{b}.mlp.fc1.weight"), &[4 * e, e]);
            push(&mut opt, format!("{b}.mlp.fc1.bias"), &[4 * e]);
            push(&mut opt, format!("{b}.mlp.fc2.weight"), &[e, 4 * e]);
            push(&mut opt, format!("{b}.mlp.fc2.bias"), &[e]);
        }
        push(&mut opt, format!("{m}.decoder_norm.weight"), &[e]);
        push(&mut opt, format!("{m}.decoder_norm.bias"), &[e]);
        push(
            &mut opt,
            format!("{m}.decoder_pred.weight"),
            &[p * p * 3, e],
        );
        push(&mut opt, format!("{m}.decoder_pred.bias"), &[p * p * 3]);
        (req, opt)
    }
}

fn push(v: &mut Vec<KeySpec>, key: String, shape: &[usize]) {
    v.push((key, shape.to_vec()));
}

/// The 12 tensors of one CLIP residual block of width `w` under prefix `p`.
fn block_keys(v: &mut Vec<KeySpec>, p: &str, w: usize) {
    push(v, format!("{p}.attn.in_proj_weight"), &[3 * w, w]);
    push(v, format!("{p}.attn.in_proj_bias"), &[3 * w]);
    push(v, format!("{p}.attn.out_proj.weight"), &[w, w]);
    push(v, format!("{p}.attn.out_proj.bias"), &[w]);
    push(v, format!("{p}.ln_1.weight"), &[w]);
    push(v, format!("{p}.ln_1.bias"), &[w]);
    push(v, format!("{p}.mlp.c_fc.weight"), &[4 * w, w]);
    push(v, format!("{p}.mlp.c_fc.bias"), &[4 * w]);
    push(v, format!("{p}.mlp.c_proj.weight"), &[w, 4 * w]);
    push(v, format!("{p}.mlp.c_proj.bias"), &[w]);
    push(v, format!("{p}.ln_2.weight"), &[w]);
    push(v, format!("{p}.ln_2.bias"), &[w]);
}

impl SegClipConfig {
    /// Read the configuration off a checkpoint's shapes, as the official code builds its model
    /// from the CLIP state dict: widths, patch and grid from the stem, block counts from the keys,
    /// heads = width / 64 (CLIP's rule), K/V conv groups from `k_conv`, centers from
    /// `semantic_center`. The Gumbel temperature and decoder heads are the official constants.
    pub fn infer(sd: &segclip_vit::StateDict) -> Result<Self> {
        let get = |k: &str| -> Result<Vec<usize>> {
            sd.tensors.get(k).map(|t| t.dims().to_vec()).ok_or_else(|| {
                Error::Config(if k.contains("semantic_layer2") {
                    format!(
                        "{} has no semantic group module (`{k}`): it is a plain CLIP model, not SegCLIP; \
                         segment with a SegCLIP checkpoint (segclip.bin) or train one from it with `segclip train`",
                        sd.source
                    )
                } else {
                    format!("{} lacks `{k}`, so it is not a SegCLIP checkpoint", sd.source)
                })
            })
        };
        let count = |prefix: &str| -> usize {
            (0..)
                .take_while(|i| {
                    sd.tensors
                        .contains_key(&format!("{prefix}.{i}.ln_1.weight"))
                })
                .count()
        };
        let dims2 = |k: &str| -> Result<(usize, usize)> {
            match get(k)?.as_slice() {
                [a, b] => Ok((*a, *b)),
                s => Err(Error::Config(format!(
                    "`{k}` in {} has shape {s:?}, expected 2 dimensions",
                    sd.source
                ))),
            }
        };
        get("clip.visual.transformer.semantic_layer2.semantic_center")?;
        // A convolutional stem: `conv_stem.{i}.weight` (c_out, c_in, 3, 3), i = 0, 1, …
        let stem: Vec<usize> = (0..)
            .map_while(|i| {
                sd.tensors
                    .get(&format!("clip.visual.conv_stem.{i}.weight"))
                    .map(|t| t.dims()[0])
            })
            .collect();
        let (c, p, conv_stem) = if let Some((&c, hidden)) = stem.split_last() {
            (c, 1usize << stem.len(), hidden.to_vec())
        } else {
            let conv = get("clip.visual.conv1.weight")?;
            let [c, 3, p, p2] = conv.as_slice() else {
                return Err(Error::Config(format!(
                    "`clip.visual.conv1.weight` in {} has shape {conv:?}, expected (C, 3, p, p)",
                    sd.source
                )));
            };
            if p != p2 {
                return Err(Error::Config(format!(
                    "non-square patches {p}x{p2} are not supported"
                )));
            }
            (*c, *p, Vec::new())
        };
        let (rows, _) = dims2("clip.visual.positional_embedding")?;
        let grid = ((rows.saturating_sub(1)) as f64).sqrt().round() as usize;
        if grid * grid + 1 != rows {
            return Err(Error::Config(format!(
                "a visual positional table of {rows} rows is not a square grid plus CLS"
            )));
        }
        let (context, t) = dims2("clip.positional_embedding")?;
        let (vocab, _) = dims2("clip.token_embedding.weight")?;
        let (_, d) = dims2("clip.text_projection")?;
        let (l, _) = dims2("clip.visual.transformer.semantic_layer2.semantic_center")?;
        let kc = get("clip.visual.transformer.semantic_layer2.k_conv.weight")?;
        let groups = c / kc.get(1).copied().filter(|&v| v > 0).unwrap_or(c);
        let decoder_dim = sd
            .tensors
            .get("vis_mae_decoder.decoder_embed.weight")
            .map(|t| t.dims()[0])
            .unwrap_or(c / 2);
        let heads = |w: usize| (w / 64).max(1);
        let cfg = Self {
            vision: VisionConfig {
                image_size: grid * p,
                patch_size: p,
                width: c,
                heads: heads(c),
                ln_eps: 1e-5,
                conv_stem,
            },
            text: TextConfig {
                vocab_size: vocab,
                context_length: context,
                width: t,
                layers: count("clip.transformer.resblocks"),
                heads: heads(t),
                embed_dim: d,
                ln_eps: 1e-5,
            },
            embed_dim: d,
            layers0: count("clip.visual.transformer.layers0"),
            layers2: count("clip.visual.transformer.layers2"),
            // Inference checkpoints may omit the training-only MAE branch: keep the official 2.
            layers_mae2: match count("clip.visual.transformer.layers_mae2") {
                0 => 2,
                n => n,
            },
            group: GroupConfig {
                num_centers: l,
                cross_layers: (0..)
                    .take_while(|i| {
                        sd.tensors.contains_key(&format!(
                            "clip.visual.transformer.semantic_layer2.cross_att.{i}.ln_x.weight"
                        ))
                    })
                    .count(),
                cross_heads: heads(c),
                conv_groups: groups,
                gumbel_tau: 0.9,
            },
            decoder: DecoderConfig {
                dim: decoder_dim,
                depth: (0..)
                    .take_while(|i| {
                        sd.tensors.contains_key(&format!(
                            "vis_mae_decoder.decoder_blocks.{i}.norm1.weight"
                        ))
                    })
                    .count()
                    .max(1),
                heads: 8,
                ln_eps: 1e-6,
            },
            logit_scale_max: 100.0,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
