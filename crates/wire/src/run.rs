//! Running the model on the session's weights: next-token distributions and continuations of
//! the base and the edited model side by side, sentence embeddings of encoders, probe tables,
//! and activations with the logit lens.

use serde::{Deserialize, Serialize};

/// Whether and how the open model can run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `llama` or `bert` when the model can run.
    pub family: Option<String>,
    /// Why it cannot (what is missing, which families are supported).
    pub reason: Option<String>,
    pub layers: u32,
    /// MLP width (neurons per layer).
    pub intermediate: u32,
    pub hidden: u32,
    pub vocab: u32,
    /// Tensors whose edits the edited model includes (0: it is the base).
    pub edited_tensors: u32,
}

/// One token and its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRef {
    pub id: u32,
    pub token: String,
}

/// A candidate next token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenProb {
    pub id: u32,
    pub token: String,
    pub prob: f32,
    pub logit: f32,
}

/// The chosen target token's probability and log-odds (`ln p/(1-p)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetProb {
    pub id: u32,
    pub token: String,
    pub prob: f32,
    pub log_odds: f32,
}

/// A greedy continuation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Continuation {
    pub ids: Vec<u32>,
    pub text: String,
}

/// What one model says after a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NextTokens {
    pub top: Vec<TokenProb>,
    pub target: Option<TargetProb>,
    pub continuation: Option<Continuation>,
}

/// Run a prompt on the base and the edited model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub prompt: String,
    pub top_k: u32,
    /// A token text (" Paris") or `#ID`.
    pub target: Option<String>,
    /// Greedy continuation length (0: none).
    pub generate: u32,
}

/// Base and edited side by side; `edited` is `None` when nothing is edited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub family: String,
    pub prompt_tokens: Vec<TokenRef>,
    pub base: NextTokens,
    pub edited: Option<NextTokens>,
    /// KL(base || edited) of the next-token distributions, in nats (0 without edits).
    pub kl: f32,
}

/// Sentence embeddings of one model and their cosine similarities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbedSide {
    pub embeddings: Vec<Vec<f32>>,
    pub similarity: Vec<Vec<f32>>,
}

/// An encoder's sentences on the base and the edited model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbedOutcome {
    pub family: String,
    pub base: EmbedSide,
    pub edited: Option<EmbedSide>,
}

/// What a probe checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// The edit should make the target likely (efficacy).
    Expect,
    /// The edit should make the target unlikely.
    Avoid,
    /// The edit should change nothing here (locality: watch the KL).
    Unrelated,
}

/// A prompt and the next token it is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub prompt: String,
    /// A token text or `#ID`; may be empty for an unrelated prompt.
    #[serde(default)]
    pub target: String,
    pub kind: ProbeKind,
}

/// A probe file: saved as JSON beside the patches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeSet {
    pub version: u32,
    pub probes: Vec<Probe>,
}

/// One probe on the base and the edited model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeRow {
    pub prompt: String,
    pub target: String,
    pub kind: ProbeKind,
    /// The target's probability (`None` without a target).
    pub base_prob: Option<f32>,
    pub edited_prob: Option<f32>,
    /// KL(base || edited) of the next-token distribution, in nats.
    pub kl: f32,
    pub base_top: String,
    pub edited_top: String,
}

/// The probe table, as of one session version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeTable {
    pub rows: Vec<ProbeRow>,
    /// The session version the edited side reflects.
    pub version: u64,
}

/// Activations of one layer for a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationsRequest {
    pub prompt: String,
    pub layer: u32,
    /// How many top neurons and logit-lens tokens to list.
    pub top: u32,
}

/// A row-major matrix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    pub rows: u32,
    pub cols: u32,
    pub values: Vec<f32>,
}

/// A neuron of the layer's MLP and its activation at the last token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronHit {
    pub neuron: u32,
    pub value: f32,
}

/// One layer's residual stream read through the final norm and the unembedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensLayer {
    pub layer: u32,
    pub top: Vec<TokenProb>,
}

/// What the edited model computes for a prompt at one layer, and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activations {
    pub layer: u32,
    pub tokens: Vec<TokenRef>,
    /// [tokens, intermediate]: the input of `down_proj`.
    pub mlp: Matrix,
    /// [tokens, hidden]: the attention block's output (`o_proj`).
    pub attention: Matrix,
    /// By |activation| at the last token.
    pub top_neurons: Vec<NeuronHit>,
    pub logit_lens: Vec<LensLayer>,
    /// The weights a neuron links to: its `down_proj` column, `up_proj` / `gate_proj` rows.
    pub down_proj: String,
    pub up_proj: String,
    pub gate_proj: String,
    /// The matrix whose rows a logit-lens token links to.
    pub unembedding: String,
}

/// One event of a streamed continuation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationEvent {
    /// `base` or `edited`.
    pub side: String,
    pub id: u32,
    pub token: String,
    /// Tokens produced so far on this side.
    pub count: u32,
}
