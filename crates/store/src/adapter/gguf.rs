//! llama.cpp's GGUF LoRA adapters: `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, and per base tensor `<name>.lora_a` (`[r, in]`) and `<name>.lora_b`
//! (`[out, r]`), row-major; scale `alpha / r` (alpha 0: scale 1). The token embedding's pair is
//! the other way round (`lora_a` `[vocab, r]`, `lora_b` `[hidden, r]`: llama.cpp gathers rows
//! of A), as its loader checks.

use super::{
    scaled, transpose, Adapter, AdapterError, AdapterFormat, AdapterModule, BaseNote, ModuleOut,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::gguf::{self, write::F32Tensor, GgufTensor, Value};

/// The header bytes read to tell an adapter from other GGUF files (an adapter's header is
/// small; a model's vocabulary may not fit, and a model is not an adapter).
const SNIFF_BYTES: u64 = 1 << 20;

/// Whether llama.cpp's loader takes this tensor's pair the other way round.
fn is_token_embedding(name: &str) -> bool {
    name.ends_with("token_embd.weight")
}

/// The header of a small GGUF file (an adapter, a control vector): `None` for anything
/// else, a model's header included when it does not fit in the bytes read.
pub(crate) fn header(path: &Path) -> Option<gguf::GgufHeader> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = Vec::new();
    (&mut f).take(SNIFF_BYTES).read_to_end(&mut head).ok()?;
    if !gguf::is_gguf(&head) {
        return None;
    }
    gguf::parse(&head, len).ok()
}

/// Whether `path` is a GGUF file whose `general.type` is `adapter`.
pub(super) fn is_adapter(path: &Path) -> bool {
    header(path).is_some_and(|h| h.get("general.type").and_then(Value::as_str) == Some("adapter"))
}

pub(super) fn read(path: &Path) -> Result<Adapter, AdapterError> {
    let malformed = |reason: String| AdapterError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| AdapterError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let h = gguf::parse(&bytes, bytes.len() as u64).map_err(|e| malformed(e.to_string()))?;
    match h.get("adapter.type").and_then(Value::as_str) {
        Some("lora") => {}
        other => {
            return Err(AdapterError::Unsupported {
                path: path.to_path_buf(),
                what: format!("an adapter of type {:?}", other.unwrap_or("(none)")),
            })
        }
    }
    let alpha = match h.get("adapter.lora.alpha") {
        Some(Value::F32(a)) => *a as f64,
        Some(Value::F64(a)) => *a,
        Some(Value::U32(a)) => f64::from(*a),
        _ => 0.0,
    };
    let values = |t: &GgufTensor| -> Result<Vec<f32>, AdapterError> {
        let at = (h.data_start + t.offset) as usize;
        let raw = bytes
            .get(at..at + t.size as usize)
            .ok_or_else(|| malformed(format!("{} runs past the end of the file", t.name)))?;
        if let Some(dt) = gguf::plain_dtype(t.ggml_type) {
            return super::floats(dt, raw)
                .ok_or_else(|| malformed(format!("{} is {}", t.name, t.ggml_type)));
        }
        gguf::quant::to_f32(t.ggml_type, raw).map_err(|e| malformed(format!("{}: {e}", t.name)))
    };
    let mut pairs: BTreeMap<String, (Option<&GgufTensor>, Option<&GgufTensor>)> = BTreeMap::new();
    let mut skipped = Vec::new();
    for t in &h.tensors {
        if let Some(base) = t.name.strip_suffix(".lora_a") {
            pairs.entry(base.to_string()).or_default().0 = Some(t);
        } else if let Some(base) = t.name.strip_suffix(".lora_b") {
            pairs.entry(base.to_string()).or_default().1 = Some(t);
        } else if t.name.ends_with("_norm.weight") {
            skipped.push((
                t.name.clone(),
                "a norm vector: llama.cpp's adapter loader skips these too".into(),
            ));
        } else {
            return Err(malformed(format!(
                "the tensor {} is neither a .lora_a nor a .lora_b",
                t.name
            )));
        }
    }
    let mut modules = Vec::new();
    for (name, pair) in pairs {
        let fail = |reason: String| AdapterError::Module {
            path: path.to_path_buf(),
            module: name.clone(),
            reason,
        };
        let (Some(a), Some(b)) = pair else {
            return Err(fail("has only one of lora_a and lora_b".into()));
        };
        let ([a0, a1], [b0, b1]) = (&a.shape[..], &b.shape[..]) else {
            return Err(fail(format!(
                "lora_a is {:?} and lora_b {:?}, not 2-D",
                a.shape, b.shape
            )));
        };
        let (av, bv) = (values(a)?, values(b)?);
        // llama.cpp's rank is lora_b's innermost dimension.
        let rank = *b1 as usize;
        let scale = if alpha == 0.0 {
            1.0
        } else {
            (alpha / rank as f64) as f32
        };
        let module = if is_token_embedding(&name) {
            // lora_a [vocab, r], lora_b [hidden, r]: ΔE = s·A·Bᵀ.
            if *a1 != *b1 {
                return Err(fail(format!(
                    "lora_a is {:?} and lora_b {:?}: ranks differ",
                    a.shape, b.shape
                )));
            }
            AdapterModule {
                tensor: name.clone(),
                rows: *a0 as usize,
                cols: *b0 as usize,
                rank,
                scale,
                u: scaled(&av, scale),
                v: bv,
            }
        } else {
            // lora_a [r, in], lora_b [out, r]: ΔW = s·B·A.
            if *a0 != *b1 {
                return Err(fail(format!(
                    "lora_a is {:?} and lora_b {:?}: ranks differ",
                    a.shape, b.shape
                )));
            }
            AdapterModule {
                tensor: name.clone(),
                rows: *b0 as usize,
                cols: *a1 as usize,
                rank,
                scale,
                u: scaled(&bv, scale),
                v: transpose(&av, rank, *a1 as usize),
            }
        };
        modules.push(module);
    }
    Ok(Adapter {
        format: AdapterFormat::Gguf,
        path: path.to_path_buf(),
        base_model: h
            .get("adapter.base_model")
            .and_then(Value::as_str)
            .map(str::to_string),
        architecture: h.architecture().map(str::to_string),
        modules,
        replaced: Vec::new(),
        skipped,
    })
}

