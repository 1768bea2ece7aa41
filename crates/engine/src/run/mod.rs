//! Running the model in-process on CPU, on the session's weights (edits included, no bake):
//! next-token distributions and greedy continuations of the base and the edited model side by
//! side, probe tables (efficacy and locality), sentence embeddings of encoders, and the
//! activations and logit lens that point at what to edit.
//!
//! Weights come from the memory map and the edit overlay through [`weights::WeightCache`];
//! the forward passes ([`llama`], [`bert`]) are our own, on candle ops, so they read weights by
//! name and capture what the panels show.

pub mod bert;
pub mod config;
mod decode;
pub mod kernel;
pub mod llama;
pub mod weights;

use crate::error::{Error, Result};
use crate::store::Model;
use crate::tokens::Vocab;
use candle_core::Tensor;
use config::{folder_of, Family, SUPPORTED};
use llama::{Capture, Captured, KvCache, Llama};
use std::sync::Arc;
use tensor_surgeon_wire::{
    Activations, ActivationsRequest, Continuation, EmbedOutcome, EmbedSide, LensLayer, Matrix,
    NeuronHit, NextTokens, Probe, ProbeKind, ProbeRow, ProbeTable, RunInfo, RunOutcome, RunRequest,
    TargetProb, TokenProb, TokenRef,
};
pub use weights::Edited;
use weights::{WeightCache, Weights};

/// Most tokens a continuation may ask for.
pub const MAX_GENERATE: u32 = 512;
/// Most candidates a top-k may list.
pub const MAX_TOP_K: u32 = 100;

/// A model that can run: its family, tokenizer and weight cache.
pub struct Runner {
    pub family: Family,
    vocab: Arc<Vocab>,
    pub cache: WeightCache,
}

/// The next-token distribution of one model after a prompt (natural-log probabilities).
#[derive(Debug)]
pub struct Distribution {
    pub log_probs: Vec<f64>,
    pub logits: Vec<f32>,
}

impl Distribution {
    fn from_logits(logits: Vec<f32>) -> Distribution {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        let log_z = max + sum.ln();
        let log_probs = logits.iter().map(|&l| l as f64 - log_z).collect();
        Distribution { log_probs, logits }
    }

    pub fn prob(&self, id: u32) -> f64 {
        self.log_probs.get(id as usize).map_or(0.0, |l| l.exp())
    }

    /// The `k` most likely ids, most likely first (ties: lower id first).
    pub fn top(&self, k: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.log_probs.len() as u32).collect();
        let k = k.min(ids.len());
        if k == 0 {
            return Vec::new();
        }
        let by = |a: &u32, b: &u32| {
            self.log_probs[*b as usize]
                .total_cmp(&self.log_probs[*a as usize])
                .then(a.cmp(b))
        };
        ids.select_nth_unstable_by(k - 1, by);
        ids.truncate(k);
        ids.sort_by(by);
        ids
    }

    /// KL(self || other), in nats.
    pub fn kl(&self, other: &Distribution) -> f64 {
        self.log_probs
            .iter()
            .zip(&other.log_probs)
            .map(|(&p, &q)| {
                if p == f64::NEG_INFINITY {
                    0.0
                } else {
                    p.exp() * (p - q)
                }
            })
            .sum::<f64>()
            .max(0.0)
    }
}

/// A greedy continuation in progress: one token per step, the key/value cache kept.
pub struct Generator {
    cache: KvCache,
    next: u32,
    pub ids: Vec<u32>,
}

impl Runner {
    /// A runner for the model at `model_path`, or why it cannot run.
    pub fn open(model_path: &std::path::Path, vocab: Option<Arc<Vocab>>) -> Result<Runner> {
        let (family, _) = Family::detect(model_path)?;
        let vocab = vocab.ok_or_else(|| {
            Error::Unsupported(format!(
                "cannot run this model: no tokenizer.json in {} (it turns prompts into token \
                 ids); {SUPPORTED}",
                folder_of(model_path).display()
            ))
        })?;
        Ok(Runner {
            family,
            vocab,
            cache: WeightCache::default(),
        })
    }

    /// What the run panel needs to know.
    pub fn info(&self, edited_tensors: usize) -> RunInfo {
        let (layers, intermediate, hidden, vocab) = match &self.family {
            Family::Llama(c) => (
                c.num_hidden_layers,
                c.intermediate_size,
                c.hidden_size,
                c.vocab_size,
            ),
            Family::Bert(c) => (
                c.num_hidden_layers,
                c.intermediate_size,
                c.hidden_size,
                self.vocab.size() as usize,
            ),
        };
        RunInfo {
            family: Some(self.family.name().to_string()),
            reason: None,
            layers: layers as u32,
            intermediate: intermediate as u32,
            hidden: hidden as u32,
            vocab: vocab as u32,
            edited_tensors: edited_tensors as u32,
        }
    }

