//! The safetensors header: parsed, validated, and modelled without touching tensor data.
//!
//! A file is `u64 little-endian N`, then `N` bytes of JSON, then the data section. Every check
//! that guards a read (offsets inside the data, sizes consistent with dtype and shape, no
//! overlaps, checked arithmetic) is an error; what real files do that is harmless (tensors
//! stored out of header order, `"__metadata__": null`, gaps, trailing bytes) is accepted and,
//! where it wastes space, reported as a warning.

use crate::dtype::{self, Dtype};
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Largest JSON header accepted (the safetensors crate's limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor as the header describes it. Offsets are relative to the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// `[begin, end)` within the data section, as written in the header.
    pub data_offsets: (u64, u64),
    /// The block type the values are decoded from (a GGUF quantized tensor: its stored bytes,
    /// `data_offsets`, are blocks; it reads as `dtype` F32). `None`: the bytes are the values.
    pub blocks: Option<crate::gguf::GgmlType>,
}

impl TensorInfo {
    /// Number of elements (checked at parse time not to overflow).
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Size of the tensor's data in bytes.
    pub fn byte_len(&self) -> u64 {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// A parsed, validated header.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// Length of the JSON part (the file's first 8 bytes).
    pub json_len: u64,
    /// The `__metadata__` map, or `None` when absent or `null`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tensors in header order.
    pub tensors: Vec<TensorInfo>,
    /// Harmless oddities worth telling a user (gaps, trailing bytes).
    pub warnings: Vec<String>,
    by_name: HashMap<String, usize>,
}

impl Header {
    /// Offset of the data section within the file.
    pub fn data_start(&self) -> u64 {
        8 + self.json_len
    }

    /// A header of another container seen as safetensors sees it: its data section starts at
    /// `data_start` (at least 8) and `tensors`' offsets are relative to it.
    pub fn of_container(
        data_start: u64,
        metadata: Option<BTreeMap<String, String>>,
        tensors: Vec<TensorInfo>,
        warnings: Vec<String>,
    ) -> Header {
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Header {
            json_len: data_start.saturating_sub(8),
            metadata,
            tensors,
            warnings,
            by_name,
        }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }
}

/// What is wrong with a header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The file is shorter than the 8-byte length prefix.
    #[error("file is {len} bytes, too short for the 8-byte header length")]
    TooShort { len: u64 },
    /// The declared header length exceeds the limit.
    #[error("header length {len} exceeds the limit of {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge { len: u64 },
    /// The declared header runs past the end of the file.
    #[error("header length {len} runs past the end of the {file_len}-byte file")]
    HeaderPastEnd { len: u64, file_len: u64 },
    /// The header bytes are not UTF-8.
    #[error("header is not valid UTF-8 (at byte {at})")]
    NotUtf8 { at: usize },
    /// The header is not a JSON object of the expected shape.
    #[error("header is not valid JSON: {reason}")]
    BadJson { reason: String },
    /// A tensor name appears twice.
    #[error("tensor {name:?} is listed twice in the header")]
    DuplicateName { name: String },
    /// `__metadata__` is not a map of strings to strings.
    #[error("__metadata__ must map strings to strings: {reason}")]
    BadMetadata { reason: String },
    /// A tensor entry is malformed.
    #[error("tensor {name:?}: {reason}")]
    BadTensor { name: String, reason: String },
    /// A dtype name the format does not define.
    #[error("tensor {name:?} has unknown dtype {dtype:?}")]
    UnknownDtype { name: String, dtype: String },
    /// Element or byte count overflows.
    #[error("tensor {name:?}: shape {shape:?} is too large to address")]
    Overflow { name: String, shape: Vec<u64> },
    /// The byte range does not match dtype x shape.
    #[error("tensor {name:?}: data_offsets [{begin}, {end}) hold {actual} bytes but {dtype} x {shape:?} needs {expected}")]
    SizeMismatch {
        name: String,
        dtype: &'static str,
        shape: Vec<u64>,
        begin: u64,
        end: u64,
        actual: u64,
        expected: u64,
    },
    /// The tensor's bits do not fill whole bytes (packed dtypes).
    #[error("tensor {name:?}: {elements} elements of {dtype} do not fill whole bytes")]
    PartialByte {
        name: String,
        dtype: &'static str,
        elements: u64,
    },
    /// The byte range goes beyond the data section.
    #[error(
        "tensor {name:?}: data_offsets [{begin}, {end}) run past the {data_len}-byte data section"
    )]
    OutOfBounds {
        name: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    /// Two tensors share bytes.
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    Overlap { first: String, second: String },
}

/// Reads the JSON length from the first 8 bytes and checks it against the file length.
pub fn json_len(prefix: &[u8], file_len: u64) -> Result<u64, HeaderError> {
    let bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::TooShort { len: file_len })?;
    let len = u64::from_le_bytes(bytes);
    if len > MAX_HEADER_BYTES {
        return Err(HeaderError::HeaderTooLarge { len });
    }
    if len.checked_add(8).is_none_or(|end| end > file_len) {
        return Err(HeaderError::HeaderPastEnd { len, file_len });
    }
    Ok(len)
}

