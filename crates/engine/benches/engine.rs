//! Engine benchmarks on files prepared by `benches/compare.py` (set `TS_BENCH_DIR`); the
//! driver compares these times with the Python/numpy and `cp` references measured in the same
//! run. Run through `./dev.sh bench`. `cargo bench` without the files fails and says why;
//! `cargo test --all-targets` (which runs each bench once as a test) skips them.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use tensor_surgeon_core::slice::SliceSpec;
use tensor_surgeon_store::{bake, patch_files, Model};

/// The prepared files' folder; `None` only under `cargo test`.
fn dir() -> Option<PathBuf> {
    let benching = std::env::args().any(|a| a == "--bench");
    match std::env::var_os("TS_BENCH_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None if benching => panic!(
            "TS_BENCH_DIR is not set: run ./dev.sh bench (benches/compare.py prepares the files)"
        ),
        None => None,
    }
}

fn open_sparse(c: &mut Criterion) {
    let Some(d) = dir() else { return };
    let path = d.join("sparse-100g.safetensors");
    c.bench_function("open_100g_10k_tensors", |b| {
        b.iter(|| black_box(Model::open(&path).expect("the prepared sparse model").len()))
    });
}

fn slices(c: &mut Criterion) {
    let Some(d) = dir() else { return };
    let model = Model::open(d.join("dense.safetensors")).expect("the prepared dense model");
    let spec = SliceSpec::parse("1024:1536,1024:1536").expect("a slice");
    for name in ["f32", "bf16"] {
        let (shard, info) = model.get(name).expect("the prepared tensor");
        let sel = spec.resolve(&info.shape).expect("the slice fits");
        c.bench_function(&format!("slice_512_{name}"), |b| {
            b.iter(|| {
                black_box(tensor_surgeon_core::source::extract(
                    info.dtype,
                    &info.shape,
                    &sel,
                    &*shard.data(info).expect("a local tensor"),
                ))
            })
        });
    }
}

fn bake_scattered(c: &mut Criterion) {
    let Some(d) = dir() else { return };
    let model = Model::open(d.join("dense.safetensors")).expect("the prepared dense model");
    let patch =
        patch_files::load_for(&d.join("scattered.json"), &model).expect("the prepared patch");
    let out = d.join("bench-baked.safetensors");
    let mut g = c.benchmark_group("bake");
    g.sample_size(10);
    g.bench_function("bake_100mb_1000_edits", |b| {
        b.iter(|| {
            bake::bake(&model, &patch, &out, &mut |_, _| {})
                .expect("the bake")
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, open_sparse, slices, bake_scattered);
criterion_main!(benches);
