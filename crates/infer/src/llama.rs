//! The forward pass of decoder-only causal language models on candle ops, over many rows at
//! once (prompts, a trace's batches), following the model's [`Architecture`]: RMS norms,
//! rotary positions in the rotate-half layout, grouped-query attention with a key/value cache
//! and an optional window, a gated MLP, tied or untied unembedding, and whatever the
//! description adds (head norms, sandwich norms, fused projections, biases). The pass itself
//! captures what the panels show (no hooks): each layer's MLP activations (the input of
//! `down_proj`), attention output and residual stream.

use super::weights::Weights;
use crate::arch::{Activation, Architecture, GateUp, Linear, Qkv};
use crate::error::{InferError, Result};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// What a pass keeps besides the logits.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capture {
    /// Keep the MLP activations and attention output of this layer ([tokens, width]).
    pub layer: Option<usize>,
    /// Keep every layer's residual stream at the last position (for the logit lens).
    pub residuals: bool,
}

/// What a pass captured.
#[derive(Default)]
pub struct Captured {
    /// [tokens, intermediate]: the input of `down_proj`.
    pub mlp: Option<Tensor>,
    /// [tokens, hidden]: the output of `o_proj`.
    pub attention: Option<Tensor>,
    /// Per layer, the residual stream after it, at the last position ([hidden]).
    pub residuals: Vec<Tensor>,
}

/// Keys and values of the positions seen so far, per layer, row-major
/// `[positions, kv_heads, head_width]` (a new position appends).
#[derive(Default)]
pub struct KvCache {
    pub(super) layers: Vec<(Vec<f32>, Vec<f32>)>,
    pub(super) len: usize,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A part of a decoder layer whose output a causal trace can restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The attention's output (`o_proj`).
    Attention,
    /// The MLP's output (`down_proj`).
    Mlp,
}

/// A row put into a part's output.
pub struct Replace<'a> {
    pub part: Part,
    /// The row among the pass's new rows (all sequences', one after another).
    pub row: usize,
    /// `[hidden]`
    pub value: &'a [f32],
}

/// The sequences one pass runs together, their new rows one sequence after another: each
/// sequence's `new` positions follow its `past` ones, whose keys and values are in its cache
/// entry. Sequences may differ in both (a causal trace runs a whole row of cells at once).
pub(crate) struct Batch {
    seqs: Vec<Seq>,
}

/// One sequence of a [`Batch`], with its rotary tables and mask (shared among the sequences
/// of the same shape).
#[derive(Clone)]
struct Seq {
    past: usize,
    new: usize,
    /// The rotary tables of each base the layers use (Gemma's sliding-window layers have
    /// their own).
    ropes: Vec<(f64, (Tensor, Tensor))>,
    mask: Option<Tensor>,
}

impl Batch {
    /// The new rows of all the sequences.
    pub(crate) fn rows(&self) -> usize {
        self.seqs.iter().map(|s| s.new).sum()
    }

    /// The last row of each sequence (`[rows, width]` in, `[sequences, width]` out): the
    /// states the next token is read from.
    pub(crate) fn last_rows(&self, rows: &[f32], width: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.seqs.len() * width);
        let mut end = 0;
        for s in &self.seqs {
            end += s.new;
            out.extend_from_slice(&rows[(end - 1) * width..end * width]);
        }
        out
    }
}

/// What one decoder layer computed, for every row.
pub struct Block {
    /// The layer's output (the residual stream after it).
    pub x: Tensor,
    /// The attention's output (`o_proj`).
    pub attention: Tensor,
    /// The MLP's output as it joins the residual stream (after Gemma's norm).
    pub mlp: Tensor,
    /// `down_proj`'s own output (before a norm of the MLP's output; `mlp` where none).
    pub down: Tensor,
    /// The MLP's activations (the input of `down_proj`).
    pub act: Tensor,
}

