//! Synthetic captioned training scenes as raw arrays, for the GPU pretraining of the benchmark's
//! CLIP (`benches/pretrain_synth_clip.py`, docs/benchmarks.md): scene `i` of stream `SEED`
//! (training split: the held-out combinations never appear) as `images.u8` (N, S, S, 3) RGB
//! bytes, `labels.u8` (N, S, S) class per pixel (`synth::class_id`, 0 = background),
//! `tokens.i32` (N, CONTEXT) CLIP token ids of the caption, zero-padded, `tokens_nocolour.i32`
//! the same caption with its colour words dropped ("a red circle" → "a circle"), plus
//! `meta.json`. Scenes are
//! drawn in parallel (rayon); the files are the same for any thread count.
//!
//! ```text
//! cargo run --release --example synth_tensors -- OUT_DIR COUNT SEED [SIZE=112] [CONTEXT=32] [SPLIT=train|pretrain|pretrain-wide]
//! ```

use std::io::Write;

use rayon::prelude::*;
use segclip::data::synth::{self, Split};
use segclip::vit::tokenizer::Tokenizer;

/// One scene's rows of the four files.
struct Rows {
    pixels: Vec<u8>,
    tokens: Vec<u32>,
    tokens_nocolour: Vec<u32>,
    labels: Vec<u8>,
}

fn write_ids(w: &mut impl Write, ids: &[u32]) -> std::io::Result<()> {
    ids.iter()
        .try_for_each(|&id| w.write_all(&(id as i32).to_le_bytes()))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: OUT_DIR COUNT SEED [SIZE=112] [CONTEXT=32] [SPLIT=train|pretrain|pretrain-wide]";
    let arg = |i: usize| args.get(i).ok_or_else(|| anyhow::anyhow!(usage));
    let out = std::path::PathBuf::from(arg(0)?);
    let count: usize = arg(1)?.parse()?;
    let seed: u64 = arg(2)?.parse()?;
    let size: usize = args.get(3).map_or(Ok(112), |s| s.parse())?;
    let context: usize = args.get(4).map_or(Ok(32), |s| s.parse())?;
    let split = match args.get(5).map(String::as_str) {
        None | Some("train") => Split::Train,
        Some("pretrain") => Split::Pretrain,
        Some("pretrain-wide") => Split::PretrainWide,
        Some(other) => anyhow::bail!("unknown split {other:?}; {usage}"),
    };
    let tokenizer = Tokenizer::new(context)?;
    std::fs::create_dir_all(&out)?;

    let mut images = std::io::BufWriter::new(std::fs::File::create(out.join("images.u8"))?);
    let mut tokens = std::io::BufWriter::new(std::fs::File::create(out.join("tokens.i32"))?);
    let mut labels = std::io::BufWriter::new(std::fs::File::create(out.join("labels.u8"))?);
    let mut plain =
        std::io::BufWriter::new(std::fs::File::create(out.join("tokens_nocolour.i32"))?);
    let colour_words: Vec<&str> = (synth::COLOURS.iter().chain(&synth::EXTRA_COLOURS))
        .flat_map(|c| c.2.iter().copied())
        .collect();
    let chunk = 4096;
    for start in (0..count).step_by(chunk) {
        let end = (start + chunk).min(count);
        let scenes: Vec<Rows> = (start..end)
            .into_par_iter()
            .map(|i| {
                let s = synth::scene(seed, i as u64, size, split);
                let no_colour: Vec<&str> = s
                    .caption
                    .split(' ')
                    .filter(|w| !colour_words.contains(&w.trim_end_matches(',')))
                    .collect();
                Ok(Rows {
                    tokens: tokenizer.encode(&s.caption)?.padded(context),
                    tokens_nocolour: tokenizer.encode(&no_colour.join(" "))?.padded(context),
                    pixels: s.image.data,
                    labels: s.labels,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        for r in scenes {
            images.write_all(&r.pixels)?;
            labels.write_all(&r.labels)?;
            write_ids(&mut tokens, &r.tokens)?;
            write_ids(&mut plain, &r.tokens_nocolour)?;
        }
    }
    images.flush()?;
    tokens.flush()?;
    labels.flush()?;
    plain.flush()?;
    let split = args.get(5).map_or("train", String::as_str);
    let meta = serde_json::json!({"count": count, "size": size, "context": context, "seed": seed, "split": split});
    std::fs::write(out.join("meta.json"), meta.to_string())?;
    println!("{count} scenes of {size}² px → {}", out.display());
    Ok(())
}
