//! The embedded demo model: a tiny transformer-shaped checkpoint, written by the program,
//! deterministic, with structure worth looking at (low-rank patterns, outlier rows, a layer
//! that stands out, a norm with NaN/Inf planted) and a mix of dtypes from F32 to F8 and BOOL.

use crate::dtype::{self, Dtype, EncodeOptions, Number};
use crate::header::{self, TensorInfo};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;

pub mod llama;
pub mod vocab;

/// Vocabulary size of the demo model.
pub const VOCAB: u64 = 2048;
/// Hidden size.
pub const HIDDEN: u64 = 128;
/// MLP inner size.
pub const INTERMEDIATE: u64 = 256;
/// Transformer layers.
pub const LAYERS: u64 = 4;
/// Rows of the embedding planted as outliers (norm x8).
pub const OUTLIER_ROWS: [u64; 2] = [7, 300];
/// The layer whose attention output projection has an outlying scale.
pub const OUTLIER_LAYER: u64 = 2;
/// The tensor holding NaN and ±Inf.
pub const NAN_TENSOR: &str = "model.layers.3.post_attention_layernorm.weight";

/// One demo tensor before encoding.
pub struct DemoTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub values: Vec<f64>,
}

struct Gen {
    rng: ChaCha8Rng,
    normal: Normal<f64>,
}

impl Gen {
    fn noise(&mut self, std: f64) -> f64 {
        self.normal.sample(&mut self.rng) * std
    }

    /// A `rows x cols` matrix: rank-`rank` smooth pattern plus noise.
    fn low_rank(&mut self, rows: u64, cols: u64, rank: usize, scale: f64, noise: f64) -> Vec<f64> {
        let u: Vec<Vec<f64>> = (0..rank)
            .map(|_| (0..rows).map(|_| self.noise(1.0)).collect())
            .collect();
        let v: Vec<Vec<f64>> = (0..rank)
            .map(|r| {
                (0..cols)
                    .map(|j| ((j as f64) * 0.11 * (r as f64 + 1.0)).sin())
                    .collect()
            })
            .collect();
        let mut out = Vec::with_capacity((rows * cols) as usize);
        for i in 0..rows as usize {
            for j in 0..cols as usize {
                let s: f64 = u.iter().zip(&v).map(|(ur, vr)| ur[i] * vr[j]).sum();
                out.push(scale * s / rank as f64 + self.noise(noise));
            }
        }
        out
    }
}

/// Rows of each word group of the vocabulary around one centre per group, so related
/// tokens are each other's nearest neighbours (own random stream: other tensors unchanged).
fn plant_groups(embed: &mut [f64]) {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(0x70CE),
        normal: Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!("unit normal")),
    };
    let centres: Vec<Vec<f64>> = vocab::GROUPS
        .iter()
        .map(|_| (0..HIDDEN).map(|_| g.noise(0.06)).collect())
        .collect();
    for (group, row) in vocab::group_rows() {
        let at = (row * HIDDEN) as usize;
        for (v, c) in embed[at..at + HIDDEN as usize]
            .iter_mut()
            .zip(&centres[group])
        {
            *v = c + g.noise(0.015);
        }
    }
}

