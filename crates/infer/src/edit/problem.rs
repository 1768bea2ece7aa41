//! The fact editor's optimisation problem: the unedited runs it starts from, the later
//! layers' weights as dense f32, the loss and ROME's loop.

use super::graph::{self, Frozen};
use super::{norm, FactGoal, FactOptions, FactStep};
use crate::kernel::Owned;
use crate::llama::Llama;
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

/// One sequence of the optimisation: what the unedited run left for it.
pub(super) struct Sequence {
    /// The subject's last token.
    pub(super) at: usize,
    /// The residual stream after the edited layer, from `at` on (`[n, hidden]`).
    pub(super) x: Tensor,
    /// Per later layer, the keys and values of the positions before `at`
    /// (`[kv_heads, at, hd]`).
    pub(super) past: Vec<(Tensor, Tensor)>,
    /// cos and sin of the positions from `at` on, `[n, hd]`.
    pub(super) rope: (Tensor, Tensor),
    /// Rows (relative to `at`) whose next token is scored, with that token.
    pub(super) scored: Vec<(usize, u32)>,
}

/// A later layer's weights, dense f32 for the optimisation.
pub(super) struct LayerWeights {
    pub(super) input_norm: Tensor,
    pub(super) q: Frozen,
    pub(super) k: Frozen,
    pub(super) v: Frozen,
    pub(super) biases: [Option<Tensor>; 3],
    pub(super) o: Frozen,
    pub(super) post_norm: Tensor,
    pub(super) gate: Frozen,
    pub(super) up: Frozen,
    pub(super) down: Frozen,
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
    pub(super) fn problem(
        &self,
        w: &Weights,
        goal: &FactGoal,
        layer: usize,
        contexts: &[String],
    ) -> Result<Problem> {
        let model = self.llama()?;
        let c = model.config.clone();
        if layer >= c.num_hidden_layers {
            return Err(InferError::Request(format!(
                "layer {layer} is beyond the model's {} layers",
                c.num_hidden_layers
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
        let later = (layer + 1..c.num_hidden_layers)
            .map(|l| layer_weights(&model, w, l))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = w.get("model.norm.weight")?;
        let unembed = Frozen::new(
            owned(w, model.unembedding_name(w), c.vocab_size, c.hidden_size)?,
            c.vocab_size,
            c.hidden_size,
        );
        let batch = super::pass::Batch::of(&seqs, c.head_width(), c.kv_heads())?;
        Ok(Problem {
            model,
            batch,
            later,
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
pub(super) struct Problem {
    pub(super) model: Llama,
    /// The sequences' attention as one batch.
    pub(super) batch: super::pass::Batch,
    pub(super) later: Vec<LayerWeights>,
    pub(super) final_norm: Tensor,
    pub(super) unembed: Frozen,
    /// The rewriting prompts, then the KL prompt.
    pub(super) seqs: Vec<Sequence>,
    pub(super) target: Vec<u32>,
    /// The key of each rewriting prompt.
    pub(super) keys: Vec<Vec<f32>>,
    /// The MLP output at the subject's last token of the unprefixed prompt.
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
    pub(super) fn loss(
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

    /// ROME's loop: Adam on `δ`, clamped after each step; `δ` and the steps.
    pub(super) fn optimise(
        &self,
        opts: &FactOptions,
        on: &mut dyn FnMut(&FactStep),
    ) -> Result<(Vec<f32>, Vec<FactStep>)> {
        let hidden = self.model.config.hidden_size;
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
            let (loss, mut record) =
                pool.with_context(|| self.loss(delta.as_tensor(), opts, &mut kl_init))?;
            record.step = step;
            on(&record);
            let done = record.loss < 5e-2 || step + 1 == opts.steps;
            steps.push(record);
            if done {
                break;
            }
            pool.with_context(|| opt.backward_step(&loss))?;
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

/// A layer's weights for the optimisation.
fn layer_weights(model: &Llama, w: &Weights, l: usize) -> Result<LayerWeights> {
    let c = &model.config;
    let (hidden, inter, hd) = (c.hidden_size, c.intermediate_size, c.head_width());
    let (q_out, kv_out) = (c.num_attention_heads * hd, c.kv_heads() * hd);
    let name = |part: &str| format!("model.layers.{l}.{part}.weight");
    let frozen = |part: &str, rows, cols| -> Result<Frozen> {
        Ok(Frozen::new(owned(w, &name(part), rows, cols)?, rows, cols))
    };
    let bias = |part: &str, n: usize| -> Result<Option<Tensor>> {
        let b = format!("model.layers.{l}.self_attn.{part}.bias");
        if w.has(&b) {
            Ok(Some(w.get_shaped(&b, &[n])?))
        } else {
            Ok(None)
        }
    };
    Ok(LayerWeights {
        input_norm: w.get(&name("input_layernorm"))?,
        q: frozen("self_attn.q_proj", q_out, hidden)?,
        k: frozen("self_attn.k_proj", kv_out, hidden)?,
        v: frozen("self_attn.v_proj", kv_out, hidden)?,
        biases: [
            bias("q_proj", q_out)?,
            bias("k_proj", kv_out)?,
            bias("v_proj", kv_out)?,
        ],
        o: frozen("self_attn.o_proj", hidden, q_out)?,
        post_norm: w.get(&name("post_attention_layernorm"))?,
        gate: frozen("mlp.gate_proj", inter, hidden)?,
        up: frozen("mlp.up_proj", inter, hidden)?,
        down: frozen("mlp.down_proj", hidden, inter)?,
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
    let c = &model.config;
    let (kvh, hd) = (c.kv_heads(), c.head_width());
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
    run_layers(model, w, &ids, c.num_hidden_layers - 1, |l, out, kv| {
        if l == layer {
            for (text, &start) in texts.iter().zip(&starts) {
                let row = start + text.at;
                picked.push((
                    out.act.get(row)?.to_vec1::<f32>()?,
                    out.mlp.get(row)?.to_vec1::<f32>()?,
                    out.x.narrow(0, row, text.ids.len() - text.at)?,
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
        .map(|((text, (key, m, x)), past)| {
            let n = text.ids.len() - text.at;
            let (cos, sin) = model.rope_tables(text.at, n)?;
            Ok(Unedited {
                seq: Sequence {
                    at: text.at,
                    x,
                    past,
                    rope: (graph::full_width(&cos)?, graph::full_width(&sin)?),
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
