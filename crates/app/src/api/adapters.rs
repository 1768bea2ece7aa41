//! LoRA adapters and control vectors: load an adapter as a layer (and list its modules),
//! export low-rank entries or extract a difference as an adapter, read a control vector and
//! set the ones the edited side runs with.

use super::*;
use tensor_surgeon_wire::{
    AdapterLoad, ControlVectorReport, ControlVectorRequest, ExportReport, ExtractReport,
    SteeringRequest,
};

/// Loads an adapter (a name in the patches folder or a path on the server) as a layer.
/// `POST /api/adapter/load`.
#[server(endpoint = "adapter/load", input = Json)]
pub async fn load_adapter(path: String) -> Result<AdapterLoad, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.load_adapter(&path)).await
}

/// Writes a saved patch's low-rank entries (or the session's, with an empty `source`) as an
/// adapter in the patches folder. `POST /api/adapter/export`.
#[server(endpoint = "adapter/export", input = Json)]
pub async fn export_adapter(
    source: String,
    format: String,
    save_as: String,
) -> Result<ExportReport, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.export_adapter(&source, &format, &save_as)).await
}

/// An adapter of the difference to `other` (empty: the session's edits), kept by `rank` or
/// `tolerance`. `POST /api/adapter/extract`.
#[server(endpoint = "adapter/extract", input = Json)]
pub async fn extract_adapter(
    other: String,
    rank: Option<u32>,
    tolerance: Option<f64>,
    format: String,
    save_as: String,
) -> Result<ExtractReport, ServerFnError> {
    let wb = workbench()?;
    blocking(move || {
        let rule = match (rank, tolerance) {
            (Some(r), _) => tensor_surgeon_engine::adapter::RankRule::Rank(r as usize),
            (None, Some(t)) => tensor_surgeon_engine::adapter::RankRule::Tolerance(t),
            (None, None) => {
                return Err(tensor_surgeon_engine::Error::Usage(
                    "give a rank or a tolerance".into(),
                ))
            }
        };
        wb.extract_adapter(&other, rule, None, &format, &save_as)
    })
    .await
}

/// Reads a control vector from paired prompts and saves it. `POST /api/control_vector`.
#[server(endpoint = "control_vector", input = Json)]
pub async fn control_vector(
    request: ControlVectorRequest,
) -> Result<ControlVectorReport, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.compute_control_vector(&request)).await
}

/// Sets the control vectors the edited side runs with; returns the layers they act on.
/// `POST /api/steer`.
#[server(endpoint = "steer", input = Json)]
pub async fn steer(request: SteeringRequest) -> Result<Vec<u32>, ServerFnError> {
    let wb = workbench()?;
    blocking(move || {
        wb.set_steering(&request)?;
        Ok(wb.steering_layers())
    })
    .await
}
