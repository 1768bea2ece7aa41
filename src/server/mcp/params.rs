//! The tools' arguments: their JSON schemas (and the descriptions agents read) come from these
//! types.

use crate::edit::Op;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListTensors {
    /// Keep names containing this text (or matching it as a regex when it is written /like
    /// this/). Empty: every tensor.
    #[serde(default)]
    pub filter: String,
    /// First tensor to return (for paging).
    #[serde(default)]
    pub offset: usize,
    /// Most tensors to return (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TensorArg {
    /// Exact tensor name, as list_tensors prints it.
    pub tensor: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadValues {
    /// Exact tensor name.
    pub tensor: String,
    /// numpy-style slice, one entry per leading dim: "3,:,10:20", "0:8:2", "-1". Missing trailing
    /// dims are taken whole.
    #[serde(default)]
    pub spec: String,
    /// Most elements to return (default 256, at most 4096); a larger slice is an error.
    #[serde(default)]
    pub max_elements: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FindOutliers {
    /// Most flagged tensors to return (default 50).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NearestTokens {
    /// A token as text (" Paris", with its leading space) or "#ID".
    pub token: String,
    /// Neighbours to return (default 10).
    #[serde(default)]
    pub k: Option<usize>,
    /// The [vocab, hidden] matrix (default: the embedding).
    #[serde(default)]
    pub tensor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CompareTokens {
    /// First token (text or "#ID").
    pub a: String,
    /// Second token (text or "#ID").
    pub b: String,
    /// The [vocab, hidden] matrix (default: the embedding).
    #[serde(default)]
    pub tensor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProposeEdit {
    /// Exact tensor name.
    pub tensor: String,
    /// numpy-style region to edit: "7,:" is row 7, "0:4,2" a column piece.
    pub spec: String,
    /// The operation: {"op":"set","value":"0.5"}, {"op":"add","value":"-1"},
    /// {"op":"scale","factor":0.125}, {"op":"zero"}, {"op":"clamp","min":-1,"max":1} or
    /// {"op":"hex","hex":"0000803f"} (one element's stored bytes, little-endian).
    pub op: Op,
    /// What the edit tests, in a sentence: shown to the person who accepts or rejects it and
    /// kept with the patch entries.
    pub hypothesis: String,
    /// Clamp values the dtype cannot hold instead of failing.
    #[serde(default)]
    pub saturate: bool,
    /// Round non-integers for integer dtypes instead of failing.
    #[serde(default)]
    pub round: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Nothing {}
