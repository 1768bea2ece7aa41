//! Fact editing: ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT")
//! with the consistent key of r-ROME (Gupta et al. 2024, "Rebuilding ROME").
//!
//! A fact "subject -> target" is rewritten by a rank-one change of one layer's `down_proj`
//! (`W`, `[hidden, intermediate]`): `ΔW = (v* - W k*) (C⁻¹ k*)ᵀ / ((C⁻¹ k*)ᵀ k*)`.
//!
//! - **k\*** is the input of `down_proj` at the subject's last token, averaged over the prompt
//!   and the prompt after short prefixes the model writes itself (ROME's context templates:
//!   `{}` plus 10 of 5 tokens and 10 of 10, started from "The", "Therefore", "Because", "I",
//!   "You", sampled from the top 5).
//! - **v\*** is found by gradient descent on a vector `δ` added to that layer's MLP output at
//!   the subject's last token, in every prefixed prompt followed by the target's first tokens:
//!   the target's negative log-likelihood, plus `kl_weight` x the KL divergence of the next-token
//!   distribution at the subject's last token of "{subject} is a" from the unedited one, plus
//!   `weight_decay` x `|δ| / |m|²` (`m` the unedited MLP output there); Adam, `δ` clamped to
//!   `clamp` x `|m|` after every step; stopped early when the loss falls under 0.05. The
//!   defaults are ROME's for GPT-2 XL.
//! - Where this differs from ROME's code: ROME takes `v* = m + δ` at the unprefixed prompt and
//!   `W k` at the unprefixed prompt's own key, while its left vector uses the averaged key; as
//!   r-ROME argues, the two keys should be one. Here `v* = W k* + δ` with the averaged `k*`, so
//!   `v* - W k* = δ`: the edit adds exactly the optimised vector at the averaged key.
//! - The optimisation runs only what `δ` can change: the layers after the edited one, on the
//!   positions from the subject's last token on, after the unedited run's keys and values of
//!   the earlier positions. The gradient is the same; the work falls with what it skips.

mod evaluate;
mod graph;
pub use evaluate::{GENERATE, UNRELATED};
#[cfg(test)]
mod tests;

use crate::llama::{causal_mask, Llama};
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use graph::Frozen;
use rand::{Rng, SeedableRng};

/// What to rewrite: in `prompt` (which contains `subject`), the model should continue with
/// `target` (token text with its leading space, or `#ID`; several tokens allowed).
#[derive(Clone, Debug)]
pub struct FactGoal {
    pub subject: String,
    pub prompt: String,
    pub target: String,
}

/// The optimisation's settings (ROME's defaults for GPT-2 XL).
#[derive(Clone, Debug)]
pub struct FactOptions {
    pub layer: usize,
    pub steps: usize,
    pub lr: f64,
    /// `δ`'s norm is kept under this many times the MLP output's.
    pub clamp: f64,
    pub kl_weight: f64,
    pub weight_decay: f64,
    /// Context prefixes the model writes: (tokens, how many).
    pub contexts: Vec<(usize, usize)>,
    pub seed: u64,
}

impl FactOptions {
    pub fn at_layer(layer: usize) -> FactOptions {
        FactOptions {
            layer,
            steps: 20,
            lr: 0.5,
            clamp: 4.0,
            kl_weight: 0.0625,
            weight_decay: 0.5,
            contexts: vec![(5, 10), (10, 10)],
            seed: 0,
        }
    }
}

/// One optimisation step as it went.
#[derive(Clone, Debug)]
pub struct FactStep {
    pub step: usize,
    pub loss: f64,
    pub nll: f64,
    pub kl: f64,
    /// Mean probability of the target over the prefixed prompts.
    pub p_target: f64,
}

/// A computed rank-one edit of `tensor`: `ΔW = u vᵀ`.
#[derive(Clone, Debug)]
pub struct FactEdit {
    pub layer: usize,
    pub tensor: String,
    /// `[hidden]`: `v* - W k*`.
    pub u: Vec<f32>,
    /// `[intermediate]`: `C⁻¹ k* / ((C⁻¹ k*)ᵀ k*)`.
    pub v: Vec<f32>,
    pub key: Vec<f32>,
    pub target: Vec<u32>,
    pub contexts: Vec<String>,
    pub steps: Vec<FactStep>,
}

/// The layer edited when none is given: a fifth of the way up, rounded (see the fact editor's
/// benchmark for how layers compare on a small model).
pub fn default_layer(layers: usize) -> usize {
    ((layers as f64 * 0.2).round() as usize).min(layers.saturating_sub(1))
}

/// The `down_proj` of a layer.
pub fn down_proj(layer: usize) -> String {
    format!("model.layers.{layer}.mlp.down_proj.weight")
}

