//! The fact editor's optimisation problem: the unedited runs it starts from, the later
//! layers' weights as dense f32, the loss and ROME's loop.

use super::chunks::{chunks_of, release_free_memory, ChunkCost, ACTIVATION_BUDGET};
use super::graph::{self, Frozen};
use super::{norm, FactGoal, FactOptions, FactStep};
use crate::arch::{GateUp, Linear, Qkv};
use crate::kernel::Owned;
use crate::llama::Llama;
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use std::sync::Arc;

/// One sequence of the optimisation: what the unedited run left for it.
pub(super) struct Sequence {
    /// The subject's last token.
    pub(super) at: usize,
    /// The residual stream after the edited layer, from `at` on (`[n, hidden]`).
    pub(super) x: Tensor,
    /// Per later layer, the keys and values of the positions before `at`
    /// (`[kv_heads, at, hd]`).
    pub(super) past: Vec<(Tensor, Tensor)>,
    /// cos and sin of the positions from `at` on (`[n, hd]`), per rotary base of the
    /// layers.
    pub(super) ropes: Vec<(f64, (Tensor, Tensor))>,
    /// Under a norm of the MLP's output (Gemma): the edited layer's state at `at` before the
    /// MLP joined it, and `down_proj`'s own output there (`δ` is added to the latter, and
    /// the first row is `mid + norm(down + δ)`).
    pub(super) before_norm: Option<(Tensor, Tensor)>,
    /// Rows (relative to `at`) whose next token is scored, with that token.
    pub(super) scored: Vec<(usize, u32)>,
}

/// A linear map of the optimisation: its frozen weight and its bias.
pub(super) struct Map {
    pub(super) weight: Frozen,
    pub(super) bias: Option<Tensor>,
}

