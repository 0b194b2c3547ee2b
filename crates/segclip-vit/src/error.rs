//! The one error type of `segclip-vit`.

/// Everything that can go wrong while building or running the CLIP towers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shapes, devices, dtypes).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A weight file could not be read at all.
    #[error("cannot read weights from {path}: {reason}")]
    WeightFile { path: String, reason: String },

    /// A checkpoint lacks tensors the model needs.
    #[error(
        "the checkpoint {path} is missing {count} tensor(s) the model needs, e.g. {examples}; \
         is it a SegCLIP checkpoint of this size (see --config)?"
    )]
    MissingKeys {
        path: String,
        count: usize,
        examples: String,
    },

    /// A checkpoint holds tensors no SegCLIP model has.
    #[error(
        "the checkpoint {path} has {count} tensor(s) SegCLIP does not know, e.g. {examples}; \
         it is probably another model's checkpoint"
    )]
    UnexpectedKeys {
        path: String,
        count: usize,
        examples: String,
    },

    /// A tensor has the wrong shape for the configured model.
    #[error("tensor `{key}` in {path} has shape {found:?}, but the model expects {expected:?}")]
    ShapeMismatch {
        path: String,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A model configuration is inconsistent or unreadable.
    #[error("invalid model configuration: {0}")]
    Config(String),

    /// The BPE vocabulary could not be loaded or the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A Hugging Face hub id could not be resolved.
    #[error("cannot fetch `{id}` from the Hugging Face hub: {reason}")]
    Hub { id: String, reason: String },

    /// Input text that cannot be encoded.
    #[error("text: {0}")]
    Text(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
