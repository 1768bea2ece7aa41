//! `trace`: causal tracing of a prompt's answer about a subject (the patched model when
//! patches are given, with its control vectors).

use super::run::{json, open, ModelArgs};
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use tensor_surgeon_engine::Result;
use tensor_surgeon_infer::trace::TraceEvent;
use tensor_surgeon_wire::{CausalTrace, TraceKind, TraceRequest};

/// Options of `trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    steer: super::run::SteerArgs,
    #[arg(long)]
    prompt: String,
    /// Text of the prompt whose tokens are corrupted.
    #[arg(long)]
    subject: String,
    /// The token whose probability is traced (" Paris" or #ID); default: the model's own
    /// top-1 on the clean prompt.
    #[arg(long, allow_hyphen_values = true)]
    target: Option<String>,
    /// Corrupted runs averaged per cell.
    #[arg(long, default_value_t = 10)]
    samples: u32,
    /// Noise standard deviation (default: 3 x the embedding matrix's).
    #[arg(long)]
    noise: Option<f64>,
    /// Layers restored around each layer for the MLP and attention maps.
    #[arg(long, default_value_t = 10)]
    window: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which states to restore.
    #[arg(long, value_enum, default_value_t = KindArg::All)]
    kind: KindArg,
    /// Rerun the whole prompt for every cell, as the reference implementation does (the same
    /// maps, slower; for benchmarks).
    #[arg(long, hide = true)]
    rerun: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    Residual,
    Mlp,
    Attention,
    All,
}

impl KindArg {
    fn kinds(self) -> Vec<TraceKind> {
        match self {
            KindArg::Residual => vec![TraceKind::Residual],
            KindArg::Mlp => vec![TraceKind::Mlp],
            KindArg::Attention => vec![TraceKind::Attention],
            KindArg::All => TraceKind::ALL.to_vec(),
        }
    }
}

pub fn trace(a: &TraceArgs) -> Result<()> {
    let o = open(&a.m)?;
    let weights = o
        .runner
        .weights(&o.model, o.edited.clone())
        .with_steering(a.steer.steering(&o.runner)?);
    let req = TraceRequest {
        prompt: a.prompt.clone(),
        subject: a.subject.clone(),
        target: a.target.clone(),
        samples: a.samples,
        noise: a.noise,
        window: a.window,
        seed: a.seed,
        kinds: a.kind.kinds(),
    };
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(1)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let stop = AtomicBool::new(false);
    let trace_by = if a.rerun {
        tensor_surgeon_infer::RunnableModel::trace_by_rerun
    } else {
        tensor_surgeon_infer::RunnableModel::trace
    };
    let trace = trace_by(&o.runner, &weights, &req, &stop, &mut |e| match e {
        TraceEvent::Started(t) => {
            bar.set_message(format!(
                "clean {:.4}, corrupted {:.4}",
                t.clean, t.corrupted
            ));
        }
        TraceEvent::Row { done, total, .. } => {
            bar.set_length(total);
            bar.set_position(done);
        }
    })?;
    bar.finish_and_clear();
    if a.m.json {
        return json(&trace);
    }
    print_trace(&trace);
    Ok(())
}

/// The maps as text: one line per layer, one column per token.
fn print_trace(t: &CausalTrace) {
    let [s0, s1] = t.subject;
    println!(
        "p({:?}): clean {:.4}, subject corrupted {:.4} (noise {:.4}, {} samples)",
        t.target.token, t.clean, t.corrupted, t.noise, t.samples
    );
    let names: Vec<String> = t
        .tokens
        .iter()
        .enumerate()
        .map(|(i, tok)| {
            let mark = if (s0..s1).contains(&(i as u32)) {
                "*"
            } else {
                ""
            };
            format!("{:>8}", format!("{mark}{:?}", tok.token))
        })
        .collect();
    for kind in TraceKind::ALL {
        let Some(map) = t.map(kind) else { continue };
        println!("\n{} (layer x token; * the subject):", kind.name());
        println!("      {}", names.join(" "));
        for (layer, row) in map.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|p| format!("{p:>8.4}")).collect();
            println!("{layer:>5} {}", cells.join(" "));
        }
    }
    if t.stopped {
        println!("\n(stopped before the end)");
    }
}
