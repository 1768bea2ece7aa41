//! `edit-fact`: ROME fact edits written as low-rank patch entries, with their probe scores.

use super::run::{json, open, ModelArgs};
use super::table;
use std::io::IsTerminal;
use std::path::PathBuf;
use tensor_surgeon_core::patch::{LowRankEntry, Origin};
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_infer::edit::{Covariance, FactKnobs, FactOptions};
use tensor_surgeon_store::patch_files::{self, Format};
use tensor_surgeon_wire::{FactEditReport, FactRequest, ProbeGroup};

/// Options of `edit-fact`.
#[derive(clap::Args, Debug)]
pub struct EditFactArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Text of the prompt whose fact changes.
    #[arg(long, required_unless_present = "requests")]
    subject: Option<String>,
    /// A prompt containing the subject.
    #[arg(long, required_unless_present = "requests")]
    prompt: Option<String>,
    /// The new continuation (" Rome" with its leading space, or #ID; several tokens allowed).
    #[arg(long, required_unless_present = "requests", allow_hyphen_values = true)]
    target: Option<String>,
    /// Other wordings of the prompt, scored after the edit; repeatable.
    #[arg(long)]
    paraphrase: Vec<String>,
    /// Prompts about other subjects whose answer should stay; repeatable.
    #[arg(long)]
    neighbor: Vec<String>,
    /// A JSON list of facts `[{"subject", "prompt", "target"}]`, edited one after another.
    #[arg(long, conflicts_with_all = ["subject", "prompt", "target"])]
    requests: Option<PathBuf>,
    /// The layer whose down_proj changes (default: see `edit::default_layer`).
    #[arg(long, conflicts_with = "layers")]
    layer: Option<usize>,
    /// MEMIT: spread the facts over these layers' down_projs ("4-8" or "4,6,8"), one low-rank
    /// entry per layer of rank the number of facts, instead of ROME at one layer.
    #[arg(long, value_parser = parse_layers)]
    layers: Option<Layers>,
    /// MEMIT's λ, how much the text's keys weigh against the facts' (default: MEMIT's value
    /// for GPT-J, scaled to the model's key width).
    #[arg(long, requires = "layers")]
    update_weight: Option<f64>,
    /// Optimisation steps of the MLP output.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// What ROME's update divides by: the second moment of the layer's down_proj inputs over
    /// the text that ships with the tool, or the identity.
    #[arg(long, value_enum, default_value_t = CovarianceArg::Corpus)]
    covariance: CovarianceArg,
    /// Seed of the context prefixes the model writes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Strength against specificity: the optimised change of the MLP output is kept under
    /// this many times the output's own norm (lower: a weaker edit that spills less over to
    /// other subjects; default: ROME's).
    #[arg(long, value_parser = positive)]
    clamp: Option<f64>,
    /// How much the optimisation weighs keeping the subject's other predictions (the KL
    /// term; higher: more specific; default: ROME's).
    #[arg(long, value_parser = non_negative)]
    kl_weight: Option<f64>,
    /// Where to write the patch (JSON, format version 2).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CovarianceArg {
    Corpus,
    Identity,
}

/// A finite number above zero.
fn positive(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number above 0, not {text:?}")),
    }
}

/// A finite number, zero or more.
fn non_negative(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number of 0 or more, not {text:?}")),
    }
}

/// The layers of `--layers`.
#[derive(Clone, Debug)]
pub(super) struct Layers(pub(super) Vec<usize>);

/// Layers given as "A-B" (inclusive) or "A,B,C".
pub(super) fn parse_layers(text: &str) -> std::result::Result<Layers, String> {
    let bad = || format!("layers are \"A-B\" or \"A,B,C\", not {text:?}");
    let number = |t: &str| t.trim().parse::<usize>().map_err(|_| bad());
    let layers: Vec<usize> = match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(bad());
            }
            (a..=b).collect()
        }
        None => text
            .split(',')
            .map(number)
            .collect::<std::result::Result<_, _>>()?,
    };
    Ok(Layers(layers))
}

fn requests(a: &EditFactArgs) -> Result<Vec<FactRequest>> {
    if let Some(path) = &a.requests {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let list: Vec<FactRequest> = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "{}: not a list of facts [{{\"subject\", \"prompt\", \"target\"}}]: {e}",
                path.display()
            ))
        })?;
        if list.is_empty() {
            return Err(Error::Usage(format!("{}: no facts", path.display())));
        }
        return Ok(list);
    }
    Ok(vec![FactRequest {
        subject: a.subject.clone().unwrap_or_default(),
        prompt: a.prompt.clone().unwrap_or_default(),
        target: a.target.clone().unwrap_or_default(),
        paraphrases: a.paraphrase.clone(),
        neighbors: a.neighbor.clone(),
    }])
}

