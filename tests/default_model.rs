//! The README's first command: the embedded default model segments a bundled sample offline.

use segclip::group::zeroshot::ClassList;
use segclip::pipeline::Segmenter;

#[test]
fn embedded_default_segments_a_sample() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut s = Segmenter::load(
        &format!("{root}/datasets/default/segclip-synth.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(s.model.config().vision.image_size, 112);
    // Its file records the decode it was calibrated with (docs/deviations.md items 16–19).
    assert_eq!(s.options.decode.bg_thresh, Some(0.36));
    assert_eq!(
        s.options.decode.bg_score,
        segclip::group::zeroshot::BgScore::Cosine
    );
    assert_eq!(s.options.decode.refine, 10);
    assert_eq!(s.options.decode.claim, Some(0.0));
    assert!(s.options.decode.reencode);
    let classes =
        ClassList::parse_arg(&segclip::data::synth::class_names()[1..].join(",")).unwrap();
    let out = std::env::temp_dir().join(format!("segclip-default-{}", std::process::id()));
    let (seg, files) = s
        .segment_file(
            format!("{root}/datasets/samples/synth-scene-0.png").as_ref(),
            &classes,
            &out,
            segclip::io::DEFAULT_MAX_PIXELS,
            None,
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!((seg.width, seg.height), (112, 112));
    // Rescaled and cropped at the model's own input size, not ViT-B/16's 224.
    assert_eq!(seg.model_size, (112, 112));
    assert_eq!(seg.windows.len(), 1);
    assert!((seg.fractions().iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(files.overlay.exists() && files.labels.exists() && files.json.exists());
    std::fs::remove_dir_all(out).ok();
}
