use super::*;
use proptest::prelude::*;

fn canonical(dtype: Dtype, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes[..element_bytes(dtype)].to_vec();
    if is_packed(dtype) {
        b[0] &= ((1u16 << bits(dtype)) - 1) as u8;
    }
    if dtype == Dtype::BOOL {
        b[0] &= 1;
    }
    b
}

fn is_nan(dtype: Dtype, bytes: &[u8]) -> bool {
    match decode(dtype, bytes) {
        Value::Float(v) => v.is_nan(),
        Value::Complex(re, im) => re.is_nan() || im.is_nan(),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// decode -> encode gives back the stored bytes for every dtype (NaN payloads aside).
    #[test]
    fn value_round_trip(index in 0usize..ALL.len(), raw in proptest::collection::vec(any::<u8>(), 8)) {
        let dtype = ALL[index];
        let bytes = canonical(dtype, &raw);
        let value = decode(dtype, &bytes);
        let back = encode(dtype, value.to_number(), EncodeOptions::EXACT).expect("a stored value encodes");
        if is_nan(dtype, &bytes) {
            prop_assert!(is_nan(dtype, &back));
        } else {
            prop_assert_eq!(back, bytes, "{}", name(dtype));
        }
    }

    /// The shortest text reads back to the same element.
    #[test]
    fn text_round_trip(index in 0usize..ALL.len(), raw in proptest::collection::vec(any::<u8>(), 8)) {
        let dtype = ALL[index];
        let bytes = canonical(dtype, &raw);
        let text = format_element(dtype, &bytes);
        let number = parse_number(&text).unwrap_or_else(|| panic!("{text} parses"));
        let back = encode(dtype, number, EncodeOptions::EXACT).expect("formatted value encodes");
        if is_nan(dtype, &bytes) {
            prop_assert!(is_nan(dtype, &back));
        } else {
            prop_assert_eq!(back, bytes, "{} {}", name(dtype), text);
        }
    }
}

#[test]
fn names_match_safetensors_spelling() {
    for d in ALL {
        let json = serde_json::to_string(&d).expect("serialises");
        assert_eq!(json, format!("\"{}\"", name(d)));
        assert_eq!(parse_name(&name(d).to_lowercase()), Some(d));
    }
    assert_eq!(parse_name("float32"), None);
}

#[test]
fn unrepresentable_values_are_errors() {
    let rows: &[(&str, Dtype, Number)] = &[
        ("300 into i8", Dtype::I8, Number::Int(300)),
        ("-1 into u8", Dtype::U8, Number::Int(-1)),
        ("1e6 into f16", Dtype::F16, Number::Float(1e6)),
        ("1e39 into f32", Dtype::F32, Number::Float(1e39)),
        ("0.5 into i32", Dtype::I32, Number::Float(0.5)),
        ("nan into i16", Dtype::I16, Number::Float(f64::NAN)),
        ("2 into bool", Dtype::BOOL, Number::Int(2)),
        ("1000 into f8_e4m3", Dtype::F8_E4M3, Number::Float(1000.0)),
        ("nan into f4", Dtype::F4, Number::Float(f64::NAN)),
        ("complex into f32", Dtype::F32, Number::Complex(1.0, 2.0)),
    ];
    for (label, dtype, number) in rows {
        assert!(
            encode(*dtype, *number, EncodeOptions::EXACT).is_err(),
            "{label}"
        );
    }
    let err = encode(Dtype::I8, Number::Int(300), EncodeOptions::EXACT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "300 is out of range for I8 (it holds -128 to 127); pass saturate to clamp"
    );
    let err = encode(Dtype::F16, Number::Float(1e6), EncodeOptions::EXACT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "1000000 is out of range for F16 (it holds -65504 to 65504); pass saturate to clamp"
    );
}

#[test]
fn saturate_and_round() {
    let sat = EncodeOptions {
        saturate: true,
        round: false,
    };
    let round = EncodeOptions {
        saturate: false,
        round: true,
    };
    assert_eq!(encode(Dtype::I8, Number::Int(300), sat), Ok(vec![127]));
    assert_eq!(encode(Dtype::I8, Number::Int(-300), sat), Ok(vec![0x80]));
    assert_eq!(
        encode(Dtype::F16, Number::Float(1e6), sat),
        Ok(half::f16::MAX.to_le_bytes().to_vec())
    );
    assert_eq!(
        encode(Dtype::I32, Number::Float(2.5), round),
        Ok(2i32.to_le_bytes().to_vec())
    );
    assert_eq!(
        encode(Dtype::I32, Number::Float(3.5), round),
        Ok(4i32.to_le_bytes().to_vec())
    );
}

#[test]
fn shortest_text() {
    let rows: &[(&str, Dtype, Number, &str)] = &[
        ("f16 0.1", Dtype::F16, Number::Float(0.1), "0.1"),
        ("bf16 0.1", Dtype::BF16, Number::Float(0.1), "0.1"),
        ("f32 0.1", Dtype::F32, Number::Float(0.1), "0.1"),
        ("f32 tiny", Dtype::F32, Number::Float(1e-30), "1e-30"),
        ("e4m3 0.3", Dtype::F8_E4M3, Number::Float(0.3), "0.3"),
        ("i8", Dtype::I8, Number::Int(-7), "-7"),
        ("c64", Dtype::C64, Number::Complex(1.5, -2.0), "1.5-2j"),
        (
            "f64 inf",
            Dtype::F64,
            Number::Float(f64::NEG_INFINITY),
            "-inf",
        ),
    ];
    for (label, dtype, number, text) in rows {
        let bytes = encode(*dtype, *number, EncodeOptions::EXACT).expect(label);
        assert_eq!(format_element(*dtype, &bytes), *text, "{label}");
    }
}

#[test]
fn parse_numbers() {
    assert_eq!(parse_number("42"), Some(Number::Int(42)));
    assert_eq!(parse_number("-1.5e3"), Some(Number::Float(-1500.0)));
    assert_eq!(parse_number("1e-3-2j"), Some(Number::Complex(1e-3, -2.0)));
    assert_eq!(parse_number("(1+2j)"), Some(Number::Complex(1.0, 2.0)));
    assert_eq!(parse_number("true"), Some(Number::Int(1)));
    assert!(matches!(parse_number("-inf"), Some(Number::Float(v)) if v == f64::NEG_INFINITY));
    assert_eq!(parse_number("abc"), None);
    assert_eq!(parse_number(""), None);
}
