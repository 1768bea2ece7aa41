//! Loaded patches as layers of the session: several loaded at once, each turned on or off;
//! entries dropped or kept by tensor or one by one. (Combining saved patches and comparing
//! with another model are in `combine.rs`.)
//!
//! A layer is the set of steps that loaded it. Turning it off is itself a step: every byte
//! that still shows the patch's value goes back to what was beneath it; turning it on puts
//! the value back where that byte still shows what was beneath. Bytes a later edit changed
//! are left alone either way. Being steps, all of it is journaled and can be undone.

use super::{lock, plain_file_name, Result, Session, Workbench};
use crate::error::Error;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::edit::{Change, EditStep, LayerAction, LayerMark};
use tensor_surgeon_core::patch::{low_rank, LowRankEntry, Origin, Patch, PatchEntry};
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_store::patch_files;
use tensor_surgeon_wire::{DropRequest, LayerRow, LoadOutcome, SessionView};

/// The layers of the applied steps, in load order.
pub(super) fn rows(s: &Session) -> Vec<LayerRow> {
    let mut out: Vec<LayerRow> = Vec::new();
    for step in s.history.applied() {
        let Some(mark) = &step.layer else { continue };
        match mark.action {
            LayerAction::Load => match out.iter_mut().find(|l| l.id == mark.id) {
                Some(l) => add_changes(l, &step.changes),
                None => {
                    let mut l = LayerRow {
                        id: mark.id,
                        name: mark.name.clone(),
                        enabled: true,
                        bytes: 0,
                        tensors: Vec::new(),
                    };
                    add_changes(&mut l, &step.changes);
                    out.push(l);
                }
            },
            action => {
                if let Some(l) = out.iter_mut().find(|l| l.id == mark.id) {
                    l.enabled = action == LayerAction::On;
                }
            }
        }
    }
    out
}

fn add_changes(l: &mut LayerRow, changes: &[Change]) {
    l.bytes += changes.iter().map(|c| c.after.len() as u64).sum::<u64>();
    // Changes come grouped by tensor: most are of the tensor seen last.
    for c in changes {
        if l.tensors.last() != Some(&c.tensor) && !l.tensors.contains(&c.tensor) {
            l.tensors.push(c.tensor.clone());
        }
    }
}

/// The changes that loaded layer `id` (empty: no such layer among the applied steps).
fn layer_changes(s: &Session, id: u64) -> Vec<&Change> {
    s.history
        .applied()
        .iter()
        .filter(|st| {
            st.layer
                .as_ref()
                .is_some_and(|m| m.id == id && m.action == LayerAction::Load)
        })
        .flat_map(|st| &st.changes)
        .collect()
}

/// A fresh layer id: one past every id in the history, undone steps included.
fn next_id(s: &Session) -> u64 {
    s.history
        .applied()
        .iter()
        .chain(s.history.undone())
        .filter_map(|st| st.layer.as_ref().map(|m| m.id))
        .max()
        .map_or(1, |m| m + 1)
}

impl Workbench {
    /// `len` stored bytes of `tensor` from `offset` as the session has them (every edit applied).
    fn current(&self, s: &Session, tensor: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let (shard, info) = self.model.get(tensor)?;
        let mut out = vec![0u8; len];
        let base = shard.stored_region(info, &[offset..offset + len as u64])?;
        s.history
            .overlay()
            .view_stored(&info.name, &base)
            .read(offset, &mut out);
        Ok(out)
    }

    /// Verifies a patch (JSON text) against the base; if clean, loads it as a layer: one step
    /// per origin, so provenance survives save -> load.
    pub fn load_patch(&self, text: &str, name: &str) -> Result<LoadOutcome> {
        self.writable()?;
        let path = PathBuf::from(name);
        let patch = Patch::from_json(text).map_err(|source| Error::Patch {
            path: path.clone(),
            source,
        })?;
        let entries = patch.entries.len() + patch.low_rank.len();
        let mut patch = patch;
        let factored = self.factored(&mut patch)?;
        let fit = patch_files::materialize(patch, &self.model, None)?;
        self.load_layer(fit, factored, entries, name)
    }

