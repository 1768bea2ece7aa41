//! Edit operations (set, add, scale, zero, clamp, raw bytes) turned into byte changes, and the
//! undo/redo history that owns the overlay.

use crate::dtype::{self, EncodeError, EncodeOptions, Kind, Number};
use crate::header::TensorInfo;
use crate::overlay::RangeMap;

mod history;
pub use crate::change::Change;
use crate::slice::{unflatten, Selection};
use crate::source::ByteSource;
pub use history::{EditStep, History, LayerAction, LayerMark, LowRankMark};
use serde::{Deserialize, Serialize};

/// What to do to each selected element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Replace with a value.
    Set { value: String },
    /// Add a value.
    Add { value: String },
    /// Multiply by a factor.
    Scale { factor: f64 },
    /// Set to zero.
    Zero,
    /// Clamp into `[min, max]` (either bound optional).
    Clamp { min: Option<f64>, max: Option<f64> },
    /// Replace the stored bytes: hex, one element's worth (for F4/F6, the code).
    Hex { hex: String },
    /// Add `U Vᵀ` to the tensor seen as a matrix, element by element as a low-rank patch entry
    /// does (`docs/patch-format.md`): the factors are base64 of little-endian f32, `u`
    /// `[rows, rank]` and `v` `[cols, rank]`. Computed edits (a fact edit) arrive as this.
    LowRank { rank: u32, u: String, v: String },
}

impl Op {
    /// Every operation's name, in the order menus list them.
    pub const NAMES: [&'static str; 6] = ["set", "add", "scale", "zero", "clamp", "hex"];

    /// The operation's name, as in its JSON form and [`Op::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            Op::Set { .. } => "set",
            Op::Add { .. } => "add",
            Op::Scale { .. } => "scale",
            Op::Zero => "zero",
            Op::Clamp { .. } => "clamp",
            Op::Hex { .. } => "hex",
            Op::LowRank { .. } => "low_rank",
        }
    }

    /// Builds an operation from its name and what a user typed: the value (`set`, `add`),
    /// the factor (`scale`), the bytes (`hex`), or the bounds (`clamp`: `value` is the
    /// minimum, `value2` the maximum, either may be empty). `zero` reads neither.
    pub fn parse(name: &str, value: &str, value2: &str) -> Result<Op, EditError> {
        let float = |v: &str| {
            v.trim().parse::<f64>().map_err(|_| EditError::NotANumber {
                text: v.trim().to_string(),
            })
        };
        let bound = |v: &str| {
            if v.trim().is_empty() {
                Ok(None)
            } else {
                float(v).map(Some)
            }
        };
        Ok(match name {
            "set" => Op::Set {
                value: value.trim().to_string(),
            },
            "add" => Op::Add {
                value: value.trim().to_string(),
            },
            "scale" => Op::Scale {
                factor: float(value)?,
            },
            "zero" => Op::Zero,
            "clamp" => Op::Clamp {
                min: bound(value)?,
                max: bound(value2)?,
            },
            "hex" => Op::Hex {
                hex: value.trim().to_string(),
            },
            other => {
                return Err(EditError::UnknownOp {
                    name: other.to_string(),
                })
            }
        })
    }
}

/// Why an edit cannot be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// A value does not parse as a number.
    #[error("{text:?} is not a number")]
    NotANumber { text: String },
    /// Hex that is not hex, or the wrong length for the dtype.
    #[error("hex {hex:?} is not {expected} bytes for {dtype}")]
    BadHex {
        hex: String,
        expected: usize,
        dtype: &'static str,
    },
    /// A result the dtype cannot hold, at an element.
    #[error("element {index:?} of {tensor}: {source}")]
    Encode {
        tensor: String,
        index: Vec<u64>,
        source: EncodeError,
    },
    /// An operation name that is not one of [`Op::NAMES`].
    #[error("unknown operation {name:?}; expected one of set, add, scale, zero, clamp, hex")]
    UnknownOp { name: String },
    /// Low-rank factors that do not fit the tensor, or are not base64 of f32s.
    #[error(transparent)]
    LowRank(#[from] crate::patch::LowRankError),
    /// An operation that makes no sense for the dtype.
    #[error("{op} does not apply to {dtype} tensors")]
    NotApplicable {
        op: &'static str,
        dtype: &'static str,
    },
}

