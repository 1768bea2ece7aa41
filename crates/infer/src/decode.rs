//! One new token after the cached positions (a decode step), in plain loops over f32 vectors:
//! every matrix is read once, at its stored width, through the kernel; the rest (norms, rotary
//! positions, attention over the cache) is a few thousand operations. The same model as
//! `Llama::forward` (the tests check that stepping equals recomputing the sequence), without
//! the per-operation overhead of a tensor library at one row.

use super::kernel::{matvec, matvec_many, Stored};
use super::llama::{rope_angles, KvCache, Llama};
use super::weights::Weights;
use crate::arch::{GateUp, Linear, Qkv};
use crate::error::{InferError, Result};

/// cos and sin of one position's rotary angles.
type Angles = (Vec<f32>, Vec<f32>);

/// A layer's matrices as stored, in the description's shape.
struct LayerWeights<'a> {
    qkv: Vec<Stored<'a>>,
    o: Stored<'a>,
    gate_up: Vec<Stored<'a>>,
    down: Stored<'a>,
}

/// A linear map's matrix as stored; `None` when it cannot be read so.
fn stored<'w>(w: &'w Weights, m: &Linear) -> Option<Stored<'w>> {
    w.stored(&m.weight, m.out, m.input)
}

impl Llama {
    /// A layer's matrices at their stored width; `None` when one cannot be read so.
    fn layer_weights<'w>(&self, w: &'w Weights, l: usize) -> Option<LayerWeights<'w>> {
        let spec = &self.arch.layers[l];
        let qkv = match &spec.qkv {
            Qkv::Fused(m) => vec![stored(w, m)?],
            Qkv::Split { q, k, v } => vec![stored(w, q)?, stored(w, k)?, stored(w, v)?],
        };
        let gate_up = match &spec.gate_up {
            GateUp::Fused(m) => vec![stored(w, m)?],
            GateUp::Split { gate, up } => vec![stored(w, gate)?, stored(w, up)?],
        };
        Some(LayerWeights {
            qkv,
            o: stored(w, &spec.o)?,
            gate_up,
            down: stored(w, &spec.down)?,
        })
    }

    /// A norm's weight as f32 values, as the pass multiplies by it.
    fn norm_vector(&self, w: &Weights, name: &str) -> Result<Vec<f32>> {
        Ok(self.norm(w, name)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The logits after one more token; `None` when some matrix cannot be read as stored
    /// (another dtype, unaligned bytes): the caller runs `forward` instead. It follows the
    /// same description as `forward`, one row at a time.
    pub(super) fn step(
        &self,
        w: &Weights,
        id: u32,
        cache: &mut KvCache,
    ) -> Result<Option<Vec<f32>>> {
        let a = &self.arch;
        let (hidden, heads, kv_heads, hd, inter) =
            (a.hidden, a.heads, a.kv_heads, a.head_width, a.intermediate);
        if cache.is_empty() || cache.layers.len() != a.depth() {
            return Ok(None);
        }
        let pos = cache.len;
        if pos + 1 > a.max_positions {
            return Err(InferError::Request(format!(
                "the continuation needs {} positions; the model has {}",
                pos + 1,
                a.max_positions
            )));
        }
        let Some(embed) = w.stored(&a.embedding, a.vocab, hidden) else {
            return Ok(None);
        };
        let Some(unembed) = w.stored(&a.unembedding, a.vocab, hidden) else {
            return Ok(None);
        };
        let mut layers = Vec::with_capacity(a.depth());
        for l in 0..a.depth() {
            match self.layer_weights(w, l) {
                Some(lw) => layers.push(lw),
                None => return Ok(None),
            }
        }
        if id as usize >= a.vocab {
            return Err(InferError::Request(format!(
                "token {id} is beyond the vocabulary"
            )));
        }
        let eps = a.rms_eps as f32;
        let rep = heads / kv_heads;
        let scale = a.attention_scale as f32;
        let mut x = embed.row(id as usize, hidden);
        if let Some(s) = a.embedding_scale {
            x.iter_mut().for_each(|v| *v *= s);
        }
        let (qw, kw) = (a.q_width(), a.kv_width());
        let mut qkv = vec![0f32; qw + 2 * kw];
        let (mut att, mut o) = (vec![0f32; qw], vec![0f32; hidden]);
        let mut gate_up = vec![0f32; 2 * inter];
        let mut scores = vec![0f32; pos + 1];
        // cos and sin of this position, per rotary base.
        let mut angles: Vec<(f64, Angles)> = Vec::new();
        for (spec, lw) in a.layers.iter().zip(&layers) {
            let h = rms_norm(&x, &self.norm_vector(w, &spec.input_norm)?, eps);
            match &spec.qkv {
                Qkv::Fused(m) => {
                    matvec(lw.qkv[0], &h, &mut qkv);
                    add_bias(w, m, &mut qkv)?;
                }
                Qkv::Split { q, k, v } => {
                    let (qo, rest) = qkv.split_at_mut(qw);
                    let (ko, vo) = rest.split_at_mut(kw);
                    matvec_many(
                        &mut [
                            (lw.qkv[0], &mut *qo),
                            (lw.qkv[1], &mut *ko),
                            (lw.qkv[2], &mut *vo),
                        ],
                        &h,
                    );
                    add_bias(w, q, qo)?;
                    add_bias(w, k, ko)?;
                    add_bias(w, v, vo)?;
                }
            }
            let (q, rest) = qkv.split_at_mut(qw);
            let (k, v) = rest.split_at_mut(kw);
            for (m, norm) in [(&mut *q, &spec.q_norm), (&mut *k, &spec.k_norm)] {
                let Some(norm) = norm else { continue };
                let n = self.norm_vector(w, norm)?;
                if n.len() != hd {
                    return Ok(None); // the general pass says why
                }
                for head in m.chunks_exact_mut(hd) {
                    let normed = rms_norm(head, &n, eps);
                    head.copy_from_slice(&normed);
                }
            }
            if !angles.iter().any(|(t, _)| *t == spec.rope_theta) {
                angles.push((spec.rope_theta, rope_angles(pos, hd, spec.rope_theta)));
            }
            let (_, (cos, sin)) = angles
                .iter()
                .find(|(t, _)| *t == spec.rope_theta)
                .ok_or(InferError::Internal("no rotary angles for a layer's base"))?;
            rotate(q, hd, cos, sin);
            rotate(k, hd, cos, sin);
            let (ck, cv) = &mut cache.layers[spec.index];
            ck.extend_from_slice(k);
            cv.extend_from_slice(v);
            // A sliding-window layer sees the last `window` positions, itself included.
            let from = match spec.window {
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
            add_bias(w, &spec.o, &mut o)?;
            if let Some(norm) = &spec.post_attention_norm {
                o = rms_norm(&o, &self.norm_vector(w, norm)?, eps);
            }
            add(&mut x, &o);
            let h = rms_norm(&x, &self.norm_vector(w, &spec.pre_mlp_norm)?, eps);
            match &spec.gate_up {
                GateUp::Fused(m) => {
                    matvec(lw.gate_up[0], &h, &mut gate_up);
                    add_bias(w, m, &mut gate_up)?;
                }
                GateUp::Split { gate, up } => {
                    let (g, u) = gate_up.split_at_mut(inter);
                    matvec_many(
                        &mut [(lw.gate_up[0], &mut *g), (lw.gate_up[1], &mut *u)],
                        &h,
                    );
                    add_bias(w, gate, g)?;
                    add_bias(w, up, u)?;
                }
            }
            let (gate, up) = gate_up.split_at_mut(inter);
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = spec.activation.apply(*g) * u;
            }
            matvec(lw.down, gate, &mut o);
            add_bias(w, &spec.down, &mut o)?;
            if let Some(norm) = &spec.post_mlp_norm {
                o = rms_norm(&o, &self.norm_vector(w, norm)?, eps);
            }
            add(&mut x, &o);
            if let Some(v) = w.steering_at(spec.index) {
                add(&mut x, v);
            }
        }
        cache.len = pos + 1;
        let h = rms_norm(&x, &self.norm_vector(w, &a.final_norm)?, eps);
        let mut logits = vec![0f32; a.vocab];
        matvec(unembed, &h, &mut logits);
        if let Some(cap) = a.final_softcap {
            logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        Ok(Some(logits))
    }
}

/// Adds a linear map's bias to `out`, if it has one.
fn add_bias(w: &Weights, m: &Linear, out: &mut [f32]) -> Result<()> {
    if let Some(name) = &m.bias {
        for (a, b) in out.iter_mut().zip(vector(w, name)?) {
            *a += b;
        }
    }
    Ok(())
}

/// A 1-D weight (a norm, a bias) as f32 values.
fn vector(w: &Weights, name: &str) -> Result<Vec<f32>> {
    Ok(w.get(name)?.flatten_all()?.to_vec1::<f32>()?)
}

/// RMSNorm of one row: `weight ⊙ x / sqrt(mean(x²) + eps)`.
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
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
