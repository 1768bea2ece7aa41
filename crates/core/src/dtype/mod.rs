//! The one dtype codec: names, element sizes, decoding stored bytes to values, encoding values
//! to bytes, and the shortest text that round-trips. Used by the server (edits, statistics),
//! the client (hover values, hex view) and the patch writer alike.
//!
//! ```
//! use tensor_surgeon_core::dtype::{self, Dtype, Number, EncodeOptions};
//! let bytes = dtype::encode(Dtype::BF16, Number::Float(1.5), EncodeOptions::EXACT).unwrap();
//! assert_eq!(bytes, vec![0xC0, 0x3F]);
//! assert_eq!(dtype::format_element(Dtype::BF16, &bytes), "1.5");
//! ```

mod minifloat;

pub use minifloat::Minifloat;
pub use safetensors::Dtype;
use std::fmt;

/// Every dtype a safetensors file can hold, in the order of the format's specification.
pub const ALL: [Dtype; 22] = [
    Dtype::F64,
    Dtype::F32,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I64,
    Dtype::I32,
    Dtype::I16,
    Dtype::I8,
    Dtype::U64,
    Dtype::U32,
    Dtype::U16,
    Dtype::U8,
    Dtype::BOOL,
    Dtype::C64,
    Dtype::F8_E4M3,
    Dtype::F8_E5M2,
    Dtype::F8_E8M0,
    Dtype::F8_E4M3FNUZ,
    Dtype::F8_E5M2FNUZ,
    Dtype::F6_E2M3,
    Dtype::F6_E3M2,
    Dtype::F4,
];

/// The safetensors spelling of a dtype (`"BF16"`, `"F8_E4M3"`).
pub fn name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F64 => "F64",
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::I64 => "I64",
        Dtype::I32 => "I32",
        Dtype::I16 => "I16",
        Dtype::I8 => "I8",
        Dtype::U64 => "U64",
        Dtype::U32 => "U32",
        Dtype::U16 => "U16",
        Dtype::U8 => "U8",
        Dtype::BOOL => "BOOL",
        Dtype::C64 => "C64",
        Dtype::F8_E4M3 => "F8_E4M3",
        Dtype::F8_E5M2 => "F8_E5M2",
        Dtype::F8_E8M0 => "F8_E8M0",
        Dtype::F8_E4M3FNUZ => "F8_E4M3FNUZ",
        Dtype::F8_E5M2FNUZ => "F8_E5M2FNUZ",
        Dtype::F6_E2M3 => "F6_E2M3",
        Dtype::F6_E3M2 => "F6_E3M2",
        Dtype::F4 => "F4",
        _ => "UNKNOWN",
    }
}

/// Parses a dtype name, case-insensitively (`"bf16"`, `"f8_e4m3"`).
pub fn parse_name(text: &str) -> Option<Dtype> {
    ALL.into_iter()
        .find(|d| name(*d).eq_ignore_ascii_case(text.trim()))
}

/// Width of one element in bits (4 for F4, 6 for F6_*).
pub fn bits(dtype: Dtype) -> usize {
    dtype.bitsize()
}

/// Bytes per element in a slice: the stored size, or 1 for the packed sub-byte dtypes, whose
/// elements are unpacked into one byte each (the code in the low bits).
pub fn element_bytes(dtype: Dtype) -> usize {
    bits(dtype).div_ceil(8)
}

/// Whether several elements share a byte (F4, F6_*).
pub fn is_packed(dtype: Dtype) -> bool {
    !bits(dtype).is_multiple_of(8)
}

/// What the bits of a dtype mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Float,
    Signed,
    Unsigned,
    Bool,
    Complex,
}

/// The kind of numbers a dtype holds.
pub fn kind(dtype: Dtype) -> Kind {
    match dtype {
        Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 => Kind::Signed,
        Dtype::U64 | Dtype::U32 | Dtype::U16 | Dtype::U8 => Kind::Unsigned,
        Dtype::BOOL => Kind::Bool,
        Dtype::C64 => Kind::Complex,
        _ => Kind::Float,
    }
}