    /// Takes out of `patch` the low-rank entries the session keeps as their factors (one step
    /// each): those of float tensors the session has not edited, made for the base's bytes.
    /// The rest (a tensor already edited, a digest that does not match: a conflict to report)
    /// stay in the patch for its usual checks.
    pub(super) fn factored(&self, patch: &mut Patch) -> Result<Vec<LowRankEntry>> {
        let edited: BTreeSet<String> = {
            let s = lock(&self.session);
            s.history
                .overlay()
                .tensors()
                .map(|(n, _)| n.to_string())
                .collect()
        };
        let mut out = Vec::new();
        for e in std::mem::take(&mut patch.low_rank) {
            let keep = match self.model.get(&e.tensor) {
                Ok((shard, info)) if !edited.contains(&e.tensor) && e.check(info).is_ok() => {
                    let base = shard.data(info)?;
                    low_rank::sha256_of(info, &&*base) == e.base_sha256
                }
                _ => false,
            };
            if keep {
                out.push(e);
            } else {
                patch.low_rank.push(e);
            }
        }
        Ok(out)
    }

    /// The patch files (JSON or compact) and adapters in the patches folder, by name.
    pub fn saved_patches(&self) -> Result<Vec<String>> {
        let dir = &self.config.patches_dir;
        let Ok(read) = std::fs::read_dir(dir) else {
            return Ok(Vec::new());
        };
        // Patch files, and adapters (PEFT folders, llama.cpp's GGUF adapters).
        let mut names: Vec<String> = read
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                match e.file_type() {
                    Ok(t) if t.is_file() => {
                        ((n.ends_with(".json") || n.ends_with(".tsp"))
                            && !n.ends_with(super::PROBES_SUFFIX))
                            || (n.ends_with(".gguf") && crate::adapter::is_adapter(&e.path()))
                    }
                    Ok(t) if t.is_dir() => crate::adapter::is_adapter(&e.path()),
                    _ => false,
                }
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    pub(super) fn saved_path(&self, name: &str) -> Result<PathBuf> {
        let name = plain_file_name(name, "")?;
        Ok(self.config.patches_dir.join(name))
    }

    /// Loads a patch file of the patches folder (either form) as a layer.
    pub fn load_saved(&self, name: &str) -> Result<LoadOutcome> {
        self.writable()?;
        let path = self.saved_path(name)?;
        let loaded = crate::adapter::load_within(&path, Some(&self.model))?;
        let entries = loaded.entry_count();
        let (loaded, factored) = match loaded {
            patch_files::Loaded::Json(mut p) => {
                let factored = self.factored(&mut p)?;
                (patch_files::Loaded::Json(p), factored)
            }
            other => (other, Vec::new()),
        };
        let fit = patch_files::resolve(&path, loaded, &self.model, None)?;
        self.load_layer(fit, factored, entries, name)
    }

    /// Applies a patch checked against the base (`patch_files::resolve`) and the low-rank
    /// entries taken out of it as a new layer, or lists where it does not fit (`entries`: the
    /// file's count).
    pub(super) fn load_layer(
        &self,
        fit: patch_files::Fit,
        factored: Vec<LowRankEntry>,
        entries: usize,
        name: &str,
    ) -> Result<LoadOutcome> {
        match fit {
            Ok(patch) if !patch.metadata.is_empty() => Err(Error::Usage(format!(
                "{name} changes {} metadata key(s) of the GGUF ({}); a session edits tensors, \
                 not the header: bake the patch to apply it",
                patch.metadata.len(),
                patch
                    .metadata
                    .iter()
                    .map(|e| e.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Ok(patch) => {
                let count = patch.entries.len() + factored.len();
                self.apply_layer(patch.entries, factored, name)?;
                Ok(LoadOutcome {
                    applied: true,
                    entries: count,
                    conflicts: Vec::new(),
                })
            }
            Err(conflicts) => Ok(LoadOutcome {
                applied: false,
                entries,
                conflicts: conflicts.iter().map(ToString::to_string).collect(),
            }),
        }
    }

    /// Applies entries whose original bytes fit the base as a new layer (one step per origin,
    /// and one per low-rank entry in `factored`, which keeps its factors); returns its id.
    /// Entries are consumed one by one (their new bytes moved into the step), so a large
    /// layer is held once, not twice. Refused past the step cap.
    pub(super) fn apply_layer(
        &self,
        entries: impl IntoIterator<Item = PatchEntry>,
        factored: Vec<LowRankEntry>,
        name: &str,
    ) -> Result<u64> {
        let mut s = lock(&self.session);
        let id = next_id(&s);
        let mark = LayerMark {
            id,
            name: name.to_string(),
            action: LayerAction::Load,
        };
        // Planned first, all of them, so a step past the cap leaves the session as it was.
        let mut planned = Vec::new();
        let mut bytes = 0u64;
        for e in factored {
            let origin = e.origin.clone().unwrap_or_else(|| Origin::new("patch"));
            let req = tensor_surgeon_wire::EditRequest {
                tensor: e.tensor.clone(),
                spec: String::new(),
                op: tensor_surgeon_core::edit::Op::LowRank {
                    rank: e.rank,
                    u: low_rank::base64(&e.u),
                    v: low_rank::base64(&e.v),
                },
                saturate: false,
                round: false,
            };
            if let Some(mut step) = self.plan_step(&s, &req, &origin)? {
                bytes += step
                    .changes
                    .iter()
                    .map(|c| c.after.len() as u64)
                    .sum::<u64>();
                super::check_step_size(
                    bytes,
                    self.config.max_step_bytes,
                    &format!("loading {name}"),
                )?;
                step.label = format!(
                    "load {name}: {} rank {} ({})",
                    e.tensor,
                    e.rank,
                    origin.label()
                );
                step.layer = Some(mark.clone());
                planned.push(step);
            }
        }
        let mut groups: Vec<(Origin, Vec<Change>)> = Vec::new();
        for e in entries {
            bytes += e.patched.len() as u64;
            super::check_step_size(
                bytes,
                self.config.max_step_bytes,
                &format!("loading {name}"),
            )?;
            let before = self.current(&s, &e.tensor, e.offset, e.patched.len())?;
            let change = Change {
                tensor: e.tensor,
                offset: e.offset,
                before,
                after: e.patched,
            };
            let origin = e.origin.clone().unwrap_or_else(|| Origin::new("patch"));
            match groups.iter_mut().find(|(o, _)| *o == origin) {
                Some((_, changes)) => changes.push(change),
                None => groups.push((origin, vec![change])),
            }
        }
        for step in planned {
            s.apply(step)?;
        }
        for (origin, changes) in groups {
            let step = EditStep {
                label: format!(
                    "load {name}: {} change(s) ({})",
                    changes.len(),
                    origin.label()
                ),
                changes,
                origin,
                layer: Some(mark.clone()),
                low_rank: None,
            };
            s.apply(step)?;
        }
        Ok(id)
    }

    /// Turns a loaded patch on or off (a step; a no-op when it already is).
    pub fn set_layer(&self, id: u64, enabled: bool) -> Result<SessionView> {
        self.writable()?;
        let mut s = lock(&self.session);
        let Some(row) = rows(&s).into_iter().find(|l| l.id == id) else {
            return Err(Error::NotFound(format!("no loaded patch {id}")));
        };
        if row.enabled != enabled {
            let mut changes = Vec::new();
            for c in layer_changes(&s, id) {
                let current = self.current(&s, &c.tensor, c.offset, c.after.len())?;
                // Off: the patch's bytes go back to what was beneath; on: the reverse.
                let (from, to) = if enabled {
                    (&c.before, &c.after)
                } else {
                    (&c.after, &c.before)
                };
                let mut next = current.clone();
                for i in 0..next.len() {
                    if current[i] == from[i] {
                        next[i] = to[i];
                    }
                }
                if next != current {
                    changes.push(Change {
                        tensor: c.tensor.clone(),
                        offset: c.offset,
                        before: current,
                        after: next,
                    });
                }
            }
            let step = EditStep {
                label: format!(
                    "{} {}: {} byte(s)",
                    if enabled { "turn on" } else { "turn off" },
                    row.name,
                    changes.iter().map(|c| c.after.len()).sum::<usize>()
                ),
                changes,
                origin: Origin::new("web"),
                layer: Some(LayerMark {
                    id,
                    name: row.name.clone(),
                    action: if enabled {
                        LayerAction::On
                    } else {
                        LayerAction::Off
                    },
                }),
                low_rank: None,
            };
            s.apply(step)?;
        }
        drop(s);
        self.session_view()
    }

    /// Drops entries of the session patch (their bytes go back to the base), or keeps only
    /// the selection and drops the rest.
    pub fn drop_entries(&self, req: &DropRequest) -> Result<SessionView> {
        self.writable()?;
        let mut s = lock(&self.session);
        let tensors: BTreeSet<&str> = req.tensors.iter().map(String::as_str).collect();
        let mut elements: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for (t, index) in &req.elements {
            let (_, info) = self.model.get(t)?;
            let flat = flat_index(info, index)?;
            elements.entry(t.as_str()).or_default().insert(flat);
        }
        let entries = self.session_entries(&s)?;
        let mut changes = Vec::new();
        for e in &entries {
            let (_, info) = self.model.get(&e.tensor)?;
            let width = dtype::element_bytes(info.dtype);
            let packed = dtype::is_packed(info.dtype);
            let whole = tensors.contains(e.tensor.as_str());
            let picked = elements.get(e.tensor.as_str());
            // Per element (per byte for packed dtypes, whose elements share bytes).
            let unit = if packed { 1 } else { width };
            let mut after = e.patched.clone();
            for k in 0..e.patched.len() / unit {
                let offset = e.offset + (k * unit) as u64;
                let selected = whole
                    || picked.is_some_and(|p| {
                        if packed {
                            let bits = dtype::bits(info.dtype) as u64;
                            (offset * 8 / bits..(offset + 1) * 8 / bits).any(|f| p.contains(&f))
                        } else {
                            p.contains(&(offset / width as u64))
                        }
                    });
                if selected != req.keep {
                    after[k * unit..(k + 1) * unit]
                        .copy_from_slice(&e.original[k * unit..(k + 1) * unit]);
                }
            }
            if after != e.patched {
                changes.push(Change {
                    tensor: e.tensor.clone(),
                    offset: e.offset,
                    before: e.patched.clone(),
                    after,
                });
            }
        }
        if !changes.is_empty() {
            let n = changes.len();
            s.apply(EditStep {
                label: format!(
                    "{} {n} entr{}",
                    if req.keep {
                        "keep selection: drop"
                    } else {
                        "drop"
                    },
                    if n == 1 { "y" } else { "ies" }
                ),
                changes,
                origin: Origin::new("web"),
                layer: None,
                low_rank: None,
            })?;
        }
        drop(s);
        self.session_view()
    }
}

/// The flat index of `index` in `info`, checked.
fn flat_index(info: &tensor_surgeon_core::header::TensorInfo, index: &[u64]) -> Result<u64> {
    if index.len() != info.shape.len() || index.iter().zip(&info.shape).any(|(i, d)| i >= d) {
        return Err(Error::Usage(format!(
            "{index:?} is not an element of {} {:?}",
            info.name, info.shape
        )));
    }
    Ok(index
        .iter()
        .zip(&info.shape)
        .fold(0u64, |acc, (i, d)| acc * d + i))
}
