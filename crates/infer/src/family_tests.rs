//! Every family the description knows, on tiny random models made from the description's own
//! tensor names (Llama, a windowed Mistral, Qwen2 with biases, Qwen3's head norms, Phi-3's
//! fused projections, Gemma 3 with both kinds of layer and its norms): the three executors
//! agree (the candle pass, the decode step, the fact editor's differentiable pass), the
//! differentiable pass's gradient is a finite difference's, a trace keeps its exact
//! invariants, and an ablation leaves no trace of its direction in what the layers write.

use crate::arch::{Architecture, Constants, GemmaLayers, Kind};
use crate::config::Family;
use crate::edit::FactGoal;
use crate::llama::{Capture, Captured, KvCache, Llama};
use crate::tests::{tiny_llama, Memory};
use crate::{Edited, RunnableModel};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_wire::TraceKind;
use tensor_surgeon_wire::TraceRequest;

/// A prompt longer than the windows below, the subject inside it.
const PROMPT: &str = "the cat sat on the mat and the dog ran";

pub(crate) fn constants(kind: Kind) -> Constants {
    Constants {
        kind,
        hidden: 16,
        heads: 4,
        kv_heads: 2,
        head_width: 4,
        intermediate: 24,
        layers: 4,
        vocab: tensor_surgeon_core::demo::VOCAB as usize,
        rms_eps: 1e-6,
        rope_theta: 10_000.0,
        max_positions: 64,
        tied: false,
        eos: vec![],
        window: None,
        qkv_bias: false,
        mlp_bias: false,
        final_softcap: None,
        gemma: None,
    }
}

/// The families, each with what sets it apart.
fn families() -> Vec<(&'static str, Constants)> {
    let mistral = Constants {
        window: Some(3),
        ..constants(Kind::Mistral)
    };
    let qwen2 = Constants {
        qkv_bias: true,
        tied: true,
        ..constants(Kind::Qwen2)
    };
    // Heads wider than hidden / heads, as Qwen3's configs allow.
    let qwen3 = Constants {
        head_width: 8,
        ..constants(Kind::Qwen3)
    };
    let gemma3 = Constants {
        tied: true,
        final_softcap: Some(8.0),
        gemma: Some(GemmaLayers {
            sliding_window: 3,
            global_every: 2,
            local_rope_theta: 10.0,
            query_pre_attn_scalar: 12.0,
            norm_offset: 1.0,
        }),
        ..constants(Kind::Gemma3)
    };
    vec![
        ("llama", constants(Kind::Llama)),
        ("mistral", mistral),
        ("qwen2", qwen2),
        ("qwen3", qwen3),
        ("phi3", constants(Kind::Phi3)),
        ("gemma3", gemma3),
    ]
}

/// The shape of a tensor the description names.
fn shape_of(a: &Architecture, name: &str) -> Vec<usize> {
    if name == a.embedding || name == a.unembedding {
        return vec![a.vocab, a.hidden];
    }
    for l in &a.layers {
        let mut linears = vec![&l.o, &l.down];
        match &l.qkv {
            crate::arch::Qkv::Split { q, k, v } => linears.extend([q, k, v]),
            crate::arch::Qkv::Fused(m) => linears.push(m),
        }
        match &l.gate_up {
            crate::arch::GateUp::Split { gate, up } => linears.extend([gate, up]),
            crate::arch::GateUp::Fused(m) => linears.push(m),
        }
        for m in linears {
            if m.weight == name {
                return vec![m.out, m.input];
            }
            if m.bias.as_deref() == Some(name) {
                return vec![m.out];
            }
        }
        if l.q_norm.as_deref() == Some(name) || l.k_norm.as_deref() == Some(name) {
            return vec![a.head_width];
        }
    }
    vec![a.hidden]
}