/// The minifloat layout of the sub-16-bit float dtypes.
pub fn minifloat(dtype: Dtype) -> Option<Minifloat> {
    Some(match dtype {
        Dtype::F8_E4M3 => minifloat::F8_E4M3,
        Dtype::F8_E5M2 => minifloat::F8_E5M2,
        Dtype::F8_E4M3FNUZ => minifloat::F8_E4M3FNUZ,
        Dtype::F8_E5M2FNUZ => minifloat::F8_E5M2FNUZ,
        Dtype::F8_E8M0 => minifloat::F8_E8M0,
        Dtype::F6_E2M3 => minifloat::F6_E2M3,
        Dtype::F6_E3M2 => minifloat::F6_E3M2,
        Dtype::F4 => minifloat::F4_E2M1,
        _ => return None,
    })
}

/// Sign / exponent / mantissa widths of a float dtype, for bit-field views.
pub fn float_fields(dtype: Dtype) -> Option<(u32, u32, u32)> {
    match dtype {
        Dtype::F64 => Some((1, 11, 52)),
        Dtype::F32 => Some((1, 8, 23)),
        Dtype::F16 => Some((1, 5, 10)),
        Dtype::BF16 => Some((1, 8, 7)),
        Dtype::F8_E8M0 => Some((0, 8, 0)),
        d => minifloat(d).map(|m| (1, m.exp_bits, m.man_bits)),
    }
}

/// One decoded element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Complex(f32, f32),
}

impl Value {
    /// The value as an f64: exact for every float dtype, rounded for 64-bit integers beyond
    /// 2^53; the modulus for complex numbers.
    pub fn to_f64(self) -> f64 {
        match self {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
            Value::UInt(v) => v as f64,
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Complex(re, im) => f64::from(re).hypot(f64::from(im)),
        }
    }

