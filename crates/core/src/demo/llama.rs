//! A tiny random Llama (F32, untied `lm_head`, grouped-query attention) that the forward pass
//! can run: the weights as a `.safetensors` file, its `config.json`, and the demo vocabulary's
//! `tokenizer.json`. Deterministic; for tests of inference and of the session's runs.

use crate::dtype::Dtype;
use crate::header::{self, TensorInfo};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Hidden size of the tiny Llama.
pub const HIDDEN: u64 = 16;
/// MLP inner size.
pub const INTERMEDIATE: u64 = 32;
/// Transformer layers.
pub const LAYERS: u64 = 2;
/// Attention heads.
pub const HEADS: u64 = 4;
/// Key/value heads (grouped-query attention).
pub const KV_HEADS: u64 = 2;

/// The files of the tiny Llama, by file name: `model.safetensors`, `config.json`,
/// `tokenizer.json`. `skip` leaves one tensor out (a model the forward pass must refuse).
pub fn files(skip: Option<&str>) -> [(&'static str, Vec<u8>); 3] {
    let vocab = super::VOCAB;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 0.3).expect("a valid normal");
    let hd = HIDDEN / HEADS;
    let mut shapes: Vec<(String, Vec<u64>)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        let attn = |part: &str, rows: u64, cols: u64| {
            (format!("{p}.self_attn.{part}.weight"), vec![rows, cols])
        };
        shapes.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        shapes.push(attn("q_proj", HEADS * hd, HIDDEN));
        shapes.push(attn("k_proj", KV_HEADS * hd, HIDDEN));
        shapes.push(attn("v_proj", KV_HEADS * hd, HIDDEN));
        shapes.push(attn("o_proj", HIDDEN, HEADS * hd));
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
        shapes.push((
            format!("{p}.mlp.gate_proj.weight"),
            vec![INTERMEDIATE, HIDDEN],
        ));
        shapes.push((
            format!("{p}.mlp.up_proj.weight"),
            vec![INTERMEDIATE, HIDDEN],
        ));
        shapes.push((
            format!("{p}.mlp.down_proj.weight"),
            vec![HIDDEN, INTERMEDIATE],
        ));
    }
    shapes.push(("model.norm.weight".into(), vec![HIDDEN]));
    shapes.push(("lm_head.weight".into(), vec![vocab, HIDDEN]));
    let mut data = Vec::new();
    let mut infos = Vec::new();
    for (name, shape) in shapes {
        if Some(name.as_str()) == skip {
            continue;
        }
        let n: u64 = shape.iter().product();
        let begin = data.len() as u64;
        for _ in 0..n {
            // Norm weights near 1, matrices around 0.
            let v = if shape.len() == 1 {
                1.0 + normal.sample(&mut rng) * 0.1
            } else {
                normal.sample(&mut rng)
            };
            data.extend_from_slice(&v.to_le_bytes());
        }
        infos.push(TensorInfo {
            name,
            dtype: Dtype::F32,
            shape,
            data_offsets: (begin, data.len() as u64),
            blocks: None,
        });
    }
    let mut model = header::serialize(None, &infos);
    model.extend_from_slice(&data);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "max_position_embeddings": 64, "eos_token_id": 2
    });
    [
        ("model.safetensors", model),
        ("config.json", config.to_string().into_bytes()),
        (
            "tokenizer.json",
            super::vocab::tokenizer_json().into_bytes(),
        ),
    ]
}