/// One sequence of the optimisation: what the unedited run left for it.
struct Sequence {
    /// The subject's last token.
    at: usize,
    /// The residual stream after the edited layer, from `at` on (`[n, hidden]`).
    x: Tensor,
    /// Per later layer, the keys and values of the positions before `at`
    /// (`[kv_heads, at, hd]`).
    past: Vec<(Tensor, Tensor)>,
    /// cos and sin of the positions from `at` on, `[n, hd]`.
    rope: (Tensor, Tensor),
    mask: Option<Tensor>,
    /// Rows (relative to `at`) whose next token is scored, with that token.
    scored: Vec<(usize, u32)>,
}

/// A later layer's weights, dense f32 for the optimisation.
struct LayerWeights {
    input_norm: Tensor,
    q: Frozen,
    k: Frozen,
    v: Frozen,
    biases: [Option<Tensor>; 3],
    o: Frozen,
    post_norm: Tensor,
    gate: Frozen,
    up: Frozen,
    down: Frozen,
}

/// A weight as a dense f32 matrix `[rows, cols]`, not kept in the session's cache.
fn dense(w: &Weights, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
    match w.stored(name, rows, cols) {
        Some(s) => {
            let data: Vec<f32> = (0..rows).flat_map(|r| s.row(r, cols)).collect();
            Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
        }
        None => w.get_shaped(name, &[rows, cols]),
    }
}

impl RunnableModel {
    /// Token ids of a target: `#ID`, or the text's tokens without special tokens.
    pub fn target_ids(&self, target: &str) -> Result<Vec<u32>> {
        if target.starts_with('#') {
            return Ok(vec![self.resolve(target)?]);
        }
        let ids = self.encode_plain(target)?;
        if ids.is_empty() {
            return Err(InferError::Request(format!(
                "the target {target:?} has no tokens"
            )));
        }
        Ok(ids)
    }

    /// ROME's context templates: `{}` and prefixes the model writes itself.
    pub fn context_templates(&self, w: &Weights, opts: &FactOptions) -> Result<Vec<String>> {
        const STARTS: [&str; 5] = ["The", "Therefore", "Because", "I", "You"];
        let model = self.llama()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
        let mut out = vec!["{}".to_string()];
        for &(length, count) in &opts.contexts {
            for k in 0..count {
                let start = STARTS[k % STARTS.len()];
                let text = self.sample(&model, w, start, length, &mut rng)?;
                out.push(format!("{}. {{}}", text.replace(['{', '}'], " ")));
            }
        }
        Ok(out)
    }

    /// `start` and `length` more tokens drawn from the top 5.
    fn sample(
        &self,
        model: &Llama,
        w: &Weights,
        start: &str,
        length: usize,
        rng: &mut impl Rng,
    ) -> Result<String> {
        let mut ids = self.encode(start)?;
        let mut cache = crate::llama::KvCache::default();
        let mut feed = ids.clone();
        for _ in 0..length {
            let d = next_after(model, w, &feed, &mut cache)?;
            let top = d.top(5);
            let weights: Vec<f64> = top.iter().map(|&id| d.prob(id)).collect();
            let total: f64 = weights.iter().sum();
            let mut pick = rng.random::<f64>() * total;
            let mut next = top[0];
            for (&id, &p) in top.iter().zip(&weights) {
                next = id;
                if pick < p {
                    break;
                }
                pick -= p;
            }
            ids.push(next);
            feed = vec![next];
        }
        Ok(self.decode_text(&ids))
    }

    /// Computes the rank-one edit that makes the model continue `goal.prompt` with
    /// `goal.target`; `on` hears of every step.
    pub fn edit_fact(
        &self,
        w: &Weights,
        goal: &FactGoal,
        opts: &FactOptions,
        on: &mut dyn FnMut(&FactStep),
    ) -> Result<FactEdit> {
        let contexts = self.context_templates(w, opts)?;
        let problem = self.problem(w, goal, opts.layer, &contexts)?;
        let (u, steps) = problem.optimise(opts, on)?;
        let key = problem.key();
        let kk: f64 = key.iter().map(|&x| x as f64 * x as f64).sum();
        let v: Vec<f32> = key.iter().map(|&x| (x as f64 / kk) as f32).collect();
        Ok(FactEdit {
            layer: opts.layer,
            tensor: down_proj(opts.layer),
            u,
            v,
            key,
            target: problem.target.clone(),
            contexts,
            steps,
        })
    }

