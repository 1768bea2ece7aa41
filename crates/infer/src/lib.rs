//! Running the model in-process on CPU, on the session's weights (edits included, no bake):
//! next-token distributions and greedy continuations of the base and the edited model side by
//! side, probe tables (efficacy and locality), sentence embeddings of encoders, and the
//! activations and logit lens that point at what to edit.
//!
//! Weights come from a [`TensorSource`] (the store's model: a memory map, shards, or range
//! reads; this crate never asks which) and the edit overlay through [`weights::WeightCache`];
//! the forward passes ([`llama`], [`bert`]) are our own, on candle ops, so they read weights by
//! name and capture what the panels show.

pub mod arch;
pub mod bert;
pub mod blocks;
pub mod config;
mod decode;
mod distribution;
pub mod edit;
pub mod error;
pub mod gguf;
pub mod kernel;
mod kernel_x86;
pub mod llama;
pub mod naming;
pub mod steering;
mod studies;
pub mod tokens;
pub mod trace;
pub mod weights;

pub use crate::error::{InferError, Result};
use crate::tokens::Vocab;
use config::{folder_of, Family, SUPPORTED};
use distribution::log_odds;
pub use distribution::Distribution;
use llama::{Capture, Captured, KvCache, Llama};
use std::sync::Arc;
use tensor_surgeon_core::tensors::TensorSource;
use tensor_surgeon_wire::{
    Continuation, NextTokens, RunInfo, RunOutcome, RunRequest, TargetProb, TokenProb, TokenRef,
};
pub use weights::Edited;
use weights::{WeightCache, Weights};

/// Most tokens a continuation may ask for.
pub const MAX_GENERATE: u32 = 512;
/// Most candidates a top-k may list.
pub const MAX_TOP_K: u32 = 100;

/// A model that can run: its family, tokenizer and weight cache.
pub struct RunnableModel {
    pub family: Family,
    vocab: Arc<Vocab>,
    pub cache: WeightCache,
    /// A GGUF model's tensors under the forward pass's names.
    names: Option<gguf::NameMap>,
    /// The fact editor's key moments by layer, for the weights that make those keys unedited
    /// ([`edit::moment`]).
    moments: edit::moment::Moments,
}

/// A greedy continuation in progress: one token per step, the key/value cache kept.
pub struct Generator {
    cache: KvCache,
    next: u32,
    pub ids: Vec<u32>,
}

impl RunnableModel {
    /// A runner for the model at `model_path`, or why it cannot run.
    pub fn open(model_path: &std::path::Path, vocab: Option<Arc<Vocab>>) -> Result<RunnableModel> {
        let (family, _) = Family::detect(model_path)?;
        let vocab = vocab.ok_or_else(|| {
            InferError::Unsupported(format!(
                "cannot run this model: no tokenizer.json in {} (it turns prompts into token \
                 ids); {SUPPORTED}",
                folder_of(model_path).display()
            ))
        })?;
        Ok(RunnableModel::with_family(family, vocab))
    }

    /// A runner for a model of `family` whose tensors the forward pass names directly.
    pub(crate) fn with_family(family: Family, vocab: Arc<Vocab>) -> RunnableModel {
        RunnableModel {
            family,
            vocab,
            cache: WeightCache::default(),
            names: None,
            moments: Default::default(),
        }
    }

    /// A runner for a GGUF model: everything from its header (`vocab`: its own tokenizer
    /// unless another was named).
    pub fn open_gguf(
        path: &std::path::Path,
        header: &tensor_surgeon_core::gguf::GgufHeader,
        vocab: Option<Arc<Vocab>>,
    ) -> Result<RunnableModel> {
        let (family, names) = gguf::family(header)?;
        let vocab = match vocab {
            Some(v) => v,
            None => Arc::new(Vocab::from_gguf(path, header)?),
        };
        Ok(RunnableModel {
            family,
            vocab,
            cache: WeightCache::default(),
            names: Some(names),
            moments: Default::default(),
        })
    }

    /// The forward pass's name of a model tensor (a GGUF's names differ).
    pub fn run_name<'n>(&'n self, model_name: &'n str) -> &'n str {
        match &self.names {
            Some(m) => m.run_name(model_name).unwrap_or(model_name),
            None => model_name,
        }
    }

