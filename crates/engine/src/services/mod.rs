//! The services that work on a session's weights without owning the session: runs (the
//! forward pass, base and edited side by side), analysis (statistics, histograms, profiles,
//! scans) and layouts (t-SNE and UMAP). Each is built on the model alone and reads the edits
//! from a [`Snapshot`] of the session (its overlay and versions), taken in a moment under the
//! session's lock; the long work then runs on the snapshot, lock-free. A service can be made
//! and tested without a session: give it a model and a snapshot of an overlay of your own.

pub mod analysis;
pub mod layouts;
pub mod runs;
mod snapshot;

pub use analysis::Analysis;
pub use layouts::Layouts;
pub use runs::Runs;
pub use snapshot::Snapshot;

use std::sync::{Mutex, MutexGuard};
use tensor_surgeon_infer::tokens::Vocab;

/// Locks a mutex; a panic elsewhere while it was held leaves data that is still whole (every
/// critical section here writes whole values), so a poisoned lock is taken as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The token text of index `i` along a dim of `size`, when that dim indexes the vocabulary.
pub(crate) fn token_label(vocab: Option<&Vocab>, size: u64, i: u64) -> Option<String> {
    let v = vocab?;
    v.indexes(size)
        .then(|| v.label(i))
        .flatten()
        .map(str::to_string)
}
