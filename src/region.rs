//! Region operations: the edits researchers make to whole rows, columns and blocks. Copy a
//! region from another place (converting dtype), swap two rows or columns, fill with seeded
//! noise, blend toward another tensor, scale by a factor per row or per column. Each plans
//! ordinary byte changes, so it becomes ordinary patch entries.
//!
//! Rows are indices of a tensor's first dim and columns of its last dim; for a 2-D matrix
//! these are its rows and columns.

use crate::dtype::{self, EncodeOptions, Kind, Number};
use crate::edit::{self, Change, EditError};
use crate::header::TensorInfo;
use crate::slice::{self, ByteSource, Selection, SliceSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// A region operation on the selected elements of a tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Region {
    /// Copy the elements `from[from_spec]` (same tensor or another) onto the selection, in
    /// order; the two regions must have the same shape (size-1 dims aside). Values are
    /// converted when the dtypes differ; a value the target cannot hold is an error.
    Copy { from: String, from_spec: String },
    /// Swap rows `a` and `b` (indices of the first dim).
    SwapRows { a: u64, b: u64 },
    /// Swap columns `a` and `b` (indices of the last dim).
    SwapColumns { a: u64, b: u64 },
    /// Replace with normal noise of mean 0 and this std, drawn in selection order from a
    /// ChaCha8 stream seeded with `seed`: the same seed gives the same values.
    Noise { std: f64, seed: u64 },
    /// Move toward another tensor of the same shape: `(1 - alpha) * x + alpha * other`, over
    /// the same selection of both.
    Blend { with: String, alpha: f64 },
    /// Multiply row `i` by `factors[i]` (one factor per row of the tensor).
    ScaleRows { factors: Vec<f64> },
    /// Multiply column `j` by `factors[j]` (one factor per column of the tensor).
    ScaleColumns { factors: Vec<f64> },
}

impl Region {
    /// The short name used in history labels.
    pub fn name(&self) -> &'static str {
        match self {
            Region::Copy { .. } => "copy",
            Region::SwapRows { .. } => "swap rows",
            Region::SwapColumns { .. } => "swap columns",
            Region::Noise { .. } => "noise",
            Region::Blend { .. } => "blend",
            Region::ScaleRows { .. } => "scale rows",
            Region::ScaleColumns { .. } => "scale columns",
        }
    }

    /// The other tensor this operation reads, with the spec to read it at (`None`: the
    /// target's own selection).
    pub fn operand(&self) -> Option<(&str, Option<&str>)> {
        match self {
            Region::Copy { from, from_spec } => Some((from, Some(from_spec))),
            Region::Blend { with, .. } => Some((with, None)),
            _ => None,
        }
    }
}

/// Why a region operation cannot be planned.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Slice(#[from] slice::SliceError),
    /// Operands that do not fit together.
    #[error("{0}")]
    Mismatch(String),
}

/// The other tensor of a copy or blend: its header, the selection to read and its bytes
/// (base + edits).
pub struct Operand<'a, S: ByteSource + ?Sized> {
    pub info: &'a TensorInfo,
    pub selection: Selection,
    pub source: &'a S,
}

/// Shape without its size-1 dims.
fn squeezed(shape: &[u64]) -> Vec<u64> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}

/// Every selected element's current bytes (the code for packed dtypes), in selection order.
fn read_elements(
    info: &TensorInfo,
    selection: &Selection,
    source: &(impl ByteSource + ?Sized),
) -> Vec<Vec<u8>> {
    let mut cell = [0u8; 8];
    selection
        .element_indices(&info.shape)
        .map(|flat| {
            let loc = slice::locate(info.dtype, flat);
            let bytes = &mut cell[..loc.len];
            source.read(loc.offset, bytes);
            if dtype::is_packed(info.dtype) {
                vec![slice::unpack(info.dtype, loc, bytes)]
            } else {
                bytes.to_vec()
            }
        })
        .collect()
}

fn number(info: &TensorInfo, element: &[u8]) -> Number {
    dtype::decode(info.dtype, element).to_number()
}

fn no_complex(info: &TensorInfo, op: &'static str) -> Result<(), RegionError> {
    if dtype::kind(info.dtype) == Kind::Complex {
        return Err(EditError::NotApplicable {
            op,
            dtype: dtype::name(info.dtype),
        }
        .into());
    }
    Ok(())
}

fn finite(what: &str, v: f64) -> Result<(), RegionError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(RegionError::Mismatch(format!(
            "{what} must be a finite number, not {v}"
        )))
    }
}

