// Errors carry structured context (tensor, dim, asked, size) for messages a user can act on;
// they are rare and never on a hot path, so their size is not worth boxing.
#![allow(clippy::result_large_err)]
// Reads take lists of byte ranges; a list of one range is the common case, not a typo.
#![allow(clippy::single_range_in_vec_init)]
//! Tensor Surgeon's session over one model ([`workbench::Workbench`]): the overlay, the edit
//! history and its journal, loaded patch layers and pending proposals, and the services that
//! work on the session's weights: runs (base and edited side by side), layouts, statistics
//! and scans, the model diff. Bytes come from `tensor-surgeon-store`, forward passes from
//! `tensor-surgeon-infer`, projections from `tensor-surgeon-layout`. The web app, the MCP host
//! and the command line are thin layers over it.
//!
//! ```no_run
//! use tensor_surgeon_engine::workbench::{SessionConfig, Workbench};
//! use tensor_surgeon_store::Model;
//! let model = Model::open(std::path::Path::new("model.safetensors"))?;
//! let (workbench, warnings) = Workbench::open(model, SessionConfig::default())?;
//! println!("{} tensors; {warnings:?}", workbench.model().len());
//! # Ok::<(), tensor_surgeon_engine::Error>(())
//! ```

pub mod ablate;
pub mod adapter;
pub mod blocks;
pub mod diff;
pub mod error;
pub mod fact;
pub mod services;
pub mod statistics;
pub mod workbench;

pub use error::{Error, Result};

/// Runs blocking work (mmap reads, fsyncs, bakes) on the async runtime's blocking pool, so
/// the async workers stay free for other requests; a panic in it becomes an error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

/// The text of a caught panic, as an error message for the user and the log.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("internal error: {what}")
}
