//! # segclip
//!
//! Open-vocabulary semantic segmentation with SegCLIP (Luo et al., ICML 2023) in Rust: give it an
//! image and any list of class names, get a label for every pixel. This crate composes the
//! workspace:
//!
//! - [`vit`] (`segclip-vit`): CLIP towers, tokenizer, weight loading;
//! - [`group`] (`segclip-group`): the semantic group module, the model, zero-shot decoding;
//! - [`losses`], [`data`], [`train`]: training (see their crates);
//! - [`io`]: image reading with limits and the label/overlay/JSON writers of `segclip segment`;
//! - [`parity`]: the numerical comparison with the official PyTorch code.
//!
//! `cargo run --release -- segment --image photo.jpg --classes "cat,dog" --weights segclip.bin`

pub use segclip_data as data;
pub use segclip_group as group;
pub use segclip_losses as losses;
pub use segclip_train as train;
pub use segclip_vit as vit;

pub mod bench;
pub mod io;
pub mod parity;
pub mod pipeline;
