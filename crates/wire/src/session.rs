//! The editing session: edit requests, the session patch as the UI shows it, agent
//! proposals, bakes and patch loads.

use crate::LayerRow;
use serde::{Deserialize, Serialize};
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_core::origin::Origin;

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
    /// The applied low-rank steps (accepted fact edits), one row each; their tensors'
    /// elements are counted in `total_elements` but not listed in `entries`.
    #[serde(default)]
    pub low_rank: Vec<LowRankRow>,
}

/// One low-rank step of the session: a whole tensor gained `U Vᵀ`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowRankRow {
    pub tensor: String,
    pub rank: u32,
    /// The step's label.
    pub label: String,
    /// Who made it.
    pub origin: String,
    /// Elements the step changed.
    pub elements: u64,
}

/// An edit an agent proposed; it changes nothing until a person accepts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub request: EditRequest,
    pub origin: Origin,
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
