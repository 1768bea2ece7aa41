//! The editing session on a real model file: caches keyed on edit versions must never serve
//! an undone edit; runs read the session's edits and reload only what changed.

use std::path::Path;
use tensor_surgeon_core::edit::Op;
use tensor_surgeon_core::origin::Origin;
use tensor_surgeon_engine::workbench::{SessionConfig, Workbench};
use tensor_surgeon_infer::tokens::Vocab;
use tensor_surgeon_store::{demo, Model};
use tensor_surgeon_wire::EditRequest;

const EMBED: &str = "model.embed_tokens.weight";

fn open(dir: &Path) -> Workbench {
    open_baking_to(dir, &dir.join("baked"))
}

fn open_baking_to(dir: &Path, out_dir: &Path) -> Workbench {
    let path = demo::write_demo(&dir.join("model")).unwrap();
    let config = SessionConfig {
        read_only: false,
        patches_dir: dir.join("patches"),
        out_dir: out_dir.to_path_buf(),
        agent_auto_apply: false,
        max_step_bytes: tensor_surgeon_engine::workbench::DEFAULT_MAX_STEP_BYTES,
        allow_dirs: Vec::new(),
    };
    let (mut wb, _) = Workbench::open(Model::open(&path).unwrap(), config).unwrap();
    wb.set_vocab(Vocab::find(&path, None).unwrap());
    wb
}

fn set(tensor: &str, spec: &str, value: &str) -> EditRequest {
    EditRequest {
        tensor: tensor.into(),
        spec: spec.into(),
        op: Op::Set {
            value: value.into(),
        },
        saturate: false,
        round: false,
    }
}

/// What a user reads of a tensor: its statistics and histogram, and (for the embedding) the
/// nearest tokens of a row.
fn reading(wb: &Workbench, tensor: &str) -> String {
    let stats = wb.stats(tensor).unwrap();
    let mut text = format!("{:?} {:?}", stats.summary, stats.histogram);
    if tensor == EMBED {
        text += &format!("{:?}", wb.nearest(EMBED, 0, 8).unwrap().neighbors);
    }
    text
}

#[test]
fn undoing_several_edits_leaves_no_stale_statistics_or_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let wb = open(dir.path());
    let others: Vec<String> = wb
        .summary()
        .tensors
        .iter()
        .filter(|t| t.dtype == "BF16" && t.shape.len() == 2)
        .map(|t| t.name.clone())
        .take(2)
        .collect();
    assert_eq!(others.len(), 2, "the demo has 2-D BF16 tensors");
    let tensors = [EMBED, &others[0], &others[1]];
    let max = |wb: &Workbench, t: &str| wb.stats(t).unwrap().summary.max;
    for t in tensors {
        reading(&wb, t); // cached before the edits
        wb.edit(&set(t, "0,0", "1000"), &Origin::new("web"))
            .unwrap();
        assert_eq!(max(&wb, t), Some(1000.0), "{t}: the edit shows");
    }
    wb.undo().unwrap();
    wb.undo().unwrap();
    // A fresh session over the same journal replays the same two undos.
    let fresh_dir = dir.path();
    let fresh = open(fresh_dir);
    for t in tensors {
        assert_eq!(reading(&wb, t), reading(&fresh, t), "{t} after two undos");
    }
    assert_eq!(
        max(&wb, EMBED),
        Some(1000.0),
        "the first edit is still applied"
    );
    wb.undo().unwrap();
    let fresh = open(fresh_dir);
    for t in tensors {
        assert_eq!(
            reading(&wb, t),
            reading(&fresh, t),
            "{t} after undoing everything"
        );
        assert!(max(&wb, t) < Some(1000.0), "{t}: no edit left");
    }
}

#[test]
fn a_bake_that_cannot_start_does_not_stay_running() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"a file where the output folder should be").unwrap();
    let wb = std::sync::Arc::new(open_baking_to(dir.path(), &blocker.join("baked")));
    for attempt in 1..=2 {
        let err = wb.start_bake("out").unwrap_err().to_string();
        assert!(err.contains("not-a-folder"), "attempt {attempt}: {err}");
        assert!(!wb.bake_status().running, "attempt {attempt}: idle again");
    }
}

#[test]
fn an_agent_undoes_only_its_own_edits() {
    let dir = tempfile::tempdir().unwrap();
    let wb = open(dir.path());
    wb.edit(&set(EMBED, "1,1", "7"), &Origin::new("web"))
        .unwrap();
    let err = wb.undo_for_agent().unwrap_err().to_string();
    assert!(err.contains("only its own edits"), "{err}");
    assert_eq!(
        wb.session_view().unwrap().steps.len(),
        1,
        "the person's edit stays"
    );

    let (proposal, _) = wb
        .propose(&set(EMBED, "2,2", "9"), "row 2 matters")
        .unwrap();
    wb.resolve(proposal.id, true).unwrap();
    assert_eq!(wb.session_view().unwrap().steps.len(), 2);
    wb.undo_for_agent().unwrap();
    let view = wb.session_view().unwrap();
    assert_eq!(view.steps.len(), 1, "the agent's accepted edit is undone");
    assert!(view.can_redo);
    let err = wb.undo_for_agent().unwrap_err().to_string();
    assert!(err.contains("only its own edits"), "{err}");
}

/// The core's tiny Llama written to `dir` (once), and a session over it.
fn tiny_llama(dir: &Path) -> Workbench {
    let path = dir.join("model.safetensors");
    if !path.exists() {
        for (name, bytes) in tensor_surgeon_core::demo::llama::files(None) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let config = SessionConfig {
        patches_dir: dir.join("patches"),
        out_dir: dir.join("out"),
        ..SessionConfig::default()
    };
    let mut wb = Workbench::open(Model::open(&path).unwrap(), config)
        .unwrap()
        .0;
    wb.set_vocab(Vocab::find(&path, None).unwrap());
    wb
}

/// The tiny Llama of the core's demo, run through the session.
#[test]
fn an_edit_changes_the_edited_side_and_reloads_only_its_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let wb = tiny_llama(dir.path());
    let req = tensor_surgeon_wire::RunRequest {
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

/// A session opened on a journal runs the edits it replayed (not the base).
#[test]
fn a_reopened_session_runs_its_replayed_edits() {
    let dir = tempfile::tempdir().unwrap();
    let open = || tiny_llama(dir.path());
    let req = tensor_surgeon_wire::RunRequest {
        prompt: "the".into(),
        top_k: 5,
        target: None,
        generate: 0,
    };
    let edited = {
        let wb = open();
        let top = wb.run_prompt(&req).unwrap().base.top[0].id;
        let edit = EditRequest {
            tensor: "lm_head.weight".into(),
            spec: format!("{top},:"),
            op: Op::Scale { factor: -50.0 },
            saturate: false,
            round: false,
        };
        wb.edit(&edit, &Origin::new("web")).unwrap();
        wb.run_prompt(&req).unwrap()
    };
    assert!(edited.edited.is_some());
    assert_eq!(open().run_prompt(&req).unwrap(), edited);
}