    /// What the run panel needs to know.
    pub fn info(&self, edited_tensors: usize) -> RunInfo {
        let (layers, intermediate, hidden, vocab) = match &self.family {
            Family::Llama(a) => (a.depth(), a.intermediate, a.hidden, a.vocab),
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
    pub fn weights<'a>(&'a self, model: &'a dyn TensorSource, edited: Edited) -> Weights<'a> {
        self.cache.weights_of(
            gguf::RunSource {
                inner: model,
                names: self.names.as_ref(),
            },
            edited,
        )
    }

    /// [`RunnableModel::weights`] through a cache of the caller's own (a study comparing
    /// edits keeps its versions apart from the session's).
    pub fn weights_in<'a>(
        &'a self,
        cache: &'a weights::WeightCache,
        model: &'a dyn TensorSource,
        edited: Edited,
    ) -> Weights<'a> {
        cache.weights_of(
            gguf::RunSource {
                inner: model,
                names: self.names.as_ref(),
            },
            edited,
        )
    }

    /// The model's own name of the forward pass's tensor `name` (a GGUF's
    /// `blk.6.ffn_down.weight` for `model.layers.6.mlp.down_proj.weight`): what edits name.
    pub fn stored_name<'n>(&'n self, name: &'n str) -> &'n str {
        match &self.names {
            Some(m) => m.source_name(name),
            None => name,
        }
    }

    /// The description of a decoder's layers (`None` for an encoder).
    pub fn architecture(&self) -> Option<&arch::Architecture> {
        match &self.family {
            Family::Llama(a) => Some(a),
            Family::Bert(_) => None,
        }
    }

    /// The model's own name (what edits and views name) of the tensor `part` of the
    /// description names, for a study's report.
    pub fn model_name(&self, name: &str) -> String {
        self.stored_name(name).to_string()
    }

    pub(crate) fn llama(&self) -> Result<Llama> {
        match &self.family {
            Family::Llama(a) => Ok(Llama {
                arch: Arc::clone(a),
            }),
            Family::Bert(_) => Err(InferError::Request(
                "this is an encoder (BERT): it embeds sentences, it does not predict tokens".into(),
            )),
        }
    }

    /// Token ids of a prompt, as the model's tokenizer makes them (its special tokens too).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .encode_spans(text)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Token ids of a prompt with the byte range of the text each stands for (empty for
    /// special tokens).
    pub fn encode_spans(&self, text: &str) -> Result<Vec<(u32, std::ops::Range<usize>)>> {
        if text.is_empty() {
            return Err(InferError::Request("the prompt is empty".into()));
        }
        let enc = self
            .vocab
            .tokenizer()
            .encode(text, true)
            .map_err(|e| InferError::Request(format!("cannot tokenize the prompt: {e}")))?;
        // A tokenizer.json may pad to a fixed length: padding is not part of the text.
        let ids: Vec<(u32, std::ops::Range<usize>)> = enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .zip(enc.get_attention_mask())
            .filter(|(_, &m)| m == 1)
            .map(|((&id, &(a, b)), _)| (id, a..b))
            .collect();
        if ids.is_empty() {
            return Err(InferError::Request(format!("{text:?} has no tokens")));
        }
        Ok(ids)
    }

    /// The number of decoder layers (causal language models).
    pub fn layers(&self) -> Result<usize> {
        Ok(self.llama()?.arch.depth())
    }

    /// Token ids of a text without the tokenizer's special tokens (a continuation's).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .vocab
            .tokenizer()
            .encode(text, false)
            .map_err(|e| InferError::Request(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of token ids, special tokens left out.
    pub fn decode_text(&self, ids: &[u32]) -> String {
        self.vocab.tokenizer().decode(ids, true).unwrap_or_default()
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
            Family::Llama(a) => a.eos.contains(&id),
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
}

fn check_request(req: &RunRequest) -> Result<()> {
    if req.top_k == 0 || req.top_k > MAX_TOP_K {
        return Err(InferError::Request(format!(
            "top-k must be 1..={MAX_TOP_K} (asked {})",
            req.top_k
        )));
    }
    if req.generate > MAX_GENERATE {
        return Err(InferError::Request(format!(
            "a continuation may have at most {MAX_GENERATE} tokens (asked {})",
            req.generate
        )));
    }
    Ok(())
}

pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod family_tests;
#[cfg(test)]
mod tests;
