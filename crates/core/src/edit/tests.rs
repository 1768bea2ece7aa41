use super::*;

#[test]
fn ops_from_what_a_user_typed() {
    assert_eq!(Op::parse("scale", "0.5", ""), Ok(Op::Scale { factor: 0.5 }));
    assert_eq!(
        Op::parse("clamp", "", "2"),
        Ok(Op::Clamp {
            min: None,
            max: Some(2.0)
        }),
        "either clamp bound may be empty"
    );
    assert_eq!(
        Op::parse("scale", "x", ""),
        Err(EditError::NotANumber { text: "x".into() })
    );
    assert_eq!(
        Op::parse("hex", " 00ff ", ""),
        Ok(Op::Hex { hex: "00ff".into() })
    );
    assert!(matches!(
        Op::parse("double", "", ""),
        Err(EditError::UnknownOp { .. })
    ));
    for name in Op::NAMES {
        let op = Op::parse(name, "1", "2").unwrap();
        assert_eq!(op.name(), name, "name and parse agree");
    }
}
use crate::dtype::Dtype;
use crate::slice::SliceSpec;

fn f32_tensor(values: &[f32], shape: &[u64]) -> (TensorInfo, Vec<u8>) {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = TensorInfo {
        name: "w".into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data_offsets: (0, data.len() as u64),
        blocks: None,
    };
    (t, data)
}

fn run(t: &TensorInfo, data: &[u8], spec: &str, op: Op) -> Result<Vec<Change>, EditError> {
    let sel = SliceSpec::parse(spec).unwrap().resolve(&t.shape).unwrap();
    plan(t, &sel, data, &op, EncodeOptions::EXACT)
}

#[test]
fn ops_on_a_rectangle() {
    let (t, data) = f32_tensor(&[1.0, -2.0, 3.0, -4.0, 5.0, -6.0], &[2, 3]);
    let c = run(&t, &data, ":,1:3", Op::Scale { factor: 2.0 }).unwrap();
    assert_eq!(c.len(), 2, "one change per row of the rectangle");
    assert_eq!(c[0].offset, 4);
    assert_eq!(
        c[0].after,
        [(-4f32).to_le_bytes(), 6f32.to_le_bytes()].concat()
    );
    let c = run(
        &t,
        &data,
        "",
        Op::Clamp {
            min: Some(-3.0),
            max: Some(2.0),
        },
    )
    .unwrap();
    let changed: Vec<(u64, usize)> = c.iter().map(|c| (c.offset, c.after.len())).collect();
    assert_eq!(
        changed,
        [(8, 16)],
        "3, -4, 5, -6 clamped, merged into one run"
    );
    let c = run(
        &t,
        &data,
        "0,0",
        Op::Add {
            value: "0.5".into(),
        },
    )
    .unwrap();
    assert_eq!(c[0].after, 1.5f32.to_le_bytes());
    let c = run(
        &t,
        &data,
        "1,2",
        Op::Hex {
            hex: "0000803f".into(),
        },
    )
    .unwrap();
    assert_eq!(
        (c[0].offset, c[0].after.clone()),
        (20, 1f32.to_le_bytes().to_vec())
    );
    assert!(
        run(&t, &data, "0,0", Op::Set { value: "1".into() })
            .unwrap()
            .is_empty(),
        "no-op edits make no change"
    );
}

#[test]
fn bad_values_change_nothing() {
    let data = vec![1u8, 2, 3];
    let t = TensorInfo {
        name: "q".into(),
        dtype: Dtype::I8,
        shape: vec![3],
        data_offsets: (0, 3),
        blocks: None,
    };
    let err = run(&t, &data, "", Op::Scale { factor: 100.0 }).unwrap_err();
    assert_eq!(err.to_string(), "element [1] of q: 200 is out of range for I8 (it holds -128 to 127); pass saturate to clamp");
    assert!(matches!(
        run(&t, &data, "", Op::Set { value: "x".into() }),
        Err(EditError::NotANumber { .. })
    ));
    assert!(matches!(
        run(&t, &data, "0", Op::Hex { hex: "0000".into() }),
        Err(EditError::BadHex { expected: 1, .. })
    ));
    assert!(matches!(
        run(
            &t,
            &data,
            "0",
            Op::Set {
                value: "0.5".into()
            }
        ),
        Err(EditError::Encode { .. })
    ));
}

