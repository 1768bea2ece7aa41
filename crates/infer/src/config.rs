//! Which models can run: the architecture read from the model's `config.json`, and the
//! hyper-parameters of the two supported families.

use crate::arch::{Architecture, Constants, GemmaLayers, Kind};
use crate::error::{InferError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the run panel says when a model cannot run.
pub const SUPPORTED: &str = "supported: Llama-family causal language models (model_type llama, \
     mistral, qwen2, qwen3, phi3; Hugging Face tensor names) and BERT encoders (model_type bert)";

/// A decoder's `config.json` (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 3), as read; the
/// description the passes use is made from it ([`Architecture`]).
#[derive(Clone, Debug, Deserialize)]
struct DecoderConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads.
    num_key_value_heads: Option<usize>,
    /// Explicit head width (Qwen3-style configs); otherwise hidden / heads.
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    eos_token_id: Option<serde_json::Value>,
    /// Mistral: each position attends to the last this many positions (Qwen configs name a
    /// window too, with `use_sliding_window: false`).
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    /// Llama's optional biases on q, k, v and o (Qwen2 always has those of q, k and v).
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    final_logit_softcapping: Option<f64>,
}

impl DecoderConfig {
    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    fn head_width(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    /// The end-of-sequence ids (a number or a list in `config.json`).
    fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|n| n as u32))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The numbers of the description.
    fn constants(&self, kind: Kind, gemma: Option<GemmaLayers>) -> Constants {
        Constants {
            kind,
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            kv_heads: self.kv_heads(),
            head_width: self.head_width(),
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            vocab: self.vocab_size,
            rms_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_positions: self.max_position_embeddings,
            tied: self.tie_word_embeddings,
            eos: self.eos_ids(),
            window: self
                .sliding_window
                .filter(|_| self.use_sliding_window != Some(false)),
            qkv_bias: kind == Kind::Qwen2 || self.attention_bias,
            mlp_bias: self.mlp_bias,
            final_softcap: self.final_logit_softcapping.map(|c| c as f32),
            gemma,
        }
    }
}

/// A BERT encoder (MiniLM and friends): sentence embeddings by mean pooling.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

/// A runnable architecture.
#[derive(Clone, Debug)]
pub enum Family {
    /// A decoder-only causal language model, described once.
    Llama(Arc<Architecture>),
    Bert(BertConfig),
}

impl Family {
    pub fn name(&self) -> &'static str {
        match self {
            Family::Llama(_) => "llama",
            Family::Bert(_) => "bert",
        }
    }

    /// Reads `config.json` beside the model (a file, or in the model's folder).
    pub fn detect(model_path: &Path) -> Result<(Family, PathBuf)> {
        let dir = folder_of(model_path);
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(InferError::Unsupported(format!(
                "cannot run this model: no config.json in {} (it names the architecture and its \
                 sizes); {SUPPORTED}",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(InferError::io(&path))?;
        let family = Family::parse(&text)
            .map_err(|reason| InferError::Unsupported(format!("{}: {reason}", path.display())))?;
        Ok((family, path))
    }

    /// Parses a `config.json`.
    pub fn parse(text: &str) -> std::result::Result<Family, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let architecture = value
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let wrong =
            |e: serde_json::Error| format!("a {model_type} config this reader cannot use: {e}");
        if let Some(scaling) = value.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err(format!(
                "rope_scaling {scaling} is not implemented (plain rotary embeddings are); {SUPPORTED}"
            ));
        }
        if let Some(f) = value
            .get("partial_rotary_factor")
            .and_then(|v| v.as_f64())
            .filter(|&f| f != 1.0)
        {
            return Err(format!(
                "partial rotary embeddings (partial_rotary_factor {f}) are not implemented; {SUPPORTED}"
            ));
        }
        let decoder = |c: Constants| Family::Llama(Arc::new(Architecture::resolve(&c)));
        match Kind::from_model_type(&model_type) {
            Some(Kind::Gemma3) => return gemma3(value).map(decoder),
            Some(kind) => {
                if value
                    .get("attn_logit_softcapping")
                    .is_some_and(|v| !v.is_null())
                {
                    return Err(format!(
                        "attn_logit_softcapping is not implemented; {SUPPORTED}"
                    ));
                }
                return serde_json::from_value::<DecoderConfig>(value)
                    .map(|c| decoder(c.constants(kind, None)))
                    .map_err(wrong);
            }
            None => {}
        }
        match model_type.as_str() {
            "bert" => serde_json::from_value(value)
                .map(Family::Bert)
                .map_err(wrong),
            "" => Err(format!(
                "no model_type in config.json (architectures: {architecture:?}); {SUPPORTED}"
            )),
            other => Err(format!(
                "cannot run a {other:?} model ({architecture}); {SUPPORTED}"
            )),
        }
    }
}

