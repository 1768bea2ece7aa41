//! GGUF models, run: the family and its sizes from the file's metadata, llama.cpp's tensor
//! names read under the names the forward pass asks for, the query and key rows put back in
//! the order the forward pass's rotary embedding expects, and the tokenizer from
//! `tokenizer.ggml.*`. No side file is needed.

use crate::config::{Family, LlamaConfig, SUPPORTED};
use crate::error::{InferError, Result};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::gguf::{GgufHeader, Value};
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::tensors::{ReadError, TensorSource};

/// The GGUF architectures that run, in llama.cpp's names.
pub const RUNNABLE: &str = "llama";

fn unsupported(why: String) -> InferError {
    InferError::Unsupported(format!("cannot run this GGUF model: {why}; {SUPPORTED}"))
}

fn get<'h>(h: &'h GgufHeader, key: &str) -> Result<&'h Value> {
    h.get(key)
        .ok_or_else(|| unsupported(format!("its metadata has no {key}")))
}

fn number(h: &GgufHeader, key: &str) -> Result<usize> {
    get(h, key)?
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| unsupported(format!("{key} is not a whole number")))
}

fn float_or(h: &GgufHeader, key: &str, default: f64) -> f64 {
    // An f32 in the file: read as its shortest decimal (1e-5, not 9.99999974e-6), as the
    // original config.json wrote it.
    match h.get(key) {
        Some(Value::F32(v)) => format!("{v:e}").parse().unwrap_or(f64::from(*v)),
        Some(v) => v.as_f64().unwrap_or(default),
        None => default,
    }
}

/// The family of a GGUF model and the map from the forward pass's names to its tensors.
pub fn family(h: &GgufHeader) -> Result<(Family, NameMap)> {
    let arch = h
        .architecture()
        .ok_or_else(|| unsupported("its metadata has no general.architecture".into()))?;
    match arch {
        "llama" => {
            let config = llama_config(h)?;
            let names = NameMap::llama(h, &config)?;
            Ok((Family::Llama(config), names))
        }
        other => Err(unsupported(format!(
            "general.architecture is {other:?}; the GGUF architectures that run are {RUNNABLE}"
        ))),
    }
}

