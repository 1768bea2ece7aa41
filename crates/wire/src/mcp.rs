//! The MCP tools' arguments: their JSON schemas (and the descriptions agents read) come from
//! these types.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use tensor_surgeon_core::edit::Op;

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
pub struct RunPrompt {
    /// The prompt text.
    pub prompt: String,
    /// Candidates to list (default 10).
    #[serde(default)]
    pub top_k: Option<u32>,
    /// A token whose probability and log-odds to report (" Paris", or "#ID").
    #[serde(default)]
    pub target: Option<String>,
    /// Greedy continuation length (default 0).
    #[serde(default)]
    pub generate: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CausalTraceArgs {
    /// The prompt text.
    pub prompt: String,
    /// Text that occurs in the prompt (the subject): its tokens are corrupted.
    pub subject: String,
    /// The token whose probability is traced (" Paris", or "#ID"); default: the model's own
    /// top-1 next token.
    #[serde(default)]
    pub target: Option<String>,
    /// Corrupted runs averaged per cell (default 10).
    #[serde(default)]
    pub samples: Option<u32>,
    /// Noise standard deviation (default: 3 x the embedding matrix's).
    #[serde(default)]
    pub noise: Option<f64>,
    /// Layers restored around each layer for the MLP and attention maps (default 10).
    #[serde(default)]
    pub window: Option<u32>,
    /// Noise seed (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// What to restore: "residual", "mlp", "attention" (default: all three).
    #[serde(default)]
    pub kinds: Option<Vec<crate::TraceKind>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TopNeurons {
    /// The prompt text.
    pub prompt: String,
    /// The decoder layer (0-based).
    pub layer: u32,
    /// Neurons to list (default 10).
    #[serde(default)]
    pub k: Option<u32>,
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
    #[schemars(schema_with = "op_schema")]
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

/// A directional ablation saved as a patch.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AblateArgs {
    #[serde(flatten)]
    pub request: crate::AblationRequest,
    /// Try layers from a quarter to three quarters of the way up at strengths 0.5 and 1, and
    /// keep the least behaviour that costs at most 0.1 nats of KL (needs markers or tokens).
    #[serde(default)]
    pub search: bool,
    /// The patch's file name in the patches folder.
    pub save_as: String,
    /// What the ablation tests, in a sentence: kept with the patch entries.
    pub hypothesis: String,
}

/// A fact edit (ROME): the model should continue `prompt` with `target`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EditFactArgs {
    /// Text that occurs in the prompt: whose fact changes ("The Eiffel Tower").
    pub subject: String,
    /// A prompt containing the subject ("The Eiffel Tower is located in the city of").
    pub prompt: String,
    /// The new continuation: token text with its leading space (" Rome") or "#ID"; several
    /// tokens allowed.
    pub target: String,
    /// The layer whose down_proj changes (default: a seventh of the way up).
    #[serde(default)]
    pub layer: Option<u32>,
    /// Other wordings of the prompt, scored after the edit.
    #[serde(default)]
    pub paraphrases: Vec<String>,
    /// Prompts about other subjects whose answer should not change.
    #[serde(default)]
    pub neighbors: Vec<String>,
    /// Strength against specificity: the optimised change of the MLP output is kept under this
    /// many times the output's own norm (default 4, ROME's; lower spills less over to the
    /// neighbours, and may not write the fact).
    #[serde(default)]
    pub clamp: Option<f64>,
    /// How much the optimisation weighs keeping the subject's other predictions (default
    /// 0.0625, ROME's; higher: more specific).
    #[serde(default)]
    pub kl_weight: Option<f64>,
    /// What the edit tests, in a sentence: shown to the person who accepts or rejects it.
    pub hypothesis: String,
}

/// Several facts written at once over a range of layers (MEMIT), saved as a patch.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EditFactsArgs {
    /// The facts: each a subject, a prompt containing it and the new target (with optional
    /// paraphrases and neighbours, scored after the edit).
    pub facts: Vec<crate::FactRequest>,
    /// The layers whose down_proj changes, e.g. [4, 5, 6, 7, 8] (MEMIT spreads each fact over
    /// them; one low-rank entry per layer, of rank the number of facts).
    pub layers: Vec<u32>,
    /// The patch's file name in the patches folder.
    pub save_as: String,
    /// What the edit tests, in a sentence: kept with the patch entries.
    pub hypothesis: String,
}