impl Map {
    pub(super) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.apply(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A later layer's weights for the optimisation, in the description's shape (norm weights
/// as the pass multiplies by them).
pub(super) struct LayerWeights {
    pub(super) spec: crate::arch::Layer,
    pub(super) input_norm: Tensor,
    /// q, k and v; or the one fused map.
    pub(super) qkv: Vec<Map>,
    pub(super) q_norm: Option<Tensor>,
    pub(super) k_norm: Option<Tensor>,
    pub(super) o: Map,
    pub(super) post_attention_norm: Option<Tensor>,
    pub(super) pre_mlp_norm: Tensor,
    /// gate and up; or the one fused map.
    pub(super) gate_up: Vec<Map>,
    pub(super) down: Map,
    pub(super) post_mlp_norm: Option<Tensor>,
}

/// A weight `[rows, cols]` copied for the optimisation (at its stored width when it can be),
/// not kept in the session's cache.
pub(super) fn owned(w: &Weights, name: &str, rows: usize, cols: usize) -> Result<Owned> {
    match w.stored(name, rows, cols) {
        Some(s) => Ok(Owned::of(s, rows, cols)),
        None => Ok(Owned::F32(
            w.get_shaped(name, &[rows, cols])?
                .flatten_all()?
                .to_vec1::<f32>()?,
        )),
    }
}

/// A weight as a dense f32 matrix `[rows, cols]`, not kept in the session's cache.
pub(super) fn dense(w: &Weights, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
    match w.stored(name, rows, cols) {
        Some(s) => {
            let data: Vec<f32> = (0..rows).flat_map(|r| s.row(r, cols)).collect();
            Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
        }
        None => w.get_shaped(name, &[rows, cols]),
    }
}

impl RunnableModel {
    /// Everything the optimisation needs: the unedited runs of the prefixed prompts (each
    /// followed by the target but its last token) and of the KL prompt, and the later layers'
    /// weights.
    pub(crate) fn problem(
        &self,
        w: &Weights,
        goal: &FactGoal,
        layer: usize,
        contexts: &[String],
    ) -> Result<Problem> {
        let model = self.llama()?;
        let a = Arc::clone(&model.arch);
        if layer >= a.depth() {
            return Err(InferError::Request(format!(
                "layer {layer} is beyond the model's {} layers",
                a.depth()
            )));
        }
        let target = self.target_ids(&goal.target)?;
        let mut texts: Vec<(String, usize)> = contexts
            .iter()
            .map(|t| {
                let prefix = t.find("{}").unwrap_or(0);
                (t.replacen("{}", &goal.prompt, 1), prefix)
            })
            .collect();
        texts.push((format!("{} is a", goal.subject), 0));
        let mut prepared = Vec::new();
        for (i, (text, prefix)) in texts.iter().enumerate() {
            let spans = self.encode_spans(text)?;
            let (_, end) = crate::trace::subject_tokens_from(text, *prefix, &goal.subject, &spans)?;
            let at = end - 1;
            let mut ids: Vec<u32> = spans.iter().map(|(id, _)| *id).collect();
            let is_kl = i == texts.len() - 1;
            let scored: Vec<(usize, u32)> = if is_kl {
                vec![(0, 0)]
            } else {
                let prompt_len = ids.len();
                ids.extend(&target[..target.len() - 1]);
                target
                    .iter()
                    .enumerate()
                    .map(|(j, &t)| (prompt_len - 1 + j - at, t))
                    .collect()
            };
            prepared.push(Text { ids, at, scored });
        }
        let kl = prepared.len() - 1;
        let mut keys = Vec::new();
        let mut m_init = None;
        let mut seqs = Vec::new();
        for (i, Unedited { seq, key, m }) in unedited(&model, w, prepared, layer)?
            .into_iter()
            .enumerate()
        {
            if i != kl {
                keys.push(key);
            }
            if i == 0 {
                m_init = Some(m);
            }
            seqs.push(seq);
        }
        let m_init = m_init.ok_or_else(|| InferError::Internal("no prompt"))?;
        let later = (layer + 1..a.depth())
            .map(|l| layer_weights(&model, w, l))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = model.norm(w, &a.final_norm)?;
        let unembed = Frozen::new(
            owned(w, model.unembedding_name(), a.vocab, a.hidden)?,
            a.vocab,
            a.hidden,
        );
        let edited_post_norm = match &a.layers[layer].post_mlp_norm {
            Some(n) => Some(model.norm(w, n)?),
            None => None,
        };
        // What autograd keeps per row: every later layer's intermediates (about 24 hidden-wide
        // and 8 MLP-wide f32 rows per layer); per scored row, the logits and the
        // log-softmax's intermediates (about 6 vocabulary-wide rows: Gemma's 262,144 tokens
        // make them the larger part).
        let cost = ChunkCost {
            row: (a.depth() - layer) * (24 * a.hidden + 8 * a.intermediate) * 4,
            scored: 6 * a.vocab * 4,
        };
        // Quantized weights: the memory of a GGUF's edit stays a small multiple of its file.
        // Plain weights (BF16, F32 checkpoints, held with their transposed copies): chunks up
        // to twice what they hold, so a small model's problem is one pair (its speed).
        let frozen = later
            .iter()
            .flat_map(|l| l.qkv.iter().chain(&l.gate_up).chain([&l.o, &l.down]))
            .map(|m| &m.weight)
            .chain([&unembed]);
        let (held, blocks) = frozen.fold((0, true), |(held, blocks), f| {
            (held + f.bytes(), blocks && f.is_blocks())
        });
        let budget = match blocks {
            true => ACTIVATION_BUDGET,
            false => ACTIVATION_BUDGET.max(2 * held),
        };
        // Two chunks run at once (each one's small operations beside the other's): each
        // keeps half the budget, and a problem within it is split in two.
        let total: usize = seqs.iter().map(|s| cost.of(s)).sum();
        let largest = seqs.iter().map(|s| cost.of(s)).max().unwrap_or(0);
        let chunks = chunks_of(&seqs, &cost, (budget / 2).min(total / 2 + largest))
            .into_iter()
            .map(|range| {
                let batch = super::pass::Batch::of(&seqs[range.clone()], &later, &a)?;
                Ok((range, batch))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Problem {
            model,
            chunks,
            later,
            edited_post_norm,
            final_norm,
            unembed,
            seqs,
            target,
            keys,
            m_init,
        })
    }
}

/// A fact edit's optimisation problem.
pub(crate) struct Problem {
    pub(super) model: Llama,
    /// The sequences in chunks, each chunk's attention as one batch: the optimisation takes
    /// the gradient a chunk at a time, so what autograd keeps is a chunk's.
    pub(super) chunks: Vec<(std::ops::Range<usize>, super::pass::Batch)>,
    pub(super) later: Vec<LayerWeights>,
    /// The edited layer's norm of its MLP output (Gemma), which `δ` passes through.
    pub(super) edited_post_norm: Option<Tensor>,
    pub(super) final_norm: Tensor,
    pub(super) unembed: Frozen,
    /// The rewriting prompts, then the KL prompt.
    pub(super) seqs: Vec<Sequence>,
    pub(super) target: Vec<u32>,
    /// The key of each rewriting prompt.
    pub(super) keys: Vec<Vec<f32>>,
    /// `down_proj`'s output at the subject's last token of the unprefixed prompt.
    pub(super) m_init: Vec<f32>,
}

impl Problem {
    /// The averaged key `k*`.
    pub(super) fn key(&self) -> Vec<f32> {
        let count = self.keys.len() as f64;
        let width = self.keys.first().map_or(0, Vec::len);
        (0..width)
            .map(|i| (self.keys.iter().map(|k| k[i] as f64).sum::<f64>() / count) as f32)
            .collect()
    }

    /// The loss at `delta` and its parts: (loss, nll, kl, p_target).
    #[cfg(test)]
    pub(crate) fn loss(
        &self,
        delta: &Tensor,
        opts: &FactOptions,
        kl_init: &mut Option<Tensor>,
    ) -> Result<(Tensor, FactStep)> {
        let m_norm = norm(&self.m_init);
        let (nll, kl_lp, p_target) = self.run(delta)?;
        let kl_init = kl_init.get_or_insert_with(|| kl_lp.detach());
        let kl = (kl_lp.exp()? * (&kl_lp - &*kl_init)?)?.sum_all()?;
        // |δ| with a floor far under f32's resolution inside the root: PyTorch's norm has a
        // zero gradient at δ = 0 where sqrt's would be 0/0.
        let length = (delta.sqr()?.sum_all()? + 1e-30)?.sqrt()?;
        let decay = (length * (opts.weight_decay / (m_norm * m_norm)))?;
        let loss = ((&nll + (&kl * opts.kl_weight)?)? + decay)?;
        let step = FactStep {
            step: 0,
            loss: loss.to_scalar::<f32>()? as f64,
            nll: nll.to_scalar::<f32>()? as f64,
            kl: kl.to_scalar::<f32>()? as f64,
            p_target,
        };
        Ok((loss, step))
    }

    /// The same problem in chunks of at most `max_rows` rows.
    #[cfg(test)]
    pub(super) fn rechunk(&mut self, max_rows: usize) -> Result<()> {
        let a = Arc::clone(&self.model.arch);
        let one_a_row = ChunkCost { row: 1, scored: 0 };
        self.chunks = chunks_of(&self.seqs, &one_a_row, max_rows)
            .into_iter()
            .map(|range| {
                let batch = super::pass::Batch::of(&self.seqs[range.clone()], &self.later, &a)?;
                Ok((range, batch))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// [`Problem::loss`] and its gradient in `delta`, taken a chunk of sequences at a time
    /// (the loss is a sum over them), two chunks at once: what autograd keeps at once is two
    /// chunks' graphs, and each chunk's many small operations run beside the other's.
    pub(super) fn loss_and_gradient(
        &self,
        delta: &Tensor,
        opts: &FactOptions,
        kl_init: &mut Option<Tensor>,
        gradient: bool,
    ) -> Result<(FactStep, Tensor)> {
        // Without the gradient (the last step's loss), no graph is recorded.
        let detached;
        let delta = match gradient {
            true => delta,
            false => {
                detached = delta.detach();
                &detached
            }
        };
        let mut grad = Tensor::zeros(delta.dims(), DType::F32, &Device::Cpu)?;
        let (mut nll, mut kl_value, mut p_sum) = (0.0, 0.0, 0.0);
        let init = kl_init.clone();
        let mut add = |part: Part| -> Result<()> {
            nll += part.nll;
            p_sum += part.p_sum;
            if let Some((value, init)) = part.kl {
                kl_value = value;
                kl_init.get_or_insert(init);
            }
            if let Some(g) = part.grad {
                grad = (&grad + g)?;
            }
            Ok(())
        };
        for first in (0..self.chunks.len()).step_by(2) {
            let part = |chunk: usize| self.chunk_part(delta, chunk, opts, init.as_ref(), gradient);
            match first + 1 < self.chunks.len() {
                true => {
                    let (a, b) = rayon::join(|| part(first), || part(first + 1));
                    add(a?)?;
                    add(b?)?;
                }
                false => add(part(first)?)?,
            }
        }
        let rewriting = (self.seqs.len() - 1) as f64;
        let m_norm = norm(&self.m_init);
        let length = (delta.sqr()?.sum_all()? + 1e-30)?.sqrt()?;
        let decay = (length * (opts.weight_decay / (m_norm * m_norm)))?;
        let decay_value = decay.to_scalar::<f32>()? as f64;
        if gradient {
            if let Some(g) = decay.backward()?.get(delta) {
                grad = (&grad + g)?;
            }
        }
        let step = FactStep {
            step: 0,
            loss: nll + opts.kl_weight * kl_value + decay_value,
            nll,
            kl: kl_value,
            p_target: p_sum / rewriting,
        };
        Ok((step, grad))
    }

    /// One chunk's share of the loss, and of its gradient when `gradient`; `kl_init` is the
    /// KL prompt's unedited log-probabilities (`None` on the first step: the chunk that holds
    /// the KL prompt takes its own, which are the unedited ones there).
    fn chunk_part(
        &self,
        delta: &Tensor,
        chunk: usize,
        opts: &FactOptions,
        kl_init: Option<&Tensor>,
        gradient: bool,
    ) -> Result<Part> {
        let rewriting = (self.seqs.len() - 1) as f64;
        let per_total = -1.0 / (self.target.len() as f64 * rewriting);
        let c = self.run_chunk(delta, chunk)?;
        let mut part = Part {
            nll: 0.0,
            p_sum: 0.0,
            kl: None,
            grad: None,
        };
        let mut terms = Vec::new();
        for t in &c.totals {
            let total = t.to_scalar::<f32>()? as f64;
            part.p_sum += total.exp();
            part.nll += total * per_total;
            terms.push((t * per_total)?);
        }
        if let Some(kl_lp) = c.kl_lp {
            let init = kl_init.cloned().unwrap_or_else(|| kl_lp.detach());
            let kl = (kl_lp.exp()? * (&kl_lp - &init)?)?.sum_all()?;
            part.kl = Some((kl.to_scalar::<f32>()? as f64, init));
            terms.push((kl * opts.kl_weight)?);
        }
        if gradient && !terms.is_empty() {
            let loss = Tensor::stack(&terms, 0)?.sum_all()?;
            part.grad = loss.backward()?.get(delta).cloned();
        }
        Ok(part)
    }

    /// ROME's loop: Adam on `δ`, clamped after each step; `δ` and the steps.
    pub(super) fn optimise(
        &self,
        opts: &FactOptions,
        on: &mut dyn FnMut(&FactStep),
    ) -> Result<(Vec<f32>, Vec<FactStep>)> {
        let hidden = self.model.arch.hidden;
        let delta = Var::zeros(hidden, DType::F32, &Device::Cpu)?;
        let mut opt = AdamW::new(
            vec![delta.clone()],
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let max = opts.clamp * norm(&self.m_init);
        let mut kl_init = None;
        let mut steps = Vec::new();
        for step in 0..opts.steps {
            let pool = candle_core::Device::Cpu;
            // The last step's gradient would not be used.
            let gradient = step + 1 < opts.steps;
            let (mut record, grad) = pool.with_context(|| {
                self.loss_and_gradient(delta.as_tensor(), opts, &mut kl_init, gradient)
            })?;
            record.step = step;
            if self.chunks.len() > 2 {
                // Chunked (a memory bound): keep the bound across steps. One pair: the pages
                // are wanted again at once, and giving them back costs their faults.
                release_free_memory();
            }
            on(&record);
            let done = record.loss < 5e-2 || step + 1 == opts.steps;
            steps.push(record);
            if done {
                break;
            }
            // The optimiser takes its gradient from a graph: `Σ δ·g` has gradient `g` exactly.
            let carrier = (delta.as_tensor() * grad.detach())?.sum_all()?;
            opt.backward_step(&carrier)?;
            let d = delta.as_tensor().to_vec1::<f32>()?;
            let n = norm(&d);
            if n > max {
                let scaled: Vec<f32> = d.iter().map(|v| (*v as f64 * max / n) as f32).collect();
                delta.set(&Tensor::from_vec(scaled, hidden, &Device::Cpu)?)?;
            }
        }
        Ok((delta.as_tensor().to_vec1::<f32>()?, steps))
    }
}

/// One chunk's share of a step: its terms of the loss, the KL value and the unedited
/// log-probabilities it was measured against (the chunk with the KL prompt), its gradient.
struct Part {
    nll: f64,
    p_sum: f64,
    kl: Option<(f64, Tensor)>,
    grad: Option<Tensor>,
}

/// A layer's weights for the optimisation.
fn layer_weights(model: &Llama, w: &Weights, l: usize) -> Result<LayerWeights> {
    let spec = model.arch.layers[l].clone();
    let map = |m: &Linear| -> Result<Map> {
        Ok(Map {
            weight: Frozen::new(owned(w, &m.weight, m.out, m.input)?, m.out, m.input),
            bias: match &m.bias {
                Some(b) => Some(w.get_shaped(b, &[m.out])?),
                None => None,
            },
        })
    };
    let norm = |n: &Option<String>| -> Result<Option<Tensor>> {
        match n {
            Some(n) => Ok(Some(model.norm(w, n)?)),
            None => Ok(None),
        }
    };
    Ok(LayerWeights {
        input_norm: model.norm(w, &spec.input_norm)?,
        qkv: match &spec.qkv {
            Qkv::Split { q, k, v } => vec![map(q)?, map(k)?, map(v)?],
            Qkv::Fused(m) => vec![map(m)?],
        },
        q_norm: norm(&spec.q_norm)?,
        k_norm: norm(&spec.k_norm)?,
        o: map(&spec.o)?,
        post_attention_norm: norm(&spec.post_attention_norm)?,
        pre_mlp_norm: model.norm(w, &spec.pre_mlp_norm)?,
        gate_up: match &spec.gate_up {
            GateUp::Split { gate, up } => vec![map(gate)?, map(up)?],
            GateUp::Fused(m) => vec![map(m)?],
        },
        down: map(&spec.down)?,
        post_mlp_norm: norm(&spec.post_mlp_norm)?,
        spec,
    })
}

/// What the optimisation starts from for one text: its tokens, the subject's last token `at`,
/// and the rows (relative to `at`) whose next token is scored.
pub(super) struct Text {
    pub(super) ids: Vec<u32>,
    pub(super) at: usize,
    pub(super) scored: Vec<(usize, u32)>,
}

/// A text's unedited run: what the optimisation starts from, the key (the `down_proj` input
/// at `at` of the edited layer) and the MLP output there.
struct Unedited {
    seq: Sequence,
    key: Vec<f32>,
    m: Vec<f32>,
}

/// The unedited runs of `texts`, as one batch.
fn unedited(model: &Llama, w: &Weights, texts: Vec<Text>, layer: usize) -> Result<Vec<Unedited>> {
    let a = &model.arch;
    let (kvh, hd) = (a.kv_heads, a.head_width);
    let ids: Vec<&[u32]> = texts.iter().map(|t| t.ids.as_slice()).collect();
    let starts: Vec<usize> = texts
        .iter()
        .scan(0, |row, t| {
            let at = *row;
            *row += t.ids.len();
            Some(at)
        })
        .collect();
    let mut past = vec![Vec::new(); texts.len()];
    let mut picked = Vec::new();
    let sandwich = a.layers[layer].post_mlp_norm.is_some();
    run_layers(model, w, &ids, a.depth() - 1, |l, out, kv| {
        if l == layer {
            for (text, &start) in texts.iter().zip(&starts) {
                let row = start + text.at;
                let before_norm = match sandwich {
                    true => Some(((out.x.get(row)? - out.mlp.get(row)?)?, out.down.get(row)?)),
                    false => None,
                };
                picked.push((
                    out.act.get(row)?.to_vec1::<f32>()?,
                    out.down.get(row)?.to_vec1::<f32>()?,
                    out.x.narrow(0, row, text.ids.len() - text.at)?,
                    before_norm,
                ));
            }
        }
        if l > layer {
            // `[t, kv_heads, hd]` row-major: the first `at` positions, as `[kv_heads, at, hd]`.
            for ((text, kv), past) in texts.iter().zip(kv).zip(&mut past) {
                let keep = |v: &[f32]| -> candle_core::Result<Tensor> {
                    Tensor::from_slice(&v[..text.at * kvh * hd], (text.at, kvh, hd), &Device::Cpu)?
                        .transpose(0, 1)?
                        .contiguous()
                };
                past.push((keep(&kv.0)?, keep(&kv.1)?));
            }
        }
        Ok(())
    })?;
    if picked.len() != texts.len() {
        return Err(InferError::Internal("the edited layer was not run"));
    }
    texts
        .into_iter()
        .zip(picked)
        .zip(past)
        .map(|((text, (key, m, x, before_norm)), past)| {
            let n = text.ids.len() - text.at;
            let mut ropes: Vec<(f64, (Tensor, Tensor))> = Vec::new();
            for l in &a.layers[layer + 1..] {
                if ropes.iter().all(|(t, _)| *t != l.rope_theta) {
                    let (cos, sin) = model.rope_tables_with(text.at, n, l.rope_theta)?;
                    ropes.push((
                        l.rope_theta,
                        (graph::full_width(&cos)?, graph::full_width(&sin)?),
                    ));
                }
            }
            Ok(Unedited {
                seq: Sequence {
                    at: text.at,
                    x,
                    past,
                    ropes,
                    before_norm,
                    scored: text.scored,
                },
                key,
                m,
            })
        })
        .collect()
}

/// Runs the layers `0..=last` on each of `texts` (no cache before them), all as one batch;
/// `each` sees every layer's output (the texts' rows one after another) and each text's keys
/// and values.
pub(super) fn run_layers(
    model: &Llama,
    w: &Weights,
    texts: &[&[u32]],
    last: usize,
    mut each: impl FnMut(usize, &crate::llama::Block, &[(Vec<f32>, Vec<f32>)]) -> Result<()>,
) -> Result<()> {
    let mut x = model.embed_rows(w, &texts.concat())?;
    let shapes: Vec<(usize, usize)> = texts.iter().map(|t| (0, t.len())).collect();
    let batch = model.batch(&shapes)?;
    for l in 0..=last {
        let mut kv = vec![(Vec::new(), Vec::new()); texts.len()];
        let out = model.block(w, l, &x, &mut kv, &batch, &[])?;
        each(l, &out, &kv)?;
        x = out.x;
    }
    Ok(())
}

/// The `down_proj` input of `layer` at every position of each of `texts`, their rows one
/// after another (`[tokens, intermediate]`): the layers up to it run, no further.
pub(super) fn unedited_act(
    model: &Llama,
    w: &Weights,
    texts: &[&[u32]],
    layer: usize,
) -> Result<Tensor> {
    let mut act = None;
    run_layers(model, w, texts, layer, |l, out, _| {
        if l == layer {
            act = Some(out.act.clone());
        }
        Ok(())
    })?;
    act.ok_or(InferError::Internal("the edited layer was not run"))
}