    /// Everything the optimisation needs: the unedited runs of the prefixed prompts (each
    /// followed by the target but its last token) and of the KL prompt, and the later layers'
    /// weights.
    fn problem(
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
        let mut keys = Vec::new();
        let mut m_init = None;
        let mut seqs = Vec::new();
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
            let (seq, key, m) = unedited(&model, w, &ids, at, layer, scored)?;
            if !is_kl {
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
        let unembed = Frozen::new(dense(
            w,
            model.unembedding_name(w),
            c.vocab_size,
            c.hidden_size,
        )?);
        Ok(Problem {
            model,
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
struct Problem {
    model: Llama,
    later: Vec<LayerWeights>,
    final_norm: Tensor,
    unembed: Frozen,
    /// The rewriting prompts, then the KL prompt.
    seqs: Vec<Sequence>,
    target: Vec<u32>,
    /// The key of each rewriting prompt.
    keys: Vec<Vec<f32>>,
    /// The MLP output at the subject's last token of the unprefixed prompt.
    m_init: Vec<f32>,
}

impl Problem {
    /// The averaged key `k*`.
    fn key(&self) -> Vec<f32> {
        let count = self.keys.len() as f64;
        let width = self.keys.first().map_or(0, Vec::len);
        (0..width)
            .map(|i| (self.keys.iter().map(|k| k[i] as f64).sum::<f64>() / count) as f32)
            .collect()
    }

    /// The loss at `delta` and its parts: (loss, nll, kl, p_target).
    fn loss(
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
    fn optimise(
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
            let (loss, mut record) = self.loss(delta.as_tensor(), opts, &mut kl_init)?;
            record.step = step;
            on(&record);
            let done = record.loss < 5e-2 || step + 1 == opts.steps;
            steps.push(record);
            if done {
                break;
            }
            opt.backward_step(&loss)?;
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

/// The next-token distribution after `feed`, following the positions in `cache`.
pub(crate) fn next_after(
    model: &Llama,
    w: &Weights,
    feed: &[u32],
    cache: &mut crate::llama::KvCache,
) -> Result<crate::distribution::Distribution> {
    let logits = model.forward(w, feed, cache, Default::default(), &mut Default::default())?;
    Ok(crate::distribution::Distribution::from_logits(
        logits.to_vec1::<f32>()?,
    ))
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// A layer's weights for the optimisation.
fn layer_weights(model: &Llama, w: &Weights, l: usize) -> Result<LayerWeights> {
    let c = &model.config;
    let (hidden, inter, hd) = (c.hidden_size, c.intermediate_size, c.head_width());
    let (q_out, kv_out) = (c.num_attention_heads * hd, c.kv_heads() * hd);
    let name = |part: &str| format!("model.layers.{l}.{part}.weight");
    let frozen = |part: &str, rows, cols| -> Result<Frozen> {
        Ok(Frozen::new(dense(w, &name(part), rows, cols)?))
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

/// The unedited run of one sequence: what the optimisation starts from, the key (the
/// `down_proj` input at `at` of the edited layer) and the MLP output there.
fn unedited(
    model: &Llama,
    w: &Weights,
    ids: &[u32],
    at: usize,
    layer: usize,
    scored: Vec<(usize, u32)>,
) -> Result<(Sequence, Vec<f32>, Vec<f32>)> {
    let c = &model.config;
    let t = ids.len();
    let (kvh, hd) = (c.kv_heads(), c.head_width());
    let mut x = model.embed_rows(w, ids)?;
    let rope = model.rope_tables(0, t)?;
    let mask = causal_mask(t, 0)?;
    let mut past = Vec::new();
    let mut key = Vec::new();
    let mut m = Vec::new();
    let mut after = None;
    for l in 0..c.num_hidden_layers {
        let mut kv = (Vec::new(), Vec::new());
        let out = model.block(
            w,
            l,
            &x,
            std::slice::from_mut(&mut kv),
            0,
            &rope,
            mask.as_ref(),
            &[],
        )?;
        if l == layer {
            key = out.act.get(at)?.to_vec1::<f32>()?;
            m = out.mlp.get(at)?.to_vec1::<f32>()?;
            after = Some(out.x.narrow(0, at, t - at)?);
        }
        if l > layer {
            // `[t, kv_heads, hd]` row-major: the first `at` positions, as `[kv_heads, at, hd]`.
            let keep = |v: &[f32]| -> candle_core::Result<Tensor> {
                Tensor::from_slice(&v[..at * kvh * hd], (at, kvh, hd), &Device::Cpu)?
                    .transpose(0, 1)?
                    .contiguous()
            };
            past.push((keep(&kv.0)?, keep(&kv.1)?));
        }
        x = out.x;
    }
    let x = after.ok_or_else(|| InferError::Internal("the edited layer was not run"))?;
    let n = t - at;
    let (cos, sin) = model.rope_tables(at, n)?;
    Ok((
        Sequence {
            at,
            x,
            past,
            rope: (graph::full_width(&cos)?, graph::full_width(&sin)?),
            mask: causal_mask(n, at)?,
            scored,
        },
        key,
        m,
    ))
}

impl Problem {
    /// With `delta` added at every sequence's first row: the target's mean negative
    /// log-likelihood over the rewriting prompts, the KL prompt's log-probabilities, and the
    /// target's mean probability.
    fn run(&self, delta: &Tensor) -> Result<(Tensor, Tensor, f64)> {
        let c = &self.model.config;
        let eps = c.rms_norm_eps;
        let (heads, kvh, hd) = (c.num_attention_heads, c.kv_heads(), c.head_width());
        let rows: Vec<Tensor> = self
            .seqs
            .iter()
            .map(|s| {
                let first = (s.x.get(0)? + delta)?.unsqueeze(0)?;
                let n = s.x.dim(0)?;
                if n == 1 {
                    Ok(first)
                } else {
                    Tensor::cat(&[&first, &s.x.narrow(0, 1, n - 1)?], 0)
                }
            })
            .collect::<candle_core::Result<_>>()?;
        let mut x = Tensor::cat(&rows, 0)?;
        let lens: Vec<usize> = self
            .seqs
            .iter()
            .map(|s| s.x.dim(0))
            .collect::<candle_core::Result<_>>()?;
        for (li, lw) in self.later.iter().enumerate() {
            let h = graph::rms_norm(&x, &lw.input_norm, eps)?;
            let mut qkv = [lw.q.apply(&h)?, lw.k.apply(&h)?, lw.v.apply(&h)?];
            for (m, b) in qkv.iter_mut().zip(&lw.biases) {
                if let Some(b) = b {
                    *m = m.broadcast_add(b)?;
                }
            }
            let [q_all, k_all, v_all] = qkv;
            let mut atts = Vec::with_capacity(self.seqs.len());
            let mut off = 0;
            for (s, &n) in self.seqs.iter().zip(&lens) {
                let split = |m: &Tensor, heads: usize| -> candle_core::Result<Tensor> {
                    m.narrow(0, off, n)?
                        .reshape((n, heads, hd))?
                        .transpose(0, 1)?
                        .contiguous()
                };
                let (cos, sin) = &s.rope;
                let q = graph::rope(&split(&q_all, heads)?, cos, sin)?;
                let k = graph::rope(&split(&k_all, kvh)?, cos, sin)?;
                let v = split(&v_all, kvh)?;
                let (pk, pv) = &s.past[li];
                let (k, v) = if s.at > 0 {
                    (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?)
                } else {
                    (k, v)
                };
                let total = s.at + n;
                let rep = heads / kvh;
                let expand = |m: Tensor| -> candle_core::Result<Tensor> {
                    if rep == 1 {
                        return Ok(m);
                    }
                    m.unsqueeze(1)?
                        .expand((kvh, rep, total, hd))?
                        .reshape((heads, total, hd))
                };
                let (k, v) = (expand(k)?, expand(v)?);
                let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
                let scores = match &s.mask {
                    Some(m) => scores.broadcast_add(m)?,
                    None => scores,
                };
                let probs = graph::softmax(&scores)?;
                atts.push(
                    probs
                        .matmul(&v)?
                        .transpose(0, 1)?
                        .reshape((n, heads * hd))?,
                );
                off += n;
            }
            let att = Tensor::cat(&atts, 0)?;
            x = (x + lw.o.apply(&att)?)?;
            let h = graph::rms_norm(&x, &lw.post_norm, eps)?;
            let act = (lw.gate.apply(&h)?.silu()? * lw.up.apply(&h)?)?;
            x = (x + lw.down.apply(&act)?)?;
        }
        // The scored rows.
        let mut index = Vec::new();
        let mut off = 0;
        for (s, &n) in self.seqs.iter().zip(&lens) {
            index.extend(s.scored.iter().map(|&(r, _)| (off + r) as u32));
            off += n;
        }
        let picked = x.index_select(&Tensor::new(index.as_slice(), &Device::Cpu)?, 0)?;
        let h = graph::rms_norm(&picked, &self.final_norm, eps)?;
        let lp = graph::log_softmax(&self.unembed.apply(&h)?)?;
        let rewriting = self.seqs.len() - 1;
        let mut row = 0;
        let mut nll_terms = Vec::new();
        let mut p_sum = 0.0;
        for s in &self.seqs[..rewriting] {
            let mut seq_lp = Vec::new();
            for &(_, token) in &s.scored {
                seq_lp.push(lp.get(row)?.get(token as usize)?);
                row += 1;
            }
            let total = Tensor::stack(&seq_lp, 0)?.sum_all()?;
            p_sum += (total.to_scalar::<f32>()? as f64).exp();
            nll_terms.push((total.neg()? / self.target.len() as f64)?);
        }
        let nll = (Tensor::stack(&nll_terms, 0)?.sum_all()? / rewriting as f64)?;
        let kl_lp = lp.get(row)?;
        Ok((nll, kl_lp, p_sum / rewriting as f64))
    }
}
