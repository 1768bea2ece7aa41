//! Selections of tensor elements (numpy-style `3,:,10:20`).
//!
//! A [`SliceSpec`] is what a user typed; [`SliceSpec::resolve`] checks it against a shape and
//! gives a [`Selection`]: per tensor dim a start, step and count, and which dims the result
//! keeps (in output order). [`crate::source::extract`] copies the selected elements out of
//! a tensor's bytes.

use std::fmt;

/// One dimension of a numpy-style index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimSpec {
    /// A single index (negative counts from the end); the dim is dropped from the result.
    Index(i64),
    /// `start:stop:step`, each optional.
    Range {
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
    },
}

/// A numpy-style index over the leading dims; missing trailing dims are taken whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceSpec(pub Vec<DimSpec>);

/// Why a selection is not valid for a tensor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SliceError {
    /// The text is not a numpy-style index.
    #[error("cannot read slice {spec:?}: {reason}")]
    Parse { spec: String, reason: String },
    /// More indices than the tensor has dims.
    #[error("slice has {given} indices but the tensor has {ndim} dims")]
    TooManyIndices { given: usize, ndim: usize },
    /// An index outside a dim.
    #[error("index {index} out of bounds for dim {dim} of size {size}")]
    IndexOutOfRange { dim: usize, index: i64, size: u64 },
    /// A zero step.
    #[error("slice step cannot be zero (dim {dim})")]
    ZeroStep { dim: usize },
    /// The selection holds more elements than one request may.
    #[error("selection has {elements} elements, more than the {cap} one request may read; narrow it or add a step")]
    TooLarge { elements: u64, cap: u64 },
    /// A view names a dim twice or one the tensor lacks.
    #[error("{reason}")]
    BadView { reason: String },
}

impl SliceSpec {
    /// Parses `3,:,10:20`, `0:8:2`, `-1`, `::-1`; an empty string (or `:`) selects everything.
    pub fn parse(text: &str) -> Result<SliceSpec, SliceError> {
        let err = |reason: String| SliceError::Parse {
            spec: text.to_string(),
            reason,
        };
        let trimmed = text
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim();
        if trimmed.is_empty() {
            return Ok(SliceSpec(Vec::new()));
        }
        let mut dims = Vec::new();
        for part in trimmed.split(',') {
            let part = part.trim();
            if part == "..." {
                return Err(err("'...' is not supported; list the leading dims".into()));
            }
            let num = |s: &str| -> Result<Option<i64>, SliceError> {
                let s = s.trim();
                if s.is_empty() {
                    Ok(None)
                } else {
                    s.parse::<i64>()
                        .map(Some)
                        .map_err(|_| err(format!("{s:?} is not an integer")))
                }
            };
            if part.contains(':') {
                let pieces: Vec<&str> = part.split(':').collect();
                if pieces.len() > 3 {
                    return Err(err(format!("{part:?} has more than two ':'")));
                }
                dims.push(DimSpec::Range {
                    start: num(pieces[0])?,
                    stop: num(pieces[1])?,
                    step: pieces.get(2).map(|s| num(s)).transpose()?.flatten(),
                });
            } else {
                match num(part)? {
                    Some(i) => dims.push(DimSpec::Index(i)),
                    None => return Err(err("empty index between commas".into())),
                }
            }
        }
        Ok(SliceSpec(dims))
    }

    /// Checks the spec against `shape` and fixes every dim's start, step and count.
    pub fn resolve(&self, shape: &[u64]) -> Result<Selection, SliceError> {
        if self.0.len() > shape.len() {
            return Err(SliceError::TooManyIndices {
                given: self.0.len(),
                ndim: shape.len(),
            });
        }
        let mut axes = Vec::with_capacity(shape.len());
        let mut keep = Vec::new();
        for (dim, &size) in shape.iter().enumerate() {
            let spec = self.0.get(dim).copied().unwrap_or(DimSpec::Range {
                start: None,
                stop: None,
                step: None,
            });
            match spec {
                DimSpec::Index(i) => {
                    axes.push(Axis {
                        start: wrap_index(i, size, dim)?,
                        step: 1,
                        count: 1,
                    });
                }
                DimSpec::Range { start, stop, step } => {
                    axes.push(range_axis(start, stop, step, size, dim)?);
                    keep.push(dim);
                }
            }
        }
        Ok(Selection { axes, order: keep })
    }
}

