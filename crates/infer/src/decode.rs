//! One new token after the cached positions (a decode step), in plain loops over f32 vectors:
//! every matrix is read once, at its stored width, through the kernel; the rest (norms, rotary
//! positions, attention over the cache) is a few thousand operations. The same model as
//! `Llama::forward` (the tests check that stepping equals recomputing the sequence), without
//! the per-operation overhead of a tensor library at one row.

use super::kernel::{matvec, matvec_many, Stored};
use super::llama::{KvCache, Llama};
use super::weights::Weights;
use crate::error::{InferError, Result};

/// A layer's matrices as stored.
struct LayerWeights<'a> {
    q: Stored<'a>,
    k: Stored<'a>,
    v: Stored<'a>,
    o: Stored<'a>,
    gate: Stored<'a>,
    up: Stored<'a>,
    down: Stored<'a>,
}

fn name(layer: usize, part: &str) -> String {
    format!("model.layers.{layer}.{part}.weight")
}

impl Llama {
    /// The logits after one more token; `None` when some matrix cannot be read as stored
    /// (another dtype, unaligned bytes): the caller runs `forward` instead.
    pub(super) fn step(
        &self,
        w: &Weights,
        id: u32,
        cache: &mut KvCache,
    ) -> Result<Option<Vec<f32>>> {
        let c = &self.config;
        let (hidden, heads, kv_heads, hd, inter) = (
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_width(),
            c.intermediate_size,
        );
        // Other layers (Gemma's norms, Qwen3's head norms, Phi-3's fused projections,
        // windows): the general pass runs them.
        if cache.is_empty() || cache.layers.len() != c.num_hidden_layers || !self.plain(w) {
            return Ok(None);
        }
        let pos = cache.len;
        if pos + 1 > c.max_position_embeddings {
            return Err(InferError::Request(format!(
                "the continuation needs {} positions; the model has {}",
                pos + 1,
                c.max_position_embeddings
            )));
        }
        let Some(embed) = w.stored("model.embed_tokens.weight", c.vocab_size, hidden) else {
            return Ok(None);
        };
        let Some(unembed) = w.stored(self.unembedding_name(w), c.vocab_size, hidden) else {
            return Ok(None);
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let get = |part: &str, rows: usize, cols: usize| w.stored(&name(l, part), rows, cols);
            let found = (|| {
                Some(LayerWeights {
                    q: get("self_attn.q_proj", heads * hd, hidden)?,
                    k: get("self_attn.k_proj", kv_heads * hd, hidden)?,
                    v: get("self_attn.v_proj", kv_heads * hd, hidden)?,
                    o: get("self_attn.o_proj", hidden, heads * hd)?,
                    gate: get("mlp.gate_proj", inter, hidden)?,
                    up: get("mlp.up_proj", inter, hidden)?,
                    down: get("mlp.down_proj", hidden, inter)?,
                })
            })();
            match found {
                Some(lw) => layers.push(lw),
                None => return Ok(None),
            }
        }
        if id as usize >= c.vocab_size {
            return Err(InferError::Request(format!(
                "token {id} is beyond the vocabulary"
            )));
        }
        let eps = c.rms_norm_eps as f32;
        let (cos, sin) = rope_angles(pos, hd, c.rope_theta);
        let rep = heads / kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut x = embed.row(id as usize, hidden);
        let (mut q, mut k, mut v) = (
            vec![0f32; heads * hd],
            vec![0f32; kv_heads * hd],
            vec![0f32; kv_heads * hd],
        );
        let (mut att, mut o) = (vec![0f32; heads * hd], vec![0f32; hidden]);
        let (mut gate, mut up) = (vec![0f32; inter], vec![0f32; inter]);
        let mut scores = vec![0f32; pos + 1];
        for (l, lw) in layers.iter().enumerate() {
            let h = rms_norm(&x, &vector(w, &name(l, "input_layernorm"))?, eps);
            matvec_many(&mut [(lw.q, &mut q), (lw.k, &mut k), (lw.v, &mut v)], &h);
            for (out, part) in [(&mut q, "q_proj"), (&mut k, "k_proj"), (&mut v, "v_proj")] {
                let bias = format!("model.layers.{l}.self_attn.{part}.bias");
                if w.has(&bias) {
                    for (a, b) in out.iter_mut().zip(vector(w, &bias)?) {
                        *a += b;
                    }
                }
            }
            rotate(&mut q, hd, &cos, &sin);
            rotate(&mut k, hd, &cos, &sin);
            let (ck, cv) = &mut cache.layers[l];
            ck.extend_from_slice(&k);
            cv.extend_from_slice(&v);
            let row = kv_heads * hd;
            for head in 0..heads {
                let g = head / rep;
                let qh = &q[head * hd..(head + 1) * hd];
                for (j, s) in scores.iter_mut().enumerate() {
                    let kj = &ck[j * row + g * hd..j * row + (g + 1) * hd];
                    *s = qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                }
                softmax(&mut scores);
                let out = &mut att[head * hd..(head + 1) * hd];
                out.fill(0.0);
                for (j, p) in scores.iter().enumerate() {
                    let vj = &cv[j * row + g * hd..j * row + (g + 1) * hd];
                    for (a, b) in out.iter_mut().zip(vj) {
                        *a += p * b;
                    }
                }
            }
            matvec(lw.o, &att, &mut o);
            add(&mut x, &o);
            let h = rms_norm(&x, &vector(w, &name(l, "post_attention_layernorm"))?, eps);
            matvec_many(&mut [(lw.gate, &mut gate), (lw.up, &mut up)], &h);
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            matvec(lw.down, &gate, &mut o);
            add(&mut x, &o);
        }
        cache.len = pos + 1;
        let h = rms_norm(&x, &vector(w, "model.norm.weight")?, eps);
        let mut logits = vec![0f32; c.vocab_size];
        matvec(unembed, &h, &mut logits);
        Ok(Some(logits))
    }
}

/// A 1-D weight (a norm, a bias) as f32 values.
fn vector(w: &Weights, name: &str) -> Result<Vec<f32>> {
    Ok(w.get(name)?.flatten_all()?.to_vec1::<f32>()?)
}

fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    x.iter().zip(weight).map(|(v, g)| v * inv * g).collect()
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// cos and sin of position `pos`'s rotary angles (`head_width / 2` each), as `Llama` uses.
pub(super) fn rope_angles(pos: usize, hd: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    (0..hd / 2)
        .map(|i| {
            let angle = pos as f64 / theta.powf(2.0 * i as f64 / hd as f64);
            (angle.cos() as f32, angle.sin() as f32)
        })
        .unzip()
}

/// Rotate-half rotary positions on every head of `x` (heads of `hd` values).
fn rotate(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for head in x.chunks_exact_mut(hd) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}