/// A Llama model's sizes, every number from the metadata (llama.cpp's keys).
fn llama_config(h: &GgufHeader) -> Result<LlamaConfig> {
    let key = |k: &str| format!("llama.{k}");
    let hidden = number(h, &key("embedding_length"))?;
    let heads = number(h, &key("attention.head_count"))?;
    let kv_heads = number(h, &key("attention.head_count_kv")).unwrap_or(heads);
    if heads == 0 || hidden % heads != 0 {
        return Err(unsupported(format!(
            "{heads} heads do not divide the width {hidden}"
        )));
    }
    let head_width = number(h, &key("attention.key_length")).unwrap_or(hidden / heads);
    if let Ok(rope) = number(h, &key("rope.dimension_count")) {
        if rope != head_width {
            return Err(unsupported(format!(
                "rotary embeddings over {rope} of {head_width} dims (partial rotary) are not \
                 implemented"
            )));
        }
    }
    let tokens = match h.get("tokenizer.ggml.tokens") {
        Some(Value::Array(_, t)) => t.len(),
        _ => 0,
    };
    let vocab = number(h, &key("vocab_size")).unwrap_or(tokens);
    Ok(LlamaConfig {
        hidden_size: hidden,
        intermediate_size: number(h, &key("feed_forward_length"))?,
        num_hidden_layers: number(h, &key("block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(head_width),
        vocab_size: vocab,
        rms_norm_eps: float_or(h, &key("attention.layer_norm_rms_epsilon"), 1e-5),
        rope_theta: float_or(h, &key("rope.freq_base"), 10_000.0),
        max_position_embeddings: number(h, &key("context_length")).unwrap_or(2048),
        tie_word_embeddings: h.tensor("output.weight").is_none(),
        eos_token_id: h
            .get("tokenizer.ggml.eos_token_id")
            .and_then(Value::as_u64)
            .map(serde_json::Value::from),
    })
}

/// One tensor the forward pass reads, and where it is in the file.
struct Mapped {
    /// Its name in the file.
    source: String,
    /// Its info under the forward pass's name.
    info: TensorInfo,
    /// Query and key weights: llama.cpp's converter interleaves each head's two rotary
    /// halves (rows `0, d/2, 1, d/2 + 1, …`); the forward pass rotates halves, so the rows
    /// are put back, per head of this many.
    heads: Option<usize>,
    /// The rows put back, made on first use.
    restored: OnceLock<Vec<u8>>,
}

/// The forward pass's names (Hugging Face's) for a GGUF model's tensors.
pub struct NameMap {
    by_name: HashMap<String, Mapped>,
    /// File name -> forward-pass name.
    run_names: HashMap<String, String>,
}

impl NameMap {
    fn llama(h: &GgufHeader, c: &LlamaConfig) -> Result<NameMap> {
        let mut pairs: Vec<(String, String, Option<usize>)> = vec![
            ("token_embd.weight".into(), "model.embed_tokens.weight".into(), None),
            ("output_norm.weight".into(), "model.norm.weight".into(), None),
            ("output.weight".into(), "lm_head.weight".into(), None),
        ];
        for l in 0..c.num_hidden_layers {
            let parts: [(&str, &str, Option<usize>); 9] = [
                ("attn_norm", "input_layernorm", None),
                ("attn_q", "self_attn.q_proj", Some(c.num_attention_heads)),
                ("attn_k", "self_attn.k_proj", Some(c.kv_heads())),
                ("attn_v", "self_attn.v_proj", None),
                ("attn_output", "self_attn.o_proj", None),
                ("ffn_norm", "post_attention_layernorm", None),
                ("ffn_gate", "mlp.gate_proj", None),
                ("ffn_up", "mlp.up_proj", None),
                ("ffn_down", "mlp.down_proj", None),
            ];
            for (gguf, hf, heads) in parts {
                pairs.push((
                    format!("blk.{l}.{gguf}.weight"),
                    format!("model.layers.{l}.{hf}.weight"),
                    heads,
                ));
            }
        }
        let mut by_name = HashMap::new();
        let mut run_names = HashMap::new();
        for (source, run, heads) in pairs {
            let Some(t) = h.tensor(&source) else {
                continue; // a missing tensor is reported by the pass that needs it
            };
            let rows = t.shape.first().copied().unwrap_or(0) as usize;
            if let Some(n) = heads.filter(|&n| t.shape.len() != 2 || rows % (2 * n) != 0) {
                return Err(unsupported(format!(
                    "{source} has shape {:?}, which is not {n} heads of whole rotary pairs",
                    t.shape
                )));
            }
            let info = TensorInfo {
                name: run.clone(),
                dtype: tensor_surgeon_core::gguf::plain_dtype(t.ggml_type)
                    .unwrap_or(dtype::Dtype::F32),
                shape: t.shape.clone(),
                data_offsets: (t.offset, t.offset + t.size),
            };
            run_names.insert(source.clone(), run.clone());
            by_name.insert(
                run,
                Mapped {
                    source,
                    info,
                    heads,
                    restored: OnceLock::new(),
                },
            );
        }
        Ok(NameMap { by_name, run_names })
    }

    /// The forward pass's name of a tensor of the file.
    pub fn run_name(&self, file_name: &str) -> Option<&str> {
        self.run_names.get(file_name).map(String::as_str)
    }

    /// Whether the tensor of the file called `file_name` is read with its rows reordered.
    pub fn reorders(&self, file_name: &str) -> bool {
        self.run_name(file_name)
            .and_then(|r| self.by_name.get(r))
            .is_some_and(|m| m.heads.is_some())
    }
}

/// Rows of a query or key weight in Hugging Face's order: in each head of `rows / heads`
/// rows, row `s·d/2 + j` is the file's row `2j + s`.
fn restore_rows(bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    let row_bytes = bytes.len() / rows.max(1);
    let d = rows / heads;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..d / 2 {
                let to = h * d + s * (d / 2) + j;
                let from = h * d + 2 * j + s;
                out[to * row_bytes..(to + 1) * row_bytes]
                    .copy_from_slice(&bytes[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    out
}

/// A model's tensors as the forward pass names them: directly, or through a GGUF's name map.
#[derive(Clone, Copy)]
pub struct RunSource<'a> {
    pub(crate) inner: &'a dyn TensorSource,
    pub(crate) names: Option<&'a NameMap>,
}

impl<'a> RunSource<'a> {
    /// The name of `name`'s tensor in the model (edits are keyed by it).
    pub fn source_name<'n>(&self, name: &'n str) -> &'n str
    where
        'a: 'n,
    {
        match self.names.and_then(|m| m.by_name.get(name)) {
            Some(m) => &m.source,
            None => name,
        }
    }

    /// Whether `name`'s rows are reordered from the file's.
    pub fn reorders(&self, name: &str) -> bool {
        self.names
            .and_then(|m| m.by_name.get(name))
            .is_some_and(|m| m.heads.is_some())
    }

    fn mapped(&self, name: &str) -> Option<&'a Mapped> {
        self.names.and_then(|m| m.by_name.get(name))
    }
}

impl TensorSource for RunSource<'_> {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        match self.names {
            Some(m) => m.by_name.get(name).map(|m| &m.info),
            None => self.inner.info(name),
        }
    }

    fn resident(&self, name: &str) -> Option<&[u8]> {
        let Some(m) = self.mapped(name) else {
            return self.names.is_none().then(|| self.inner.resident(name))?;
        };
        let base = self.inner.resident(&m.source)?;
        match m.heads {
            None => Some(base),
            Some(heads) => {
                let rows = m.info.shape[0] as usize;
                Some(m.restored.get_or_init(|| restore_rows(base, rows, heads)))
            }
        }
    }

    fn bytes(&self, name: &str) -> std::result::Result<Cow<'_, [u8]>, ReadError> {
        let Some(m) = self.mapped(name) else {
            return self.inner.bytes(name);
        };
        let base = self.inner.bytes(&m.source)?;
        Ok(match m.heads {
            None => base,
            Some(heads) => Cow::Owned(restore_rows(&base, m.info.shape[0] as usize, heads)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::restore_rows;

    #[test]
    fn rows_go_back_to_rotate_half_order_per_head() {
        // Two heads of four rows, one byte each: the file holds 0,2,1,3 of each head (its
        // rotary pairs side by side); the forward pass wants 0,1,2,3.
        let file = [0u8, 2, 1, 3, 4, 6, 5, 7];
        assert_eq!(restore_rows(&file, 8, 2), vec![0, 1, 2, 3, 4, 5, 6, 7]);
    }
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;

fn strings<'h>(h: &'h GgufHeader, key: &str) -> Result<Vec<&'h str>> {
    match get(h, key)? {
        Value::Array(_, items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| unsupported(format!("{key} holds a non-string")))
            })
            .collect(),
        _ => Err(unsupported(format!("{key} is not an array"))),
    }
}

