//! The forward pass on a small random Llama (the core's tiny demo Llama): decoding with the
//! key/value cache equals recomputing the whole sequence, activations and the logit lens have
//! their shapes, and a missing tensor is a clear error. Weights come from an in-memory
//! [`TensorSource`]: inference needs no store.

use super::*;
use std::borrow::Cow;
use std::collections::HashMap;
use tensor_surgeon_core::demo::llama::{HIDDEN, INTERMEDIATE as INTER, LAYERS};
use tensor_surgeon_core::header::{self, TensorInfo};
use tensor_surgeon_core::tensors::ReadError;
use tensor_surgeon_wire::ActivationsRequest;

/// A model held in memory: a `.safetensors` file's tensors by name, and the folder of its side
/// files (`config.json`, `tokenizer.json`).
pub(crate) struct Memory {
    pub(crate) path: std::path::PathBuf,
    pub(crate) tensors: HashMap<String, (TensorInfo, Vec<u8>)>,
}

impl TensorSource for Memory {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|(i, _)| i)
    }
    fn resident(&self, name: &str) -> Option<&[u8]> {
        self.tensors.get(name).map(|(_, b)| b.as_slice())
    }
    fn bytes(&self, name: &str) -> std::result::Result<Cow<'_, [u8]>, ReadError> {
        let (_, b) = self.tensors.get(name).ok_or("no such tensor")?;
        Ok(Cow::Borrowed(b))
    }
}

/// Writes the tiny Llama's side files into `dir` and holds its tensors in memory; `skip`
/// leaves a tensor out.
pub(crate) fn tiny_llama(dir: &std::path::Path, skip: Option<&str>) -> Memory {
    let mut tensors = HashMap::new();
    for (name, bytes) in tensor_surgeon_core::demo::llama::files(skip) {
        if name == "model.safetensors" {
            let h = header::parse(&bytes, bytes.len() as u64).unwrap();
            for t in &h.tensors {
                let at = (h.data_start() + t.data_offsets.0) as usize
                    ..(h.data_start() + t.data_offsets.1) as usize;
                tensors.insert(t.name.clone(), (t.clone(), bytes[at].to_vec()));
            }
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    Memory {
        path: dir.join("model.safetensors"),
        tensors,
    }
}

pub(crate) fn runnable(model: &Memory) -> RunnableModel {
    let vocab = crate::tokens::Vocab::find(&model.path, None)
        .unwrap()
        .map(Arc::new);
    RunnableModel::open(&model.path, vocab).unwrap()
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
    let model = tiny_llama(dir.path(), None);
    let r = runnable(&model);
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
    let m = r.llama().unwrap();
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
fn a_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), Some("model.layers.1.mlp.up_proj.weight"));
    let r = runnable(&model);
    let w = r.weights(&model, Edited::default());
    let err = r.distribution(&w, &[3, 4]).unwrap_err();
    assert_eq!(
        err.kind(),
        tensor_surgeon_core::error_kind::ErrorKind::Invalid
    );
    assert!(
        err.to_string()
            .contains("model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn activations_and_the_logit_lens_have_their_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runnable(&model);
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
