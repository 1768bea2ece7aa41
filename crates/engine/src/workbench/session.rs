//! The editing session: edits planned against the current overlay and journaled, undo and
//! redo, the session's patch and its changed elements, saving and baking.

use super::{lock, plain_file_name, Result, Workbench};
use crate::error::Error;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tensor_surgeon_core::dtype::{self, EncodeOptions};
use tensor_surgeon_core::edit::History;
use tensor_surgeon_core::edit::{EditStep, LowRankMark};
use tensor_surgeon_core::patch::{Origin, Patch};
use tensor_surgeon_store::journal::Journal;
use tensor_surgeon_store::journal::Record;
use tensor_surgeon_store::{bake, patch_files};
use tensor_surgeon_wire::{BakeStatus, EditRequest, SessionView};

/// The editing session: the history (which owns the overlay), its journal, the edit version
/// per tensor, and the agents' pending proposals.
pub(super) struct Session {
    pub(super) history: History,
    pub(super) journal: Journal,
    pub(super) version: u64,
    /// The session version at which each tensor last changed (absent: unchanged).
    pub(super) changed_at: HashMap<String, u64>,
    /// Agent proposals waiting for a person to accept or reject them.
    pub(super) pending: Vec<tensor_surgeon_wire::Proposal>,
    /// The last proposal id given out.
    pub(super) last_proposal: u64,
    /// The model's tensors that take no edits (the blocks views of quantized tensors: they
    /// are made from the blocks, not stored), with why.
    pub(super) frozen: HashMap<String, String>,
    /// The block size in bytes of each quantized tensor: its changes are whole blocks.
    pub(super) block_bytes: HashMap<String, u64>,
}

impl Session {
    /// Journals (fsync) then applies a step.
    pub(super) fn apply(&mut self, step: EditStep) -> Result<()> {
        if let Some(why) = step.changes.iter().find_map(|c| self.frozen.get(&c.tensor)) {
            return Err(Error::Usage(why.clone()));
        }
        // A quantized tensor changes by whole blocks (reads decode the edited blocks whole).
        for c in &step.changes {
            if let Some(&size) = self.block_bytes.get(&c.tensor) {
                if !c.offset.is_multiple_of(size) || !(c.after.len() as u64).is_multiple_of(size) {
                    return Err(Error::Usage(format!(
                        "{}: a change of a quantized tensor is whole blocks of {size} bytes; \
                         this one is {} bytes at byte {}",
                        c.tensor,
                        c.after.len(),
                        c.offset
                    )));
                }
            }
        }
        self.journal.append(&Record::Apply(step.clone()))?;
        self.commit(step);
        Ok(())
    }

    /// Applies a step already journaled.
    pub(super) fn commit(&mut self, step: EditStep) {
        let tensors = tensors_of(&step);
        self.history.apply(step);
        self.bump(tensors);
    }

    /// A new version, at which `tensors` changed: caches of exactly those tensors go stale.
    fn bump(&mut self, tensors: BTreeSet<String>) {
        self.version += 1;
        for n in tensors {
            self.changed_at.insert(n, self.version);
        }
        // The change is journaled already: a failed rewrite leaves the old journal as it was.
        if let Err(e) = self.journal.compact_if_stale(&self.history, &self.pending) {
            eprintln!("warning: the edit journal was not compacted: {e}");
        }
    }

    /// The edit version of one tensor (0 while unedited).
    pub(super) fn tensor_version(&self, tensor: &str) -> u64 {
        self.changed_at.get(tensor).copied().unwrap_or(0)
    }
}

/// The tensors a step changes.
fn tensors_of(step: &EditStep) -> BTreeSet<String> {
    step.changes.iter().map(|c| c.tensor.clone()).collect()
}

impl Workbench {
    /// Applies an edit: planned against the current overlay, journaled (fsync), then applied.
    pub fn edit(&self, req: &EditRequest, origin: &Origin) -> Result<SessionView> {
        self.writable()?;
        self.warm(&req.tensor, Some(&req.spec))?;
        let mut session = lock(&self.session);
        if let Some(step) = self.plan_step(&session, req, origin)? {
            session.apply(step)?;
        }
        drop(session);
        self.session_view()
    }

    /// The step an edit request makes against the current overlay (`None`: nothing changes).
    pub(super) fn plan_step(
        &self,
        session: &Session,
        req: &EditRequest,
        origin: &Origin,
    ) -> Result<Option<EditStep>> {
        let (_, info) = self.model.get(&req.tensor)?;
        let sel = tensor_surgeon_store::model::select(&req.tensor, &req.spec, &info.shape)?;
        let bytes = sel
            .elements()
            .saturating_mul(dtype::element_bytes(info.dtype) as u64);
        let what = format!("this edit of {}[{}]", req.tensor, req.spec);
        super::check_step_size(bytes, self.config.max_step_bytes, &what)?;
        let options = EncodeOptions {
            saturate: req.saturate,
            round: req.round,
        };
        let (changes, requantized) = crate::blocks::plan(
            &self.model,
            session.history.overlay(),
            info,
            &sel,
            &req.op,
            options,
        )?;
        if changes.is_empty() {
            return Ok(None);
        }
        let quantized = crate::blocks::label(&requantized);
        let label = format!(
            "{} {}[{}]{quantized} ({})",
            req.op.name(),
            req.tensor,
            req.spec,
            origin.label()
        );
        // A low-rank update of a whole float tensor is kept as its factors (the journal, the
        // session's list of entries).
        let whole = sel.elements() == info.elements() && info.blocks.is_none();
        let low_rank = match (&req.op, whole) {
            (tensor_surgeon_core::edit::Op::LowRank { rank, u, v }, true) => Some(LowRankMark {
                tensor: info.name.clone(),
                rank: *rank,
                u: u.clone(),
                v: v.clone(),
            }),
            _ => None,
        };
        Ok(Some(EditStep {
            label,
            changes,
            origin: origin.clone(),
            layer: None,
            low_rank,
        }))
    }

