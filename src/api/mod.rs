//! The HTTP API: data shapes shared by server and client, and the server functions, each at
//! a fixed endpoint under `/api/` (listed in the README). Server functions only parse, call
//! the workbench and map errors.

use crate::colormap::ScaleMode;
use crate::edit::Op;
use crate::view::{PoolStat, ViewMode, ViewSpec};
use leptos::prelude::*;
use leptos::server_fn::codec::{GetUrl, Json, Rkyv};
use serde::{Deserialize, Serialize};

mod analysis;
mod patches;
mod structure;
pub use analysis::*;
pub use patches::*;
pub use structure::*;

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
}

/// An edit from the UI: a numpy-style region of a tensor and an operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditRequest {
    pub tensor: String,
    pub spec: String,
    pub op: Op,
    #[serde(default)]
    pub saturate: bool,
    #[serde(default)]
    pub round: bool,
}

/// One changed element of the session patch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryRow {
    pub tensor: String,
    pub index: Vec<u64>,
    pub old_value: String,
    pub new_value: String,
    pub old_hex: String,
    pub new_hex: String,
    /// Who changed it (`web`, `cli`, `agent: hypothesis`, `patch`).
    pub origin: String,
}

/// The session's patch and history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub version: u64,
    /// Changed elements (the first `limit`), and how many there are in all.
    pub entries: Vec<EntryRow>,
    pub total_elements: u64,
    pub steps: Vec<String>,
    pub can_undo: bool,
    pub can_redo: bool,
    /// Agent proposals waiting to be accepted or rejected.
    pub pending: Vec<Proposal>,
    /// Loaded patches, each on or off, in load order.
    pub layers: Vec<LayerRow>,
}

/// An edit an agent proposed; it changes nothing until a person accepts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub request: EditRequest,
    pub origin: crate::patch::Origin,
    /// What it does, e.g. `scale model.embed_tokens.weight[7,:]`.
    pub label: String,
    /// Bytes it would change when proposed.
    pub bytes: u64,
}

/// Progress of a bake.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BakeStatus {
    pub running: bool,
    pub done: u64,
    pub total: u64,
    pub written: Vec<String>,
    pub error: Option<String>,
}

/// What loading a patch did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadOutcome {
    pub applied: bool,
    pub entries: usize,
    pub conflicts: Vec<String>,
}

/// How the client asks for colour scales (kept here so URLs and UI agree).
pub fn scale_mode_name(mode: ScaleMode) -> String {
    match mode {
        ScaleMode::Symmetric => "sym".into(),
        ScaleMode::MinMax => "minmax".into(),
        ScaleMode::Percentile(p) => format!("p{p}"),
    }
}

/// Parses [`scale_mode_name`].
pub fn parse_scale_mode(text: &str) -> Option<ScaleMode> {
    match text {
        "sym" => Some(ScaleMode::Symmetric),
        "minmax" => Some(ScaleMode::MinMax),
        t => t
            .strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| (0.0..50.0).contains(p))
            .map(ScaleMode::Percentile),
    }
}

#[cfg(feature = "ssr")]
fn workbench() -> Result<std::sync::Arc<crate::server::workbench::Workbench>, ServerFnError> {
    use_context::<crate::server::web::AppState>()
        .map(|s| s.workbench.clone())
        .ok_or_else(|| ServerFnError::new("server state missing"))
}

#[cfg(feature = "ssr")]
fn fail(e: impl std::fmt::Display) -> ServerFnError {
    ServerFnError::new(e.to_string())
}

/// Runs blocking work (mmap reads, bakes) off the async workers.
#[cfg(feature = "ssr")]
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::server::Error> + Send + 'static,
) -> Result<T, ServerFnError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(fail)?
        .map_err(fail)
}

/// The model summary and tensor list. `GET /api/model`.
#[server(endpoint = "model", input = GetUrl)]
pub async fn get_model() -> Result<ModelSummary, ServerFnError> {
    Ok(workbench()?.summary())
}

/// Heatmap data for a view. `POST /api/view` (rkyv in and out).
#[server(endpoint = "view", input = Rkyv, output = Rkyv)]
pub async fn get_view(request: ViewRequest) -> Result<ViewData, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.view(&request)).await
}

/// One element's exact value and bytes. `GET /api/cell?tensor=NAME&index=1,2`.
#[server(endpoint = "cell", input = GetUrl)]
pub async fn get_cell(tensor: String, index: String) -> Result<CellData, ServerFnError> {
    let index = index
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| fail(format!("index {index:?} is not a list of whole numbers")))?;
    workbench()?.cell(&tensor, &index).map_err(fail)
}

/// Applies an edit. `POST /api/edit`.
#[server(endpoint = "edit", input = Json)]
pub async fn edit(request: EditRequest) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.edit(&request, &crate::patch::Origin::new("web"))).await
}

/// Accepts (applies) or rejects an agent's pending proposal. `POST /api/resolve`.
#[server(endpoint = "resolve", input = Json)]
pub async fn resolve_proposal(id: u64, accept: bool) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.resolve(id, accept)).await
}

/// Undoes the last edit. `POST /api/undo`.
#[server(endpoint = "undo", input = Json)]
pub async fn undo() -> Result<SessionView, ServerFnError> {
    workbench()?.undo().map_err(fail)
}

/// Redoes the last undone edit. `POST /api/redo`.
#[server(endpoint = "redo", input = Json)]
pub async fn redo() -> Result<SessionView, ServerFnError> {
    workbench()?.redo().map_err(fail)
}

/// The session's changed elements and history. `GET /api/session`.
#[server(endpoint = "session", input = GetUrl)]
pub async fn get_session() -> Result<SessionView, ServerFnError> {
    Ok(workbench()?.session_view())
}

/// Saves the session patch into the patches folder; returns its path. `POST /api/save_patch`.
#[server(endpoint = "save_patch", input = Json)]
pub async fn save_patch(name: String, note: String) -> Result<String, ServerFnError> {
    workbench()?.save_patch(&name, &note).map_err(fail)
}

/// Verifies a patch (JSON text) and, if it applies cleanly, applies it as one edit.
/// `POST /api/load_patch`.
#[server(endpoint = "load_patch", input = Json)]
pub async fn load_patch(text: String, name: Option<String>) -> Result<LoadOutcome, ServerFnError> {
    let name = name.unwrap_or_else(|| "uploaded patch".into());
    workbench()?.load_patch(&text, &name).map_err(fail)
}

/// Starts baking the session patch into `file_name` in the output folder. `POST /api/bake`.
#[server(endpoint = "bake", input = Json)]
pub async fn start_bake(file_name: String) -> Result<BakeStatus, ServerFnError> {
    workbench()?.start_bake(&file_name).map_err(fail)
}

/// Progress of the running (or last) bake. `GET /api/bake_status`.
#[server(endpoint = "bake_status", input = GetUrl)]
pub async fn get_bake_status() -> Result<BakeStatus, ServerFnError> {
    Ok(workbench()?.bake_status())
}
