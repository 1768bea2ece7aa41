//! `verify`, `apply`, `invert`, `combine`, `demo`.

use super::print_json;
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;
use tensor_surgeon_core::patch::Patch;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_store::patch_files::{self, Format, Loaded};
use tensor_surgeon_store::{bake, demo, Model, StoreError};

pub fn verify(model_path: &Path, patch_path: &Path, as_json: bool) -> Result<()> {
    let model = Model::open(model_path)?;
    let loaded = tensor_surgeon_engine::adapter::load_within(patch_path, Some(&model))?;
    let mismatched = patch_files::fingerprint_mismatches(&model, loaded.base());
    let entries = loaded.entry_count();
    let conflicts = patch_files::resolve(patch_path, loaded, &model, None)?
        .err()
        .unwrap_or_default();
    if as_json {
        print_json(&json!({
            "ok": conflicts.is_empty(),
            "entries": entries,
            "conflicts": conflicts,
            "fingerprint_mismatch": mismatched,
        }));
    } else {
        for f in &mismatched {
            eprintln!("warning: {f} differs from the file the patch was made for; checking bytes");
        }
        for c in &conflicts {
            println!("conflict: {c}");
        }
        if conflicts.is_empty() {
            println!("ok: {} apply cleanly", plural(entries, "entry", "entries"));
        }
    }
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(Error::from(StoreError::Conflicts { conflicts }))
    }
}

/// `1 entry`, `2 entries`.
pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn apply(model_path: &Path, patch_path: &Path, out: &Path) -> Result<()> {
    let model = Model::open(model_path)?;
    let patch = tensor_surgeon_engine::adapter::load_for(patch_path, &model)?;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(model.total_bytes());
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "baking {bar:40} {binary_bytes}/{binary_total_bytes} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let written = bake::bake(&model, &patch, out, &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    for w in written {
        println!("{}", w.display());
    }
    Ok(())
}

/// Why a compact patch needs `--model` for `what`.
fn needs_model(what: &str) -> Error {
    Error::Usage(format!(
        "{what} needs the base model: add --model MODEL (a compact patch carries checksums \
         of the bytes it changes, not the bytes)"
    ))
}

/// The full patch of a loaded file: JSON as is, compact expanded against `model`.
fn full(path: &Path, loaded: Loaded, model: Option<&Model>, what: &str) -> Result<Patch> {
    match (loaded, model) {
        (Loaded::Json(p), _) if p.low_rank.is_empty() => Ok(p),
        (Loaded::Json(_), None) => Err(Error::Usage(format!(
            "{what} needs the base model: add --model MODEL (a low-rank entry is made into \
             bytes against it)"
        ))),
        (Loaded::Compact(_), None) => Err(needs_model(what)),
        (loaded, Some(m)) => patch_files::resolve(path, loaded, m, None)?
            .map_err(|conflicts| Error::from(StoreError::Conflicts { conflicts })),
    }
}

/// Prints what was written.
fn report(out: &Path, entries: usize, form: Format) {
    let form = if form == Format::Compact {
        " (compact form)"
    } else {
        ""
    };
    println!(
        "{}: {}{form}",
        out.display(),
        plural(entries, "entry", "entries")
    );
}

pub fn invert(patch_path: &Path, out: &Path, format: Format, model: Option<&Path>) -> Result<()> {
    let model = model.map(Model::open).transpose()?;
    let loaded = tensor_surgeon_engine::adapter::load_within(patch_path, model.as_ref())?;
    if let (Loaded::Compact(c), None) = (&loaded, &model) {
        // The delta is symmetric: no base is needed to stay compact.
        if format == Format::Json {
            return Err(needs_model("writing a compact patch as JSON"));
        }
        let mut inverted = c.invert();
        inverted.created = patch_files::now();
        patch_files::save_compact(out, &inverted)?;
        report(out, inverted.entry_count(), Format::Compact);
        return Ok(());
    }
    let mut inverted = full(patch_path, loaded, model.as_ref(), "inverting")?.invert();
    inverted.created = patch_files::now();
    let form = patch_files::save(out, &inverted, format, model.as_ref())?;
    report(
        out,
        inverted.entries.len() + inverted.low_rank.len() + inverted.metadata.len(),
        form,
    );
    Ok(())
}

pub fn combine(
    first: &Path,
    second: &Path,
    out: &Path,
    format: Format,
    model: Option<&Path>,
) -> Result<()> {
    let model = model.map(Model::open).transpose()?;
    let (la, lb) = (
        tensor_surgeon_engine::adapter::load_within(first, model.as_ref())?,
        tensor_surgeon_engine::adapter::load_within(second, model.as_ref())?,
    );
    if la.base() != lb.base() {
        eprintln!("warning: the two patches were made for different base files");
    }
    let what = "combining a compact patch";
    let a = full(first, la, model.as_ref(), what)?;
    let b = match (lb, model.as_ref()) {
        (Loaded::Compact(c), Some(m)) => {
            // The second patch follows the first (made on its result) or sits beside it
            // (made on the same base): its digests tell which.
            match patch_files::expand(second, &c, m, Some(&a.to_overlay()))? {
                Ok(p) => p,
                Err(_) => patch_files::expand(second, &c, m, None)?
                    .map_err(|conflicts| Error::from(StoreError::Conflicts { conflicts }))?,
            }
        }
        (lb, m) => full(second, lb, m, what)?,
    };
    match a.combine(&b) {
        Ok(mut combined) => {
            combined.created = patch_files::now();
            let form = patch_files::save(out, &combined, format, model.as_ref())?;
            report(
                out,
                combined.entries.len() + combined.low_rank.len() + combined.metadata.len(),
                form,
            );
            Ok(())
        }
        Err(conflicts) => {
            for c in &conflicts {
                println!("conflict: {c}");
            }
            Err(Error::from(StoreError::Conflicts { conflicts }))
        }
    }
}

pub fn demo(out: &Path) -> Result<()> {
    let path = demo::write_demo(out)?;
    println!("{}", path.display());
    Ok(())
}
