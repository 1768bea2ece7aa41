//! How a fact edit did: ROME's probe scores on the prompt, paraphrases and neighbours, the KL
//! divergence on unrelated prompts, and a short continuation, base and with the edit.

use crate::llama::KvCache;
use crate::weights::Weights;
use crate::{Result, RunnableModel};
use tensor_surgeon_wire::{
    FactGeneration, FactProbe, FactRequest, FactScores, ProbeGroup, TokenRef,
};

/// Prompts about nothing in particular: the edit should leave their next token alone.
pub const UNRELATED: [&str; 6] = [
    "The weather today is",
    "My favourite food is",
    "Water boils at a temperature of",
    "Once upon a time there was a",
    "The best way to learn a language is",
    "In mathematics, a prime number is",
];

/// Tokens of a continuation shown with each edit.
pub const GENERATE: usize = 12;

impl RunnableModel {
    /// The mean log-probability per token of `target` after `prompt` (teacher-forced).
    pub fn mean_logprob(&self, w: &Weights, prompt: &str, target: &[u32]) -> Result<f64> {
        let model = self.llama()?;
        let mut cache = KvCache::default();
        let mut feed = self.encode(prompt)?;
        let mut total = 0.0;
        for &t in target {
            let d = super::next_after(&model, w, &feed, &mut cache)?;
            total += d.log_probs[t as usize];
            feed = vec![t];
        }
        Ok(total / target.len().max(1) as f64)
    }

    /// The base model's top-1 after `prompt`.
    pub fn top1(&self, w: &Weights, prompt: &str) -> Result<u32> {
        Ok(self.distribution(w, &self.encode(prompt)?)?.top(1)[0])
    }

    /// `n` greedy tokens after `prompt`, as text.
    pub fn greedy_text(&self, w: &Weights, prompt: &str, n: usize) -> Result<String> {
        let (_, mut g) = self.generator(w, &self.encode(prompt)?)?;
        for _ in 0..n {
            if self.step(w, &mut g)?.is_none() {
                break;
            }
        }
        Ok(self.decode_text(&g.ids))
    }

    /// The probe table and scores of an edit (`edited`) against the base, for the new target
    /// `target` and the old answer `old`.
    pub fn fact_probes(
        &self,
        base: &Weights,
        edited: &Weights,
        req: &FactRequest,
        target: &[u32],
        old: u32,
    ) -> Result<(Vec<FactProbe>, FactScores, FactGeneration)> {
        let groups = std::iter::once((ProbeGroup::Prompt, &req.prompt))
            .chain(req.paraphrases.iter().map(|p| (ProbeGroup::Paraphrase, p)))
            .chain(req.neighbors.iter().map(|p| (ProbeGroup::Neighbor, p)));
        let mut probes = Vec::new();
        for (group, prompt) in groups {
            let old = match group {
                ProbeGroup::Neighbor => self.top1(base, prompt)?,
                _ => old,
            };
            probes.push(FactProbe {
                group,
                prompt: prompt.clone(),
                old: TokenRef {
                    id: old,
                    token: self.token_text(old),
                },
                base_new: self.mean_logprob(base, prompt, target)?,
                base_old: self.mean_logprob(base, prompt, &[old])?,
                edited_new: self.mean_logprob(edited, prompt, target)?,
                edited_old: self.mean_logprob(edited, prompt, &[old])?,
            });
        }
        let share = |group: ProbeGroup, wins: fn(&FactProbe) -> bool| -> Option<f64> {
            let rows: Vec<&FactProbe> = probes.iter().filter(|p| p.group == group).collect();
            (!rows.is_empty())
                .then(|| 100.0 * rows.iter().filter(|p| wins(p)).count() as f64 / rows.len() as f64)
        };
        let new_wins = |p: &FactProbe| p.edited_new > p.edited_old;
        let mut kl = 0.0;
        for prompt in UNRELATED {
            let ids = self.encode(prompt)?;
            let a = self.distribution(base, &ids)?;
            let b = self.distribution(edited, &ids)?;
            kl += a.kl(&b);
        }
        let scores = FactScores {
            efficacy: share(ProbeGroup::Prompt, new_wins).unwrap_or(0.0),
            paraphrase: share(ProbeGroup::Paraphrase, new_wins),
            neighborhood: share(ProbeGroup::Neighbor, |p| p.edited_old > p.edited_new),
            unrelated_kl: kl / UNRELATED.len() as f64,
        };
        let generation = FactGeneration {
            base: self.greedy_text(base, &req.prompt, GENERATE)?,
            edited: self.greedy_text(edited, &req.prompt, GENERATE)?,
        };
        Ok((probes, scores, generation))
    }
}
