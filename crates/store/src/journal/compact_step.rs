//! A journaled step in compact form: its changes as a compact patch (XOR delta, zstd,
//! digests), base64 in the journal line; expanded (and checked) against the model on replay.
//! A low-rank step is kept as its factors alone and planned again on replay, over the same
//! state, to the same bytes.

use super::COMPACT_STEP_BYTES;
use crate::compact::{CompactPatch, ExpandError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tensor_surgeon_core::dtype::EncodeOptions;
use tensor_surgeon_core::edit::{self, Change, EditStep, History, LayerMark, LowRankMark};
use tensor_surgeon_core::patch::{BaseModel, Origin, Patch, PatchEntry};

/// A step whose changes are stored as a compact patch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompactStep {
    pub(super) label: String,
    #[serde(default)]
    origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<LayerMark>,
    /// The compact patch file's bytes, base64 (empty for a low-rank step).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    patch: String,
    /// A low-rank step's factors: its changes are planned again from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low_rank: Option<LowRankMark>,
    /// A low-rank step's digest of the bytes it replaced (BLAKE3, hex): a replay over other
    /// weights is found out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    before: String,
}

impl CompactStep {
    /// The compact form of `step`, when it is big and its changes do not overlap (a step whose
    /// changes overlap is replayed in order, which a patch cannot express).
    pub(super) fn of(step: &EditStep) -> Option<CompactStep> {
        if let Some(mark) = &step.low_rank {
            return Some(CompactStep {
                label: step.label.clone(),
                origin: step.origin.clone(),
                layer: step.layer.clone(),
                patch: String::new(),
                low_rank: Some(mark.clone()),
                before: digest(&step.changes),
            });
        }
        let bytes: usize = step.changes.iter().map(|c| c.before.len()).sum();
        if bytes <= COMPACT_STEP_BYTES || overlaps(&step.changes) {
            return None;
        }
        let mut patch = Patch::new(Vec::new(), String::new(), String::new());
        patch.entries = step
            .changes
            .iter()
            .map(|c| PatchEntry::of_change(c, None))
            .collect();
        let bytes = CompactPatch::from_patch(&patch, |_| None).to_bytes().ok()?;
        Some(CompactStep {
            label: step.label.clone(),
            origin: step.origin.clone(),
            layer: step.layer.clone(),
            patch: base64::engine::general_purpose::STANDARD.encode(bytes),
            low_rank: None,
            before: String::new(),
        })
    }

    /// The step again, its original bytes read from `base` as `history` has left it (and
    /// checked against the digests): `Err` says why it does not fit.
    pub(super) fn expand(
        self,
        history: &History,
        base: &impl BaseModel,
    ) -> std::result::Result<EditStep, String> {
        if let Some(mark) = self.low_rank {
            let changes = replan(&mark, history, base)?;
            if digest(&changes) != self.before {
                return Err(format!(
                    "{}: the bytes the low-rank step replaced differ",
                    mark.tensor
                ));
            }
            return Ok(EditStep {
                label: self.label,
                changes,
                origin: self.origin,
                layer: self.layer,
                low_rank: Some(mark),
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.patch)
            .map_err(|e| format!("the compact step is not base64: {e}"))?;
        let size = |name: &str| base.tensor(name).map(|(info, _)| info.byte_len());
        let compact = CompactPatch::from_bytes_within(&bytes, Some(&size))
            .map_err(|e| format!("the compact step is damaged: {e}"))?;
        let patch = compact
            .expand(base, Some(history.overlay()))
            .map_err(|e| match e {
                ExpandError::Conflicts(c) => match c.first() {
                    Some(c) => format!("{}+{}: {:?}", c.tensor, c.offset, c.kind),
                    None => "the step does not fit".into(),
                },
                ExpandError::Damaged(e) => format!("the compact step is damaged: {e}"),
            })?;
        Ok(EditStep {
            label: self.label,
            changes: patch.entries.into_iter().map(Change::from).collect(),
            origin: self.origin,
            layer: self.layer,
            low_rank: None,
        })
    }
}

/// The BLAKE3 (hex) of the bytes `changes` replace, in order.
fn digest(changes: &[Change]) -> String {
    let mut h = blake3::Hasher::new();
    for c in changes {
        h.update(c.tensor.as_bytes());
        h.update(&c.offset.to_le_bytes());
        h.update(&c.before);
    }
    h.finalize().to_hex().to_string()
}

/// A low-rank step's changes, planned over `base` as `history` has left it.
fn replan(
    mark: &LowRankMark,
    history: &History,
    base: &impl BaseModel,
) -> std::result::Result<Vec<Change>, String> {
    let (info, bytes) = base
        .tensor(&mark.tensor)
        .ok_or_else(|| format!("the model has no tensor {}", mark.tensor))?;
    let all = tensor_surgeon_core::slice::SliceSpec::parse("")
        .and_then(|s| s.resolve(&info.shape))
        .map_err(|e| e.to_string())?;
    let view = history.overlay().view(info, &*bytes);
    edit::plan(info, &all, &view, &mark.op(), EncodeOptions::default()).map_err(|e| e.to_string())
}

/// Whether any two changes of a step touch the same byte.
fn overlaps(changes: &[Change]) -> bool {
    let mut spans: Vec<(&str, u64, u64)> = changes
        .iter()
        .map(|c| {
            (
                c.tensor.as_str(),
                c.offset,
                c.offset.saturating_add(c.before.len() as u64),
            )
        })
        .collect();
    spans.sort_unstable();
    spans
        .windows(2)
        .any(|w| w[0].0 == w[1].0 && w[1].1 < w[0].2)
}
