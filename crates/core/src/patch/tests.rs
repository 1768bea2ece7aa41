use super::*;
use crate::dtype::Dtype;
use std::collections::HashMap;

struct Model(HashMap<String, (TensorInfo, Vec<u8>)>);

impl BaseModel for Model {
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, Box<dyn ByteSource + '_>)> {
        self.0
            .get(name)
            .map(|(i, b)| (i, Box::new(b.as_slice()) as Box<dyn ByteSource>))
    }
}

fn model() -> Model {
    let bytes: Vec<u8> = (0..16).collect();
    let info = TensorInfo {
        name: "w".into(),
        dtype: Dtype::F32,
        shape: vec![4],
        data_offsets: (0, 16),
        blocks: None,
    };
    Model([("w".to_string(), (info, bytes))].into())
}

fn entry(offset: u64, original: &[u8], patched: &[u8]) -> PatchEntry {
    PatchEntry {
        tensor: "w".into(),
        offset,
        original: original.to_vec(),
        patched: patched.to_vec(),
        origin: None,
    }
}

fn patch(entries: Vec<PatchEntry>) -> Patch {
    Patch {
        entries,
        ..Patch::new(vec![], "2026-01-01T00:00:00Z".into(), String::new())
    }
}

#[test]
fn overlay_diff_is_element_aligned_and_coalesced() {
    let m = model();
    let mut o = Overlay::default();
    o.write("w", 5, &[50]); // inside element 1
    o.write("w", 8, &[8, 9, 10, 99]); // element 2, last byte changed; first three equal base
    let entries = Patch::entries_from_overlay(&o, &m);
    assert_eq!(
        entries,
        vec![entry(
            4,
            &[4, 5, 6, 7, 8, 9, 10, 11],
            &[4, 50, 6, 7, 8, 9, 10, 99]
        )]
    );
}

#[test]
fn verify_lists_each_conflict() {
    let m = model();
    let p = patch(vec![
        entry(0, &[0, 1], &[9, 9]),
        entry(4, &[7, 7], &[1, 1]),
        entry(15, &[15, 0], &[1, 1]),
        PatchEntry {
            tensor: "nope".into(),
            ..entry(0, &[0], &[1])
        },
    ]);
    let conflicts = p.verify(&m);
    assert_eq!(conflicts.len(), 3);
    assert_eq!(
        conflicts[0].kind,
        ConflictKind::Mismatch {
            expected: vec![7, 7],
            found: vec![4, 5]
        }
    );
    assert_eq!(
        conflicts[1].kind,
        ConflictKind::OutOfRange { tensor_bytes: 16 }
    );
    assert_eq!(conflicts[2].kind, ConflictKind::MissingTensor);
    assert_eq!(
        conflicts[0].to_string(),
        "w bytes 4..6: patch expects 0707 but the model has 0405"
    );
}

#[test]
fn invert_swaps() {
    let p = patch(vec![entry(0, &[0, 1], &[9, 9])]);
    assert_eq!(p.invert().entries, vec![entry(0, &[9, 9], &[0, 1])]);
    assert_eq!(p.invert().invert(), p);
}

#[test]
fn combine_sequences_agreements_and_clashes() {
    let a = patch(vec![entry(0, &[0, 1], &[9, 9])]);
    // Sequential: b starts from a's result.
    let b = patch(vec![entry(1, &[9, 2], &[7, 7])]);
    assert_eq!(
        a.combine(&b).unwrap().entries,
        vec![entry(0, &[0, 1, 2], &[9, 7, 7])]
    );
    // Same change in both: agreement.
    assert_eq!(a.combine(&a).unwrap().entries, a.entries);
    // Same original, different new values: a clash.
    let c = patch(vec![entry(0, &[0, 1], &[5, 9])]);
    let conflicts = a.combine(&c).unwrap_err();
    assert_eq!(
        conflicts,
        vec![Conflict {
            tensor: "w".into(),
            offset: 0,
            len: 1,
            kind: ConflictKind::Clash {
                first: vec![9],
                second: vec![5]
            }
        }]
    );
    // A change back to the base value disappears.
    let back = a.combine(&a.invert()).unwrap();
    assert!(back.entries.is_empty());
}

