//! The one error type of `segclip-losses`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Group(#[from] segclip_group::Error),
    #[error(transparent)]
    Vit(#[from] segclip_vit::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The mixed-pair loss pairs samples 2k and 2k + 1.
    #[error(
        "the mixed-pair loss pairs samples 2k and 2k + 1, and got a (micro-)batch of {0}: \
         make train.batch / train.accumulation even"
    )]
    OddMixedBatch(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
