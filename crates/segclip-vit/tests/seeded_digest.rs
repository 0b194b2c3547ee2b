//! The seeded generator reproduces the parity weights bit for bit: every tensor's SHA-256 equals
//! the one in `fixtures/parity/small/weights_digest.json`.

use sha2::{Digest, Sha256};

#[test]
fn seeded_weights_match_the_reference_digest() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/parity/small/weights_digest.json"
    );
    let digest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tensors = digest["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), 415);
    for (key, d) in tensors {
        let shape: Vec<usize> = d["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let values = segclip_vit::seeded::tensor_values(0, key, &shape, 14).unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let hex: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, d["sha256"].as_str().unwrap(), "{key}");
    }
}
