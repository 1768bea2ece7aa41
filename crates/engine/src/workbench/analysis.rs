//! Statistics, histograms, profiles and the scan of the session's weights (the analysis
//! service, on a snapshot of the session).

use super::Workbench;
use crate::error::Result;
use std::sync::Arc;
use tensor_surgeon_core::stats::Histogram;
use tensor_surgeon_core::view::Profile;
use tensor_surgeon_wire::{ProfileRequest, ScanStatus, TaskProgress, TensorStats};

impl Workbench {
    /// Statistics and the default histogram of a tensor, overlay applied.
    pub fn stats(&self, tensor: &str) -> Result<TensorStats> {
        self.analysis.stats(&self.snapshot(), tensor)
    }

    /// Progress of the last statistics computation.
    pub fn stats_progress(&self) -> TaskProgress {
        self.analysis.stats_progress()
    }

    /// A histogram with `bins` bins over `[lo, hi]` (default: the finite range).
    pub fn histogram(
        &self,
        tensor: &str,
        bins: usize,
        lo: Option<f64>,
        hi: Option<f64>,
    ) -> Result<Histogram> {
        self.analysis
            .histogram(&self.snapshot(), tensor, bins, lo, hi)
    }

    /// Row and column profiles of a view, overlay applied.
    pub fn profile(&self, req: &ProfileRequest) -> Result<Profile> {
        self.analysis.profile(&self.snapshot(), req)
    }

    /// Starts the scan of the current edits in the background unless one runs or finished
    /// for them.
    pub fn start_scan(self: &Arc<Self>) -> Result<()> {
        self.analysis.start_scan(&self.snapshot())
    }

    /// A complete scan for the current edits, computed here and now (cached statistics make
    /// repeats cheap).
    pub fn scan_now(&self) -> Result<ScanStatus> {
        self.analysis.scan_now(&self.snapshot())
    }

    /// The scan's progress, with rows from index `since`.
    pub fn scan_status(&self, since: usize) -> ScanStatus {
        self.analysis.scan_status(since)
    }
}
