//! The 2-D view of an N-D tensor that the heatmap shows: which dim is y, which is x, a fixed
//! index for every other dim, and a strided range on y and x. A view is *repaired*, never
//! rejected: invalid dims fall back to the two largest, indices clamp, ranges shrink to fit.
//! Views larger than the screen are pooled into blocks.

use crate::slice::{Axis, Selection};
use serde::{Deserialize, Serialize};

mod pool;
mod profile;
pub use pool::{pool, pool_band, PoolGrid, PoolStat, Pooled, ViewMode};
pub use profile::{
    finish as finish_lines, jump_to, plane, profile, profile_band, LineAcc, Lines, Profile,
    Quantity,
};

/// A strided range `start..stop` by `step` over one dim.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Span {
    pub start: u64,
    pub stop: u64,
    pub step: u64,
}

impl Span {
    /// The whole of a dim of `size`.
    pub fn full(size: u64) -> Span {
        Span {
            start: 0,
            stop: size,
            step: 1,
        }
    }

    /// Number of selected indices.
    pub fn count(&self) -> u64 {
        if self.stop <= self.start {
            0
        } else {
            (self.stop - self.start).div_ceil(self.step.max(1))
        }
    }

    /// The tensor index of position `k`.
    pub fn index(&self, k: u64) -> u64 {
        self.start + k * self.step.max(1)
    }

    /// The span moved by `cells` view cells (negative: towards 0), kept inside `size`.
    pub fn panned(self, cells: i64, size: u64) -> Span {
        let len = self.stop - self.start;
        let delta = cells.saturating_mul(self.step as i64);
        let start = (self.start as i64)
            .saturating_add(delta)
            .clamp(0, size.saturating_sub(len) as i64) as u64;
        Span {
            start,
            stop: start + len,
            step: self.step,
        }
    }

    /// The span scaled by `factor` (< 1 zooms in) around view position `k`, inside `size`.
    pub fn zoomed(self, k: u64, factor: f64, size: u64) -> Span {
        let center = self.index(k);
        let len = (((self.stop - self.start) as f64 * factor).round() as u64)
            .clamp(self.step.max(1), size.max(1));
        let start = center.saturating_sub(len / 2).min(size.saturating_sub(len));
        Span {
            start,
            stop: start + len,
            step: self.step,
        }
    }

    fn make_valid(self, size: u64) -> Span {
        if size == 0 {
            return Span {
                start: 0,
                stop: 0,
                step: 1,
            };
        }
        let start = self.start.min(size - 1);
        let stop = if self.stop <= start || self.stop > size {
            size
        } else {
            self.stop
        };
        Span {
            start,
            stop,
            step: self.step.max(1),
        }
    }
}

/// Which part of a tensor the heatmap shows.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ViewSpec {
    /// The dim drawn downwards (`None` for 0-D and 1-D tensors: one row).
    pub y_dim: Option<u32>,
    /// The dim drawn across (`None` for 0-D tensors).
    pub x_dim: Option<u32>,
    /// An index for every dim; only those of dims other than y and x matter.
    pub index: Vec<u64>,
    pub y: Span,
    pub x: Span,
}

impl ViewSpec {
    /// The default view of a tensor: the two largest dims, the rest at their middle.
    pub fn default_for(shape: &[u64]) -> ViewSpec {
        ViewSpec {
            y_dim: None,
            x_dim: None,
            index: Vec::new(),
            y: Span::full(u64::MAX),
            x: Span::full(u64::MAX),
        }
        .make_valid(shape)
    }

    /// Repairs the view for `shape`: dims in range and distinct (defaulting to the two largest,
    /// in dim order), every index clamped (missing ones at the middle), ranges inside the dims.
    pub fn make_valid(mut self, shape: &[u64]) -> ViewSpec {
        let ndim = shape.len();
        let valid = |d: Option<u32>| d.filter(|&d| (d as usize) < ndim);
        let (y, x) = match ndim {
            0 => (None, None),
            1 => (None, Some(0)),
            _ => match (valid(self.y_dim), valid(self.x_dim)) {
                (Some(y), Some(x)) if y != x => (Some(y), Some(x)),
                _ => {
                    let (a, b) = two_largest(shape);
                    (Some(a as u32), Some(b as u32))
                }
            },
        };
        self.y_dim = y;
        self.x_dim = x;
        self.index.resize(ndim, u64::MAX);
        for (i, size) in self.index.iter_mut().zip(shape) {
            *i = if *i == u64::MAX {
                size / 2
            } else {
                (*i).min(size.saturating_sub(1))
            };
        }
        let size_of = |d: Option<u32>| d.map_or(1, |d| shape[d as usize]);
        self.y = self.y.make_valid(size_of(y));
        self.x = self.x.make_valid(size_of(x));
        self
    }

