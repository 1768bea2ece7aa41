//! `run`, `probe` and `activations`: the model run in-process on its weights, and on the
//! weights seen through patches, side by side.

use super::{print_json, table};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tensor_surgeon_engine::adapter::overlay_of;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_infer::tokens::Vocab;
use tensor_surgeon_infer::{Edited, RunnableModel};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{ActivationsRequest, NextTokens, ProbeSet, RunRequest};

/// The model, its patches and tokenizer: shared options of the commands that run it.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    model: PathBuf,
    /// Run the weights seen through these patches beside the base; repeatable.
    #[arg(long)]
    patch: Vec<PathBuf>,
    /// The tokenizer.json (default: the one beside the model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long)]
    pub(super) json: bool,
}

/// Control vectors added to the layers' outputs of the patched side.
#[derive(clap::Args, Debug, Default)]
pub struct SteerArgs {
    /// A control vector (llama.cpp's GGUF) added to the patched side's layer outputs, times
    /// STRENGTH (default 1); repeatable.
    #[arg(long = "control-vector", value_name = "CV.gguf[:STRENGTH]")]
    control_vector: Vec<String>,
}

impl SteerArgs {
    /// The control vectors, checked against the model's layers and width.
    pub(super) fn steering(
        &self,
        runner: &RunnableModel,
    ) -> Result<Option<Arc<tensor_surgeon_infer::steering::Steering>>> {
        if self.control_vector.is_empty() {
            return Ok(None);
        }
        let info = runner.info(0);
        let mut steering = tensor_surgeon_infer::steering::Steering::default();
        for arg in &self.control_vector {
            // PATH:STRENGTH, where a path may itself hold a colon.
            let (path, strength) = match arg.rsplit_once(':') {
                Some((p, s)) if s.parse::<f32>().is_ok() => (p, s.parse::<f32>().unwrap_or(1.0)),
                _ => (arg.as_str(), 1.0),
            };
            let cv = tensor_surgeon_store::control_vector::read(std::path::Path::new(path))?;
            for (&layer, v) in &cv.layers {
                if layer >= info.layers as usize || v.len() != info.hidden as usize {
                    return Err(Error::Usage(format!(
                        "{path}: direction.{layer} is {} wide, for a model of {} layers of width                          {}: a control vector for another model?",
                        v.len(),
                        info.layers,
                        info.hidden
                    )));
                }
                steering.add(layer, v, strength);
            }
        }
        Ok(Some(Arc::new(steering)))
    }
}

/// Options of `run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    steer: SteerArgs,
    /// The prompt (causal language models).
    #[arg(long, required_unless_present = "sentence")]
    prompt: Option<String>,
    /// Sentences to embed (encoders); repeatable.
    #[arg(long)]
    sentence: Vec<String>,
    /// Candidates to list.
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// A token whose probability and log-odds to report (text such as " Paris", or #ID).
    #[arg(long)]
    target: Option<String>,
    /// Greedy continuation length.
    #[arg(long, default_value_t = 0)]
    generate: u32,
}

/// Options of `probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    steer: SteerArgs,
    /// A probe file: {"version": 1, "probes": [{"prompt", "target", "kind"}]}.
    #[arg(long)]
    probes: PathBuf,
}

/// Options of `activations`.
#[derive(clap::Args, Debug)]
pub struct ActivationsArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    layer: u32,
    /// Top neurons and logit-lens tokens to list.
    #[arg(long, default_value_t = 10)]
    top: u32,
}

/// The opened model, its runner and the patched tensors.
pub(super) struct Opened {
    pub(super) model: Model,
    pub(super) runner: RunnableModel,
    pub(super) edited: Edited,
    /// The patches' edits.
    pub(super) overlay: tensor_surgeon_core::overlay::Overlay,
}

pub(super) fn open(m: &ModelArgs) -> Result<Opened> {
    let model = Model::open(&m.model)?;
    let overlay = overlay_of(&model, &m.patch)?;
    let runner = match model.gguf() {
        // A GGUF carries its tokenizer: another is read only when named.
        Some(h) => {
            let named = m.tokenizer.as_deref().map(Vocab::load).transpose()?;
            RunnableModel::open_gguf(&model.path, h, named.map(Arc::new))?
        }
        None => {
            let vocab = Vocab::find(&model.path, m.tokenizer.as_deref())?.map(Arc::new);
            RunnableModel::open(&model.path, vocab)?
        }
    };
    let edited = runner.cache.edited_from_overlay(&model, &overlay)?;
    Ok(Opened {
        model,
        runner,
        edited,
        overlay,
    })
}

