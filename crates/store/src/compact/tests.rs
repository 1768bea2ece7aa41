use super::codec::{seal_for_tests, shuffle_round_trip};
use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::source::ByteSource;

struct Model(HashMap<String, (TensorInfo, Vec<u8>)>);

impl BaseModel for Model {
    fn tensor(&self, name: &str) -> Option<(&TensorInfo, Box<dyn ByteSource + '_>)> {
        self.0
            .get(name)
            .map(|(i, b)| (i, Box::new(b.as_slice()) as Box<dyn ByteSource>))
    }
}

fn model() -> Model {
    let tensor = |name: &str, dtype, len: u64, seed: u8| {
        let info = TensorInfo {
            name: name.into(),
            dtype,
            shape: vec![len / 4],
            data_offsets: (0, len),
            blocks: None,
        };
        let bytes = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        (name.to_string(), (info, bytes))
    };
    Model(
        [
            tensor("a", Dtype::F32, 64, 1),
            tensor("b", Dtype::BF16, 30, 7),
        ]
        .into(),
    )
}

fn entry(m: &Model, tensor: &str, offset: u64, patched: &[u8]) -> PatchEntry {
    let base = &m.0[tensor].1;
    PatchEntry {
        tensor: tensor.into(),
        offset,
        original: base[offset as usize..offset as usize + patched.len()].to_vec(),
        patched: patched.to_vec(),
        origin: None,
    }
}

fn patch(m: &Model) -> Patch {
    let mut p = Patch::new(
        vec![tensor_surgeon_core::patch::fingerprint(
            "model.safetensors",
            b"head",
            99,
        )],
        "2026-01-01T00:00:00Z".into(),
        "note".into(),
    );
    p.entries = vec![
        entry(m, "a", 4, &[1, 2, 3, 4, 5, 6, 7, 8]),
        entry(m, "a", 40, &[0, 0, 128, 63]),
        entry(m, "b", 2, &[9, 9, 9]), // odd length: an unshuffled tail
    ];
    p
}

fn widths(name: &str) -> Option<usize> {
    Some(if name == "a" { 4 } else { 2 })
}

fn file(m: &Model) -> Vec<u8> {
    CompactPatch::from_patch(&patch(m), widths)
        .to_bytes()
        .unwrap()
}

#[test]
fn round_trip_expands_to_the_same_patch() {
    let m = model();
    let p = patch(&m);
    let compact = CompactPatch::from_patch(&p, widths);
    assert_eq!(compact.entry_count(), 3);
    assert_eq!(compact.tensors[0].width, 4);
    let read = CompactPatch::from_bytes(&file(&m)).unwrap();
    assert_eq!(read, compact);
    assert_eq!(read.expand(&m, None).unwrap(), p);
}

#[test]
fn origins_survive_the_compact_form() {
    let m = model();
    let mut p = patch(&m);
    // Two adjacent entries with different origins stay two runs; the third has none.
    let mut second = entry(&m, "a", 12, &[7, 7, 7, 7]);
    second.origin = Some(Origin::agent("layer 0 is dead"));
    p.entries[0].origin = Some(Origin::new("web"));
    p.entries.insert(1, second);
    let compact = CompactPatch::from_patch(&p, widths);
    assert_eq!(compact.tensors[0].runs[..2], [(4, 8), (12, 4)]);
    assert_eq!(compact.origins.len(), 2);
    let read = CompactPatch::from_bytes(&compact.to_bytes().unwrap()).unwrap();
    let back = read.expand(&m, None).unwrap();
    assert_eq!(back, p);
    assert_eq!(
        back.entries[1].origin.as_ref().unwrap().label(),
        "agent: layer 0 is dead"
    );
}

#[test]
fn widths_are_guessed_from_alignment_without_a_model() {
    let m = model();
    let compact = CompactPatch::from_patch(&patch(&m), |_| None);
    assert_eq!(compact.tensors[0].width, 4, "runs at 4+8 and 40+4");
    assert_eq!(compact.tensors[1].width, 1, "a 3-byte run");
}

#[test]
fn inverse_applies_to_the_patched_model() {
    let m = model();
    let p = patch(&m);
    let mut baked = model();
    for e in &p.entries {
        let bytes = &mut baked.0.get_mut(&e.tensor).unwrap().1;
        bytes[e.offset as usize..e.end() as usize].copy_from_slice(&e.patched);
    }
    let inverse = CompactPatch::from_bytes(&file(&m)).unwrap().invert();
    assert_eq!(inverse.expand(&baked, None).unwrap(), p.invert());
    assert!(matches!(
        inverse.expand(&m, None),
        Err(ExpandError::Conflicts(_))
    ));
}

