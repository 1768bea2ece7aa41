//! The session as a page sees it: its net changes element by element (the first rows, and
//! how many in all), each low-rank step as one row, the history, proposals and layers.

use super::session::Session;
use super::{lock, Result, Workbench, ENTRY_LIMIT};
use std::collections::{BTreeSet, HashMap};
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::patch::{self, Origin, OriginMap, Patch};
use tensor_surgeon_wire::{EntryRow, SessionView};

impl Workbench {
    /// Changed elements and history.
    pub fn session_view(&self) -> Result<SessionView> {
        let s = lock(&self.session);
        let overlay = s.history.overlay();
        let base = self.model.based_on_overlay(overlay)?;
        let (low_rank, by_factors, single) = low_rank_rows(&s, &self.model);
        let origins = Self::origins(&s, &by_factors);
        let mut rows = Vec::new();
        let mut total = 0u64;
        // Entries (with their bytes) only while rows are still shown; past that, the changes
        // are counted: a dense layer (an ablation's 60 matrices) changes tens of millions of
        // elements, and its entries would take seconds to build for a count.
        let mut entries = Vec::new();
        for (name, runs) in overlay.tensors() {
            // Changed by one low-rank step alone: its count is that step's.
            if let Some(&n) = single.get(name) {
                total += n;
                continue;
            }
            let counted = (rows.len() >= ENTRY_LIMIT || by_factors.contains(name))
                && !self
                    .model
                    .get(name)
                    .is_ok_and(|(_, i)| i.blocks.is_some() || dtype::is_packed(i.dtype));
            if counted {
                let mut n = 0u64;
                Patch::tensor_changes(name, runs, &base, &mut |_, _, _| n += 1);
                total += n;
                continue;
            }
            entries.clear();
            entries.extend(origins.split(Patch::tensor_entries(name, runs, &base)));
            for e in &entries {
                let Ok((_, info)) = self.model.get(&e.tensor) else {
                    continue;
                };
                if let Some(ty) = info.blocks {
                    // A quantized tensor's entry is blocks: a row per value that changed.
                    let decode = |b: &[u8]| tensor_surgeon_core::gguf::quant::to_f32(ty, b);
                    let (Ok(old), Ok(new)) = (decode(&e.original), decode(&e.patched)) else {
                        continue;
                    };
                    let (first, _) = patch::element_of(info, e.offset);
                    for (k, (o, n)) in old.iter().zip(&new).enumerate() {
                        if o.to_bits() == n.to_bits() {
                            continue;
                        }
                        total += 1;
                        if rows.len() < ENTRY_LIMIT {
                            rows.push(EntryRow {
                                tensor: e.tensor.clone(),
                                index: tensor_surgeon_core::slice::unflatten(
                                    &info.shape,
                                    first + k as u64,
                                ),
                                old_value: dtype::format_element(info.dtype, &o.to_le_bytes()),
                                new_value: dtype::format_element(info.dtype, &n.to_le_bytes()),
                                old_hex: hex::encode(o.to_le_bytes()),
                                new_hex: hex::encode(n.to_le_bytes()),
                                origin: e.origin.as_ref().map(Origin::label).unwrap_or_default(),
                            });
                        }
                    }
                    continue;
                }
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
        }
        Ok(SessionView {
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
            low_rank,
        })
    }

    /// The net changes of the applied steps, each entry with the origin of its bytes.
    pub(super) fn session_entries(&self, s: &Session) -> Result<Vec<patch::PatchEntry>> {
        let base = self.model.based_on_overlay(s.history.overlay())?;
        let origins = Self::origins(s, &BTreeSet::new());
        Ok(origins.split(Patch::entries_from_overlay(s.history.overlay(), &base)))
    }

    /// Where the applied steps' bytes came from (but those of the low-rank steps of `skip`'s
    /// tensors, listed as rows of their own).
    fn origins(s: &Session, skip: &BTreeSet<String>) -> OriginMap {
        let mut origins = OriginMap::default();
        for step in s.history.applied() {
            if step
                .low_rank
                .as_ref()
                .is_some_and(|m| skip.contains(&m.tensor))
            {
                continue;
            }
            // Adjacent changes of a step are one mark (a loaded layer brings millions).
            let mut run: Option<(&str, u64, u64)> = None;
            for c in &step.changes {
                let end = c.offset + c.after.len() as u64;
                run = match run {
                    Some((t, start, e)) if t == c.tensor && e == c.offset => Some((t, start, end)),
                    Some((t, start, e)) => {
                        origins.mark(t, start, (e - start) as usize, &step.origin);
                        Some((&c.tensor, c.offset, end))
                    }
                    None => Some((&c.tensor, c.offset, end)),
                };
            }
            if let Some((t, start, e)) = run {
                origins.mark(t, start, (e - start) as usize, &step.origin);
            }
        }
        origins
    }
}

/// What the session's low-rank steps show: a row per applied one, the tensors that only such
/// steps changed (listed by their rows, not element by element), and of those the ones a
/// single step changed, with its count of changed elements (no need to compare with the base).
type LowRankView = (
    Vec<tensor_surgeon_wire::LowRankRow>,
    BTreeSet<String>,
    HashMap<String, u64>,
);

fn low_rank_rows(s: &Session, model: &tensor_surgeon_store::Model) -> LowRankView {
    let mut rows: Vec<tensor_surgeon_wire::LowRankRow> = Vec::new();
    let mut only = BTreeSet::new();
    // Borrowed names, each looked up once per run of changes: a loaded layer's byte step
    // brings millions of changes.
    let mut other: BTreeSet<&str> = BTreeSet::new();
    for step in s.history.applied() {
        match &step.low_rank {
            Some(mark) => {
                let width = model
                    .get(&mark.tensor)
                    .map_or(1, |(_, i)| dtype::element_bytes(i.dtype).max(1));
                let bytes: usize = step.changes.iter().map(|c| c.after.len()).sum();
                rows.push(tensor_surgeon_wire::LowRankRow {
                    tensor: mark.tensor.clone(),
                    rank: mark.rank,
                    label: step.label.clone(),
                    origin: step.origin.label(),
                    elements: (bytes / width) as u64,
                });
                only.insert(mark.tensor.clone());
            }
            None => {
                let mut last = None;
                for c in &step.changes {
                    if last != Some(c.tensor.as_str()) {
                        other.insert(&c.tensor);
                        last = Some(&c.tensor);
                    }
                }
            }
        }
    }
    only.retain(|t: &String| !other.contains(t.as_str()));
    let mut single: HashMap<String, u64> = HashMap::new();
    let mut steps: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        *steps.entry(&r.tensor).or_default() += 1;
    }
    for r in &rows {
        if only.contains(&r.tensor) && steps[r.tensor.as_str()] == 1 {
            single.insert(r.tensor.clone(), r.elements);
        }
    }
    (rows, only, single)
}
