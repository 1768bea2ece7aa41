use super::*;
use tensor_surgeon_core::edit::Change;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::source::ByteSource;

/// A one-byte model: tensor `t` holds `[0]`.
struct Base(TensorInfo);

impl BaseModel for Base {
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, Box<dyn ByteSource + '_>)> {
        (name == "t").then(|| (&self.0, Box::new(&[0u8][..]) as Box<dyn ByteSource>))
    }
}

/// A model with one tensor `w` of `BIG` bytes, `i % 251` each.
struct Big(TensorInfo, Vec<u8>);

const BIG: usize = 3 * COMPACT_STEP_BYTES;

impl BaseModel for Big {
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, Box<dyn ByteSource + '_>)> {
        (name == "w").then(|| (&self.0, Box::new(&self.1[..]) as Box<dyn ByteSource>))
    }
}

fn big_base() -> Big {
    let info = TensorInfo {
        name: "w".into(),
        dtype: tensor_surgeon_core::dtype::Dtype::U8,
        shape: vec![BIG as u64],
        data_offsets: (0, BIG as u64),
        blocks: None,
    };
    Big(info, (0..BIG).map(|i| (i % 251) as u8).collect())
}

/// Changes `len` bytes of `w` from `at` on, from what `now` holds there to `f(i)`.
fn big_step(now: &[u8], at: usize, len: usize, f: impl Fn(usize) -> u8) -> EditStep {
    EditStep {
        label: format!("fill {at}+{len}"),
        changes: vec![Change {
            tensor: "w".into(),
            offset: at as u64,
            before: now[at..at + len].to_vec(),
            after: (at..at + len).map(f).collect(),
        }],
        origin: tensor_surgeon_core::patch::Origin::new("web"),
        layer: None,
        low_rank: None,
    }
}

/// The bytes of `w` as `h` leaves them.
fn big_now(h: &History, b: &Big) -> Vec<u8> {
    let mut out = vec![0u8; BIG];
    h.overlay().view_stored("w", &b.1[..]).read(0, &mut out);
    out
}

fn base() -> Base {
    Base(TensorInfo {
        name: "t".into(),
        dtype: tensor_surgeon_core::dtype::Dtype::U8,
        shape: vec![1],
        data_offsets: (0, 1),
        blocks: None,
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
        low_rank: None,
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
            compact: None,
        })
        .unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        j.append(&Record::Resolve {
            id: 3,
            accepted: true,
            step: Some(step(1)),
            compact: None,
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
            compact: None,
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

#[test]
fn a_big_step_is_journaled_compact_and_replays_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    let b = big_base();
    let first = big_step(&b.1, 100, 2 * COMPACT_STEP_BYTES, |_| 0);
    let small = big_step(&b.1, 0, 8, |i| i as u8 + 1);
    {
        let (mut j, mut h, _, _) = Journal::open(&path, &b).unwrap();
        j.append(&Record::Apply(first.clone())).unwrap();
        h.apply(first.clone());
        // Laid over the first: its original bytes are the first step's zeros.
        let second = big_step(&big_now(&h, &b), 50, 2 * COMPACT_STEP_BYTES, |i| {
            (i * 7) as u8
        });
        j.append(&Record::Apply(second)).unwrap();
        j.append(&Record::Undo).unwrap();
        j.append(&Record::Apply(small.clone())).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("apply_compact"), "{}", &text[..200]);
    // Hex of both sides would be 4 bytes per changed byte; the zeroing step is a few hundred.
    assert!(
        text.len() < 2 * COMPACT_STEP_BYTES * 3,
        "journal is {} bytes for {} changed",
        text.len(),
        4 * COMPACT_STEP_BYTES
    );
    let (_, h, _, warnings) = Journal::open(&path, &b).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut want = b.1.clone();
    want[100..100 + 2 * COMPACT_STEP_BYTES].fill(0);
    for (i, w) in want.iter_mut().take(8).enumerate() {
        *w = i as u8 + 1;
    }
    assert_eq!(big_now(&h, &b), want);
    assert_eq!(h.applied().len(), 2);
    assert_eq!(h.applied()[0].label, first.label);
    let replayed: Vec<u8> = h.applied()[0]
        .changes
        .iter()
        .flat_map(|c| c.before.clone())
        .collect();
    assert_eq!(
        replayed, first.changes[0].before,
        "undo restores the original bytes"
    );
}

#[test]
fn a_big_step_for_other_weights_sets_the_journal_aside() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    let b = big_base();
    {
        let (mut j, _, _, _) = Journal::open(&path, &b).unwrap();
        j.append(&Record::Apply(big_step(&b.1, 0, BIG, |_| 9)))
            .unwrap();
    }
    let mut other = big_base();
    other.1[BIG - 1] ^= 1;
    let (_, h, _, warnings) = Journal::open(&path, &other).unwrap();
    assert!(h.applied().is_empty());
    assert!(warnings[0].contains("other weights"), "{warnings:?}");
    assert!(!path.exists());
}

#[test]
fn a_journal_of_mostly_dead_records_is_rewritten_as_the_live_history() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    let b = big_base();
    // Steps just under the compact size: each line is hex of both sides (~16 KB).
    let len = COMPACT_STEP_BYTES - 8;
    let (mut j, mut h, _, _) = Journal::open(&path, &b).unwrap();
    let keep = big_step(&b.1, 0, 4, |_| 1);
    j.append(&Record::Apply(keep.clone())).unwrap();
    h.apply(keep);
    let mut round = 0;
    while std::fs::metadata(&path).unwrap().len() <= COMPACT_JOURNAL_BYTES {
        let s = big_step(&big_now(&h, &b), 16, len, move |i| (i + round) as u8);
        j.append(&Record::Apply(s.clone())).unwrap();
        h.apply(s);
        j.append(&Record::Undo).unwrap();
        h.undo();
        round += 1;
    }
    let before = std::fs::metadata(&path).unwrap().len();
    let want = big_now(&h, &b);
    let redo_label = h.undone()[0].label.clone();
    assert!(
        j.compact_if_stale(&h, &[]).unwrap(),
        "{round} rounds, {before} bytes"
    );
    assert!(!j.compact_if_stale(&h, &[]).unwrap(), "once is enough");
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after * 20 < before, "{before} -> {after} bytes");
    // Still appendable, and the history (the redo included) is the same.
    j.append(&Record::Redo).unwrap();
    drop(j);
    let (_, mut h2, _, warnings) = Journal::open(&path, &b).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(h2.applied().len(), 2);
    assert_eq!(h2.applied()[1].label, redo_label);
    h2.undo();
    assert_eq!(big_now(&h2, &b), want);
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
}