pub fn edit_fact(a: &EditFactArgs) -> Result<()> {
    let facts = requests(a)?;
    let o = open(&a.m)?;
    let knobs = FactKnobs {
        layer: a.layer,
        clamp: a.clamp,
        kl_weight: a.kl_weight,
    };
    let opts = FactOptions {
        steps: a.steps,
        seed: a.seed,
        covariance: match a.covariance {
            CovarianceArg::Corpus => Covariance::Corpus,
            CovarianceArg::Identity => Covariance::Identity,
        },
        ..FactOptions::tuned(o.runner.layers()?, &knobs)?
    };
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(opts.steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Some(Layers(layers)) = &a.layers {
        return memit(a, &o, &facts, layers, &opts, &bar);
    }
    let mut over = o.overlay.clone();
    let mut entries: Vec<LowRankEntry> = Vec::new();
    let mut blocks: Vec<tensor_surgeon_core::edit::Change> = Vec::new();
    let mut reports: Vec<FactEditReport> = Vec::new();
    for fact in &facts {
        bar.set_position(0);
        let outcome = tensor_surgeon_engine::fact::edit_fact(
            &o.model,
            &o.runner,
            &over,
            fact,
            &opts,
            Origin::new("cli"),
            &mut |s| {
                bar.set_position(s.step as u64 + 1);
                bar.set_message(format!("p(target) {:.3}", s.p_target));
            },
        )?;
        over = outcome.overlay;
        reports.push(outcome.report);
        // A quantized tensor's edit is applied as the blocks it rewrote.
        blocks.extend(outcome.blocks);
        // Facts at one layer share its entry: the ranks add up.
        match entries
            .iter_mut()
            .find(|e| e.tensor == outcome.entry.tensor)
        {
            Some(e) => {
                let info = tensor_surgeon_engine::blocks::values_info(o.model.get(&e.tensor)?.1);
                let base = o.model.tensor_bytes(&e.tensor)?;
                *e = e.joined(&outcome.entry, &info, &base)?;
            }
            None => entries.push(outcome.entry),
        }
    }
    bar.finish_and_clear();
    write(a, &o, &facts, entries, &blocks, &reports)
}

/// MEMIT: every fact at once over `layers`.
fn memit(
    a: &EditFactArgs,
    o: &super::run::Opened,
    facts: &[FactRequest],
    layers: &[usize],
    opts: &FactOptions,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let outcome = tensor_surgeon_engine::fact::edit_facts(
        &o.model,
        &o.runner,
        &o.overlay,
        facts,
        layers,
        opts,
        a.update_weight,
        Origin::new("cli"),
        &mut |fact, s| {
            bar.set_position(s.step as u64 + 1);
            bar.set_message(format!("fact {}: p(target) {:.3}", fact + 1, s.p_target));
        },
    )?;
    bar.finish_and_clear();
    write(
        a,
        o,
        facts,
        outcome.entries,
        &outcome.blocks,
        &outcome.reports,
    )
}

/// Writes the patch and prints the reports.
fn write(
    a: &EditFactArgs,
    o: &super::run::Opened,
    facts: &[FactRequest],
    entries: Vec<LowRankEntry>,
    blocks: &[tensor_surgeon_core::edit::Change],
    reports: &[FactEditReport],
) -> Result<()> {
    let mut patch = patch_files::new_for(&o.model, &note(facts));
    tensor_surgeon_engine::blocks::keep(
        &o.model,
        &mut patch,
        entries,
        blocks,
        &Origin::new("cli"),
    )?;
    patch_files::save(&a.out, &patch, Format::Json, Some(&o.model))?;
    if a.m.json {
        return if a.requests.is_some() {
            json(&reports)
        } else {
            json(&reports[0])
        };
    }
    for r in reports {
        print_report(r);
    }
    println!("\nwrote {}", a.out.display());
    Ok(())
}

fn note(facts: &[FactRequest]) -> String {
    facts
        .iter()
        .map(|f| format!("fact: {} -> {:?}", f.prompt, f.target))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_report(r: &FactEditReport) {
    let target: String = r.target.iter().map(|t| t.token.as_str()).collect();
    let place = match r.layers.as_slice() {
        [] => format!("layer {} ({})", r.layer, r.tensor),
        layers => format!("layers {layers:?} (MEMIT, rank {})", r.rank),
    };
    println!(
        "{:?} -> {target:?} (was {:?}): {place}, {} steps, {:.1} s",
        r.prompt,
        r.old.token,
        r.steps.len(),
        r.seconds
    );
    let mut t = table(&[
        "group",
        "prompt",
        "new: base",
        "edited",
        "old",
        "base",
        "edited",
    ]);
    let spills = |p: &tensor_surgeon_wire::FactProbe| {
        p.group == ProbeGroup::Neighbor && p.edited_new > p.edited_old
    };
    for p in &r.probes {
        let group = format!("{:?}", p.group).to_lowercase();
        t.add_row(vec![
            if spills(p) { group + " *" } else { group },
            p.prompt.clone(),
            format!("{:.3}", p.base_new.exp()),
            format!("{:.3}", p.edited_new.exp()),
            format!("{:?}", p.old.token),
            format!("{:.3}", p.base_old.exp()),
            format!("{:.3}", p.edited_old.exp()),
        ]);
    }
    println!("{t}");
    let s = &r.scores;
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}%"));
    println!(
        "efficacy {:.0}%, paraphrase {}, neighbourhood {}, unrelated KL {:.4}",
        s.efficacy,
        pct(s.paraphrase),
        pct(s.neighborhood),
        s.unrelated_kl
    );
    let spilled = r.probes.iter().filter(|p| spills(p)).count();
    if spilled > 0 {
        let neighbours = r
            .probes
            .iter()
            .filter(|p| p.group == ProbeGroup::Neighbor)
            .count();
        println!(
            "the edit spills over: {spilled} of {neighbours} neighbours (*) now prefer {target:?}; \
             --clamp lower or --kl-weight higher makes it more specific"
        );
    }
    println!(
        "base:   {:?}\nedited: {:?}",
        r.generation.base, r.generation.edited
    );
    println!(
        "entry: {} bytes of factors for {} changed bytes",
        r.factor_bytes, r.changed_bytes
    );
}