/// A Gemma 3 text model's `config.json` (Gemma3ForCausalLM).
fn gemma3(mut value: serde_json::Value) -> std::result::Result<Constants, String> {
    let get = |k: &str| value.get(k).cloned().unwrap_or(serde_json::Value::Null);
    if !get("attn_logit_softcapping").is_null() {
        return Err(format!(
            "attn_logit_softcapping is not implemented (Gemma 3 has none); {SUPPORTED}"
        ));
    }
    match get("hidden_activation").as_str() {
        None | Some("gelu_pytorch_tanh") => {}
        Some(other) => return Err(format!("hidden_activation {other:?} is not implemented")),
    }
    let number = |k: &str| get(k).as_f64();
    let head_dim = number("head_dim");
    let gemma = GemmaLayers {
        sliding_window: number("sliding_window").unwrap_or(512.0) as usize,
        global_every: number("sliding_window_pattern").unwrap_or(6.0) as usize,
        local_rope_theta: number("rope_local_base_freq").unwrap_or(10_000.0),
        query_pre_attn_scalar: number("query_pre_attn_scalar")
            .or(head_dim)
            .unwrap_or(256.0),
        norm_offset: 1.0,
    };
    if gemma.global_every == 0 {
        return Err("sliding_window_pattern is 0".into());
    }
    // Gemma ties its embeddings unless it says otherwise; its window is its own.
    if let Some(map) = value.as_object_mut() {
        map.entry("tie_word_embeddings").or_insert(true.into());
        map.remove("sliding_window");
    }
    let config: DecoderConfig = serde_json::from_value(value)
        .map_err(|e| format!("a gemma3_text config this reader cannot use: {e}"))?;
    Ok(config.constants(Kind::Gemma3, Some(gemma)))
}

/// The folder holding a model's side files.
/// What `config.json` beside the model says the model is, for its overview: the
/// architecture and its sizes, as `(key, value)` in a fixed order (empty without the file).
/// Unlike [`Family::detect`] this accepts any architecture.
pub fn describe(model_path: &Path) -> Vec<(String, String)> {
    const KEYS: [&str; 11] = [
        "architectures",
        "model_type",
        "num_hidden_layers",
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "tie_word_embeddings",
        "torch_dtype",
    ];
    let Ok(text) = std::fs::read_to_string(folder_of(model_path).join("config.json")) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return Vec::new();
    };
    KEYS.iter()
        .filter_map(|&k| {
            let v = match map.get(k)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
                v => v.to_string(),
            };
            Some((k.to_string(), v))
        })
        .collect()
}

pub fn folder_of(model_path: &Path) -> &Path {
    if model_path.is_dir() {
        model_path
    } else {
        model_path.parent().unwrap_or(Path::new("."))
    }
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_positions() -> usize {
    2048
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_config_with_gqa_and_tied_embeddings() {
        let text = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
            "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,
            "num_key_value_heads":3,"vocab_size":49152,"rms_norm_eps":1e-5,"rope_theta":100000,
            "tie_word_embeddings":true,"eos_token_id":[2,0]}"#;
        let Family::Llama(a) = Family::parse(text).unwrap() else {
            panic!("not llama")
        };
        assert_eq!((a.kv_heads, a.head_width), (3, 64));
        assert_eq!(a.unembedding, a.embedding, "tied");
        assert_eq!(a.eos, vec![2, 0]);
        assert_eq!(a.layers[0].rope_theta, 100_000.0);
    }

    #[test]
    fn other_architectures_say_what_is_supported() {
        let err = Family::parse(r#"{"model_type":"gpt2","architectures":["GPT2LMHeadModel"]}"#)
            .unwrap_err();
        assert!(
            err.contains("\"gpt2\"") && err.contains("GPT2LMHeadModel"),
            "{err}"
        );
        assert!(
            err.contains("Llama-family") && err.contains("BERT"),
            "{err}"
        );
        let err = Family::parse(r#"{"model_type":"llama","hidden_size":8}"#).unwrap_err();
        assert!(err.contains("missing field"), "{err}");
        assert!(Family::parse("[").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn a_model_without_config_is_refused_with_the_folder_named() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.safetensors");
        std::fs::write(&model, b"").unwrap();
        let err = Family::detect(&model).unwrap_err().to_string();
        assert!(
            err.contains("no config.json") && err.contains("supported"),
            "{err}"
        );
    }
}
