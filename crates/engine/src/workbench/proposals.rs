//! Agent proposals: edits recorded with the agent's hypothesis that change nothing until a
//! person accepts them (or the server runs with `--agent-auto-apply`). Proposals and their
//! resolution are journaled like edits.

use super::{lock, Workbench};
use crate::error::{Error, Result};
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_core::patch::low_rank;
use tensor_surgeon_core::patch::Origin;
use tensor_surgeon_infer::edit::{FactKnobs, FactOptions};
use tensor_surgeon_store::journal::Record;
use tensor_surgeon_wire::{EditRequest, FactProposal, FactRequest, Proposal, SessionView};

impl Workbench {
    /// Records an agent's edit with its hypothesis: pending, or applied at once when the server
    /// auto-applies agent edits. Returns the proposal (its id) and whether it was applied.
    pub fn propose(&self, req: &EditRequest, hypothesis: &str) -> Result<(Proposal, bool)> {
        self.propose_as(req, agent_origin(hypothesis)?)
    }

    /// Records an edit as a pending proposal from `origin` (an agent's is applied at once
    /// when the server auto-applies agent edits).
    fn propose_as(&self, req: &EditRequest, origin: Origin) -> Result<(Proposal, bool)> {
        self.writable()?;
        self.warm(&req.tensor, Some(&req.spec))?;
        let mut s = lock(&self.session);
        // Planned now so a request that cannot be made fails here, with the UI's message.
        let Some(step) = self.plan_step(&s, req, &origin)? else {
            return Err(Error::Usage(format!(
                "{}[{}]: the edit changes no bytes (the values are already so)",
                req.tensor, req.spec
            )));
        };
        s.last_proposal += 1;
        let id = s.last_proposal;
        let proposal = Proposal {
            id,
            request: req.clone(),
            origin,
            label: step.label.clone(),
            bytes: step.changes.iter().map(|c| c.after.len() as u64).sum(),
        };
        if self.config.agent_auto_apply && proposal.origin.source == "agent" {
            s.apply(step)?;
            return Ok((proposal, true));
        }
        s.journal.append(&Record::Propose(proposal.clone()))?;
        s.pending.push(proposal.clone());
        s.version += 1;
        Ok((proposal, false))
    }

    /// Computes a fact edit (ROME) on the session's weights and records it as an agent's
    /// proposal: a rank-one change of one layer's `down_proj`, with its scores. Like any
    /// proposal it changes nothing until accepted (then it is re-planned on the weights as
    /// they are).
    pub fn propose_fact(
        &self,
        req: &FactRequest,
        knobs: &FactKnobs,
        origin: Origin,
    ) -> Result<FactProposal> {
        self.writable()?;
        let snap = self.snapshot();
        let outcome = self.runs.exclusive(|runner| {
            let opts = FactOptions::tuned(runner.layers()?, knobs)?;
            crate::fact::edit_fact(
                &self.model,
                runner,
                snap.overlay(),
                req,
                &opts,
                origin.clone(),
                &mut |_| {},
            )
        })?;
        let entry = outcome.entry;
        let edit = EditRequest {
            tensor: entry.tensor.clone(),
            spec: String::new(),
            op: Op::LowRank {
                rank: entry.rank,
                u: low_rank::base64(&entry.u),
                v: low_rank::base64(&entry.v),
            },
            saturate: false,
            round: false,
        };
        let (proposal, applied) = self.propose_as(&edit, origin)?;
        Ok(FactProposal {
            proposal,
            applied,
            report: outcome.report,
        })
    }

    /// Accepts (applies, re-planned against the current edits) or rejects a proposal.
    pub fn resolve(&self, id: u64, accept: bool) -> Result<SessionView> {
        self.writable()?;
        let mut s = lock(&self.session);
        let Some(at) = s.pending.iter().position(|p| p.id == id) else {
            return Err(Error::NotFound(format!("no pending proposal {id}")));
        };
        let proposal = s.pending[at].clone();
        let step = if accept {
            self.plan_step(&s, &proposal.request, &proposal.origin)?
        } else {
            None
        };
        // One record: a crash cannot separate the acceptance from its edit.
        s.journal.append(&Record::Resolve {
            id,
            accepted: accept,
            step: step.clone(),
            compact: None,
        })?;
        s.pending.remove(at);
        match step {
            Some(step) => s.commit(step),
            None => s.version += 1,
        }
        drop(s);
        self.session_view()
    }
}

