//! Zero-shot segmentation of one image into any classes: the same as `segclip segment`.
//!
//! ```text
//! cargo run --release --example zero_shot                      # the embedded default, offline
//! cargo run --release --example zero_shot -- IMAGE "cat,dog,sofa" WEIGHTS [OUT_DIR]
//! ```
//!
//! With no arguments it segments a bundled synthetic scene with the small model trained on our
//! synthetic captioned scenes (`datasets/default/`), into the benchmark's 20 colour–shape
//! classes. WEIGHTS is any SegCLIP checkpoint (the official `segclip.bin`, a `.safetensors`
//! file, or a Hugging Face hub id). Outputs: `<stem>.labels.png`, `<stem>.overlay.png` and
//! `<stem>.json` in OUT_DIR (default `out/`).

use std::path::PathBuf;

use segclip::group::zeroshot::ClassList;
use segclip::pipeline::Segmenter;

const DEFAULT_WEIGHTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/datasets/default/segclip-synth.safetensors"
);
const DEFAULT_IMAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/datasets/samples/synth-scene-0.png"
);

fn main() {
    segclip::pipeline::init_cpu_threads();
    if let Err(e) = run() {
        segclip::pipeline::exit_with(e);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let synth_classes = segclip::data::synth::class_names()[1..].join(",");
    let (image, classes, weights, out) = match args.as_slice() {
        [] => (
            DEFAULT_IMAGE.to_string(),
            synth_classes,
            DEFAULT_WEIGHTS.to_string(),
            "out".to_string(),
        ),
        [image, classes, weights, rest @ ..] => (
            image.clone(),
            classes.clone(),
            weights.clone(),
            rest.first().cloned().unwrap_or_else(|| "out".into()),
        ),
        _ => anyhow::bail!("usage: zero_shot [IMAGE \"class1,class2,...\" WEIGHTS [OUT_DIR]]"),
    };

    let classes = ClassList::parse_arg(&classes)?;
    let mut segmenter = Segmenter::load(&weights, &candle_core::Device::Cpu)?;
    let (seg, files) = segmenter.segment_file(
        image.as_ref(),
        &classes,
        &PathBuf::from(out),
        segclip::io::DEFAULT_MAX_PIXELS,
        None,
        &mut |_, _| {},
    )?;

    println!("{image}:");
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
        println!("  {name:<20} {:5.1}%", share * 100.0);
    }
    println!(
        "wrote {}, {} and {}",
        files.overlay.display(),
        files.labels.display(),
        files.json.display()
    );
    Ok(())
}
