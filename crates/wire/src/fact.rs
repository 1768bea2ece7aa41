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
    /// The layer whose `down_proj` changes (MEMIT: the last of its layers, where the
    /// facts' goals are set).
    pub layer: u32,
    /// MEMIT: every layer the facts are spread over (empty for a ROME edit at `layer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<u32>,
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

/// A computed fact edit waiting as a proposal, with its evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactProposal {
    pub proposal: crate::Proposal,
    /// Applied at once (an agent's, when the server auto-applies agent edits).
    pub applied: bool,
    pub report: FactEditReport,
}

/// A short greedy continuation, base and with the edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactGeneration {
    pub base: String,
    pub edited: String,
}

/// A directional ablation (`ablate`): a behaviour's direction, from the mean residual streams
/// of two prompt lists, projected out of the matrices that write to the residual stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AblationRequest {
    /// Prompts that show the behaviour (the direction points towards them). Even-numbered
    /// ones (0, 2, ...) make the direction; the others are held out to measure it.
    pub from: Vec<String>,
    /// Prompts that do not (the direction points away from them); the KL is measured on them.
    pub to: Vec<String>,
    /// The layer whose output gives the direction (default: the middle of the stack).
    #[serde(default)]
    pub layer: Option<u32>,
    /// How much of the direction is projected out (1: all of it).
    #[serde(default = "one")]
    pub strength: f64,
    /// Also project it out of the embedding matrix.
    #[serde(default)]
    pub embedding: bool,
    /// Strings whose presence in a continuation marks the behaviour (case-insensitive).
    #[serde(default)]
    pub markers: Vec<String>,
    /// Tokens whose next-token probability marks the behaviour (" Sorry", or "#ID").
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Length of the continuations the markers are looked for in.
    #[serde(default = "sixteen")]
    pub generate: u32,
}

fn one() -> f64 {
    1.0
}

fn sixteen() -> u32 {
    16
}

/// What an ablation did, measured on the held-out prompts of the first list (the behaviour)
/// and on the second list (the KL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationReport {
    pub layer: u32,
    pub strength: f64,
    /// The length of the mean difference before it was made a unit vector.
    pub direction_norm: f64,
    /// Held-out prompts the behaviour is measured on.
    pub held_out: u32,
    /// Percent of held-out continuations with a marker, base and ablated (with markers).
    pub marker_rate: Option<BaseEdited>,
    /// Mean probability of the given tokens after the held-out prompts, base and ablated.
    pub token_prob: Option<BaseEdited>,
    /// Mean KL divergence (base to ablated) of the next token after the second list's prompts.
    pub kl: f64,
    /// Continuations of the held-out prompts.
    pub continuations: Vec<Continued>,
    /// Matrices changed (a low-rank entry each; a quantized one is kept as its blocks), the
    /// factors' bytes, and the bytes they change.
    pub entries: u32,
    pub factor_bytes: u64,
    pub changed_bytes: u64,
    /// With `--search`: every (layer, strength) tried and how it did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<AblationTrial>,
    pub seconds: f64,
}

/// An ablation computed for a person and saved in the patches folder (the session does not
/// change until it is loaded as a layer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationSaved {
    pub report: AblationReport,
    /// The patch's file name in the patches folder.
    pub saved: String,
}

/// A measure before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseEdited {
    pub base: f64,
    pub edited: f64,
}

/// A held-out prompt's continuation, base and ablated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Continued {
    pub prompt: String,
    pub base: String,
    pub edited: String,
}

/// One candidate of a search: its behaviour measure and KL after ablation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationTrial {
    pub layer: u32,
    pub strength: f64,
    pub behaviour: f64,
    pub kl: f64,
}
