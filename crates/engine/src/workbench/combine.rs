//! Combining two saved patches (with the conflicts listed per element, each side's value in
//! the tensor's dtype) and comparing the model with another (the difference loaded as a layer).

use super::{plain_file_name, Result, Workbench};
use crate::error::Error;
use std::path::Path;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::patch::{self, ConflictKind, Patch};
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_store::patch_files;
use tensor_surgeon_store::Model;
use tensor_surgeon_store::StoreError;
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
                patch_files::Loaded::Json(p) if p.low_rank.is_empty() => Ok(p),
                // Low-rank entries are made into bytes against the base.
                patch_files::Loaded::Json(p) => patch_files::materialize(p, &self.model, None)?
                    .map_err(|conflicts| StoreError::Conflicts { conflicts }.into()),
                patch_files::Loaded::Compact(c) => {
                    patch_files::expand(&path, &c, &self.model, None)?
                        .map_err(|conflicts| StoreError::Conflicts { conflicts }.into())
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
        // A quantized tensor's entries are blocks: one row per block, its bytes in hex.
        let width = match info.blocks {
            Some(ty) => ty.block_bytes() as u64,
            None => dtype::element_bytes(info.dtype) as u64,
        };
        let packed = dtype::is_packed(info.dtype) || info.blocks.is_some();
        // Whole elements around the conflicting bytes: base bytes with each side's laid on.
        let lo = c.offset - c.offset % width;
        let hi = ((c.offset + c.len).div_ceil(width) * width).min(info.byte_len());
        let base = match shard.stored_region(info, &[lo..hi]) {
            Ok(base) => base,
            Err(e) => {
                return vec![ConflictRow {
                    tensor: c.tensor.clone(),
                    index: Vec::new(),
                    kind: format!("unreadable: {e}"),
                    first: String::new(),
                    second: String::new(),
                }]
            }
        };
        let mut rows = Vec::new();
        for at in (lo..hi).step_by(width as usize) {
            let side = |over: &tensor_surgeon_core::overlay::Overlay| {
                let mut e = vec![0u8; width as usize];
                base.read(at, &mut e);
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

    /// Refuses a path outside the folders this server may read: the model's folder, the
    /// patches folder and `--allow-dir` (symbolic links and `..` resolved first).
    pub(super) fn check_allowed(&self, path: &Path) -> Result<()> {
        let real = path.canonicalize().map_err(Error::io(path))?;
        let model_dir = if self.model.path.is_dir() {
            self.model.path.clone()
        } else {
            self.model
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf()
        };
        let roots = [model_dir, self.config.patches_dir.clone()];
        let allowed = roots
            .iter()
            .chain(&self.config.allow_dirs)
            .filter_map(|r| r.canonicalize().ok())
            .any(|root| real.starts_with(root));
        if allowed {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "{} is outside the folders this server may read (the model's folder, the patches \
             folder, and any --allow-dir); start the server with --allow-dir FOLDER to compare \
             with it",
            path.display()
        )))
    }

    /// Compares the model with `other` (a model path on this machine) and loads the
    /// difference as a layer: the delta view then shows what the other model changed.
    pub fn compare_with(&self, other: &str) -> Result<CompareOutcome> {
        self.writable()?;
        let other_path = Path::new(other.trim());
        // A URL reads nothing of this machine; a path must be inside the allowed folders.
        let local = !tensor_surgeon_store::remote::is_url(other.trim());
        if local {
            self.check_allowed(other_path)?;
        }
        let other_model = Model::open(other_path)?;
        for shard in other_model.shards.iter().filter(|_| local) {
            self.check_allowed(&shard.path)?;
        }
        let diff = crate::diff::Comparison::new(&self.model, &other_model)?;
        let rows: Vec<CompareRow> = diff.rows();
        let name = format!("compare: {}", other.trim());
        // The difference becomes one layer, built entry by entry from the two mapped files
        // (its original bytes are the base's by construction); a difference larger than one
        // step may be is refused before anything is copied.
        let bytes = diff.changed_bytes();
        super::check_step_size(
            bytes,
            self.config.max_step_bytes,
            &format!(
                "the difference to {} (use the CLI's `diff` for it)",
                other.trim()
            ),
        )?;
        let layer = match bytes {
            0 => None,
            _ => Some(self.apply_layer(diff.entries_iter(), Vec::new(), &name)?),
        };
        Ok(CompareOutcome {
            other: other.trim().to_string(),
            rows,
            not_compared: diff.skipped,
            layer,
        })
    }
}
