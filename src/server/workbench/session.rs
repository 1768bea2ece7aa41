//! The editing session: edits planned against the current overlay and journaled, undo and
//! redo, the session's patch and its changed elements, saving and baking.

use super::{lock, plain_file_name, Result, Session, Workbench, ENTRY_LIMIT};
use crate::api::{BakeStatus, EditRequest, EntryRow, SessionView};
use crate::dtype::{self, EncodeOptions};
use crate::edit::{self, EditStep};
use crate::patch::{self, Origin, OriginMap, Patch};
use crate::server::error::Error;
use crate::server::journal::Record;
use crate::server::{bake, patches};
use crate::slice::SliceSpec;
use std::sync::Arc;

impl Workbench {
    /// Applies an edit: planned against the current overlay, journaled (fsync), then applied.
    pub fn edit(&self, req: &EditRequest, origin: &Origin) -> Result<SessionView> {
        self.writable()?;
        let mut session = lock(&self.session);
        if let Some(step) = self.plan_step(&session, req, origin)? {
            session.apply(step)?;
        }
        drop(session);
        Ok(self.session_view())
    }

    /// The step an edit request makes against the current overlay (`None`: nothing changes).
    pub(super) fn plan_step(
        &self,
        session: &Session,
        req: &EditRequest,
        origin: &Origin,
    ) -> Result<Option<EditStep>> {
        let (shard, info) = self.model.get(&req.tensor)?;
        let sel = SliceSpec::parse(&req.spec)
            .and_then(|s| s.resolve(&info.shape))
            .map_err(|source| Error::Slice {
                tensor: req.tensor.clone(),
                source,
            })?;
        let options = EncodeOptions {
            saturate: req.saturate,
            round: req.round,
        };
        let changes = {
            let source = session.history.overlay().view(&info.name, shard.data(info));
            edit::plan(info, &sel, &source, &req.op, options)?
        };
        if changes.is_empty() {
            return Ok(None);
        }
        let label = format!(
            "{} {}[{}] ({})",
            op_name(&req.op),
            req.tensor,
            req.spec,
            origin.label()
        );
        Ok(Some(EditStep {
            label,
            changes,
            origin: origin.clone(),
            layer: None,
        }))
    }

    /// Undoes the last step.
    pub fn undo(&self) -> Result<SessionView> {
        self.travel(Record::Undo)
    }

    /// Redoes the last undone step.
    pub fn redo(&self) -> Result<SessionView> {
        self.travel(Record::Redo)
    }

    /// Moves through the history (journaled first); a no-op at either end.
    fn travel(&self, record: Record) -> Result<SessionView> {
        self.writable()?;
        let mut s = lock(&self.session);
        let possible = match record {
            Record::Undo => !s.history.applied().is_empty(),
            _ => !s.history.undone().is_empty(),
        };
        if possible {
            s.journal.append(&record)?;
            match record {
                Record::Undo => s.history.undo(),
                _ => s.history.redo(),
            };
            s.bump();
        }
        drop(s);
        Ok(self.session_view())
    }

    /// The session's net changes as a patch against the base.
    pub fn patch(&self, note: &str) -> Patch {
        let s = lock(&self.session);
        let mut p = patches::new_for(&self.model, note);
        p.entries = self.session_entries(&s);
        p
    }

    /// Changed elements and history.
    pub fn session_view(&self) -> SessionView {
        let s = lock(&self.session);
        let entries = self.session_entries(&s);
        let mut rows = Vec::new();
        let mut total = 0u64;
        for e in &entries {
            let Ok((_, info)) = self.model.get(&e.tensor) else {
                continue;
            };
            let width = dtype::element_bytes(info.dtype);
            if dtype::is_packed(info.dtype) {
                total += e.patched.len() as u64;
                if rows.len() < ENTRY_LIMIT {
                    let (_, index) = patch::element_of(info, e.offset);
                    rows.push(EntryRow {
                        tensor: e.tensor.clone(),
                        index,
                        old_value: hex::encode(&e.original),
                        new_value: hex::encode(&e.patched),
                        old_hex: hex::encode(&e.original),
                        new_hex: hex::encode(&e.patched),
                        origin: e.origin.as_ref().map(Origin::label).unwrap_or_default(),
                    });
                }
                continue;
            }
            for k in 0..e.patched.len() / width {
                total += 1;
                if rows.len() >= ENTRY_LIMIT {
                    continue;
                }
                let (old, new) = (
                    &e.original[k * width..(k + 1) * width],
                    &e.patched[k * width..(k + 1) * width],
                );
                let (_, index) = patch::element_of(info, e.offset + (k * width) as u64);
                rows.push(EntryRow {
                    tensor: e.tensor.clone(),
                    index,
                    old_value: dtype::format_element(info.dtype, old),
                    new_value: dtype::format_element(info.dtype, new),
                    old_hex: hex::encode(old),
                    new_hex: hex::encode(new),
                    origin: e.origin.as_ref().map(Origin::label).unwrap_or_default(),
                });
            }
        }
        SessionView {
            version: s.version,
            entries: rows,
            total_elements: total,
            steps: s
                .history
                .applied()
                .iter()
                .map(|st| st.label.clone())
                .collect(),
            can_undo: !s.history.applied().is_empty(),
            can_redo: !s.history.undone().is_empty(),
            pending: s.pending.clone(),
            layers: super::layers::rows(&s),
        }
    }

    /// The net changes of the applied steps, each entry with the origin of its bytes.
    pub(super) fn session_entries(&self, s: &Session) -> Vec<patch::PatchEntry> {
        let mut origins = OriginMap::default();
        for step in s.history.applied() {
            for c in &step.changes {
                origins.mark(&c.tensor, c.offset, c.after.len(), &step.origin);
            }
        }
        origins.split(Patch::entries_from_overlay(
            s.history.overlay(),
            &self.model,
        ))
    }

    /// Saves the session patch as `name` (a plain file name) in the patches folder.
    pub fn save_patch(&self, name: &str, note: &str) -> Result<String> {
        let name = plain_file_name(name, ".json")?;
        let path = self.config.patches_dir.join(name);
        std::fs::create_dir_all(&self.config.patches_dir)
            .map_err(Error::io(&self.config.patches_dir))?;
        // JSON always: the web app loads patches back as text.
        patches::save(&path, &self.patch(note), patches::Format::Json, None)?;
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
        std::fs::create_dir_all(&self.config.out_dir).map_err(Error::io(&self.config.out_dir))?;
        let patch = self.patch("baked from the web app");
        let wb = Arc::clone(self);
        std::thread::spawn(move || {
            let status = Arc::clone(&wb.bake);
            let result = bake::bake(&wb.model, &patch, &out, &mut |done, total| {
                let mut st = lock(&status);
                st.done = done;
                st.total = total;
            });
            let mut st = lock(&status);
            st.running = false;
            match result {
                Ok(files) => st.written = files.iter().map(|p| p.display().to_string()).collect(),
                Err(e) => st.error = Some(e.to_string()),
            }
        });
        Ok(self.bake_status())
    }

    /// The current bake's progress.
    pub fn bake_status(&self) -> BakeStatus {
        lock(&self.bake).clone()
    }
}

fn op_name(op: &edit::Op) -> &'static str {
    match op {
        edit::Op::Set { .. } => "set",
        edit::Op::Add { .. } => "add",
        edit::Op::Scale { .. } => "scale",
        edit::Op::Zero => "zero",
        edit::Op::Clamp { .. } => "clamp",
        edit::Op::Hex { .. } => "hex",
    }
}
