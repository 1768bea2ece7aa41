//! One new token after the cached positions (a decode step), in plain loops over f32 vectors:
//! every matrix is read once, at its stored width, through the kernel; the rest (norms, rotary
//! positions, attention over the cache) is a few thousand operations. The same model as
//! `Llama::forward` (the tests check that stepping equals recomputing the sequence), without
//! the per-operation overhead of a tensor library at one row.

use super::config::LlamaConfig;
use super::kernel::{matvec, matvec_many, Stored};
use super::llama::{KvCache, Llama};
use super::weights::Weights;
use crate::error::{InferError, Result};

/// A layer's attention projections as stored: three matrices, or Phi-3's one.
enum Qkv<'a> {
    Split(Stored<'a>, Stored<'a>, Stored<'a>),
    Fused(Stored<'a>),
}

/// A layer's gate and up projections: two matrices, or Phi-3's one.
enum GateUp<'a> {
    Split(Stored<'a>, Stored<'a>),
    Fused(Stored<'a>),
}

/// A layer's matrices as stored.
struct LayerWeights<'a> {
    qkv: Qkv<'a>,
    o: Stored<'a>,
    gate_up: GateUp<'a>,
    down: Stored<'a>,
}

/// A config's hidden width, heads, key/value heads, head width and MLP width.
fn sizes(c: &LlamaConfig) -> (usize, usize, usize, usize, usize) {
    (
        c.hidden_size,
        c.num_attention_heads,
        c.kv_heads(),
        c.head_width(),
        c.intermediate_size,
    )
}

fn name(layer: usize, part: &str) -> String {
    format!("model.layers.{layer}.{part}.weight")
}

/// GELU with the tanh approximation, as the general pass computes it (candle's `gelu`).
fn gelu_tanh(v: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    0.5 * v * (1.0 + (SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)).tanh())
}

