//! Every training configuration shipped under `datasets/synth/` parses and validates, and its
//! model configuration loads: a renamed key or a broken file fails here, not an hour into a run.

use std::path::Path;

use segclip::group::SegClipConfig;
use segclip::train::TrainConfig;

#[test]
fn shipped_training_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/synth");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg =
            TrainConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(model) = &cfg.model.config {
            SegClipConfig::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join(model))
                .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), model.display()));
        }
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} configurations in {}", dir.display());
}
