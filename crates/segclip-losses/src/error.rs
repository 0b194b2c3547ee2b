//! The one error type of `segclip-losses`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Group(#[from] segclip_group::Error),
    #[error(transparent)]
    Vit(#[from] segclip_vit::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
