//! Statistics and histograms, row/column profiles, the model-wide scan.

use super::*;
use tensor_surgeon_core::stats::Histogram;
use tensor_surgeon_core::view::Profile;
use tensor_surgeon_wire::{ProfileRequest, ScanStatus, TaskProgress, TensorStats};

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
pub async fn get_stats_progress() -> Result<TaskProgress, ServerFnError> {
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
