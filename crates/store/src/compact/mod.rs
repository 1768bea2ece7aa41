//! The compact patch form, for patches too large to read as JSON: per tensor, the XOR of
//! original and patched bytes (a symmetric delta), byte-shuffled by element width and
//! compressed with zstd, plus BLAKE3 digests of the original and of the patched bytes, so a
//! base can be checked without the patch carrying its bytes.
//!
//! A compact patch becomes a full [`Patch`] against a base model with
//! [`CompactPatch::expand`]: original = the base's bytes, patched = base XOR delta. Inverting
//! keeps the delta and swaps the digests. Every run keeps its entry's origin (provenance).
//! The byte layout is in `docs/patch-format.md`.
//!
//! ```
//! use tensor_surgeon_core::patch::{Patch, PatchEntry};
//! use tensor_surgeon_store::compact::CompactPatch;
//! let mut p = Patch::new(vec![], "2026-01-01T00:00:00Z".into(), String::new());
//! p.entries.push(PatchEntry { tensor: "w".into(), offset: 4, original: vec![1, 2], patched: vec![3, 2], origin: None });
//! let bytes = CompactPatch::from_patch(&p, |_| Some(2)).to_bytes().unwrap();
//! let back = CompactPatch::from_bytes(&bytes).unwrap();
//! assert_eq!(back.tensors[0].delta, vec![2, 0]);
//! ```

mod codec;
#[cfg(test)]
mod tests;

use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{
    BaseModel, Conflict, ConflictKind, Fingerprint, Origin, Patch, PatchEntry, FORMAT,
};
use tensor_surgeon_core::source::ByteSource;

pub use codec::{is_compact, COMPACT_VERSION, FRAME_BYTES, LEVEL, MAGIC};

/// A patch in compact form: deltas and digests, no original bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactPatch {
    /// RFC 3339 creation time.
    pub created: String,
    pub note: String,
    /// The base model, one fingerprint per file (shard).
    pub base: Vec<Fingerprint>,
    /// The origins the runs refer to (a run's origin id `k > 0` is `origins[k - 1]`).
    pub origins: Vec<Origin>,
    /// One record per changed tensor, by name.
    pub tensors: Vec<TensorDelta>,
    /// The factors behind a quantized tensor's blocks ([`Patch::factors`]): kept, never
    /// applied.
    pub factors: Vec<tensor_surgeon_core::patch::LowRankEntry>,
}

/// The changes to one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDelta {
    pub name: String,
    /// The element width in bytes the delta is shuffled by (1: not shuffled).
    pub width: u8,
    /// BLAKE3 of the original bytes of every run, concatenated in run order.
    pub original_digest: [u8; 32],
    /// BLAKE3 of the patched bytes of every run, concatenated in run order.
    pub patched_digest: [u8; 32],
    /// Byte runs `(offset within the tensor's data, length)`, sorted, not overlapping.
    pub runs: Vec<(u64, u64)>,
    /// Per run: its origin id (0: none, `k`: the patch's `origins[k - 1]`).
    pub run_origins: Vec<u32>,
    /// Original XOR patched over the runs, concatenated in run order.
    pub delta: Vec<u8>,
}

/// A model's tensor sizes in bytes, by name (`None`: no such tensor): what a compact patch's
/// runs may reach.
pub type TensorBytes<'a> = &'a dyn Fn(&str) -> Option<u64>;

/// What is wrong with a compact patch file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// The file does not start with the compact magic bytes.
    #[error("not a compact patch (bad magic bytes)")]
    BadMagic,
    /// A version this build does not read.
    #[error("compact patch version {found} is not supported (this build reads version {COMPACT_VERSION})")]
    Version { found: u32 },
    /// The file ends early.
    #[error("truncated: the {what} needs {expected} bytes but the file has {found}")]
    Truncated {
        what: &'static str,
        expected: u64,
        found: u64,
    },
    /// Bytes after the compressed body.
    #[error("{extra} unexpected byte(s) after the compressed body")]
    Trailing { extra: u64 },
    /// The compressed body does not match its BLAKE3.
    #[error("checksum mismatch: the compressed body is damaged")]
    Checksum,
    /// The body is not a zstd stream of the stated length.
    #[error("the body does not decompress: {reason}")]
    Decompress { reason: String },
    /// The decompressed body is not a valid tensor table and delta.
    #[error("malformed body: {reason}")]
    Body { reason: String },
    /// Patched bytes whose digest does not match although the originals do.
    #[error("{tensor}: the patched bytes do not match their checksum; the patch is damaged")]
    PatchedDigest { tensor: String },
}

