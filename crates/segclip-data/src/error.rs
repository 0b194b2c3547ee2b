//! The one error type of `segclip-data`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset folder is not laid out as expected.
    #[error("{dataset}: expected {what} at {path}; is this the {dataset} root folder (layout in the docs)?")]
    Layout {
        dataset: String,
        what: String,
        path: String,
    },
    /// A file of the dataset could not be read or parsed.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// An image could not be decoded.
    #[error("{path}: cannot decode the image: {reason}")]
    Image { path: String, reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn file_err(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}