#[test]
fn a_journal_with_a_damaged_line_is_not_rewritten() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    let b = big_base();
    {
        let (mut j, mut h, _, _) = Journal::open(&path, &b).unwrap();
        while std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) <= COMPACT_JOURNAL_BYTES {
            let s = big_step(&big_now(&h, &b), 0, COMPACT_STEP_BYTES, |i| i as u8 ^ 0x55);
            j.append(&Record::Apply(s.clone())).unwrap();
            h.apply(s);
            j.append(&Record::Undo).unwrap();
            h.undo();
        }
    }
    append_raw(&path, b"0000 {\"torn");
    let size = std::fs::metadata(&path).unwrap().len();
    let (_, _, _, warnings) = Journal::open(&path, &b).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size,
        "left as it was"
    );
}

/// A model with one F32 tensor `m`, `[ROWS, COLS]`.
struct Floats(TensorInfo, Vec<u8>);

const ROWS: usize = 64;
const COLS: usize = 48;

impl BaseModel for Floats {
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, Box<dyn ByteSource + '_>)> {
        (name == "m").then(|| (&self.0, Box::new(&self.1[..]) as Box<dyn ByteSource>))
    }
}

#[test]
fn a_low_rank_step_is_journaled_as_its_factors_and_replays_byte_for_byte() {
    use base64::Engine as _;
    use tensor_surgeon_core::edit::LowRankMark;
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.jsonl");
    let info = TensorInfo {
        name: "m".into(),
        dtype: tensor_surgeon_core::dtype::Dtype::F32,
        shape: vec![ROWS as u64, COLS as u64],
        data_offsets: (0, (ROWS * COLS * 4) as u64),
        blocks: None,
    };
    let values: Vec<u8> = (0..ROWS * COLS)
        .flat_map(|i| ((i % 17) as f32 * 0.37 - 3.0).to_le_bytes())
        .collect();
    let b = Floats(info, values);
    let b64 = |v: Vec<f32>| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let mark = LowRankMark {
        tensor: "m".into(),
        rank: 2,
        u: b64((0..ROWS * 2).map(|i| (i as f32 * 0.013).sin()).collect()),
        v: b64((0..COLS * 2).map(|i| (i as f32 * 0.029).cos()).collect()),
    };
    // A byte edit first: the low-rank step is planned over it, and so is its replay.
    let first = EditStep {
        label: "set".into(),
        changes: vec![Change {
            tensor: "m".into(),
            offset: 8,
            before: b.1[8..12].to_vec(),
            after: 7.5f32.to_le_bytes().to_vec(),
        }],
        origin: tensor_surgeon_core::patch::Origin::new("web"),
        layer: None,
        low_rank: None,
    };
    let low_rank = {
        let (mut j, mut h, _, _) = Journal::open(&path, &b).unwrap();
        j.append(&Record::Apply(first.clone())).unwrap();
        h.apply(first);
        let all = tensor_surgeon_core::slice::SliceSpec::parse("")
            .and_then(|s| s.resolve(&b.0.shape))
            .unwrap();
        let view = h.overlay().view(&b.0, &b.1[..]);
        let changes =
            tensor_surgeon_core::edit::plan(&b.0, &all, &view, &mark.op(), Default::default())
                .unwrap();
        let step = EditStep {
            label: "fact".into(),
            changes,
            origin: tensor_surgeon_core::patch::Origin::new("agent"),
            layer: None,
            low_rank: Some(mark.clone()),
        };
        j.append(&Record::Apply(step.clone())).unwrap();
        step
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().nth(1).unwrap();
    assert!(
        line.contains("\"low_rank\"") && !line.contains("\"patch\""),
        "{line}"
    );
    let changed: usize = low_rank.changes.iter().map(|c| c.after.len()).sum();
    assert!(
        changed > ROWS * COLS * 3,
        "the update changes nearly every element"
    );
    assert!(
        line.len() < (mark.u.len() + mark.v.len()) + 500,
        "the factors, not the changes: {} bytes",
        line.len()
    );
    let (_, h, _, warnings) = Journal::open(&path, &b).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(h.applied().len(), 2);
    assert_eq!(h.applied()[1], low_rank, "the same changes, planned again");
    // Over other weights, the step does not fit: the journal is set aside.
    let mut other = Floats(b.0.clone(), b.1.clone());
    other.1[400] ^= 1;
    let (_, h, _, warnings) = Journal::open(&path, &other).unwrap();
    assert!(
        h.applied().is_empty() && !warnings.is_empty(),
        "{warnings:?}"
    );
}
