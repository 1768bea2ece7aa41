//! The trace on the tiny demo Llama: its exact invariants, and every cell against a
//! reference that reruns the whole corrupted prompt with the restoration (the paper's
//! way), for every kind.

use super::runs::values;
use super::*;
use crate::distribution::Distribution;
use crate::llama::{Part, Replace};
use crate::tests::{runnable as runner, tiny_llama};
use crate::Edited;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal};

const PROMPT: &str = "the cat sat on the";

fn request(kinds: Vec<TraceKind>) -> TraceRequest {
    TraceRequest {
        samples: 3,
        window: 2,
        seed: 5,
        kinds,
        ..TraceRequest::new(PROMPT, "cat")
    }
}

fn traced(req: &TraceRequest) -> (RunnableModel, CausalTrace, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runner(&model);
    let w = r.weights(&model, Edited::default());
    let t = r
        .trace(&w, req, &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    drop(w);
    (r, t, dir)
}

#[test]
fn a_trace_keeps_its_exact_invariants() {
    let (_, t, _dir) = traced(&request(TraceKind::ALL.to_vec()));
    let (layers, tokens) = (t.layers as usize, t.tokens.len());
    let [s0, s1] = t.subject;
    assert!(
        s0 >= 1 && s1 > s0 && (s1 as usize) < tokens,
        "{:?}",
        t.subject
    );
    assert!(t.clean != t.corrupted, "the noise changes the answer");
    let residual = t.residual.as_ref().unwrap();
    // Restoring the last token's final state is the clean run.
    assert_eq!(residual[layers - 1][tokens - 1], t.clean);
    // The last layer's other tokens reach nothing that is read.
    for p in &residual[layers - 1][..tokens - 1] {
        assert_eq!(*p, t.corrupted);
    }
    // Tokens before the subject are never corrupted: restoring them changes nothing.
    for kind in TraceKind::ALL {
        let map = t.map(kind).unwrap();
        assert_eq!(map.len(), layers);
        for row in map {
            assert_eq!(row.len(), tokens);
            for p in &row[..s0 as usize] {
                assert_eq!(*p, t.corrupted, "{kind:?}");
            }
        }
    }
}

/// p(target) with the restoration done the reference's way: the whole corrupted prompt
/// rerun through every layer for each sample.
fn rerun(
    r: &RunnableModel,
    w: &Weights,
    t: &CausalTrace,
    kind: TraceKind,
    layer: usize,
    token: usize,
) -> f64 {
    let model = r.llama().unwrap();
    let a = &model.arch;
    let (hidden, n) = (a.hidden, t.tokens.len());
    let ids: Vec<u32> = t.tokens.iter().map(|t| t.id).collect();
    let [s0, s1] = t.subject.map(|v| v as usize);
    let batch = model.batch(&[(0, n)]).unwrap();
    let x0 = model.embed_rows(w, &ids).unwrap();
    let run = |x: Tensor,
               after: &mut dyn FnMut(usize, Tensor) -> Tensor,
               replace: &dyn Fn(usize) -> Option<(Part, Vec<f32>)>| {
        let mut x = x;
        let mut parts = Vec::new();
        for l in 0..a.depth() {
            let mut kv = vec![(Vec::new(), Vec::new())];
            let value = replace(l);
            let rep: Vec<Replace<'_>> = value
                .iter()
                .map(|(part, v)| Replace {
                    part: *part,
                    row: token,
                    value: v,
                })
                .collect();
            let b = model.block(w, l, &x, &mut kv, &batch, &rep).unwrap();
            parts.push((
                values(&b.x).unwrap(),
                values(&b.attention).unwrap(),
                values(&b.mlp).unwrap(),
            ));
            x = after(l, b.x);
        }
        (values(&x).unwrap(), parts)
    };
    let (_, clean) = run(x0.clone(), &mut |_, x| x, &|_| None);
    let normal = Normal::new(0.0, t.noise).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut sum = 0.0;
    for _ in 0..t.samples {
        let mut x = values(&x0).unwrap();
        for v in &mut x[s0 * hidden..s1 * hidden] {
            *v += normal.sample(&mut rng) as f32;
        }
        let x = Tensor::from_vec(x, (n, hidden), &Device::Cpu).unwrap();
        let row = |m: &[f32]| m[token * hidden..(token + 1) * hidden].to_vec();
        let (lo, hi) = (
            layer.saturating_sub(t.window as usize / 2),
            layer + (t.window as usize).div_ceil(2),
        );
        let (out, _) = run(
            x,
            &mut |l, x| {
                if kind != TraceKind::Residual || l != layer {
                    return x;
                }
                let mut v = values(&x).unwrap();
                v[token * hidden..(token + 1) * hidden].copy_from_slice(&row(&clean[l].0));
                Tensor::from_vec(v, (n, hidden), &Device::Cpu).unwrap()
            },
            &|l| match kind {
                _ if l < lo || l >= hi => None,
                TraceKind::Mlp => Some((Part::Mlp, row(&clean[l].2))),
                TraceKind::Attention => Some((Part::Attention, row(&clean[l].1))),
                TraceKind::Residual => None,
            },
        );
        let last = &out[(n - 1) * hidden..];
        let logits = model
            .logits(
                w,
                &Tensor::from_slice(last, (1, hidden), &Device::Cpu).unwrap(),
            )
            .unwrap();
        let d = Distribution::from_logits(values(&logits).unwrap());
        sum += d.prob(t.target.id);
    }
    sum / t.samples as f64
}

#[test]
fn the_fast_trace_equals_rerunning_the_whole_prompt_for_every_cell() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runner(&model);
    let w = r.weights(&model, Edited::default());
    let t = r
        .trace(
            &w,
            &request(TraceKind::ALL.to_vec()),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
    let mut moved = 0;
    for kind in TraceKind::ALL {
        for (layer, row) in t.map(kind).unwrap().iter().enumerate() {
            for (token, &p) in row.iter().enumerate() {
                let reference = rerun(&r, &w, &t, kind, layer, token);
                assert!(
                    (p - reference).abs() < 1e-5,
                    "{kind:?} layer {layer} token {token}: {p} vs {reference}"
                );
                moved += usize::from((p - t.corrupted).abs() > 1e-6);
            }
        }
    }
    assert!(moved > 0, "some restoration brings the answer back");
    let slow = r
        .trace_by_rerun(
            &w,
            &request(TraceKind::ALL.to_vec()),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
    for kind in TraceKind::ALL {
        for (fast, slow) in t.map(kind).unwrap().iter().zip(slow.map(kind).unwrap()) {
            for (a, b) in fast.iter().zip(slow) {
                assert!((a - b).abs() < 1e-5, "{kind:?}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn a_stopped_trace_keeps_its_finished_rows_and_asked_kinds_only() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runner(&model);
    let w = r.weights(&model, Edited::default());
    let stop = AtomicBool::new(false);
    let mut rows = 0;
    let t = r
        .trace(&w, &request(vec![TraceKind::Mlp]), &stop, &mut |e| {
            if let TraceEvent::Row { done, total, .. } = e {
                rows += 1;
                assert_eq!(total, 2);
                assert_eq!(done, 1);
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    assert_eq!(rows, 1);
    assert!(t.stopped);
    assert_eq!(t.mlp.as_ref().map(Vec::len), Some(1));
    assert!(t.residual.is_none() && t.attention.is_none());
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runner(&model);
    let w = r.weights(&model, Edited::default());
    let err = |req: TraceRequest| {
        r.trace(&w, &req, &AtomicBool::new(false), &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    let msg = err(TraceRequest::new(PROMPT, "dog"));
    assert!(msg.contains("\"dog\" does not occur"), "{msg}");
    let msg = err(TraceRequest {
        samples: 0,
        ..TraceRequest::new(PROMPT, "cat")
    });
    assert!(msg.contains("samples must be 1 to"), "{msg}");
    let msg = err(TraceRequest {
        noise: Some(-1.0),
        ..TraceRequest::new(PROMPT, "cat")
    });
    assert!(msg.contains("positive"), "{msg}");
}
