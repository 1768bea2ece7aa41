//! Comparing two models tensor by tensor: which elements changed, by how much, and the patch
//! that turns one into the other. Both models are memory-mapped; equal tensors are skipped
//! with one comparison, changed ones are compared in chunks on every core.

use crate::Result;
use rayon::prelude::*;
use std::path::Path;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::patch::diff::{append_runs, diff_bytes, DeltaStats, Scratch};
use tensor_surgeon_core::patch::PatchEntry;
use tensor_surgeon_store::compact::{CompactPatch, TensorDelta};
use tensor_surgeon_store::model::Bytes;
use tensor_surgeon_store::patch_files::{self, Format};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::CompareRow;

/// Elements per chunk: a multiple of 8, so packed chunks end on whole bytes; small enough for
/// the decoded chunk to stay in cache.
const CHUNK_ELEMENTS: u64 = 1 << 17;

/// One tensor present in both models with the same dtype and shape.
struct Pair<'a> {
    info: &'a TensorInfo,
    base: Bytes<'a>,
    other: Bytes<'a>,
}

/// The comparison of one pair.
struct Compared {
    runs: Vec<(u64, u64)>,
    stats: DeltaStats,
}

/// Tensors that cannot be compared, with the reason.
/// Every pair of same-named tensors (a remote model's are read whole, through the cache).
#[allow(clippy::type_complexity)]
fn pair_up<'a>(
    base: &'a Model,
    other: &'a Model,
) -> Result<(Vec<Pair<'a>>, Vec<(String, String)>)> {
    let mut pairs = Vec::new();
    let mut skipped = Vec::new();
    let describe = |t: &TensorInfo| format!("{} {:?}", dtype::name(t.dtype), t.shape);
    for (shard, info) in base.tensors() {
        match other.get(&info.name) {
            Err(_) => skipped.push((info.name.clone(), "only in BASE".to_string())),
            Ok((_, o)) if o.dtype != info.dtype || o.shape != info.shape => skipped.push((
                info.name.clone(),
                format!("{} in BASE, {} in OTHER", describe(info), describe(o)),
            )),
            Ok((other_shard, o)) => pairs.push(Pair {
                info,
                base: shard.data(info)?,
                other: other_shard.data(o)?,
            }),
        }
    }
    for (_, info) in other.tensors() {
        if base.get(&info.name).is_err() {
            skipped.push((info.name.clone(), "only in OTHER".to_string()));
        }
    }
    Ok((pairs, skipped))
}

/// Compares every pair: equal tensors at once, changed ones chunk by chunk in parallel.
fn compare(pairs: &[Pair]) -> Vec<Compared> {
    let equal: Vec<bool> = pairs.par_iter().map(|p| *p.base == *p.other).collect();
    let mut jobs = Vec::new();
    for (i, p) in pairs.iter().enumerate().filter(|(i, _)| !equal[*i]) {
        let bits = dtype::bits(p.info.dtype) as u64;
        let n = p.info.elements();
        for first in (0..n).step_by(CHUNK_ELEMENTS as usize) {
            let lo = first * bits / 8;
            let hi = if first + CHUNK_ELEMENTS >= n {
                p.base.len() as u64
            } else {
                (first + CHUNK_ELEMENTS) * bits / 8
            };
            jobs.push((i, lo as usize, hi as usize));
        }
    }
    let parts: Vec<_> = jobs
        .par_iter()
        .map_init(Scratch::default, |scratch, &(i, lo, hi)| {
            let p = &pairs[i];
            diff_bytes(
                p.info.dtype,
                &p.base[lo..hi],
                &p.other[lo..hi],
                lo as u64,
                scratch,
            )
        })
        .collect();
    let mut out: Vec<Compared> = pairs
        .iter()
        .map(|_| Compared {
            runs: Vec::new(),
            stats: DeltaStats::default(),
        })
        .collect();
    for (&(i, _, _), (runs, stats)) in jobs.iter().zip(parts) {
        append_runs(&mut out[i].runs, &runs);
        out[i].stats.merge(&stats);
    }
    for (c, p) in out.iter_mut().zip(pairs) {
        c.stats.elements = p.info.elements();
    }
    out
}

/// A model compared with another: the pairs of same-named tensors (same dtype and shape), how
/// each changed, and the tensors left out with the reason.
pub struct Comparison<'a> {
    pairs: Vec<Pair<'a>>,
    compared: Vec<Compared>,
    /// Tensors not compared (only on one side, or another dtype or shape), with the reason.
    pub skipped: Vec<(String, String)>,
}

