//! Hex-diff patches: `(tensor, byte offset, original bytes, patched bytes)` entries with a
//! header naming the base model. Pure: verification reads the base through [`BaseModel`].
//!
//! The file format is documented in `docs/patch-format.md`.

use crate::change::Change;
use crate::header::TensorInfo;
use crate::overlay::{Overlay, RangeMap};
use crate::source::ByteSource;
use crate::{dtype, slice};
use serde::{Deserialize, Serialize};

mod conflict;
pub mod low_rank;
pub mod metadata;
mod origin;
mod raw;
mod verify;
pub use crate::origin::Origin;
pub use conflict::{Conflict, ConflictKind};
pub use low_rank::{LowRankEntry, LowRankError};
pub use metadata::{MetaValue, MetadataEntry};
pub use origin::OriginMap;

/// The `format` field of every patch file.
pub const FORMAT: &str = "tensor-surgeon-patch";
/// The newest format version this build reads and writes: 2 adds low-rank entries, 3
/// metadata entries. A patch is written with the oldest version that holds its entries
/// (version 1 without either), which older builds read.
pub const VERSION: u32 = 3;

/// Identity of one base file: its name, a hash of its header, its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub file: String,
    pub header_sha256: String,
    pub size: u64,
    /// For a file read from a server: the version it had (its ETag, else its modification
    /// time). A local copy has none, and matches any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Fingerprint {
    /// Whether two fingerprints name the same file contents: same name, header and size, and
    /// the same version where both were read from a server.
    pub fn same_base(&self, other: &Fingerprint) -> bool {
        self.file == other.file
            && self.header_sha256 == other.header_sha256
            && self.size == other.size
            && (self.version.is_none() || other.version.is_none() || self.version == other.version)
    }
}

/// Fingerprints a file from its header bytes (length prefix + JSON) and size.
pub fn fingerprint(file: &str, header_bytes: &[u8], size: u64) -> Fingerprint {
    use sha2::Digest;
    Fingerprint {
        file: file.to_string(),
        header_sha256: hex::encode(sha2::Sha256::digest(header_bytes)),
        size,
        version: None,
    }
}

/// One run of changed bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchEntry {
    pub tensor: String,
    /// Byte offset within the tensor's data.
    pub offset: u64,
    #[serde(with = "hex::serde")]
    pub original: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub patched: Vec<u8>,
    /// Who made the change (absent in patches written before provenance was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl From<PatchEntry> for Change {
    /// The change an entry makes (its original bytes before, its patched bytes after).
    fn from(e: PatchEntry) -> Change {
        Change {
            tensor: e.tensor,
            offset: e.offset,
            before: e.original,
            after: e.patched,
        }
    }
}

impl PatchEntry {
    /// The entry of a change, made by `origin`.
    pub fn of_change(c: &Change, origin: Option<Origin>) -> PatchEntry {
        PatchEntry {
            tensor: c.tensor.clone(),
            offset: c.offset,
            original: c.before.clone(),
            patched: c.after.clone(),
            origin,
        }
    }

    /// The offset just past the entry.
    pub fn end(&self) -> u64 {
        self.offset + self.patched.len() as u64
    }
}

/// A patch file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "raw::RawPatch", into = "raw::RawPatch")]
pub struct Patch {
    pub format: String,
    pub version: u32,
    /// RFC 3339 creation time.
    pub created: String,
    #[serde(default)]
    pub note: String,
    /// The base model, one fingerprint per file (shard).
    pub base: Vec<Fingerprint>,
    /// Byte entries, by tensor and offset.
    pub entries: Vec<PatchEntry>,
    /// Low-rank entries (version 2), at most one per tensor and never in a tensor that also
    /// has byte entries. They apply to the base's bytes: [`low_rank::LowRankEntry::to_entries`]
    /// turns them into byte entries once the base is at hand.
    pub low_rank: Vec<LowRankEntry>,
    /// Metadata entries (version 3): a GGUF header's key-value pairs, applied at bake.
    pub metadata: Vec<MetadataEntry>,
    /// The factors behind byte entries of quantized tensors (kind `factors`): a low-rank edit
    /// of a tensor stored as blocks is applied as its blocks quantized again (byte entries),
    /// and its exact `U Vᵀ` is kept here so it can leave as an adapter. Never applied: the
    /// byte entries are the change.
    pub factors: Vec<LowRankEntry>,
}