/// Parses the header of a file of `file_len` bytes; `start` holds at least its first
/// `8 + json_len` bytes.
pub fn parse(start: &[u8], file_len: u64) -> Result<Header, HeaderError> {
    let json_len = json_len(start, file_len)?;
    // json_len <= MAX_HEADER_BYTES, so it fits usize on every target.
    let json = start
        .get(8..8 + json_len as usize)
        .ok_or(HeaderError::HeaderPastEnd {
            len: json_len,
            file_len,
        })?;
    let text = std::str::from_utf8(json).map_err(|e| HeaderError::NotUtf8 {
        at: e.valid_up_to(),
    })?;
    let entries = parse_entries(text)?;
    let data_len = file_len - 8 - json_len;

    let mut metadata = None;
    let mut tensors = Vec::with_capacity(entries.len());
    let mut by_name = HashMap::with_capacity(entries.len());
    let mut warnings = Vec::new();
    for (name, raw) in entries {
        if name == "__metadata__" {
            metadata = serde_json::from_str::<Option<BTreeMap<String, String>>>(raw.get())
                .map_err(|e| HeaderError::BadMetadata {
                    reason: e.to_string(),
                })?;
            continue;
        }
        let info = tensor_info(&name, &raw, data_len)?;
        by_name.insert(name, tensors.len());
        tensors.push(info);
    }

    // Overlaps and gaps, in storage order (which need not be header order).
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].data_offsets);
    let mut covered_end = 0u64;
    let mut last: Option<usize> = None;
    let mut gap_bytes = 0u64;
    for &i in &order {
        let (begin, end) = tensors[i].data_offsets;
        if begin < covered_end && begin != end {
            let first = last.map(|l| tensors[l].name.clone()).unwrap_or_default();
            return Err(HeaderError::Overlap {
                first,
                second: tensors[i].name.clone(),
            });
        }
        gap_bytes += begin.saturating_sub(covered_end);
        if end > covered_end {
            covered_end = end;
            last = Some(i);
        }
    }
    if gap_bytes > 0 {
        warnings.push(format!(
            "{gap_bytes} bytes of the data section belong to no tensor"
        ));
    }
    if covered_end < data_len {
        warnings.push(format!(
            "{} trailing bytes after the last tensor",
            data_len - covered_end
        ));
    }
    Ok(Header {
        json_len,
        metadata,
        tensors,
        warnings,
        by_name,
    })
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

fn tensor_info(name: &str, raw: &RawValue, data_len: u64) -> Result<TensorInfo, HeaderError> {
    let t: RawTensor = serde_json::from_str(raw.get()).map_err(|e| HeaderError::BadTensor {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    let dtype = dtype::parse_name(&t.dtype)
        .filter(|d| dtype::name(*d) == t.dtype)
        .ok_or_else(|| HeaderError::UnknownDtype {
            name: name.to_string(),
            dtype: t.dtype.clone(),
        })?;
    let overflow = || HeaderError::Overflow {
        name: name.to_string(),
        shape: t.shape.clone(),
    };
    let elements = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let bits = elements
        .checked_mul(dtype::bits(dtype) as u64)
        .ok_or_else(overflow)?;
    if bits % 8 != 0 {
        return Err(HeaderError::PartialByte {
            name: name.to_string(),
            dtype: dtype::name(dtype),
            elements,
        });
    }
    let (begin, end) = t.data_offsets;
    if end < begin {
        return Err(HeaderError::BadTensor {
            name: name.to_string(),
            reason: format!("data_offsets [{begin}, {end}) end before they begin"),
        });
    }
    if end - begin != bits / 8 {
        return Err(HeaderError::SizeMismatch {
            name: name.to_string(),
            dtype: dtype::name(dtype),
            shape: t.shape,
            begin,
            end,
            actual: end - begin,
            expected: bits / 8,
        });
    }
    if end > data_len {
        return Err(HeaderError::OutOfBounds {
            name: name.to_string(),
            begin,
            end,
            data_len,
        });
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape: t.shape,
        data_offsets: (begin, end),
        blocks: None,
    })
}

/// The top-level object as (key, raw value) pairs in order, rejecting duplicate keys (which a
/// plain map would silently collapse to the last one).
fn parse_entries(text: &str) -> Result<Vec<(String, Box<RawValue>)>, HeaderError> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object of tensors")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(format!("duplicate:{key}")));
                }
                out.push((key, map.next_value::<Box<RawValue>>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = serde::Deserializer::deserialize_map(&mut de, Entries).map_err(|e| {
        let msg = e.to_string();
        match msg.strip_prefix("duplicate:") {
            Some(rest) => HeaderError::DuplicateName {
                name: rest.split(" at line").next().unwrap_or(rest).to_string(),
            },
            None => HeaderError::BadJson { reason: msg },
        }
    })?;
    de.end().map_err(|e| HeaderError::BadJson {
        reason: e.to_string(),
    })?;
    Ok(entries)
}

/// Serialises a header for a new file: tensors in the given order with the given offsets,
/// padded with spaces so the data section starts 8-byte aligned.
pub fn serialize(metadata: Option<&BTreeMap<String, String>>, tensors: &[TensorInfo]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    if let Some(m) = metadata {
        map.insert(
            "__metadata__".into(),
            serde_json::to_value(m).unwrap_or_default(),
        );
    }
    for t in tensors {
        map.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": dtype::name(t.dtype),
                "shape": t.shape,
                "data_offsets": [t.data_offsets.0, t.data_offsets.1],
            }),
        );
    }
    let mut json = serde_json::Value::Object(map).to_string().into_bytes();
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

#[cfg(test)]
mod tests;