fn parse(text: &str) -> Result<Number, EditError> {
    dtype::parse_number(text).ok_or_else(|| EditError::NotANumber {
        text: text.to_string(),
    })
}

fn add(a: Number, b: Number) -> Number {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x
            .checked_add(y)
            .map_or(Number::Float(x as f64 + y as f64), Number::Int),
        (Number::Complex(ar, ai), Number::Complex(br, bi)) => Number::Complex(ar + br, ai + bi),
        (Number::Complex(ar, ai), other) | (other, Number::Complex(ar, ai)) => {
            Number::Complex(ar + real(other), ai)
        }
        (x, y) => Number::Float(real(x) + real(y)),
    }
}

pub(crate) fn real(n: Number) -> f64 {
    match n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
        Number::Complex(re, _) => re,
    }
}

/// Computes the changes an operation makes to the selected elements of `tensor`, reading the
/// current bytes from `source` (base + overlay). Unchanged elements produce nothing; adjacent
/// changes are merged. Fails on the first element whose result the dtype cannot hold.
pub fn plan(
    tensor: &TensorInfo,
    selection: &Selection,
    source: &(impl ByteSource + ?Sized),
    op: &Op,
    options: EncodeOptions,
) -> Result<Vec<Change>, EditError> {
    let dt = tensor.dtype;
    let dname = dtype::name(dt);
    let width = dtype::element_bytes(dt);
    let packed = dtype::is_packed(dt);
    let kind = dtype::kind(dt);
    // Operands parsed once.
    let fixed: Option<Vec<u8>> = match op {
        Op::Set { value } => Some(encode_at(tensor, &[], parse(value)?, options)?),
        Op::Zero => Some(vec![0u8; width]),
        Op::Hex { hex: text } => {
            let bytes = hex::decode(text.trim().trim_start_matches("0x"))
                .ok()
                .filter(|b| b.len() == width);
            let bytes = bytes.ok_or(EditError::BadHex {
                hex: text.clone(),
                expected: width,
                dtype: dname,
            })?;
            if packed && u16::from(bytes[0]) >= 1u16 << dtype::bits(dt) {
                return Err(EditError::BadHex {
                    hex: text.clone(),
                    expected: width,
                    dtype: dname,
                });
            }
            Some(bytes)
        }
        _ => None,
    };
    let addend = match op {
        Op::Add { value } => Some(parse(value)?),
        _ => None,
    };
    if let Op::LowRank { rank, u, v } = op {
        return plan_low_rank(tensor, selection, source, *rank, u, v);
    }
    if matches!(op, Op::Clamp { .. }) && kind == Kind::Complex {
        return Err(EditError::NotApplicable {
            op: "clamp",
            dtype: dname,
        });
    }
    plan_elements(tensor, selection, source, |_, flat, current| {
        if let Some(b) = &fixed {
            return Ok(b.clone());
        }
        let value = dtype::decode(dt, current).to_number();
        let result = match op {
            Op::Add { .. } => add(value, addend.unwrap_or(Number::Int(0))),
            Op::Scale { factor } => scale(value, *factor),
            Op::Clamp { min, max } => {
                let v = real(value);
                if min.is_some_and(|m| v < m) {
                    Number::Float(min.unwrap_or(v))
                } else if max.is_some_and(|m| v > m) {
                    Number::Float(max.unwrap_or(v))
                } else {
                    value
                }
            }
            _ => value,
        };
        encode_at(tensor, &unflatten(&tensor.shape, flat), result, options)
    })
}

