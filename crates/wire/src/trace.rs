//! Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): where
//! a model keeps what it says about a subject, found by corrupting the subject's embeddings and
//! restoring clean states one (layer, token) at a time.

use crate::TokenRef;
use serde::{Deserialize, Serialize};

/// Which states a trace restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TraceKind {
    /// A layer's output (the residual stream after it).
    Residual,
    /// The MLP's output (`down_proj`) in a window of layers around the layer.
    Mlp,
    /// The attention's output (`o_proj`) in a window of layers around the layer.
    Attention,
}

impl TraceKind {
    /// Every kind, in the order traces report them.
    pub const ALL: [TraceKind; 3] = [TraceKind::Residual, TraceKind::Mlp, TraceKind::Attention];

    /// The kind's name in requests and answers.
    pub fn name(self) -> &'static str {
        match self {
            TraceKind::Residual => "residual",
            TraceKind::Mlp => "mlp",
            TraceKind::Attention => "attention",
        }
    }
}

/// A causal trace to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    pub prompt: String,
    /// Text that occurs in the prompt: its tokens are the ones corrupted.
    pub subject: String,
    /// The token whose probability is traced (" Paris" or `#ID`); default: the model's own
    /// top-1 next token on the clean prompt.
    #[serde(default)]
    pub target: Option<String>,
    /// Corrupted runs averaged per cell (each cell uses the same seeded noise).
    #[serde(default = "default_samples")]
    pub samples: u32,
    /// Standard deviation of the noise added to the subject's embeddings; default: 3 x the
    /// standard deviation of the embedding matrix's elements.
    #[serde(default)]
    pub noise: Option<f64>,
    /// MLP and attention restorations cover this many layers around the layer.
    #[serde(default = "default_window")]
    pub window: u32,
    #[serde(default)]
    pub seed: u64,
    /// What to restore (default: all three).
    #[serde(default = "all_kinds")]
    pub kinds: Vec<TraceKind>,
}

fn default_samples() -> u32 {
    10
}

fn default_window() -> u32 {
    10
}

fn all_kinds() -> Vec<TraceKind> {
    TraceKind::ALL.to_vec()
}

impl TraceRequest {
    /// A trace of `subject` in `prompt` with the defaults (10 samples, window 10, seed 0,
    /// every kind, the model's own top-1 as the target).
    pub fn new(prompt: &str, subject: &str) -> TraceRequest {
        TraceRequest {
            prompt: prompt.into(),
            subject: subject.into(),
            target: None,
            samples: default_samples(),
            noise: None,
            window: default_window(),
            seed: 0,
            kinds: all_kinds(),
        }
    }
}

/// A finished trace: p(target) with each (layer, token) state restored, per kind asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CausalTrace {
    pub tokens: Vec<TokenRef>,
    /// The subject's tokens: `start..end` (end exclusive).
    pub subject: [u32; 2],
    pub target: TokenRef,
    /// p(target) on the clean prompt.
    pub clean: f64,
    /// p(target) with the subject corrupted, averaged over the samples.
    pub corrupted: f64,
    /// The noise's standard deviation.
    pub noise: f64,
    pub samples: u32,
    pub window: u32,
    pub layers: u32,
    /// `[layer][token]`: p(target) with that layer's output at that token restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<Vec<Vec<f64>>>,
    /// `[layer][token]`: p(target) with the MLP outputs of the window around the layer
    /// restored at that token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp: Option<Vec<Vec<f64>>>,
    /// `[layer][token]`: the same for the attention outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<Vec<f64>>>,
    /// Stopped before the end: the maps hold the rows finished by then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// Per layer, the model's own name of the matrix an MLP cell points at (its `down_proj`,
    /// the matrix a fact edit there changes).
    #[serde(default)]
    pub mlp_tensors: Vec<String>,
    /// Per layer, the model's own name of the matrix an attention cell points at (its
    /// output projection).
    #[serde(default)]
    pub attention_tensors: Vec<String>,
}

impl CausalTrace {
    /// The model's own name of the matrix a cell of `kind` at `layer` points at.
    pub fn tensor_of(&self, kind: TraceKind, layer: usize) -> Option<&str> {
        match kind {
            TraceKind::Mlp => self.mlp_tensors.get(layer),
            TraceKind::Attention => self.attention_tensors.get(layer),
            TraceKind::Residual => None,
        }
        .map(String::as_str)
    }

    /// The map of one kind, if it was traced.
    pub fn map(&self, kind: TraceKind) -> Option<&Vec<Vec<f64>>> {
        match kind {
            TraceKind::Residual => self.residual.as_ref(),
            TraceKind::Mlp => self.mlp.as_ref(),
            TraceKind::Attention => self.attention.as_ref(),
        }
    }
}

/// One finished row of a running trace, as the page receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    pub kind: TraceKind,
    pub layer: u32,
    /// p(target) for each token.
    pub p: Vec<f64>,
    /// Rows finished so far, of how many.
    pub done: u64,
    pub total: u64,
}

/// What the trace stream sends: the start (the trace without its maps), then each row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceUpdate {
    Started(CausalTrace),
    Row(TraceRow),
}