/// What is wrong with a patch as a document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// Not JSON of the patch shape.
    #[error("not a patch file: {reason}")]
    Parse { reason: String },
    /// Another format or a newer version.
    #[error("unsupported patch format {format:?} version {version} (this build reads {FORMAT:?} version {VERSION})")]
    Version { format: String, version: u32 },
    /// An entry whose original and patched lengths differ, or that is empty.
    #[error("entry at {tensor}+{offset}: original is {original} bytes but patched is {patched}")]
    Length {
        tensor: String,
        offset: u64,
        original: usize,
        patched: usize,
    },
    /// An entry whose bytes would end past the largest offset there is.
    #[error(
        "entry at {tensor}+{offset}: {len} bytes from there run past the largest possible offset"
    )]
    OffsetOverflow {
        tensor: String,
        offset: u64,
        len: usize,
    },
    /// A low-rank entry that cannot be one (no rank, factors of part rows).
    #[error(transparent)]
    LowRank(#[from] LowRankError),
    /// A tensor with a low-rank entry and another entry (either kind).
    #[error("{tensor}: a tensor with a low-rank entry can have no other entry in the same patch")]
    Mixed { tensor: String },
    /// Two entries of one patch cover the same bytes.
    #[error("entries at {tensor}+{first} and {tensor}+{second} overlap")]
    Overlap {
        tensor: String,
        first: u64,
        second: u64,
    },
}

/// Read access to the base model for verification and diffing.
pub trait BaseModel {
    /// A tensor's header entry and its base bytes (`info.byte_len()` of them). A source may
    /// hold only the bytes the caller said it would read (a remote model's).
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, Box<dyn ByteSource + '_>)>;

    /// The base's GGUF header, when it is a GGUF file (metadata entries check against it).
    fn gguf(&self) -> Option<&crate::gguf::GgufHeader> {
        None
    }
}

/// `len` bytes at `offset` of a source.
fn read_span(source: &dyn ByteSource, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    source.read(offset, &mut out);
    out
}

impl Patch {
    /// An empty patch against `base`.
    pub fn new(base: Vec<Fingerprint>, created: String, note: String) -> Patch {
        Patch {
            format: FORMAT.into(),
            version: 1,
            created,
            note,
            base,
            entries: Vec::new(),
            low_rank: Vec::new(),
            metadata: Vec::new(),
            factors: Vec::new(),
        }
    }

    /// Parses and checks a patch document (format, version, entry lengths, overlaps).
    pub fn from_json(text: &str) -> Result<Patch, PatchError> {
        let mut patch: Patch = serde_json::from_str(text).map_err(|e| PatchError::Parse {
            reason: e.to_string(),
        })?;
        let low_rank_ok = patch.version >= 2 || patch.low_rank.is_empty();
        let metadata_ok = patch.version >= 3 || patch.metadata.is_empty();
        if patch.format != FORMAT
            || !(1..=VERSION).contains(&patch.version)
            || !low_rank_ok
            || !metadata_ok
        {
            return Err(PatchError::Version {
                format: patch.format,
                version: patch.version,
            });
        }
        patch.entries = normalize(patch.entries)?;
        check_low_rank(&patch)?;
        Ok(patch)
    }

    /// About how many bytes [`Patch::to_json`] writes, without writing it.
    pub fn json_len_estimate(&self) -> u64 {
        let head = 200 + self.note.len() + 150 * self.base.len();
        let entries: usize = self
            .entries
            .iter()
            .map(|e| 100 + e.tensor.len() + 4 * e.patched.len())
            .sum();
        (head + entries) as u64
    }

    /// The patch as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The net difference between `base` and the overlay, element-aligned and coalesced.
    pub fn entries_from_overlay(overlay: &Overlay, base: &impl BaseModel) -> Vec<PatchEntry> {
        overlay
            .tensors()
            .flat_map(|(name, runs)| Self::tensor_entries(name, runs, base))
            .collect()
    }

    /// [`Patch::entries_from_overlay`] for one tensor's runs.
    pub fn tensor_entries(name: &str, runs: &RangeMap, base: &impl BaseModel) -> Vec<PatchEntry> {
        let mut out: Vec<PatchEntry> = Vec::new();
        Self::tensor_changes(name, runs, base, &mut |g, old, new| match out.last_mut() {
            Some(last) if last.end() == g => {
                last.original.extend_from_slice(old);
                last.patched.extend_from_slice(new);
            }
            _ => out.push(PatchEntry {
                tensor: name.to_string(),
                offset: g,
                original: old.to_vec(),
                patched: new.to_vec(),
                origin: None,
            }),
        });
        out
    }

    /// Calls `each(offset, base bytes, new bytes)` for every granule of tensor `name` that
    /// `runs` change, in order: an element (a byte for the packed dtypes; a whole block for a
    /// tensor stored as blocks). Nothing is kept, so counting changes of a large overlay costs
    /// no allocation per change.
    pub fn tensor_changes(
        name: &str,
        runs: &RangeMap,
        base: &impl BaseModel,
        each: &mut impl FnMut(u64, &[u8], &[u8]),
    ) {
        let Some((info, bytes)) = base.tensor(name) else {
            return;
        };
        let size = info.byte_len();
        // Element-sized granules (one byte for the packed dtypes) keep entries readable;
        // a tensor stored as blocks changes by whole blocks.
        let granule = match info.blocks {
            Some(ty) => ty.block_bytes() as u64,
            None if dtype::is_packed(info.dtype) => 1,
            None => dtype::element_bytes(info.dtype) as u64,
        };
        // The end of the last granule reported: a run starting inside it is already covered.
        let mut done = 0u64;
        for (start, run) in runs.runs() {
            // One buffer per run: the granules it touches, with every run laid over them.
            let lo = (start - start % granule).max(done);
            let hi = (start + run.len() as u64)
                .div_ceil(granule)
                .saturating_mul(granule)
                .min(size);
            if lo >= hi {
                continue;
            }
            let old_span = read_span(&*bytes, lo, (hi - lo) as usize);
            let mut new_span = old_span.clone();
            runs.lay_onto(lo, &mut new_span);
            for (k, (old, new)) in old_span
                .chunks(granule as usize)
                .zip(new_span.chunks(granule as usize))
                .enumerate()
            {
                if new != old {
                    each(lo + k as u64 * granule, old, new);
                }
            }
            done = hi;
        }
    }

