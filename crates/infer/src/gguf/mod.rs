//! GGUF models, run: the family and its sizes from the file's metadata, llama.cpp's tensor
//! names read under the names the forward pass asks for, the query and key rows put back in
//! the order the forward pass's rotary embedding expects, and the tokenizer from
//! `tokenizer.ggml.*`. No side file is needed.

mod tokenizer;

pub use tokenizer::tokenizer;

use crate::arch::{Architecture, Constants, GemmaLayers, Kind, Qkv};
use crate::config::Family;
use crate::error::{InferError, Result};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::gguf::{GgufHeader, Value};
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::tensors::{ReadError, TensorSource};

/// The GGUF architectures that run, in llama.cpp's names.
pub const RUNNABLE: &str = "llama, qwen2, qwen3, phi3, gemma3";

pub(crate) fn unsupported(why: String) -> InferError {
    InferError::Unsupported(format!(
        "cannot run this GGUF model: {why} (GGUF architectures that run: {RUNNABLE})"
    ))
}

pub(crate) fn get<'h>(h: &'h GgufHeader, key: &str) -> Result<&'h Value> {
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

/// What a GGUF's metadata says the model is, for its overview, under the names `config.json`
/// uses (`architectures`, `model_type`, `num_hidden_layers`, …).
pub fn describe(h: &GgufHeader) -> Vec<(String, String)> {
    let arch = h.architecture().unwrap_or_default();
    let name = h
        .get("general.name")
        .and_then(Value::as_str)
        .unwrap_or(arch);
    let mut out = vec![
        ("architectures".to_string(), name.to_string()),
        ("model_type".to_string(), arch.to_string()),
    ];
    let keys = [
        ("num_hidden_layers", "block_count"),
        ("hidden_size", "embedding_length"),
        ("intermediate_size", "feed_forward_length"),
        ("num_attention_heads", "attention.head_count"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("max_position_embeddings", "context_length"),
    ];
    for (label, key) in keys {
        if let Some(v) = h.get(&format!("{arch}.{key}")) {
            out.push((label.to_string(), v.to_string()));
        }
    }
    if let Some(Value::Array(_, tokens)) = h.get("tokenizer.ggml.tokens") {
        out.push(("vocab_size".to_string(), tokens.len().to_string()));
    }
    out
}

/// The family of a GGUF model and the map from the forward pass's names to its tensors.
pub fn family(h: &GgufHeader) -> Result<(Family, NameMap)> {
    let arch = h
        .architecture()
        .ok_or_else(|| unsupported("its metadata has no general.architecture".into()))?;
    let kind = Kind::from_gguf(arch)
        .ok_or_else(|| unsupported(format!("general.architecture is {arch:?}")))?;
    if h.tensor("rope_factors_long.weight").is_some() {
        return Err(unsupported(
            "its long-context rotary factors (LongRoPE) are not implemented".into(),
        ));
    }
    let mut c = constants(h, arch, kind)?;
    if kind == Kind::Gemma3 {
        // llama.cpp's Gemma 3: every sixth layer global, the others over a window with rotary
        // base 10,000 (neither is in the file's metadata); norm weights stored as `1 + w`.
        c.gemma = Some(GemmaLayers {
            sliding_window: number(h, "gemma3.attention.sliding_window").unwrap_or(512),
            global_every: 6,
            local_rope_theta: 10_000.0,
            query_pre_attn_scalar: c.head_width as f64,
            norm_offset: 0.0,
        });
    }
    let architecture = Architecture::resolve(&c);
    let names = NameMap::new(h, &architecture)?;
    Ok((Family::Llama(std::sync::Arc::new(architecture)), names))
}

/// A decoder's numbers, every one from the metadata (llama.cpp's keys, under the
/// architecture's prefix) or the tensor table (biases, a separate output matrix).
fn constants(h: &GgufHeader, arch: &str, kind: Kind) -> Result<Constants> {
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = number(h, &key("embedding_length"))?;
    let heads = number(h, &key("attention.head_count"))?;
    let kv_heads = number(h, &key("attention.head_count_kv")).unwrap_or(heads);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(unsupported(format!(
            "{heads} attention heads over {kv_heads} key/value heads"
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
    let has = |name: &str| h.tensor(name).is_some();
    Ok(Constants {
        kind,
        hidden,
        heads,
        kv_heads,
        head_width,
        intermediate: number(h, &key("feed_forward_length"))?,
        layers: number(h, &key("block_count"))?,
        vocab,
        rms_eps: float_or(h, &key("attention.layer_norm_rms_epsilon"), 1e-5),
        rope_theta: float_or(h, &key("rope.freq_base"), 10_000.0),
        max_positions: number(h, &key("context_length")).unwrap_or(2048),
        tied: !has("output.weight"),
        eos: h
            .get("tokenizer.ggml.eos_token_id")
            .and_then(Value::as_u64)
            .map(|id| vec![id as u32])
            .unwrap_or_default(),
        window: number(h, &key("attention.sliding_window"))
            .ok()
            .filter(|_| kind != Kind::Gemma3),
        qkv_bias: has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias"),
        mlp_bias: has("blk.0.ffn_down.bias"),
        final_softcap: h
            .get(&key("final_logit_softcapping"))
            .and_then(Value::as_f64)
            .map(|v| v as f32),
        gemma: None,
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
    /// The rows put back, made on first use: of the values, and of the blocks.
    restored: OnceLock<Vec<u8>>,
    restored_blocks: OnceLock<Vec<u8>>,
}

/// The forward pass's names (Hugging Face's) for a GGUF model's tensors.
pub struct NameMap {
    by_name: HashMap<String, Mapped>,
    /// File name -> forward-pass name.
    run_names: HashMap<String, String>,
}

impl NameMap {
    /// The file's tensors under the description's names. llama.cpp's converter interleaves
    /// the query and key rows of a Llama-architecture model (its rotary embedding rotates
    /// adjacent pairs); they are put back, per head.
    fn new(h: &GgufHeader, a: &Architecture) -> Result<NameMap> {
        let mut heads: HashMap<&str, usize> = HashMap::new();
        if a.kind == Kind::Llama {
            for l in &a.layers {
                if let Qkv::Split { q, k, .. } = &l.qkv {
                    heads.insert(&q.weight, a.heads);
                    heads.insert(&k.weight, a.kv_heads);
                }
            }
        }
        let pairs = a
            .tensor_names()
            .into_iter()
            .filter_map(|run| {
                let source = a.stored_name(&run)?;
                let n = heads.get(run.as_str()).copied();
                Some((source, run, n))
            })
            .collect();
        NameMap::of(h, pairs)
    }

    fn of(h: &GgufHeader, pairs: Vec<(String, String, Option<usize>)>) -> Result<NameMap> {
        let mut by_name = HashMap::new();
        let mut run_names = HashMap::new();
        for (source, run, heads) in pairs {
            let Some(t) = h.tensor(&source) else {
                continue; // a missing tensor is reported by the pass that needs it
            };
            let rows = t.shape.first().copied().unwrap_or(0) as usize;
            if let Some(n) =
                heads.filter(|&n| n == 0 || t.shape.len() != 2 || !rows.is_multiple_of(2 * n))
            {
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
                blocks: t.ggml_type.is_quantized().then_some(t.ggml_type),
            };
            run_names.insert(source.clone(), run.clone());
            by_name.insert(
                run,
                Mapped {
                    source,
                    info,
                    heads,
                    restored: OnceLock::new(),
                    restored_blocks: OnceLock::new(),
                },
            );
        }
        Ok(NameMap { by_name, run_names })
    }

    /// The forward pass's name of a tensor of the file.
    pub fn run_name(&self, file_name: &str) -> Option<&str> {
        self.run_names.get(file_name).map(String::as_str)
    }
}

/// Rows of a query or key weight in Hugging Face's order: in each head of `rows / heads`
/// rows, row `s·d/2 + j` is the file's row `2j + s`.
pub(crate) fn restore_rows(bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
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

impl NameMap {
    /// The file's name of the forward pass's tensor `name` (itself when unmapped).
    pub fn source_name<'n>(&'n self, name: &'n str) -> &'n str {
        self.by_name.get(name).map_or(name, |m| &m.source)
    }
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
        match self.names {
            Some(m) => m.source_name(name),
            None => name,
        }
    }

    /// The heads whose rows are put back from the file's order, when `name`'s are.
    pub fn rotary_heads(&self, name: &str) -> Option<usize> {
        self.names.and_then(|m| m.by_name.get(name))?.heads
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

    fn blocks(&self, name: &str) -> Option<&[u8]> {
        let Some(m) = self.mapped(name) else {
            return self.names.is_none().then(|| self.inner.blocks(name))?;
        };
        let base = self.inner.blocks(&m.source)?;
        match m.heads {
            None => Some(base),
            Some(heads) => {
                let rows = m.info.shape[0] as usize;
                Some(
                    m.restored_blocks
                        .get_or_init(|| restore_rows(base, rows, heads)),
                )
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