    /// The value as a number for arithmetic.
    pub fn to_number(self) -> Number {
        match self {
            Value::Float(v) => Number::Float(v),
            Value::Int(v) => Number::Int(i128::from(v)),
            Value::UInt(v) => Number::Int(i128::from(v)),
            Value::Bool(b) => Number::Int(i128::from(b)),
            Value::Complex(re, im) => Number::Complex(f64::from(re), f64::from(im)),
        }
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Decodes one element from its little-endian bytes (`element_bytes(dtype)` of them; for the
/// packed dtypes, one byte holding the code). Short input is zero-extended, never a panic.
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Value {
    match dtype {
        Dtype::F64 => Value::Float(f64::from_le_bytes(array(bytes))),
        Dtype::F32 => Value::Float(f64::from(f32::from_le_bytes(array(bytes)))),
        Dtype::F16 => Value::Float(half::f16::from_le_bytes(array(bytes)).to_f64()),
        Dtype::BF16 => Value::Float(half::bf16::from_le_bytes(array(bytes)).to_f64()),
        Dtype::I64 => Value::Int(i64::from_le_bytes(array(bytes))),
        Dtype::I32 => Value::Int(i64::from(i32::from_le_bytes(array(bytes)))),
        Dtype::I16 => Value::Int(i64::from(i16::from_le_bytes(array(bytes)))),
        Dtype::I8 => Value::Int(i64::from(i8::from_le_bytes(array(bytes)))),
        Dtype::U64 => Value::UInt(u64::from_le_bytes(array(bytes))),
        Dtype::U32 => Value::UInt(u64::from(u32::from_le_bytes(array(bytes)))),
        Dtype::U16 => Value::UInt(u64::from(u16::from_le_bytes(array(bytes)))),
        Dtype::U8 => Value::UInt(u64::from(array::<1>(bytes)[0])),
        Dtype::BOOL => Value::Bool(array::<1>(bytes)[0] != 0),
        Dtype::C64 => {
            let b: [u8; 8] = array(bytes);
            Value::Complex(
                f32::from_le_bytes(array(&b[..4])),
                f32::from_le_bytes(array(&b[4..])),
            )
        }
        d => match minifloat(d) {
            Some(m) => Value::Float(m.decode(array::<1>(bytes)[0])),
            None => Value::Float(f64::NAN),
        },
    }
}

/// Decodes one element straight to f64 (see [`Value::to_f64`]).
pub fn decode_f64(dtype: Dtype, bytes: &[u8]) -> f64 {
    decode(dtype, bytes).to_f64()
}

/// A number asked for by a user or an operation, before it meets a dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i128),
    Float(f64),
    Complex(f64, f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(v) => write!(f, "{v}"),
            Number::Float(v) => f.write_str(&pretty_f64(*v)),
            Number::Complex(re, im) => {
                write!(
                    f,
                    "{}{}{}j",
                    pretty_f64(*re),
                    if *im < 0.0 { "" } else { "+" },
                    pretty_f64(*im)
                )
            }
        }
    }
}

/// Parses a user's number: integers, decimals, `1e-3`, `nan`, `inf`, `-inf`, `true`/`false`,
/// complex `1.5-2j`.
pub fn parse_number(text: &str) -> Option<Number> {
    let t = text.trim();
    let t = t
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(t)
        .trim();
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "true" => return Some(Number::Int(1)),
        "false" => return Some(Number::Int(0)),
        "nan" | "+nan" | "-nan" => return Some(Number::Float(f64::NAN)),
        "inf" | "+inf" | "infinity" => return Some(Number::Float(f64::INFINITY)),
        "-inf" | "-infinity" => return Some(Number::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    if let Some(body) = lower.strip_suffix('j') {
        // The split point is the last sign that does not follow an exponent 'e'.
        let split = body
            .char_indices()
            .skip(1)
            .filter(|&(i, c)| (c == '+' || c == '-') && !body[..i].ends_with('e'))
            .map(|(i, _)| i)
            .last();
        return match split {
            Some(i) => {
                let re = body[..i].parse::<f64>().ok()?;
                let im = body[i..].parse::<f64>().ok()?;
                Some(Number::Complex(re, im))
            }
            None => Some(Number::Complex(0.0, body.parse::<f64>().ok()?)),
        };
    }
    if let Ok(i) = t.parse::<i128>() {
        // "-0" is the float negative zero: keep its sign.
        if i == 0 && t.starts_with('-') {
            return Some(Number::Float(-0.0));
        }
        return Some(Number::Int(i));
    }
    t.parse::<f64>()
        .ok()
        .filter(|_| !lower.contains("inf") && !lower.contains("nan"))
        .map(Number::Float)
}

/// How strictly a number is fitted into a dtype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Clamp out-of-range values to the dtype's finite range instead of failing.
    pub saturate: bool,
    /// Round non-integers to the nearest integer (ties to even) for integer dtypes.
    pub round: bool,
}

impl EncodeOptions {
    /// Fail on anything the dtype cannot hold.
    pub const EXACT: EncodeOptions = EncodeOptions {
        saturate: false,
        round: false,
    };
}

/// Why a number cannot be stored in a dtype.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Outside the finite range of the dtype.
    #[error(
        "{value} is out of range for {dtype} (it holds {min} to {max}); pass saturate to clamp"
    )]
    OutOfRange {
        dtype: &'static str,
        value: String,
        min: String,
        max: String,
    },
    /// A fractional value for an integer dtype.
    #[error("{value} is not a whole number, which {dtype} needs; pass round to round it")]
    NotInteger { dtype: &'static str, value: String },
    /// NaN or Inf where the dtype has none, a complex value for a real dtype, and the like.
    #[error("{dtype} cannot hold {value}")]
    NotRepresentable { dtype: &'static str, value: String },
}

fn int_range(dtype: Dtype) -> (i128, i128) {
    match dtype {
        Dtype::I64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        Dtype::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        Dtype::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
        Dtype::I8 => (i128::from(i8::MIN), i128::from(i8::MAX)),
        Dtype::U64 => (0, i128::from(u64::MAX)),
        Dtype::U32 => (0, i128::from(u32::MAX)),
        Dtype::U16 => (0, i128::from(u16::MAX)),
        Dtype::U8 => (0, i128::from(u8::MAX)),
        _ => (0, 1),
    }
}

/// Encodes a number as one element of `dtype`: little-endian bytes, `element_bytes(dtype)`
/// long (for the packed dtypes, one byte holding the code). Floats round to nearest; anything
/// the dtype cannot hold is an error unless `options` allow saturating or rounding.
pub fn encode(
    dtype: Dtype,
    number: Number,
    options: EncodeOptions,
) -> Result<Vec<u8>, EncodeError> {
    let dname = name(dtype);
    let not_representable = || EncodeError::NotRepresentable {
        dtype: dname,
        value: number.to_string(),
    };
    let real = match number {
        Number::Complex(re, im) if dtype == Dtype::C64 => {
            let (re, im) = (
                fit_f32(re, options, dname, number)?,
                fit_f32(im, options, dname, number)?,
            );
            let mut out = re.to_le_bytes().to_vec();
            out.extend_from_slice(&im.to_le_bytes());
            return Ok(out);
        }
        Number::Complex(re, 0.0) => Number::Float(re),
        Number::Complex(..) => return Err(not_representable()),
        other => other,
    };
    match kind(dtype) {
        Kind::Signed | Kind::Unsigned | Kind::Bool => {
            let (min, max) = int_range(dtype);
            let int = match real {
                Number::Int(i) => i,
                Number::Float(f) if f.is_nan() => return Err(not_representable()),
                Number::Float(f) if f.is_infinite() && !options.saturate => {
                    return Err(EncodeError::OutOfRange {
                        dtype: dname,
                        value: number.to_string(),
                        min: min.to_string(),
                        max: max.to_string(),
                    })
                }
                Number::Float(f) if f.fract() != 0.0 && !options.round && f.is_finite() => {
                    return Err(EncodeError::NotInteger {
                        dtype: dname,
                        value: number.to_string(),
                    })
                }
                // `as` saturates at the i128 range, which every dtype range lies inside.
                Number::Float(f) => f.round_ties_even() as i128,
                Number::Complex(..) => return Err(not_representable()),
            };
            let int = if int < min || int > max {
                if !options.saturate {
                    return Err(EncodeError::OutOfRange {
                        dtype: dname,
                        value: number.to_string(),
                        min: min.to_string(),
                        max: max.to_string(),
                    });
                }
                int.clamp(min, max)
            } else {
                int
            };
            let bytes = int.to_le_bytes();
            Ok(bytes[..element_bytes(dtype)].to_vec())
        }
        Kind::Complex => {
            let v = real_to_f64(real);
            let re = fit_f32(v, options, dname, number)?;
            let mut out = re.to_le_bytes().to_vec();
            out.extend_from_slice(&0f32.to_le_bytes());
            Ok(out)
        }
        Kind::Float => {
            let v = real_to_f64(real);
            let overflow = |max: f64| EncodeError::OutOfRange {
                dtype: dname,
                value: number.to_string(),
                min: pretty_f64(-max),
                max: pretty_f64(max),
            };
            match dtype {
                Dtype::F64 => Ok(v.to_le_bytes().to_vec()),
                Dtype::F32 => Ok(fit_f32(v, options, dname, number)?.to_le_bytes().to_vec()),
                Dtype::F16 => {
                    let h = half::f16::from_f64(v);
                    let h = if h.is_infinite() && v.is_finite() {
                        if !options.saturate {
                            return Err(overflow(half::f16::MAX.to_f64()));
                        }
                        if v < 0.0 {
                            half::f16::MIN
                        } else {
                            half::f16::MAX
                        }
                    } else {
                        h
                    };
                    Ok(h.to_le_bytes().to_vec())
                }
                Dtype::BF16 => {
                    let h = half::bf16::from_f64(v);
                    let h = if h.is_infinite() && v.is_finite() {
                        if !options.saturate {
                            return Err(overflow(half::bf16::MAX.to_f64()));
                        }
                        if v < 0.0 {
                            half::bf16::MIN
                        } else {
                            half::bf16::MAX
                        }
                    } else {
                        h
                    };
                    Ok(h.to_le_bytes().to_vec())
                }
                d => {
                    let m = minifloat(d).ok_or_else(not_representable)?;
                    match m.encode(v, options.saturate) {
                        Ok(code) => Ok(vec![code]),
                        Err(minifloat::Unrepresentable::Overflow { max }) => {
                            Err(if m.specials == minifloat::Specials::E8M0 {
                                EncodeError::OutOfRange {
                                    dtype: dname,
                                    value: number.to_string(),
                                    min: pretty_f64(m.decode(0)),
                                    max: pretty_f64(max),
                                }
                            } else {
                                overflow(max)
                            })
                        }
                        Err(minifloat::Unrepresentable::Special) => Err(not_representable()),
                    }
                }
            }
        }
    }
}

fn real_to_f64(n: Number) -> f64 {
    match n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
        Number::Complex(re, _) => re,
    }
}

