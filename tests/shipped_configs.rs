//! Every training configuration shipped under `datasets/synth/` parses and validates, and its
//! model configuration loads and its initial weights are in the repository: a renamed key, a broken
//! file or a CLIP that was never committed fails here, not an hour into a run.

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
        if let Some(init) = &cfg.model.init {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(init);
            assert!(
                file.is_file(),
                "{}: its init {init} is not in the repository",
                path.display()
            );
        }
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} configurations in {}", dir.display());
}
