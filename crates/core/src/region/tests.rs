use super::*;
use crate::dtype::Dtype;

fn info(name: &str, dtype: Dtype, shape: &[u64]) -> TensorInfo {
    let n: u64 = shape.iter().product();
    TensorInfo {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        data_offsets: (0, n * dtype::element_bytes(dtype) as u64),
        blocks: None,
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn apply(bytes: &[u8], changes: &[Change]) -> Vec<f32> {
    let mut out = bytes.to_vec();
    for c in changes {
        out[c.offset as usize..c.offset as usize + c.after.len()].copy_from_slice(&c.after);
    }
    out.chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn all(t: &TensorInfo) -> Selection {
    SliceSpec::parse("").unwrap().resolve(&t.shape).unwrap()
}

#[test]
fn swaps_rows_and_columns() {
    let t = info("w", Dtype::F32, &[3, 2]);
    let data = f32s(&[0., 1., 2., 3., 4., 5.]);
    let opts = EncodeOptions::default();
    let rows = plan(
        &t,
        &all(&t),
        data.as_slice(),
        None,
        &Region::SwapRows { a: 2, b: 0 },
        opts,
    )
    .unwrap();
    assert_eq!(apply(&data, &rows), [4., 5., 2., 3., 0., 1.]);
    let cols = plan(
        &t,
        &all(&t),
        data.as_slice(),
        None,
        &Region::SwapColumns { a: 0, b: 1 },
        opts,
    )
    .unwrap();
    assert_eq!(apply(&data, &cols), [1., 0., 3., 2., 5., 4.]);
    let err = plan(
        &t,
        &all(&t),
        data.as_slice(),
        None,
        &Region::SwapRows { a: 0, b: 3 },
        opts,
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("row 3 is out of range"));
}

#[test]
fn copy_converts_and_refuses_what_the_target_cannot_hold() {
    let t = info("w", Dtype::I8, &[2, 2]);
    let src = info("s", Dtype::F32, &[2, 2]);
    let data = vec![0u8; 4];
    let s_bytes = f32s(&[1., 2., 3., 300.]);
    let sel = SliceSpec::parse("0").unwrap().resolve(&t.shape).unwrap();
    let region = Region::Copy {
        from: "s".into(),
        from_spec: "0".into(),
    };
    let operand = |spec: &str| Operand {
        info: &src,
        selection: SliceSpec::parse(spec).unwrap().resolve(&src.shape).unwrap(),
        source: s_bytes.as_slice(),
    };
    let ok = plan(
        &t,
        &sel,
        data.as_slice(),
        Some(operand("0")),
        &region,
        EncodeOptions::default(),
    )
    .unwrap();
    assert_eq!(ok[0].after, vec![1, 2]);
    let err = plan(
        &t,
        &sel,
        data.as_slice(),
        Some(operand("1")),
        &region,
        EncodeOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("element [0, 1]"), "{err}");
    let err = plan(
        &t,
        &sel,
        data.as_slice(),
        Some(operand(":,0")),
        &region,
        EncodeOptions::default(),
    );
    assert!(err.is_ok(), "a column of 2 fits a row of 2");
    let err = plan(
        &t,
        &sel,
        data.as_slice(),
        Some(operand("")),
        &region,
        EncodeOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn noise_is_seeded_and_scale_rows_uses_one_factor_per_row() {
    let t = info("w", Dtype::F32, &[2, 3]);
    let data = f32s(&[1.; 6]);
    let opts = EncodeOptions::default();
    let noise = |seed| {
        plan(
            &t,
            &all(&t),
            data.as_slice(),
            None,
            &Region::Noise { std: 0.5, seed },
            opts,
        )
        .unwrap()
    };
    assert_eq!(noise(7), noise(7));
    assert_ne!(noise(7), noise(8));
    let scaled = plan(
        &t,
        &all(&t),
        data.as_slice(),
        None,
        &Region::ScaleRows {
            factors: vec![2., 3.],
        },
        opts,
    )
    .unwrap();
    assert_eq!(apply(&data, &scaled), [2., 2., 2., 3., 3., 3.]);
    let cols = plan(
        &t,
        &all(&t),
        data.as_slice(),
        None,
        &Region::ScaleColumns {
            factors: vec![1., 0., -1.],
        },
        opts,
    )
    .unwrap();
    assert_eq!(apply(&data, &cols), [1., 0., -1., 1., 0., -1.]);
    let err = plan(
        &t,
        &all(&t),
        data.as_slice(),
        None,
        &Region::ScaleColumns { factors: vec![1.] },
        opts,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "1 factors for 3 columns of w");
}
