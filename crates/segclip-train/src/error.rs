//! The one error type of `segclip-train`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Losses(#[from] segclip_losses::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
