//! Statistics, profiles and the model scan over the memory-mapped model seen through an edit
//! overlay, on every core (rayon). Memory stays flat: each worker reads one chunk at a time.

use crate::error::Result;
use rayon::prelude::*;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::overlay::{Overlay, Patched};
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_core::stats::scan::{self, ScanRow, SiblingGroup};
use tensor_surgeon_core::stats::{self, Accumulator, Bins, CodeTable, Histogram, PassDriver};
use tensor_surgeon_core::view::{self, Profile, ViewSpec};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::TensorStats;

/// Reports bytes processed (increments).
pub type BytesRead<'a> = &'a (dyn Fn(u64) + Sync);

/// A [`PassDriver`] over one tensor's (edited) bytes that splits the chunks among the cores.
pub struct Parallel<'a> {
    pub dtype: tensor_surgeon_core::dtype::Dtype,
    pub source: &'a (dyn ByteSource + Sync),
    pub elements: u64,
    pub progress: BytesRead<'a>,
}

impl PassDriver for Parallel<'_> {
    fn run<A: Accumulator>(&self, make: &(dyn Fn() -> A + Sync)) -> A {
        let chunks: Vec<(u64, u64)> = stats::chunks(self.elements).collect();
        // A few parts per core balance the load; each part holds one accumulator.
        let parts = rayon::current_num_threads() * 2;
        let per = chunks.len().div_ceil(parts).max(1);
        chunks
            .par_chunks(per)
            .map(|group| {
                let mut acc = make();
                let mut buf = Vec::new();
                for &(start, n) in group {
                    let (from, to) = stats::chunk_bytes(self.dtype, start, n);
                    buf.resize((to - from) as usize, 0);
                    self.source.read(from, &mut buf);
                    acc.add(&buf, n);
                    (self.progress)(to - from);
                }
                acc
            })
            .reduce_with(|mut a, b| {
                a.merge(b);
                a
            })
            .unwrap_or_else(make)
    }
}

/// Passes over the data a dtype's statistics take (for progress totals).
pub fn passes(dtype: tensor_surgeon_core::dtype::Dtype) -> u64 {
    match dtype::bits(dtype) {
        0..=16 => 1,
        17..=32 => 2,
        _ => 4,
    }
}

/// A tensor's statistics, its default histogram and (for narrow dtypes) its pattern table.
pub struct Computed {
    pub stats: TensorStats,
    pub table: Option<CodeTable>,
}

/// Calls `f` with a parallel runner over one tensor's bytes, overlay applied.
fn with_runner<T>(
    model: &Model,
    overlay: &Overlay,
    name: &str,
    progress: BytesRead<'_>,
    f: impl FnOnce(&tensor_surgeon_core::header::TensorInfo, &'static str, &Parallel<'_>) -> T,
) -> Result<T> {
    let (shard, info) = model.get(name)?;
    let type_name = model.type_name(shard, info);
    let base = shard.data(info)?;
    let source = overlay.view(info, &*base);
    let runner = Parallel {
        dtype: info.dtype,
        source: &source,
        elements: info.elements(),
        progress,
    };
    Ok(f(info, type_name, &runner))
}

/// Statistics of one tensor, overlay applied.
pub fn tensor_stats(
    model: &Model,
    overlay: &Overlay,
    name: &str,
    bins: usize,
    version: u64,
    progress: BytesRead<'_>,
) -> Result<Computed> {
    with_runner(model, overlay, name, progress, |info, type_name, runner| {
        let (summary, histogram, table) = stats::compute(info.dtype, runner, bins);
        Computed {
            stats: TensorStats {
                tensor: info.name.clone(),
                dtype: type_name.into(),
                shape: info.shape.clone(),
                bytes: info.byte_len(),
                version,
                summary,
                histogram,
                note: stats::kind_note(info.dtype).map(Into::into),
            },
            table,
        }
    })
}

/// A histogram over `bins` of one tensor (one pass unless a pattern table is at hand).
pub fn histogram(
    model: &Model,
    overlay: &Overlay,
    name: &str,
    table: Option<&CodeTable>,
    bins: &Bins,
) -> Result<Histogram> {
    with_runner(model, overlay, name, &|_| {}, |info, _, runner| {
        stats::histogram(info.dtype, runner, table, bins)
    })
}

/// Row and column profiles of a 2-D view, in row bands on every core.
pub fn profile(
    dtype: tensor_surgeon_core::dtype::Dtype,
    shape: &[u64],
    spec: &ViewSpec,
    source: &Patched<'_>,
) -> Profile {
    let (rows, cols) = spec.cells();
    let band = rows
        .div_ceil(rayon::current_num_threads() as u64 * 4)
        .max(1);
    let bands: Vec<u64> = (0..rows.div_ceil(band)).collect();
    let parts: Vec<_> = bands
        .par_iter()
        .map(|&b| {
            let range = b * band..((b + 1) * band).min(rows);
            view::profile_band(dtype, shape, spec, source, range)
        })
        .collect();
    let mut row_acc = Vec::with_capacity(rows as usize);
    let mut col_acc = vec![view::LineAcc::default(); cols as usize];
    for (r, c) in parts {
        row_acc.extend(r);
        for (a, b) in col_acc.iter_mut().zip(&c) {
            a.merge(b);
        }
    }
    Profile {
        rows: view::finish_lines(&row_acc, cols),
        cols: view::finish_lines(&col_acc, rows),
    }
}

/// A scan row from computed statistics.
pub fn scan_row(s: &TensorStats) -> ScanRow {
    ScanRow::new(
        s.tensor.clone(),
        s.dtype.clone(),
        s.shape.clone(),
        s.summary.clone(),
    )
}

/// Finishes a scan: sibling outliers flagged on the rows.
pub fn finish_scan(rows: &mut [ScanRow]) -> Vec<SiblingGroup> {
    scan::siblings(rows)
}

/// Bytes a scan reads in all (for progress totals).
pub fn scan_total(model: &Model) -> u64 {
    model
        .tensors()
        .map(|(_, t)| t.byte_len() * passes(t.dtype))
        .sum()
}
