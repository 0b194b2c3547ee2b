//! The one error type of `segclip-group`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Vit(#[from] segclip_vit::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A class list that cannot be used.
    #[error("class list: {0}")]
    Classes(String),

    /// Invalid options or inputs to zero-shot segmentation.
    #[error("{0}")]
    Input(String),

    #[error("invalid SegCLIP configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
