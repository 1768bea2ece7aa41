//! GGUF, llama.cpp's model file: its header parsed and validated without touching tensor
//! data, and its block types decoded ([`quant`]).
//!
//! A file is the magic `GGUF`, a version (2 or 3; little-endian), the tensor and metadata
//! counts, the metadata (typed key-value pairs, arrays included), one info per tensor (name,
//! dims, ggml type, offset within the data section), padding to `general.alignment`, then the
//! data. Every count and length is checked against the bytes that remain before anything is
//! allocated, so a hostile header costs at most about the file's own size.
//!
//! ggml lists dims fastest first; [`GgufTensor::shape`] is the row-major shape (reversed),
//! as the rest of Tensor Surgeon and numpy see it: `[rows, cols]` for a matrix.

pub mod quant;
mod types;
mod value;
pub mod write;

#[cfg(test)]
mod tests;

pub use types::{GgmlType, ALL as ALL_TYPES, QK_K};
pub use value::{Value, ValueType};

use std::collections::HashMap;

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's limit on a tensor's dims.
pub const MAX_DIMS: usize = 4;
/// The name of a quantized tensor's blocks view (`blk.0.ffn_down.weight#scales`): the scale
/// of each of its (sub-)blocks.
pub const SCALES_SUFFIX: &str = "#scales";

/// Arrays of arrays nest at most this deep (real files use one level).
pub const MAX_NESTING: usize = 8;

/// Whether `bytes` start like a GGUF file.
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Row-major shape (ggml's dims reversed).
    pub shape: Vec<u64>,
    /// Start within the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl GgufTensor {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Elements per row (the fastest dim; 1 for a scalar).
    pub fn row_len(&self) -> u64 {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Bytes per row: a whole number of blocks.
    pub fn row_bytes(&self) -> u64 {
        self.row_len() / self.ggml_type.block_elements() as u64
            * self.ggml_type.block_bytes() as u64
    }
}

/// A parsed, validated GGUF header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    /// Key-value pairs in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in header order.
    pub tensors: Vec<GgufTensor>,
    pub alignment: u64,
    /// Where the data section starts in the file.
    pub data_start: u64,
    /// Where the tensor infos lie in the file (after the metadata).
    pub infos: std::ops::Range<u64>,
    /// Harmless oddities worth telling a user.
    pub warnings: Vec<String>,
    by_name: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
}

impl GgufHeader {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.by_key.get(key).map(|&i| &self.metadata[i].1)
    }

    /// `general.architecture` (`"llama"`, `"gemma3"`).
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }
}

/// What is wrong with a GGUF header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("not a GGUF file (it does not start with \"GGUF\")")]
    NotGguf,
    #[error("a big-endian GGUF file; only little-endian files are read")]
    BigEndian,
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    Version(u32),
    /// The header runs past the bytes given: the file is truncated (or, for a prefix read,
    /// more bytes are needed: at least `needed`).
    #[error("the file ends inside the header: {what} at byte {at} needs {needed} bytes, the file has {have}")]
    Truncated {
        what: String,
        at: u64,
        needed: u64,
        have: u64,
    },
    #[error(
        "{what} at byte {at} claims {count} items, more than the {left} bytes left could hold"
    )]
    ImpossibleCount {
        what: String,
        at: u64,
        count: u64,
        left: u64,
    },
    #[error("{what} at byte {at} is not UTF-8")]
    NotUtf8 { what: String, at: u64 },
    #[error("metadata {key:?}: unknown value type {id}")]
    ValueType { key: String, id: u32 },
    #[error("metadata {key:?}: arrays nested deeper than {MAX_NESTING}")]
    TooDeep { key: String },
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("general.alignment: {0}")]
    Alignment(String),
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    #[error("tensor {name:?} has {dims} dims; ggml allows at most {MAX_DIMS}")]
    TooManyDims { name: String, dims: u32 },
    #[error("tensor {name:?}: {reason}")]
    BadShape { name: String, reason: String },
    #[error("tensor {name:?} has unknown ggml type {id}{}", removed.map(|n| format!(" ({n}, removed from ggml: convert the file again)")).unwrap_or_default())]
    UnknownType {
        name: String,
        id: u32,
        removed: Option<&'static str>,
    },
    #[error(
        "tensor {name:?}: a row of {row} elements is not a whole number of {ty} blocks of {block}"
    )]
    RowNotBlocks {
        name: String,
        row: u64,
        ty: GgmlType,
        block: usize,
    },
    #[error("tensor {name:?} starts at data offset {offset}, not a multiple of the alignment {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {name:?} ends at byte {end}, past the end of the {file_len}-byte file")]
    PastEnd {
        name: String,
        end: u64,
        file_len: u64,
    },
    #[error("tensors {0:?} and {1:?} overlap")]
    Overlap(String, String),
}

