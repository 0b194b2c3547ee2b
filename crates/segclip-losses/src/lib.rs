//! # segclip-losses
//!
//! SegCLIP's training objective (Luo et al., ICML 2023; spec section 2): the symmetric
//! image–text InfoNCE, the superpixel KL consistency loss on the hard assignment, and the
//! masked-patch reconstruction loss with its MAE decoder; [`TrainingModel::forward`] runs one
//! training forward with injected noise.

pub mod decoder;
mod error;
pub mod forward;
pub mod losses;
pub mod parity;

pub use decoder::MaeDecoder;
pub use error::{Error, Result};
pub use forward::{Batch, LossWeights, Losses, Noise, Parts, TrainingModel};
