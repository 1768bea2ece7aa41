//! LoRA adapters leaving and entering: what an export and an extraction wrote, and an
//! adapter's modules as they meet a base model.

use serde::{Deserialize, Serialize};

/// One module of an adapter against its base.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterModuleRow {
    /// The model's name of the tensor it changes.
    pub tensor: String,
    /// The name the adapter gives it (Hugging Face's or llama.cpp's).
    pub named: String,
    /// The layer it belongs to, when it is in one.
    pub layer: Option<u32>,
    pub rank: u32,
    /// The scale the adapter gives it (folded into its factors).
    pub scale: f32,
    /// `‖ΔW‖_F`.
    pub norm: f64,
    /// `‖ΔW‖_F / ‖W‖_F`: where the adapter acts, relative to what it changes.
    pub relative_norm: f64,
}

/// A tensor left out of an export or an extraction, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedTensor {
    pub tensor: String,
    pub reason: String,
}

/// One module an export wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedModule {
    /// The model's name.
    pub tensor: String,
    /// The name in the adapter.
    pub named: String,
    pub rank: u32,
}

/// What `adapter export` wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportReport {
    /// `peft` or `gguf`.
    pub format: String,
    pub modules: Vec<ExportedModule>,
    pub files: Vec<String>,
    #[serde(default)]
    pub skipped: Vec<SkippedTensor>,
}

/// One module an extraction wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtractedModule {
    /// The model's name of the tensor.
    pub tensor: String,
    /// The rank kept.
    pub rank: u32,
    /// `‖ΔW − B·A‖_F / ‖ΔW‖_F`, measured on the factors written.
    pub relative_error: f64,
    /// The share of `Σ σ²` in the dropped singular values (Eckart-Young: the relative error
    /// is its square root).
    pub dropped_energy: f64,
}

/// What `adapter extract` wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtractReport {
    pub modules: Vec<ExtractedModule>,
    pub files: Vec<String>,
    #[serde(default)]
    pub skipped: Vec<SkippedTensor>,
}
