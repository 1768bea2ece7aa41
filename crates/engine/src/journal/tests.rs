use super::*;
use tensor_surgeon_core::edit::Change;
use tensor_surgeon_core::header::TensorInfo;

/// A one-byte model: tensor `t` holds `[0]`.
struct Base(TensorInfo);

impl BaseModel for Base {
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        (name == "t").then_some((&self.0, &[0u8][..]))
    }
}

fn base() -> Base {
    Base(TensorInfo {
        name: "t".into(),
        dtype: tensor_surgeon_core::dtype::Dtype::U8,
        shape: vec![1],
        data_offsets: (0, 1),
    })
}

/// Sets `t[0]` from `from` to `v`.
fn step_from(from: u8, v: u8) -> EditStep {
    EditStep {
        label: format!("set {v}"),
        changes: vec![Change {
            tensor: "t".into(),
            offset: 0,
            before: vec![from],
            after: vec![v],
        }],
        origin: tensor_surgeon_core::patch::Origin::new("web"),
        layer: None,
    }
}

fn step(v: u8) -> EditStep {
    step_from(v.saturating_sub(1), v)
}

fn append_raw(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn replays_in_order_and_skips_a_torn_line_without_cutting_anything() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    {
        let (mut j, _, _, _) = Journal::open(&path, &base()).unwrap();
        j.append(&Record::Apply(step(1))).unwrap();
        j.append(&Record::Apply(step(2))).unwrap();
        j.append(&Record::Undo).unwrap();
    }
    let whole = std::fs::read(&path).unwrap();
    append_raw(&path, b"0badc0de {\"apply\":{\"lab");
    let (mut j, h, _, warnings) = Journal::open(&path, &base()).unwrap();
    assert_eq!(h.applied().len(), 1);
    assert_eq!(h.undone().len(), 1, "undo survives: redo is possible");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("line 4 skipped"), "{}", warnings[0]);
    assert!(
        std::fs::read(&path).unwrap().starts_with(&whole),
        "nothing is cut"
    );
    j.append(&Record::Redo).unwrap();
    let (_, h, _, warnings) = Journal::open(&path, &base()).unwrap();
    assert_eq!(
        warnings.len(),
        1,
        "the torn line is still reported, and only it"
    );
    assert_eq!(
        h.applied().len(),
        2,
        "the record after the torn line counts"
    );
    assert_eq!(h.applied()[0].origin.source, "web");
}

#[test]
fn a_damaged_record_in_the_middle_costs_only_itself() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    {
        let (mut j, _, _, _) = Journal::open(&path, &base()).unwrap();
        j.append(&Record::Apply(step(1))).unwrap();
        j.append(&Record::Undo).unwrap();
        j.append(&Record::Redo).unwrap();
    }
    // Flip one character of the undo record's JSON: its checksum no longer matches.
    let mut bytes = std::fs::read(&path).unwrap();
    let undo = bytes.windows(6).position(|w| w == b"\"undo\"").unwrap();
    bytes[undo + 1] = b'U';
    std::fs::write(&path, &bytes).unwrap();
    let (_, h, _, warnings) = Journal::open(&path, &base()).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("line 2 skipped (checksum mismatch"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        h.applied().len(),
        1,
        "the apply before and the redo after still count"
    );
}

#[test]
fn journals_written_before_checksums_still_replay() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    let old = |r: &Record| serde_json::to_string(r).unwrap() + "\n";
    std::fs::write(
        &path,
        old(&Record::Apply(step(1))) + &old(&Record::Apply(step(2))) + &old(&Record::Undo),
    )
    .unwrap();
    let (mut j, h, _, warnings) = Journal::open(&path, &base()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!((h.applied().len(), h.undone().len()), (1, 1));
    j.append(&Record::Redo).unwrap();
    let (_, h, _, _) = Journal::open(&path, &base()).unwrap();
    assert_eq!(h.applied().len(), 2, "old and new lines mix");
}

#[test]
fn an_accepted_proposal_is_one_record_with_its_edit() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    {
        let (mut j, _, _, _) = Journal::open(&path, &base()).unwrap();
        let line = encode(&Record::Resolve {
            id: 3,
            accepted: true,
            step: Some(step(1)),
        })
        .unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        j.append(&Record::Resolve {
            id: 3,
            accepted: true,
            step: Some(step(1)),
        })
        .unwrap();
    }
    let (_, h, pending, _) = Journal::open(&path, &base()).unwrap();
    assert!(pending.is_empty());
    assert_eq!(h.applied().len(), 1, "the accepted edit replays");
}

#[test]
fn proposals_stay_pending_until_resolved() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    let proposal = |id| Proposal {
        id,
        request: tensor_surgeon_wire::EditRequest {
            tensor: "t".into(),
            spec: "0".into(),
            op: tensor_surgeon_core::edit::Op::Zero,
            saturate: false,
            round: false,
        },
        origin: tensor_surgeon_core::patch::Origin::agent("t[0] is noise"),
        label: "zero t[0]".into(),
        bytes: 4,
    };
    {
        let (mut j, _, _, _) = Journal::open(&path, &base()).unwrap();
        j.append(&Record::Propose(proposal(1))).unwrap();
        j.append(&Record::Propose(proposal(2))).unwrap();
        j.append(&Record::Resolve {
            id: 1,
            accepted: false,
            step: None,
        })
        .unwrap();
    }
    let (_, h, pending, _) = Journal::open(&path, &base()).unwrap();
    assert_eq!(pending, vec![proposal(2)]);
    assert!(h.applied().is_empty());
}

#[test]
fn a_journal_for_other_weights_replays_nothing_and_is_kept_aside() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    {
        let (mut j, _, _, _) = Journal::open(&path, &base()).unwrap();
        j.append(&Record::Apply(step_from(0, 5))).unwrap();
        // Written against a model whose byte was 5 when this step was made: it was not.
        j.append(&Record::Apply(step_from(7, 6))).unwrap();
    }
    let (mut j, h, pending, warnings) = Journal::open(&path, &base()).unwrap();
    assert!(
        h.applied().is_empty() && pending.is_empty(),
        "nothing is replayed"
    );
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("other weights") && warnings[0].contains("expects 07"),
        "{}",
        warnings[0]
    );
    assert!(!path.exists(), "the journal is moved away");
    let kept: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(
        kept[0].starts_with("j.jsonl.does-not-fit-model."),
        "{kept:?}"
    );
    assert!(
        warnings[0].contains(&kept[0]),
        "the warning names where it went"
    );
    // The new session journals from scratch.
    j.append(&Record::Apply(step_from(0, 3))).unwrap();
    let (_, h, _, warnings) = Journal::open(&path, &base()).unwrap();
    assert_eq!((h.applied().len(), warnings.len()), (1, 0));
}
