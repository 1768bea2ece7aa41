//! The analysis endpoints: tensor statistics and histograms, row/column profiles, the
//! model-wide scan.

use super::*;
use crate::stats::scan::{ScanRow, SiblingGroup};
use crate::stats::{Histogram, Summary};
use crate::view::Profile;

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
pub struct Progress {
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

/// A tensor's statistics and default histogram. `GET /api/stats?tensor=NAME`.
#[server(endpoint = "stats", input = GetUrl)]
pub async fn get_stats(tensor: String) -> Result<TensorStats, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.stats(&tensor)).await
}

/// A histogram with chosen bins and range (`lo`/`hi` default to the finite range).
/// `GET /api/histogram?tensor=NAME&bins=N&lo=A&hi=B`.
#[server(endpoint = "histogram", input = GetUrl)]
pub async fn get_histogram(
    tensor: String,
    bins: usize,
    lo: Option<f64>,
    hi: Option<f64>,
) -> Result<Histogram, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.histogram(&tensor, bins, lo, hi)).await
}

/// Progress of the running statistics computation. `GET /api/stats_progress`.
#[server(endpoint = "stats_progress", input = GetUrl)]
pub async fn get_stats_progress() -> Result<Progress, ServerFnError> {
    Ok(workbench()?.stats_progress())
}

/// Row and column profiles of a view. `POST /api/profile` (rkyv in and out).
#[server(endpoint = "profile", input = Rkyv, output = Rkyv)]
pub async fn get_profile(request: ProfileRequest) -> Result<Profile, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.profile(&request)).await
}

/// Starts a scan of every tensor (a no-op while one runs or when one finished for the current
/// edits). `POST /api/scan`.
#[server(endpoint = "scan", input = Json)]
pub async fn start_scan() -> Result<ScanStatus, ServerFnError> {
    let wb = workbench()?;
    wb.start_scan().map_err(fail)?;
    Ok(wb.scan_status(0))
}

/// The scan's progress and rows from index `since`. `GET /api/scan_status?since=N`.
#[server(endpoint = "scan_status", input = GetUrl)]
pub async fn get_scan_status(since: usize) -> Result<ScanStatus, ServerFnError> {
    Ok(workbench()?.scan_status(since))
}
