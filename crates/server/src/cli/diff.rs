//! `diff`: the patch that turns one model into another, with per-tensor change statistics
//! (the comparison itself is the engine's, shared with the web app's "compare with...").

use super::patch_cmds::plural;
use super::{human_bytes, print_json, table, FormatArg};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use tensor_surgeon_engine::diff::{headers_differ, Comparison};
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_store::patch_files::Format;
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::CompareRow;

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
    format: FormatArg,
    /// A note to keep in the patch.
    #[arg(long, default_value = "")]
    note: String,
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
    let comparison = Comparison::new(&base, &other)?;
    let (form, entries) =
        comparison.write_patch(&base, &args.out, args.format.into(), &args.note)?;
    let rows = comparison.rows();
    let skipped = &comparison.skipped;
    let size = std::fs::metadata(&args.out)
        .map_err(Error::io(&args.out))?
        .len();
    let changed_tensors = rows.iter().filter(|r| r.changed > 0).count();
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
        let tensors: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.tensor,
                    "dtype": r.dtype,
                    "shape": r.shape,
                    "elements": r.elements,
                    "changed": r.changed,
                    "rel_l2": r.rel_l2,
                    "max_abs_delta": r.max_abs_delta,
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
    report_text(&args.out, &rows, skipped, (form_name, size, entries));
    Ok(())
}

fn report_text(
    out: &Path,
    rows: &[CompareRow],
    skipped: &[(String, String)],
    (form, size, entries): (&str, u64, usize),
) {
    let changed = rows.iter().filter(|r| r.changed > 0).count();
    if changed > 0 {
        let mut t = table(&[
            "tensor",
            "dtype",
            "shape",
            "changed",
            "rel L2",
            "max |delta|",
        ]);
        for r in rows.iter().filter(|r| r.changed > 0) {
            t.add_row(vec![
                r.tensor.clone(),
                r.dtype.clone(),
                tensor_surgeon_core::units::shape_text(&r.shape),
                format!("{} / {}", r.changed, r.elements),
                number(r.rel_l2),
                number(r.max_abs_delta),
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
            plural(rows.len(), "tensor", "tensors")
        );
    } else {
        println!(
            "{changed} of {} changed",
            plural(rows.len(), "tensor", "tensors")
        );
    }
    println!(
        "{}: {} ({form}, {})",
        out.display(),
        plural(entries, "entry", "entries"),
        human_bytes(size)
    );
}