#[test]
fn a_changed_base_is_a_conflict_per_tensor() {
    let m = model();
    let compact = CompactPatch::from_patch(&patch(&m), widths);
    let mut other = model();
    other.0.get_mut("a").unwrap().1[41] ^= 1;
    other.0.remove("b");
    let Err(ExpandError::Conflicts(c)) = compact.expand(&other, None) else {
        panic!("expected conflicts");
    };
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].kind, ConflictKind::BaseDiffers { runs: 2 });
    assert_eq!((c[0].offset, c[0].len), (4, 40));
    assert!(c[0].to_string().contains("a bytes 4..44"), "{}", c[0]);
    assert_eq!(c[1].kind, ConflictKind::MissingTensor);
}

#[test]
fn a_run_past_the_tensor_is_out_of_range() {
    let m = model();
    let mut compact = CompactPatch::from_patch(&patch(&m), widths);
    compact.tensors[1].runs[0].0 = 28;
    let Err(ExpandError::Conflicts(c)) = compact.expand(&m, None) else {
        panic!("expected conflicts");
    };
    assert_eq!(c[0].kind, ConflictKind::OutOfRange { tensor_bytes: 30 });
}

#[test]
fn a_wrong_delta_with_the_right_original_is_damage() {
    let m = model();
    let mut compact = CompactPatch::from_patch(&patch(&m), widths);
    compact.tensors[0].delta[0] ^= 4;
    assert_eq!(
        compact.expand(&m, None),
        Err(ExpandError::Damaged(CompactError::PatchedDigest {
            tensor: "a".into()
        }))
    );
}

#[test]
fn expanding_over_an_earlier_patch_reads_its_bytes() {
    let m = model();
    let first = patch(&m);
    let overlay = first.to_overlay();
    // A second patch made on top of the first changes bytes the first wrote.
    let second_entry = PatchEntry {
        tensor: "a".into(),
        offset: 4,
        original: vec![1, 2, 3, 4],
        origin: None,
        patched: vec![5, 5, 5, 5],
    };
    let second = Patch {
        entries: vec![second_entry.clone()],
        low_rank: Vec::new(),
        ..first.clone()
    };
    let compact = CompactPatch::from_patch(&second, widths);
    assert!(compact.expand(&m, None).is_err());
    assert_eq!(
        compact.expand(&m, Some(&overlay)).unwrap().entries,
        vec![second_entry]
    );
}

#[test]
fn corruption_is_rejected_by_class() {
    let m = model();
    let good = file(&m);
    let check = |bytes: &[u8], want: &dyn Fn(&CompactError) -> bool, label: &str| {
        let err = CompactPatch::from_bytes(bytes).expect_err(label);
        assert!(want(&err), "{label}: {err}");
        assert!(!err.to_string().contains('\n'), "{label}: one line");
    };
    let mut bad = good.clone();
    bad[0] = b'{';
    check(&bad, &|e| *e == CompactError::BadMagic, "bad magic");
    check(
        &good[..5],
        &|e| *e == CompactError::BadMagic,
        "shorter than the magic",
    );
    check(
        &good[..30],
        &|e| matches!(e, CompactError::Truncated { what: "header", .. }),
        "header cut",
    );
    check(
        &good[..good.len() - 3],
        &|e| {
            matches!(
                e,
                CompactError::Truncated {
                    what: "compressed body",
                    ..
                }
            )
        },
        "body cut",
    );
    let mut bad = good.clone();
    bad.push(0);
    check(
        &bad,
        &|e| *e == CompactError::Trailing { extra: 1 },
        "trailing byte",
    );
    let mut bad = good.clone();
    bad[8] = 2;
    check(
        &bad,
        &|e| *e == CompactError::Version { found: 2 },
        "version",
    );
    for at in [60, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        check(&bad, &|e| *e == CompactError::Checksum, "flipped body byte");
    }
    let mut bad = good.clone();
    bad[40] ^= 1;
    check(
        &bad,
        &|e| *e == CompactError::Checksum,
        "flipped checksum byte",
    );
}

