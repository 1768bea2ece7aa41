//! llama.cpp's control-vector files: a GGUF of `general.architecture = controlvector`,
//! `controlvector.model_hint` (the base's architecture), `controlvector.layer_count`, and one F32
//! tensor `direction.N` of the hidden width per layer `N >= 1`, added to the output of layer `N`
//! at every position (llama.cpp never has one for layer 0).

use crate::{Result, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use tensor_surgeon_core::gguf::{self, write::F32Tensor, Value};

/// A control vector: per layer, the vector added to its output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControlVector {
    /// The base model's architecture (llama.cpp's name: `llama`, `qwen2`, ...).
    pub model_hint: Option<String>,
    /// Layer -> vector (the hidden width).
    pub layers: BTreeMap<usize, Vec<f32>>,
}

/// What is wrong with a control-vector file.
fn malformed(path: &Path, reason: String) -> StoreError {
    StoreError::Adapter(crate::adapter::AdapterError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// Whether `path` is a control-vector GGUF.
pub fn is_control_vector(path: &Path) -> bool {
    crate::adapter::gguf_header(path).is_some_and(|h| {
        h.get("general.architecture").and_then(Value::as_str) == Some("controlvector")
    })
}

/// Reads a control-vector file.
pub fn read(path: &Path) -> Result<ControlVector> {
    let bytes = std::fs::read(path).map_err(StoreError::io(path))?;
    let h = gguf::parse(&bytes, bytes.len() as u64).map_err(|source| StoreError::Gguf {
        path: path.to_path_buf(),
        source,
    })?;
    if h.get("general.architecture").and_then(Value::as_str) != Some("controlvector") {
        return Err(malformed(
            path,
            "not a control vector (general.architecture is not controlvector)".into(),
        ));
    }
    let mut out = ControlVector {
        model_hint: h
            .get("controlvector.model_hint")
            .and_then(Value::as_str)
            .map(str::to_string),
        layers: BTreeMap::new(),
    };
    let mut width = None;
    for t in &h.tensors {
        let Some(layer) = t
            .name
            .strip_prefix("direction.")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return Err(malformed(
                path,
                format!("unexpected tensor {} (only direction.N)", t.name),
            ));
        };
        if layer == 0 {
            return Err(malformed(
                path,
                "direction.0: layers are numbered from 1".into(),
            ));
        }
        if t.ggml_type != gguf::GgmlType::F32 || t.shape.len() != 1 {
            return Err(malformed(
                path,
                format!(
                    "{} is {} {:?}, not an F32 vector",
                    t.name, t.ggml_type, t.shape
                ),
            ));
        }
        if *width.get_or_insert(t.shape[0]) != t.shape[0] {
            return Err(malformed(
                path,
                format!(
                    "{} is {} wide, the others {}",
                    t.name,
                    t.shape[0],
                    width.unwrap_or_default()
                ),
            ));
        }
        let at = (h.data_start + t.offset) as usize;
        let raw = bytes
            .get(at..at + t.size as usize)
            .ok_or_else(|| malformed(path, format!("{} runs past the end of the file", t.name)))?;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.layers.insert(layer, values);
    }
    Ok(out)
}

/// Writes a control vector as llama.cpp reads it; `layer_count` is the model's depth.
pub fn write(path: &Path, cv: &ControlVector, layer_count: usize) -> Result<()> {
    if let Some(0) = cv.layers.keys().next() {
        return Err(malformed(
            path,
            "llama.cpp's control vectors have no direction for layer 0".into(),
        ));
    }
    let mut metadata = vec![(
        "general.architecture".to_string(),
        Value::String("controlvector".into()),
    )];
    if let Some(hint) = &cv.model_hint {
        metadata.push((
            "controlvector.model_hint".to_string(),
            Value::String(hint.clone()),
        ));
    }
    metadata.push((
        "controlvector.layer_count".to_string(),
        Value::U32(layer_count as u32),
    ));
    let names: Vec<String> = cv.layers.keys().map(|l| format!("direction.{l}")).collect();
    let tensors: Vec<F32Tensor<'_>> = cv
        .layers
        .values()
        .zip(&names)
        .map(|(v, name)| F32Tensor {
            name,
            shape: vec![v.len() as u64],
            values: v,
        })
        .collect();
    crate::atomic::write_atomic(path, &gguf::write::write_file(&metadata, &tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_control_vector_reads_back_and_is_told_from_an_adapter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cv.gguf");
        let cv = ControlVector {
            model_hint: Some("llama".into()),
            layers: BTreeMap::from([(1, vec![1.0, -2.0, 0.5]), (3, vec![0.0, 0.25, 4.0])]),
        };
        write(&path, &cv, 4).unwrap();
        assert!(is_control_vector(&path));
        assert_eq!(crate::adapter::detect(&path), None);
        assert_eq!(read(&path).unwrap(), cv);
        let bytes = std::fs::read(&path).unwrap();
        let h = gguf::parse(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(h.get("controlvector.layer_count"), Some(&Value::U32(4)));
        assert_eq!(h.tensor("direction.3").unwrap().shape, vec![3]);
        let zero = ControlVector {
            model_hint: None,
            layers: BTreeMap::from([(0, vec![1.0])]),
        };
        assert!(write(&path, &zero, 4).is_err());
    }
}
