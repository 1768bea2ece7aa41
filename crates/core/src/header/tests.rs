use super::*;

/// A file image: length prefix, the JSON text, then `data` bytes.
fn file(json: &str, data: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

fn parse_file(bytes: &[u8]) -> Result<Header, HeaderError> {
    parse(bytes, bytes.len() as u64)
}

#[test]
fn parses_a_plain_file() {
    let f = file(
        r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"a":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}}"#,
        22,
    );
    let h = parse_file(&f).expect("valid");
    assert_eq!(
        h.tensors
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["b", "a"],
        "header order kept"
    );
    assert_eq!(h.get("a").map(|t| t.dtype), Some(Dtype::BF16));
    assert_eq!(
        h.metadata
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
    assert!(h.warnings.is_empty());
}

#[test]
fn accepts_what_real_files_do() {
    // Odd JSON length (data not 8-aligned), storage order unlike header order, null metadata,
    // trailing bytes.
    let json = r#"{"__metadata__":null,"x":{"dtype":"U8","shape":[3],"data_offsets":[4,7]},"y":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}} "#;
    let f = file(json, 9);
    assert_ne!((8 + json.len()) % 8, 0);
    let h = parse_file(&f).expect("accepted");
    assert_eq!(h.metadata, None);
    assert_eq!(h.warnings, ["2 trailing bytes after the last tensor"]);
}

#[test]
fn empty_file_and_empty_tensors() {
    assert!(parse_file(&file("{}", 0))
        .expect("empty model")
        .tensors
        .is_empty());
    let f = file(
        r#"{"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#,
        4,
    );
    let h = parse_file(&f).expect("zero-size and scalar tensors");
    assert_eq!(h.get("s").map(TensorInfo::elements), Some(1));
}

#[test]
fn malformed_files_name_the_problem() {
    let rows: Vec<(&str, Vec<u8>, HeaderError)> = vec![
        ("too short", vec![1, 2, 3], HeaderError::TooShort { len: 3 }),
        (
            "header too large",
            u64::MAX.to_le_bytes().to_vec(),
            HeaderError::HeaderTooLarge { len: u64::MAX },
        ),
        (
            "header past end",
            {
                let mut f = 100u64.to_le_bytes().to_vec();
                f.extend_from_slice(b"{}");
                f
            },
            HeaderError::HeaderPastEnd {
                len: 100,
                file_len: 10,
            },
        ),
        (
            "not utf8",
            {
                let mut f = 3u64.to_le_bytes().to_vec();
                f.extend_from_slice(&[b'{', 0xFF, b'}']);
                f
            },
            HeaderError::NotUtf8 { at: 1 },
        ),
        (
            "duplicate name",
            file(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                2,
            ),
            HeaderError::DuplicateName { name: "a".into() },
        ),
        (
            "unknown dtype",
            file(
                r#"{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            HeaderError::UnknownDtype {
                name: "a".into(),
                dtype: "F12".into(),
            },
        ),
        (
            "lower-case dtype",
            file(
                r#"{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
            HeaderError::UnknownDtype {
                name: "a".into(),
                dtype: "f32".into(),
            },
        ),
        (
            "size mismatch",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                4,
            ),
            HeaderError::SizeMismatch {
                name: "a".into(),
                dtype: "F32",
                shape: vec![2],
                begin: 0,
                end: 4,
                actual: 4,
                expected: 8,
            },
        ),
        (
            "past data",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                4,
            ),
            HeaderError::OutOfBounds {
                name: "a".into(),
                begin: 0,
                end: 8,
                data_len: 4,
            },
        ),
        (
            "overlap",
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
            HeaderError::Overlap {
                first: "a".into(),
                second: "b".into(),
            },
        ),
        (
            "overflow",
            file(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
            ),
            HeaderError::Overflow {
                name: "a".into(),
                shape: vec![1 << 32, 1 << 32],
            },
        ),
        (
            "partial byte",
            file(
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
                2,
            ),
            HeaderError::PartialByte {
                name: "a".into(),
                dtype: "F4",
                elements: 3,
            },
        ),
    ];
    for (label, bytes, expected) in rows {
        assert_eq!(parse_file(&bytes), Err(expected), "{label}");
    }
}

#[test]
fn malformed_json_and_entries() {
    let rows: &[(&str, &str, &str)] = &[
        ("array, not object", "[1,2]", "header is not valid JSON"),
        ("trailing garbage", "{} x", "header is not valid JSON"),
        (
            "metadata not strings",
            r#"{"__metadata__":{"a":1}}"#,
            "__metadata__ must map strings to strings",
        ),
        (
            "missing shape",
            r#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#,
            "tensor \"a\": missing field `shape`",
        ),
        (
            "negative shape",
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            "tensor \"a\": invalid value",
        ),
        (
            "reversed offsets",
            r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#,
            "end before they begin",
        ),
    ];
    for (label, json, needle) in rows {
        let err = parse_file(&file(json, 4)).expect_err(label).to_string();
        assert!(err.contains(needle), "{label}: {err}");
    }
}

