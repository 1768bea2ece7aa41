//! A fact edit from goal to patch entry: the edit computed on the weights as they stand (the
//! base with an overlay), kept as a rank-one low-rank entry against the base tensor, and
//! scored with the entry laid over the same weights.

use crate::error::{Error, Result};
use std::time::Instant;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{LowRankEntry, Origin};
use tensor_surgeon_core::tensors::TensorSource;
use tensor_surgeon_infer::edit::{FactGoal, FactOptions, FactStep};
use tensor_surgeon_infer::weights::WeightCache;
use tensor_surgeon_infer::RunnableModel;
use tensor_surgeon_wire::{FactEditReport, FactRequest, FactStepRow, TokenRef};

/// A computed fact edit: the patch entry and how it did.
pub struct FactOutcome {
    pub entry: LowRankEntry,
    /// The byte runs the entry makes over the weights it was computed on.
    pub overlay: Overlay,
    pub report: FactEditReport,
}

/// Computes the edit of `req` at `opts.layer` on `model` seen through `over`; `on` hears of
/// every optimisation step.
pub fn edit_fact(
    model: &dyn TensorSource,
    runner: &RunnableModel,
    over: &Overlay,
    req: &FactRequest,
    opts: &FactOptions,
    origin: Origin,
    on: &mut dyn FnMut(&FactStep),
) -> Result<FactOutcome> {
    let started = Instant::now();
    let cache = WeightCache::default();
    let base = cache.weights(model, cache.edited_from_overlay(model, over)?);
    let goal = FactGoal {
        subject: req.subject.clone(),
        prompt: req.prompt.clone(),
        target: req.target.clone(),
    };
    let edit = runner.edit_fact(&base, &goal, opts, on)?;
    let info = model
        .info(&edit.tensor)
        .ok_or_else(|| Error::Internal(format!("the model has no {}", edit.tensor)))?
        .clone();
    let bytes = model.bytes(&edit.tensor).map_err(|source| {
        Error::from(tensor_surgeon_infer::InferError::Read {
            tensor: edit.tensor.clone(),
            source,
        })
    })?;
    let entry = LowRankEntry::new(&info, &bytes, 1, &edit.u, &edit.v, Some(origin))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let view = over.view(&edit.tensor, &*bytes);
    let (changes, _) = entry
        .to_entries(&info, &view)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut overlay = Overlay::default();
    for c in &changes {
        overlay.write(&c.tensor, c.offset, &c.patched);
    }
    let mut both = over.clone();
    for c in &changes {
        both.write(&c.tensor, c.offset, &c.patched);
    }
    let cache = WeightCache::default();
    let edited = cache.weights(model, cache.edited_from_overlay(model, &both)?);
    let old = runner.top1(&base, &req.prompt)?;
    let (probes, scores, generation) =
        runner.fact_probes(&base, &edited, req, &edit.target, old)?;
    let report = FactEditReport {
        subject: req.subject.clone(),
        prompt: req.prompt.clone(),
        target: runner.token_refs(&edit.target),
        old: TokenRef {
            id: old,
            token: runner.token_text(old),
        },
        layer: edit.layer as u32,
        tensor: edit.tensor.clone(),
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
        overlay,
        report,
    })
}