pub fn run(a: &RunArgs) -> Result<()> {
    let o = open(&a.m)?;
    let base = o.runner.weights(&o.model, Edited::default());
    let edited = o
        .runner
        .weights(&o.model, o.edited.clone())
        .with_steering(a.steer.steering(&o.runner)?);
    if !a.sentence.is_empty() {
        let out = o.runner.embed(&base, Some(&edited), &a.sentence)?;
        if a.m.json {
            return json(&out);
        }
        for (name, side) in [("base", Some(&out.base)), ("patched", out.edited.as_ref())] {
            let Some(side) = side else { continue };
            println!("{name}: cosine similarity");
            for (s, row) in a.sentence.iter().zip(&side.similarity) {
                let cells: Vec<String> = row.iter().map(|v| format!("{v:6.3}")).collect();
                println!("  {} {s}", cells.join(" "));
            }
        }
        return Ok(());
    }
    let Some(prompt) = &a.prompt else {
        return Err(Error::Usage(
            "give --prompt (or --sentence for encoders)".into(),
        ));
    };
    let req = RunRequest {
        prompt: prompt.clone(),
        top_k: a.top_k,
        target: a.target.clone(),
        generate: a.generate,
    };
    let out = o.runner.compare(&base, Some(&edited), &req)?;
    if a.m.json {
        return json(&out);
    }
    let tokens: Vec<String> = out
        .prompt_tokens
        .iter()
        .map(|t| format!("{:?}", t.token))
        .collect();
    println!("prompt: {} tokens: {}", tokens.len(), tokens.join(" "));
    let mut t = table(&["rank", "base", "p", "patched", "p"]);
    let empty = Vec::new();
    let edited_top = out.edited.as_ref().map_or(&empty, |e| &e.top);
    for (i, b) in out.base.top.iter().enumerate() {
        let (et, ep) = edited_top
            .get(i)
            .map(|e| (format!("{:?}", e.token), format!("{:.4}", e.prob)))
            .unwrap_or_default();
        t.add_row(vec![
            (i + 1).to_string(),
            format!("{:?}", b.token),
            format!("{:.4}", b.prob),
            et,
            ep,
        ]);
    }
    println!("{t}");
    let show = |name: &str, n: &NextTokens| {
        if let Some(tp) = &n.target {
            println!(
                "{name}: p({:?}) = {:.4}, log-odds {:.3}",
                tp.token, tp.prob, tp.log_odds
            );
        }
        if let Some(c) = &n.continuation {
            println!("{name}: {prompt}\u{2502}{}", c.text);
        }
    };
    show("base", &out.base);
    match &out.edited {
        Some(e) => {
            show("patched", e);
            println!("KL(base || patched) = {:.6} nats", out.kl);
        }
        None => println!("(no patch given: the patched column is empty)"),
    }
    Ok(())
}

pub fn probe(a: &ProbeArgs) -> Result<()> {
    let o = open(&a.m)?;
    let set = read_probes(&a.probes)?;
    let base = o.runner.weights(&o.model, Edited::default());
    let edited = o
        .runner
        .weights(&o.model, o.edited.clone())
        .with_steering(a.steer.steering(&o.runner)?);
    let bar = super::stats::progress_bar(set.probes.len() as u64, "probing");
    let rows = o
        .runner
        .probe_table(&base, &edited, &set.probes, &mut |done, _| {
            bar.set_position(done as u64)
        })?;
    bar.finish_and_clear();
    if a.m.json {
        return json(&serde_json::json!({ "rows": rows }));
    }
    let mut t = table(&[
        "kind",
        "prompt",
        "target",
        "p base",
        "p patched",
        "KL",
        "top base",
        "top patched",
    ]);
    let p = |v: Option<f32>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    for r in &rows {
        t.add_row(vec![
            format!("{:?}", r.kind).to_lowercase(),
            r.prompt.clone(),
            format!("{:?}", r.target),
            p(r.base_prob),
            p(r.edited_prob),
            format!("{:.5}", r.kl),
            format!("{:?}", r.base_top),
            format!("{:?}", r.edited_top),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub fn activations(a: &ActivationsArgs) -> Result<()> {
    let o = open(&a.m)?;
    let w = o.runner.weights(&o.model, o.edited.clone());
    let req = ActivationsRequest {
        prompt: a.prompt.clone(),
        layer: a.layer,
        top: a.top,
    };
    let out = o.runner.activations(&w, &req)?;
    if a.m.json {
        return json(&out);
    }
    println!(
        "layer {}: MLP activations {} tokens x {} neurons (the input of {})",
        out.layer, out.mlp.rows, out.mlp.cols, out.down_proj
    );
    let mut t = table(&["neuron", "activation (last token)"]);
    for n in &out.top_neurons {
        t.add_row(vec![n.neuron.to_string(), format!("{:.4}", n.value)]);
    }
    println!("{t}\nlogit lens (top tokens of each layer's residual stream, last token):");
    for l in &out.logit_lens {
        let tops: Vec<String> = l
            .top
            .iter()
            .take(5)
            .map(|t| format!("{:?} {:.3}", t.token, t.prob))
            .collect();
        println!("  {:>3}  {}", l.layer, tops.join("  "));
    }
    Ok(())
}

/// Reads a probe file.
pub(crate) fn read_probes(path: &Path) -> Result<ProbeSet> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "{}: not a probe file ({{\"version\": 1, \"probes\": [{{\"prompt\", \"target\", \"kind\": \
             expect|avoid|unrelated}}]}}): {e}",
            path.display()
        ))
    })
}

pub(super) fn json(value: &impl serde::Serialize) -> Result<()> {
    print_json(&serde_json::to_value(value).map_err(|e| Error::Internal(e.to_string()))?);
    Ok(())
}
