//! `control-vector`: a control vector read from paired prompts, written as llama.cpp's GGUF.

use super::edit_fact::{parse_layers, Layers};
use super::run::{json, open, ModelArgs};
use std::path::PathBuf;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_infer::steering::Method;
use tensor_surgeon_store::control_vector;

/// `--method` of a control vector.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum MethodArg {
    /// The first principal component of the pairs' differences (unit length).
    #[default]
    Pca,
    /// The mean difference.
    Mean,
}

/// Options of `control-vector`.
#[derive(clap::Args, Debug)]
pub struct ControlVectorArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Prompts that show the behaviour, one per line.
    #[arg(long)]
    positive: PathBuf,
    /// Their counterparts that do not, one per line, in the same order.
    #[arg(long)]
    negative: PathBuf,
    #[arg(long, value_enum, default_value_t = MethodArg::Pca)]
    method: MethodArg,
    /// Layers whose outputs get a direction ("A-B" or "A,B,C"; default: 1 to the last, as
    /// llama.cpp never steers layer 0).
    #[arg(long, value_parser = parse_layers)]
    layers: Option<Layers>,
    /// The control vector's file (GGUF).
    #[arg(long)]
    out: PathBuf,
}

pub fn control_vector(a: &ControlVectorArgs) -> Result<()> {
    let positive = super::ablate::prompts(&a.positive)?;
    let negative = super::ablate::prompts(&a.negative)?;
    let o = open(&a.m)?;
    let depth = o.runner.layers()?;
    let layers = match &a.layers {
        Some(Layers(l)) => l.clone(),
        None => (1..depth).collect(),
    };
    if layers.contains(&0) {
        return Err(Error::Usage(
            "llama.cpp's control vectors have no direction for layer 0: give layers from 1".into(),
        ));
    }
    let method = match a.method {
        MethodArg::Pca => Method::Pca,
        MethodArg::Mean => Method::Mean,
    };
    let w = o.runner.weights(&o.model, o.edited.clone());
    let vectors = o
        .runner
        .control_vector(&w, &positive, &negative, &layers, method)?;
    let cv = tensor_surgeon_engine::adapter::control_vector_file(&o.model, &vectors);
    control_vector::write(&a.out, &cv, depth)?;
    let rows: Vec<serde_json::Value> = vectors
        .iter()
        .map(|v| {
            let norm = v
                .vector
                .iter()
                .map(|x| f64::from(*x).powi(2))
                .sum::<f64>()
                .sqrt();
            serde_json::json!({"layer": v.layer, "norm": norm, "agreement": v.agreement})
        })
        .collect();
    if a.m.json {
        return json(&serde_json::json!({
            "method": format!("{:?}", a.method).to_lowercase(),
            "pairs": positive.len(),
            "layers": rows,
            "files": [a.out.display().to_string()],
        }));
    }
    let mut t = super::table(&["layer", "norm", "pairs agreeing"]);
    for (v, r) in vectors.iter().zip(&rows) {
        t.add_row(vec![
            v.layer.to_string(),
            format!("{:.4}", r["norm"].as_f64().unwrap_or_default()),
            format!("{:.0}%", 100.0 * v.agreement),
        ]);
    }
    println!("{t}");
    println!("wrote {}", a.out.display());
    Ok(())
}
