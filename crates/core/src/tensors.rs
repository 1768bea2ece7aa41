//! A model's tensors by name, as a reader that is not the store sees them (the forward pass):
//! what each tensor is, and its bytes. The store implements it for every kind of model (one
//! file, sharded, remote), so a reader never asks where the bytes live.

use crate::header::TensorInfo;
use std::borrow::Cow;

/// Why a tensor's bytes could not be read: the store's own error, kept whole.
pub type ReadError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A model's tensors by name.
pub trait TensorSource: Sync {
    /// The tensor's name, dtype, shape and offsets; `None` when the model has no such tensor.
    fn info(&self, name: &str) -> Option<&TensorInfo>;

    /// The tensor's bytes, held for as long as the source lives (a memory map; a remote tensor
    /// read whole on first use). `None` when they cannot be held (the read failed: ask
    /// [`TensorSource::bytes`] for why).
    fn resident(&self, name: &str) -> Option<&[u8]>;

    /// A quantized tensor's blocks as its file stores them (`TensorInfo::blocks` names their
    /// type), held for as long as the source lives, for kernels that read blocks; `None` when
    /// the source does not hold them (the decoded values of [`TensorSource::resident`] serve).
    fn blocks(&self, name: &str) -> Option<&[u8]> {
        let _ = name;
        None
    }

    /// The tensor's bytes (borrowed when they are in memory already).
    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>, ReadError>;
}