/// Reads the header from `bytes`, the file's first bytes (all of them for a local file);
/// `file_len` is the whole file's size. When `bytes` is a prefix too short to hold the header,
/// the error is [`GgufError::Truncated`] with the bytes needed so far, and `bytes.len() <
/// file_len` tells the caller to read more.
pub fn parse(bytes: &[u8], file_len: u64) -> Result<GgufHeader, GgufError> {
    let mut r = Reader {
        bytes,
        at: 0,
        file_len: file_len.max(bytes.len() as u64),
    };
    let magic = r.take(4, "the magic")?;
    if magic != MAGIC {
        return Err(GgufError::NotGguf);
    }
    let raw_version = r.u32("the version")?;
    if raw_version.swap_bytes() == 2 || raw_version.swap_bytes() == 3 {
        return Err(GgufError::BigEndian);
    }
    if !(2..=3).contains(&raw_version) {
        return Err(GgufError::Version(raw_version));
    }
    let tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the metadata count")?;
    // A tensor info takes at least 8 (name) + 4 (dims) + 4 (type) + 8 (offset) bytes; a pair
    // at least 8 (key) + 4 (type) + 1 (value).
    r.check_count("the metadata count", kv_count, 13)?;
    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut by_key = HashMap::with_capacity(kv_count as usize);
    for _ in 0..kv_count {
        let key = r.string("a metadata key")?;
        let id = r.u32("a metadata type")?;
        let ty = ValueType::from_id(id).ok_or_else(|| GgufError::ValueType {
            key: key.clone(),
            id,
        })?;
        let value = r.value(ty, &key, 0)?;
        if by_key.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }
    let alignment = match by_key.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(Value::U32(a)) => {
            return Err(GgufError::Alignment(format!("{a} is not a power of two")))
        }
        Some(v) => {
            return Err(GgufError::Alignment(format!(
                "a {} where ggml expects a uint32",
                v.value_type().name()
            )))
        }
    };
    r.check_count("the tensor count", tensor_count, 24)?;
    let infos_start = r.at as u64;
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut by_name = HashMap::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        let t = r.tensor_info()?;
        if by_name.insert(t.name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor(t.name));
        }
        tensors.push(t);
    }
    let infos = infos_start..r.at as u64;
    let data_start = (r.at as u64).next_multiple_of(alignment);
    let mut warnings = Vec::new();
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let end = data_start.saturating_add(t.offset).saturating_add(t.size);
        if end > file_len {
            return Err(GgufError::PastEnd {
                name: t.name.clone(),
                end,
                file_len,
            });
        }
        if let Some(why) = t.ggml_type.unsupported() {
            warnings.push(format!("{} is {}: {why}", t.name, t.ggml_type));
        }
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for pair in order.windows(2) {
        let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
        if a.offset + a.size > b.offset && a.size > 0 && b.size > 0 {
            return Err(GgufError::Overlap(a.name.clone(), b.name.clone()));
        }
    }
    Ok(GgufHeader {
        version: raw_version,
        metadata,
        tensors,
        alignment,
        data_start,
        infos,
        warnings,
        by_name,
        by_key,
    })
}

/// A cursor over the header bytes; every read checks the bytes that remain.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The whole file's length: counts are checked against it, so a prefix read fails with
    /// `Truncated` (read more) and only a count no file of this size could hold is impossible.
    file_len: u64,
}

