//! The forward pass on a small random Llama written by the test: decoding with the key/value
//! cache equals recomputing the whole sequence, edits change the edited side only, only edited
//! tensors reload, and a missing tensor is a clear error.

use super::*;
use crate::workbench::{ServeConfig, Workbench};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal};
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::header::{self, TensorInfo};
use tensor_surgeon_wire::{ActivationsRequest, EditRequest};

const HIDDEN: u64 = 16;
const INTER: u64 = 32;
const LAYERS: u64 = 2;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;

/// Writes a random Llama (F32, untied lm_head) with the demo's tokenizer; `skip` leaves a
/// tensor out.
fn tiny_llama(dir: &std::path::Path, skip: Option<&str>) -> std::path::PathBuf {
    let vocab = tensor_surgeon_core::demo::VOCAB;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 0.3).unwrap();
    let hd = HIDDEN / HEADS;
    let mut shapes: Vec<(String, Vec<u64>)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        shapes.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        shapes.push((
            format!("{p}.self_attn.q_proj.weight"),
            vec![HEADS * hd, HIDDEN],
        ));
        shapes.push((
            format!("{p}.self_attn.k_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
        ));
        shapes.push((
            format!("{p}.self_attn.v_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
        ));
        shapes.push((
            format!("{p}.self_attn.o_proj.weight"),
            vec![HIDDEN, HEADS * hd],
        ));
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
        shapes.push((format!("{p}.mlp.gate_proj.weight"), vec![INTER, HIDDEN]));
        shapes.push((format!("{p}.mlp.up_proj.weight"), vec![INTER, HIDDEN]));
        shapes.push((format!("{p}.mlp.down_proj.weight"), vec![HIDDEN, INTER]));
    }
    shapes.push(("model.norm.weight".into(), vec![HIDDEN]));
    shapes.push(("lm_head.weight".into(), vec![vocab, HIDDEN]));
    let mut data = Vec::new();
    let mut infos = Vec::new();
    for (name, shape) in shapes {
        if Some(name.as_str()) == skip {
            continue;
        }
        let n: u64 = shape.iter().product();
        let begin = data.len() as u64;
        for _ in 0..n {
            let v = if shape.len() == 1 {
                1.0 + normal.sample(&mut rng) * 0.1
            } else {
                normal.sample(&mut rng)
            };
            data.extend_from_slice(&v.to_le_bytes());
        }
        infos.push(TensorInfo {
            name,
            dtype: Dtype::F32,
            shape,
            data_offsets: (begin, data.len() as u64),
        });
    }
    let mut bytes = header::serialize(None, &infos);
    bytes.extend_from_slice(&data);
    let model = dir.join("model.safetensors");
    std::fs::write(&model, bytes).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        tensor_surgeon_core::demo::vocab::tokenizer_json(),
    )
    .unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "max_position_embeddings": 64, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    model
}

fn runner(model: &Model) -> Runner {
    let vocab = crate::tokens::Vocab::find(&model.path, None)
        .unwrap()
        .map(Arc::new);
    Runner::open(&model.path, vocab).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn cached_decoding_equals_recomputing_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(tiny_llama(dir.path(), None)).unwrap();
    let r = runner(&model);
    let w = r.weights(&model, Edited::default());
    let prompt: Vec<u32> = vec![5, 17, 300, 42];
    let (first, mut g) = r.generator(&w, &prompt).unwrap();
    let mut seq = prompt.clone();
    let mut steps = 0;
    while steps < 6 {
        let Some(id) = r.step(&w, &mut g).unwrap() else {
            break;
        };
        // The greedy token is the argmax of recomputing everything before it.
        let full = r.distribution(&w, &seq).unwrap();
        assert_eq!(full.top(1)[0], id, "step {steps}");
        if steps == 0 {
            assert!(max_diff(&full.logits, &first.logits) < 1e-5);
        }
        seq.push(id);
        steps += 1;
    }
    assert!(steps > 0);
    // The cache's last step equals a from-scratch pass over the whole sequence.
    let mut cache = llama::KvCache::default();
    let Family::Llama(c) = &r.family else {
        panic!()
    };
    let m = Llama { config: c.clone() };
    let mut cap = Captured::default();
    m.forward(
        &w,
        &seq[..seq.len() - 1],
        &mut cache,
        Capture::default(),
        &mut cap,
    )
    .unwrap();
    let stepped = m
        .forward(
            &w,
            &seq[seq.len() - 1..],
            &mut cache,
            Capture::default(),
            &mut cap,
        )
        .unwrap();
    let whole = r.distribution(&w, &seq).unwrap();
    assert!(max_diff(&stepped.to_vec1::<f32>().unwrap(), &whole.logits) < 1e-4);
    // The decode step (plain loops over the stored weights) gives the same logits.
    let mut cache = llama::KvCache::default();
    m.forward(
        &w,
        &seq[..seq.len() - 1],
        &mut cache,
        Capture::default(),
        &mut cap,
    )
    .unwrap();
    let fast = m
        .step(&w, seq[seq.len() - 1], &mut cache)
        .unwrap()
        .expect("F32 weights step");
    assert!(max_diff(&fast, &whole.logits) < 1e-4);
    let again = m.step(&w, 9, &mut cache).unwrap().expect("steps");
    seq.push(9);
    assert!(max_diff(&again, &r.distribution(&w, &seq).unwrap().logits) < 1e-4);
}