/// `m` with the rows `replace` names for `part` put in.
fn replaced(m: Tensor, part: Part, replace: &[Replace<'_>]) -> Result<Tensor> {
    if !replace.iter().any(|r| r.part == part) {
        return Ok(m);
    }
    let (rows, width) = m.dims2()?;
    let mut values = m.flatten_all()?.to_vec1::<f32>()?;
    for r in replace.iter().filter(|r| r.part == part) {
        values[r.row * width..(r.row + 1) * width].copy_from_slice(r.value);
    }
    Ok(Tensor::from_vec(values, (rows, width), &Device::Cpu)?)
}

/// A decoder-only model's pass; its description says what every layer is made of, the weights
/// come with each pass.
pub struct Llama {
    pub arch: Arc<Architecture>,
}

impl Llama {
    /// A norm's weight as the pass multiplies by it (Gemma's checkpoints store `w` for `1 + w`).
    pub(crate) fn norm(&self, w: &Weights, name: &str) -> Result<Tensor> {
        let t = w.get(name)?;
        Ok(match self.arch.norm_offset {
            0.0 => t,
            offset => (t + f64::from(offset))?,
        })
    }

    /// The matrix that maps the final hidden state to logits.
    pub fn unembedding_name(&self) -> &str {
        &self.arch.unembedding
    }

    /// Runs `ids` after the cached positions; returns the logits of the last position ([vocab]).
    pub fn forward(
        &self,
        w: &Weights,
        ids: &[u32],
        cache: &mut KvCache,
        capture: Capture,
        captured: &mut Captured,
    ) -> Result<Tensor> {
        let a = &self.arch;
        let t = ids.len();
        let past = cache.len;
        if past + t > a.max_positions {
            return Err(InferError::Request(format!(
                "the prompt and continuation need {} positions; the model has {}",
                past + t,
                a.max_positions
            )));
        }
        if cache.layers.len() != a.depth() {
            cache.layers = vec![Default::default(); a.depth()];
        }
        let mut x = self.embed_rows(w, ids)?; // [t, hidden]
        let batch = self.batch(&[(past, t)])?;
        for layer in 0..a.depth() {
            let kv = std::slice::from_mut(&mut cache.layers[layer]);
            let out = self.block(w, layer, &x, kv, &batch, &[])?;
            x = out.x;
            if capture.layer == Some(layer) {
                captured.mlp = Some(out.act);
                captured.attention = Some(out.attention);
            }
            if capture.residuals {
                captured.residuals.push(x.get(t - 1)?);
            }
        }
        cache.len = past + t;
        let last = x.get(t - 1)?.unsqueeze(0)?;
        Ok(self.logits(w, &last)?.squeeze(0)?)
    }

    /// The embeddings of `ids` (`[ids, hidden]`).
    pub(crate) fn embed_rows(&self, w: &Weights, ids: &[u32]) -> Result<Tensor> {
        let a = &self.arch;
        let (dev, hidden, t) = (Device::Cpu, a.hidden, ids.len());
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= a.vocab) {
            return Err(InferError::Request(format!(
                "token {bad} is beyond the vocabulary"
            )));
        }
        let rows = match w.stored(&a.embedding, a.vocab, hidden) {
            Some(e) => {
                let rows: Vec<f32> = ids
                    .iter()
                    .flat_map(|&id| e.row(id as usize, hidden))
                    .collect();
                Tensor::from_vec(rows, (t, hidden), &dev)?
            }
            None => {
                let embed = w.get_shaped(&a.embedding, &[a.vocab, hidden])?;
                embed.index_select(&Tensor::from_vec(ids.to_vec(), t, &dev)?, 0)?
            }
        };
        Ok(match a.embedding_scale {
            Some(s) => rows.affine(f64::from(s), 0.0)?,
            None => rows,
        })
    }

    /// The tables of a pass over sequences of (`past`, `new`) positions.
    pub(crate) fn batch(&self, shapes: &[(usize, usize)]) -> Result<Batch> {
        let mut thetas: Vec<f64> = Vec::new();
        for l in &self.arch.layers {
            if !thetas.contains(&l.rope_theta) {
                thetas.push(l.rope_theta);
            }
        }
        let mut seqs: Vec<Seq> = Vec::with_capacity(shapes.len());
        for &(past, new) in shapes {
            // Tensors are shared: a shape made before costs a clone of its handles.
            let made = seqs
                .iter()
                .find(|s| (s.past, s.new) == (past, new))
                .cloned();
            let seq = match made {
                Some(seq) => seq,
                None => Seq {
                    past,
                    new,
                    ropes: thetas
                        .iter()
                        .map(|&theta| Ok((theta, self.rope_tables_with(past, new, theta)?)))
                        .collect::<candle_core::Result<_>>()?,
                    mask: causal_mask(new, past)?,
                },
            };
            seqs.push(seq);
        }
        Ok(Batch { seqs })
    }

    /// One decoder layer over the sequences of `batch`: `x` holds their new rows one sequence
    /// after another (`[rows, hidden]`), each sequence's past keys and values in its entry of
    /// `kv` (one per sequence; the new ones are appended). `replace` puts given rows into the
    /// attention or MLP output (a causal trace's restorations).
    pub(crate) fn block(
        &self,
        w: &Weights,
        layer: usize,
        x: &Tensor,
        kv: &mut [(Vec<f32>, Vec<f32>)],
        batch: &Batch,
        replace: &[Replace<'_>],
    ) -> Result<Block> {
        let a = &self.arch;
        let spec = a
            .layers
            .get(layer)
            .ok_or(InferError::Internal("a layer beyond the model"))?;
        let dev = Device::Cpu;
        let (heads, kv_heads, hd) = (a.heads, a.kv_heads, a.head_width);
        let eps = a.rms_eps as f32;
        if kv.len() != batch.seqs.len() || x.dims2()?.0 != batch.rows() {
            return Err(InferError::Internal("a pass's rows and sequences disagree"));
        }
        let norm = self.norm(w, &spec.input_norm)?;
        let h = candle_nn::ops::rms_norm(x, &norm, eps)?;
        let head_norm = |name: &Option<String>| -> Result<Option<Tensor>> {
            let Some(n) = name else { return Ok(None) };
            let t = self.norm(w, n)?;
            if t.dims() != [hd] {
                return Err(InferError::Unsupported(format!(
                    "cannot run this model: {n} has shape {:?}, the heads are {hd} wide",
                    t.dims()
                )));
            }
            Ok(Some(t))
        };
        let (q_norm, k_norm) = (head_norm(&spec.q_norm)?, head_norm(&spec.k_norm)?);
        let normed = |m: Tensor, n: &Option<Tensor>| -> candle_core::Result<Tensor> {
            match n {
                Some(n) => candle_nn::ops::rms_norm(&m, n, eps),
                None => Ok(m),
            }
        };
        let (q_all, k_all, v_all) = match &spec.qkv {
            Qkv::Fused(m) => {
                let qkv = linear(w, &h, m)?;
                let (qw, kw) = (a.q_width(), a.kv_width());
                (
                    qkv.narrow(1, 0, qw)?.contiguous()?,
                    qkv.narrow(1, qw, kw)?.contiguous()?,
                    qkv.narrow(1, qw + kw, kw)?.contiguous()?,
                )
            }
            Qkv::Split { q, k, v } => (linear(w, &h, q)?, linear(w, &h, k)?, linear(w, &h, v)?),
        };
        let mut atts = Vec::with_capacity(kv.len());
        let mut first = 0;
        for (seq, (pk, pv)) in batch.seqs.iter().zip(kv.iter_mut()) {
            let (past, t) = (seq.past, seq.new);
            let (cos, sin) = seq
                .ropes
                .iter()
                .find(|(theta, _)| *theta == spec.rope_theta)
                .map(|(_, (c, s))| (c, s))
                .ok_or(InferError::Internal("no rotary tables for a layer's base"))?;
            let window_mask = match spec.window {
                Some(win) if past + t > win => Some(window_mask(t, past, win)?),
                _ => None,
            };
            let mask = window_mask.as_ref().or(seq.mask.as_ref());
            // [t, heads, hd] -> [1, heads, t, hd]
            let split = |m: Tensor, n: usize| -> candle_core::Result<Tensor> {
                m.reshape((t, n, hd))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .unsqueeze(0)
            };
            let at = first;
            first += t;
            let rows = |m: &Tensor| m.narrow(0, at, t);
            let q = normed(split(rows(&q_all)?, heads)?, &q_norm)?;
            let q = candle_nn::rotary_emb::rope(&q, cos, sin)?.squeeze(0)?;
            let k = normed(split(rows(&k_all)?, kv_heads)?, &k_norm)?;
            let k = candle_nn::rotary_emb::rope(&k, cos, sin)?.squeeze(0)?;
            let v = split(rows(&v_all)?, kv_heads)?.squeeze(0)?;
            // [kv_heads, t, hd] -> appended to the cache as [t, kv_heads, hd]; the past joined.
            let (k, v) = if past > 0 {
                let back = |m: &[f32]| -> candle_core::Result<Tensor> {
                    Tensor::from_slice(m, (past, kv_heads, hd), &dev)?
                        .transpose(0, 1)?
                        .contiguous()
                };
                (
                    Tensor::cat(&[&back(pk)?, &k], 1)?,
                    Tensor::cat(&[&back(pv)?, &v], 1)?,
                )
            } else {
                (k, v)
            };
            let new_rows = |m: &Tensor| -> candle_core::Result<Vec<f32>> {
                m.narrow(1, past, t)?
                    .transpose(0, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()
            };
            pk.extend(new_rows(&k)?);
            pv.extend(new_rows(&v)?);
            let s = past + t;
            let rep = heads / kv_heads;
            let expand = |m: &Tensor| -> candle_core::Result<Tensor> {
                if rep == 1 {
                    return Ok(m.clone());
                }
                m.unsqueeze(1)?
                    .expand((kv_heads, rep, s, hd))?
                    .reshape((heads, s, hd))
            };
            let (k, v) = (expand(&k)?, expand(&v)?);
            let scores = (q.matmul(&k.t()?.contiguous()?)? * a.attention_scale)?; // [heads, t, s]
            let scores = match mask {
                Some(m) => scores.broadcast_add(m)?,
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            atts.push(
                probs
                    .matmul(&v.contiguous()?)? // [heads, t, hd]
                    .transpose(0, 1)?
                    .reshape((t, heads * hd))?,
            );
        }
        let att = match atts.len() {
            1 => atts.swap_remove(0),
            _ => Tensor::cat(&atts, 0)?,
        };
        let att_out = linear(w, &att, &spec.o)?;
        // A norm of a block's output before it joins the residual stream (Gemma).
        let post_norm = |m: Tensor, name: &Option<String>| -> Result<Tensor> {
            match name {
                None => Ok(m),
                Some(n) => Ok(candle_nn::ops::rms_norm(&m, &self.norm(w, n)?, eps)?),
            }
        };
        let att_out = post_norm(att_out, &spec.post_attention_norm)?;
        let att_out = replaced(att_out, Part::Attention, replace)?;
        let x = (x + &att_out)?;
        let norm = self.norm(w, &spec.pre_mlp_norm)?;
        let h = candle_nn::ops::rms_norm(&x, &norm, eps)?;
        let inter = a.intermediate;
        let (gate, up) = match &spec.gate_up {
            GateUp::Fused(m) => {
                let gu = linear(w, &h, m)?;
                (
                    gu.narrow(1, 0, inter)?.contiguous()?,
                    gu.narrow(1, inter, inter)?.contiguous()?,
                )
            }
            GateUp::Split { gate, up } => (linear(w, &h, gate)?, linear(w, &h, up)?),
        };
        let act = match spec.activation {
            Activation::GeluTanh => (gate.gelu()? * up)?,
            Activation::Silu => (gate.silu()? * up)?,
        };
        let down = linear(w, &act, &spec.down)?;
        let mlp = post_norm(down.clone(), &spec.post_mlp_norm)?;
        let mlp = replaced(mlp, Part::Mlp, replace)?;
        let mut x = (x + &mlp)?;
        if let Some(v) = w.steering_at(layer) {
            let v = Tensor::from_slice(v, (1, v.len()), &dev)?;
            x = x.broadcast_add(&v)?;
        }
        Ok(Block {
            x,
            attention: att_out,
            mlp,
            down,
            act,
        })
    }

    /// Final norm and unembedding of hidden states ([n, hidden] -> [n, vocab]).
    pub fn logits(&self, w: &Weights, hidden: &Tensor) -> Result<Tensor> {
        let a = &self.arch;
        let norm = self.norm(w, &a.final_norm)?;
        let h = candle_nn::ops::rms_norm(hidden, &norm, a.rms_eps as f32)?;
        let logits = project(w, &h, &a.unembedding, a.vocab)?;
        Ok(match a.final_softcap {
            Some(cap) => ((logits / f64::from(cap))?.tanh()? * f64::from(cap))?,
            None => logits,
        })
    }

    /// cos and sin of the rotary angles of positions `past..past + t` at `theta`
    /// ([t, head_width / 2]).
    pub(crate) fn rope_tables_with(
        &self,
        past: usize,
        t: usize,
        theta: f64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.arch.head_width;
        let mut cos = Vec::with_capacity(t * hd / 2);
        let mut sin = Vec::with_capacity(t * hd / 2);
        for p in past..past + t {
            let (c, s) = rope_angles(p, hd, theta);
            cos.extend(c);
            sin.extend(s);
        }
        Ok((
            Tensor::from_vec(cos, (t, hd / 2), &Device::Cpu)?,
            Tensor::from_vec(sin, (t, hd / 2), &Device::Cpu)?,
        ))
    }
}

/// cos and sin of position `pos`'s rotary angles (`head_width / 2` each), as every pass
/// rotates: rotate-half pairs `(i, i + hd/2)` at frequency `theta^(-2i/hd)`.
pub(crate) fn rope_angles(pos: usize, hd: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    (0..hd / 2)
        .map(|i| {
            let angle = pos as f64 / theta.powf(2.0 * i as f64 / hd as f64);
            (angle.cos() as f32, angle.sin() as f32)
        })
        .unzip()
}

/// `x @ W^T (+ b)` for one of a layer's projections.
fn linear(w: &Weights, x: &Tensor, m: &Linear) -> Result<Tensor> {
    let y = project(w, x, &m.weight, m.out)?;
    match &m.bias {
        Some(bias) => Ok(y.broadcast_add(&w.get_shaped(bias, &[m.out])?)?),
        None => Ok(y),
    }
}

/// `x @ W^T` for a weight `[out, in]`: the kernel on the weight as stored, or the f32 copy
/// through candle when the kernel cannot read it.
fn project(w: &Weights, x: &Tensor, weight: &str, out: usize) -> Result<Tensor> {
    let (rows, input) = x.dims2()?;
    if let Some(stored) = w.stored(weight, out, input) {
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut y = vec![0f32; rows * out];
        super::kernel::matmat(stored, &xs, rows, &mut y);
        return Ok(Tensor::from_vec(y, (rows, out), &Device::Cpu)?);
    }
    let matrix = w.get_shaped(weight, &[out, input])?;
    Ok(x.matmul(&matrix.t()?)?)
}

/// -inf above the diagonal (a position sees itself and the past); none for one new position.
pub(crate) fn causal_mask(t: usize, past: usize) -> candle_core::Result<Option<Tensor>> {
    if t == 1 {
        return Ok(None);
    }
    let s = past + t;
    let values: Vec<f32> = (0..t)
        .flat_map(|i| (0..s).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(
        Tensor::from_vec(values, (t, s), &Device::Cpu)?.to_dtype(DType::F32)?,
    ))
}

/// The causal mask of a sliding-window layer: position `past + i` sees keys `j` with
/// `past + i - window < j <= past + i` (the last `window` positions, itself included).
fn window_mask(t: usize, past: usize, window: usize) -> candle_core::Result<Tensor> {
    let s = past + t;
    let values: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..s).map(move |j| {
                if j > past + i || past + i - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (t, s), &Device::Cpu)
}
