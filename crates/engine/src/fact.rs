//! A fact edit from goal to patch entry: the edit computed on the weights as they stand (the
//! base with an overlay), kept as a rank-one low-rank entry against the base tensor, and
//! scored with the entry laid over the same weights.

use crate::error::Result;
use std::time::Instant;
use tensor_surgeon_core::edit::Change;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{low_rank, LowRankEntry, Origin};
use tensor_surgeon_infer::edit::{down_proj, FactGoal, FactOptions, FactStep};
use tensor_surgeon_infer::weights::WeightCache;
use tensor_surgeon_infer::RunnableModel;
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{FactEditReport, FactRequest, FactStepRow};

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
    let tensor = runner.stored_name(&down_proj(opts.layer)).to_string();
    // (A layer the model does not have is left to the editor, which says so.)
    if let Ok((_, info)) = model.get(&tensor) {
        if info.blocks.is_none() {
            low_rank::check_dtype(info)?;
        }
    }
    let cache = WeightCache::default();
    let base = runner.weights_in(&cache, model, cache.edited_from_overlay(model, over)?);
    let goal = FactGoal {
        subject: req.subject.clone(),
        prompt: req.prompt.clone(),
        target: req.target.clone(),
    };
    let edit = runner.edit_fact(&base, &goal, opts, on)?;
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
        tensor: name.clone(),
        rank: 1,
        steps: edit
            .steps
            .iter()
            .map(|s| FactStepRow {
                step: s.step as u32,
                loss: s.loss,
                nll: s.nll,
                kl: s.kl,
                p_target: s.p_target,
            })
            .collect(),
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
