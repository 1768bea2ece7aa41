//! Small plotters charts on canvases: line profiles, histograms, bar charts. Drawing happens
//! in the browser only; each function returns where its plotting area landed so pointer
//! positions map back to data.

#[cfg_attr(feature = "hydrate", path = "charts/draw.rs")]
#[cfg_attr(not(feature = "hydrate"), path = "charts/no_draw.rs")]
mod draw;

pub use draw::{bars, histogram, line, scatter, strip};

use super::heatmap::Geom;

/// The data index under pixel `x` of a chart of `n` equal slots.
pub fn slot_at(g: Geom, n: usize, x: f64) -> Option<usize> {
    let f = (x - g.left) / g.width;
    (n > 0 && (0.0..1.0).contains(&f)).then(|| ((f * n as f64) as usize).min(n - 1))
}

/// The `data-plot` attribute of a chart: its plotting area in canvas pixels.
pub fn plot_attr(g: Option<Geom>) -> Option<String> {
    g.map(|g| format!("{},{},{},{}", g.left, g.top, g.width, g.height))
}

/// One bar of a bar chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub flagged: bool,
}