/// The demo tensors with their values, in file order.
pub fn tensors() -> Vec<DemoTensor> {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(0x5EED),
        normal: Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!("unit normal")),
    };
    let mut out = Vec::new();
    let mut push = |name: String, dtype: Dtype, shape: Vec<u64>, values: Vec<f64>| {
        out.push(DemoTensor {
            name,
            dtype,
            shape,
            values,
        })
    };

    let mut embed = g.low_rank(VOCAB, HIDDEN, 4, 0.08, 0.01);
    plant_groups(&mut embed);
    for &row in &OUTLIER_ROWS {
        for v in &mut embed[(row * HIDDEN) as usize..((row + 1) * HIDDEN) as usize] {
            *v *= 8.0;
        }
    }
    push(
        "model.embed_tokens.weight".into(),
        Dtype::F32,
        vec![VOCAB, HIDDEN],
        embed,
    );

    for layer in 0..LAYERS {
        let p = format!("model.layers.{layer}");
        let attn_dtype = if layer < 2 { Dtype::BF16 } else { Dtype::F16 };
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            let scale = if proj == "o_proj" && layer == OUTLIER_LAYER {
                0.4
            } else {
                0.05
            };
            let w = g.low_rank(HIDDEN, HIDDEN, 2, scale, scale / 4.0);
            push(
                format!("{p}.self_attn.{proj}.weight"),
                attn_dtype,
                vec![HIDDEN, HIDDEN],
                w,
            );
        }
        for (proj, rows, cols) in [
            ("gate_proj", INTERMEDIATE, HIDDEN),
            ("up_proj", INTERMEDIATE, HIDDEN),
            ("down_proj", HIDDEN, INTERMEDIATE),
        ] {
            let w = g.low_rank(rows, cols, 3, 0.06, 0.01);
            let name = format!("{p}.mlp.{proj}.weight");
            if layer < 2 {
                // Int8 with one F32 scale per output row.
                let mut q = Vec::with_capacity(w.len());
                let mut scales = Vec::with_capacity(rows as usize);
                for row in w.chunks(cols as usize) {
                    let s = row.iter().fold(0f64, |m, v| m.max(v.abs())) / 127.0;
                    scales.push(s);
                    q.extend(row.iter().map(|v| (v / s).round_ties_even()));
                }
                push(name.clone(), Dtype::I8, vec![rows, cols], q);
                push(format!("{name}_scale"), Dtype::F32, vec![rows], scales);
            } else {
                // FP8 with one F32 scale for the tensor.
                let s = w.iter().fold(0f64, |m, v| m.max(v.abs())) / 448.0;
                push(
                    name.clone(),
                    Dtype::F8_E4M3,
                    vec![rows, cols],
                    w.iter().map(|v| v / s).collect(),
                );
                push(format!("{name}_scale"), Dtype::F32, vec![], vec![s]);
            }
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let mut w: Vec<f64> = (0..HIDDEN).map(|_| 1.0 + g.noise(0.05)).collect();
            if format!("{p}.{norm}.weight") == NAN_TENSOR {
                w[5] = f64::NAN;
                w[17] = f64::INFINITY;
                w[42] = f64::NEG_INFINITY;
            }
            push(format!("{p}.{norm}.weight"), Dtype::F32, vec![HIDDEN], w);
        }
    }
    // A causal mask (BOOL) and a head-structured 4-D tensor.
    let ctx = 16u64;
    let mask = (0..ctx * ctx)
        .map(|i| f64::from(u8::from(i % ctx <= i / ctx)))
        .collect();
    push(
        "model.causal_mask".into(),
        Dtype::BOOL,
        vec![ctx, ctx],
        mask,
    );
    let heads = 4u64;
    let rope: Vec<f64> = (0..2 * heads * ctx * (HIDDEN / heads / 2))
        .map(|i| {
            let d = (i % (HIDDEN / heads / 2)) as f64;
            let pos = ((i / (HIDDEN / heads / 2)) % ctx) as f64;
            let angle = pos / 10000f64.powf(2.0 * d / (HIDDEN / heads) as f64);
            if i < heads * ctx * (HIDDEN / heads / 2) {
                angle.cos()
            } else {
                angle.sin()
            }
        })
        .collect();
    push(
        "model.rotary_emb.cos_sin".into(),
        Dtype::F16,
        vec![2, heads, ctx, HIDDEN / heads / 2],
        rope,
    );
    let byte_map: Vec<f64> = (0..256u64).map(|b| ((b * 167 + 13) % 256) as f64).collect();
    push("model.byte_fallback".into(), Dtype::U8, vec![256], byte_map);
    let norm: Vec<f64> = (0..HIDDEN).map(|_| 1.0 + g.noise(0.02)).collect();
    push("model.norm.weight".into(), Dtype::F32, vec![HIDDEN], norm);
    let lm_head = g.low_rank(VOCAB, HIDDEN, 4, 0.05, 0.01);
    push(
        "lm_head.weight".into(),
        Dtype::BF16,
        vec![VOCAB, HIDDEN],
        lm_head,
    );
    out
}

/// The demo model's `__metadata__`.
pub fn metadata() -> BTreeMap<String, String> {
    [
        ("format", "pt"),
        ("model_type", "tensor-surgeon-demo"),
        (
            "description",
            "Tiny transformer-shaped demo: 4 layers, hidden 128, vocab 2048",
        ),
        ("note", "<b>untrusted</b> metadata is shown as text"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The demo model as a complete `.safetensors` file image.
pub fn file_bytes() -> Vec<u8> {
    let tensors = tensors();
    let saturate = EncodeOptions {
        saturate: true,
        round: true,
    };
    let mut data = Vec::new();
    let mut infos = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let begin = data.len() as u64;
        for v in &t.values {
            let bytes = dtype::encode(t.dtype, Number::Float(*v), saturate)
                .unwrap_or_else(|_| vec![0; dtype::element_bytes(t.dtype)]);
            data.extend_from_slice(&bytes);
        }
        infos.push(TensorInfo {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data_offsets: (begin, data.len() as u64),
            blocks: None,
        });
    }
    let mut out = header::serialize(Some(&metadata()), &infos);
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_parses_and_is_deterministic() {
        let bytes = file_bytes();
        assert_eq!(bytes, file_bytes());
        let h = header::parse(&bytes, bytes.len() as u64).expect("demo header is valid");
        assert!(h.warnings.is_empty());
        let dtypes: std::collections::BTreeSet<&str> =
            h.tensors.iter().map(|t| dtype::name(t.dtype)).collect();
        for d in ["F32", "F16", "BF16", "I8", "F8_E4M3", "U8", "BOOL"] {
            assert!(dtypes.contains(d), "{d}");
        }
        let ranks: std::collections::BTreeSet<usize> =
            h.tensors.iter().map(|t| t.shape.len()).collect();
        assert!(ranks.is_superset(&[0, 1, 2, 4].into()));
        assert!(
            (1 << 20..8 << 20).contains(&bytes.len()),
            "a few MB: {}",
            bytes.len()
        );
    }
}