#[test]
fn an_edit_changes_the_edited_side_and_reloads_only_its_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_llama(dir.path(), None);
    let config = ServeConfig {
        read_only: false,
        patches_dir: dir.path().join("patches"),
        out_dir: dir.path().join("out"),
        agent_auto_apply: false,
        max_step_bytes: crate::workbench::DEFAULT_MAX_STEP_BYTES,
        allow_dirs: Vec::new(),
    };
    let mut wb = Workbench::open(Model::open(&path).unwrap(), config)
        .unwrap()
        .0;
    wb.set_vocab(crate::tokens::Vocab::find(&path, None).unwrap());
    let req = RunRequest {
        prompt: "the".into(),
        top_k: 5,
        target: None,
        generate: 3,
    };
    let before = wb.run_prompt(&req).unwrap();
    assert!(before.edited.is_none() && before.kl == 0.0);
    let top = before.base.top[0].id;
    // Make the top token impossible: its unembedding row scaled by -50.
    let edit = |spec: String| EditRequest {
        tensor: "lm_head.weight".into(),
        spec,
        op: tensor_surgeon_core::edit::Op::Scale { factor: -50.0 },
        saturate: false,
        round: false,
    };
    wb.edit(&edit(format!("{top},:")), &Default::default())
        .unwrap();
    let loads = wb.run_loads();
    let after = wb.run_prompt(&req).unwrap();
    assert_eq!(wb.run_loads() - loads, 1, "only lm_head reloads");
    assert_eq!(after.base, before.base, "the base side does not move");
    let edited = after.edited.expect("an edited side");
    assert_ne!(edited.top[0].id, top);
    assert!(after.kl > 0.0);
    // A second run with nothing changed reloads nothing.
    let loads = wb.run_loads();
    wb.run_prompt(&req).unwrap();
    assert_eq!(wb.run_loads(), loads);
    // Undo: the edited model is the base again.
    wb.undo().unwrap();
    let undone = wb.run_prompt(&req).unwrap();
    assert_eq!(undone.edited, None);
    assert_eq!(undone.base, before.base);
    assert_eq!(undone.kl, 0.0);
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(tiny_llama(
        dir.path(),
        Some("model.layers.1.mlp.up_proj.weight"),
    ))
    .unwrap();
    let r = runner(&model);
    let w = r.weights(&model, Edited::default());
    let err = r.distribution(&w, &[3, 4]).unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::Invalid);
    assert!(
        err.to_string()
            .contains("model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn activations_and_the_logit_lens_have_their_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(tiny_llama(dir.path(), None)).unwrap();
    let r = runner(&model);
    let w = r.weights(&model, Edited::default());
    let a = r
        .activations(
            &w,
            &ActivationsRequest {
                prompt: "the cat".into(),
                layer: 1,
                top: 4,
            },
        )
        .unwrap();
    let t = a.tokens.len() as u32;
    assert_eq!((a.mlp.rows, a.mlp.cols), (t, INTER as u32));
    assert_eq!((a.attention.rows, a.attention.cols), (t, HIDDEN as u32));
    assert_eq!(a.top_neurons.len(), 4);
    let last = &a.mlp.values[((t - 1) * INTER as u32) as usize..];
    let best = last.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert_eq!(a.top_neurons[0].value.abs(), best);
    assert_eq!(a.logit_lens.len(), LAYERS as usize);
    // The last layer's lens is the model's own next-token distribution.
    let d = r.distribution(&w, &r.encode("the cat").unwrap()).unwrap();
    assert_eq!(a.logit_lens[LAYERS as usize - 1].top[0].id, d.top(1)[0]);
    assert_eq!(a.down_proj, "model.layers.1.mlp.down_proj.weight");
    assert_eq!(a.unembedding, "lm_head.weight");
    let err = r
        .activations(
            &w,
            &ActivationsRequest {
                prompt: "the".into(),
                layer: 9,
                top: 4,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}
