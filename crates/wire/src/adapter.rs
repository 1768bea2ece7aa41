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

/// An adapter loaded as a layer, and its modules against the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterLoad {
    pub outcome: crate::LoadOutcome,
    pub modules: Vec<AdapterModuleRow>,
}

/// A control vector to read from paired prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ControlVectorRequest {
    /// Prompts that show the behaviour.
    pub positive: Vec<String>,
    /// Their counterparts that do not, in the same order.
    pub negative: Vec<String>,
    /// `pca` (default: the first principal component of the differences, unit length) or
    /// `mean` (the mean difference).
    #[serde(default)]
    pub method: String,
    /// Layers (default: 1 to the last; llama.cpp never steers layer 0).
    #[serde(default)]
    pub layers: Option<Vec<u32>>,
    /// The file's name in the patches folder (GGUF).
    pub save_as: String,
}

/// One layer of a control vector read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlVectorRow {
    pub layer: u32,
    pub norm: f64,
    /// The share of pairs whose positive prompt projects above its negative one.
    pub agreement: f64,
}

/// A control vector read and saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlVectorReport {
    /// Its name in the patches folder.
    pub file: String,
    pub layers: Vec<ControlVectorRow>,
}

/// A control vector and its strength.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlVectorUse {
    /// A name in the patches folder, or a path inside the folders the server may read.
    pub path: String,
    pub strength: f32,
}

/// The control vectors the edited side runs with (none: an empty list).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SteeringRequest {
    pub vectors: Vec<ControlVectorUse>,
}

/// Per layer (in order; modules outside every layer last, as `None`), how much an adapter
/// changes that layer's matrices together: `√Σ‖ΔW‖² / √Σ‖W‖²` over its modules.
pub fn per_layer(rows: &[AdapterModuleRow]) -> Vec<(Option<u32>, f64)> {
    let mut sums: std::collections::BTreeMap<(bool, u32), (f64, f64)> = Default::default();
    for r in rows {
        let key = (r.layer.is_none(), r.layer.unwrap_or(0));
        let w = if r.relative_norm > 0.0 {
            r.norm / r.relative_norm
        } else {
            0.0
        };
        let s = sums.entry(key).or_default();
        s.0 += r.norm * r.norm;
        s.1 += w * w;
    }
    sums.into_iter()
        .map(|((outside, layer), (d, w))| {
            let rel = if w > 0.0 { (d / w).sqrt() } else { 0.0 };
            ((!outside).then_some(layer), rel)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(layer: Option<u32>, norm: f64, w: f64) -> AdapterModuleRow {
        AdapterModuleRow {
            tensor: String::new(),
            named: String::new(),
            layer,
            rank: 1,
            scale: 1.0,
            norm,
            relative_norm: norm / w,
        }
    }

    #[test]
    fn a_layers_modules_count_together_and_modules_outside_layers_come_last() {
        let rows = [
            row(Some(3), 3.0, 10.0),
            row(None, 1.0, 4.0),
            row(Some(3), 4.0, 10.0),
            row(Some(1), 1.0, 2.0),
        ];
        let got = per_layer(&rows);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (Some(1), 0.5));
        // √(9 + 16) / √(100 + 100) = 5 / √200.
        assert_eq!(got[1].0, Some(3));
        assert!((got[1].1 - 5.0 / 200f64.sqrt()).abs() < 1e-12);
        assert_eq!(got[2], (None, 0.25));
    }
}