    /// Weights of `model` with `edited` tensors laid over it.
    pub fn weights<'a>(&'a self, model: &'a Model, edited: Edited) -> Weights<'a> {
        self.cache.weights(model, edited)
    }

    fn llama(&self) -> Result<Llama> {
        match &self.family {
            Family::Llama(c) => Ok(Llama { config: c.clone() }),
            Family::Bert(_) => Err(Error::Usage(
                "this is an encoder (BERT): it embeds sentences, it does not predict tokens".into(),
            )),
        }
    }

    /// Token ids of a prompt, as the model's tokenizer makes them (its special tokens too).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Err(Error::Usage("the prompt is empty".into()));
        }
        let enc = self
            .vocab
            .tokenizer()
            .encode(text, true)
            .map_err(|e| Error::Usage(format!("cannot tokenize the prompt: {e}")))?;
        // A tokenizer.json may pad to a fixed length: padding is not part of the text.
        let ids: Vec<u32> = enc
            .get_ids()
            .iter()
            .zip(enc.get_attention_mask())
            .filter(|(_, &m)| m == 1)
            .map(|(&id, _)| id)
            .collect();
        if ids.is_empty() {
            return Err(Error::Usage(format!("{text:?} has no tokens")));
        }
        Ok(ids)
    }

    /// The text of one token (byte-level pieces decoded).
    pub fn token_text(&self, id: u32) -> String {
        self.vocab
            .tokenizer()
            .decode(&[id], false)
            .unwrap_or_else(|_| self.vocab.label(id as u64).unwrap_or("?").to_string())
    }

    /// Ids and texts.
    pub fn token_refs(&self, ids: &[u32]) -> Vec<TokenRef> {
        ids.iter()
            .map(|&id| TokenRef {
                id,
                token: self.token_text(id),
            })
            .collect()
    }

    /// The token a user named (a token text or `#ID`).
    pub fn resolve(&self, text: &str) -> Result<u32> {
        Ok(self.vocab.resolve_token(text)? as u32)
    }

    /// The next-token distribution after `ids`.
    pub fn distribution(&self, w: &Weights, ids: &[u32]) -> Result<Distribution> {
        let (d, _) = self.start(w, ids)?;
        Ok(d)
    }

    /// Runs the prompt; the distribution and a generator positioned after it.
    fn start(&self, w: &Weights, ids: &[u32]) -> Result<(Distribution, Generator)> {
        let model = self.llama()?;
        let mut cache = KvCache::default();
        let logits = model.forward(
            w,
            ids,
            &mut cache,
            Capture::default(),
            &mut Captured::default(),
        )?;
        let d = Distribution::from_logits(logits.to_vec1::<f32>()?);
        let next = d.top(1)[0];
        Ok((
            d,
            Generator {
                cache,
                next,
                ids: Vec::new(),
            },
        ))
    }

    /// A greedy generator after a prompt (with the prompt's distribution).
    pub fn generator(&self, w: &Weights, ids: &[u32]) -> Result<(Distribution, Generator)> {
        self.start(w, ids)
    }

    /// The generator's next token; `None` at the end of the sequence.
    pub fn step(&self, w: &Weights, g: &mut Generator) -> Result<Option<u32>> {
        let id = g.next;
        if self.is_end(id) {
            return Ok(None);
        }
        g.ids.push(id);
        let model = self.llama()?;
        let logits = match model.step(w, id, &mut g.cache)? {
            Some(logits) => logits,
            None => model
                .forward(
                    w,
                    &[id],
                    &mut g.cache,
                    Capture::default(),
                    &mut Captured::default(),
                )?
                .to_vec1::<f32>()?,
        };
        g.next = argmax(&logits);
        Ok(Some(id))
    }

    fn is_end(&self, id: u32) -> bool {
        match &self.family {
            Family::Llama(c) => c.eos_ids().contains(&id),
            Family::Bert(_) => true,
        }
    }

    /// Top-k, target and continuation of one model.
    fn next_tokens(
        &self,
        w: &Weights,
        ids: &[u32],
        req: &RunRequest,
        target: Option<u32>,
    ) -> Result<(NextTokens, Distribution)> {
        let (d, mut g) = self.start(w, ids)?;
        let continuation = if req.generate > 0 {
            for _ in 0..req.generate {
                if self.step(w, &mut g)?.is_none() {
                    break;
                }
            }
            Some(self.continuation(&g.ids))
        } else {
            None
        };
        let top = d
            .top(req.top_k as usize)
            .into_iter()
            .map(|id| self.token_prob(&d, id))
            .collect();
        let target = target.map(|id| self.target_prob(&d, id));
        Ok((
            NextTokens {
                top,
                target,
                continuation,
            },
            d,
        ))
    }

    pub fn continuation(&self, ids: &[u32]) -> Continuation {
        Continuation {
            ids: ids.to_vec(),
            text: self
                .vocab
                .tokenizer()
                .decode(ids, false)
                .unwrap_or_default(),
        }
    }

    fn token_prob(&self, d: &Distribution, id: u32) -> TokenProb {
        TokenProb {
            id,
            token: self.token_text(id),
            prob: d.prob(id) as f32,
            logit: d.logits[id as usize],
        }
    }

    fn target_prob(&self, d: &Distribution, id: u32) -> TargetProb {
        let p = d.prob(id);
        TargetProb {
            id,
            token: self.token_text(id),
            prob: p as f32,
            log_odds: log_odds(p) as f32,
        }
    }

    /// The prompt on the base and (when anything is edited) the edited weights.
    pub fn compare(
        &self,
        base: &Weights,
        edited: Option<&Weights>,
        req: &RunRequest,
    ) -> Result<RunOutcome> {
        check_request(req)?;
        let ids = self.encode(&req.prompt)?;
        let target = match req.target.as_deref().map(|t| t.trim_end_matches('\n')) {
            Some(t) if !t.is_empty() => Some(self.resolve(t)?),
            _ => None,
        };
        let (base_next, base_d) = self.next_tokens(base, &ids, req, target)?;
        let (edited_next, kl) = match edited.filter(|w| w.is_edited()) {
            Some(w) => {
                let (n, d) = self.next_tokens(w, &ids, req, target)?;
                (Some(n), base_d.kl(&d))
            }
            None => (None, 0.0),
        };
        Ok(RunOutcome {
            family: self.family.name().to_string(),
            prompt_tokens: self.token_refs(&ids),
            base: base_next,
            edited: edited_next,
            kl: kl as f32,
        })
    }

    /// The probe table: each probe's target probability on both sides and the KL between
    /// their next-token distributions. `progress(done, total)` after each probe.
    pub fn probe_table(
        &self,
        base: &Weights,
        edited: &Weights,
        probes: &[Probe],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<ProbeRow>> {
        let mut rows = Vec::with_capacity(probes.len());
        for (i, p) in probes.iter().enumerate() {
            let ids = self.encode(&p.prompt)?;
            let target = if p.target.is_empty() {
                if p.kind != ProbeKind::Unrelated {
                    return Err(Error::Usage(format!(
                        "probe {:?} has no target token (only unrelated probes may omit it)",
                        p.prompt
                    )));
                }
                None
            } else {
                Some(self.resolve(&p.target)?)
            };
            let b = self.distribution(base, &ids)?;
            let e = if edited.is_edited() {
                self.distribution(edited, &ids)?
            } else {
                Distribution {
                    log_probs: b.log_probs.clone(),
                    logits: b.logits.clone(),
                }
            };
            rows.push(ProbeRow {
                prompt: p.prompt.clone(),
                target: p.target.clone(),
                kind: p.kind,
                base_prob: target.map(|t| b.prob(t) as f32),
                edited_prob: target.map(|t| e.prob(t) as f32),
                kl: b.kl(&e) as f32,
                base_top: self.token_text(b.top(1)[0]),
                edited_top: self.token_text(e.top(1)[0]),
            });
            progress(i + 1, probes.len());
        }
        Ok(rows)
    }

    /// What one layer computes for a prompt, and the logit lens of every layer.
    pub fn activations(&self, w: &Weights, req: &ActivationsRequest) -> Result<Activations> {
        let model = self.llama()?;
        let layers = model.config.num_hidden_layers;
        if req.layer as usize >= layers {
            return Err(Error::Usage(format!(
                "layer {} is out of range: the model has layers 0..{}",
                req.layer,
                layers - 1
            )));
        }
        let ids = self.encode(&req.prompt)?;
        let capture = Capture {
            layer: Some(req.layer as usize),
            residuals: true,
        };
        let mut captured = Captured::default();
        model.forward(w, &ids, &mut KvCache::default(), capture, &mut captured)?;
        let (Some(mlp), Some(attention)) = (captured.mlp, captured.attention) else {
            return Err(Error::Internal("the layer was not captured".into()));
        };
        let mlp = matrix(&mlp)?;
        let attention = matrix(&attention)?;
        let top = (req.top.clamp(1, MAX_TOP_K)) as usize;
        let last = &mlp.values[(mlp.rows as usize - 1) * mlp.cols as usize..];
        let mut neurons: Vec<u32> = (0..mlp.cols).collect();
        neurons.sort_by(|a, b| {
            last[*b as usize]
                .abs()
                .total_cmp(&last[*a as usize].abs())
                .then(a.cmp(b))
        });
        let top_neurons = neurons
            .iter()
            .take(top)
            .map(|&n| NeuronHit {
                neuron: n,
                value: last[n as usize],
            })
            .collect();
        let stacked = Tensor::stack(&captured.residuals, 0)?;
        let lens = model.logits(w, &stacked)?.to_vec2::<f32>()?;
        let lens_k = top.min(10);
        let logit_lens = lens
            .into_iter()
            .enumerate()
            .map(|(layer, logits)| {
                let d = Distribution::from_logits(logits);
                LensLayer {
                    layer: layer as u32,
                    top: d
                        .top(lens_k)
                        .into_iter()
                        .map(|id| self.token_prob(&d, id))
                        .collect(),
                }
            })
            .collect();
        let at = |part: &str| format!("model.layers.{}.{part}.weight", req.layer);
        Ok(Activations {
            layer: req.layer,
            tokens: self.token_refs(&ids),
            mlp,
            attention,
            top_neurons,
            logit_lens,
            down_proj: at("mlp.down_proj"),
            up_proj: at("mlp.up_proj"),
            gate_proj: at("mlp.gate_proj"),
            unembedding: model.unembedding_name(w).to_string(),
        })
    }

    /// Sentence embeddings of an encoder on the base and (when edited) the edited weights.
    pub fn embed(
        &self,
        base: &Weights,
        edited: Option<&Weights>,
        sentences: &[String],
    ) -> Result<EmbedOutcome> {
        let Family::Bert(c) = &self.family else {
            return Err(Error::Usage(
                "this is a causal language model: run a prompt instead of embedding sentences"
                    .into(),
            ));
        };
        if sentences.is_empty() {
            return Err(Error::Usage("give at least one sentence".into()));
        }
        let model = bert::Bert { config: c.clone() };
        let ids: Vec<Vec<u32>> = sentences
            .iter()
            .map(|s| self.encode(s))
            .collect::<Result<_>>()?;
        let side = |w: &Weights| -> Result<EmbedSide> {
            let embeddings: Vec<Vec<f32>> = ids
                .iter()
                .map(|i| Ok(model.embed(w, i)?.to_vec1::<f32>()?))
                .collect::<Result<_>>()?;
            let similarity = embeddings
                .iter()
                .map(|a| embeddings.iter().map(|b| dot(a, b)).collect())
                .collect();
            Ok(EmbedSide {
                embeddings,
                similarity,
            })
        };
        Ok(EmbedOutcome {
            family: self.family.name().to_string(),
            base: side(base)?,
            edited: match edited.filter(|w| w.is_edited()) {
                Some(w) => Some(side(w)?),
                None => None,
            },
        })
    }
}

