//! Statistics, row/column profiles and the model-wide scan.

use serde::{Deserialize, Serialize};
use tensor_surgeon_core::stats::scan::{ScanRow, SiblingGroup};
use tensor_surgeon_core::stats::{Histogram, Summary};
use tensor_surgeon_core::view::ViewSpec;

/// Statistics of one tensor, overlay applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    pub tensor: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub bytes: u64,
    /// The tensor's edit version the numbers are for.
    pub version: u64,
    pub summary: Summary,
    /// The default histogram (`DEFAULT_BINS` over the finite range).
    pub histogram: Option<Histogram>,
    /// How the dtype is summarised, when not plainly (booleans, complex numbers).
    pub note: Option<String>,
}

/// Progress of long statistics work (a big tensor's stats, or the scan).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub running: bool,
    /// What is being read.
    pub what: String,
    pub done: u64,
    pub total: u64,
}

/// A row/column profile request.
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
pub struct ProfileRequest {
    pub tensor: String,
    pub spec: ViewSpec,
}

/// The scan: rows so far (from `since`), progress, and the sibling groups once done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanStatus {
    pub running: bool,
    /// Whether a scan finished for the current edits.
    pub complete: bool,
    pub tensors_done: usize,
    pub tensors_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Rows from index `since` of the request.
    pub rows: Vec<ScanRow>,
    pub groups: Vec<SiblingGroup>,
    pub error: Option<String>,
}
