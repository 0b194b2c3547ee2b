//! Patch labels and MAE masking against the official training forward
//! (`fixtures/parity/small/train.safetensors`): bit-exact.

use candle_core::{DType, Device};
use segclip_data::masking::random_masking;
use segclip_data::patch_labels::{patch_labels, PatchRule};
use segclip_data::superpixels::LabelMap;

fn fixture() -> std::collections::HashMap<String, candle_core::Tensor> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/parity/small/train.safetensors"
    );
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn ints(t: &candle_core::Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
}

#[test]
fn official_patch_labels_match_the_training_fixture() {
    let f = fixture();
    let sp = ints(&f["train.superpixels"]);
    let want = ints(&f["train.image_seg"]);
    for b in 0..2 {
        let labels: Vec<u32> = sp[b * 224 * 224..(b + 1) * 224 * 224]
            .iter()
            .map(|&v| v as u32)
            .collect();
        let map = LabelMap {
            height: 224,
            width: 224,
            count: *labels.iter().max().unwrap() as usize + 1,
            labels,
        };
        let ours = patch_labels(&map, [0.0, 0.0, 1.0, 1.0], 224, 16, PatchRule::OfficialMean);
        assert_eq!(ours, want[b * 196..(b + 1) * 196], "sample {b}");
    }
}

#[test]
fn masking_matches_the_training_fixture() {
    let f = fixture();
    let noise: Vec<f32> = f["train.mae_noise"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let keep = ints(&f["train.mae.ids_keep"]);
    let restore = ints(&f["train.mae.ids_restore"]);
    let mask: Vec<f32> = f["train.mae.mask"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for b in 0..2 {
        let m = random_masking(&noise[b * 197..(b + 1) * 197], 49);
        assert_eq!(
            m.ids_keep.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            keep[b * 49..(b + 1) * 49]
        );
        assert_eq!(
            m.ids_restore.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            restore[b * 197..(b + 1) * 197]
        );
        assert_eq!(
            m.mask.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            mask[b * 197..(b + 1) * 197]
        );
    }
}