/// An agent's origin: its hypothesis, which it must state.
pub fn agent_origin(hypothesis: &str) -> Result<Origin> {
    if hypothesis.trim().is_empty() {
        return Err(Error::Usage(
            "say what the edit tests: the hypothesis is required".into(),
        ));
    }
    Ok(Origin::agent(hypothesis.trim()))
}

impl Workbench {
    /// Computes a directional ablation on the session's weights and saves it as a patch of
    /// low-rank entries named `save_as` in the patches folder, for a person to load as a layer
    /// (and turn on and off) or leave. Nothing in the session changes. Returns the report and
    /// the saved file's name.
    /// Writes `facts` over `layers` at once (MEMIT) on the session's weights and saves the
    /// update as a patch `save_as` in the patches folder (one low-rank entry per layer); the
    /// session does not change until the patch is loaded. Returns each fact's report (scored
    /// with every layer's update in) and the file's name.
    pub fn edit_facts_to_patch(
        &self,
        facts: &[FactRequest],
        layers: &[usize],
        save_as: &str,
        origin: Origin,
    ) -> Result<(Vec<tensor_surgeon_wire::FactEditReport>, String)> {
        self.writable()?;
        let name = super::plain_file_name(save_as, ".json")?;
        let snap = self.snapshot();
        let outcome = self.runs.exclusive(|runner| {
            crate::fact::edit_facts(
                &self.model,
                runner,
                snap.overlay(),
                facts,
                layers,
                &FactOptions::at_layer(layers.last().copied().unwrap_or(0)),
                None,
                origin.clone(),
                &mut |_, _| {},
            )
        })?;
        let subjects: Vec<&str> = facts.iter().map(|f| f.subject.as_str()).collect();
        let note = format!("MEMIT: {} over layers {layers:?}", subjects.join(", "));
        self.save_low_rank(&name, &note, outcome.entries, &outcome.blocks, &origin)?;
        Ok((outcome.reports, name))
    }

    /// Saves low-rank entries (and a quantized model's block changes) as the patch `name` in
    /// the patches folder.
    fn save_low_rank(
        &self,
        name: &str,
        note: &str,
        entries: Vec<tensor_surgeon_core::patch::LowRankEntry>,
        blocks: &[tensor_surgeon_core::edit::Change],
        origin: &Origin,
    ) -> Result<()> {
        let mut patch = tensor_surgeon_store::patch_files::new_for(&self.model, note);
        crate::blocks::keep(&self.model, &mut patch, entries, blocks, origin)?;
        std::fs::create_dir_all(&self.config.patches_dir)
            .map_err(Error::io(&self.config.patches_dir))?;
        tensor_surgeon_store::patch_files::save(
            &self.config.patches_dir.join(name),
            &patch,
            // A quantized model's blocks go compact when large.
            tensor_surgeon_store::patch_files::Format::Auto,
            Some(&self.model),
        )?;
        Ok(())
    }

    pub fn ablate_to_patch(
        &self,
        req: &tensor_surgeon_wire::AblationRequest,
        search: bool,
        save_as: &str,
        origin: Origin,
    ) -> Result<(tensor_surgeon_wire::AblationReport, String)> {
        self.writable()?;
        let name = super::plain_file_name(save_as, ".json")?;
        let snap = self.snapshot();
        let outcome = self.runs.exclusive(|runner| {
            crate::ablate::ablate(
                &self.model,
                runner,
                snap.overlay(),
                req,
                search,
                origin.clone(),
                &mut |_, _| {},
            )
        })?;
        let r = &outcome.report;
        let note = format!("ablation: layer {}, strength {}", r.layer, r.strength);
        self.save_low_rank(&name, &note, outcome.entries, &outcome.blocks, &origin)?;
        Ok((outcome.report, name))
    }
}