/// The schema of an edit operation (the core's `Op`, whose JSON form is tagged by `op`).
fn op_schema(_: &mut SchemaGenerator) -> Schema {
    let variant = |op: &str, doc: &str, fields: serde_json::Value, required: &[&str]| {
        let mut properties = serde_json::json!({ "op": { "type": "string", "const": op } });
        if let (Some(p), Some(f)) = (properties.as_object_mut(), fields.as_object()) {
            p.extend(f.clone());
        }
        let mut req = vec!["op"];
        req.extend_from_slice(required);
        serde_json::json!({
            "type": "object",
            "description": doc,
            "properties": properties,
            "required": req,
        })
    };
    let number = serde_json::json!({ "type": "number" });
    let optional = serde_json::json!({ "type": ["number", "null"] });
    let text = serde_json::json!({ "type": "string" });
    json_schema!({
        "oneOf": [
            variant("set", "Replace with a value.", serde_json::json!({ "value": text }), &["value"]),
            variant("add", "Add a value.", serde_json::json!({ "value": text }), &["value"]),
            variant("scale", "Multiply by a factor.", serde_json::json!({ "factor": number }), &["factor"]),
            variant("zero", "Set to zero.", serde_json::json!({}), &[]),
            variant("clamp", "Clamp into [min, max] (either bound optional).", serde_json::json!({ "min": optional, "max": optional }), &[]),
            variant("hex", "Replace the stored bytes: hex, one element's worth.", serde_json::json!({ "hex": text }), &["hex"]),
            variant("low_rank", "Add U Vᵀ to the tensor seen as rows x cols (the whole tensor: spec \"\"): u and v are base64 of little-endian f32, u [rows, rank] and v [cols, rank], row-major.", serde_json::json!({ "rank": { "type": "integer", "minimum": 1 }, "u": text, "v": text }), &["rank", "u", "v"]),
        ]
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProjectRows {
    /// The 2-D tensor whose rows are the points (default: the embedding).
    #[serde(default)]
    pub tensor: Option<String>,
    /// "pca", "tsne" or "umap" (default "umap").
    #[serde(default)]
    pub method: Option<String>,
    /// 2 or 3 (default 2).
    #[serde(default)]
    pub dims: Option<u32>,
    /// Lay out the columns instead of the rows.
    #[serde(default)]
    pub columns: Option<bool>,
    /// Unit-norm points first (cosine geometry).
    #[serde(default)]
    pub normalize: Option<bool>,
    /// t-SNE perplexity (default 30).
    #[serde(default)]
    pub perplexity: Option<f64>,
    /// UMAP neighbours per point (default 15).
    #[serde(default)]
    pub n_neighbors: Option<u32>,
    /// UMAP min_dist (default 0.1).
    #[serde(default)]
    pub min_dist: Option<f64>,
    /// Optimisation steps (default: the method's).
    #[serde(default)]
    pub iterations: Option<u32>,
    /// The same seed gives the same layout (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Clusters of the layout to summarise (k-means, default 8).
    #[serde(default)]
    pub clusters: Option<usize>,
    /// Points to return with their coordinates (default 0: clusters only).
    #[serde(default)]
    pub points: Option<usize>,
}

/// Low-rank entries leaving as a LoRA adapter.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExportAdapterArgs {
    /// A saved patch's name in the patches folder (fact edits, MEMIT, ablations, a loaded
    /// adapter); empty: the session's low-rank steps.
    #[serde(default)]
    pub source: String,
    /// `peft` (a folder: adapter_config.json + adapter_model.safetensors) or `gguf`
    /// (llama.cpp's adapter).
    pub format: String,
    /// The adapter's name in the patches folder.
    pub save_as: String,
}

/// A difference turned into a LoRA adapter by truncated SVD.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExtractAdapterArgs {
    /// The other side: a model (same tensors) or a patch or adapter, by name in the patches
    /// folder or by path inside the folders the server may read; empty: the session's edits.
    #[serde(default)]
    pub other: String,
    /// Keep at most this many singular values per matrix.
    #[serde(default)]
    pub rank: Option<u32>,
    /// Or keep the fewest whose dropped energy (share of Σσ²) is at most this.
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Only tensors whose name this regular expression matches.
    #[serde(default)]
    pub include: String,
    /// `peft` or `gguf`.
    pub format: String,
    /// The adapter's name in the patches folder.
    pub save_as: String,
}

/// An adapter: a name in the patches folder or a path inside the folders the server may read.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AdapterArg {
    pub path: String,
}

/// One control vector and its strength.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SteerVector {
    /// A control vector's name in the patches folder, or a path the server may read.
    pub path: String,
    /// Its multiplier (1: as read).
    pub strength: f32,
}

/// The control vectors the edited side runs with.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SteerArgs {
    /// Empty: none.
    pub vectors: Vec<SteerVector>,
}
