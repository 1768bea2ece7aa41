//! A patch's JSON as it reads: entries of every kind (bytes, low-rank, metadata) in one list,
//! told apart by `kind`.

use super::{low_rank, metadata, Fingerprint, Patch};
use serde::{Deserialize, Serialize};

/// A patch as its JSON reads: entries of either kind in one list.
#[derive(Serialize, Deserialize)]
pub(super) struct RawPatch {
    format: String,
    version: u32,
    created: String,
    #[serde(default)]
    note: String,
    base: Vec<Fingerprint>,
    entries: Vec<serde_json::Value>,
}

impl TryFrom<RawPatch> for Patch {
    type Error = String;

    fn try_from(raw: RawPatch) -> Result<Patch, String> {
        let mut entries = Vec::new();
        let mut low_rank = Vec::new();
        let mut meta = Vec::new();
        let mut factors = Vec::new();
        for (i, e) in raw.entries.into_iter().enumerate() {
            let kind = e.get("kind").and_then(|k| k.as_str()).map(str::to_string);
            match kind.as_deref() {
                None => entries
                    .push(serde_json::from_value(e).map_err(|err| format!("entry {i}: {err}"))?),
                Some(low_rank::KIND) => low_rank
                    .push(serde_json::from_value(e).map_err(|err| format!("entry {i}: {err}"))?),
                Some(low_rank::FACTORS_KIND) => factors
                    .push(serde_json::from_value(e).map_err(|err| format!("entry {i}: {err}"))?),
                Some(metadata::KIND) => {
                    meta.push(serde_json::from_value(e).map_err(|err| format!("entry {i}: {err}"))?)
                }
                Some(other) => return Err(format!("entry {i}: unknown kind {other:?}")),
            }
        }
        Ok(Patch {
            format: raw.format,
            version: raw.version,
            created: raw.created,
            note: raw.note,
            base: raw.base,
            entries,
            low_rank,
            metadata: meta,
            factors,
        })
    }
}

impl From<Patch> for RawPatch {
    fn from(p: Patch) -> RawPatch {
        let bytes_only = p.low_rank.is_empty() && p.factors.is_empty();
        let version = match (bytes_only, p.metadata.is_empty()) {
            (_, false) => p.version.max(3),
            (false, true) => p.version.max(2),
            (true, true) => p.version,
        };
        let entries = p
            .entries
            .iter()
            .map(serde_json::to_value)
            .chain(p.low_rank.iter().map(serde_json::to_value))
            .chain(p.metadata.iter().map(serde_json::to_value))
            .chain(p.factors.iter().map(serde_json::to_value))
            .filter_map(Result::ok)
            .collect();
        RawPatch {
            format: p.format,
            version,
            created: p.created,
            note: p.note,
            base: p.base,
            entries,
        }
    }
}
