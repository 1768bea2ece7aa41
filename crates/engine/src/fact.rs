//! A fact edit from goal to patch entry: the edit computed on the weights as they stand (the
//! base with an overlay), kept as a rank-one low-rank entry against the base tensor, and
//! scored with the entry laid over the same weights.

use crate::error::Result;
use std::time::Instant;
use tensor_surgeon_core::edit::Change;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{low_rank, LowRankEntry, Origin};
use tensor_surgeon_infer::edit::memit::default_update_weight;
use tensor_surgeon_infer::edit::{FactGoal, FactOptions, FactStep};
use tensor_surgeon_infer::weights::WeightCache;
use tensor_surgeon_infer::RunnableModel;
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{FactEditReport, FactRequest, FactStepRow};

/// What a caller sets of a fact edit (layer, clamp, KL weight), the rest defaults.
pub use tensor_surgeon_infer::edit::FactKnobs;

/// A computed fact edit: the patch entry and how it did.
pub struct FactOutcome {
    pub entry: LowRankEntry,
    /// For a quantized tensor, the changes of its blocks the entry makes (quantized again
    /// from the edited values): what a patch keeps, since a low-rank entry names float bytes.
    /// Empty for a float tensor.
    pub blocks: Vec<Change>,
    /// The weights it was computed on (`over`) with the entry laid on, as byte runs.
    pub overlay: Overlay,
    pub report: FactEditReport,
}

