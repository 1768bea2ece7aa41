//! Surgery at scale: region operations, loaded patches as layers (toggled, dropped, kept),
//! combining saved patches and comparing the model with another.

use super::*;
use tensor_surgeon_wire::{
    CombineOutcome, CompareOutcome, DropRequest, LoadOutcome, RegionRequest, RowSetRequest,
    SessionView,
};

/// Applies a region operation. `POST /api/region`.
#[server(endpoint = "region", input = Json)]
pub async fn region_edit(request: RegionRequest) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.region_edit(&request, &tensor_surgeon_core::origin::Origin::new("web")))
        .await
}

/// One operation on every row (or column) of a set, as one step. `POST /api/row_set`.
#[server(endpoint = "row_set", input = Json)]
pub async fn row_set_edit(request: RowSetRequest) -> Result<SessionView, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.row_set_edit(&request, &tensor_surgeon_core::origin::Origin::new("web")))
        .await
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
