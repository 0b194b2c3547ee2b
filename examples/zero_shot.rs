//! Zero-shot segmentation of one image into any classes: the same as `segclip segment`.
//!
//! ```text
//! cargo run --release --example zero_shot -- IMAGE "cat,dog,sofa" WEIGHTS [OUT_DIR]
//! ```
//!
//! WEIGHTS is a SegCLIP checkpoint (the official `segclip.bin`, a `.safetensors` file, or a
//! Hugging Face hub id). The outputs are `<stem>.labels.png`, `<stem>.overlay.png` and
//! `<stem>.json` in OUT_DIR (default `out/`).

use std::path::PathBuf;

use segclip::group::zeroshot::ClassList;
use segclip::pipeline::{no_weights_error, Segmenter};

fn main() {
    if let Err(e) = run() {
        segclip::pipeline::exit_with(e);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, classes, weights, rest @ ..] = args.as_slice() else {
        eprintln!("usage: zero_shot IMAGE \"class1,class2,...\" WEIGHTS [OUT_DIR]");
        return Err(no_weights_error());
    };
    let out = PathBuf::from(rest.first().map(String::as_str).unwrap_or("out"));

    let classes = ClassList::parse_arg(classes)?;
    let mut segmenter = Segmenter::load(weights, &candle_core::Device::Cpu)?;
    let (seg, files) = segmenter.segment_file(
        image.as_ref(),
        &classes,
        &out,
        segclip::io::DEFAULT_MAX_PIXELS,
        None,
        &mut |_, _| {},
    )?;

    for (label, share) in seg
        .fractions()
        .iter()
        .enumerate()
        .filter(|(_, f)| **f > 0.0)
    {
        let name = if label == 0 {
            "background"
        } else {
            classes.classes[label - 1].name()
        };
        println!("{name:<20} {:5.1}%", share * 100.0);
    }
    println!(
        "wrote {} and {}",
        files.overlay.display(),
        files.labels.display()
    );
    Ok(())
}
