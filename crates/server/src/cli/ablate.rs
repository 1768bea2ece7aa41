//! `ablate`: directional ablation written as low-rank patch entries, with the behaviour and
//! the KL before and after.

use super::run::{json, open, ModelArgs};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::patch::Origin;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_store::patch_files::{self, Format};
use tensor_surgeon_wire::{AblationReport, AblationRequest};

/// Options of `ablate`.
#[derive(clap::Args, Debug)]
pub struct AblateArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Prompts that show the behaviour, one per line (even lines make the direction, odd ones
    /// measure it).
    #[arg(long)]
    from: PathBuf,
    /// Prompts that do not, one per line (the direction points away from them; the KL is
    /// measured on them).
    #[arg(long)]
    to: PathBuf,
    /// The layer whose output gives the direction (default: the middle of the stack).
    #[arg(long)]
    layer: Option<u32>,
    /// How much of the direction is projected out (1: all of it).
    #[arg(long, default_value_t = 1.0)]
    strength: f64,
    /// Try layers from a quarter to three quarters of the way up at strengths 0.5 and 1, and
    /// keep the least behaviour that costs at most 0.1 nats of KL (needs --marker or --token).
    #[arg(long)]
    search: bool,
    /// Also project the direction out of the embedding matrix.
    #[arg(long)]
    embedding: bool,
    /// Text whose presence in a continuation marks the behaviour; repeatable.
    #[arg(long)]
    marker: Vec<String>,
    /// A token whose next-token probability marks the behaviour (" Sorry" or #ID); repeatable.
    #[arg(long, allow_hyphen_values = true)]
    token: Vec<String>,
    /// Length of the continuations the markers are looked for in.
    #[arg(long, default_value_t = 16)]
    generate: u32,
    /// Where to write the patch (JSON, format version 2).
    #[arg(long)]
    out: PathBuf,
}

/// The prompts of a file, one per line, blank lines left out.
pub(super) fn prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

pub fn ablate(a: &AblateArgs) -> Result<()> {
    let req = AblationRequest {
        from: prompts(&a.from)?,
        to: prompts(&a.to)?,
        layer: a.layer,
        strength: a.strength,
        embedding: a.embedding,
        markers: a.marker.clone(),
        tokens: a.token.clone(),
        generate: a.generate,
    };
    let o = open(&a.m)?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(1)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let outcome = tensor_surgeon_engine::ablate::ablate(
        &o.model,
        &o.runner,
        &o.overlay,
        &req,
        a.search,
        Origin::new("cli"),
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let r = &outcome.report;
    let note = format!("ablation: layer {}, strength {}", r.layer, r.strength);
    let mut patch = patch_files::new_for(&o.model, &note);
    let origin = tensor_surgeon_core::patch::Origin::new("cli");
    tensor_surgeon_engine::blocks::keep(
        &o.model,
        &mut patch,
        outcome.entries,
        &outcome.blocks,
        &origin,
    )?;
    // Byte entries of a quantized model's blocks go compact when large; low-rank entries are JSON.
    patch_files::save(&a.out, &patch, Format::Auto, Some(&o.model))?;
    if a.m.json {
        return json(r);
    }
    print_report(r);
    println!("\nwrote {}", a.out.display());
    Ok(())
}

fn print_report(r: &AblationReport) {
    println!(
        "direction at layer {} (length {:.3}), strength {}: {} entries, {} bytes of factors for {} changed bytes, {:.1} s",
        r.layer, r.direction_norm, r.strength, r.entries, r.factor_bytes, r.changed_bytes, r.seconds
    );
    if let Some(m) = &r.marker_rate {
        println!(
            "markers in held-out continuations: {:.0}% -> {:.0}%",
            m.base, m.edited
        );
    }
    if let Some(t) = &r.token_prob {
        println!(
            "p(tokens) after held-out prompts: {:.4} -> {:.4}",
            t.base, t.edited
        );
    }
    println!("KL on the second list: {:.4} nats", r.kl);
    for t in &r.tried {
        println!(
            "  tried layer {:>2} strength {:.1}: behaviour {:.4}, KL {:.4}",
            t.layer, t.strength, t.behaviour, t.kl
        );
    }
    for c in &r.continuations {
        println!(
            "\n{:?}\n  base:    {:?}\n  ablated: {:?}",
            c.prompt, c.base, c.edited
        );
    }
}