fn fit_f32(
    v: f64,
    options: EncodeOptions,
    dname: &'static str,
    number: Number,
) -> Result<f32, EncodeError> {
    let f = v as f32;
    if f.is_infinite() && v.is_finite() {
        if !options.saturate {
            return Err(EncodeError::OutOfRange {
                dtype: dname,
                value: number.to_string(),
                min: pretty_f64(f64::from(f32::MIN)),
                max: pretty_f64(f64::from(f32::MAX)),
            });
        }
        return Ok(if v < 0.0 { f32::MIN } else { f32::MAX });
    }
    Ok(f)
}

/// Readable shortest text for an f64: plain decimals in [1e-4, 1e16), exponent form outside.
pub fn pretty_f64(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = v.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

fn pretty_f32(v: f32) -> String {
    let a = v.abs();
    if v.is_nan() || v.is_infinite() {
        pretty_f64(f64::from(v))
    } else if a == 0.0 || (1e-4..1e16).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// The shortest decimal that reads back to the same element in `dtype`.
pub fn format_element(dtype: Dtype, bytes: &[u8]) -> String {
    match decode(dtype, bytes) {
        Value::Int(v) => v.to_string(),
        Value::UInt(v) => v.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Complex(re, im) => {
            let sign = if im.is_sign_negative() && !im.is_nan() {
                ""
            } else {
                "+"
            };
            format!("{}{sign}{}j", pretty_f32(re), pretty_f32(im))
        }
        Value::Float(v) => match dtype {
            Dtype::F64 => pretty_f64(v),
            Dtype::F32 => pretty_f32(v as f32),
            _ if !v.is_finite() => pretty_f64(v),
            _ => {
                let target = encode(dtype, Number::Float(v), EncodeOptions::EXACT).ok();
                for digits in 1..=17 {
                    let text = format!("{:.*e}", digits - 1, v);
                    let Ok(candidate) = text.parse::<f64>() else {
                        continue;
                    };
                    if encode(dtype, Number::Float(candidate), EncodeOptions::EXACT).ok() == target
                    {
                        return pretty_f64(candidate);
                    }
                }
                pretty_f64(v)
            }
        },
    }
}

/// The value rendered for JSON: numbers as numbers, NaN and ±Inf as `"nan"`, `"inf"`, `"-inf"`,
/// complex as `[re, im]`.
pub fn to_json(value: Value) -> serde_json::Value {
    fn float(v: f64) -> serde_json::Value {
        if v.is_nan() {
            "nan".into()
        } else if v.is_infinite() {
            if v > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            }
        } else {
            serde_json::Number::from_f64(v)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
    }
    match value {
        Value::Float(v) => float(v),
        Value::Int(v) => v.into(),
        Value::UInt(v) => v.into(),
        Value::Bool(b) => b.into(),
        Value::Complex(re, im) => {
            serde_json::Value::Array(vec![float(f64::from(re)), float(f64::from(im))])
        }
    }
}

#[cfg(test)]
mod tests;

/// Decodes packed element bytes (`element_bytes(dtype)` each) into f64s, reusing `out`.
pub fn decode_f64_into(dtype: Dtype, bytes: &[u8], out: &mut Vec<f64>) {
    let width = element_bytes(dtype);
    out.clear();
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64()),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64()),
        ),
        d => out.extend(bytes.chunks_exact(width).map(|b| decode_f64(d, b))),
    }
}
