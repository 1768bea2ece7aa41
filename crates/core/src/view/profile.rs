//! Row and column profiles of a 2-D view: per row and per column, the L2 norm, the mean and
//! the largest magnitude, over every cell of the view (never pooled). Dead neurons, outlier
//! channels and massive weights show up as dips and spikes.

use super::ViewSpec;
use crate::dtype::{self, Dtype};
use crate::slice::Axis;
use crate::source::ByteSource;
use serde::{Deserialize, Serialize};

/// One quantity per line (row or column). A line holding NaN is NaN in every quantity.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Lines {
    pub l2: Vec<f32>,
    pub mean: Vec<f32>,
    pub max_abs: Vec<f32>,
}

/// Which quantity of a profile to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Quantity {
    #[default]
    L2,
    Mean,
    MaxAbs,
}

impl Quantity {
    pub const ALL: [Quantity; 3] = [Quantity::L2, Quantity::Mean, Quantity::MaxAbs];

    pub fn name(self) -> &'static str {
        match self {
            Quantity::L2 => "l2",
            Quantity::Mean => "mean",
            Quantity::MaxAbs => "maxabs",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Quantity::L2 => "L2 norm",
            Quantity::Mean => "mean",
            Quantity::MaxAbs => "max |x|",
        }
    }

    pub fn parse(text: &str) -> Option<Quantity> {
        Quantity::ALL.into_iter().find(|q| q.name() == text)
    }
}

impl Lines {
    /// The values of one quantity.
    pub fn get(&self, q: Quantity) -> &[f32] {
        match q {
            Quantity::L2 => &self.l2,
            Quantity::Mean => &self.mean,
            Quantity::MaxAbs => &self.max_abs,
        }
    }
}

/// Row and column profiles of a view.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Profile {
    /// One entry per view row.
    pub rows: Lines,
    /// One entry per view column.
    pub cols: Lines,
}

/// Running sums of one line.
#[derive(Clone, Copy, Debug, Default)]
pub struct LineAcc {
    sum: f64,
    sum_sq: f64,
    max_abs: f64,
    nan: bool,
}

impl LineAcc {
    fn add(&mut self, v: f64) {
        if v.is_nan() {
            self.nan = true;
        }
        self.sum += v;
        self.sum_sq += v * v;
        self.max_abs = self.max_abs.max(v.abs());
    }

    /// Adds a part of the same line.
    pub fn merge(&mut self, o: &LineAcc) {
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.nan |= o.nan;
    }
}

/// Per-row and per-column sums over the view rows `band`: `(rows of the band, all columns)`.
pub fn profile_band(
    dtype: Dtype,
    shape: &[u64],
    spec: &ViewSpec,
    source: &(impl ByteSource + ?Sized),
    band: std::ops::Range<u64>,
) -> (Vec<LineAcc>, Vec<LineAcc>) {
    let (_, cols) = spec.cells();
    let mut row_acc = Vec::with_capacity((band.end - band.start) as usize);
    let mut col_acc = vec![LineAcc::default(); cols as usize];
    let mut sel = spec.selection(shape);
    let mut values = Vec::with_capacity(cols as usize);
    for r in band {
        if let Some(yd) = spec.y_dim {
            sel.axes[yd as usize] = Axis {
                start: spec.y.index(r),
                step: 1,
                count: 1,
            };
        }
        let raw = crate::source::extract(dtype, shape, &sel, source);
        dtype::decode_f64_into(dtype, &raw, &mut values);
        let mut acc = LineAcc::default();
        for (c, &v) in values.iter().enumerate() {
            acc.add(v);
            col_acc[c].add(v);
        }
        row_acc.push(acc);
    }
    (row_acc, col_acc)
}

/// The quantities of finished lines, each over `n` cells.
pub fn finish(lines: &[LineAcc], n: u64) -> Lines {
    let mut out = Lines::default();
    for l in lines {
        let (l2, mean, max_abs) = if l.nan {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            (l.sum_sq.sqrt(), l.sum / n.max(1) as f64, l.max_abs)
        };
        out.l2.push(l2 as f32);
        out.mean.push(mean as f32);
        out.max_abs.push(max_abs as f32);
    }
    out
}

/// Row and column profiles of the whole view, in one band.
pub fn profile(
    dtype: Dtype,
    shape: &[u64],
    spec: &ViewSpec,
    source: &(impl ByteSource + ?Sized),
) -> Profile {
    let (rows, cols) = spec.cells();
    let (r, c) = profile_band(dtype, shape, spec, source, 0..rows);
    Profile {
        rows: finish(&r, cols),
        cols: finish(&c, rows),
    }
}

