//! The open model and what the heatmap reads from it: the tensor list, views, single cells.

use serde::{Deserialize, Serialize};
use tensor_surgeon_core::view::{PoolStat, ViewMode, ViewSpec};

/// One row of the tensor list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorRow {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub bytes: u64,
    pub file: String,
}

/// What the app shows about the open model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub path: String,
    pub files: Vec<(String, u64)>,
    /// Parameters per dtype.
    pub params: Vec<(String, u64)>,
    /// `__metadata__` (untrusted text: rendered escaped).
    pub metadata: Vec<(String, String)>,
    pub tensors: Vec<TensorRow>,
    pub warnings: Vec<String>,
    pub read_only: bool,
    /// The tokenizer's vocabulary size and file, when the model has one.
    pub vocab_size: Option<u64>,
    pub tokenizer: Option<String>,
    /// The vocabulary matrix token search opens (an embedding).
    pub vocab_tensor: Option<String>,
    /// What `config.json` says the model is (`architectures`, `model_type`, sizes), in order;
    /// empty without one.
    #[serde(default)]
    pub architecture: Vec<(String, String)>,
}

/// A long read from a remote model under way (the page shows it while a view waits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteRead {
    pub url: String,
    pub done: u64,
    pub total: u64,
}

/// A request for heatmap data.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ViewRequest {
    pub tensor: String,
    pub spec: ViewSpec,
    /// Largest grid the client can show; bigger views are pooled into blocks.
    pub max_rows: u64,
    pub max_cols: u64,
    pub stat: PoolStat,
    /// After (default), before, or delta.
    #[serde(default)]
    pub mode: ViewMode,
    /// A pending proposal to preview: "after" is then the session with it, "before" the
    /// session as it is (so "delta" is what the proposal would change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<u64>,
}

/// Heatmap data: raw element bytes for exact views, a pooled f32 grid otherwise.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ViewData {
    pub tensor: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// The view after repair.
    pub spec: ViewSpec,
    /// Grid size (cells of the view, or blocks when pooled).
    pub rows: u64,
    pub cols: u64,
    /// Cells per block; `(1, 1)` for an exact view.
    pub block: (u64, u64),
    pub stat: PoolStat,
    /// Exact views: `element_bytes(dtype)` bytes per cell, row-major.
    pub bytes: Vec<u8>,
    /// Pooled views: one value per block, row-major. Delta views: the delta of every cell
    /// (or the mean delta of every block), whatever the size.
    pub pooled: Vec<f32>,
    pub mode: ViewMode,
    /// Delta views of exact size: the base bytes of every cell (`bytes` holds the edited ones).
    pub base_bytes: Vec<u8>,
    /// Edit version the data reflects.
    pub version: u64,
    /// Token text of each view row / column when that dim indexes the vocabulary (exact views).
    pub y_labels: Vec<String>,
    pub x_labels: Vec<String>,
}

/// One element, exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellData {
    pub tensor: String,
    pub index: Vec<u64>,
    pub dtype: String,
    pub value: String,
    pub hex: String,
    /// The token of the first index that indexes the vocabulary, if any.
    pub token: Option<String>,
    /// For a quantized tensor, the block the element is decoded from.
    #[serde(default)]
    pub block: Option<BlockCell>,
}

/// The block of a quantized tensor an element is decoded from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockCell {
    /// ggml's type name (`"Q4_K"`).
    pub ggml_type: String,
    /// The block's number in the tensor, and its byte offset in the tensor's data.
    pub index: u64,
    pub offset: u64,
    /// The block's bytes, as hex.
    pub hex: String,
    /// The element's place in the block.
    pub element: u32,
    /// The element's code (`value = scale · quant − min`), for types that store one.
    pub quant: Option<i32>,
    pub scale: Option<f32>,
    pub min: Option<f32>,
    /// The K-quant sub-block whose scale applies.
    pub sub_block: Option<u32>,
}

impl BlockCell {
    /// The element's code in words, `scale × quant − min` (f32s in their shortest text).
    pub fn code_text(&self) -> Option<String> {
        let (q, scale) = self.quant.zip(self.scale)?;
        let min = self
            .min
            .filter(|m| *m != 0.0)
            .map(|m| format!(" − {m}"))
            .unwrap_or_default();
        Some(format!("{scale} × {q}{min}"))
    }
}