/// A tiny random model of `c`'s family (the demo's tokenizer beside it) and its runner.
fn tiny(dir: &std::path::Path, c: &Constants) -> (Memory, RunnableModel) {
    let mut model = tiny_llama(dir, None);
    model.tensors.clear();
    let a = Architecture::resolve(c);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for name in a.tensor_names() {
        let shape = shape_of(&a, &name);
        let (mean, std) = match shape.as_slice() {
            [_, input] if name == a.embedding => (0.0, 1.0 / (*input as f64).sqrt() * 4.0),
            [_, input] => (0.0, 1.5 / (*input as f64).sqrt()),
            // Norm weights around 1 as the pass multiplies by them; biases small.
            [_] if name.ends_with(".bias") => (0.0, 0.2),
            _ => (1.0 - f64::from(a.norm_offset), 0.2),
        };
        let normal = Normal::new(mean, std).unwrap();
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| normal.sample(&mut rng) as f32)
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let info = TensorInfo {
            name: name.clone(),
            dtype: Dtype::F32,
            shape: shape.iter().map(|&d| d as u64).collect(),
            data_offsets: (0, bytes.len() as u64),
            blocks: None,
        };
        model.tensors.insert(name, (info, bytes));
    }
    let vocab = crate::tokens::Vocab::find(&model.path, None)
        .unwrap()
        .map(Arc::new)
        .unwrap();
    let runner = RunnableModel::with_family(Family::Llama(Arc::new(a)), vocab);
    (model, runner)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    logits.iter().map(|&v| (v - max) - z.ln() as f32).collect()
}

#[test]
fn the_three_executors_agree_on_every_family() {
    for (family, c) in families() {
        let dir = tempfile::tempdir().unwrap();
        let (model, r) = tiny(dir.path(), &c);
        let w = r.weights(&model, Edited::default());
        let ids = r.encode(PROMPT).unwrap();
        assert!(
            ids.len() > 5,
            "{family}: the prompt is longer than the windows"
        );
        let m = r.llama().unwrap();
        // The candle pass over the whole prompt.
        let whole = r.distribution(&w, &ids).unwrap().logits;
        // The candle pass up to the last token, then the decode step.
        let mut cache = KvCache::default();
        let (head, last) = ids.split_at(ids.len() - 1);
        m.forward(
            &w,
            head,
            &mut cache,
            Capture::default(),
            &mut Captured::default(),
        )
        .unwrap();
        let stepped = m
            .step(&w, last[0], &mut cache)
            .unwrap()
            .expect("f32 weights step as stored");
        assert!(
            max_diff(&whole, &stepped) < 1e-4,
            "{family}: decode step vs candle pass {}",
            max_diff(&whole, &stepped)
        );
        // The differentiable pass at δ = 0, from a middle layer and from the first: the KL
        // prompt's next-token log-probabilities are the candle pass's.
        let goal = FactGoal {
            subject: "cat".into(),
            prompt: PROMPT.into(),
            target: "#7".into(),
        };
        let contexts = ["{}".to_string(), "A dog ran far. {}".to_string()];
        let kl_text = "cat is a";
        let spans = r.encode_spans(kl_text).unwrap();
        let (_, end) = crate::trace::subject_tokens_from(kl_text, 0, "cat", &spans).unwrap();
        let kl_ids: Vec<u32> = spans[..end].iter().map(|(id, _)| *id).collect();
        let want = log_softmax(&r.distribution(&w, &kl_ids).unwrap().logits);
        for layer in [0, 2] {
            let p = r.problem(&w, &goal, layer, &contexts).unwrap();
            let zero = Tensor::zeros(c.hidden, DType::F32, &Device::Cpu).unwrap();
            let (_, kl_lp, p_target) = p.run(&zero).unwrap();
            let got = kl_lp.to_vec1::<f32>().unwrap();
            assert!(
                max_diff(&got, &want) < 1e-4,
                "{family} layer {layer}: differentiable pass vs candle pass {}",
                max_diff(&got, &want)
            );
            let p_want = contexts
                .iter()
                .map(|t| {
                    let text = t.replace("{}", PROMPT);
                    r.distribution(&w, &r.encode(&text).unwrap())
                        .unwrap()
                        .prob(7)
                })
                .sum::<f64>()
                / 2.0;
            assert!(
                (p_target - p_want).abs() < 1e-4 * p_want.max(1e-3),
                "{family} layer {layer}: p {p_target} vs {p_want}"
            );
        }
    }
}

#[test]
fn the_differentiable_pass_s_gradient_is_a_finite_difference_on_every_family() {
    for (family, c) in families() {
        let dir = tempfile::tempdir().unwrap();
        let (model, r) = tiny(dir.path(), &c);
        let w = r.weights(&model, Edited::default());
        let goal = FactGoal {
            subject: "cat".into(),
            prompt: PROMPT.into(),
            target: "#11".into(),
        };
        let contexts = vec!["{}".to_string(), "A dog ran. {}".to_string()];
        // Layer 0: Gemma's first layer is a windowed one with a norm after its MLP, which δ
        // passes through.
        let p = r.problem(&w, &goal, 0, &contexts).unwrap();
        crate::edit::tests::assert_gradient_is_a_finite_difference(&p, family);
    }
}

