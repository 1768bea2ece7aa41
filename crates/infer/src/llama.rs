//! The forward pass of Llama-family causal language models (Llama, SmolLM2, Mistral, Qwen2), on
//! candle ops, reading weights by their Hugging Face names: RMSNorm, rotary positions in the
//! rotate-half layout, grouped-query attention with a key/value cache, a SiLU-gated MLP, tied or
//! untied unembedding. The pass itself captures what the panels show (no hooks): each layer's
//! MLP activations (the input of `down_proj`), attention output and residual stream.

use super::config::LlamaConfig;
use super::weights::Weights;
use crate::error::{InferError, Result};
use candle_core::{DType, Device, Tensor};

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
    rope: (Tensor, Tensor),
    /// Gemma's sliding-window layers rotate with their own base.
    local_rope: Option<(Tensor, Tensor)>,
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
    /// The MLP's output (`down_proj`).
    pub mlp: Tensor,
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

/// A Llama-family model's shape; the weights come with each pass.
pub struct Llama {
    pub config: LlamaConfig,
}

/// The embedding matrix.
pub(crate) const EMBED: &str = "model.embed_tokens.weight";

/// Tensor names of one decoder layer.
fn name(layer: usize, part: &str) -> String {
    format!("model.layers.{layer}.{part}.weight")
}

impl Llama {
    /// Whether the layers are Llama's own: no Gemma norms, no per-head query/key norms
    /// (Qwen3), no fused projections (Phi-3), no attention window. The fast decode step and
    /// the studies written for Llama layers (tracing, fact edits, ablation) need this.
    pub fn plain(&self, w: &Weights) -> bool {
        self.config.gemma.is_none()
            && self.config.window_of(0).is_none()
            && !w.has(&name(0, "self_attn.q_norm"))
            && !w.has(&name(0, "self_attn.qkv_proj"))
    }

    /// A norm's weight as the pass multiplies by it (Gemma's checkpoints store `w` for `1 + w`).
    pub(crate) fn norm(&self, w: &Weights, name: &str) -> Result<Tensor> {
        let t = w.get(name)?;
        Ok(match &self.config.gemma {
            Some(g) if g.norm_offset != 0.0 => (t + g.norm_offset)?,
            _ => t,
        })
    }