/// Writes `modules` as a llama.cpp GGUF adapter at `path`, each at scale 1: `adapter.lora.alpha`
/// is the modules' rank when they share one, else 0 (which llama.cpp reads as scale 1).
/// Returns the file written.
pub fn write(
    path: &Path,
    modules: &[ModuleOut<'_>],
    base: &BaseNote,
) -> crate::Result<Vec<PathBuf>> {
    let architecture = base
        .architecture
        .clone()
        .ok_or_else(|| AdapterError::Malformed {
            path: path.to_path_buf(),
            reason: "a GGUF adapter names its base's architecture, and this model's is not known \
                 (no config.json)"
                .into(),
        })?;
    let first = modules.first().map_or(1, |m| m.rank);
    let alpha = if modules.iter().all(|m| m.rank == first) {
        first as f32
    } else {
        0.0
    };
    let mut metadata = vec![
        (
            "general.architecture".to_string(),
            Value::String(architecture),
        ),
        ("general.type".to_string(), Value::String("adapter".into())),
        ("adapter.type".to_string(), Value::String("lora".into())),
        ("adapter.lora.alpha".to_string(), Value::F32(alpha)),
        (
            "adapter.base_fingerprint".to_string(),
            Value::String(base.fingerprint.clone()),
        ),
    ];
    if let Some(name) = &base.name {
        metadata.push((
            "adapter.base_model".to_string(),
            Value::String(name.clone()),
        ));
    }
    let mut values: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    for m in modules {
        let (r, rows, cols) = (m.rank as u64, m.rows as u64, m.cols as u64);
        if is_token_embedding(m.tensor) {
            values.push((format!("{}.lora_a", m.tensor), vec![rows, r], m.u.to_vec()));
            values.push((format!("{}.lora_b", m.tensor), vec![cols, r], m.v.to_vec()));
        } else {
            let a = transpose(m.v, m.cols, m.rank);
            values.push((format!("{}.lora_a", m.tensor), vec![r, cols], a));
            values.push((format!("{}.lora_b", m.tensor), vec![rows, r], m.u.to_vec()));
        }
    }
    let tensors: Vec<F32Tensor<'_>> = values
        .iter()
        .map(|(name, shape, v)| F32Tensor {
            name,
            shape: shape.clone(),
            values: v,
        })
        .collect();
    let file = gguf::write::write_file(&metadata, &tensors);
    crate::atomic::write_atomic(path, &file)?;
    Ok(vec![path.to_path_buf()])
}
