//! The engine's error: the session's own failures (read-only, a step too large, a proposal or
//! layer it does not have) and, kept whole, those of the store, inference and layouts below it.

use std::path::PathBuf;
use std::sync::Arc;
use tensor_surgeon_core::edit::EditError;
pub use tensor_surgeon_core::error_kind::ErrorKind;
use tensor_surgeon_core::patch::{LowRankError, PatchError};
use tensor_surgeon_core::slice::SliceError;
use tensor_surgeon_infer::InferError;
use tensor_surgeon_layout::LayoutError;
use tensor_surgeon_store::StoreError;

/// A failure of the session or of a crate beneath it. Messages name the file or tensor
/// involved and say what the user can do; they never name a host's flags (a host adds its
/// own words where it has them: [`Error::ReadOnly`], [`Error::TooLarge`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening, reading or writing a model or a patch failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Running the model failed, or it cannot run.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The model could not be opened to run (kept for every later run).
    #[error(transparent)]
    CannotRun(Arc<InferError>),
    /// A layout could not be made.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Reading or writing a file of the session failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A bad slice or view.
    #[error("{tensor}: {source}")]
    Slice { tensor: String, source: SliceError },
    /// An edit that cannot be made.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// Region operands that do not fit together (a copy's shapes, a blend's dtypes); the
    /// message names the tensors already.
    #[error("{source}")]
    Region {
        tensor: String,
        source: tensor_surgeon_core::region::RegionError,
    },
    /// A malformed patch.
    #[error("{}: {source}", path.display())]
    Patch { path: PathBuf, source: PatchError },
    /// A low-rank edit that does not fit its tensor (its dtype, its shape).
    #[error(transparent)]
    LowRank(#[from] LowRankError),
    /// An adapter that does not fit the model, or an export or extraction that cannot be made.
    #[error(transparent)]
    Adapter(#[from] crate::adapter::AdapterFit),
    /// A request the user should phrase differently.
    #[error("{0}")]
    Usage(String),
    /// A step that would change more bytes than the session allows at once.
    #[error("{what} would change {}, more than the {} one step may; edit it in parts", tensor_surgeon_core::units::human_bytes(*bytes), tensor_surgeon_core::units::human_bytes(*cap))]
    TooLarge { what: String, bytes: u64, cap: u64 },
    /// The session was opened read-only.
    #[error("this session is read-only: edits are disabled")]
    ReadOnly,
    /// Something the session may not do for this request (a path outside the allowed folders).
    #[error("{0}")]
    Forbidden(String),
    /// Something the request names that the session does not have (a proposal, a layer).
    #[error("{0}")]
    NotFound(String),
    /// A failure kept for more than one reader (a layout's, seen by every page that asks).
    #[error(transparent)]
    Shared(Arc<Error>),
    /// A worker thread could not be started.
    #[error("cannot start the {what}: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
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

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Infer(e) => infer_kind(e),
            Error::CannotRun(e) => infer_kind(e),
            Error::Layout(e) => e.kind(),
            Error::Shared(e) => e.kind(),
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Io { .. } | Error::Thread { .. } | Error::Internal(_) => ErrorKind::Internal,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Slice {
                source: SliceError::TooLarge { .. },
                ..
            } => ErrorKind::TooLarge,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::ReadOnly | Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::Slice { .. }
            | Error::Edit(_)
            | Error::Patch { .. }
            | Error::Region { .. }
            | Error::LowRank(_)
            | Error::Adapter(_)
            | Error::Usage(_) => ErrorKind::Invalid,
        }
    }
}

/// An inference error's kind; a weight that could not be read has the store's kind.
fn infer_kind(e: &InferError) -> ErrorKind {
    match e {
        InferError::Read { source, .. } => match source.downcast_ref::<StoreError>() {
            Some(store) => store.kind(),
            None => e.kind(),
        },
        _ => e.kind(),
    }
}

/// The engine's result.
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
            source => Error::Region {
                tensor: tensor.to_string(),
                source,
            },
        }
    }
}
