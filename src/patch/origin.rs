//! Provenance: who made each change (the web app, the command line, an agent with its stated
//! hypothesis, a loaded patch), kept per patch entry. Entries are split where the origin
//! changes, so every byte of a patch carries the origin of the last step that wrote it.

use super::PatchEntry;
use crate::overlay::RangeMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a change came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// `web`, `cli`, `agent` or `patch`.
    pub source: String,
    /// What an agent said it was testing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<String>,
}

impl Origin {
    pub fn new(source: &str) -> Origin {
        Origin {
            source: source.to_string(),
            hypothesis: None,
        }
    }

    pub fn agent(hypothesis: &str) -> Origin {
        Origin {
            source: "agent".into(),
            hypothesis: Some(hypothesis.to_string()),
        }
    }

    /// `web`, or `agent: the hypothesis`.
    pub fn label(&self) -> String {
        match &self.hypothesis {
            Some(h) => format!("{}: {h}", self.source),
            None => self.source.clone(),
        }
    }
}

/// Byte ranges of tensors marked with origins (the last mark wins).
#[derive(Clone, Debug, Default)]
pub struct OriginMap {
    origins: Vec<Origin>,
    /// Per tensor: for every marked byte, 4 bytes holding its origin's index + 1.
    marks: BTreeMap<String, RangeMap>,
}

impl OriginMap {
    /// Marks `len` bytes from `offset` of `tensor` as coming from `origin`.
    pub fn mark(&mut self, tensor: &str, offset: u64, len: usize, origin: &Origin) {
        let id = match self.origins.iter().position(|o| o == origin) {
            Some(i) => i,
            None => {
                self.origins.push(origin.clone());
                self.origins.len() - 1
            }
        } as u32
            + 1;
        let bytes: Vec<u8> = std::iter::repeat_n(id.to_le_bytes(), len)
            .flatten()
            .collect();
        self.marks
            .entry(tensor.to_string())
            .or_default()
            .write(offset * 4, &bytes);
    }

    /// The origins entries already carry.
    pub fn from_entries(entries: &[PatchEntry]) -> OriginMap {
        let mut map = OriginMap::default();
        for e in entries {
            if let Some(o) = &e.origin {
                map.mark(&e.tensor, e.offset, e.patched.len(), o);
            }
        }
        map
    }

    /// The entries split where the origin changes, each with its origin (unmarked bytes keep
    /// the entry's own).
    pub fn split(&self, entries: Vec<PatchEntry>) -> Vec<PatchEntry> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let Some(marks) = self.marks.get(&e.tensor) else {
                out.push(e);
                continue;
            };
            let mut ids = vec![0u8; e.patched.len() * 4];
            marks.lay_onto(e.offset * 4, &mut ids);
            let id_at = |i: usize| {
                u32::from_le_bytes([ids[4 * i], ids[4 * i + 1], ids[4 * i + 2], ids[4 * i + 3]])
            };
            let mut start = 0;
            for i in 1..=e.patched.len() {
                if i == e.patched.len() || id_at(i) != id_at(start) {
                    let id = id_at(start);
                    let origin = if id == 0 {
                        e.origin.clone()
                    } else {
                        self.origins.get(id as usize - 1).cloned()
                    };
                    out.push(PatchEntry {
                        tensor: e.tensor.clone(),
                        offset: e.offset + start as u64,
                        original: e.original[start..i].to_vec(),
                        patched: e.patched[start..i].to_vec(),
                        origin,
                    });
                    start = i;
                }
            }
        }
        out
    }
}
