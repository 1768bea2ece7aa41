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

pub mod ablate;
mod chunks;
mod evaluate;
mod graph;
pub mod memit;
pub mod moment;
mod pass;
pub(crate) mod problem;
pub use evaluate::{GENERATE, UNRELATED};
#[cfg(test)]
pub(crate) mod tests;

use crate::distribution::Distribution;
use crate::llama::Llama;
use crate::trace::runs::{last_rows, run_layers, values};
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use candle_core::{Device, Tensor};
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
    /// What the update divides by: the identity, or the keys' second moment over the shipped
    /// text ([`moment`]).
    pub covariance: Covariance,
}

/// The `C` of ROME's update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Covariance {
    Identity,
    Corpus,
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
            covariance: Covariance::Corpus,
        }
    }
}

/// What a user sets of a fact edit; what is left `None` takes the default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FactKnobs {
    /// The layer whose `down_proj` changes ([`default_layer`] when `None`).
    pub layer: Option<usize>,
    /// Strength against specificity: `δ`'s norm is kept under this many times the MLP
    /// output's (lower: a weaker edit that spills less over to other subjects).
    pub clamp: Option<f64>,
    /// How much the optimisation weighs keeping the subject's other predictions (higher:
    /// more specific).
    pub kl_weight: Option<f64>,
}

impl FactOptions {
    /// The options of an edit of a model of `layers` layers: the defaults, with what `knobs`
    /// sets, each checked (a layer of the model, a clamp above 0, a KL weight of 0 or more).
    pub fn tuned(layers: usize, knobs: &FactKnobs) -> Result<FactOptions> {
        let layer = knobs.layer.unwrap_or_else(|| default_layer(layers));
        if layer >= layers {
            return Err(InferError::Request(format!(
                "layer {layer} is beyond the model's {layers} layers"
            )));
        }
        let mut opts = FactOptions::at_layer(layer);
        if let Some(c) = knobs.clamp {
            if !(c.is_finite() && c > 0.0) {
                return Err(InferError::Request(format!(
                    "the clamp is a number above 0, not {c}"
                )));
            }
            opts.clamp = c;
        }
        if let Some(k) = knobs.kl_weight {
            if !(k.is_finite() && k >= 0.0) {
                return Err(InferError::Request(format!(
                    "the KL weight is a number of 0 or more, not {k}"
                )));
            }
            opts.kl_weight = k;
        }
        Ok(opts)
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

/// The layer edited when none is given: a seventh of the way up, rounded (layer 4 of
/// SmolLM2's 30, 3 of Gemma 3 270M's 18 and of Qwen2.5-0.5B's 24). Chosen by the
/// specificity study (`benches/specificity_bench.py`, BENCHMARKS.md): on 24 facts with
/// neighbours sharing their relation it kept the most neighbours with the best efficacy of the
/// layers and settings tried.
pub fn default_layer(layers: usize) -> usize {
    ((layers as f64 / 7.0).round() as usize).min(layers.saturating_sub(1))
}

impl RunnableModel {
    /// The forward pass's name of the matrix a fact edit at `layer` changes: its `down_proj`.
    pub(crate) fn down_proj(&self, layer: usize) -> Result<String> {
        let model = self.llama()?;
        let spec = model.arch.layers.get(layer).ok_or_else(|| {
            InferError::Request(format!(
                "layer {layer} is beyond the model's {} layers",
                model.arch.depth()
            ))
        })?;
        Ok(spec.down.weight.clone())
    }

    /// The model's own name (a GGUF's `blk.N.ffn_down.weight`) of the matrix a fact edit at
    /// `layer` changes.
    pub fn fact_matrix(&self, layer: usize) -> Result<String> {
        Ok(self.model_name(&self.down_proj(layer)?))
    }

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
            let starts: Vec<&str> = (0..count).map(|k| STARTS[k % STARTS.len()]).collect();
            for text in self.sample(&model, w, &starts, length, &mut rng)? {
                out.push(format!("{}. {{}}", text.replace(['{', '}'], " ")));
            }
        }
        Ok(out)
    }