/// Why a compact patch does not expand against a base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpandError {
    /// The base does not fit the patch.
    Conflicts(Vec<Conflict>),
    /// The patch itself is damaged.
    Damaged(CompactError),
}

impl TensorDelta {
    /// The delta of a tensor from its `base` bytes to its `other` bytes over `runs`.
    pub fn between(
        name: &str,
        width: u8,
        runs: Vec<(u64, u64)>,
        base: &[u8],
        other: &[u8],
    ) -> TensorDelta {
        let (mut ho, mut hp) = (blake3::Hasher::new(), blake3::Hasher::new());
        let mut delta = Vec::with_capacity(runs.iter().map(|r| r.1 as usize).sum());
        for &(offset, len) in &runs {
            let range = offset as usize..(offset + len) as usize;
            let (o, p) = (&base[range.clone()], &other[range]);
            ho.update(o);
            hp.update(p);
            delta.extend(o.iter().zip(p).map(|(a, b)| a ^ b));
        }
        TensorDelta {
            name: name.to_string(),
            width,
            original_digest: *ho.finalize().as_bytes(),
            patched_digest: *hp.finalize().as_bytes(),
            run_origins: vec![0; runs.len()],
            runs,
            delta,
        }
    }
}

/// The widest element size (8, 4 or 2) dividing every run's offset and length; else 1.
fn guess_width(runs: &[(u64, u64)]) -> u8 {
    [8u8, 4, 2]
        .into_iter()
        .find(|&w| {
            runs.iter()
                .all(|&(o, l)| o % w as u64 == 0 && l % w as u64 == 0)
        })
        .unwrap_or(1)
}

impl CompactPatch {
    /// The compact form of `patch`; `width_of` gives a tensor's element width in bytes (the
    /// shuffle width; 1 for packed dtypes), or `None` to guess it from the runs' alignment.
    pub fn from_patch(patch: &Patch, width_of: impl Fn(&str) -> Option<usize>) -> CompactPatch {
        let mut entries: Vec<&PatchEntry> = patch.entries.iter().collect();
        entries.sort_by(|a, b| (&a.tensor, a.offset).cmp(&(&b.tensor, b.offset)));
        let mut tensors: Vec<TensorDelta> = Vec::new();
        let mut hashers: Vec<(blake3::Hasher, blake3::Hasher)> = Vec::new();
        let mut origins: Vec<Origin> = Vec::new();
        for e in entries {
            let origin = match &e.origin {
                None => 0,
                Some(o) => match origins.iter().position(|x| x == o) {
                    Some(i) => i as u32 + 1,
                    None => {
                        origins.push(o.clone());
                        origins.len() as u32
                    }
                },
            };
            if tensors.last().is_none_or(|t| t.name != e.tensor) {
                tensors.push(TensorDelta {
                    name: e.tensor.clone(),
                    width: 1,
                    original_digest: [0; 32],
                    patched_digest: [0; 32],
                    runs: Vec::new(),
                    run_origins: Vec::new(),
                    delta: Vec::new(),
                });
                hashers.push((blake3::Hasher::new(), blake3::Hasher::new()));
            }
            let (Some(t), Some((ho, hp))) = (tensors.last_mut(), hashers.last_mut()) else {
                continue;
            };
            let len = e.patched.len() as u64;
            match t.runs.last_mut() {
                Some(last)
                    if last.0 + last.1 == e.offset && t.run_origins.last() == Some(&origin) =>
                {
                    last.1 += len
                }
                _ => {
                    t.runs.push((e.offset, len));
                    t.run_origins.push(origin);
                }
            }
            t.delta
                .extend(e.original.iter().zip(&e.patched).map(|(o, p)| o ^ p));
            ho.update(&e.original);
            hp.update(&e.patched);
        }
        for (t, (ho, hp)) in tensors.iter_mut().zip(hashers) {
            t.original_digest = *ho.finalize().as_bytes();
            t.patched_digest = *hp.finalize().as_bytes();
            t.width = match width_of(&t.name) {
                Some(w @ 1..=16) => w as u8,
                _ => guess_width(&t.runs),
            };
        }
        CompactPatch {
            created: patch.created.clone(),
            note: patch.note.clone(),
            base: patch.base.clone(),
            origins,
            tensors,
            factors: patch.factors.clone(),
        }
    }

