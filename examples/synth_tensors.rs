//! Synthetic captioned training scenes as raw arrays, for the GPU pretraining of the benchmark's
//! CLIP (`benches/pretrain_synth_clip.py`, docs/benchmarks.md): scene `i` of stream `SEED`
//! (training split: the held-out combinations never appear) as `images.u8` (N, S, S, 3) RGB
//! bytes, `labels.u8` (N, S, S) class per pixel (`synth::class_id`, 0 = background) and
//! `tokens.i32` (N, CONTEXT) CLIP token ids, zero-padded, plus `meta.json`. Scenes are
//! drawn in parallel (rayon); the files are the same for any thread count.
//!
//! ```text
//! cargo run --release --example synth_tensors -- OUT_DIR COUNT SEED [SIZE=112] [CONTEXT=32]
//! ```

use std::io::Write;

use rayon::prelude::*;
use segclip::data::synth::{self, Split};
use segclip::vit::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: OUT_DIR COUNT SEED [SIZE=112] [CONTEXT=32]";
    let arg = |i: usize| args.get(i).ok_or_else(|| anyhow::anyhow!(usage));
    let out = std::path::PathBuf::from(arg(0)?);
    let count: usize = arg(1)?.parse()?;
    let seed: u64 = arg(2)?.parse()?;
    let size: usize = args.get(3).map_or(Ok(112), |s| s.parse())?;
    let context: usize = args.get(4).map_or(Ok(32), |s| s.parse())?;
    let tokenizer = Tokenizer::new(context)?;
    std::fs::create_dir_all(&out)?;

    let mut images = std::io::BufWriter::new(std::fs::File::create(out.join("images.u8"))?);
    let mut tokens = std::io::BufWriter::new(std::fs::File::create(out.join("tokens.i32"))?);
    let mut labels = std::io::BufWriter::new(std::fs::File::create(out.join("labels.u8"))?);
    let chunk = 4096;
    for start in (0..count).step_by(chunk) {
        let end = (start + chunk).min(count);
        let scenes: Vec<(Vec<u8>, Vec<u32>, Vec<u8>)> = (start..end)
            .into_par_iter()
            .map(|i| {
                let s = synth::scene(seed, i as u64, size, Split::Train);
                let ids = tokenizer.encode(&s.caption)?.padded(context);
                Ok((s.image.data, ids, s.labels))
            })
            .collect::<anyhow::Result<_>>()?;
        for (px, ids, lab) in scenes {
            images.write_all(&px)?;
            labels.write_all(&lab)?;
            for id in ids {
                tokens.write_all(&(id as i32).to_le_bytes())?;
            }
        }
    }
    images.flush()?;
    tokens.flush()?;
    labels.flush()?;
    let meta = serde_json::json!({"count": count, "size": size, "context": context, "seed": seed});
    std::fs::write(out.join("meta.json"), meta.to_string())?;
    println!("{count} scenes of {size}² px → {}", out.display());
    Ok(())
}
