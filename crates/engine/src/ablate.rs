//! Directional ablation from two prompt lists to patch entries: the direction, the rank-one
//! change of every matrix that writes to the residual stream (one low-rank entry each), and the
//! behaviour and KL before and after; with a search, the best (layer, strength) of a grid.

use crate::error::{Error, Result};
use std::time::Instant;
use tensor_surgeon_core::edit::Change;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{LowRankEntry, Origin};
use tensor_surgeon_infer::weights::{WeightCache, Weights};
use tensor_surgeon_infer::RunnableModel;
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{AblationReport, AblationRequest, AblationTrial, BaseEdited, Continued};

/// The largest KL (nats, on the second list) a searched candidate may cost.
pub const SEARCH_KL: f64 = 0.1;
/// The strengths a search tries at each layer.
pub const SEARCH_STRENGTHS: [f64; 2] = [0.5, 1.0];

/// A computed ablation: its entries, the weights with them laid on, and how it did.
pub struct AblationOutcome {
    pub entries: Vec<LowRankEntry>,
    /// Quantized tensors' block changes (their values quantized again), kept as bytes.
    pub blocks: Vec<Change>,
    pub overlay: Overlay,
    pub report: AblationReport,
}

/// One candidate, made and measured.
struct Candidate {
    layer: usize,
    strength: f64,
    entries: Vec<LowRankEntry>,
    blocks: Vec<Change>,
    overlay: Overlay,
    marker_rate: Option<BaseEdited>,
    token_prob: Option<BaseEdited>,
    kl: f64,
    continuations: Vec<Continued>,
    norm: f64,
}

impl Candidate {
    /// The behaviour measure after ablation: the marker rate, else the tokens' probability.
    fn behaviour(&self) -> f64 {
        self.marker_rate
            .as_ref()
            .or(self.token_prob.as_ref())
            .map_or(0.0, |m| m.edited)
    }
}

/// Ablates on `model` seen through `over`; with `search`, tries a grid of layers (a quarter to
/// three quarters of the way up) and [`SEARCH_STRENGTHS`], and keeps the candidate with the
/// least behaviour whose KL is at most [`SEARCH_KL`] (else the least KL).
pub fn ablate(
    model: &Model,
    runner: &RunnableModel,
    over: &Overlay,
    req: &AblationRequest,
    search: bool,
    origin: Origin,
    on: &mut dyn FnMut(usize, usize),
) -> Result<AblationOutcome> {
    let started = Instant::now();
    if req.from.len() < 2 || req.to.is_empty() {
        return Err(Error::Usage(
            "give at least two prompts that show the behaviour (half make the direction, half \
             measure it) and one that does not"
                .into(),
        ));
    }
    if search && req.markers.is_empty() && req.tokens.is_empty() {
        return Err(Error::Usage(
            "a search needs a behaviour to measure: give markers or tokens".into(),
        ));
    }
    if !(req.strength.is_finite() && req.strength > 0.0) {
        return Err(Error::Usage(format!(
            "strength {} is not a positive number",
            req.strength
        )));
    }
    let cache = WeightCache::default();
    let base = runner.weights_in(&cache, model, cache.edited_from_overlay(model, over)?);
    let layers = runner.layers()?;
    let make: Vec<String> = req.from.iter().step_by(2).cloned().collect();
    let held: Vec<String> = req.from.iter().skip(1).step_by(2).cloned().collect();
    let tokens = req
        .tokens
        .iter()
        .map(|t| runner.resolve(t))
        .collect::<std::result::Result<Vec<u32>, _>>()?;
    let candidates: Vec<(usize, f64)> = if search {
        let step = (layers / 10).max(1);
        (layers / 4..=(3 * layers / 4).min(layers - 1))
            .step_by(step)
            .flat_map(|l| SEARCH_STRENGTHS.map(|s| (l, s)))
            .collect()
    } else {
        let layer = req.layer.map_or(layers / 2, |l| l as usize);
        vec![(layer, req.strength)]
    };
    let probe = Probe {
        model,
        runner,
        base: &base,
        over,
        req,
        make: &make,
        held: &held,
        tokens: &tokens,
        origin: &origin,
    };
    let mut tried = Vec::new();
    let mut best: Option<Candidate> = None;
    for (i, &(layer, strength)) in candidates.iter().enumerate() {
        on(i, candidates.len());
        let c = probe.candidate(layer, strength)?;
        tried.push(AblationTrial {
            layer: layer as u32,
            strength,
            behaviour: c.behaviour(),
            kl: c.kl,
        });
        // Within the KL bound, the least behaviour; past it, the least KL.
        let key = |x: &Candidate| {
            let over = x.kl > SEARCH_KL;
            (over, if over { x.kl } else { x.behaviour() })
        };
        let better = best
            .as_ref()
            .is_none_or(|b| key(&c).partial_cmp(&key(b)) == Some(std::cmp::Ordering::Less));
        if better {
            best = Some(c);
        }
    }
    let c = best.ok_or_else(|| Error::Internal("no candidate".into()))?;
    let changed_bytes = c
        .overlay
        .tensors()
        .flat_map(|(_, runs)| runs.runs().map(|(_, r)| r.len() as u64))
        .sum();
    let report = AblationReport {
        layer: c.layer as u32,
        strength: c.strength,
        direction_norm: c.norm,
        held_out: held.len() as u32,
        marker_rate: c.marker_rate,
        token_prob: c.token_prob,
        kl: c.kl,
        continuations: c.continuations,
        // One low-rank entry per matrix (a quantized one's applied as its blocks).
        entries: c.entries.len() as u32,
        factor_bytes: c
            .entries
            .iter()
            .map(|e| (e.u.len() + e.v.len()) as u64)
            .sum(),
        changed_bytes,
        tried: if search { tried } else { Vec::new() },
        seconds: started.elapsed().as_secs_f64(),
    };
    let mut overlay = over.clone();
    for (name, runs) in c.overlay.tensors() {
        for (start, run) in runs.runs() {
            overlay.write(name, start, run);
        }
    }
    Ok(AblationOutcome {
        entries: c.entries,
        blocks: c.blocks,
        overlay,
        report,
    })
}

