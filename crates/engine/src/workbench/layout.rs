//! t-SNE and UMAP layouts of the session's weights (the layout service, on a snapshot of
//! the session).

use super::Workbench;
use crate::error::Result;
use std::sync::Arc;
#[cfg(test)]
use tensor_surgeon_wire::Method;
use tensor_surgeon_wire::{FrameRequest, LayoutFrame, ProjectRequest, Projection};

impl Workbench {
    /// Starts laying out a view's rows (or columns) by t-SNE or UMAP, or joins the same
    /// layout already running, or answers at once from a finished one. The first frame.
    pub fn start_layout(self: &Arc<Self>, req: &ProjectRequest) -> Result<LayoutFrame> {
        self.layouts.start(&self.snapshot(), req)
    }

    /// The newest frame of a layout (its points only when newer than `since`).
    pub fn layout_frame(&self, req: FrameRequest) -> Result<LayoutFrame> {
        self.layouts.frame(req)
    }

    /// Stops a layout after its current step; it keeps the layout it has.
    pub fn stop_layout(&self, job: u64) -> Result<LayoutFrame> {
        self.layouts.stop(job)
    }

    /// A whole layout, waiting for it to finish (for the CLI-like callers: MCP, scripts).
    pub fn layout_blocking(self: &Arc<Self>, req: &ProjectRequest) -> Result<Projection> {
        self.layouts.blocking(&self.snapshot(), req)
    }
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