impl<'a> Comparison<'a> {
    /// Compares `base` with `other`.
    pub fn new(base: &'a Model, other: &'a Model) -> Result<Comparison<'a>> {
        let (pairs, skipped) = pair_up(base, other)?;
        let compared = compare(&pairs);
        Ok(Comparison {
            pairs,
            compared,
            skipped,
        })
    }

    /// Tensors compared.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no tensor could be compared.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Per compared tensor: changed elements, relative L2 norm and max |delta| of the change.
    pub fn rows(&self) -> Vec<CompareRow> {
        self.pairs
            .iter()
            .zip(&self.compared)
            .map(|(p, c)| CompareRow {
                tensor: p.info.name.clone(),
                dtype: dtype::name(p.info.dtype).to_string(),
                shape: p.info.shape.clone(),
                elements: c.stats.elements,
                changed: c.stats.changed,
                rel_l2: c.stats.rel_l2(),
                max_abs_delta: c.stats.max_abs,
            })
            .collect()
    }

    /// The entries of the patch from `base` to `other`, bytes copied from both sides.
    pub fn entries(&self) -> Vec<PatchEntry> {
        self.entries_iter().collect()
    }

    /// The same entries made one at a time (a caller that consumes them holds one at once).
    pub fn entries_iter(&self) -> impl Iterator<Item = PatchEntry> + '_ {
        self.pairs
            .iter()
            .zip(&self.compared)
            .flat_map(|(p, c)| entries_of(p, c))
    }

    /// Bytes that differ, over every compared tensor.
    pub fn changed_bytes(&self) -> u64 {
        self.compared
            .iter()
            .flat_map(|c| &c.runs)
            .map(|&(_, len)| len)
            .sum()
    }

    /// Writes the patch from `base` to `other` to `out` (compact when `format` asks for it or
    /// it is large); returns the form written and the entry count.
    pub fn write_patch(
        &self,
        base: &Model,
        out: &Path,
        format: Format,
        note: &str,
    ) -> Result<(Format, usize)> {
        let mut changed: Vec<(&Pair, &Compared)> = self
            .pairs
            .iter()
            .zip(&self.compared)
            .filter(|(_, c)| !c.runs.is_empty())
            .collect();
        changed.sort_by(|a, b| a.0.info.name.cmp(&b.0.info.name));
        let entries: usize = changed.iter().map(|(_, c)| c.runs.len()).sum();
        let json_len: u64 = changed
            .iter()
            .flat_map(|(p, c)| {
                c.runs
                    .iter()
                    .map(|r| 100 + p.info.name.len() as u64 + 4 * r.1)
            })
            .sum();
        let mut patch = patch_files::new_for(base, note);
        if patch_files::wants_compact(format, json_len) {
            // Straight from the mapped bytes: no copies of the original and patched bytes.
            let tensors = changed
                .par_iter()
                .map(|(p, c)| {
                    let width = patch_files::shuffle_width(p.info.dtype) as u8;
                    TensorDelta::between(&p.info.name, width, c.runs.clone(), &p.base, &p.other)
                })
                .collect();
            let compact = CompactPatch {
                created: patch.created,
                note: patch.note,
                base: patch.base,
                origins: Vec::new(),
                tensors,
                factors: Vec::new(),
            };
            patch_files::save_compact(out, &compact)?;
            return Ok((Format::Compact, entries));
        }
        for (p, c) in changed {
            patch.entries.extend(entries_of(p, c));
        }
        patch_files::save(out, &patch, Format::Json, Some(base))?;
        Ok((Format::Json, entries))
    }
}

/// The JSON patch entries of one compared pair: its changed runs, bytes from both sides.
fn entries_of<'a>(p: &'a Pair, c: &'a Compared) -> impl Iterator<Item = PatchEntry> + 'a {
    c.runs.iter().map(|&(offset, len)| {
        let range = offset as usize..(offset + len) as usize;
        PatchEntry {
            tensor: p.info.name.clone(),
            offset,
            original: p.base[range.clone()].to_vec(),
            patched: p.other[range].to_vec(),
            origin: None,
        }
    })
}

/// Whether the two models' headers (metadata, layout) differ, which a patch does not carry.
pub fn headers_differ(base: &Model, other: &Model) -> bool {
    base.shards.len() != other.shards.len()
        || base
            .shards
            .iter()
            .zip(&other.shards)
            .any(|(a, b)| a.header_bytes() != b.header_bytes())
}
