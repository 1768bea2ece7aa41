//! LoRA adapter files, in and out: PEFT's (`adapter_config.json` + `adapter_model.safetensors`)
//! and llama.cpp's GGUF adapters. An adapter reads as a list of modules, each a change
//! `ΔW = U Vᵀ` of one base tensor with its scale folded into `U`, named as the file names it
//! (Hugging Face's names for PEFT, llama.cpp's for GGUF): the same shape as a patch's low-rank
//! entry, so the engine turns one into the other once the base model is at hand.
//!
//! Writing does the reverse: every module is written with scale 1 (PEFT: `lora_alpha = r`,
//! rank and alpha patterns per module when ranks differ; GGUF: `adapter.lora.alpha = r`, or 0
//! when ranks differ, which llama.cpp reads as scale 1), so both files mean exactly the
//! factors given, whatever `use_rslora` a reader assumes.

mod gguf;
mod peft;
#[cfg(test)]
mod tests;

pub(crate) use gguf::header as gguf_header;
pub use gguf::write as write_gguf;
pub use peft::write as write_peft;

use std::path::{Path, PathBuf};

/// The file name of a PEFT adapter's configuration.
pub const PEFT_CONFIG: &str = "adapter_config.json";
/// The file name of a PEFT adapter's weights.
pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";

/// The two adapter formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterFormat {
    /// A PEFT folder: `adapter_config.json` and `adapter_model.safetensors`.
    Peft,
    /// A llama.cpp GGUF adapter (`general.type = adapter`, `adapter.type = lora`).
    Gguf,
}

/// One module of an adapter: the change `U Vᵀ` of a `rows x cols` base tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterModule {
    /// The base tensor, as the adapter names it (PEFT: the module's name + `.weight`).
    pub tensor: String,
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
    /// The scale the file gives the module (already folded into `u`).
    pub scale: f32,
    /// `[rows, rank]`, row-major f32: `scale · B` (an embedding's: `scale · Aᵀ`).
    pub u: Vec<f32>,
    /// `[cols, rank]`, row-major f32: `Aᵀ` (an embedding's: `B`).
    pub v: Vec<f32>,
}

/// A whole tensor an adapter replaces (PEFT's `modules_to_save`).
#[derive(Clone, Debug, PartialEq)]
pub struct Replaced {
    /// The base tensor, as the adapter names it.
    pub tensor: String,
    pub dtype: tensor_surgeon_core::dtype::Dtype,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

/// An adapter file as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    pub format: AdapterFormat,
    /// The file or folder it was read from.
    pub path: PathBuf,
    /// The base model the adapter names (PEFT's `base_model_name_or_path`).
    pub base_model: Option<String>,
    /// A GGUF adapter's `general.architecture`.
    pub architecture: Option<String>,
    pub modules: Vec<AdapterModule>,
    pub replaced: Vec<Replaced>,
    /// Tensors the file has that are not applied, with why (llama.cpp's adapters may carry
    /// norm vectors, which llama.cpp itself skips).
    pub skipped: Vec<(String, String)>,
}

/// What is wrong with an adapter file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// A kind of adapter this build cannot apply exactly (DoRA, IA3, a LoRA bias, ...).
    #[error("{}: {what} cannot be applied exactly as a change of the weights, so it is not read", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// Two tensors of one module that do not fit together or with the config.
    #[error("{}: {module}: {reason}", path.display())]
    Module {
        path: PathBuf,
        module: String,
        reason: String,
    },
}

/// Where a PEFT adapter's files are, when `path` names one: its folder, its
/// `adapter_config.json` or its `adapter_model.safetensors`.
fn peft_folder(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return path.join(PEFT_CONFIG).is_file().then(|| path.to_path_buf());
    }
    let name = path.file_name()?.to_str()?;
    if name == PEFT_CONFIG || name == PEFT_WEIGHTS {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        return Some(dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf));
    }
    None
}

/// The adapter format of the file or folder at `path`, if it is an adapter (a patch file is
/// not: this reads no more than a GGUF's header).
pub fn detect(path: &Path) -> Option<AdapterFormat> {
    if peft_folder(path).is_some() {
        return Some(AdapterFormat::Peft);
    }
    gguf::is_adapter(path).then_some(AdapterFormat::Gguf)
}

/// Reads the adapter at `path` (a PEFT folder or one of its two files, or a GGUF adapter).
pub fn read(path: &Path) -> Result<Adapter, AdapterError> {
    if let Some(dir) = peft_folder(path) {
        return peft::read(&dir);
    }
    if gguf::is_adapter(path) {
        return gguf::read(path);
    }
    Err(AdapterError::Malformed {
        path: path.to_path_buf(),
        reason: format!(
            "not an adapter: neither a PEFT folder ({PEFT_CONFIG} + {PEFT_WEIGHTS}) nor a GGUF \
             file with general.type = adapter"
        ),
    })
}

/// One module to write: the change `U Vᵀ` of a `rows x cols` tensor, named for the format.
#[derive(Clone, Debug)]
pub struct ModuleOut<'a> {
    /// The base tensor's name in the format's scheme (Hugging Face's for PEFT, llama.cpp's
    /// for GGUF), with its `.weight`.
    pub tensor: &'a str,
    /// Whether the tensor is a token embedding (both formats store its pair the other way).
    pub embedding: bool,
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
    /// `[rows, rank]` and `[cols, rank]`, row-major.
    pub u: &'a [f32],
    pub v: &'a [f32],
}

/// What a written adapter says of its base.
#[derive(Clone, Debug, Default)]
pub struct BaseNote {
    /// PEFT's `base_model_name_or_path`.
    pub name: Option<String>,
    /// The base model's fingerprint (its files' header digests and sizes), as text.
    pub fingerprint: String,
    /// llama.cpp's `general.architecture` of the base (GGUF adapters must name it).
    pub architecture: Option<String>,
}

/// `m` transposed: `[rows, cols]` row-major to `[cols, rows]`.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = m[i * cols + j];
        }
    }
    out
}

/// `m` with every value multiplied by `s` (in f32).
pub(crate) fn scaled(m: &[f32], s: f32) -> Vec<f32> {
    m.iter().map(|x| x * s).collect()
}

/// The values of a tensor in `dtype` (F32, F16, BF16: each exact in f32), by the shared codec.
pub(crate) fn floats(dtype: tensor_surgeon_core::dtype::Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    use tensor_surgeon_core::dtype::{self, Dtype};
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return None;
    }
    let width = dtype::element_bytes(dtype);
    Some(
        bytes
            .chunks_exact(width)
            .map(|c| dtype::decode_f64(dtype, c) as f32)
            .collect(),
    )
}
