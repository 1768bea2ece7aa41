//! Directional ablation on the core's tiny Llama: the search keeps the rule it states (the
//! least behaviour within the KL bound, else the least KL), and the kept candidate is the
//! report's.

use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::Origin;
use tensor_surgeon_engine::ablate::{ablate, SEARCH_KL};
use tensor_surgeon_infer::tokens::Vocab;
use tensor_surgeon_infer::RunnableModel;
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::AblationRequest;

#[test]
fn the_search_keeps_the_least_behaviour_within_the_kl_bound() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in tensor_surgeon_core::demo::llama::files(None) {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let model = Model::open(&path).unwrap();
    let vocab = Vocab::find(&path, None).unwrap().map(std::sync::Arc::new);
    let runner = RunnableModel::open(&path, vocab).unwrap();
    let req = AblationRequest {
        from: [
            "the cat sat on",
            "a cat ran to",
            "the cat is on",
            "a cat sat in",
        ]
        .map(String::from)
        .to_vec(),
        to: ["the dog sat on", "a dog ran to"]
            .map(String::from)
            .to_vec(),
        layer: None,
        strength: 1.0,
        embedding: false,
        markers: Vec::new(),
        tokens: vec!["#3".into(), "#9".into()],
        generate: 4,
    };
    let out = ablate(
        &model,
        &runner,
        &Overlay::default(),
        &req,
        true,
        Origin::new("cli"),
        &mut |_, _| {},
    )
    .unwrap();
    let r = &out.report;
    assert_eq!(
        r.tried.len(),
        4,
        "two layers x two strengths: {:?}",
        r.tried
    );
    let within: Vec<_> = r.tried.iter().filter(|t| t.kl <= SEARCH_KL).collect();
    let best = if within.is_empty() {
        r.tried.iter().min_by(|a, b| a.kl.total_cmp(&b.kl)).unwrap()
    } else {
        within
            .into_iter()
            .min_by(|a, b| a.behaviour.total_cmp(&b.behaviour))
            .unwrap()
    };
    assert_eq!((best.layer, best.strength), (r.layer, r.strength));
    let token_prob = r.token_prob.as_ref().unwrap();
    assert_eq!(token_prob.edited, best.behaviour);
    assert_eq!(r.kl, best.kl);
    // Two writers (o_proj, down_proj) in each of the two layers, one rank-one entry each.
    assert_eq!(out.entries.len(), 4);
    assert!(out.entries.iter().all(|e| e.rank == 1));
    assert_eq!(r.held_out, 2);
    // A search without a behaviour to measure is refused.
    let blind = AblationRequest {
        tokens: Vec::new(),
        ..req
    };
    let err = ablate(
        &model,
        &runner,
        &Overlay::default(),
        &blind,
        true,
        Origin::new("cli"),
        &mut |_, _| {},
    );
    assert!(err.err().unwrap().to_string().contains("needs a behaviour"));
}