#[test]
fn a_trace_keeps_its_exact_invariants_on_every_family() {
    for (family, c) in families() {
        let dir = tempfile::tempdir().unwrap();
        let (model, r) = tiny(dir.path(), &c);
        let w = r.weights(&model, Edited::default());
        let req = TraceRequest {
            samples: 2,
            window: 2,
            seed: 3,
            kinds: TraceKind::ALL.to_vec(),
            ..TraceRequest::new(PROMPT, "cat")
        };
        let t = r
            .trace(&w, &req, &AtomicBool::new(false), &mut |_| {})
            .unwrap();
        let (layers, tokens) = (t.layers as usize, t.tokens.len());
        assert_eq!(layers, c.layers, "{family}");
        assert!(
            t.clean != t.corrupted,
            "{family}: the noise changes the answer"
        );
        let residual = t.residual.as_ref().unwrap();
        // Restoring the last token's final state is the clean run.
        assert_eq!(residual[layers - 1][tokens - 1], t.clean, "{family}");
        // Tokens before the subject are never corrupted: restoring them changes nothing.
        let s0 = t.subject[0] as usize;
        assert!(s0 >= 1, "{family}: a token before the subject");
        for kind in TraceKind::ALL {
            for row in t.map(kind).unwrap() {
                for p in &row[..s0] {
                    assert_eq!(*p, t.corrupted, "{family} {kind:?}");
                }
            }
        }
        // The trace names the matrices its cells open, from the description.
        let a = r.architecture().unwrap();
        assert_eq!(
            t.tensor_of(TraceKind::Mlp, 1),
            Some(a.layers[1].down.weight.as_str())
        );
        assert_eq!(
            t.tensor_of(TraceKind::Attention, 3),
            Some(a.layers[3].o.weight.as_str())
        );
    }
}

#[test]
fn an_ablation_leaves_nothing_of_its_direction_in_what_the_layers_write() {
    for (family, c) in families() {
        let dir = tempfile::tempdir().unwrap();
        let (mut model, r) = tiny(dir.path(), &c);
        let w = r.weights(&model, Edited::default());
        let from = vec!["the cat sat on".to_string(), "a cat ran to".to_string()];
        let to = vec!["the dog sat on".to_string(), "a dog ran to".to_string()];
        let (dir_r, _) = r.direction(&w, &from, &to, 1).unwrap();
        let ablations = r.ablation(&w, &dir_r, 1.0, false).unwrap();
        drop(w);
        assert_eq!(
            ablations.len(),
            2 * c.layers,
            "{family}: o and down of every layer"
        );
        // W + u vᵀ, materialised.
        for ab in &ablations {
            let (info, bytes) = model.tensors.get_mut(&ab.tensor).unwrap();
            let cols = info.shape[1] as usize;
            let mut values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            for (i, row) in values.chunks_exact_mut(cols).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x += ab.u[i] * ab.v[j];
                }
            }
            *bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        let r = RunnableModel::with_family(r.family.clone(), r.vocab.clone());
        let w = r.weights(&model, Edited::default());
        let m: Llama = r.llama().unwrap();
        let ids = r.encode(PROMPT).unwrap();
        let mut x = m.embed_rows(&w, &ids).unwrap();
        let batch = m.batch(&[(0, ids.len())]).unwrap();
        let r_t = Tensor::from_slice(&dir_r, (c.hidden, 1), &Device::Cpu).unwrap();
        for layer in 0..c.layers {
            let mut kv = vec![(Vec::new(), Vec::new())];
            let out = m.block(&w, layer, &x, &mut kv, &batch, &[]).unwrap();
            for (what, written) in [("attention", &out.attention), ("mlp", &out.mlp)] {
                let along = written
                    .matmul(&r_t)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap();
                let size = written.abs().unwrap().max_all().unwrap();
                let (along, size) = (
                    along.to_scalar::<f32>().unwrap(),
                    size.to_scalar::<f32>().unwrap(),
                );
                assert!(
                    along < 1e-4 * size.max(1.0),
                    "{family} layer {layer} {what}: {along} along the direction"
                );
            }
            x = out.x;
        }
    }
}
