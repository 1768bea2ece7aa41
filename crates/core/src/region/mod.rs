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
use crate::slice::{self, Selection, SliceSpec};
use crate::source::ByteSource;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// A region operation on the selected elements of a tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
            let loc = crate::packed::locate(info.dtype, flat);
            let bytes = &mut cell[..loc.len];
            source.read(loc.offset, bytes);
            if dtype::is_packed(info.dtype) {
                vec![crate::packed::unpack(info.dtype, loc, bytes)]
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
    let encode = |flat: u64, n: Number| {
        edit::encode_at(target, &crate::slice::unflatten(shape, flat), n, options)
    };
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
                let loc = crate::packed::locate(target.dtype, partner);
                let bytes = &mut cell[..loc.len];
                source.read(loc.offset, bytes);
                Ok(if dtype::is_packed(target.dtype) {
                    vec![crate::packed::unpack(target.dtype, loc, bytes)]
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
mod tests;