/// The changes of [`Op::LowRank`] to the selected elements.
fn plan_low_rank(
    tensor: &TensorInfo,
    selection: &Selection,
    source: &(impl ByteSource + ?Sized),
    rank: u32,
    u: &str,
    v: &str,
) -> Result<Vec<Change>, EditError> {
    use crate::patch::low_rank;
    let decode = |text: &str| {
        low_rank::from_base64(text).ok_or_else(|| low_rank::LowRankError::Encoding {
            tensor: tensor.name.clone(),
        })
    };
    let (u, v) = (decode(u)?, decode(v)?);
    // A quantized tensor's values are edited as F32 (the session quantizes the blocks again).
    match tensor.blocks {
        Some(_) => low_rank::check_shape(tensor, rank, u.len(), v.len())?,
        None => low_rank::check_fit(tensor, rank, u.len(), v.len())?,
    }
    let (u, v) = (low_rank::floats(&u), low_rank::floats(&v));
    let (_, cols) = low_rank::matrix_shape(&tensor.shape);
    let r = rank as usize;
    plan_elements(tensor, selection, source, |_, flat, current| {
        let (i, j) = ((flat / cols) as usize, (flat % cols) as usize);
        let mut el = current.to_vec();
        low_rank::apply_element(
            tensor.dtype,
            &mut el,
            &u[i * r..(i + 1) * r],
            &v[j * r..(j + 1) * r],
        );
        Ok(el)
    })
}

/// `value * factor` (both parts of a complex value).
pub(crate) fn scale(value: Number, factor: f64) -> Number {
    match value {
        Number::Complex(re, im) => Number::Complex(re * factor, im * factor),
        v => Number::Float(real(v) * factor),
    }
}

/// The changes that give every selected element of `tensor` the bytes `new_element` returns
/// for it. `new_element(k, flat, current)` gets the element's position in selection order,
/// its flat index and its current bytes (for packed dtypes: its code, one byte) and returns
/// the new bytes in the same form. Unchanged elements produce nothing; adjacent changes are
/// merged; packed elements sharing a byte are combined.
pub fn plan_elements(
    tensor: &TensorInfo,
    selection: &Selection,
    source: &(impl ByteSource + ?Sized),
    mut new_element: impl FnMut(usize, u64, &[u8]) -> Result<Vec<u8>, EditError>,
) -> Result<Vec<Change>, EditError> {
    let dt = tensor.dtype;
    let packed = dtype::is_packed(dt);
    let mut pending = RangeMap::default();
    let mut changes: Vec<Change> = Vec::new();
    let mut cell = [0u8; 8];
    for (k, flat) in selection.element_indices(&tensor.shape).enumerate() {
        let loc = crate::packed::locate(dt, flat);
        let bytes = &mut cell[..loc.len];
        source.read(loc.offset, bytes);
        pending.lay_onto(loc.offset, bytes);
        let before = bytes.to_vec();
        let current: Vec<u8> = if packed {
            vec![crate::packed::unpack(dt, loc, bytes)]
        } else {
            before.clone()
        };
        let new_elem = new_element(k, flat, &current)?;
        let after = if packed {
            let mut b = before.clone();
            crate::packed::repack(dt, loc, &mut b, new_elem[0]);
            b
        } else {
            new_elem
        };
        if after == before {
            continue;
        }
        pending.write(loc.offset, &after);
        match changes.last_mut() {
            Some(last) if last.offset + last.after.len() as u64 == loc.offset => {
                last.before.extend_from_slice(&before);
                last.after.extend_from_slice(&after);
            }
            Some(last) if packed && last.offset + last.after.len() as u64 > loc.offset => {
                // Shares a byte with the previous packed element: widen the previous change.
                let keep = (loc.offset - last.offset) as usize;
                let mut merged_after = last.after[..keep].to_vec();
                merged_after.extend_from_slice(&after);
                let mut merged_before = last.before.clone();
                merged_before
                    .extend_from_slice(&before[(last.before.len() - keep).min(before.len())..]);
                merged_before.truncate(merged_after.len());
                last.after = merged_after;
                last.before = merged_before;
            }
            _ => changes.push(Change {
                tensor: tensor.name.clone(),
                offset: loc.offset,
                before,
                after,
            }),
        }
    }
    Ok(changes)
}

pub(crate) fn encode_at(
    tensor: &TensorInfo,
    index: &[u64],
    n: Number,
    options: EncodeOptions,
) -> Result<Vec<u8>, EditError> {
    dtype::encode(tensor.dtype, n, options).map_err(|source| EditError::Encode {
        tensor: tensor.name.clone(),
        index: index.to_vec(),
        source,
    })
}

#[cfg(test)]
mod tests;