impl<'a> Reader<'a> {
    fn left(&self) -> u64 {
        (self.bytes.len() - self.at) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.left() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                at: self.at as u64,
                needed: (self.at as u64).saturating_add(n),
                have: self.bytes.len() as u64,
            });
        }
        let s = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        Ok(s.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Refuses a count whose items, at `min_bytes` each, could not fit in the rest of the
    /// file: no allocation is ever sized by an unchecked count.
    fn check_count(&self, what: &str, count: u64, min_bytes: u64) -> Result<(), GgufError> {
        let left = self.file_len - self.at as u64;
        if count.saturating_mul(min_bytes) > left {
            return Err(GgufError::ImpossibleCount {
                what: what.to_string(),
                at: self.at as u64,
                count,
                left,
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.at as u64;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::NotUtf8 {
            what: what.to_string(),
            at,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("the value of {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what())?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what())?[0] as i8),
            ValueType::Bool => Value::Bool(self.array::<1>(&what())?[0] != 0),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            ValueType::U32 => Value::U32(self.u32(&what())?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            ValueType::U64 => Value::U64(self.u64(&what())?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            ValueType::String => Value::String(self.string(&what())?),
            ValueType::Array => {
                if depth >= MAX_NESTING {
                    return Err(GgufError::TooDeep { key: key.into() });
                }
                let id = self.u32(&what())?;
                let item = ValueType::from_id(id).ok_or_else(|| GgufError::ValueType {
                    key: key.into(),
                    id,
                })?;
                let count = self.u64(&what())?;
                self.check_count(&what(), count, item.min_bytes())?;
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    values.push(self.value(item, key, depth + 1)?);
                }
                Value::Array(item, values)
            }
        })
    }

    fn tensor_info(&mut self) -> Result<GgufTensor, GgufError> {
        let name = self.string("a tensor name")?;
        let dims = self.u32("a tensor's dim count")?;
        if dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, dims });
        }
        let mut ne = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            ne.push(self.u64("a tensor dim")?);
        }
        let id = self.u32("a tensor type")?;
        let offset = self.u64("a tensor offset")?;
        let ggml_type = GgmlType::from_id(id).map_err(|removed| GgufError::UnknownType {
            name: name.clone(),
            id,
            removed,
        })?;
        let bad = |reason: String| GgufError::BadShape {
            name: name.clone(),
            reason,
        };
        if ne.iter().any(|&d| d > i64::MAX as u64) {
            return Err(bad(format!("dims {ne:?} exceed ggml's int64 range")));
        }
        // The product of the non-zero dims must fit: then a product in any order (with a
        // zero dim or not) never overflows.
        ne.iter()
            .filter(|&&d| d != 0)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("dims {ne:?} overflow the element count")))?;
        let elements: u64 = ne.iter().product();
        let block = ggml_type.block_elements();
        let row = ne.first().copied().unwrap_or(1);
        if row % block as u64 != 0 {
            return Err(GgufError::RowNotBlocks {
                name,
                row,
                ty: ggml_type,
                block,
            });
        }
        let size = (elements / block as u64)
            .checked_mul(ggml_type.block_bytes() as u64)
            .ok_or_else(|| bad(format!("dims {ne:?} overflow the byte size")))?;
        ne.reverse();
        Ok(GgufTensor {
            name,
            ggml_type,
            shape: ne,
            offset,
            size,
        })
    }
}

/// The safetensors dtype of a plain ggml type; `None` for the quantized ones.
pub fn plain_dtype(ty: GgmlType) -> Option<crate::dtype::Dtype> {
    use crate::dtype::Dtype;
    Some(match ty {
        GgmlType::F32 => Dtype::F32,
        GgmlType::F16 => Dtype::F16,
        GgmlType::BF16 => Dtype::BF16,
        GgmlType::F64 => Dtype::F64,
        GgmlType::I8 => Dtype::I8,
        GgmlType::I16 => Dtype::I16,
        GgmlType::I32 => Dtype::I32,
        GgmlType::I64 => Dtype::I64,
        _ => return None,
    })
}

impl GgufHeader {
    /// The header as the rest of Tensor Surgeon reads one: a plain tensor keeps its dtype; a
    /// quantized one is seen as F32, its values decoded from its blocks (its
    /// `data_offsets` still name its real bytes). The metadata becomes one line per key
    /// (arrays summarised).
    pub fn tensor_view(&self) -> crate::header::Header {
        let mut tensors: Vec<crate::header::TensorInfo> = self
            .tensors
            .iter()
            .map(|t| crate::header::TensorInfo {
                name: t.name.clone(),
                dtype: plain_dtype(t.ggml_type).unwrap_or(crate::dtype::Dtype::F32),
                shape: t.shape.clone(),
                data_offsets: (t.offset, t.offset + t.size),
                blocks: t.ggml_type.is_quantized().then_some(t.ggml_type),
            })
            .collect();
        // Each quantized tensor's blocks view: the scale of every (sub-)block, one row per row
        // of the tensor. Derived, not stored: it has no bytes of its own in the file.
        for t in &self.tensors {
            let Some(groups) = quant::scale_groups(t.ggml_type) else {
                continue;
            };
            let per_row = t.row_len() / t.ggml_type.block_elements() as u64 * groups as u64;
            let mut shape = t.shape.clone();
            match shape.last_mut() {
                Some(last) => *last = per_row,
                None => continue,
            }
            tensors.push(crate::header::TensorInfo {
                name: format!("{}{SCALES_SUFFIX}", t.name),
                dtype: crate::dtype::Dtype::F32,
                shape,
                data_offsets: (t.offset, t.offset),
                blocks: None,
            });
        }
        let mut metadata: std::collections::BTreeMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        metadata.insert("gguf.version".into(), self.version.to_string());
        crate::header::Header::of_container(
            self.data_start.max(8),
            Some(metadata),
            tensors,
            self.warnings.clone(),
        )
    }
}
