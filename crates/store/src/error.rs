//! The store's error: every way opening, reading or writing a model or a patch can fail, with
//! the file, URL or tensor involved.

use std::path::PathBuf;
use std::sync::Arc;
use tensor_surgeon_core::error_kind::ErrorKind;
use tensor_surgeon_core::gguf::quant::QuantError;
use tensor_surgeon_core::gguf::GgufError;
use tensor_surgeon_core::header::HeaderError;
use tensor_surgeon_core::patch::{Conflict, PatchError};
use tensor_surgeon_core::slice::SliceError;

/// A failure of the store. Messages name the file, URL or tensor involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `.safetensors` header is malformed.
    #[error("{}: {source}", path.display())]
    Header { path: PathBuf, source: HeaderError },
    /// A sharded model's index disagrees with its shards.
    #[error("{}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    /// A sharded model's index cannot be read as one.
    #[error("{}: {source}", path.display())]
    IndexFile {
        path: PathBuf,
        #[source]
        source: tensor_surgeon_core::index::IndexError,
    },
    /// A path that is not a model.
    #[error("{}: {reason}", path.display())]
    NotAModel { path: PathBuf, reason: String },
    /// No tensor of that name.
    #[error("no tensor named {name:?}{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    NoTensor {
        name: String,
        suggestion: Option<String>,
    },
    /// A bad slice of a tensor.
    #[error("{tensor}: {source}")]
    Slice { tensor: String, source: SliceError },
    /// An adapter file that cannot be read or applied.
    #[error(transparent)]
    Adapter(#[from] crate::adapter::AdapterError),
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
    /// A patch with low-rank or metadata entries asked for in the compact form, which holds
    /// byte runs.
    #[error("{}: a patch with low-rank or metadata entries is written as JSON (the compact form holds byte runs only)", path.display())]
    CompactLowRank { path: PathBuf },
    /// Metadata entries that cannot be written into the header.
    #[error("cannot write the metadata: {0}")]
    Metadata(#[from] tensor_surgeon_core::gguf::write::MetadataError),
    /// A bake that cannot go where it was asked to (onto the base, a sharded model into a file).
    #[error("{} is {reason}", path.display())]
    BakeTarget { path: PathBuf, reason: &'static str },
    /// A journal record that cannot be written as JSON (a bug: records are plain data).
    #[error("cannot write a journal record: {0}")]
    Record(#[source] serde_json::Error),
    /// A remote file the server does not have.
    #[error("{}: {source}", path.display())]
    Gguf { path: PathBuf, source: GgufError },

    /// A quantized tensor's blocks could not be decoded (a type Tensor Surgeon does not read).
    #[error("{tensor}: {source}")]
    Decode { tensor: String, source: QuantError },

    /// A blocks view is made from a quantized tensor's blocks, not stored.
    #[error("{tensor} is the scales of {source_tensor}'s blocks, made from them: it cannot be edited (edit {source_tensor})")]
    Derived {
        tensor: String,
        source_tensor: String,
    },

    #[error("{url}: not found on the server")]
    RemoteNotFound { url: String },
    /// A remote model that cannot be read (unreachable, refused, a short answer), after retries.
    #[error("{url}: {reason}")]
    Remote { url: String, reason: String },
    /// A remote file that changed on the server since it was opened: nothing more is read
    /// from it, so no edit, view or bake mixes two versions.
    #[error("{url} changed on the server since it was opened ({reason}); reopen the model to use the new version")]
    RemoteChanged { url: String, reason: String },
    /// The remote extent cache was configured twice in one process.
    #[error("the remote cache was already set up")]
    CacheConfigured,
    /// The remote extent cache's folder cannot be used.
    #[error("the remote cache cannot be used: {0}")]
    CacheUnusable(#[source] Arc<StoreError>),
}

impl StoreError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            StoreError::Io { .. } | StoreError::Record(_) | StoreError::Remote { .. } => {
                ErrorKind::Internal
            }
            StoreError::RemoteNotFound { .. } => ErrorKind::NotFound,
            StoreError::Adapter(crate::adapter::AdapterError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                ErrorKind::NotFound
            }
            StoreError::Adapter(crate::adapter::AdapterError::Io { .. }) => ErrorKind::Internal,
            StoreError::Adapter(_) => ErrorKind::Invalid,
            StoreError::CacheUnusable(cause) => cause.kind(),
            StoreError::RemoteChanged { .. } | StoreError::Conflicts { .. } => ErrorKind::Conflict,
            StoreError::NoTensor { .. } => ErrorKind::NotFound,
            StoreError::Slice {
                source: SliceError::TooLarge { .. },
                ..
            } => ErrorKind::TooLarge,
            StoreError::Header { .. }
            | StoreError::Derived { .. }
            | StoreError::Decode { .. }
            | StoreError::Gguf { .. }
            | StoreError::Index { .. }
            | StoreError::IndexFile { .. }
            | StoreError::NotAModel { .. }
            | StoreError::Slice { .. }
            | StoreError::Patch { .. }
            | StoreError::Compact { .. }
            | StoreError::BakeTarget { .. }
            | StoreError::CompactLowRank { .. }
            | StoreError::Metadata(_)
            | StoreError::CacheConfigured => ErrorKind::Invalid,
        }
    }
}

/// The store's result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_file_that_is_not_there_is_not_found_and_a_changed_one_a_conflict() {
        let url = "https://example.org/model.safetensors".to_string();
        let missing = StoreError::RemoteNotFound { url: url.clone() };
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let changed = StoreError::RemoteChanged {
            url,
            reason: "its ETag changed".into(),
        };
        assert_eq!(changed.kind(), ErrorKind::Conflict);
    }
}