/// What every candidate is made from and measured on.
struct Probe<'a> {
    model: &'a Model,
    runner: &'a RunnableModel,
    base: &'a Weights<'a>,
    over: &'a Overlay,
    req: &'a AblationRequest,
    make: &'a [String],
    held: &'a [String],
    tokens: &'a [u32],
    origin: &'a Origin,
}

impl Probe<'_> {
    fn candidate(&self, layer: usize, strength: f64) -> Result<Candidate> {
        let (runner, model, req) = (self.runner, self.model, self.req);
        let (r, norm) = runner.direction(self.base, self.make, &req.to, layer)?;
        let mut entries = Vec::new();
        // The ablation's own byte runs (over `over`), and the weights with both.
        let mut own = Overlay::default();
        let mut both = self.over.clone();
        let mut blocks = Vec::new();
        for a in runner.ablation(self.base, &r, strength as f32, req.embedding)? {
            let name = runner.stored_name(&a.tensor);
            let update = crate::blocks::low_rank_update(
                model,
                self.over,
                name,
                (1, &a.u, &a.v),
                Some(self.origin.clone()),
            )?;
            for c in &update.entries {
                own.write(&c.tensor, c.offset, &c.patched);
                both.write(&c.tensor, c.offset, &c.patched);
            }
            // A quantized tensor is applied as its blocks, its factors kept beside them.
            entries.push(update.entry);
            blocks.extend(update.blocks);
        }
        let cache = WeightCache::default();
        let edited = runner.weights_in(&cache, model, cache.edited_from_overlay(model, &both)?);
        let generate = req.generate as usize;
        let continuations = self
            .held
            .iter()
            .map(|p| {
                Ok(Continued {
                    prompt: p.clone(),
                    base: runner.greedy_text(self.base, p, generate)?,
                    edited: runner.greedy_text(&edited, p, generate)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let marker_rate = (!req.markers.is_empty()).then(|| {
            let rate = |text: fn(&Continued) -> &str| {
                let hits = continuations
                    .iter()
                    .filter(|c| {
                        let lower = text(c).to_lowercase();
                        req.markers
                            .iter()
                            .any(|m| lower.contains(&m.to_lowercase()))
                    })
                    .count();
                100.0 * hits as f64 / continuations.len() as f64
            };
            BaseEdited {
                base: rate(|c| &c.base),
                edited: rate(|c| &c.edited),
            }
        });
        let token_prob = if self.tokens.is_empty() {
            None
        } else {
            let mean = |w: &Weights| -> Result<f64> {
                let mut total = 0.0;
                for p in self.held {
                    let d = runner.distribution(w, &runner.encode(p)?)?;
                    total += self.tokens.iter().map(|&t| d.prob(t)).sum::<f64>();
                }
                Ok(total / self.held.len() as f64)
            };
            Some(BaseEdited {
                base: mean(self.base)?,
                edited: mean(&edited)?,
            })
        };
        let kl = runner.mean_kl(self.base, &edited, &req.to)?;
        Ok(Candidate {
            layer,
            strength,
            entries,
            blocks,
            overlay: own,
            marker_rate,
            token_prob,
            kl,
            continuations,
            norm,
        })
    }
}
