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