/// Computes the edit of `req` at `opts.layer` on `model` seen through `over`; `on` hears of
/// every optimisation step.
pub fn edit_fact(
    model: &Model,
    runner: &RunnableModel,
    over: &Overlay,
    req: &FactRequest,
    opts: &FactOptions,
    origin: Origin,
    on: &mut dyn FnMut(&FactStep),
) -> Result<FactOutcome> {
    let started = Instant::now();
    // A tensor a low-rank entry cannot hold is refused before the optimisation runs.
    let tensor = runner.fact_matrix(opts.layer)?;
    // (A layer the model does not have is left to the editor, which says so.)
    if let Ok((_, info)) = model.get(&tensor) {
        if info.blocks.is_none() {
            low_rank::check_dtype(info)?;
        }
    }
    let cache = WeightCache::default();
    let base = runner.weights_in(&cache, model, cache.edited_from_overlay(model, over)?);
    let edit = runner.edit_fact(&base, &goal_of(req), opts, on)?;
    // The model's name of the tensor (a GGUF names it its own way).
    let name = runner.stored_name(&edit.tensor).to_string();
    let update =
        crate::blocks::low_rank_update(model, over, &name, (1, &edit.u, &edit.v), Some(origin))?;
    let (entry, changes, blocks) = (update.entry, update.entries, update.blocks);
    let mut overlay = over.clone();
    for c in &changes {
        overlay.write(&c.tensor, c.offset, &c.patched);
    }
    // A cache of its own: the first one keys the tensors `over` edits by the same version.
    let cache = WeightCache::default();
    let edited = runner.weights_in(&cache, model, cache.edited_from_overlay(model, &overlay)?);
    let (probes, scores, generation) = runner.fact_probes(&base, &edited, req, &edit.target)?;
    let old = probes[0].old.clone();
    let report = FactEditReport {
        subject: req.subject.clone(),
        prompt: req.prompt.clone(),
        target: runner.token_refs(&edit.target),
        old,
        layer: edit.layer as u32,
        layers: Vec::new(),
        tensor: name.clone(),
        rank: 1,
        steps: step_rows(&edit.steps),
        probes,
        scores,
        generation,
        factor_bytes: (entry.u.len() + entry.v.len()) as u64,
        changed_bytes: changes.iter().map(|c| c.patched.len() as u64).sum(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(FactOutcome {
        entry,
        blocks,
        overlay,
        report,
    })
}

fn goal_of(req: &FactRequest) -> FactGoal {
    FactGoal {
        subject: req.subject.clone(),
        prompt: req.prompt.clone(),
        target: req.target.clone(),
    }
}

fn step_rows(steps: &[FactStep]) -> Vec<FactStepRow> {
    steps
        .iter()
        .map(|s| FactStepRow {
            step: s.step as u32,
            loss: s.loss,
            nll: s.nll,
            kl: s.kl,
            p_target: s.p_target,
        })
        .collect()
}

/// Several facts computed at once (MEMIT): the entries, one per layer.
pub struct FactsOutcome {
    /// One low-rank entry per layer, of rank the number of facts (a quantized tensor's
    /// against its values as F32).
    pub entries: Vec<LowRankEntry>,
    /// A quantized model's block changes (what its entries are applied as).
    pub blocks: Vec<Change>,
    /// `over` with every layer's update laid on.
    pub overlay: Overlay,
    /// Each fact's report, scored with all the updates in.
    pub reports: Vec<FactEditReport>,
}

/// Writes `reqs` into the `down_proj`s of `layers` at once (MEMIT, see
/// `tensor_surgeon_infer::edit::memit`) on `model` seen through `over`; `weight` is `λ`
/// (default: MEMIT's, scaled to the key width). `on` hears of every optimisation step, with
/// the index of its fact.
#[allow(clippy::too_many_arguments)]
pub fn edit_facts(
    model: &Model,
    runner: &RunnableModel,
    over: &Overlay,
    reqs: &[FactRequest],
    layers: &[usize],
    opts: &FactOptions,
    weight: Option<f64>,
    origin: Origin,
    on: &mut dyn FnMut(usize, &FactStep),
) -> Result<FactsOutcome> {
    let started = Instant::now();
    let mut layers = layers.to_vec();
    layers.sort_unstable();
    layers.dedup();
    let (Some(&last), false) = (layers.last(), reqs.is_empty()) else {
        return Err(crate::Error::Usage(
            "MEMIT needs at least one fact and one layer".into(),
        ));
    };
    runner.check_memit_layers(&layers)?;
    for &l in &layers {
        if let Ok((_, info)) = model.get(&runner.fact_matrix(l)?) {
            if info.blocks.is_none() {
                low_rank::check_dtype(info)?;
            }
        }
    }
    let cache = WeightCache::default();
    let base = runner.weights_in(&cache, model, cache.edited_from_overlay(model, over)?);
    // 1. Each fact's goal at the last layer: z = h + δ.
    let at_last = FactOptions {
        layer: last,
        ..opts.clone()
    };
    let mut facts = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let goal = goal_of(req);
        let d = runner.fact_delta(&base, &goal, &at_last, &mut |s| on(i, s))?;
        let at = runner.fact_state(&base, &goal, &d.contexts, last, last)?;
        let change = runner.residual_change(&base, last, &at.down, &d.delta)?;
        let z: Vec<f32> = at.h.iter().zip(&change).map(|(a, b)| a + b).collect();
        facts.push((goal, d, z));
    }
    // 2. Layer by layer, each taking its share of what is left.
    let mut overlay = over.clone();
    let (mut entries, mut blocks) = (Vec::new(), Vec::new());
    let mut changed_bytes = 0u64;
    for (done, &layer) in layers.iter().enumerate() {
        let cache = WeightCache::default();
        let w = runner.weights_in(&cache, model, cache.edited_from_overlay(model, &overlay)?);
        let left = (layers.len() - done) as f32;
        let (mut keys, mut resid) = (Vec::new(), Vec::new());
        for (goal, d, z) in &facts {
            let at = runner.fact_state(&w, goal, &d.contexts, layer, last)?;
            let share = z.iter().zip(&at.h).map(|(z, h)| (z - h) / left).collect();
            resid.push(runner.down_change(&w, layer, &at.down, share)?);
            keys.push(at.key);
        }
        let lambda = weight.unwrap_or_else(|| default_update_weight(keys[0].len()));
        let (u, v) = runner.memit_factors(&w, layer, &keys, &resid, opts.covariance, lambda)?;
        let name = runner.fact_matrix(layer)?;
        let rank = facts.len() as u32;
        let update = crate::blocks::low_rank_update(
            model,
            &overlay,
            &name,
            (rank, &u, &v),
            Some(origin.clone()),
        )?;
        for c in &update.entries {
            overlay.write(&c.tensor, c.offset, &c.patched);
            changed_bytes += c.patched.len() as u64;
        }
        // A quantized tensor is applied as its blocks, its factors kept beside them.
        entries.push(update.entry);
        blocks.extend(update.blocks);
    }
    // 3. Every fact scored with all the updates in.
    let cache = WeightCache::default();
    let edited = runner.weights_in(&cache, model, cache.edited_from_overlay(model, &overlay)?);
    let factor_bytes = entries.iter().map(|e| (e.u.len() + e.v.len()) as u64).sum();
    let mut reports = Vec::new();
    for (req, (_, d, _)) in reqs.iter().zip(&facts) {
        let (probes, scores, generation) = runner.fact_probes(&base, &edited, req, &d.target)?;
        reports.push(FactEditReport {
            subject: req.subject.clone(),
            prompt: req.prompt.clone(),
            target: runner.token_refs(&d.target),
            old: probes[0].old.clone(),
            layer: last as u32,
            layers: layers.iter().map(|&l| l as u32).collect(),
            tensor: runner.fact_matrix(last)?,
            rank: facts.len() as u32,
            steps: step_rows(&d.steps),
            probes,
            scores,
            generation,
            factor_bytes,
            changed_bytes,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(FactsOutcome {
        entries,
        blocks,
        overlay,
        reports,
    })
}