/// The tokenizer a GGUF carries, as the `tokenizers` library runs it: llama.cpp's byte-level
/// BPE (`tokenizer.ggml.model` "gpt2") with the vocabulary, merges and special tokens of the
/// file. The pre-tokenizer follows `tokenizer.ggml.pre`: GPT-2's byte-level split, after
/// single digits for "smollm".
pub fn tokenizer(h: &GgufHeader) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::{AddedToken, PreTokenizerWrapper};

    let model = get(h, "tokenizer.ggml.model")?.as_str().unwrap_or_default();
    if model != "gpt2" {
        return Err(unsupported(format!(
            "its tokenizer is {model:?}; byte-level BPE (\"gpt2\") is implemented"
        )));
    }
    let pre = h
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let digits = match pre {
        "smollm" => true,
        "default" | "gpt-2" | "gpt2" => false,
        other => {
            return Err(unsupported(format!(
                "its pre-tokenizer {other:?} is not implemented (smollm and gpt-2 are)"
            )))
        }
    };
    let tokens = strings(h, "tokenizer.ggml.tokens")?;
    let merges = strings(h, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| unsupported(format!("the merge {m:?} is not a pair")))
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(unsupported("its vocabulary repeats a token".into()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| unsupported(format!("its vocabulary does not make a BPE model: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = if digits {
        Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
    } else {
        byte_level.into()
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_post_processor(Some(ByteLevel::new(false, false, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let types: Vec<u64> = match h.get("tokenizer.ggml.token_type") {
        Some(Value::Array(_, t)) => t.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    let of_type = |ty: u64, special: bool| -> Vec<AddedToken> {
        types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| **t == ty)
            .map(|(_, s)| AddedToken::from(s.to_string(), special).normalized(false))
            .collect()
    };
    tok.add_special_tokens(of_type(TOKEN_CONTROL, true))
        .map_err(|e| unsupported(format!("its special tokens: {e}")))?;
    tok.add_tokens(of_type(TOKEN_USER_DEFINED, false))
        .map_err(|e| unsupported(format!("its user-defined tokens: {e}")))?;
    if let Some(true) = h.get("tokenizer.ggml.add_bos_token").map(|v| *v == Value::Bool(true)) {
        return Err(unsupported(
            "it asks for a BOS token before every prompt, which this tokenizer does not add yet"
                .into(),
        ));
    }
    Ok(tok)
}
