//! Surgery at scale: region operations, loaded patches (toggled, inverted, combined) and
//! comparing the model with another.

use super::*;
use crate::region::Region;

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

/// Applies a region operation. `POST /api/region`.
#[server(endpoint = "region", input = Json)]
pub async fn region_edit(request: RegionRequest) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.region_edit(&request, &crate::patch::Origin::new("web"))).await
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

/// Turns a loaded patch on or off. `POST /api/layer`.
#[server(endpoint = "layer", input = Json)]
pub async fn set_layer(id: u64, enabled: bool) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.set_layer(id, enabled)).await
}

/// Drops (or keeps only) entries of the session patch. `POST /api/drop_entries`.
#[server(endpoint = "drop_entries", input = Json)]
pub async fn drop_entries(request: DropRequest) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.drop_entries(&request)).await
}

/// The patches saved in the patches folder. `GET /api/saved_patches`.
#[server(endpoint = "saved_patches", input = GetUrl)]
pub async fn saved_patches() -> Result<Vec<String>, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.saved_patches()).await
}

/// Loads a saved patch (by file name) as a layer. `POST /api/load_saved`.
#[server(endpoint = "load_saved", input = Json)]
pub async fn load_saved(name: String) -> Result<LoadOutcome, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.load_saved(&name)).await
}

/// Combines two saved patches; saves the result as `save_as` when they do not conflict.
/// `POST /api/combine`.
#[server(endpoint = "combine", input = Json)]
pub async fn combine_saved(
    first: String,
    second: String,
    save_as: String,
) -> Result<CombineOutcome, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.combine_saved(&first, &second, &save_as)).await
}

/// Compares the model with another (a path on the server) and loads the difference as a
/// patch. `POST /api/compare`.
#[server(endpoint = "compare", input = Json)]
pub async fn compare_with(other: String) -> Result<CompareOutcome, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.compare_with(&other)).await
}
