//! Pooled overviews: a view larger than the screen summarised in blocks of cells.

use super::ViewSpec;
use crate::dtype::{self, Dtype};
use crate::slice::Axis;
use crate::source::ByteSource;
use serde::{Deserialize, Serialize};

/// The statistic that summarises a block of cells in a pooled view.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum PoolStat {
    /// The value with the largest magnitude (sign kept): outliers stay visible.
    #[default]
    MaxAbs,
    Mean,
    Min,
    Max,
}

impl PoolStat {
    /// All statistics, for pickers.
    pub const ALL: [PoolStat; 4] = [
        PoolStat::MaxAbs,
        PoolStat::Mean,
        PoolStat::Min,
        PoolStat::Max,
    ];

    /// Short name for URLs and labels.
    pub fn name(self) -> &'static str {
        match self {
            PoolStat::MaxAbs => "max|x|",
            PoolStat::Mean => "mean",
            PoolStat::Min => "min",
            PoolStat::Max => "max",
        }
    }

    /// Parses [`PoolStat::name`] (or its URL form `maxabs`).
    pub fn parse(text: &str) -> Option<PoolStat> {
        PoolStat::ALL
            .into_iter()
            .find(|s| s.name() == text || (text == "maxabs" && *s == PoolStat::MaxAbs))
    }
}

/// A view summarised in blocks of `block.0 x block.1` cells.
#[derive(Clone, Debug, PartialEq)]
pub struct Pooled {
    pub rows: u64,
    pub cols: u64,
    pub block: (u64, u64),
    pub values: Vec<f32>,
}

/// How a view is cut into blocks: `block` cells each, giving a `rows x cols` grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGrid {
    pub rows: u64,
    pub cols: u64,
    pub block: (u64, u64),
}

impl PoolGrid {
    /// The grid that fits the view into at most `max_rows x max_cols` blocks.
    pub fn fit(spec: &ViewSpec, max_rows: u64, max_cols: u64) -> PoolGrid {
        let (rows, cols) = spec.cells();
        let by = rows.div_ceil(max_rows.max(1)).max(1);
        let bx = cols.div_ceil(max_cols.max(1)).max(1);
        PoolGrid {
            rows: rows.div_ceil(by),
            cols: cols.div_ceil(bx),
            block: (by, bx),
        }
    }
}

/// Pools the view into at most `max_rows x max_cols` blocks, reading each view row once.
/// A block holding NaN is NaN, so NaNs never disappear into an average.
pub fn pool(
    dtype: Dtype,
    shape: &[u64],
    spec: &ViewSpec,
    source: &(impl ByteSource + ?Sized),
    max_rows: u64,
    max_cols: u64,
    stat: PoolStat,
) -> Pooled {
    let grid = PoolGrid::fit(spec, max_rows, max_cols);
    let values = pool_band(dtype, shape, spec, source, grid, stat, 0..grid.rows);
    Pooled {
        rows: grid.rows,
        cols: grid.cols,
        block: grid.block,
        values,
    }
}

/// Pools the grid rows `band` (so several bands can run on several cores).
pub fn pool_band(
    dtype: Dtype,
    shape: &[u64],
    spec: &ViewSpec,
    source: &(impl ByteSource + ?Sized),
    grid: PoolGrid,
    stat: PoolStat,
    band: std::ops::Range<u64>,
) -> Vec<f32> {
    let (rows, cols) = spec.cells();
    let (by, bx) = grid.block;
    let out_cols = grid.cols;
    let n = ((band.end - band.start) * out_cols) as usize;
    let init = match stat {
        PoolStat::MaxAbs | PoolStat::Mean => 0.0,
        PoolStat::Min => f64::INFINITY,
        PoolStat::Max => f64::NEG_INFINITY,
    };
    let mut acc = vec![init; n];
    let mut nan = vec![false; n];
    let mut row_sel = spec.selection(shape);
    let row_len = cols as usize;
    let mut values = vec![0f64; row_len];
    for r in (band.start * by)..(band.end * by).min(rows) {
        // One view row at a time: fix the y axis to this row.
        if let Some(yd) = spec.y_dim {
            row_sel.axes[yd as usize] = Axis {
                start: spec.y.index(r),
                step: 1,
                count: 1,
            };
        }
        let raw = crate::source::extract(dtype, shape, &row_sel, source);
        dtype::decode_f64_into(dtype, &raw, &mut values);
        let base = ((r / by - band.start) * out_cols) as usize;
        for (c, &v) in values.iter().enumerate().take(row_len) {
            let i = base + c / bx as usize;
            if v.is_nan() {
                nan[i] = true;
                continue;
            }
            let a = &mut acc[i];
            match stat {
                PoolStat::MaxAbs => {
                    if v.abs() > a.abs() || (v.abs() == a.abs() && v > *a) {
                        *a = v;
                    }
                }
                PoolStat::Mean => *a += v,
                PoolStat::Min => *a = a.min(v),
                PoolStat::Max => *a = a.max(v),
            }
        }
    }
    acc.iter()
        .zip(&nan)
        .enumerate()
        .map(|(i, (&a, &is_nan))| {
            if is_nan {
                return f32::NAN;
            }
            if stat == PoolStat::Mean {
                let (br, bc) = ((i as u64) / out_cols + band.start, (i as u64) % out_cols);
                let h = by.min(rows - br * by);
                let w = bx.min(cols - bc * bx);
                (a / (h * w) as f64) as f32
            } else {
                a as f32
            }
        })
        .collect()
}

/// What a heatmap shows: the edited model, the base, or the change between them.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum ViewMode {
    /// The model with every edit and loaded patch.
    #[default]
    After,
    /// The base model, as on disk.
    Before,
    /// After - before, on its own diverging scale centred at zero.
    Delta,
}

impl ViewMode {
    pub const ALL: [ViewMode; 3] = [ViewMode::After, ViewMode::Before, ViewMode::Delta];

    pub fn name(self) -> &'static str {
        match self {
            ViewMode::After => "after",
            ViewMode::Before => "before",
            ViewMode::Delta => "delta",
        }
    }

    pub fn parse(text: &str) -> Option<ViewMode> {
        ViewMode::ALL.into_iter().find(|m| m.name() == text)
    }
}