    /// The overlay that applying this patch produces.
    pub fn to_overlay(&self) -> Overlay {
        let mut overlay = Overlay::default();
        for e in &self.entries {
            overlay.write(&e.tensor, e.offset, &e.patched);
        }
        overlay
    }

    /// Entries of one tensor, by offset.
    pub fn entries_for<'a>(&'a self, tensor: &'a str) -> impl Iterator<Item = &'a PatchEntry> + 'a {
        self.entries.iter().filter(move |e| e.tensor == tensor)
    }

    /// The patch that undoes this one.
    pub fn invert(&self) -> Patch {
        let mut out = self.clone();
        for e in &mut out.entries {
            std::mem::swap(&mut e.original, &mut e.patched);
        }
        for e in &mut out.metadata {
            std::mem::swap(&mut e.original, &mut e.patched);
        }
        for e in &mut out.factors {
            *e = e.negated();
        }
        out
    }

    /// Adds changes (from an edit) to the patch: the patched bytes become the changes' new
    /// bytes; originals stay those of the base.
    pub fn record(&mut self, changes: &[Change], base: &impl BaseModel, origin: &Origin) {
        let mut overlay = self.to_overlay();
        let mut origins = OriginMap::from_entries(&self.entries);
        for c in changes {
            overlay.write(&c.tensor, c.offset, &c.after);
            origins.mark(&c.tensor, c.offset, c.after.len(), origin);
        }
        self.entries = origins.split(Patch::entries_from_overlay(&overlay, base));
    }
}

/// Rejects malformed low-rank entries, two on one tensor, or one beside byte entries.
pub fn check_low_rank(patch: &Patch) -> Result<(), PatchError> {
    for e in &patch.factors {
        e.factor_shape()?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &patch.low_rank {
        e.factor_shape()?;
        if !seen.insert(e.tensor.as_str()) || patch.entries.iter().any(|b| b.tensor == e.tensor) {
            return Err(PatchError::Mixed {
                tensor: e.tensor.clone(),
            });
        }
    }
    Ok(())
}

/// Sorts entries, rejects empty or unequal-length ones and overlaps, and coalesces adjacent.
pub fn normalize(mut entries: Vec<PatchEntry>) -> Result<Vec<PatchEntry>, PatchError> {
    for e in &entries {
        if e.original.len() != e.patched.len() || e.original.is_empty() {
            return Err(PatchError::Length {
                tensor: e.tensor.clone(),
                offset: e.offset,
                original: e.original.len(),
                patched: e.patched.len(),
            });
        }
        // Past this check `end()` cannot overflow, whatever a file claims.
        if e.offset.checked_add(e.patched.len() as u64).is_none() {
            return Err(PatchError::OffsetOverflow {
                tensor: e.tensor.clone(),
                offset: e.offset,
                len: e.patched.len(),
            });
        }
    }
    entries.sort_by(|a, b| (&a.tensor, a.offset).cmp(&(&b.tensor, b.offset)));
    let mut out: Vec<PatchEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.last_mut() {
            Some(last) if last.tensor == e.tensor && last.end() > e.offset => {
                return Err(PatchError::Overlap {
                    tensor: e.tensor,
                    first: last.offset,
                    second: e.offset,
                });
            }
            Some(last)
                if last.tensor == e.tensor && last.end() == e.offset && last.origin == e.origin =>
            {
                last.original.extend_from_slice(&e.original);
                last.patched.extend_from_slice(&e.patched);
            }
            _ => out.push(e),
        }
    }
    Ok(out)
}

/// The tensor element an entry byte belongs to, for display: `(flat index, multi-index)`.
pub fn element_of(info: &TensorInfo, byte_offset: u64) -> (u64, Vec<u64>) {
    let flat = match info.blocks {
        // The first element of the block the byte is in.
        Some(ty) => byte_offset / ty.block_bytes() as u64 * ty.block_elements() as u64,
        None => byte_offset * 8 / dtype::bits(info.dtype) as u64,
    };
    (flat, slice::unflatten(&info.shape, flat))
}

mod combine;
pub mod diff;
#[cfg(test)]
mod tests;