    /// The matrix that maps the final hidden state to logits.
    pub fn unembedding_name(&self, w: &Weights) -> &'static str {
        if !self.config.tie_word_embeddings && w.has("lm_head.weight") {
            "lm_head.weight"
        } else {
            EMBED
        }
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
        let c = &self.config;
        let t = ids.len();
        let past = cache.len;
        if past + t > c.max_position_embeddings {
            return Err(InferError::Request(format!(
                "the prompt and continuation need {} positions; the model has {}",
                past + t,
                c.max_position_embeddings
            )));
        }
        if cache.layers.len() != c.num_hidden_layers {
            cache.layers = vec![Default::default(); c.num_hidden_layers];
        }
        let mut x = self.embed_rows(w, ids)?; // [t, hidden]
        let batch = self.batch(&[(past, t)])?;
        for layer in 0..c.num_hidden_layers {
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
        let c = &self.config;
        let (dev, hidden, t) = (Device::Cpu, c.hidden_size, ids.len());
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(InferError::Request(format!(
                "token {bad} is beyond the vocabulary"
            )));
        }
        let rows = match w.stored(EMBED, c.vocab_size, hidden) {
            Some(e) => {
                let rows: Vec<f32> = ids
                    .iter()
                    .flat_map(|&id| e.row(id as usize, hidden))
                    .collect();
                Tensor::from_vec(rows, (t, hidden), &dev)?
            }
            None => {
                let embed = w.get_shaped(EMBED, &[c.vocab_size, hidden])?;
                embed.index_select(&Tensor::from_vec(ids.to_vec(), t, &dev)?, 0)?
            }
        };
        Ok(match &c.gemma {
            // Gemma scales the embeddings by √hidden (in f32, as llama.cpp does).
            Some(_) => rows.affine(f64::from((hidden as f32).sqrt()), 0.0)?,
            None => rows,
        })
    }

    /// The tables of a pass over sequences of (`past`, `new`) positions.
    pub(crate) fn batch(&self, shapes: &[(usize, usize)]) -> Result<Batch> {
        let local = self.config.gemma.as_ref().map(|g| g.local_rope_theta);
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
                    rope: self.rope_tables(past, new)?,
                    local_rope: match local {
                        Some(theta) => Some(self.rope_tables_with(past, new, theta)?),
                        None => None,
                    },
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
        let c = &self.config;
        let dev = Device::Cpu;
        let (hidden, heads, kv_heads, hd) = (
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_width(),
        );
        let eps = c.rms_norm_eps as f32;
        if kv.len() != batch.seqs.len() || x.dims2()?.0 != batch.rows() {
            return Err(InferError::Internal("a pass's rows and sequences disagree"));
        }
        let gemma = c.gemma.as_ref();
        // Gemma's sliding-window layers: their own rotary base, and a window on long inputs.
        let local = gemma.is_some_and(|g| g.is_local(layer));
        let norm = self.norm(w, &name(layer, "input_layernorm"))?;
        let h = candle_nn::ops::rms_norm(x, &norm, eps)?;
        // Qwen3 and Gemma 3 normalise each head's query and key before rotating them.
        let head_norm = |part: &str| -> Result<Option<Tensor>> {
            let n = name(layer, part);
            if !w.has(&n) {
                return Ok(None);
            }
            let t = self.norm(w, &n)?;
            if t.dims() != [hd] {
                return Err(InferError::Unsupported(format!(
                    "cannot run this model: {n} has shape {:?}, the heads are {hd} wide",
                    t.dims()
                )));
            }
            Ok(Some(t))
        };
        let (q_norm, k_norm) = (
            head_norm("self_attn.q_norm")?,
            head_norm("self_attn.k_norm")?,
        );
        let normed = |m: Tensor, n: &Option<Tensor>| -> candle_core::Result<Tensor> {
            match n {
                Some(n) => candle_nn::ops::rms_norm(&m, n, eps),
                None => Ok(m),
            }
        };
        let (q_all, k_all, v_all) = if w.has(&name(layer, "self_attn.qkv_proj")) {
            // Phi-3: the three projections in one matrix, q rows then k then v.
            let qkv = linear(
                w,
                &h,
                layer,
                "self_attn.qkv_proj",
                (heads + 2 * kv_heads) * hd,
            )?;
            (
                qkv.narrow(1, 0, heads * hd)?.contiguous()?,
                qkv.narrow(1, heads * hd, kv_heads * hd)?.contiguous()?,
                qkv.narrow(1, (heads + kv_heads) * hd, kv_heads * hd)?
                    .contiguous()?,
            )
        } else {
            (
                linear(w, &h, layer, "self_attn.q_proj", heads * hd)?,
                linear(w, &h, layer, "self_attn.k_proj", kv_heads * hd)?,
                linear(w, &h, layer, "self_attn.v_proj", kv_heads * hd)?,
            )
        };
        let mut atts = Vec::with_capacity(kv.len());
        let mut first = 0;
        for (seq, (pk, pv)) in batch.seqs.iter().zip(kv.iter_mut()) {
            let (past, t) = (seq.past, seq.new);
            let (cos, sin) = match (local, &seq.local_rope) {
                (false, _) => (&seq.rope.0, &seq.rope.1),
                (true, Some((cos, sin))) => (cos, sin),
                (true, None) => return Err(InferError::Internal("no local rotary tables")),
            };
            let window_mask = match c.window_of(layer) {
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
            let scores = (q.matmul(&k.t()?.contiguous()?)? * c.attention_scale())?; // [heads, t, s]
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
        let att = if atts.len() == 1 {
            atts.pop().expect("one sequence")
        } else {
            Tensor::cat(&atts, 0)?
        };
        let att_out = linear(w, &att, layer, "self_attn.o_proj", hidden)?;
        // Gemma normalises each block's output too before adding it to the residual stream.
        let post_norm = |m: Tensor, part: &str| -> Result<Tensor> {
            if gemma.is_none() {
                return Ok(m);
            }
            let norm = self.norm(w, &name(layer, part))?;
            Ok(candle_nn::ops::rms_norm(&m, &norm, eps)?)
        };
        let att_out = post_norm(att_out, "post_attention_layernorm")?;
        let att_out = replaced(att_out, Part::Attention, replace)?;
        let x = (x + &att_out)?;
        let pre_mlp = match gemma {
            Some(_) => "pre_feedforward_layernorm",
            None => "post_attention_layernorm",
        };
        let norm = self.norm(w, &name(layer, pre_mlp))?;
        let h = candle_nn::ops::rms_norm(&x, &norm, eps)?;
        let inter = c.intermediate_size;
        let (gate, up) = if w.has(&name(layer, "mlp.gate_up_proj")) {
            // Phi-3: gate rows then up rows in one matrix.
            let gu = linear(w, &h, layer, "mlp.gate_up_proj", 2 * inter)?;
            (
                gu.narrow(1, 0, inter)?.contiguous()?,
                gu.narrow(1, inter, inter)?.contiguous()?,
            )
        } else {
            (
                linear(w, &h, layer, "mlp.gate_proj", inter)?,
                linear(w, &h, layer, "mlp.up_proj", inter)?,
            )
        };
        let act = match gemma {
            // GeGLU with the tanh approximation of GELU.
            Some(_) => (gate.gelu()? * up)?,
            None => (gate.silu()? * up)?,
        };
        let down = linear(w, &act, layer, "mlp.down_proj", hidden)?;
        let down = post_norm(down, "post_feedforward_layernorm")?;
        let down = replaced(down, Part::Mlp, replace)?;
        let x = (x + &down)?;
        Ok(Block {
            x,
            attention: att_out,
            mlp: down,
            act,
        })
    }

    /// Final norm and unembedding of hidden states ([n, hidden] -> [n, vocab]).
    pub fn logits(&self, w: &Weights, hidden: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let norm = self.norm(w, "model.norm.weight")?;
        let h = candle_nn::ops::rms_norm(hidden, &norm, c.rms_norm_eps as f32)?;
        project(w, &h, self.unembedding_name(w), c.vocab_size)
    }

    /// cos and sin of the rotary angles of positions `past..past + t` ([t, head_width / 2]).
    pub(crate) fn rope_tables(
        &self,
        past: usize,
        t: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        self.rope_tables_with(past, t, self.config.rope_theta)
    }

    /// [`Llama::rope_tables`] with rotary base `theta`.
    fn rope_tables_with(
        &self,
        past: usize,
        t: usize,
        theta: f64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.config.head_width();
        let mut cos = Vec::with_capacity(t * hd / 2);
        let mut sin = Vec::with_capacity(t * hd / 2);
        for p in past..past + t {
            let (c, s) = super::decode::rope_angles(p, hd, theta);
            cos.extend(c);
            sin.extend(s);
        }
        Ok((
            Tensor::from_vec(cos, (t, hd / 2), &Device::Cpu)?,
            Tensor::from_vec(sin, (t, hd / 2), &Device::Cpu)?,
        ))
    }
}

/// `x @ W^T (+ b)` for one of a layer's projections; the weight must be [out, in].
fn linear(w: &Weights, x: &Tensor, layer: usize, part: &str, out: usize) -> Result<Tensor> {
    let y = project(w, x, &name(layer, part), out)?;
    let bias = format!("model.layers.{layer}.{part}.bias");
    if w.has(&bias) {
        let b = w.get_shaped(&bias, &[out])?;
        return Ok(y.broadcast_add(&b)?);
    }
    Ok(y)
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
