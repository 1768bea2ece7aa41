//! The unit every edit, undo and patch is made of: one contiguous run of bytes of one tensor,
//! before and after.

use serde::{Deserialize, Serialize};

/// One contiguous byte change in one tensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub tensor: String,
    /// Byte offset within the tensor's data.
    pub offset: u64,
    #[serde(with = "hex::serde")]
    pub before: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub after: Vec<u8>,
}