/// The view with the whole extent of its y and x dims: what profiles are computed over, so
/// they stay put while the heatmap zooms and pans.
pub fn plane(view: &ViewSpec, shape: &[u64]) -> ViewSpec {
    let full = |d: Option<u32>| super::Span::full(d.map_or(1, |d| shape[d as usize]));
    ViewSpec {
        y: full(view.y_dim),
        x: full(view.x_dim),
        ..view.clone()
    }
    .make_valid(shape)
}

/// The view moved so that dim index `index` of its y axis (or x axis) is shown exactly, in a
/// window of at most `window` cells centred on it (the current span kept if it already shows
/// it cell by cell); with the view position of `index`.
pub fn jump_to(
    view: &ViewSpec,
    shape: &[u64],
    along_y: bool,
    index: u64,
    window: u64,
) -> (ViewSpec, u64) {
    let (dim, span) = if along_y {
        (view.y_dim, view.y)
    } else {
        (view.x_dim, view.x)
    };
    let size = dim.map_or(1, |d| shape[d as usize]);
    let index = index.min(size.saturating_sub(1));
    let shown =
        span.step == 1 && span.count() <= window && (span.start..span.stop).contains(&index);
    let span = if shown {
        span
    } else {
        let w = span.count().clamp(1, window.max(1)).min(size);
        let start = index.saturating_sub(w / 2).min(size - w);
        super::Span {
            start,
            stop: start + w,
            step: 1,
        }
    };
    let mut v = view.clone();
    if along_y {
        v.y = span;
    } else {
        v.x = span;
    }
    let v = v.make_valid(shape);
    let pos = index - if along_y { v.y.start } else { v.x.start };
    (v, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumping_shows_the_line_exactly() {
        let shape = [2048, 128];
        let v = ViewSpec::default_for(&shape);
        // Pooled overview of 2048 rows: jump to row 300 in a 64-row window.
        let (j, pos) = jump_to(&v, &shape, true, 300, 64);
        assert_eq!((j.y.start, j.y.stop, j.y.step), (268, 332, 1));
        assert_eq!(j.y.index(pos), 300);
        assert_eq!(j.x, v.x);
        // Near the end the window shifts to fit; an exact view showing the row stays put.
        let (j2, pos2) = jump_to(&j, &shape, true, 2047, 64);
        assert_eq!((j2.y.start, j2.y.stop), (1984, 2048));
        assert_eq!(j2.y.index(pos2), 2047);
        let (j3, pos3) = jump_to(&j, &shape, true, 270, 64);
        assert_eq!((j3.y, pos3), (j.y, 2));
        // Columns, and the whole plane for profiles.
        let (c, cpos) = jump_to(&v, &shape, false, 5, 700);
        assert_eq!((c.x.count(), c.x.index(cpos)), (128, 5));
        assert_eq!(plane(&j, &shape).y.count(), 2048);
    }
    use crate::view::Span;

    #[test]
    fn norms_means_and_peaks_per_line() {
        // 3 x 4 F32: row 1 has the peak, column 2 holds a NaN in row 2.
        let values: [f32; 12] = [1., 2., 2., 0., 0., -9., 0., 0., 3., 4., f32::NAN, 0.];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = [3, 4];
        let spec = ViewSpec::default_for(&shape);
        let p = profile(Dtype::F32, &shape, &spec, bytes.as_slice());
        assert_eq!(p.rows.l2[0], 3.0);
        assert_eq!(p.rows.max_abs[1], 9.0);
        assert_eq!(p.rows.mean[1], -2.25);
        assert!(p.rows.l2[2].is_nan());
        assert_eq!(p.cols.l2[1], (4.0f32 + 81.0 + 16.0).sqrt());
        assert!(p.cols.mean[2].is_nan());
        assert_eq!(p.cols.max_abs[3], 0.0);
        // A strided, transposed view profiles the cells it shows.
        let spec = ViewSpec {
            y_dim: Some(1),
            x_dim: Some(0),
            y: Span {
                start: 0,
                stop: 4,
                step: 2,
            },
            ..spec
        }
        .make_valid(&shape);
        let p = profile(Dtype::F32, &shape, &spec, bytes.as_slice());
        assert_eq!(p.rows.l2.len(), 2);
        assert_eq!(p.rows.l2[0], (1.0f32 + 9.0).sqrt());
        assert_eq!(p.cols.max_abs[..2], [2.0, 0.0]);
        assert!(p.cols.max_abs[2].is_nan());
    }
}