    /// Rows and columns of the view (cells).
    pub fn cells(&self) -> (u64, u64) {
        (self.y.count(), self.x.count())
    }

    /// The view as a selection (y then x in output order). Assumes a repaired view.
    pub fn selection(&self, shape: &[u64]) -> Selection {
        let mut axes: Vec<Axis> = self
            .index
            .iter()
            .map(|&i| Axis {
                start: i,
                step: 1,
                count: 1,
            })
            .collect();
        let mut order = Vec::new();
        for (dim, span) in [(self.y_dim, self.y), (self.x_dim, self.x)] {
            if let Some(d) = dim {
                let d = d as usize;
                if d < shape.len() {
                    axes[d] = Axis {
                        start: span.start,
                        step: span.step as i64,
                        count: span.count(),
                    };
                    order.push(d);
                }
            }
        }
        Selection { axes, order }
    }

    /// Full tensor coordinates of view cell `(row, col)`.
    pub fn coords(&self, row: u64, col: u64) -> Vec<u64> {
        let mut idx = self.index.clone();
        if let Some(d) = self.y_dim {
            idx[d as usize] = self.y.index(row);
        }
        if let Some(d) = self.x_dim {
            idx[d as usize] = self.x.index(col);
        }
        idx
    }

    /// The numpy-style spec of the cell rectangle `rows x cols` (inclusive-exclusive, in view
    /// positions), for edits and the CLI.
    pub fn rect_spec(&self, rows: (u64, u64), cols: (u64, u64)) -> crate::slice::SliceSpec {
        use crate::slice::DimSpec;
        let mut dims: Vec<DimSpec> = self
            .index
            .iter()
            .map(|&i| DimSpec::Index(i as i64))
            .collect();
        for (dim, span, (a, b)) in [(self.y_dim, self.y, rows), (self.x_dim, self.x, cols)] {
            if let Some(d) = dim {
                let start = span.index(a) as i64;
                let stop = span.index(b.saturating_sub(1)) as i64 + 1;
                dims[d as usize] = DimSpec::Range {
                    start: Some(start),
                    stop: Some(stop),
                    step: Some(span.step as i64),
                };
            }
        }
        crate::slice::SliceSpec(dims)
    }
}

