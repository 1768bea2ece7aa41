//! The server layer's error: every failure a user can cause, with what and where.

use crate::edit::EditError;
use crate::header::HeaderError;
use crate::patch::{Conflict, PatchError};
use crate::slice::SliceError;
use std::path::PathBuf;

/// A failure of the server layer. Messages name the file or tensor involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `.safetensors` header is malformed.
    #[error("{}: {source}", path.display())]
    Header { path: PathBuf, source: HeaderError },
    /// A sharded model's index is malformed or disagrees with its shards.
    #[error("{}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    /// A path that is not a model.
    #[error("{}: {reason}", path.display())]
    NotAModel { path: PathBuf, reason: String },
    /// No tensor of that name.
    #[error("no tensor named {name:?}{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    NoTensor {
        name: String,
        suggestion: Option<String>,
    },
    /// A bad slice or view.
    #[error("{tensor}: {source}")]
    Slice { tensor: String, source: SliceError },
    /// An edit that cannot be made.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// A malformed patch file.
    #[error("{}: {source}", path.display())]
    Patch { path: PathBuf, source: PatchError },
    /// A patch that does not fit the model (or another patch).
    #[error("{} conflict(s); first: {}", conflicts.len(), conflicts.first().map(ToString::to_string).unwrap_or_default())]
    Conflicts { conflicts: Vec<Conflict> },
    /// A request the user should phrase differently.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The server layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A region operation's error on `tensor`.
    pub fn region(tensor: &str) -> impl FnOnce(crate::region::RegionError) -> Error + '_ {
        move |e| match e {
            crate::region::RegionError::Edit(e) => Error::Edit(e),
            crate::region::RegionError::Slice(source) => Error::Slice {
                tensor: tensor.to_string(),
                source,
            },
            crate::region::RegionError::Mismatch(m) => Error::Usage(m),
        }
    }
}