#[test]
fn serialize_round_trips() {
    let tensors = vec![
        TensorInfo {
            name: "w".into(),
            dtype: Dtype::F16,
            shape: vec![2, 3],
            data_offsets: (0, 12),
            blocks: None,
        },
        TensorInfo {
            name: "b".into(),
            dtype: Dtype::I8,
            shape: vec![3],
            data_offsets: (12, 15),
            blocks: None,
        },
    ];
    let meta: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
    let mut bytes = serialize(Some(&meta), &tensors);
    assert_eq!(bytes.len() % 8, 0, "data section aligned");
    bytes.extend(std::iter::repeat_n(0u8, 15));
    let h = parse_file(&bytes).expect("round trip");
    assert_eq!(h.get("w"), Some(&tensors[0]));
    assert_eq!(h.metadata, Some(meta));
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    /// Byte-aligned dtypes and their widths.
    const DTYPES: [(&str, u64); 9] = [
        ("BOOL", 1),
        ("U8", 1),
        ("F8_E4M3", 1),
        ("I16", 2),
        ("F16", 2),
        ("BF16", 2),
        ("F32", 4),
        ("I64", 8),
        ("F64", 8),
    ];

    proptest! {
        /// Whatever the bytes, the parser answers Ok or Err, and what it accepts is in bounds.
        #[test]
        fn never_panics_and_accepts_only_in_bounds(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(h) = parse_file(&data) {
                for t in &h.tensors {
                    prop_assert!(h.data_start() + t.data_offsets.1 <= data.len() as u64);
                }
            }
        }

        /// Structured headers: valid JSON with random dtypes, shapes and offsets (laid out
        /// with gaps, then some offsets nudged), so both the accept and the refuse branches
        /// run. The verdict is checked against an independent statement of the rules: every
        /// tensor's bytes are what its dtype and shape need, within the data section, and no
        /// two non-empty tensors overlap. What is accepted comes back exactly as written.
        #[test]
        fn structured_headers_are_judged_by_the_rules(
            tensors in proptest::collection::vec(
                (0usize..DTYPES.len(), proptest::collection::vec(0u64..5, 0..4), 0u64..3),
                1..6,
            ),
            nudges in proptest::collection::vec((0usize..6, -2i64..3, any::<bool>()), 0..3),
            trailing in 0u64..3,
        ) {
            let mut layout = Vec::new();
            let mut at = 0u64;
            for (i, (d, shape, gap)) in tensors.iter().enumerate() {
                let (name, width) = DTYPES[*d];
                let bytes = shape.iter().product::<u64>() * width;
                at += gap;
                layout.push((format!("t{i}"), name, shape.clone(), at, at + bytes, bytes));
                at += bytes;
            }
            for &(i, by, both) in &nudges {
                if let Some(t) = layout.get_mut(i % tensors.len()) {
                    let nudge = |v: u64| v.saturating_add_signed(by);
                    if both {
                        t.3 = nudge(t.3);
                    }
                    t.4 = nudge(t.4);
                }
            }
            let data_len = at + trailing;
            let json: serde_json::Map<String, serde_json::Value> = layout
                .iter()
                .map(|(n, d, shape, b, e, _)| {
                    (n.clone(), serde_json::json!({"dtype": d, "shape": shape, "data_offsets": [b, e]}))
                })
                .collect();
            let f = file(&serde_json::Value::Object(json).to_string(), data_len as usize);
            let sized = layout.iter().all(|(_, _, _, b, e, bytes)| e >= b && e - b == *bytes && *e <= data_len);
            let mut spans: Vec<(u64, u64)> = layout.iter().filter(|t| t.4 > t.3).map(|t| (t.3, t.4)).collect();
            spans.sort_unstable();
            let disjoint = spans.windows(2).all(|w| w[0].1 <= w[1].0);
            match parse_file(&f) {
                Ok(h) => {
                    prop_assert!(sized && disjoint, "accepted a header that breaks the rules: {layout:?}");
                    prop_assert_eq!(h.tensors.len(), layout.len());
                    for (n, d, shape, b, e, _) in &layout {
                        let t = h.get(n).expect("listed");
                        prop_assert_eq!(t.dtype.to_string(), d.to_string());
                        prop_assert_eq!(&t.shape, shape);
                        prop_assert_eq!(t.data_offsets, (*b, *e));
                    }
                }
                Err(e) => prop_assert!(!(sized && disjoint), "refused a valid header: {e}: {layout:?}"),
            }
        }

        /// Mutated valid headers (the interesting neighbourhood for a parser).
        #[test]
        fn mutated_headers(pos in 8usize..90, byte in any::<u8>()) {
            let mut f = file(r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}}"#, 22);
            if pos < f.len() { f[pos] = byte; }
            if let Ok(h) = parse_file(&f) {
                for t in &h.tensors {
                    prop_assert!(h.data_start() + t.data_offsets.1 <= f.len() as u64);
                }
            }
        }
    }
}
