//! Combining two saved patches (with the conflicts listed per element, each side's value in
//! the tensor's dtype) and comparing the model with another (the difference loaded as a layer).

use super::{plain_file_name, Result, Workbench};
use crate::error::Error;
use crate::patch_files;
use crate::store::Model;
use std::path::Path;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::patch::{self, ConflictKind, Patch};
use tensor_surgeon_wire::{CombineOutcome, CompareOutcome, CompareRow, ConflictRow};

impl Workbench {
    /// Combines two saved patches (`second` after `first`); without conflicts the result is
    /// saved as `save_as` in the patches folder.
    pub fn combine_saved(
        &self,
        first: &str,
        second: &str,
        save_as: &str,
    ) -> Result<CombineOutcome> {
        let load = |name: &str| -> Result<Patch> {
            let path = self.saved_path(name)?;
            let loaded = patch_files::load_within(&path, Some(&self.model))?;
            // Compact patches expand against the base (checked by their digests); JSON ones
            // are combined as they are, so a sequence (second made on top of first) works.
            match loaded {
                patch_files::Loaded::Json(p) => Ok(p),
                patch_files::Loaded::Compact(c) => {
                    patch_files::expand(&path, &c, &self.model, None)?
                        .map_err(|conflicts| Error::Conflicts { conflicts })
                }
            }
        };
        let (a, b) = (load(first)?, load(second)?);
        match a.combine(&b) {
            Ok(p) => {
                let path = self.saved_path(&plain_file_name(save_as, ".json")?)?;
                std::fs::create_dir_all(&self.config.patches_dir)
                    .map_err(Error::io(&self.config.patches_dir))?;
                patch_files::save(&path, &p, patch_files::Format::Auto, Some(&self.model))?;
                Ok(CombineOutcome {
                    entries: p.entries.len(),
                    conflicts: Vec::new(),
                    saved: Some(path.display().to_string()),
                })
            }
            Err(conflicts) => Ok(CombineOutcome {
                entries: 0,
                conflicts: {
                    let sides = (a.to_overlay(), b.to_overlay());
                    conflicts
                        .iter()
                        .flat_map(|c| self.conflict_rows(c, &sides))
                        .collect()
                },
                saved: None,
            }),
        }
    }

    /// A conflict as rows per element, values in the tensor's dtype: each side's element is
    /// the base element with that patch laid over it.
    fn conflict_rows(
        &self,
        c: &patch::Conflict,
        (first, second): &(
            tensor_surgeon_core::overlay::Overlay,
            tensor_surgeon_core::overlay::Overlay,
        ),
    ) -> Vec<ConflictRow> {
        let kind = match &c.kind {
            ConflictKind::Clash { .. } => "clash",
            ConflictKind::Mismatch { .. } => "mismatch",
            other => {
                return vec![ConflictRow {
                    tensor: c.tensor.clone(),
                    index: Vec::new(),
                    kind: format!("{other:?}"),
                    first: String::new(),
                    second: String::new(),
                }]
            }
        };
        let Ok((shard, info)) = self.model.get(&c.tensor) else {
            return Vec::new();
        };
        let base = shard.data(info);
        let width = dtype::element_bytes(info.dtype) as u64;
        let packed = dtype::is_packed(info.dtype);
        // Whole elements around the conflicting bytes: base bytes with each side's laid on.
        let lo = c.offset - c.offset % width;
        let hi = (c.offset + c.len).div_ceil(width) * width;
        let mut rows = Vec::new();
        for at in (lo..hi.min(base.len() as u64)).step_by(width as usize) {
            let side = |over: &tensor_surgeon_core::overlay::Overlay| {
                let mut e = base[at as usize..(at + width) as usize].to_vec();
                if let Some(runs) = over.tensor(&c.tensor) {
                    runs.lay_onto(at, &mut e);
                }
                if packed {
                    hex::encode(&e)
                } else {
                    dtype::format_element(info.dtype, &e)
                }
            };
            rows.push(ConflictRow {
                tensor: c.tensor.clone(),
                index: patch::element_of(info, at).1,
                kind: kind.to_string(),
                first: side(first),
                second: side(second),
            });
        }
        rows
    }

    /// Compares the model with `other` (a model path on this machine) and loads the
    /// difference as a layer: the delta view then shows what the other model changed.
    pub fn compare_with(&self, other: &str) -> Result<CompareOutcome> {
        self.writable()?;
        let other_model = Model::open(Path::new(other.trim()))?;
        let diff = crate::diff::Comparison::new(&self.model, &other_model);
        let rows: Vec<CompareRow> = diff.rows();
        let entries = diff.entries();
        let mut layer = None;
        if !entries.is_empty() {
            let mut p = patch_files::new_for(&self.model, &format!("difference to {other}"));
            p.entries = entries;
            let name = format!("compare: {}", other.trim());
            let (outcome, id) = self.load_layer(p, &name)?;
            if !outcome.applied {
                return Err(Error::Usage(outcome.conflicts.join("; ")));
            }
            layer = id;
        }
        Ok(CompareOutcome {
            other: other.trim().to_string(),
            rows,
            not_compared: diff.skipped,
            layer,
        })
    }
}
