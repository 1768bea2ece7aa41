//! `diff`: the patch that turns one model into another, with per-tensor change statistics.
//! Both models are memory-mapped; equal tensors are skipped with one comparison, changed
//! ones are compared in chunks on every core.

use super::patch_cmds::plural;
use super::{human_bytes, print_json, table};
use crate::dtype;
use crate::header::TensorInfo;
use crate::patch::compact::{CompactPatch, TensorDelta};
use crate::patch::diff::{append_runs, diff_bytes, DeltaStats, Scratch};
use crate::patch::PatchEntry;
use crate::server::patches::{self, Format};
use crate::server::{Error, Model, Result};
use clap::Args;
use rayon::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Elements per chunk: a multiple of 8, so packed chunks end on whole bytes; small enough for
/// the decoded chunk to stay in cache.
const CHUNK_ELEMENTS: u64 = 1 << 17;

/// `diff BASE OTHER --out PATCH`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The model the patch applies to (a file, a folder, or an index).
    base: PathBuf,
    /// The model the patch produces.
    other: PathBuf,
    /// The patch file to write.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The form to write: JSON, compact (binary, zstd), or auto (compact above ~1 MB of JSON).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// A note to keep in the patch.
    #[arg(long, default_value = "")]
    note: String,
}

/// One tensor present in both models with the same dtype and shape.
struct Pair<'a> {
    info: &'a TensorInfo,
    base: &'a [u8],
    other: &'a [u8],
}

/// The comparison of one pair.
struct Compared {
    runs: Vec<(u64, u64)>,
    stats: DeltaStats,
}

/// Tensors that cannot be compared, with the reason.
fn unmatched<'a>(base: &'a Model, other: &'a Model) -> (Vec<Pair<'a>>, Vec<(String, String)>) {
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
                base: shard.data(info),
                other: other_shard.data(o),
            }),
        }
    }
    for (_, info) in other.tensors() {
        if base.get(&info.name).is_err() {
            skipped.push((info.name.clone(), "only in OTHER".to_string()));
        }
    }
    (pairs, skipped)
}

/// Compares every pair: equal tensors at once, changed ones chunk by chunk in parallel.
fn compare(pairs: &[Pair]) -> Vec<Compared> {
    let equal: Vec<bool> = pairs.par_iter().map(|p| p.base == p.other).collect();
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

/// A model compared with another: per-tensor rows, the tensors left out, and the entries of
/// the patch from one to the other (for the web app's "compare with...").
pub struct ModelDiff {
    pub rows: Vec<crate::api::CompareRow>,
    pub skipped: Vec<(String, String)>,
    pub entries: Vec<PatchEntry>,
}

/// Compares `base` with `other`.
pub fn diff_models(base: &Model, other: &Model) -> ModelDiff {
    let (pairs, skipped) = unmatched(base, other);
    let compared = compare(&pairs);
    let mut entries = Vec::new();
    let mut rows = Vec::new();
    for (p, c) in pairs.iter().zip(&compared) {
        rows.push(crate::api::CompareRow {
            tensor: p.info.name.clone(),
            dtype: dtype::name(p.info.dtype).to_string(),
            shape: p.info.shape.clone(),
            elements: c.stats.elements,
            changed: c.stats.changed,
            rel_l2: c.stats.rel_l2(),
            max_abs_delta: c.stats.max_abs,
        });
        entries.extend(entries_of(p, c));
    }
    ModelDiff {
        rows,
        skipped,
        entries,
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

/// Writes the patch; returns its form and entry count.
fn write_patch(
    args: &DiffArgs,
    base: &Model,
    pairs: &[Pair],
    compared: &[Compared],
) -> Result<(Format, usize)> {
    let mut changed: Vec<(&Pair, &Compared)> = pairs
        .iter()
        .zip(compared)
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
    let mut patch = patches::new_for(base, &args.note);
    if patches::wants_compact(args.format, json_len) {
        // Straight from the mapped bytes: no copies of the original and patched bytes.
        let tensors = changed
            .par_iter()
            .map(|(p, c)| {
                let width = patches::shuffle_width(p.info.dtype) as u8;
                TensorDelta::between(&p.info.name, width, c.runs.clone(), p.base, p.other)
            })
            .collect();
        let compact = CompactPatch {
            created: patch.created,
            note: patch.note,
            base: patch.base,
            origins: Vec::new(),
            tensors,
        };
        patches::save_compact(&args.out, &compact)?;
        return Ok((Format::Compact, entries));
    }
    for (p, c) in changed {
        patch.entries.extend(entries_of(p, c));
    }
    patches::save(&args.out, &patch, Format::Json, Some(base))?;
    Ok((Format::Json, entries))
}

/// Whether the two models' headers (metadata, layout) differ, which a patch does not carry.
fn headers_differ(base: &Model, other: &Model) -> bool {
    base.shards.len() != other.shards.len()
        || base
            .shards
            .iter()
            .zip(&other.shards)
            .any(|(a, b)| a.header_bytes() != b.header_bytes())
}

fn number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.4e}")
    }
}

