//! The run service alone: a model, snapshots of overlays made here, no session.

use super::*;
use tensor_surgeon_core::overlay::Overlay;

/// The core's tiny Llama written to a folder, and a run service over it.
fn service() -> (tempfile::TempDir, Runs) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in tensor_surgeon_core::demo::llama::files(None) {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let vocab = Vocab::find(&path, None).unwrap().map(Arc::new);
    let model = Arc::new(Model::open(&path).unwrap());
    (dir, Runs::new(model, vocab))
}

fn request() -> RunRequest {
    RunRequest {
        prompt: "the".into(),
        top_k: 5,
        target: None,
        generate: 0,
    }
}

/// An overlay that makes token `id` impossible: its unembedding row all -1000 (F32).
fn ban(runs: &Runs, id: u32) -> Overlay {
    let (_, info) = runs.model.get("lm_head.weight").unwrap();
    let cols = info.shape[1];
    let row: Vec<u8> = (0..cols).flat_map(|_| (-1000f32).to_le_bytes()).collect();
    let mut overlay = Overlay::default();
    overlay.write("lm_head.weight", id as u64 * cols * 4, &row);
    overlay
}

#[test]
fn a_snapshot_s_edits_show_on_the_edited_side_only() {
    let (_dir, runs) = service();
    let before = runs.run_prompt(&Snapshot::default(), &request()).unwrap();
    assert!(before.edited.is_none() && before.kl == 0.0);
    let top = before.base.top[0].id;
    let snap = Snapshot::of(ban(&runs, top), 1);
    let after = runs.run_prompt(&snap, &request()).unwrap();
    assert_eq!(after.base, before.base, "the base side does not move");
    let edited = after.edited.expect("an edited side");
    assert_ne!(edited.top[0].id, top);
    assert!(after.kl > 0.0);
    // The probe table is labelled with the snapshot's version.
    let set = ProbeSet {
        version: 1,
        probes: vec![],
    };
    assert_eq!(runs.probes(&snap, &set).unwrap().version, 1);
}

#[test]
fn a_tensor_reloads_once_per_edit_version() {
    let (_dir, runs) = service();
    let top = runs
        .run_prompt(&Snapshot::default(), &request())
        .unwrap()
        .base
        .top[0]
        .id;
    let overlay = ban(&runs, top);
    let loads = runs.loads();
    runs.run_prompt(&Snapshot::of(overlay.clone(), 1), &request())
        .unwrap();
    assert_eq!(runs.loads() - loads, 1, "only lm_head loads");
    runs.run_prompt(&Snapshot::of(overlay.clone(), 1), &request())
        .unwrap();
    assert_eq!(
        runs.loads() - loads,
        1,
        "the same version comes from the cache"
    );
    runs.run_prompt(&Snapshot::of(overlay, 2), &request())
        .unwrap();
    assert_eq!(runs.loads() - loads, 2, "a new version reloads");
}

#[test]
fn continuations_run_the_edited_side_only_when_there_are_edits() {
    let (_dir, runs) = service();
    let mut sides = Vec::new();
    let snap = Snapshot::default();
    runs.generate(&snap, "the", 2, &mut |e| {
        sides.push(e.side);
        true
    })
    .unwrap();
    assert!(
        !sides.is_empty() && sides.iter().all(|s| s == "base"),
        "{sides:?}"
    );
    let too_many = tensor_surgeon_infer::MAX_GENERATE + 1;
    let err = runs
        .generate(&snap, "the", too_many, &mut |_| true)
        .unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::Invalid);
}