impl fmt::Display for SliceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| match *d {
                DimSpec::Index(i) => i.to_string(),
                DimSpec::Range {
                    start,
                    stop,
                    step: None,
                } => format!("{}:{}", o(start), o(stop)),
                DimSpec::Range { start, stop, step } => {
                    format!("{}:{}:{}", o(start), o(stop), o(step))
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn wrap_index(i: i64, size: u64, dim: usize) -> Result<u64, SliceError> {
    let wrapped = if i < 0 {
        i128::from(size) + i128::from(i)
    } else {
        i128::from(i)
    };
    if wrapped < 0 || wrapped >= i128::from(size) {
        return Err(SliceError::IndexOutOfRange {
            dim,
            index: i,
            size,
        });
    }
    Ok(wrapped as u64)
}

/// numpy's `slice.indices`: clamp start/stop into the dim, then count the steps.
fn range_axis(
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
    size: u64,
    dim: usize,
) -> Result<Axis, SliceError> {
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(SliceError::ZeroStep { dim });
    }
    let n = i128::from(size);
    let clamp = |v: Option<i64>, default: i128, lo: i128, hi: i128| -> i128 {
        match v {
            None => default,
            Some(v) => {
                let v = i128::from(v);
                let v = if v < 0 { v + n } else { v };
                v.clamp(lo, hi)
            }
        }
    };
    let (start, stop) = if step > 0 {
        (clamp(start, 0, 0, n), clamp(stop, n, 0, n))
    } else {
        (clamp(start, n - 1, -1, n - 1), clamp(stop, -1, -1, n - 1))
    };
    let step_i = i128::from(step);
    let count = if step > 0 {
        if stop > start {
            (stop - start + step_i - 1) / step_i
        } else {
            0
        }
    } else if start > stop {
        (start - stop + (-step_i) - 1) / (-step_i)
    } else {
        0
    };
    Ok(Axis {
        start: if count == 0 { 0 } else { start as u64 },
        step,
        count: count as u64,
    })
}

/// Which indices of one tensor dim are selected: `start + k * step` for `k < count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    pub start: u64,
    pub step: i64,
    pub count: u64,
}

impl Axis {
    /// The tensor index of the `k`-th selected position.
    pub fn index(&self, k: u64) -> u64 {
        (self.start as i128 + k as i128 * self.step as i128) as u64
    }

    /// The position `k` at which tensor index `i` is selected, if it is.
    pub fn position(&self, i: u64) -> Option<u64> {
        let d = i as i128 - self.start as i128;
        let s = self.step as i128;
        if d % s != 0 {
            return None;
        }
        let k = d / s;
        (k >= 0 && (k as u64) < self.count).then_some(k as u64)
    }
}

/// A resolved selection: one [`Axis`] per tensor dim, and the dims kept in the result, in
/// output order (ascending for numpy slices; a 2-D view may put x before y).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub axes: Vec<Axis>,
    pub order: Vec<usize>,
}

impl Selection {
    /// Shape of the result.
    pub fn out_shape(&self) -> Vec<u64> {
        self.order.iter().map(|&d| self.axes[d].count).collect()
    }

    /// Number of selected elements.
    pub fn elements(&self) -> u64 {
        self.axes.iter().map(|a| a.count).product()
    }

    /// Fails if the selection holds more than `cap` elements.
    pub fn check_cap(&self, cap: u64) -> Result<(), SliceError> {
        let elements = self.elements();
        if elements > cap {
            return Err(SliceError::TooLarge { elements, cap });
        }
        Ok(())
    }

    /// Flat (C-order) element indices of the selection, in output order.
    pub fn element_indices(&self, shape: &[u64]) -> Odometer {
        self.walk(shape, self.order.len())
    }

    /// Flat indices of the first element of each output row (the innermost kept dim).
    pub fn row_starts(&self, shape: &[u64]) -> Odometer {
        self.walk(shape, self.order.len().saturating_sub(1))
    }

    /// Walks the first `depth` kept dims in output order; the others sit at their start.
    fn walk(&self, shape: &[u64], depth: usize) -> Odometer {
        let strides = strides(shape);
        let base = self
            .axes
            .iter()
            .zip(&strides)
            .map(|(a, s)| a.start * s)
            .sum::<u64>();
        let dims = self.order[..depth]
            .iter()
            .map(|&d| {
                (
                    self.axes[d].count,
                    i128::from(self.axes[d].step) * i128::from(strides[d]),
                )
            })
            .collect::<Vec<_>>();
        let remaining = if self.axes.iter().any(|a| a.count == 0) {
            0
        } else {
            dims.iter().map(|d| d.0).product()
        };
        Odometer {
            counter: vec![0; dims.len()],
            dims,
            next: i128::from(base),
            remaining,
        }
    }