    /// Undoes the last step.
    pub fn undo(&self) -> Result<SessionView> {
        self.travel(Record::Undo, |_| Ok(()))
    }

    /// Undoes the last applied step for an agent: only a step an agent made, unless agent
    /// edits apply without review (then the agent acts for the person anyway).
    pub fn undo_for_agent(&self) -> Result<SessionView> {
        let auto = self.config.agent_auto_apply;
        self.travel(Record::Undo, |last| match last {
            Some(step) if !auto && step.origin.source != "agent" => Err(Error::Usage(format!(
                "the last edit ({}) was made by {}, not by an agent: an agent may undo only its own edits",
                step.label,
                step.origin.label()
            ))),
            _ => Ok(()),
        })
    }

    /// Redoes the last undone step.
    pub fn redo(&self) -> Result<SessionView> {
        self.travel(Record::Redo, |_| Ok(()))
    }

    /// Moves through the history (journaled first); a no-op at either end. `allow` sees the
    /// last applied step under the same lock, and may refuse.
    fn travel(
        &self,
        record: Record,
        allow: impl FnOnce(Option<&EditStep>) -> Result<()>,
    ) -> Result<SessionView> {
        self.writable()?;
        let mut s = lock(&self.session);
        allow(s.history.applied().last())?;
        let possible = match record {
            Record::Undo => !s.history.applied().is_empty(),
            _ => !s.history.undone().is_empty(),
        };
        if possible {
            s.journal.append(&record)?;
            // The tensors of the step that moved (not of its neighbours in the history).
            let moved = match record {
                Record::Undo => s.history.undo().map(tensors_of),
                _ => s.history.redo().map(tensors_of),
            };
            s.bump(moved.unwrap_or_default());
        }
        drop(s);
        self.session_view()
    }

    /// The session's net changes as a patch against the base.
    pub fn patch(&self, note: &str) -> Result<Patch> {
        let s = lock(&self.session);
        let mut p = patch_files::new_for(&self.model, note);
        p.entries = self.session_entries(&s)?;
        Ok(p)
    }

    /// The session version once it differs from `since`, or when `wait` is up: how a page
    /// learns of changes it did not make (an agent's proposal, another tab) without fetching
    /// and rebuilding the whole session every second.
    pub async fn changed_since(&self, since: u64, wait: std::time::Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let version = lock(&self.session).version;
            if version != since || tokio::time::Instant::now() >= deadline {
                return version;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Saves the session patch as `name` (a plain file name) in the patches folder.
    pub fn save_patch(&self, name: &str, note: &str) -> Result<String> {
        let name = plain_file_name(name, ".json")?;
        let path = self.config.patches_dir.join(name);
        std::fs::create_dir_all(&self.config.patches_dir)
            .map_err(Error::io(&self.config.patches_dir))?;
        // JSON always: the web app loads patches back as text.
        patch_files::save(&path, &self.patch(note)?, patch_files::Format::Json, None)?;
        Ok(path.display().to_string())
    }

    /// Starts a bake of the session patch into the output folder, in the background.
    pub fn start_bake(self: &Arc<Self>, file_name: &str) -> Result<BakeStatus> {
        let suffix = if self.model.is_sharded() {
            ""
        } else {
            ".safetensors"
        };
        let name = plain_file_name(file_name, suffix)?;
        let out = self.config.out_dir.join(name);
        // Everything that can fail at once fails before the bake is marked running.
        std::fs::create_dir_all(&self.config.out_dir).map_err(Error::io(&self.config.out_dir))?;
        let patch = self.patch("baked from the web app")?;
        {
            let mut st = lock(&self.bake);
            if st.running {
                return Err(Error::Usage("a bake is already running".into()));
            }
            *st = BakeStatus {
                running: true,
                done: 0,
                total: self.model.total_bytes(),
                written: Vec::new(),
                error: None,
            };
        }
        let wb = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("bake".into())
            .spawn(move || {
                let status = Arc::clone(&wb.bake);
                // A panic in the bake must not leave it "running" forever (every later bake
                // would be refused): it ends as an error like any other.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    bake::bake(&wb.model, &patch, &out, &mut |done, total| {
                        let mut st = lock(&status);
                        st.done = done;
                        st.total = total;
                    })
                }));
                let mut st = lock(&status);
                st.running = false;
                match result {
                    Ok(Ok(files)) => {
                        st.written = files.iter().map(|p| p.display().to_string()).collect()
                    }
                    Ok(Err(e)) => st.error = Some(e.to_string()),
                    Err(panic) => st.error = Some(crate::panic_message(panic.as_ref())),
                }
            });
        if let Err(e) = spawned {
            let mut st = lock(&self.bake);
            st.running = false;
            let e = Error::Thread {
                what: "bake",
                source: e,
            };
            st.error = Some(e.to_string());
            return Err(e);
        }
        Ok(self.bake_status())
    }

    /// The current bake's progress.
    pub fn bake_status(&self) -> BakeStatus {
        lock(&self.bake).clone()
    }
}