pub fn run(args: DiffArgs) -> Result<()> {
    let base = Model::open(&args.base)?;
    let other = Model::open(&args.other)?;
    let (pairs, skipped) = unmatched(&base, &other);
    let compared = compare(&pairs);
    let (form, entries) = write_patch(&args, &base, &pairs, &compared)?;
    let size = std::fs::metadata(&args.out)
        .map_err(Error::io(&args.out))?
        .len();
    let changed_tensors = compared.iter().filter(|c| c.stats.changed > 0).count();
    let form_name = if form == Format::Compact {
        "compact"
    } else {
        "json"
    };
    if !skipped.is_empty() {
        eprintln!(
            "warning: {} not compared (name, shape or dtype differ) and not in the patch",
            plural(skipped.len(), "tensor is", "tensors are")
        );
    }
    if headers_differ(&base, &other) {
        eprintln!(
            "warning: the headers differ (metadata or layout); a patch changes tensor bytes only"
        );
    }
    if args.json {
        let tensors: Vec<_> = pairs
            .iter()
            .zip(&compared)
            .map(|(p, c)| {
                json!({
                    "name": p.info.name,
                    "dtype": dtype::name(p.info.dtype),
                    "shape": p.info.shape,
                    "elements": c.stats.elements,
                    "changed": c.stats.changed,
                    "rel_l2": c.stats.rel_l2(),
                    "max_abs_delta": c.stats.max_abs,
                })
            })
            .collect();
        let skipped: Vec<_> = skipped
            .iter()
            .map(|(name, reason)| json!({"name": name, "reason": reason}))
            .collect();
        print_json(&json!({
            "patch": args.out,
            "format": form_name,
            "bytes": size,
            "entries": entries,
            "changed_tensors": changed_tensors,
            "tensors": tensors,
            "not_compared": skipped,
        }));
        return Ok(());
    }
    report_text(
        &args.out,
        &pairs,
        &compared,
        &skipped,
        (form_name, size, entries),
    );
    Ok(())
}

fn report_text(
    out: &Path,
    pairs: &[Pair],
    compared: &[Compared],
    skipped: &[(String, String)],
    (form, size, entries): (&str, u64, usize),
) {
    let changed = compared.iter().filter(|c| c.stats.changed > 0).count();
    if changed > 0 {
        let mut t = table(&[
            "tensor",
            "dtype",
            "shape",
            "changed",
            "rel L2",
            "max |delta|",
        ]);
        for (p, c) in pairs
            .iter()
            .zip(compared)
            .filter(|(_, c)| c.stats.changed > 0)
        {
            t.add_row(vec![
                p.info.name.clone(),
                dtype::name(p.info.dtype).to_string(),
                crate::units::shape_text(&p.info.shape),
                format!("{} / {}", c.stats.changed, c.stats.elements),
                number(c.stats.rel_l2()),
                number(c.stats.max_abs),
            ]);
        }
        println!("{t}");
    }
    for (name, reason) in skipped {
        println!("not compared: {name} ({reason})");
    }
    if changed == 0 {
        println!(
            "nothing changed in {}",
            plural(pairs.len(), "tensor", "tensors")
        );
    } else {
        println!(
            "{changed} of {} changed",
            plural(pairs.len(), "tensor", "tensors")
        );
    }
    println!(
        "{}: {} ({form}, {})",
        out.display(),
        plural(entries, "entry", "entries"),
        human_bytes(size)
    );
}
