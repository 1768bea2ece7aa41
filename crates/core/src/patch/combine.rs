//! Combining two patches run by run: the bytes covered by only one patch are copied as runs,
//! and only where both patches cover the same bytes are they compared byte by byte, so two
//! whole-tensor patches of 100 MB combine in one pass over their bytes.

use super::{Conflict, ConflictKind, OriginMap, Patch, PatchEntry};
use std::collections::BTreeMap;

/// Appends the bytes of `(original, patched)` at `offset` that differ, coalescing runs.
fn push_changed(
    out: &mut Vec<PatchEntry>,
    tensor: &str,
    offset: u64,
    original: &[u8],
    patched: &[u8],
) {
    let mut i = 0;
    while i < original.len() {
        if original[i] == patched[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < original.len() && original[i] != patched[i] {
            i += 1;
        }
        let at = offset + start as u64;
        match out.last_mut() {
            Some(last) if last.tensor == tensor && last.end() == at => {
                last.original.extend_from_slice(&original[start..i]);
                last.patched.extend_from_slice(&patched[start..i]);
            }
            _ => out.push(PatchEntry {
                tensor: tensor.to_string(),
                offset: at,
                original: original[start..i].to_vec(),
                patched: patched[start..i].to_vec(),
                origin: None,
            }),
        }
    }
}

/// The entry of `entries` (sorted, not overlapping) covering `at`, advancing `next` past the
/// entries that end at or before it.
fn covering<'a>(entries: &[&'a PatchEntry], next: &mut usize, at: u64) -> Option<&'a PatchEntry> {
    while entries.get(*next).is_some_and(|e| e.end() <= at) {
        *next += 1;
    }
    entries.get(*next).copied().filter(|e| e.offset <= at)
}

/// Entries grouped by tensor (both patches), each group by offset.
type Groups<'a> = BTreeMap<&'a str, (Vec<&'a PatchEntry>, Vec<&'a PatchEntry>)>;

impl Patch {
    /// Combines `self` and `other` (both against the same base, or `other` against the result
    /// of `self`). Where both cover a byte: `other`'s original equal to `self`'s patched is a
    /// sequence (the later value wins); equal originals with equal patched values agree;
    /// anything else is a conflict. Bytes that end up equal to the base are dropped. The
    /// combined patch is returned only without conflicts.
    pub fn combine(&self, other: &Patch) -> Result<Patch, Vec<Conflict>> {
        let mut groups: Groups = BTreeMap::new();
        for e in &self.entries {
            groups.entry(&e.tensor).or_default().0.push(e);
        }
        for e in &other.entries {
            groups.entry(&e.tensor).or_default().1.push(e);
        }
        let mut entries: Vec<PatchEntry> = Vec::new();
        let mut conflicts: Vec<Conflict> = Vec::new();
        for (tensor, (mut a, mut b)) in groups {
            a.sort_by_key(|e| e.offset);
            b.sort_by_key(|e| e.offset);
            let mut cuts: Vec<u64> = a
                .iter()
                .chain(&b)
                .flat_map(|e| [e.offset, e.end()])
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let (mut na, mut nb) = (0, 0);
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0], w[1]);
                let part = |e: &PatchEntry| {
                    let (s, t) = ((lo - e.offset) as usize, (hi - e.offset) as usize);
                    (e.original[s..t].to_vec(), e.patched[s..t].to_vec())
                };
                match (covering(&a, &mut na, lo), covering(&b, &mut nb, lo)) {
                    (None, None) => {}
                    (Some(e), None) | (None, Some(e)) => {
                        let (o, p) = part(e);
                        push_changed(&mut entries, tensor, lo, &o, &p);
                    }
                    (Some(x), Some(y)) => {
                        let ((xo, xp), (yo, yp)) = (part(x), part(y));
                        let mut patched = Vec::with_capacity(xp.len());
                        for i in 0..xp.len() {
                            if yo[i] == xp[i] {
                                patched.push(yp[i]); // a sequence: the later value wins
                                continue;
                            }
                            if yo[i] == xo[i] && yp[i] == xp[i] {
                                patched.push(xp[i]); // the same change in both
                                continue;
                            }
                            let kind = if yo[i] == xo[i] {
                                ConflictKind::Clash {
                                    first: vec![xp[i]],
                                    second: vec![yp[i]],
                                }
                            } else {
                                ConflictKind::Mismatch {
                                    expected: vec![yo[i]],
                                    found: vec![xp[i]],
                                }
                            };
                            let conflict = Conflict {
                                tensor: tensor.to_string(),
                                offset: lo + i as u64,
                                len: 1,
                                kind,
                            };
                            push_conflict(&mut conflicts, conflict);
                            patched.push(xo[i]);
                        }
                        push_changed(&mut entries, tensor, lo, &xo, &patched);
                    }
                }
            }
        }
        let metadata = match super::metadata::combine(&self.metadata, &other.metadata) {
            Ok(m) => m,
            Err(more) => {
                conflicts.extend(more);
                Vec::new()
            }
        };
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
        // Each byte keeps the origin of the patch whose value it carries.
        let mut origins = OriginMap::from_entries(&self.entries);
        for e in &other.entries {
            if let Some(o) = &e.origin {
                origins.mark(&e.tensor, e.offset, e.patched.len(), o);
            }
        }
        let entries = origins.split(entries);
        let note = match (self.note.is_empty(), other.note.is_empty()) {
            (false, false) => format!("{}\n{}", self.note, other.note),
            (false, true) => self.note.clone(),
            _ => other.note.clone(),
        };
        // Both patches' factors: the second's change comes on top of the first's.
        let factors = self.factors.iter().chain(&other.factors).cloned().collect();
        Ok(Patch {
            entries,
            note,
            metadata,
            factors,
            ..self.clone()
        })
    }
}

/// Merges adjacent byte conflicts of the same kind into one line.
fn push_conflict(conflicts: &mut Vec<Conflict>, c: Conflict) {
    if let Some(last) = conflicts.last_mut() {
        if last.tensor == c.tensor && last.offset + last.len == c.offset {
            match (&mut last.kind, &c.kind) {
                (
                    ConflictKind::Clash { first, second },
                    ConflictKind::Clash {
                        first: f,
                        second: s,
                    },
                ) => {
                    first.extend_from_slice(f);
                    second.extend_from_slice(s);
                    last.len += 1;
                    return;
                }
                (
                    ConflictKind::Mismatch { expected, found },
                    ConflictKind::Mismatch {
                        expected: e,
                        found: f,
                    },
                ) => {
                    expected.extend_from_slice(e);
                    found.extend_from_slice(f);
                    last.len += 1;
                    return;
                }
                _ => {}
            }
        }
    }
    conflicts.push(c);
}
