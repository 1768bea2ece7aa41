//! A GGUF header written again with changed metadata: the magic, version and tensor count
//! as they were, the metadata pairs in file order with the changes made (a new key last),
//! the tensor infos copied byte for byte, then zeros to the alignment. Tensor offsets are
//! relative to the data section, so the data is copied after it unchanged wherever the new
//! header ends.

use super::{GgufHeader, Value, ValueType, MAGIC};

/// Why metadata cannot be changed as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    #[error("general.alignment places every tensor: it cannot be changed here")]
    Alignment,
    #[error("{key}: arrays are not edited here (only single values and strings)")]
    Array { key: String },
    #[error("{key}: {value} is not a {ty}")]
    Value {
        key: String,
        ty: &'static str,
        value: String,
    },
    #[error("{key}: there is no metadata type {ty:?} (uint8 … float64, bool, string)")]
    Type { key: String, ty: String },
    #[error("the header bytes given are not this header's ({len} bytes; the infos end at {end})")]
    Head { len: usize, end: u64 },
}

/// Appends one value as the file stores it (after its type id).
fn put(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::Array(item, values) => {
            out.extend(item.id().to_le_bytes());
            out.extend((values.len() as u64).to_le_bytes());
            for v in values {
                put(out, v);
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A value of type `ty` from JSON (a number, a bool, a string) for `key`.
pub fn value_from_json(
    key: &str,
    ty: &str,
    value: &serde_json::Value,
) -> Result<Value, MetadataError> {
    let t = ValueType::of_name(ty).ok_or_else(|| MetadataError::Type {
        key: key.into(),
        ty: ty.into(),
    })?;
    let bad = || MetadataError::Value {
        key: key.into(),
        ty: t.name(),
        value: value.to_string(),
    };
    let int = |lo: i128, hi: i128| -> Result<i128, MetadataError> {
        let n = value
            .as_i64()
            .map(i128::from)
            .or_else(|| value.as_u64().map(i128::from))
            .ok_or_else(bad)?;
        (lo..=hi).contains(&n).then_some(n).ok_or_else(bad)
    };
    Ok(match t {
        ValueType::U8 => Value::U8(int(0, u8::MAX.into())? as u8),
        ValueType::I8 => Value::I8(int(i8::MIN.into(), i8::MAX.into())? as i8),
        ValueType::U16 => Value::U16(int(0, u16::MAX.into())? as u16),
        ValueType::I16 => Value::I16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        ValueType::U32 => Value::U32(int(0, u32::MAX.into())? as u32),
        ValueType::I32 => Value::I32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        ValueType::U64 => Value::U64(int(0, u64::MAX.into())? as u64),
        ValueType::I64 => Value::I64(int(i64::MIN.into(), i64::MAX.into())? as i64),
        ValueType::F32 => Value::F32(value.as_f64().ok_or_else(bad)? as f32),
        ValueType::F64 => Value::F64(value.as_f64().ok_or_else(bad)?),
        ValueType::Bool => Value::Bool(value.as_bool().ok_or_else(bad)?),
        ValueType::String => Value::String(value.as_str().ok_or_else(bad)?.to_string()),
        ValueType::Array => return Err(MetadataError::Array { key: key.into() }),
    })
}

/// A value of type `ty` from what a person typed (`"4096"`, `"true"`, any text for a string).
pub fn value_from_text(key: &str, ty: ValueType, text: &str) -> Result<Value, MetadataError> {
    let json = match ty {
        ValueType::String => serde_json::Value::String(text.to_string()),
        ValueType::Array => return Err(MetadataError::Array { key: key.into() }),
        _ => serde_json::from_str(text.trim()).map_err(|_| MetadataError::Value {
            key: key.into(),
            ty: ty.name(),
            value: text.to_string(),
        })?,
    };
    value_from_json(key, ty.name(), &json)
}

/// The header of the file whose first bytes are `head` (through its tensor infos at least),
/// written again with `changes` made (`key`, new value, or `None` to remove the key), padded
/// to the alignment: the bytes that go before the unchanged data section.
pub fn rewrite(
    header: &GgufHeader,
    head: &[u8],
    changes: &[(String, Option<Value>)],
) -> Result<Vec<u8>, MetadataError> {
    if (head.len() as u64) < header.infos.end {
        return Err(MetadataError::Head {
            len: head.len(),
            end: header.infos.end,
        });
    }
    for (key, value) in changes {
        if key == "general.alignment" {
            return Err(MetadataError::Alignment);
        }
        if matches!(value, Some(Value::Array(..))) {
            return Err(MetadataError::Array { key: key.clone() });
        }
    }
    let change = |key: &str| changes.iter().rev().find(|(k, _)| k == key);
    let mut pairs: Vec<(&str, &Value)> = Vec::new();
    for (key, value) in &header.metadata {
        match change(key) {
            Some((_, Some(new))) => pairs.push((key, new)),
            Some((_, None)) => {}
            None => pairs.push((key, value)),
        }
    }
    for (key, value) in changes {
        if let (Some(v), None) = (value, header.get(key)) {
            if !pairs.iter().any(|(k, _)| k == key) {
                pairs.push((key, v));
            }
        }
    }
    let mut out = Vec::with_capacity(head.len());
    out.extend(MAGIC);
    out.extend(header.version.to_le_bytes());
    out.extend((header.tensors.len() as u64).to_le_bytes());
    out.extend((pairs.len() as u64).to_le_bytes());
    for (key, value) in pairs {
        put_string(&mut out, key);
        out.extend(value.value_type().id().to_le_bytes());
        put(&mut out, value);
    }
    out.extend(&head[header.infos.start as usize..header.infos.end as usize]);
    out.resize(
        (out.len() as u64).next_multiple_of(header.alignment) as usize,
        0,
    );
    Ok(out)
}

/// One F32 tensor of a file [`write_file`] writes: its name, its shape (row-major, the outermost
/// dimension first, as [`super::GgufTensor::shape`] reads it) and its values.
pub struct F32Tensor<'a> {
    pub name: &'a str,
    pub shape: Vec<u64>,
    pub values: &'a [f32],
}

/// A whole GGUF file (version 3, alignment 32) of `metadata` and F32 `tensors`, in order:
/// what an adapter or a control vector is written as.
pub fn write_file(metadata: &[(String, Value)], tensors: &[F32Tensor<'_>]) -> Vec<u8> {
    let align = super::DEFAULT_ALIGNMENT;
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut out, key);
        out.extend(value.value_type().id().to_le_bytes());
        put(&mut out, value);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_string(&mut out, t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        // The file lists dimensions innermost first.
        for d in t.shape.iter().rev() {
            out.extend(d.to_le_bytes());
        }
        out.extend(super::GgmlType::F32.id().to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset = (offset + 4 * t.values.len() as u64).next_multiple_of(align);
    }
    out.resize((out.len() as u64).next_multiple_of(align) as usize, 0);
    for t in tensors {
        out.extend(t.values.iter().flat_map(|v| v.to_le_bytes()));
        out.resize((out.len() as u64).next_multiple_of(align) as usize, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_with_its_metadata_shapes_and_values() {
        let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let b = [7.0f32, -1.0, 3.25];
        let meta = vec![
            ("general.type".to_string(), Value::String("adapter".into())),
            ("adapter.lora.alpha".to_string(), Value::F32(2.0)),
        ];
        let f = write_file(
            &meta,
            &[
                F32Tensor {
                    name: "w.lora_a",
                    shape: vec![2, 3],
                    values: &a,
                },
                F32Tensor {
                    name: "w.lora_b",
                    shape: vec![3, 1],
                    values: &b,
                },
            ],
        );
        let h = super::super::parse(&f, f.len() as u64).unwrap();
        assert_eq!(h.metadata, meta);
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].shape, vec![2, 3]);
        assert_eq!(h.tensors[1].shape, vec![3, 1]);
        let read = |t: &super::super::GgufTensor| -> Vec<f32> {
            let at = (h.data_start + t.offset) as usize;
            f[at..at + t.size as usize]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        assert_eq!(read(&h.tensors[0]), a);
        assert_eq!(read(&h.tensors[1]), b);
        assert_eq!(h.tensors[1].offset % 32, 0);
    }

    /// A small GGUF: two pairs, one F32 tensor of 4 values, alignment 32.
    fn file() -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        put_string(&mut out, "general.name");
        out.extend(8u32.to_le_bytes());
        put_string(&mut out, "tiny");
        put_string(&mut out, "tiny.ids");
        out.extend(ValueType::Array.id().to_le_bytes());
        put(
            &mut out,
            &Value::Array(ValueType::U32, vec![Value::U32(1), Value::U32(2)]),
        );
        put_string(&mut out, "w");
        out.extend(1u32.to_le_bytes());
        out.extend(4u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.resize(out.len().next_multiple_of(32), 0);
        for v in [1f32, 2.0, 3.0, 4.0] {
            out.extend(v.to_le_bytes());
        }
        out
    }

    #[test]
    fn a_rewritten_header_reads_back_with_the_changes_and_the_same_data() {
        let f = file();
        let h = super::super::parse(&f, f.len() as u64).unwrap();
        let changes = vec![
            (
                "general.name".to_string(),
                Some(Value::String("a much longer name".into())),
            ),
            (
                "tokenizer.chat_template".to_string(),
                Some(Value::String("{{ x }}".into())),
            ),
        ];
        let head = rewrite(&h, &f, &changes).unwrap();
        assert_eq!(head.len() % 32, 0);
        let mut new = head.clone();
        new.extend(&f[h.data_start as usize..]);
        let g = super::super::parse(&new, new.len() as u64).unwrap();
        assert_eq!(
            g.get("general.name").and_then(Value::as_str),
            Some("a much longer name")
        );
        assert_eq!(
            g.get("tokenizer.chat_template").and_then(Value::as_str),
            Some("{{ x }}")
        );
        assert_eq!(g.get("tiny.ids"), h.get("tiny.ids"));
        assert_eq!(g.tensors, h.tensors);
        assert_eq!(&new[g.data_start as usize..], &f[h.data_start as usize..]);
        // Removing a key; no change at all gives the same bytes back.
        let g = rewrite(&h, &f, &[("tiny.ids".into(), None)]).unwrap();
        let g = super::super::parse(&g, g.len() as u64 + 16).unwrap();
        assert!(g.get("tiny.ids").is_none() && g.metadata.len() == 1);
        assert_eq!(rewrite(&h, &f, &[]).unwrap(), f[..h.data_start as usize]);
        assert_eq!(
            rewrite(
                &h,
                &f,
                &[("general.alignment".into(), Some(Value::U32(64)))]
            ),
            Err(MetadataError::Alignment)
        );
    }

    #[test]
    fn typed_values_come_from_text_and_json_within_their_range() {
        assert_eq!(value_from_text("k", ValueType::U32, "7"), Ok(Value::U32(7)));
        assert!(value_from_text("k", ValueType::U8, "300").is_err());
        assert!(value_from_text("k", ValueType::U32, "-1").is_err());
        assert_eq!(
            value_from_text("k", ValueType::F32, "0.5"),
            Ok(Value::F32(0.5))
        );
        assert_eq!(
            value_from_text("k", ValueType::Bool, "true"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            value_from_text("k", ValueType::String, " as typed "),
            Ok(Value::String(" as typed ".into()))
        );
        assert!(value_from_json("k", "uint128", &serde_json::json!(1)).is_err());
        assert!(value_from_text("k", ValueType::Array, "[1]").is_err());
    }
}
