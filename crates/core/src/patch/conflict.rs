//! Where a patch does not fit its base or another patch.

use serde::{Deserialize, Serialize};

/// A place where a patch does not fit its base (or another patch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub tensor: String,
    pub offset: u64,
    pub len: u64,
    #[serde(flatten)]
    pub kind: ConflictKind,
}

/// The kinds of conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConflictKind {
    /// The base has no such tensor.
    MissingTensor,
    /// The entry runs past the tensor's data.
    OutOfRange { tensor_bytes: u64 },
    /// The base bytes are not the entry's original bytes.
    Mismatch {
        #[serde(with = "hex::serde")]
        expected: Vec<u8>,
        #[serde(with = "hex::serde")]
        found: Vec<u8>,
    },
    /// A compact patch's digest of the original bytes of a tensor's runs does not match the
    /// base (compact patches carry digests, not the original bytes).
    BaseDiffers { runs: u64 },
    /// A low-rank entry's tensor is not the one it was made for (SHA-256 of its bytes).
    TensorDiffers,
    /// A low-rank entry that does not fit its tensor (dtype or shape).
    LowRankMisfit { reason: String },
    /// A low-rank entry that does not make the tensor it promises: the entry is damaged.
    ResultDiffers,
    /// A metadata entry's original value is not the base's (or another patch's).
    MetadataDiffers { expected: String, found: String },
    /// A metadata entry against a model that is not a GGUF file.
    NotGguf,
    /// Two patches change the same bytes to different values.
    Clash {
        #[serde(with = "hex::serde")]
        first: Vec<u8>,
        #[serde(with = "hex::serde")]
        second: Vec<u8>,
    },
}

impl Conflict {
    /// A conflict over a whole tensor of `len` bytes.
    pub fn whole(tensor: &str, len: u64, kind: ConflictKind) -> Conflict {
        Conflict {
            tensor: tensor.to_string(),
            offset: 0,
            len,
            kind,
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = format!(
            "{} bytes {}..{}",
            self.tensor,
            self.offset,
            self.offset + self.len
        );
        match &self.kind {
            ConflictKind::MissingTensor => {
                write!(f, "{}: the model has no tensor of that name", self.tensor)
            }
            ConflictKind::OutOfRange { tensor_bytes } => {
                write!(f, "{at}: past the end of the tensor's {tensor_bytes} bytes")
            }
            ConflictKind::Mismatch { expected, found } => write!(
                f,
                "{at}: patch expects {} but the model has {}",
                hex::encode(expected),
                hex::encode(found)
            ),
            ConflictKind::BaseDiffers { runs } => write!(
                f,
                "{at}: the model's bytes in the patch's {runs} run(s) are not those the patch \
                 was made for (their SHA-256 differs)"
            ),
            ConflictKind::TensorDiffers => write!(
                f,
                "{}: the model's tensor is not the one the low-rank entry was made for (its \
                 SHA-256 differs)",
                self.tensor
            ),
            ConflictKind::LowRankMisfit { reason } => write!(f, "{reason}"),
            ConflictKind::ResultDiffers => write!(
                f,
                "{}: the low-rank entry does not make the tensor it names (SHA-256 of the \
                 result differs): the entry is damaged",
                self.tensor
            ),
            ConflictKind::MetadataDiffers { expected, found } => write!(
                f,
                "metadata {}: patch expects {expected} but the model has {found}",
                self.tensor
            ),
            ConflictKind::NotGguf => write!(
                f,
                "metadata {}: the model is not a GGUF file, which has no such metadata",
                self.tensor
            ),
            ConflictKind::Clash { first, second } => write!(
                f,
                "{at}: one patch writes {} and the other {}",
                hex::encode(first),
                hex::encode(second)
            ),
        }
    }
}
