//! Engine benchmarks on files prepared by `benches/compare.py` (set `TS_BENCH_DIR`); the
//! driver compares these times with the Python/numpy and `cp` references measured in the same
//! run. Run through `./dev.sh bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use tensor_surgeon_core::slice::SliceSpec;
use tensor_surgeon_engine::{bake, patch_files, Model};

fn dir() -> Option<PathBuf> {
    std::env::var_os("TS_BENCH_DIR").map(PathBuf::from)
}

fn open_sparse(c: &mut Criterion) {
    let Some(d) = dir() else { return };
    let path = d.join("sparse-100g.safetensors");
    c.bench_function("open_100g_10k_tensors", |b| {
        b.iter(|| black_box(Model::open(&path).map(|m| m.len()).unwrap_or(0)))
    });
}

fn slices(c: &mut Criterion) {
    let Some(d) = dir() else { return };
    let Ok(model) = Model::open(d.join("dense.safetensors")) else {
        return;
    };
    let spec = SliceSpec::parse("1024:1536,1024:1536").unwrap_or_default();
    for name in ["f32", "bf16"] {
        let Ok((shard, info)) = model.get(name) else {
            continue;
        };
        let Ok(sel) = spec.resolve(&info.shape) else {
            continue;
        };
        c.bench_function(&format!("slice_512_{name}"), |b| {
            b.iter(|| {
                black_box(tensor_surgeon_core::source::extract(
                    info.dtype,
                    &info.shape,
                    &sel,
                    shard.data(info),
                ))
            })
        });
    }
}

fn bake_scattered(c: &mut Criterion) {
    let Some(d) = dir() else { return };
    let Ok(model) = Model::open(d.join("dense.safetensors")) else {
        return;
    };
    let Ok(patch) = patch_files::load_for(&d.join("scattered.json"), &model) else {
        return;
    };
    let out = d.join("bench-baked.safetensors");
    let mut g = c.benchmark_group("bake");
    g.sample_size(10);
    g.bench_function("bake_100mb_1000_edits", |b| {
        b.iter(|| {
            bake::bake(&model, &patch, &out, &mut |_, _| {})
                .map(|w| w.len())
                .unwrap_or(0)
        })
    });
    g.finish();
}

criterion_group!(benches, open_sparse, slices, bake_scattered);
criterion_main!(benches);
