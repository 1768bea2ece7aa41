//! `inspect`: the tensor list and metadata.

use super::{human_bytes, print_json, table};
use serde_json::json;
use std::path::Path;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_engine::Result;
use tensor_surgeon_store::model::Shard;
use tensor_surgeon_store::Model;

pub fn run(path: &Path, as_json: bool) -> Result<()> {
    let model = Model::open(path)?;
    for w in &model.warnings {
        eprintln!("warning: {w}");
    }
    if as_json {
        let tensors: Vec<_> = stored(&model)
            .map(|(shard, t)| {
                let mut row = json!({
                    "name": t.name,
                    "dtype": model.type_name(shard, t),
                    "shape": t.shape,
                    "file": shard.file_name,
                    "data_offsets": [t.data_offsets.0, t.data_offsets.1],
                });
                if let Some(ty) = shard.quantized(t) {
                    row["block"] =
                        json!({ "elements": ty.block_elements(), "bytes": ty.block_bytes() });
                }
                row
            })
            .collect();
        let out = match model.gguf() {
            // Typed values; arrays past 64 items summarised (the tokenizer's tens of thousands).
            Some(g) => json!({
                "format": "gguf",
                "version": g.version,
                "alignment": g.alignment,
                "data_start": g.data_start,
                "metadata": g.metadata.iter().map(|(k, v)| (k.clone(), v.to_json(64))).collect::<serde_json::Map<_, _>>(),
                "tensors": tensors,
            }),
            None => json!({ "metadata": model.metadata(), "tensors": tensors }),
        };
        print_json(&out);
        return Ok(());
    }
    let files = model.shards.len();
    let params: u64 = stored(&model).map(|(_, t)| t.elements()).sum();
    println!(
        "{}: {} tensors, {} parameters, {} in {files} file(s)",
        model.location,
        stored(&model).count(),
        params,
        human_bytes(model.total_bytes())
    );
    if let Some(g) = model.gguf() {
        println!("  GGUF version {}, alignment {}", g.version, g.alignment);
        for (k, v) in &g.metadata {
            println!("  {k}: {v}");
        }
    } else if let Some(meta) = model.metadata() {
        for (k, v) in meta {
            println!("  {k}: {}", v.escape_debug());
        }
    }
    let mut t = table(&["name", "dtype", "shape", "size", "file", "offsets"]);
    for (shard, info) in stored(&model) {
        let shape = format!(
            "[{}]",
            info.shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        t.add_row(vec![
            info.name.clone(),
            model.type_name(shard, info).to_string(),
            shape,
            human_bytes(info.byte_len()),
            shard.file_name.clone(),
            format!("{}..{}", info.data_offsets.0, info.data_offsets.1),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// The tensors the files hold (a GGUF's blocks views are made from them, not stored).
fn stored(model: &Model) -> impl Iterator<Item = (&Shard, &TensorInfo)> {
    model
        .tensors()
        .filter(|(shard, t)| shard.scales_of(t).is_none())
}