#[test]
fn json_round_trip_and_rejections() {
    let p = patch(vec![
        entry(4, &[4], &[40]),
        entry(0, &[0], &[1]),
        entry(1, &[1], &[2]),
    ]);
    let parsed = Patch::from_json(&p.to_json()).unwrap();
    assert_eq!(
        parsed.entries,
        vec![entry(0, &[0, 1], &[1, 2]), entry(4, &[4], &[40])],
        "sorted and coalesced"
    );
    assert!(p.to_json().contains("\"original\": \"04\""));
    let overlapping = patch(vec![entry(0, &[0, 1], &[1, 2]), entry(1, &[1], &[3])]);
    assert!(matches!(
        Patch::from_json(&overlapping.to_json()),
        Err(PatchError::Overlap { .. })
    ));
    let uneven = patch(vec![entry(0, &[0, 1], &[1])]);
    assert!(matches!(
        Patch::from_json(&uneven.to_json()),
        Err(PatchError::Length { .. })
    ));
    let future = Patch {
        version: 99,
        ..patch(vec![])
    };
    assert!(matches!(
        Patch::from_json(&future.to_json()),
        Err(PatchError::Version { version: 99, .. })
    ));
    assert!(matches!(
        Patch::from_json("{"),
        Err(PatchError::Parse { .. })
    ));
    assert!(
        Patch::from_json(&p.to_json().replace("\"04\"", "\"zz\"")).is_err(),
        "bad hex"
    );
}

#[test]
fn record_keeps_base_originals() {
    let m = model();
    let mut p = patch(vec![]);
    p.record(
        &[Change {
            tensor: "w".into(),
            offset: 0,
            before: vec![0, 1, 2, 3],
            after: vec![1, 1, 1, 1],
        }],
        &m,
        &Origin::new("cli"),
    );
    p.record(
        &[Change {
            tensor: "w".into(),
            offset: 0,
            before: vec![1, 1, 1, 1],
            after: vec![2, 2, 2, 2],
        }],
        &m,
        &Origin::new("cli"),
    );
    assert_eq!(
        p.entries,
        vec![PatchEntry {
            origin: Some(Origin::new("cli")),
            ..entry(0, &[0, 1, 2, 3], &[2, 2, 2, 2])
        }]
    );
    assert!(p.verify(&m).is_empty());
}

#[test]
fn element_of_entry() {
    let info = TensorInfo {
        name: "w".into(),
        dtype: Dtype::BF16,
        shape: vec![3, 4],
        data_offsets: (0, 24),
        blocks: None,
    };
    assert_eq!(element_of(&info, 14), (7, vec![1, 3]));
}

#[test]
fn provenance_splits_entries_and_survives_json_invert_and_combine() {
    let m = model();
    let mut p = patch(vec![]);
    let change = |offset: u64, after: Vec<u8>| Change {
        tensor: "w".into(),
        offset,
        before: vec![0; after.len()],
        after,
    };
    let agent = Origin::agent("row 0 carries the outlier");
    p.record(&[change(0, vec![9, 9])], &m, &Origin::new("web"));
    p.record(&[change(2, vec![8, 8])], &m, &agent);
    // Adjacent bytes, two origins: two entries.
    assert_eq!(p.entries.len(), 2);
    assert_eq!(p.entries[0].origin, Some(Origin::new("web")));
    assert_eq!(
        p.entries[1].origin.as_ref().map(Origin::label).as_deref(),
        Some("agent: row 0 carries the outlier")
    );
    let back = Patch::from_json(&p.to_json()).expect("round trip");
    assert_eq!(back.entries, p.entries);
    assert_eq!(p.invert().entries[1].origin, p.entries[1].origin);
    // Combined with a later patch, each byte keeps the origin of the value it carries.
    let q = patch(vec![PatchEntry {
        origin: Some(Origin::new("cli")),
        ..entry(1, &[9], &[7])
    }]);
    let c = p.combine(&q).expect("a sequence");
    let origins: Vec<String> = c
        .entries
        .iter()
        .map(|e| e.origin.as_ref().map(Origin::label).unwrap_or_default())
        .collect();
    assert_eq!(origins, ["web", "cli", "agent: row 0 carries the outlier"]);
    // A patch written without provenance still reads.
    let json = p.to_json();
    let old = json.replace(
        ",\n      \"origin\": {\n        \"source\": \"web\"\n      }",
        "",
    );
    assert_ne!(old, json, "the origin was taken out");
    let read = Patch::from_json(&old).expect("reads without provenance");
    assert_eq!(read.entries[0].origin, None);
    assert_eq!(read.entries[0].patched, p.entries[0].patched);
}

