//! Surgery at scale: region operations, loaded patches as layers, combining patches and
//! comparing the model with another.

use serde::{Deserialize, Serialize};
use tensor_surgeon_core::region::Region;

/// A region operation from the UI on a numpy-style selection of a tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionRequest {
    pub tensor: String,
    /// The selection the operation writes (`""`: the whole tensor).
    #[serde(default)]
    pub spec: String,
    pub region: Region,
    #[serde(default)]
    pub saturate: bool,
    #[serde(default)]
    pub round: bool,
}

/// What to do to every line of a row set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RowSetAction {
    /// Set every element to zero (ablation).
    Zero,
    /// Multiply by a factor.
    Scale { factor: f64 },
    /// Replace with normal noise of this std; line `i` draws from the stream of `seed + i`.
    Noise { std: f64, seed: u64 },
    /// Move toward the same lines of another tensor of the same shape.
    Blend { with: String, alpha: f64 },
}

impl RowSetAction {
    pub fn name(&self) -> &'static str {
        match self {
            RowSetAction::Zero => "zero",
            RowSetAction::Scale { .. } => "scale",
            RowSetAction::Noise { .. } => "noise",
            RowSetAction::Blend { .. } => "blend",
        }
    }
}

/// One operation on a set of rows (indices of the first dim) or columns (of the last dim),
/// chosen anywhere (a selection in the projection): one step, undone as one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSetRequest {
    pub tensor: String,
    #[serde(default)]
    pub columns: bool,
    pub lines: Vec<u64>,
    pub action: RowSetAction,
}

/// A loaded patch in the session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRow {
    pub id: u64,
    pub name: String,
    pub enabled: bool,
    /// Bytes the patch changes.
    pub bytes: u64,
    pub tensors: Vec<String>,
}

/// Entries of the session patch to drop (back to the base) or to keep (dropping the rest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropRequest {
    /// Whole tensors.
    #[serde(default)]
    pub tensors: Vec<String>,
    /// Single elements: (tensor, index).
    #[serde(default)]
    pub elements: Vec<(String, Vec<u64>)>,
    /// Keep only the selection instead of dropping it.
    #[serde(default)]
    pub keep: bool,
}

/// Where two patches disagree, per element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictRow {
    pub tensor: String,
    pub index: Vec<u64>,
    /// `clash` (both change it, differently) or `mismatch` (the second expects other bytes).
    pub kind: String,
    /// The value (or bytes) each side wants.
    pub first: String,
    pub second: String,
}

/// The result of combining two saved patches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CombineOutcome {
    pub entries: usize,
    pub conflicts: Vec<ConflictRow>,
    /// Where the combined patch was saved (none with conflicts).
    pub saved: Option<String>,
}

/// One tensor of a model comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub tensor: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub elements: u64,
    pub changed: u64,
    pub rel_l2: f64,
    pub max_abs_delta: f64,
}

/// The model compared with another: per-tensor changes; the difference is loaded as a patch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareOutcome {
    pub other: String,
    pub rows: Vec<CompareRow>,
    /// Tensors whose names, shapes or dtypes differ, with the reason.
    pub not_compared: Vec<(String, String)>,
    /// The layer holding the difference (none when nothing changed).
    pub layer: Option<u64>,
}
