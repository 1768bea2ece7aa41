//! The engine's error: every failure a user can cause, with what and where.

use std::path::PathBuf;
use tensor_surgeon_core::edit::EditError;
use tensor_surgeon_core::header::HeaderError;
use tensor_surgeon_core::patch::{Conflict, PatchError};
use tensor_surgeon_core::slice::SliceError;

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
    /// A damaged or unreadable compact patch file.
    #[error("{}: compact patch: {source}", path.display())]
    Compact {
        path: PathBuf,
        source: crate::compact::CompactError,
    },
    /// A patch that does not fit the model (or another patch).
    #[error("{} conflict(s); first: {}", conflicts.len(), conflicts.first().map(ToString::to_string).unwrap_or_default())]
    Conflicts { conflicts: Vec<Conflict> },
    /// A request the user should phrase differently.
    #[error("{0}")]
    Usage(String),
    /// A model this build cannot run (architecture, missing config or tokenizer).
    #[error("{0}")]
    Unsupported(String),
    /// A request bigger than the server allows (an edit over the step cap).
    #[error("{0}")]
    TooLarge(String),
    /// The server was started read-only.
    #[error("the server was started with --read-only: edits are disabled")]
    ReadOnly,
    /// Something the server may not do for this request (a path outside the allowed folders).
    #[error("{0}")]
    Forbidden(String),
    /// Something the request names that the session does not have (a proposal, a layer).
    #[error("{0}")]
    NotFound(String),
    /// A remote model that cannot be read (unreachable, not found, refused), after retries.
    #[error("{url}: {reason}")]
    Remote { url: String, reason: String },
    /// A remote file that changed on the server since it was opened: nothing more is read
    /// from it, so no edit, view or bake mixes two versions.
    #[error("{url} changed on the server since it was opened ({reason}); reopen the model to use the new version")]
    RemoteChanged { url: String, reason: String },
    /// Work the user stopped before it had anything to show.
    #[error("stopped before the first layout")]
    Stopped,
    /// Work that stopped unexpectedly (a panic in a worker): a bug, reported, not a crash.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// A candle failure in a forward pass: shapes were checked before, so this is a bug, reported
/// (not a crash).
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Error {
        Error::Internal(format!("inference: {e}"))
    }
}

/// What kind of failure an error is, for a host to map (an HTTP status, an exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request names something that is not there: a tensor, a proposal, a file.
    NotFound,
    /// The request is malformed or asks for something impossible (a bad slice, 300 into I8).
    Invalid,
    /// The request does not fit the current state (a patch whose original bytes differ).
    Conflict,
    /// The server refuses it (read-only).
    Forbidden,
    /// More than one request may do at once.
    TooLarge,
    /// The machine failed (I/O) or a bug stopped the work.
    Internal,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Io { .. } | Error::Internal(_) | Error::Remote { .. } => ErrorKind::Internal,
            Error::RemoteChanged { .. } => ErrorKind::Conflict,
            Error::NoTensor { .. } | Error::NotFound(_) => ErrorKind::NotFound,
            Error::Slice {
                source: SliceError::TooLarge { .. },
                ..
            } => ErrorKind::TooLarge,
            Error::Conflicts { .. } => ErrorKind::Conflict,
            Error::TooLarge(_) => ErrorKind::TooLarge,
            Error::ReadOnly | Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::Header { .. }
            | Error::Index { .. }
            | Error::NotAModel { .. }
            | Error::Slice { .. }
            | Error::Edit(_)
            | Error::Patch { .. }
            | Error::Compact { .. }
            | Error::Usage(_)
            | Error::Stopped
            | Error::Unsupported(_) => ErrorKind::Invalid,
        }
    }
}

/// The server layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A region operation's error on `tensor`.
    pub fn region(
        tensor: &str,
    ) -> impl FnOnce(tensor_surgeon_core::region::RegionError) -> Error + '_ {
        move |e| match e {
            tensor_surgeon_core::region::RegionError::Edit(e) => Error::Edit(e),
            tensor_surgeon_core::region::RegionError::Slice(source) => Error::Slice {
                tensor: tensor.to_string(),
                source,
            },
            tensor_surgeon_core::region::RegionError::Mismatch(m) => Error::Usage(m),
            other => Error::Usage(other.to_string()),
        }
    }
}
