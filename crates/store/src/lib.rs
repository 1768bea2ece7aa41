// Errors carry structured context (path, tensor, URL) for messages a user can act on; they are
// rare and never on a hot path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]
// Reads take lists of byte ranges; a list of one range is the common case, not a typo.
#![allow(clippy::single_range_in_vec_init)]
//! Tensor Surgeon's bytes: a model opened where it lives ([`Model`]: a memory-mapped file, a
//! sharded index, or HTTP/S3 range reads through an on-disk extent cache, behind one type so no
//! caller asks where the bytes are), the session's journal, patch files (JSON and the compact
//! zstd form) and bakes. Nothing here knows the session.
//!
//! ```no_run
//! use tensor_surgeon_store::Model;
//! let model = Model::open(std::path::Path::new("model.safetensors"))?;
//! for (_, info) in model.tensors() {
//!     println!("{} {:?}", info.name, info.shape);
//! }
//! # Ok::<(), tensor_surgeon_store::StoreError>(())
//! ```

pub mod adapter;
pub mod atomic;
pub mod bake;
pub mod compact;
pub mod control_vector;
pub mod demo;
pub mod error;
pub mod journal;
pub mod model;
pub mod patch_files;
pub mod remote;

pub use error::{Result, StoreError};
pub use model::Model;

use std::path::PathBuf;

/// Tensor Surgeon's cache folder: `$XDG_CACHE_HOME/tensor-surgeon`, else
/// `~/.cache/tensor-surgeon` (the demo model, remote models' bytes and their side files).
pub fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("tensor-surgeon")
}