#[test]
fn offsets_near_u64_max_are_an_error_not_an_overflow() {
    let text = format!(
        r#"{{"format": "{FORMAT}", "version": {VERSION}, "created": "", "note": "", "base": [],
            "entries": [{{"tensor": "w", "offset": {}, "original": "00000000", "patched": "01000000"}}]}}"#,
        u64::MAX - 1
    );
    match Patch::from_json(&text) {
        Err(PatchError::OffsetOverflow { tensor, len, .. }) => {
            assert_eq!((tensor.as_str(), len), ("w", 4))
        }
        other => panic!("expected an offset error, got {other:?}"),
    }
}

/// A 2 x 3 BF16 matrix and a rank-2 entry over it.
fn low_rank_model() -> (Model, TensorInfo, Vec<u8>) {
    let values = [1.0f32, -2.0, 0.5, 3.0, 0.0, -0.25];
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let info = TensorInfo {
        name: "m".into(),
        dtype: Dtype::BF16,
        shape: vec![2, 3],
        data_offsets: (0, 12),
        blocks: None,
    };
    let model = Model([("m".to_string(), (info.clone(), bytes.clone()))].into());
    (model, info, bytes)
}

#[test]
fn a_low_rank_entry_adds_u_v_transposed_rounded_to_the_dtype() {
    let (m, info, bytes) = low_rank_model();
    // u: [2, 2], v: [3, 2].
    let u = [1.0f32, 0.5, -1.0, 2.0];
    let v = [0.25f32, 1.0, 1e-3, 0.0, -0.5, 0.125];
    let e = LowRankEntry::new(&info, &bytes, 2, &u, &v, None).unwrap();
    let mut p = Patch::new(vec![], "2026-01-01T00:00:00Z".into(), String::new());
    p.low_rank.push(e.clone());
    let json = p.to_json();
    assert!(json.contains("\"version\": 2") && json.contains("\"kind\": \"low_rank\""));
    let parsed = Patch::from_json(&json).unwrap();
    assert_eq!(parsed.low_rank, vec![e]);
    let entries = parsed.expand_low_rank(&m, None).unwrap();
    let mut out = bytes.clone();
    for en in &entries {
        assert_eq!(
            &bytes[en.offset as usize..en.end() as usize],
            &en.original[..]
        );
        out[en.offset as usize..en.end() as usize].copy_from_slice(&en.patched);
    }
    let base: Vec<f32> = bytes
        .chunks(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    for i in 0..2 {
        for j in 0..3 {
            let mut acc = base[i * 3 + j];
            for r in 0..2 {
                acc += u[i * 2 + r] * v[j * 2 + r];
            }
            let got = half::bf16::from_le_bytes([out[(i * 3 + j) * 2], out[(i * 3 + j) * 2 + 1]]);
            assert_eq!(got, half::bf16::from_f32(acc), "element ({i}, {j})");
        }
    }
    // Element (0, 1): -2 + 1e-3 rounds back to -2 in BF16, so five of the six change.
    assert_eq!(entries.iter().map(|e| e.patched.len()).sum::<usize>(), 10);
}

#[test]
fn a_low_rank_entry_is_refused_on_another_tensor_or_a_bad_shape() {
    let (m, info, bytes) = low_rank_model();
    let e = LowRankEntry::new(&info, &bytes, 1, &[1.0, 1.0], &[1.0, 1.0, 1.0], None).unwrap();
    let mut p = Patch::new(vec![], "2026-01-01T00:00:00Z".into(), String::new());
    p.low_rank.push(e.clone());
    // The base changed: the digest no longer matches.
    let mut other = bytes.clone();
    other[0] ^= 1;
    let changed = Model([("m".to_string(), (info.clone(), other))].into());
    let conflicts = p.expand_low_rank(&changed, None).unwrap_err();
    assert_eq!(conflicts[0].kind, ConflictKind::TensorDiffers);
    // Factors for a 2 x 2 matrix on a 2 x 3 tensor.
    let mut wrong = e.clone();
    wrong.v = low_rank::f32_bytes(&[1.0, 1.0]);
    p.low_rank = vec![wrong];
    let conflicts = p.expand_low_rank(&m, None).unwrap_err();
    assert!(
        conflicts[0].to_string().contains("2 x 2 matrix"),
        "{}",
        conflicts[0]
    );
    // A damaged factor: the result's digest differs.
    let mut damaged = e.clone();
    damaged.u = low_rank::f32_bytes(&[1.0, 2.0]);
    p.low_rank = vec![damaged];
    let conflicts = p.expand_low_rank(&m, None).unwrap_err();
    assert_eq!(conflicts[0].kind, ConflictKind::ResultDiffers);
    // A low-rank entry beside byte entries of its tensor, or in a version-1 file.
    p.low_rank = vec![e.clone()];
    p.entries = vec![PatchEntry {
        tensor: "m".into(),
        offset: 0,
        original: vec![0],
        patched: vec![1],
        origin: None,
    }];
    assert!(matches!(
        Patch::from_json(&p.to_json()),
        Err(PatchError::Mixed { .. })
    ));
    p.entries.clear();
    let v1 = p.to_json().replace("\"version\": 2", "\"version\": 1");
    assert!(matches!(
        Patch::from_json(&v1),
        Err(PatchError::Version { .. })
    ));
    let bad_kind = p.to_json().replace("\"low_rank\"", "\"sparse\"");
    assert!(Patch::from_json(&bad_kind)
        .unwrap_err()
        .to_string()
        .contains("unknown kind \"sparse\""));
}

#[test]
fn the_low_rank_edit_operation_makes_the_entry_s_bytes() {
    let (_, info, bytes) = low_rank_model();
    let (u, v) = (
        [1.0f32, 0.5, -1.0, 2.0],
        [0.25f32, 1.0, 1e-3, 0.0, -0.5, 0.125],
    );
    let e = LowRankEntry::new(&info, &bytes, 2, &u, &v, None).unwrap();
    let op = crate::edit::Op::LowRank {
        rank: 2,
        u: low_rank::base64(&e.u),
        v: low_rank::base64(&e.v),
    };
    let all = crate::slice::SliceSpec::parse("")
        .unwrap()
        .resolve(&info.shape)
        .unwrap();
    let changes =
        crate::edit::plan(&info, &all, &bytes.as_slice(), &op, Default::default()).unwrap();
    let mut by_op = bytes.clone();
    for c in &changes {
        by_op[c.offset as usize..c.offset as usize + c.after.len()].copy_from_slice(&c.after);
    }
    let mut by_entry = bytes.clone();
    e.apply_to(&info, &mut by_entry).unwrap();
    assert_eq!(by_op, by_entry);
    // Factors for another shape are refused with the entry's message.
    let short = crate::edit::Op::LowRank {
        rank: 2,
        u: low_rank::base64(&e.u[..8]),
        v: low_rank::base64(&e.v),
    };
    let err =
        crate::edit::plan(&info, &all, &bytes.as_slice(), &short, Default::default()).unwrap_err();
    assert!(err.to_string().contains("1 x 3 matrix"), "{err}");
    let garbled = crate::edit::Op::LowRank {
        rank: 2,
        u: "not base64!".into(),
        v: low_rank::base64(&e.v),
    };
    let err = crate::edit::plan(&info, &all, &bytes.as_slice(), &garbled, Default::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("base64 of little-endian f32s"),
        "{err}"
    );
}