#[test]
fn packed_neighbours_survive() {
    let data = vec![0x21u8, 0x43];
    let t = TensorInfo {
        name: "p".into(),
        dtype: Dtype::F4,
        shape: vec![4],
        data_offsets: (0, 2),
        blocks: None,
    };
    let c = run(&t, &data, "1:3", Op::Hex { hex: "07".into() }).unwrap();
    assert_eq!(
        c,
        vec![Change {
            tensor: "p".into(),
            offset: 0,
            before: vec![0x21, 0x43],
            after: vec![0x71, 0x47]
        }]
    );
}

#[test]
fn undo_redo() {
    let (t, data) = f32_tensor(&[1.0, 2.0], &[2]);
    let mut h = History::default();
    let c = run(&t, &data, "0", Op::Set { value: "9".into() }).unwrap();
    h.apply(EditStep {
        label: "set".into(),
        changes: c,
        origin: crate::origin::Origin::new("web"),
        layer: None,
        low_rank: None,
    });
    let read = |h: &History| {
        let mut out = vec![0u8; 8];
        h.overlay().view_stored("w", &data).read(0, &mut out);
        out
    };
    assert_eq!(read(&h)[..4], 9f32.to_le_bytes());
    h.undo();
    assert_eq!(read(&h), data);
    h.redo();
    assert_eq!(read(&h)[..4], 9f32.to_le_bytes());
    assert!(h.redo().is_none());
    assert_eq!(h.applied().len(), 1);
}

/// A tensor every step on which is undone is the base again: it leaves the overlay (no reader
/// compares its old runs with the base); one with an earlier step keeps that step's bytes.
#[test]
fn a_tensor_whose_steps_are_all_undone_leaves_the_overlay() {
    let (t, data) = f32_tensor(&[1.0, 2.0], &[2]);
    let step = |c| EditStep {
        label: "set".into(),
        changes: c,
        origin: crate::origin::Origin::new("web"),
        layer: None,
        low_rank: None,
    };
    let mut h = History::default();
    h.apply(step(
        run(&t, &data, "0", Op::Set { value: "9".into() }).unwrap(),
    ));
    let mut now = data.clone();
    h.overlay().view_stored("w", &data).read(0, &mut now);
    h.apply(step(
        run(&t, &now, "1", Op::Set { value: "7".into() }).unwrap(),
    ));
    h.undo();
    let mut out = vec![0u8; 8];
    h.overlay().view_stored("w", &data).read(0, &mut out);
    assert_eq!(out[..4], 9f32.to_le_bytes(), "the first step stays");
    assert_eq!(out[4..], data[4..]);
    h.undo();
    assert_eq!(h.overlay().tensors().count(), 0, "the base again");
    h.redo();
    h.redo();
    h.overlay().view_stored("w", &data).read(0, &mut out);
    assert_eq!(out[..4], 9f32.to_le_bytes());
    assert_eq!(out[4..], 7f32.to_le_bytes());
}

/// A step whose changes overlap (a later one over an earlier one) undoes to the bytes before
/// it, whatever order its changes came in.
#[test]
fn overlapping_changes_undo_to_what_was_before() {
    let data = vec![1u8, 2, 3, 4];
    let change = |offset: u64, before: &[u8], after: &[u8]| crate::change::Change {
        tensor: "w".into(),
        offset,
        before: before.to_vec(),
        after: after.to_vec(),
    };
    let mut h = History::default();
    h.apply(EditStep {
        label: "overlap".into(),
        // [1, 2] -> [9, 9], then [9, 3] (the first change's byte) -> [8, 8].
        changes: vec![change(0, &[1, 2], &[9, 9]), change(1, &[9, 3], &[8, 8])],
        origin: crate::origin::Origin::new("web"),
        layer: None,
        low_rank: None,
    });
    let read = |h: &History| {
        let mut out = vec![0u8; 4];
        h.overlay().view_stored("w", &data).read(0, &mut out);
        out
    };
    assert_eq!(read(&h), [9, 8, 8, 4]);
    h.undo();
    assert_eq!(read(&h), data);
    // An earlier step on the tensor keeps it in the overlay: the bytes are written back,
    // the later change first.
    let mut h2 = History::default();
    h2.apply(EditStep {
        label: "earlier".into(),
        changes: vec![change(3, &[4], &[5])],
        origin: crate::origin::Origin::new("web"),
        layer: None,
        low_rank: None,
    });
    h2.apply(h.undone()[0].clone());
    assert_eq!(read(&h2), [9, 8, 8, 5]);
    h2.undo();
    assert_eq!(read(&h2), [1, 2, 3, 5]);
}