/// The two largest dims, returned in dim order (ties go to the later dims, the usual layout of
/// weight matrices).
pub fn two_largest(shape: &[u64]) -> (usize, usize) {
    let mut dims: Vec<usize> = (0..shape.len()).collect();
    dims.sort_by(|&a, &b| shape[b].cmp(&shape[a]).then(b.cmp(&a)));
    let (a, b) = (dims[0], dims[1]);
    (a.min(b), a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use crate::slice::SliceSpec;

    #[test]
    fn repairs() {
        type Row<'a> = (&'a str, &'a [u64], (Option<u32>, Option<u32>));
        let rows: &[Row] = &[
            (
                "numpy ordering: two largest",
                &[800, 50, 900],
                (Some(0), Some(2)),
            ),
            ("ties go to later dims", &[4, 4, 4], (Some(1), Some(2))),
            ("1-D is one row", &[7], (None, Some(0))),
            ("0-D is one cell", &[], (None, None)),
        ];
        for (label, shape, dims) in rows {
            let v = ViewSpec::default_for(shape);
            assert_eq!((v.y_dim, v.x_dim), *dims, "{label}");
        }
        let v = ViewSpec {
            y_dim: Some(1),
            x_dim: Some(1),
            index: vec![99],
            y: Span {
                start: 5,
                stop: 2,
                step: 0,
            },
            x: Span {
                start: 0,
                stop: 999,
                step: 3,
            },
        }
        .make_valid(&[10, 20, 30]);
        assert_eq!(
            (v.y_dim, v.x_dim),
            (Some(1), Some(2)),
            "equal dims repaired"
        );
        assert_eq!(v.index, vec![9, 10, 15], "clamped, missing at the middle");
        assert_eq!(
            v.y,
            Span {
                start: 5,
                stop: 20,
                step: 1
            }
        );
        assert_eq!(
            v.x,
            Span {
                start: 0,
                stop: 30,
                step: 3
            }
        );
        assert_eq!(v.cells(), (15, 10));
    }

    #[test]
    fn pan_and_zoom_stay_inside_the_dim() {
        let s = Span {
            start: 100,
            stop: 200,
            step: 2,
        };
        assert_eq!(
            s.panned(10, 1000),
            Span {
                start: 120,
                stop: 220,
                step: 2
            }
        );
        assert_eq!(
            s.panned(-500, 1000),
            Span {
                start: 0,
                stop: 100,
                step: 2
            },
            "clamped at 0"
        );
        assert_eq!(
            s.panned(500, 250),
            Span {
                start: 150,
                stop: 250,
                step: 2
            },
            "clamped at the end"
        );
        assert_eq!(
            s.zoomed(25, 0.5, 1000),
            Span {
                start: 125,
                stop: 175,
                step: 2
            },
            "around index 150"
        );
        assert_eq!(
            s.zoomed(0, 100.0, 1000),
            Span {
                start: 0,
                stop: 1000,
                step: 2
            },
            "never past the dim"
        );
        assert_eq!(
            Span {
                start: 0,
                stop: 3,
                step: 1
            }
            .zoomed(1, 0.1, 3)
            .count(),
            1,
            "at least one cell"
        );
    }

    #[test]
    fn selection_and_rect_spec_agree_with_numpy_slices() {
        let shape = [3u64, 4, 5];
        let v = ViewSpec {
            y_dim: Some(2),
            x_dim: Some(0),
            index: vec![0, 2, 0],
            y: Span {
                start: 1,
                stop: 5,
                step: 2,
            },
            x: Span::full(3),
        }
        .make_valid(&shape);
        let sel = v.selection(&shape);
        assert_eq!(
            sel.out_shape(),
            vec![2, 3],
            "y (dim 2) then x (dim 0): transposed"
        );
        let idx: Vec<u64> = sel.element_indices(&shape).collect();
        // element [x, 2, y] = x*20 + 2*5 + y, rows y in {1, 3}
        assert_eq!(idx, vec![11, 31, 51, 13, 33, 53]);
        assert_eq!(v.coords(1, 2), vec![2, 2, 3]);
        assert_eq!(v.rect_spec((0, 2), (1, 3)).to_string(), "1:3:1,2,1:4:2");
        let rect = SliceSpec::parse("1:3:1,2,1:4:2")
            .unwrap()
            .resolve(&shape)
            .unwrap();
        assert_eq!(rect.elements(), 4);
    }

    #[test]
    fn pooling_keeps_outliers_and_nans() {
        // 4x6 F32 view pooled into 2x3 blocks of 2x2.
        let mut vals: Vec<f32> = (0..24).map(|i| i as f32).collect();
        vals[7] = -100.0;
        vals[22] = f32::NAN;
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = [4u64, 6];
        let v = ViewSpec::default_for(&shape);
        let p = pool(
            Dtype::F32,
            &shape,
            &v,
            data.as_slice(),
            2,
            3,
            PoolStat::MaxAbs,
        );
        assert_eq!((p.rows, p.cols, p.block), (2, 3, (2, 2)));
        assert_eq!(p.values[0], -100.0);
        assert!(p.values[5].is_nan());
        let m = pool(
            Dtype::F32,
            &shape,
            &v,
            data.as_slice(),
            2,
            3,
            PoolStat::Mean,
        );
        assert_eq!(m.values[1], (2.0 + 3.0 + 8.0 + 9.0) / 4.0);
        let exact = pool(
            Dtype::F32,
            &shape,
            &v,
            data.as_slice(),
            10,
            10,
            PoolStat::Max,
        );
        assert_eq!(exact.block, (1, 1));
        assert_eq!(exact.values[3], 3.0);
    }
}
