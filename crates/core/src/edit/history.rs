//! The undo/redo history of edit steps, and the overlay it produces.

use super::Change;
use crate::overlay::Overlay;
use serde::{Deserialize, Serialize};

/// One user action: its changes and a label for the history list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditStep {
    pub label: String,
    pub changes: Vec<Change>,
    /// Who made it (journals written before provenance read as unknown).
    #[serde(default)]
    pub origin: crate::origin::Origin,
    /// Set on the steps that load, enable or disable a loaded patch (a layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerMark>,
    /// Set on a step that is one low-rank update of a whole float tensor: its changes are
    /// exactly that update planned over the state before the step, so a journal keeps the
    /// factors instead of the changes, and the session lists it as one entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_rank: Option<LowRankMark>,
}

/// The update of a low-rank step: `tensor` gains `U Vᵀ` (the factors as in
/// [`super::Op::LowRank`]: base64 of little-endian f32, `[rows, rank]` and `[cols, rank]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowRankMark {
    pub tensor: String,
    pub rank: u32,
    pub u: String,
    pub v: String,
}

impl LowRankMark {
    /// The edit operation that makes the step's changes.
    pub fn op(&self) -> super::Op {
        super::Op::LowRank {
            rank: self.rank,
            u: self.u.clone(),
            v: self.v.clone(),
        }
    }
}

/// A step's part in a loaded patch's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMark {
    /// The layer's id in this session.
    pub id: u64,
    /// The patch's name (its file name).
    pub name: String,
    pub action: LayerAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerAction {
    /// The patch was loaded: the step's changes are the patch.
    Load,
    /// Turned back on.
    On,
    /// Turned off: its bytes went back to what was beneath.
    Off,
}

/// The undo/redo history and the overlay it produces.
#[derive(Clone, Debug, Default)]
pub struct History {
    steps: Vec<EditStep>,
    cursor: usize,
    overlay: Overlay,
    /// How many applied steps change each tensor: at zero (every step on it undone) the
    /// tensor is the base again and leaves the overlay, so no reader compares its old runs
    /// with the base.
    touching: std::collections::HashMap<String, usize>,
}

/// Whether each change starts at or after the end of the one before it in the same tensor
/// (so none overlaps another and their order does not matter).
fn ascending(changes: &[super::Change]) -> bool {
    let mut ends: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    changes.iter().all(|c| {
        let end = ends.entry(&c.tensor).or_default();
        let fits = c.offset >= *end;
        *end = c.offset + c.before.len() as u64;
        fits
    })
}

/// The tensors a step changes, each once.
fn tensors(step: &EditStep) -> std::collections::BTreeSet<&str> {
    step.changes.iter().map(|c| c.tensor.as_str()).collect()
}

impl History {
    /// The overlay of every applied step.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Applies a new step; any undone steps are discarded.
    pub fn apply(&mut self, step: EditStep) {
        self.steps.truncate(self.cursor);
        for c in &step.changes {
            self.overlay.write(&c.tensor, c.offset, &c.after);
        }
        for t in tensors(&step) {
            *self.touching.entry(t.to_string()).or_default() += 1;
        }
        self.steps.push(step);
        self.cursor = self.steps.len();
    }

    /// Reverts the last applied step.
    pub fn undo(&mut self) -> Option<&EditStep> {
        self.cursor = self.cursor.checked_sub(1)?;
        let step = &self.steps[self.cursor];
        for t in tensors(step) {
            let n = self.touching.entry(t.to_string()).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.touching.remove(t);
                self.overlay.remove(t);
            }
        }
        // Changes that may overlap are reverted last first; ascending ones (every planned
        // step's) in order, which extends the overlay's runs instead of merging them again
        // and again.
        let restore = |overlay: &mut Overlay, c: &super::Change| {
            overlay.write(&c.tensor, c.offset, &c.before);
        };
        let kept = |c: &&super::Change| self.touching.contains_key(&c.tensor);
        if ascending(&step.changes) {
            for c in step.changes.iter().filter(kept) {
                restore(&mut self.overlay, c);
            }
        } else {
            for c in step.changes.iter().rev().filter(kept) {
                restore(&mut self.overlay, c);
            }
        }
        Some(step)
    }

    /// Re-applies the last undone step.
    pub fn redo(&mut self) -> Option<&EditStep> {
        let step = self.steps.get(self.cursor)?;
        for c in &step.changes {
            self.overlay.write(&c.tensor, c.offset, &c.after);
        }
        for t in tensors(step) {
            *self.touching.entry(t.to_string()).or_default() += 1;
        }
        self.cursor += 1;
        Some(step)
    }

    /// Applied steps, oldest first.
    pub fn applied(&self) -> &[EditStep] {
        &self.steps[..self.cursor]
    }

    /// Steps that redo would bring back, next first.
    pub fn undone(&self) -> &[EditStep] {
        &self.steps[self.cursor..]
    }
}
