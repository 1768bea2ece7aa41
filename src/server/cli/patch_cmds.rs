//! `verify`, `apply`, `invert`, `combine`, `demo`.

use super::print_json;
use crate::server::{bake, files, patches, Error, Model, Result};
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;

pub fn verify(model_path: &Path, patch_path: &Path, as_json: bool) -> Result<()> {
    let model = Model::open(model_path)?;
    let patch = patches::load(patch_path)?;
    let conflicts = patch.verify(&model);
    let mismatched = patches::fingerprint_mismatches(&model, &patch);
    if as_json {
        print_json(&json!({
            "ok": conflicts.is_empty(),
            "entries": patch.entries.len(),
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
            println!(
                "ok: {} entr{} apply cleanly",
                patch.entries.len(),
                if patch.entries.len() == 1 { "y" } else { "ies" }
            );
        }
    }
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(Error::Conflicts { conflicts })
    }
}

pub fn apply(model_path: &Path, patch_path: &Path, out: &Path) -> Result<()> {
    let model = Model::open(model_path)?;
    let patch = patches::load(patch_path)?;
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

pub fn invert(patch_path: &Path, out: &Path) -> Result<()> {
    let patch = patches::load(patch_path)?;
    let mut inverted = patch.invert();
    inverted.created = patches::now();
    patches::save(out, &inverted)?;
    println!("{}: {} entries", out.display(), inverted.entries.len());
    Ok(())
}

pub fn combine(first: &Path, second: &Path, out: &Path) -> Result<()> {
    let a = patches::load(first)?;
    let b = patches::load(second)?;
    if a.base != b.base {
        eprintln!("warning: the two patches were made for different base files");
    }
    match a.combine(&b) {
        Ok(mut combined) => {
            combined.created = patches::now();
            patches::save(out, &combined)?;
            println!("{}: {} entries", out.display(), combined.entries.len());
            Ok(())
        }
        Err(conflicts) => {
            for c in &conflicts {
                println!("conflict: {c}");
            }
            Err(Error::Conflicts { conflicts })
        }
    }
}

pub fn demo(out: &Path) -> Result<()> {
    let path = files::write_demo(out)?;
    println!("{}", path.display());
    Ok(())
}
