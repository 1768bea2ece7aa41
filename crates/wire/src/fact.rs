//! Fact editing (ROME, Meng et al. 2022, with r-ROME's averaged key): a rank-one change of one
//! layer's `down_proj` that makes the model say `target` about `subject`, and how it did.

use crate::TokenRef;
use serde::{Deserialize, Serialize};

/// One fact to write, as `edit-fact --requests FILE` reads them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FactRequest {
    /// Text that occurs in the prompt: whose fact changes.
    pub subject: String,
    /// A prompt containing the subject, to be continued with the target.
    pub prompt: String,
    /// The new continuation: token text with its leading space (" Rome") or `#ID`; several
    /// tokens allowed.
    pub target: String,
    /// Other wordings of the prompt (scored, not trained on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paraphrases: Vec<String>,
    /// Prompts about other subjects whose answer should not change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<String>,
}

/// One step of the optimisation of the MLP output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactStepRow {
    pub step: u32,
    pub loss: f64,
    pub nll: f64,
    pub kl: f64,
    /// Mean probability of the target over the prefixed prompts.
    pub p_target: f64,
}

/// Which prompts a probe row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeGroup {
    Prompt,
    Paraphrase,
    Neighbor,
}

/// A prompt's scores, base and with the edit: the mean log-probability per token of the new
/// target and of the old answer (the base model's top-1 after the edited prompt; for a
/// neighbour, after the neighbour prompt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactProbe {
    pub group: ProbeGroup,
    pub prompt: String,
    pub old: TokenRef,
    pub base_new: f64,
    pub base_old: f64,
    pub edited_new: f64,
    pub edited_old: f64,
}

/// ROME's scores, in percent: efficacy (prompts where the new target beats the old answer
/// after the edit), paraphrase (the same on paraphrases), neighbourhood (neighbour prompts
/// where the old answer still beats the new target); and the mean KL divergence of the
/// next-token distribution on unrelated prompts (base to edited, nats).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactScores {
    pub efficacy: f64,
    pub paraphrase: Option<f64>,
    pub neighborhood: Option<f64>,
    pub unrelated_kl: f64,
}

/// A computed fact edit and its evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactEditReport {
    pub subject: String,
    pub prompt: String,
    pub target: Vec<TokenRef>,
    /// The base model's top-1 after the prompt.
    pub old: TokenRef,
    pub layer: u32,
    pub tensor: String,
    pub rank: u32,
    pub steps: Vec<FactStepRow>,
    pub probes: Vec<FactProbe>,
    pub scores: FactScores,
    /// Greedy continuations of the prompt.
    pub generation: FactGeneration,
    /// Bytes of the low-rank entry's factors, and of the bytes it changes as a byte patch.
    pub factor_bytes: u64,
    pub changed_bytes: u64,
    pub seconds: f64,
}

/// A short greedy continuation, base and with the edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactGeneration {
    pub base: String,
    pub edited: String,
}