impl Llama {
    /// A layer's matrices at their stored width; `None` when one cannot be read so.
    fn layer_weights<'w>(&self, w: &'w Weights, l: usize) -> Option<LayerWeights<'w>> {
        let c = &self.config;
        let (hidden, heads, kv_heads, hd, inter) = sizes(c);
        let get = |part: &str, rows: usize, cols: usize| w.stored(&name(l, part), rows, cols);
        let qkv = match w.has(&name(l, "self_attn.qkv_proj")) {
            true => Qkv::Fused(get(
                "self_attn.qkv_proj",
                (heads + 2 * kv_heads) * hd,
                hidden,
            )?),
            false => Qkv::Split(
                get("self_attn.q_proj", heads * hd, hidden)?,
                get("self_attn.k_proj", kv_heads * hd, hidden)?,
                get("self_attn.v_proj", kv_heads * hd, hidden)?,
            ),
        };
        let gate_up = match w.has(&name(l, "mlp.gate_up_proj")) {
            true => GateUp::Fused(get("mlp.gate_up_proj", 2 * inter, hidden)?),
            false => GateUp::Split(
                get("mlp.gate_proj", inter, hidden)?,
                get("mlp.up_proj", inter, hidden)?,
            ),
        };
        Some(LayerWeights {
            qkv,
            o: get("self_attn.o_proj", hidden, heads * hd)?,
            gate_up,
            down: get("mlp.down_proj", hidden, inter)?,
        })
    }

    /// A norm's weight as f32 values, as the pass multiplies by it.
    fn norm_vector(&self, w: &Weights, name: &str) -> Result<Vec<f32>> {
        Ok(self.norm(w, name)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The logits after one more token; `None` when some matrix cannot be read as stored
    /// (another dtype, unaligned bytes): the caller runs `forward` instead. Every family the
    /// general pass runs steps here: Gemma 3's norms around both blocks, scaled embeddings,
    /// GeGLU and sliding-window layers with their own rotary base; Qwen3's and Gemma's norms
    /// of each head's query and key; Phi-3's fused projections; Mistral's window.
    pub(super) fn step(
        &self,
        w: &Weights,
        id: u32,
        cache: &mut KvCache,
    ) -> Result<Option<Vec<f32>>> {
        let c = &self.config;
        let (hidden, heads, kv_heads, hd, inter) = sizes(c);
        if cache.is_empty() || cache.layers.len() != c.num_hidden_layers {
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
            match self.layer_weights(w, l) {
                Some(lw) => layers.push(lw),
                None => return Ok(None),
            }
        }
        if id as usize >= c.vocab_size {
            return Err(InferError::Request(format!(
                "token {id} is beyond the vocabulary"
            )));
        }
        let gemma = c.gemma.as_ref();
        let eps = c.rms_norm_eps as f32;
        let global = rope_angles(pos, hd, c.rope_theta);
        let local = gemma.map(|g| rope_angles(pos, hd, g.local_rope_theta));
        let rep = heads / kv_heads;
        let scale = c.attention_scale() as f32;
        let mut x = embed.row(id as usize, hidden);
        if gemma.is_some() {
            // Gemma scales the embeddings by √hidden (in f32).
            let s = (hidden as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= s);
        }
        let (mut q, mut k, mut v) = (
            vec![0f32; heads * hd],
            vec![0f32; kv_heads * hd],
            vec![0f32; kv_heads * hd],
        );
        let mut qkv = match layers.first().map(|l| &l.qkv) {
            Some(Qkv::Fused(_)) => vec![0f32; (heads + 2 * kv_heads) * hd],
            _ => Vec::new(),
        };
        let (mut att, mut o) = (vec![0f32; heads * hd], vec![0f32; hidden]);
        let (mut gate, mut up) = (vec![0f32; inter], vec![0f32; inter]);
        let mut gate_up = match layers.first().map(|l| &l.gate_up) {
            Some(GateUp::Fused(_)) => vec![0f32; 2 * inter],
            _ => Vec::new(),
        };
        let mut scores = vec![0f32; pos + 1];
        for (l, lw) in layers.iter().enumerate() {
            let h = rms_norm(&x, &self.norm_vector(w, &name(l, "input_layernorm"))?, eps);
            match lw.qkv {
                Qkv::Split(wq, wk, wv) => {
                    matvec_many(&mut [(wq, &mut q), (wk, &mut k), (wv, &mut v)], &h);
                    for (out, part) in [(&mut q, "q_proj"), (&mut k, "k_proj"), (&mut v, "v_proj")]
                    {
                        add_bias(w, l, &format!("self_attn.{part}"), out)?;
                    }
                }
                Qkv::Fused(wqkv) => {
                    matvec(wqkv, &h, &mut qkv);
                    add_bias(w, l, "self_attn.qkv_proj", &mut qkv)?;
                    let (a, rest) = qkv.split_at(heads * hd);
                    let (b, c) = rest.split_at(kv_heads * hd);
                    q.copy_from_slice(a);
                    k.copy_from_slice(b);
                    v.copy_from_slice(c);
                }
            }
            for (m, part) in [(&mut q, "self_attn.q_norm"), (&mut k, "self_attn.k_norm")] {
                if w.has(&name(l, part)) {
                    let n = self.norm_vector(w, &name(l, part))?;
                    if n.len() != hd {
                        return Ok(None); // the general pass says why
                    }
                    for head in m.chunks_exact_mut(hd) {
                        let normed = rms_norm(head, &n, eps);
                        head.copy_from_slice(&normed);
                    }
                }
            }
            let (cos, sin) = match (gemma, &local) {
                (Some(g), Some(angles)) if g.is_local(l) => (&angles.0, &angles.1),
                _ => (&global.0, &global.1),
            };
            rotate(&mut q, hd, cos, sin);
            rotate(&mut k, hd, cos, sin);
            let (ck, cv) = &mut cache.layers[l];
            ck.extend_from_slice(&k);
            cv.extend_from_slice(&v);
            // A sliding-window layer sees the last `window` positions, itself included.
            let from = match c.window_of(l) {
                Some(window) => (pos + 1).saturating_sub(window),
                None => 0,
            };
            let row = kv_heads * hd;
            let scores = &mut scores[from..];
            for head in 0..heads {
                let g = head / rep;
                let qh = &q[head * hd..(head + 1) * hd];
                for (j, s) in (from..).zip(scores.iter_mut()) {
                    let kj = &ck[j * row + g * hd..j * row + (g + 1) * hd];
                    *s = qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                }
                softmax(scores);
                let out = &mut att[head * hd..(head + 1) * hd];
                out.fill(0.0);
                for (j, p) in (from..).zip(scores.iter()) {
                    let vj = &cv[j * row + g * hd..j * row + (g + 1) * hd];
                    for (a, b) in out.iter_mut().zip(vj) {
                        *a += p * b;
                    }
                }
            }
            matvec(lw.o, &att, &mut o);
            add_bias(w, l, "self_attn.o_proj", &mut o)?;
            if gemma.is_some() {
                let n = self.norm_vector(w, &name(l, "post_attention_layernorm"))?;
                o = rms_norm(&o, &n, eps);
            }
            add(&mut x, &o);
            let pre_mlp = match gemma {
                Some(_) => "pre_feedforward_layernorm",
                None => "post_attention_layernorm",
            };
            let h = rms_norm(&x, &self.norm_vector(w, &name(l, pre_mlp))?, eps);
            match lw.gate_up {
                GateUp::Split(wg, wu) => {
                    matvec_many(&mut [(wg, &mut gate), (wu, &mut up)], &h);
                    add_bias(w, l, "mlp.gate_proj", &mut gate)?;
                    add_bias(w, l, "mlp.up_proj", &mut up)?;
                }
                GateUp::Fused(wgu) => {
                    matvec(wgu, &h, &mut gate_up);
                    add_bias(w, l, "mlp.gate_up_proj", &mut gate_up)?;
                    let (a, b) = gate_up.split_at(inter);
                    gate.copy_from_slice(a);
                    up.copy_from_slice(b);
                }
            }
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = match gemma {
                    Some(_) => gelu_tanh(*g) * u,
                    None => *g / (1.0 + (-*g).exp()) * u,
                };
            }
            matvec(lw.down, &gate, &mut o);
            add_bias(w, l, "mlp.down_proj", &mut o)?;
            if gemma.is_some() {
                let n = self.norm_vector(w, &name(l, "post_feedforward_layernorm"))?;
                o = rms_norm(&o, &n, eps);
            }
            add(&mut x, &o);
        }
        cache.len = pos + 1;
        let h = rms_norm(&x, &self.norm_vector(w, "model.norm.weight")?, eps);
        let mut logits = vec![0f32; c.vocab_size];
        matvec(unembed, &h, &mut logits);
        Ok(Some(logits))
    }
}

/// Adds the bias of layer `l`'s `part` to `out`, if the model has one.
fn add_bias(w: &Weights, l: usize, part: &str, out: &mut [f32]) -> Result<()> {
    let name = format!("model.layers.{l}.{part}.bias");
    if w.has(&name) {
        for (a, b) in out.iter_mut().zip(vector(w, &name)?) {
            *a += b;
        }
    }
    Ok(())
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