#[test]
fn sealed_but_malformed_bodies_are_rejected() {
    let not_zstd = {
        let mut f = seal_for_tests(b"");
        let z = b"definitely not zstd";
        f.truncate(12);
        f.extend_from_slice(&(z.len() as u64).to_le_bytes());
        f.extend_from_slice(&10u64.to_le_bytes());
        f.extend_from_slice(blake3::hash(z).as_bytes());
        f.extend_from_slice(z);
        f
    };
    assert!(matches!(
        CompactPatch::from_bytes(&not_zstd),
        Err(CompactError::Decompress { .. })
    ));
    let meta = br#"{"created":"x","base":[]}"#;
    let body = |tail: &[u8]| {
        let mut b = (meta.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(meta);
        b.extend_from_slice(tail);
        b
    };
    let empty = CompactPatch::from_bytes(&seal_for_tests(&body(&0u32.to_le_bytes()))).unwrap();
    assert!(empty.tensors.is_empty());
    let rows: &[(&str, Vec<u8>, &str)] = &[
        ("no tensor count", body(&[]), "ends inside the tensor count"),
        (
            "missing tensor",
            body(&1u32.to_le_bytes()),
            "ends inside the tensor table",
        ),
        ("bad metadata", b"\x02\0\0\0{]".to_vec(), "metadata"),
        (
            "trailing delta",
            body(&[0, 0, 0, 0, 7]),
            "1 bytes after the last delta",
        ),
        (
            "too many runs",
            body(&tensor_row(0, 1, &[])),
            "do not fit the body",
        ),
        ("width 0", body(&tensor_row(0, 0, &[])), "element width 0"),
        (
            "empty run",
            body(&tensor_row(1, 1, &[(0, 0)])),
            "empty, out of order",
        ),
        (
            "overlap",
            body(&tensor_row(2, 1, &[(0, 4), (2, 4)])),
            "overlapping",
        ),
        (
            "unknown origin",
            body(&{
                let mut r = tensor_row(1, 1, &[(0, 4)]);
                let n = r.len();
                r[n - 4] = 3;
                r
            }),
            "names origin 3 of 0",
        ),
        (
            "short delta",
            body(&tensor_row(1, 1, &[(0, 4)])),
            "ends inside the deltas",
        ),
    ];
    for (label, b, want) in rows {
        let err = CompactPatch::from_bytes(&seal_for_tests(b)).expect_err(label);
        assert!(err.to_string().contains(want), "{label}: {err}");
    }
}

#[test]
fn a_small_file_cannot_inflate_past_the_model() {
    // 64 MiB of zero deltas compress to a few kilobytes; the table says they patch tensor "t".
    let big = 64u64 << 20;
    let meta = br#"{"created":"x","base":[]}"#;
    let mut body = (meta.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(meta);
    body.extend_from_slice(&tensor_row(1, 1, &[(0, big)]));
    body.resize(body.len() + big as usize, 0);
    let file = seal_for_tests(&body);
    assert!(file.len() < 64 << 10, "{} bytes", file.len());
    // For a model whose "t" has 1 KiB, the run is refused before any delta is inflated.
    let sizes = |name: &str| (name == "t").then_some(1024u64);
    let err = CompactPatch::from_bytes_within(&file, Some(&sizes)).unwrap_err();
    assert!(
        err.to_string().contains("past the tensor's 1024 bytes"),
        "{err}"
    );
    // A header that states a longer body than the stream holds ends inside the deltas.
    let mut short = body.clone();
    short.truncate(body.len() - 1);
    let mut lying = seal_for_tests(&short);
    lying[20..28].copy_from_slice(&(body.len() as u64).to_le_bytes());
    let err = CompactPatch::from_bytes(&lying).unwrap_err();
    assert!(err.to_string().contains("ends inside the deltas"), "{err}");
}

/// A table of one tensor "t" with a run count field, a width and runs (no deltas); no runs
/// means a run count far too large for the body.
fn tensor_row(count: u64, width: u8, runs: &[(u64, u64)]) -> Vec<u8> {
    let mut b = 1u32.to_le_bytes().to_vec();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.push(b't');
    b.push(width);
    b.extend_from_slice(&[0u8; 64]);
    b.extend_from_slice(&(if runs.is_empty() { 1u64 << 40 } else { count }).to_le_bytes());
    for (o, l) in runs {
        b.extend_from_slice(&o.to_le_bytes());
        b.extend_from_slice(&l.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // no origin
    }
    b
}

proptest! {
    #[test]
    fn shuffle_inverts(data in proptest::collection::vec(any::<u8>(), 0..200), width in 1usize..9) {
        prop_assert_eq!(shuffle_round_trip(&data, width), data);
    }
}

#[test]
fn a_delta_larger_than_a_frame_round_trips() {
    let len = FRAME_BYTES * 2 + 6;
    let base: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let info = TensorInfo {
        name: "big".into(),
        dtype: Dtype::F16,
        shape: vec![len as u64 / 2],
        data_offsets: (0, len as u64),
        blocks: None,
    };
    let m = Model([("big".to_string(), (info, base.clone()))].into());
    let mut p = Patch::new(vec![], "2026-01-01T00:00:00Z".into(), String::new());
    p.entries.push(PatchEntry {
        tensor: "big".into(),
        offset: 0,
        original: base.clone(),
        origin: None,
        patched: base.iter().map(|b| b.wrapping_add(1)).collect(),
    });
    let bytes = CompactPatch::from_patch(&p, |_| Some(2))
        .to_bytes()
        .unwrap();
    assert!(bytes.len() < len / 10, "a constant-ish delta compresses");
    let read = CompactPatch::from_bytes(&bytes).unwrap();
    assert_eq!(read.expand(&m, None).unwrap(), p);
}