    /// Number of byte runs over all tensors.
    pub fn entry_count(&self) -> usize {
        self.tensors.iter().map(|t| t.runs.len()).sum()
    }

    /// The patch that undoes this one: the same delta, the digests swapped.
    pub fn invert(&self) -> CompactPatch {
        let mut out = self.clone();
        for t in &mut out.tensors {
            std::mem::swap(&mut t.original_digest, &mut t.patched_digest);
        }
        for f in &mut out.factors {
            *f = f.negated();
        }
        out
    }

    /// The full patch against `base`, with the runs of `over` (an earlier patch) laid over the
    /// base first when given. Every tensor's original bytes must match their digest.
    pub fn expand(
        &self,
        base: &impl BaseModel,
        over: Option<&Overlay>,
    ) -> Result<Patch, ExpandError> {
        let mut conflicts = Vec::new();
        let mut entries: Vec<PatchEntry> = Vec::with_capacity(self.entry_count());
        for t in &self.tensors {
            let (Some(first), Some(last)) = (t.runs.first(), t.runs.last()) else {
                continue;
            };
            let whole = |kind| Conflict {
                tensor: t.name.clone(),
                offset: first.0,
                len: last.0 + last.1 - first.0,
                kind,
            };
            let Some((info, bytes)) = base.tensor(&t.name) else {
                conflicts.push(whole(ConflictKind::MissingTensor));
                continue;
            };
            let size = info.byte_len();
            let laid = over.and_then(|o| o.tensor(&t.name));
            let (mut ho, mut hp) = (blake3::Hasher::new(), blake3::Hasher::new());
            let mut fits = true;
            let mut at = 0usize;
            let start = entries.len();
            for (&(offset, len), &id) in t.runs.iter().zip(&t.run_origins) {
                let origin = (id as usize)
                    .checked_sub(1)
                    .and_then(|i| self.origins.get(i))
                    .cloned();
                let delta = &t.delta[at..at + len as usize];
                at += len as usize;
                if offset.checked_add(len).is_none_or(|e| e > size) {
                    conflicts.push(Conflict {
                        tensor: t.name.clone(),
                        offset,
                        len,
                        kind: ConflictKind::OutOfRange { tensor_bytes: size },
                    });
                    fits = false;
                    continue;
                };
                let mut original = vec![0u8; len as usize];
                bytes.read(offset, &mut original);
                if let Some(runs) = laid {
                    runs.lay_onto(offset, &mut original);
                }
                let patched: Vec<u8> = original.iter().zip(delta).map(|(o, d)| o ^ d).collect();
                ho.update(&original);
                hp.update(&patched);
                let joins = entries.len() > start;
                match entries.last_mut() {
                    Some(prev) if joins && prev.end() == offset && prev.origin == origin => {
                        prev.original.extend_from_slice(&original);
                        prev.patched.extend_from_slice(&patched);
                    }
                    _ => entries.push(PatchEntry {
                        tensor: t.name.clone(),
                        offset,
                        original,
                        patched,
                        origin,
                    }),
                }
            }
            if !fits {
                entries.truncate(start);
            } else if *ho.finalize().as_bytes() != t.original_digest {
                entries.truncate(start);
                conflicts.push(whole(ConflictKind::BaseDiffers {
                    runs: t.runs.len() as u64,
                }));
            } else if *hp.finalize().as_bytes() != t.patched_digest {
                return Err(ExpandError::Damaged(CompactError::PatchedDigest {
                    tensor: t.name.clone(),
                }));
            }
        }
        if !conflicts.is_empty() {
            return Err(ExpandError::Conflicts(conflicts));
        }
        Ok(Patch {
            format: FORMAT.into(),
            version: 1,
            created: self.created.clone(),
            note: self.note.clone(),
            base: self.base.clone(),
            entries,
            low_rank: Vec::new(),
            // The compact form holds byte entries and factors (a patch with metadata saves
            // as JSON).
            metadata: Vec::new(),
            factors: self.factors.clone(),
        })
    }
}