/// Plans `region` on the `selection` of `target` (current bytes from `source`). `operand` is
/// the other tensor of a copy or blend, resolved by the caller from [`Region::operand`].
pub fn plan<S: ByteSource + ?Sized>(
    target: &TensorInfo,
    selection: &Selection,
    source: &S,
    operand: Option<Operand<'_, S>>,
    region: &Region,
    options: EncodeOptions,
) -> Result<Vec<Change>, RegionError> {
    let shape = &target.shape;
    let encode =
        |flat: u64, n: Number| edit::encode_at(target, &edit::unflatten(shape, flat), n, options);
    match region {
        Region::Copy { .. } | Region::Blend { .. } => {
            let Some(other) = operand else {
                return Err(RegionError::Mismatch(format!(
                    "{} needs the tensor it reads",
                    region.name()
                )));
            };
            let (want, got) = (selection.out_shape(), other.selection.out_shape());
            if squeezed(&want) != squeezed(&got) {
                return Err(RegionError::Mismatch(format!(
                    "{} of shape {got:?} does not fit the selection of {} of shape {want:?}",
                    other.info.name, target.name
                )));
            }
            let values = read_elements(other.info, &other.selection, other.source);
            if let Region::Blend { alpha, .. } = region {
                finite("alpha", *alpha)?;
                no_complex(target, "blend")?;
                no_complex(other.info, "blend")?;
                let alpha = *alpha;
                return Ok(edit::plan_elements(
                    target,
                    selection,
                    source,
                    |k, flat, cur| {
                        let x = edit::real(number(target, cur));
                        let y = edit::real(number(other.info, &values[k]));
                        encode(flat, Number::Float((1.0 - alpha) * x + alpha * y))
                    },
                )?);
            }
            let same = other.info.dtype == target.dtype;
            Ok(edit::plan_elements(
                target,
                selection,
                source,
                |k, flat, _| {
                    if same {
                        Ok(values[k].clone())
                    } else {
                        encode(flat, number(other.info, &values[k]))
                    }
                },
            )?)
        }
        Region::SwapRows { a, b } | Region::SwapColumns { a, b } => {
            let columns = matches!(region, Region::SwapColumns { .. });
            let Some(dim) = (if columns {
                shape.len().checked_sub(1)
            } else {
                (!shape.is_empty()).then_some(0)
            }) else {
                return Err(RegionError::Mismatch(
                    "a scalar has no rows or columns".into(),
                ));
            };
            let len = shape[dim];
            for i in [a, b] {
                if *i >= len {
                    return Err(RegionError::Mismatch(format!(
                        "{} {i} is out of range: {} has {len}",
                        if columns { "column" } else { "row" },
                        target.name
                    )));
                }
            }
            let (lo, hi) = ((*a).min(*b), (*a).max(*b));
            if lo == hi {
                return Ok(Vec::new());
            }
            // Exactly the two lines: lo and hi, as one strided selection.
            let mut spec = vec![":".to_string(); dim];
            spec.push(format!("{lo}:{}:{}", hi + 1, hi - lo));
            let both = SliceSpec::parse(&spec.join(","))?.resolve(shape)?;
            let stride: u64 = shape[dim + 1..].iter().product();
            let step = (hi - lo) * stride;
            let mut cell = [0u8; 8];
            Ok(edit::plan_elements(target, &both, source, |_, flat, _| {
                let line = (flat / stride) % len;
                let partner = if line == lo { flat + step } else { flat - step };
                let loc = slice::locate(target.dtype, partner);
                let bytes = &mut cell[..loc.len];
                source.read(loc.offset, bytes);
                Ok(if dtype::is_packed(target.dtype) {
                    vec![slice::unpack(target.dtype, loc, bytes)]
                } else {
                    bytes.to_vec()
                })
            })?)
        }
        Region::Noise { std, seed } => {
            finite("std", *std)?;
            if *std < 0.0 {
                return Err(RegionError::Mismatch(format!(
                    "std must be >= 0, not {std}"
                )));
            }
            no_complex(target, "noise")?;
            let normal = Normal::new(0.0, *std)
                .map_err(|e| RegionError::Mismatch(format!("std {std}: {e}")))?;
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            Ok(edit::plan_elements(
                target,
                selection,
                source,
                |_, flat, _| encode(flat, Number::Float(normal.sample(&mut rng))),
            )?)
        }
        Region::ScaleRows { factors } | Region::ScaleColumns { factors } => {
            let columns = matches!(region, Region::ScaleColumns { .. });
            let what = if columns { "columns" } else { "rows" };
            let Some(dim) = (if columns {
                shape.len().checked_sub(1)
            } else {
                (!shape.is_empty()).then_some(0)
            }) else {
                return Err(RegionError::Mismatch(
                    "a scalar has no rows or columns".into(),
                ));
            };
            if factors.len() as u64 != shape[dim] {
                return Err(RegionError::Mismatch(format!(
                    "{} factors for {} {what} of {}",
                    factors.len(),
                    shape[dim],
                    target.name
                )));
            }
            for f in factors {
                finite("a factor", *f)?;
            }
            let stride: u64 = shape[dim + 1..].iter().product();
            Ok(edit::plan_elements(
                target,
                selection,
                source,
                |_, flat, cur| {
                    let line = ((flat / stride.max(1)) % shape[dim]) as usize;
                    encode(flat, edit::scale(number(target, cur), factors[line]))
                },
            )?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;

    fn info(name: &str, dtype: Dtype, shape: &[u64]) -> TensorInfo {
        let n: u64 = shape.iter().product();
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data_offsets: (0, n * dtype::element_bytes(dtype) as u64),
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn apply(bytes: &[u8], changes: &[Change]) -> Vec<f32> {
        let mut out = bytes.to_vec();
        for c in changes {
            out[c.offset as usize..c.offset as usize + c.after.len()].copy_from_slice(&c.after);
        }
        out.chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn all(t: &TensorInfo) -> Selection {
        SliceSpec::parse("").unwrap().resolve(&t.shape).unwrap()
    }

    #[test]
    fn swaps_rows_and_columns() {
        let t = info("w", Dtype::F32, &[3, 2]);
        let data = f32s(&[0., 1., 2., 3., 4., 5.]);
        let opts = EncodeOptions::default();
        let rows = plan(
            &t,
            &all(&t),
            data.as_slice(),
            None,
            &Region::SwapRows { a: 2, b: 0 },
            opts,
        )
        .unwrap();
        assert_eq!(apply(&data, &rows), [4., 5., 2., 3., 0., 1.]);
        let cols = plan(
            &t,
            &all(&t),
            data.as_slice(),
            None,
            &Region::SwapColumns { a: 0, b: 1 },
            opts,
        )
        .unwrap();
        assert_eq!(apply(&data, &cols), [1., 0., 3., 2., 5., 4.]);
        let err = plan(
            &t,
            &all(&t),
            data.as_slice(),
            None,
            &Region::SwapRows { a: 0, b: 3 },
            opts,
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("row 3 is out of range"));
    }

    #[test]
    fn copy_converts_and_refuses_what_the_target_cannot_hold() {
        let t = info("w", Dtype::I8, &[2, 2]);
        let src = info("s", Dtype::F32, &[2, 2]);
        let data = vec![0u8; 4];
        let s_bytes = f32s(&[1., 2., 3., 300.]);
        let sel = SliceSpec::parse("0").unwrap().resolve(&t.shape).unwrap();
        let region = Region::Copy {
            from: "s".into(),
            from_spec: "0".into(),
        };
        let operand = |spec: &str| Operand {
            info: &src,
            selection: SliceSpec::parse(spec).unwrap().resolve(&src.shape).unwrap(),
            source: s_bytes.as_slice(),
        };
        let ok = plan(
            &t,
            &sel,
            data.as_slice(),
            Some(operand("0")),
            &region,
            EncodeOptions::default(),
        )
        .unwrap();
        assert_eq!(ok[0].after, vec![1, 2]);
        let err = plan(
            &t,
            &sel,
            data.as_slice(),
            Some(operand("1")),
            &region,
            EncodeOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("element [0, 1]"), "{err}");
        let err = plan(
            &t,
            &sel,
            data.as_slice(),
            Some(operand(":,0")),
            &region,
            EncodeOptions::default(),
        );
        assert!(err.is_ok(), "a column of 2 fits a row of 2");
        let err = plan(
            &t,
            &sel,
            data.as_slice(),
            Some(operand("")),
            &region,
            EncodeOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn noise_is_seeded_and_scale_rows_uses_one_factor_per_row() {
        let t = info("w", Dtype::F32, &[2, 3]);
        let data = f32s(&[1.; 6]);
        let opts = EncodeOptions::default();
        let noise = |seed| {
            plan(
                &t,
                &all(&t),
                data.as_slice(),
                None,
                &Region::Noise { std: 0.5, seed },
                opts,
            )
            .unwrap()
        };
        assert_eq!(noise(7), noise(7));
        assert_ne!(noise(7), noise(8));
        let scaled = plan(
            &t,
            &all(&t),
            data.as_slice(),
            None,
            &Region::ScaleRows {
                factors: vec![2., 3.],
            },
            opts,
        )
        .unwrap();
        assert_eq!(apply(&data, &scaled), [2., 2., 2., 3., 3., 3.]);
        let cols = plan(
            &t,
            &all(&t),
            data.as_slice(),
            None,
            &Region::ScaleColumns {
                factors: vec![1., 0., -1.],
            },
            opts,
        )
        .unwrap();
        assert_eq!(apply(&data, &cols), [1., 0., -1., 1., 0., -1.]);
        let err = plan(
            &t,
            &all(&t),
            data.as_slice(),
            None,
            &Region::ScaleColumns { factors: vec![1.] },
            opts,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "1 factors for 3 columns of w");
    }
}
