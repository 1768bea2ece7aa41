//! `stats` and `scan`: statistics of tensors of a model (optionally seen through patches),
//! with a progress bar on stderr when it is a terminal.

use super::{human_bytes, print_json, table};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::stats::{self, scan::ScanRow, Summary};
use tensor_surgeon_engine::{statistics, Error, Result};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::TensorStats;

/// A byte progress bar on stderr, hidden when stderr is not a terminal.
pub(crate) fn progress_bar(total: u64, label: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let template =
        format!("{label} {{bar:40}} {{binary_bytes}}/{{binary_total_bytes}} {{eta}} {{msg}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Statistics of every named tensor, with one progress bar over all of them.
fn compute_all(
    model: &Model,
    overlay: &Overlay,
    names: &[String],
    bins: usize,
) -> Result<Vec<TensorStats>> {
    let mut total = 0;
    for n in names {
        let (shard, info) = model.get(n)?;
        // A quantized tensor is read as its decoded values.
        let bytes = match shard.quantized(info) {
            Some(_) => info.elements() * 4,
            None => info.byte_len(),
        };
        total += bytes * statistics::passes(info.dtype);
    }
    let bar = progress_bar(total, "reading");
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        bar.set_message(n.clone());
        let c = statistics::tensor_stats(model, overlay, n, bins, 0, &|b| bar.inc(b))?;
        out.push(c.stats);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), tensor_surgeon_core::dtype::pretty_f64)
}

fn print_summary(s: &TensorStats) {
    let shape: Vec<String> = s.shape.iter().map(ToString::to_string).collect();
    println!(
        "{}  {} [{}]  {}",
        s.tensor,
        s.dtype,
        shape.join(", "),
        human_bytes(s.bytes)
    );
    if let Some(note) = &s.note {
        println!("  ({note})");
    }
    let mut t = table(&["statistic", "value"]);
    for (k, v) in s.summary.rows() {
        t.add_row(vec![k, v]);
    }
    println!("{t}");
    if let Some(h) = &s.histogram {
        print_histogram(h);
    }
}

/// A text histogram regrouped into at most 32 rows.
fn print_histogram(h: &stats::Histogram) {
    let rows = h.counts.len().min(32);
    let per = h.counts.len().div_ceil(rows);
    let groups: Vec<(usize, u64)> = h
        .counts
        .chunks(per)
        .enumerate()
        .map(|(i, c)| (i * per, c.iter().sum()))
        .collect();
    let peak = groups.iter().map(|g| g.1).max().unwrap_or(0).max(1);
    println!(
        "histogram ({} bins shown as {}):",
        h.counts.len(),
        groups.len()
    );
    for (first, count) in &groups {
        let (lo, _) = h.bin_range(*first);
        let bar = "#".repeat(((count * 50).div_ceil(peak)) as usize);
        println!("  {lo:>+11.4e} | {bar} {count}");
    }
    println!("  NaN {}  +Inf {}  -Inf {}", h.nan, h.pos_inf, h.neg_inf);
}

fn row_cells(name: &str, dtype: &str, m: &Summary) -> Vec<String> {
    vec![
        name.to_string(),
        dtype.to_string(),
        num(m.min),
        num(m.max),
        num(m.mean),
        num(m.std),
        num(m.max_abs),
        (m.nan + m.pos_inf + m.neg_inf).to_string(),
        format!("{:.1}%", m.sparsity * 100.0),
    ]
}

const ROW_HEADER: [&str; 9] = [
    "tensor", "dtype", "min", "max", "mean", "std", "max |x|", "NaN/Inf", "zeros",
];

/// `stats MODEL [TENSOR]`.
pub fn stats(
    model_path: &Path,
    tensor: Option<&str>,
    patch_paths: &[PathBuf],
    bins: usize,
    as_json: bool,
) -> Result<()> {
    if !(1..=stats::MAX_BINS).contains(&bins) {
        return Err(Error::Usage(format!(
            "--bins must be 1 to {}; got {bins}",
            stats::MAX_BINS
        )));
    }
    let model = Model::open(model_path)?;
    let overlay = tensor_surgeon_engine::adapter::overlay_of(&model, patch_paths)?;
    let names: Vec<String> = match tensor {
        Some(t) => vec![model.get(t)?.1.name.clone()],
        None => model.tensors().map(|(_, t)| t.name.clone()).collect(),
    };
    let all = compute_all(&model, &overlay, &names, bins)?;
    match (as_json, tensor) {
        (true, Some(_)) => print_json(&json!(all[0])),
        (true, None) => print_json(&json!(all)),
        (false, Some(_)) => print_summary(&all[0]),
        (false, None) => {
            let mut t = table(&ROW_HEADER);
            for s in &all {
                t.add_row(row_cells(&s.tensor, &s.dtype, &s.summary));
            }
            println!("{t}");
        }
    }
    Ok(())
}

/// `scan MODEL`: every tensor's statistics, flags, and outliers among siblings.
pub fn scan(model_path: &Path, patch_paths: &[PathBuf], as_json: bool) -> Result<()> {
    let model = Model::open(model_path)?;
    let overlay = tensor_surgeon_engine::adapter::overlay_of(&model, patch_paths)?;
    let names: Vec<String> = model.tensors().map(|(_, t)| t.name.clone()).collect();
    let all = compute_all(&model, &overlay, &names, stats::DEFAULT_BINS)?;
    let mut rows: Vec<ScanRow> = all.iter().map(statistics::scan_row).collect();
    let groups = statistics::finish_scan(&mut rows);
    if as_json {
        print_json(&json!({ "rows": rows, "groups": groups }));
        return Ok(());
    }
    let mut header = ROW_HEADER.to_vec();
    header.push("flags");
    let mut t = table(&header);
    for r in &rows {
        let mut cells = row_cells(&r.tensor, &r.dtype, &r.summary);
        cells.push(
            r.flags
                .iter()
                .map(|f| f.label())
                .collect::<Vec<_>>()
                .join(", "),
        );
        t.add_row(cells);
    }
    println!("{t}");
    let flagged = rows.iter().filter(|r| !r.flags.is_empty()).count();
    println!("{} tensors scanned, {flagged} flagged", rows.len());
    for g in groups.iter().filter(|g| !g.outliers.is_empty()) {
        println!(
            "{}: std by layer (median {}):",
            g.pattern,
            tensor_surgeon_core::dtype::pretty_f64(g.median)
        );
        for (layer, name, std) in &g.members {
            let mark = if g.outliers.contains(name) {
                "  <- outlier"
            } else {
                ""
            };
            println!(
                "  {layer:>4}  {}{mark}",
                tensor_surgeon_core::dtype::pretty_f64(*std)
            );
        }
    }
    Ok(())
}
