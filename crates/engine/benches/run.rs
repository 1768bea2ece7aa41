//! Inference benchmarks on SmolLM2-135M (BF16): a 32-token prompt's next-token distribution,
//! greedy generation, the decode kernel's bandwidth, and re-running after a one-cell edit
//! against re-running with nothing changed. `benches/run_bench.py` prepares the model, sets
//! `TS_RUN_MODEL` to its folder, runs this and the numpy reference in the same run and prints
//! the ratios.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_engine::workbench::{SessionConfig, Workbench};
use tensor_surgeon_infer::kernel::{matvec, Stored};
use tensor_surgeon_infer::tokens::Vocab;
use tensor_surgeon_infer::{Edited, RunnableModel};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{EditRequest, RunRequest};

/// The benchmark's 32-token prompt (the first 32 tokens of this text).
pub const LONG_PROMPT: &str = "The history of the city begins in the Roman era, when a small \
    settlement grew along the river. Over the centuries it became a centre of trade, learning and \
    art, and today it is known for";

/// The model to run. Without `TS_RUN_MODEL`, `cargo bench` fails and says why, and
/// `cargo test --all-targets` (which runs every bench once as a test) skips with a note.
fn model_path() -> Option<PathBuf> {
    let benching = std::env::args().any(|a| a == "--bench");
    match std::env::var_os("TS_RUN_MODEL") {
        Some(dir) => Some(PathBuf::from(dir).join("model.safetensors")),
        None if benching => panic!(
            "TS_RUN_MODEL is not set: point it at the SmolLM2 folder (benches/run_bench.py does)"
        ),
        None => {
            eprintln!("run benches skipped under cargo test: TS_RUN_MODEL is not set");
            None
        }
    }
}

fn runnable(path: &std::path::Path) -> (Model, RunnableModel) {
    let model = Model::open(path).expect("the model opens");
    let vocab = Vocab::find(path, None).expect("a tokenizer").map(Arc::new);
    let runner = RunnableModel::open(&model.path, vocab).expect("the model runs");
    (model, runner)
}

fn inference(c: &mut Criterion) {
    let Some(path) = model_path() else { return };
    let (model, r) = runnable(&path);
    let w = r.weights(&model, Edited::default());
    let ids = r.encode(LONG_PROMPT).expect("tokens");
    assert!(ids.len() >= 32, "the prompt has {} tokens", ids.len());
    let ids32 = &ids[..32];
    let ids5 = r.encode("The capital of France is").expect("tokens");
    c.bench_function("run/prefill_32", |b| {
        b.iter(|| black_box(r.distribution(&w, ids32).expect("runs").log_probs.len()))
    });
    c.bench_function("run/generate_32", |b| {
        b.iter(|| {
            let (_, mut g) = r.generator(&w, &ids5).expect("runs");
            for _ in 0..32 {
                r.step(&w, &mut g).expect("runs");
            }
            black_box(g.ids.len())
        })
    });
    c.bench_function("run/decode_step", |b| {
        b.iter_batched(
            || r.generator(&w, &ids5).expect("runs").1,
            |mut g| black_box(r.step(&w, &mut g).expect("runs")),
            BatchSize::LargeInput,
        )
    });
    // The kernel alone on the largest matrix: the bandwidth a decode step can hope for.
    let (shard, info) = model.get("model.embed_tokens.weight").expect("embedding");
    let stored =
        Stored::of(info.dtype, shard.mapped(info).expect("a local model")).expect("BF16, aligned");
    let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
    let x: Vec<f32> = (0..cols).map(|i| (i as f32).sin()).collect();
    let mut y = vec![0f32; rows];
    c.bench_function("run/matvec_embedding", |b| {
        b.iter(|| {
            matvec(stored, &x, &mut y);
            black_box(y[0])
        })
    });
}

fn rerun(c: &mut Criterion) {
    let Some(path) = model_path() else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = SessionConfig {
        read_only: false,
        patches_dir: dir.path().join("patches"),
        out_dir: dir.path().join("out"),
        agent_auto_apply: false,
        max_step_bytes: tensor_surgeon_engine::workbench::DEFAULT_MAX_STEP_BYTES,
        allow_dirs: Vec::new(),
    };
    let (mut wb, _) = Workbench::open(Model::open(&path).expect("opens"), config).expect("opens");
    wb.set_vocab(Vocab::find(&path, None).expect("a tokenizer"));
    let req = RunRequest {
        prompt: "The capital of France is".into(),
        top_k: 10,
        target: None,
        generate: 0,
    };
    let edit = |tensor: &str, value: f64| EditRequest {
        tensor: tensor.into(),
        spec: "0,0".into(),
        op: Op::Set {
            value: value.to_string(),
        },
        saturate: false,
        round: false,
    };
    let mut value = 0.0;
    for tensor in [
        "model.layers.10.mlp.down_proj.weight",
        "model.embed_tokens.weight",
    ] {
        let short = if tensor.contains("embed") {
            "embedding"
        } else {
            "down_proj"
        };
        wb.edit(&edit(tensor, 0.5), &Default::default())
            .expect("edits");
        wb.run_prompt(&req).expect("runs");
        c.bench_function(&format!("run/rerun_unchanged_{short}"), |b| {
            b.iter(|| black_box(wb.run_prompt(&req).expect("runs").kl))
        });
        c.bench_function(&format!("run/rerun_after_edit_{short}"), |b| {
            b.iter_batched(
                || {
                    value += 0.25;
                    wb.edit(&edit(tensor, value), &Default::default())
                        .expect("edits");
                },
                |_| black_box(wb.run_prompt(&req).expect("runs").kl),
                BatchSize::PerIteration,
            )
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = inference, rerun
}
criterion_main!(benches);