    /// Each of `starts` and `length` more tokens drawn from the top 5. The starts of one
    /// length in tokens run as one batch (every weight read once per step for all of them);
    /// the draws are made in the order of `starts`.
    fn sample(
        &self,
        model: &Llama,
        w: &Weights,
        starts: &[&str],
        length: usize,
        rng: &mut impl Rng,
    ) -> Result<Vec<String>> {
        let hidden = model.arch.hidden;
        let encoded: Vec<Vec<u32>> = starts
            .iter()
            .map(|s| self.encode(s))
            .collect::<Result<_>>()?;
        let mut sizes: Vec<usize> = encoded.iter().map(Vec::len).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut written: Vec<Vec<u32>> = encoded.clone();
        for size in sizes {
            let group: Vec<usize> = (0..starts.len())
                .filter(|&i| encoded[i].len() == size)
                .collect();
            let mut kv = vec![vec![(Vec::new(), Vec::new()); group.len()]; model.arch.depth()];
            let mut feed: Vec<u32> = group.iter().flat_map(|&i| encoded[i].clone()).collect();
            let (mut past, mut n) = (0, size);
            for _ in 0..length {
                let x = model.embed_rows(w, &feed)?;
                let last = run_layers(
                    model,
                    w,
                    x,
                    &model.batch(&vec![(past, n); group.len()])?,
                    0,
                    &mut kv,
                    &|_| Vec::new(),
                    &mut |_, _| Ok(()),
                )?;
                let finals = last_rows(&values(&last)?, n, hidden);
                let logits = model.logits(
                    w,
                    &Tensor::from_vec(finals, (group.len(), hidden), &Device::Cpu)?,
                )?;
                feed.clear();
                for (&i, row) in group.iter().zip(values(&logits)?.chunks(logits.dim(1)?)) {
                    let next = draw(&Distribution::from_logits(row.to_vec()), rng);
                    written[i].push(next);
                    feed.push(next);
                }
                past += n;
                n = 1;
            }
        }
        Ok(written.iter().map(|ids| self.decode_text(ids)).collect())
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
        // C does not depend on the fact: it is measured beside the optimisation, whose
        // single-threaded moments (candle's small operations, the autograd) leave a core idle.
        // Both are jobs of candle's pool, so they share its threads. A quantized model's
        // memory is bounded: there C is measured after the optimisation has let go of its own.
        let corpus = opts.covariance == Covariance::Corpus;
        let beside = corpus && !w.is_quantized(&self.down_proj(opts.layer)?);
        let (d, moment) = std::thread::scope(|scope| {
            let moment = beside.then(|| {
                scope.spawn(|| {
                    candle_core::Device::Cpu.with_context(|| self.key_moment(w, opts.layer))
                })
            });
            let d = self.fact_delta(w, goal, opts, on);
            let moment = moment.map(|m| {
                m.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (d, moment)
        });
        let d = d?;
        let key = d.key;
        // v = C⁻¹k* / ((C⁻¹k*)ᵀ k*)
        let moment = match (moment, corpus) {
            (Some(m), _) => Some(m?),
            (None, true) => {
                Some(candle_core::Device::Cpu.with_context(|| self.key_moment(w, opts.layer))?)
            }
            (None, false) => None,
        };
        let aimed: Vec<f64> = match moment {
            None => key.iter().map(|&x| x as f64).collect(),
            Some(moment) => moment.solve(&key)?,
        };
        let along: f64 = aimed.iter().zip(&key).map(|(a, &k)| a * k as f64).sum();
        let v: Vec<f32> = aimed.iter().map(|&a| (a / along) as f32).collect();
        Ok(FactEdit {
            layer: opts.layer,
            tensor: self.down_proj(opts.layer)?,
            u: d.delta,
            v,
            key,
            target: d.target,
            contexts: d.contexts,
            steps: d.steps,
        })
    }

    /// The change `δ` of `opts.layer`'s MLP output at the subject's last token that makes the
    /// model continue `goal.prompt` with `goal.target` (ROME's `v*` is `W k* + δ`), found by
    /// ROME's optimisation; `on` hears of every step.
    pub fn fact_delta(
        &self,
        w: &Weights,
        goal: &FactGoal,
        opts: &FactOptions,
        on: &mut dyn FnMut(&FactStep),
    ) -> Result<FactDelta> {
        // In candle's pool: the kernels' and candle's parallel work then share one pool whose
        // threads stay warm between the many short parallel sections.
        let pool = candle_core::Device::Cpu;
        let (contexts, problem) = pool.with_context(|| -> Result<_> {
            let contexts = self.context_templates(w, opts)?;
            let problem = self.problem(w, goal, opts.layer, &contexts)?;
            Ok((contexts, problem))
        })?;
        let (delta, steps) = problem.optimise(opts, on)?;
        Ok(FactDelta {
            delta,
            key: problem.key(),
            target: problem.target.clone(),
            contexts,
            steps,
        })
    }
}

/// What [`RunnableModel::fact_delta`] finds.
#[derive(Clone, Debug)]
pub struct FactDelta {
    /// `[hidden]`: the change of the layer's MLP output (so of the residual stream after it)
    /// at the subject's last token.
    pub delta: Vec<f32>,
    /// `[intermediate]`: the averaged key `k*` of the layer.
    pub key: Vec<f32>,
    pub target: Vec<u32>,
    /// The context templates (`{}` the prompt).
    pub contexts: Vec<String>,
    pub steps: Vec<FactStep>,
}

/// A token drawn from the top 5 of `d`, in proportion to their probabilities.
fn draw(d: &Distribution, rng: &mut impl Rng) -> u32 {
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
    next
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
