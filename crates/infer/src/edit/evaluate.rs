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
    /// After `prompt`: the mean log-probability per token of `target` (teacher-forced), and
    /// the answer `old` (the top-1 when `None`) with its log-probability; one pass over the
    /// prompt serves both.
    fn answer_scores(
        &self,
        w: &Weights,
        prompt: &str,
        target: &[u32],
        old: Option<u32>,
    ) -> Result<(f64, u32, f64)> {
        let model = self.llama()?;
        let mut cache = KvCache::default();
        let first = super::next_after(&model, w, &self.encode(prompt)?, &mut cache)?;
        let old = old.unwrap_or_else(|| first.top(1)[0]);
        let mut total = 0.0;
        for (i, &t) in target.iter().enumerate() {
            total += if i == 0 {
                first.log_probs[t as usize]
            } else {
                let d = super::next_after(&model, w, &[target[i - 1]], &mut cache)?;
                d.log_probs[t as usize]
            };
        }
        let new = total / target.len().max(1) as f64;
        Ok((new, old, first.log_probs[old as usize]))
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
    /// `target`. The old answer is the base's top-1 after the prompt (for a neighbour, after
    /// the neighbour); the prompt's row comes first.
    pub fn fact_probes(
        &self,
        base: &Weights,
        edited: &Weights,
        req: &FactRequest,
        target: &[u32],
    ) -> Result<(Vec<FactProbe>, FactScores, FactGeneration)> {
        let groups = std::iter::once((ProbeGroup::Prompt, &req.prompt))
            .chain(req.paraphrases.iter().map(|p| (ProbeGroup::Paraphrase, p)))
            .chain(req.neighbors.iter().map(|p| (ProbeGroup::Neighbor, p)));
        let mut probes: Vec<FactProbe> = Vec::new();
        for (group, prompt) in groups {
            let known = match group {
                ProbeGroup::Paraphrase => probes.first().map(|p| p.old.id),
                _ => None,
            };
            let (base_new, old, base_old) = self.answer_scores(base, prompt, target, known)?;
            let (edited_new, _, edited_old) =
                self.answer_scores(edited, prompt, target, Some(old))?;
            probes.push(FactProbe {
                group,
                prompt: prompt.clone(),
                old: TokenRef {
                    id: old,
                    token: self.token_text(old),
                },
                base_new,
                base_old,
                edited_new,
                edited_old,
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
