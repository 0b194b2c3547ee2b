//! The one error type of `segclip-train`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Losses(#[from] segclip_losses::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] segclip_data::Error),
    #[error(transparent)]
    Group(#[from] segclip_group::Error),
    #[error(transparent)]
    Vit(#[from] segclip_vit::Error),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("training configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
