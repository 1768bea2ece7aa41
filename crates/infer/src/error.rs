//! The inference error: models that cannot run (and exactly why), requests out of range,
//! weights that cannot be read.

use std::path::PathBuf;
use tensor_surgeon_core::error_kind::ErrorKind;
use tensor_surgeon_core::tensors::ReadError;

/// Why a model could not run, or a request could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// Reading a side file (`config.json`) failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `tokenizer.json` the tokenizers library cannot read.
    #[error("{}: not a tokenizer.json the tokenizers library can read: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    /// A model this build cannot run: its architecture, a missing `config.json` or tokenizer, a
    /// tensor of the wrong shape or dtype. The message says exactly what is missing.
    #[error("{0}")]
    Unsupported(String),
    /// A request out of range for this model (a prompt too long, a layer it does not have).
    #[error("{0}")]
    Request(String),
    /// A weight's bytes could not be read (the store's error, kept whole).
    #[error("{tensor}: {source}")]
    Read { tensor: String, source: ReadError },
    /// A tensor operation failed: shapes were checked before, so this is a bug, reported.
    #[error("internal error: inference: {0}")]
    Candle(#[from] candle_core::Error),
    /// A forward pass that did not capture what it was asked to: a bug, reported.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl InferError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> InferError {
        let path = path.into();
        move |source| InferError::Io { path, source }
    }

    /// The kind of failure (a read's kind is its source's: only its host knows it).
    pub fn kind(&self) -> ErrorKind {
        match self {
            InferError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            InferError::Io { .. }
            | InferError::Read { .. }
            | InferError::Candle(_)
            | InferError::Internal(_) => ErrorKind::Internal,
            InferError::Tokenizer { .. } | InferError::Unsupported(_) | InferError::Request(_) => {
                ErrorKind::Invalid
            }
        }
    }
}

/// The inference result.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
