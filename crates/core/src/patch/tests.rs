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