    /// Where tensor element `flat` lands in the output (its C-order position), if selected.
    pub fn output_position(&self, shape: &[u64], flat: u64) -> Option<u64> {
        let mut rem = flat;
        let mut idx = vec![0u64; shape.len()];
        for d in (0..shape.len()).rev() {
            let size = shape[d].max(1);
            idx[d] = rem % size;
            rem /= size;
        }
        let mut out_pos = 0u64;
        let kept: std::collections::HashSet<usize> = self.order.iter().copied().collect();
        for (d, axis) in self.axes.iter().enumerate() {
            let k = axis.position(idx[d])?;
            if !kept.contains(&d) && k != 0 {
                return None;
            }
        }
        for &d in &self.order {
            let axis = self.axes[d];
            out_pos = out_pos * axis.count + axis.position(idx[d])?;
        }
        Some(out_pos)
    }
}

/// Iterates flat element indices over nested (count, flat step) dims, last dim fastest.
pub struct Odometer {
    dims: Vec<(u64, i128)>,
    counter: Vec<u64>,
    next: i128,
    remaining: u64,
}

impl Iterator for Odometer {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let current = self.next as u64;
        for d in (0..self.dims.len()).rev() {
            let (count, step) = self.dims[d];
            self.counter[d] += 1;
            if self.counter[d] < count {
                self.next += step;
                break;
            }
            self.next -= step * i128::from(count - 1);
            self.counter[d] = 0;
        }
        Some(current)
    }
}

/// C-order strides in elements.
pub fn strides(shape: &[u64]) -> Vec<u64> {
    let mut out = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        out[d] = out[d + 1] * shape[d + 1];
    }
    out
}

/// The multi-index of element `flat` of a C-order tensor of `shape`.
pub fn unflatten(shape: &[u64], mut flat: u64) -> Vec<u64> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        let s = shape[d].max(1);
        idx[d] = flat % s;
        flat /= s;
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflatten_is_c_order() {
        assert_eq!(unflatten(&[2, 3, 4], 0), [0, 0, 0]);
        assert_eq!(unflatten(&[2, 3, 4], 23), [1, 2, 3], "the last element");
        assert_eq!(unflatten(&[2, 3, 4], 13), [1, 0, 1]);
        assert_eq!(unflatten(&[], 0), Vec::<u64>::new(), "a scalar");
    }

    #[test]
    fn parse_forms() {
        let rows: &[(&str, &str)] = &[
            ("3,:,10:20", "3,:,10:20"),
            ("0:8:2", "0:8:2"),
            ("-1", "-1"),
            ("::-1", ":-1" /* no stop */),
            ("", ""),
        ];
        for (text, shown) in rows {
            let spec = SliceSpec::parse(text).expect(text);
            if *text != "::-1" {
                assert_eq!(spec.to_string(), *shown, "{text}");
            }
        }
        assert!(SliceSpec::parse("1,,2").is_err());
        assert!(SliceSpec::parse("a").is_err());
        assert!(SliceSpec::parse("1:2:3:4").is_err());
    }

    #[test]
    fn resolve_like_numpy() {
        let rows: &[(&str, &[u64], &[u64])] = &[
            ("numpy ordering", &[4, 5, 6], &[4, 5, 6]),
            ("index drops dim", &[4, 5, 6], &[5, 6]),
            ("stop past end clamps", &[10], &[7]),
            ("negative step", &[10], &[10]),
            ("empty range", &[10], &[0]),
        ];
        let specs = ["", "1", "3:100", "::-1", "5:2"];
        for ((label, shape, out), spec) in rows.iter().zip(specs) {
            let sel = SliceSpec::parse(spec).unwrap().resolve(shape).expect(label);
            assert_eq!(sel.out_shape(), *out, "{label}");
        }
    }

    #[test]
    fn out_of_range_names_dim_index_size() {
        let err = SliceSpec::parse("0,7")
            .unwrap()
            .resolve(&[2, 5])
            .unwrap_err();
        assert_eq!(err.to_string(), "index 7 out of bounds for dim 1 of size 5");
        let err = SliceSpec::parse("-3").unwrap().resolve(&[2]).unwrap_err();
        assert_eq!(
            err,
            SliceError::IndexOutOfRange {
                dim: 0,
                index: -3,
                size: 2
            }
        );
        let err = SliceSpec::parse("0,0,0")
            .unwrap()
            .resolve(&[2, 2])
            .unwrap_err();
        assert_eq!(err, SliceError::TooManyIndices { given: 3, ndim: 2 });
        assert_eq!(
            SliceSpec::parse("::0").unwrap().resolve(&[3]).unwrap_err(),
            SliceError::ZeroStep { dim: 0 }
        );
    }
}