/// Table of a probe run, with the version it reflects.
pub fn probe_table(rows: Vec<ProbeRow>, version: u64) -> ProbeTable {
    ProbeTable { rows, version }
}

fn check_request(req: &RunRequest) -> Result<()> {
    if req.top_k == 0 || req.top_k > MAX_TOP_K {
        return Err(Error::Usage(format!(
            "top-k must be 1..={MAX_TOP_K} (asked {})",
            req.top_k
        )));
    }
    if req.generate > MAX_GENERATE {
        return Err(Error::Usage(format!(
            "a continuation may have at most {MAX_GENERATE} tokens (asked {})",
            req.generate
        )));
    }
    Ok(())
}

fn matrix(t: &Tensor) -> Result<Matrix> {
    let (rows, cols) = t.dims2()?;
    Ok(Matrix {
        rows: rows as u32,
        cols: cols as u32,
        values: t.flatten_all()?.to_vec1::<f32>()?,
    })
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `ln p/(1-p)`, finite at the ends.
fn log_odds(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod distribution_tests {
    use super::*;

    #[test]
    fn distribution_top_k_and_kl() {
        let d = Distribution::from_logits(vec![1.0, 3.0, 2.0, 3.0]);
        assert_eq!(d.top(3), vec![1, 3, 2]);
        let total: f64 = (0..4).map(|i| d.prob(i)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(d.kl(&d), 0.0);
        let e = Distribution::from_logits(vec![3.0, 1.0, 2.0, 3.0]);
        // Hand computation: sum p_i (ln p_i - ln q_i).
        let expect: f64 = (0..4)
            .map(|i| d.prob(i) * (d.prob(i).ln() - e.prob(i).ln()))
            .sum();
        assert!((d.kl(&e) - expect).abs() < 1e-12 && expect > 0.0);
        assert!((log_odds(0.5)).abs() < 1e-12);
        assert!(log_odds(1.0).is_finite());
    }
}
