//! A patch against its base: checking its entries, and making its low-rank entries into byte
//! entries.

use super::{low_rank, read_span, BaseModel, Conflict, ConflictKind, Patch, PatchEntry};
use crate::overlay::Overlay;
use crate::source::ByteSource;

impl Patch {
    /// Checks every entry against the base, low-rank ones by applying them; an empty list
    /// means the patch applies cleanly.
    pub fn verify(&self, base: &impl BaseModel) -> Vec<Conflict> {
        let mut conflicts = self.verify_bytes(base);
        if let Err(more) = self.expand_low_rank(base, None) {
            conflicts.extend(more);
        }
        conflicts.extend(self.metadata.iter().filter_map(|e| e.verify(base)));
        conflicts
    }

    /// Checks the byte entries against the base.
    pub fn verify_bytes(&self, base: &impl BaseModel) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        for e in &self.entries {
            let len = e.original.len() as u64;
            let conflict = |kind| Conflict {
                tensor: e.tensor.clone(),
                offset: e.offset,
                len,
                kind,
            };
            let Some((info, bytes)) = base.tensor(&e.tensor) else {
                conflicts.push(conflict(ConflictKind::MissingTensor));
                continue;
            };
            let size = info.byte_len();
            if e.offset.checked_add(len).is_none_or(|end| end > size) {
                conflicts.push(conflict(ConflictKind::OutOfRange { tensor_bytes: size }));
                continue;
            }
            let found = read_span(&*bytes, e.offset, len as usize);
            if found != e.original {
                conflicts.push(conflict(ConflictKind::Mismatch {
                    expected: e.original.clone(),
                    found,
                }));
            }
        }
        conflicts
    }

    /// The byte entries the low-rank entries make of `base` (with `over`, an earlier layer,
    /// laid onto it: the entries' original bytes are then that layer's), or where they do not
    /// fit. Each tensor is read row by row.
    pub fn expand_low_rank(
        &self,
        base: &impl BaseModel,
        over: Option<&Overlay>,
    ) -> Result<Vec<PatchEntry>, Vec<Conflict>> {
        let mut out = Vec::new();
        let mut conflicts = Vec::new();
        for e in &self.low_rank {
            let Some((info, bytes)) = base.tensor(&e.tensor) else {
                conflicts.push(Conflict::whole(&e.tensor, 0, ConflictKind::MissingTensor));
                continue;
            };
            let whole = |kind| Conflict::whole(&e.tensor, info.byte_len(), kind);
            if let Err(err) = e.check(info) {
                conflicts.push(whole(ConflictKind::LowRankMisfit {
                    reason: err.to_string(),
                }));
                continue;
            }
            // Over the base alone, one pass reads the tensor for both digests.
            if over.is_some() && low_rank::sha256_of(info, &*bytes) != e.base_sha256 {
                conflicts.push(whole(ConflictKind::TensorDiffers));
                continue;
            }
            let viewed;
            let source: &dyn ByteSource = match over {
                Some(o) => {
                    viewed = o.view_stored(&e.tensor, &*bytes);
                    &viewed
                }
                None => &*bytes,
            };
            match e.to_entries(info, source) {
                Ok(m) if over.is_none() && m.source_sha256 != e.base_sha256 => {
                    conflicts.push(whole(ConflictKind::TensorDiffers))
                }
                Ok(m) if over.is_none() && m.patched_sha256 != e.patched_sha256 => {
                    conflicts.push(whole(ConflictKind::ResultDiffers))
                }
                Ok(m) => out.extend(m.entries),
                Err(err) => conflicts.push(whole(ConflictKind::LowRankMisfit {
                    reason: err.to_string(),
                })),
            }
        }
        if conflicts.is_empty() {
            Ok(out)
        } else {
            Err(conflicts)
        }
    }

    /// The patch all in byte entries, checked against `base`: byte entries byte by byte,
    /// low-rank ones by their tensor's digest, then made into byte entries (over `over`, an
    /// earlier layer, when given); or every place where it does not fit.
    pub fn materialized(
        mut self,
        base: &impl BaseModel,
        over: Option<&Overlay>,
    ) -> Result<Patch, Vec<Conflict>> {
        let mut conflicts = self.verify_bytes(base);
        match self.expand_low_rank(base, over) {
            Ok(entries) => {
                // A tensor with a low-rank entry has no byte entries: nothing can overlap.
                self.entries.extend(entries);
                self.entries
                    .sort_by(|a, b| (&a.tensor, a.offset).cmp(&(&b.tensor, b.offset)));
                self.low_rank.clear();
            }
            Err(more) => conflicts.extend(more),
        }
        conflicts.extend(self.metadata.iter().filter_map(|e| e.verify(base)));
        if conflicts.is_empty() {
            Ok(self)
        } else {
            Err(conflicts)
        }
    }
}
