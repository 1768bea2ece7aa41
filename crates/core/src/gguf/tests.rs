use super::quant::{self, QuantError};
use super::*;

/// Builds GGUF bytes field by field.
#[derive(Default)]
struct Builder(Vec<u8>);

impl Builder {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut b = self.u64(s.len() as u64);
        b.0.extend_from_slice(s.as_bytes());
        b
    }
    fn start(tensors: u64, kvs: u64) -> Self {
        let mut b = Builder::default();
        b.0.extend_from_slice(b"GGUF");
        b.u32(3).u64(tensors).u64(kvs)
    }
    /// A tensor info: ggml dims (fastest first), type id, offset.
    fn tensor(self, name: &str, ne: &[u64], ty: u32, offset: u64) -> Self {
        let mut b = self.str(name).u32(ne.len() as u32);
        for &d in ne {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `data` bytes of zeros.
    fn data(mut self, data: usize) -> Vec<u8> {
        let at = self.0.len().next_multiple_of(32);
        self.0.resize(at + data, 0);
        self.0
    }
}

fn parse_all(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    parse(bytes, bytes.len() as u64)
}

#[test]
fn a_small_file_parses_with_reversed_shapes_and_typed_metadata() {
    let bytes = Builder::start(2, 3)
        .str("general.architecture")
        .u32(8)
        .str("llama")
        .str("llama.block_count")
        .u32(4)
        .u32(30)
        .str("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("<s>")
        .str("a")
        .tensor("blk.0.ffn_down.weight", &[256, 3], 12, 0)
        .tensor("output_norm.weight", &[8], 0, 448)
        .data(448 + 32);
    let h = parse_all(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.architecture(), Some("llama"));
    assert_eq!(h.get("llama.block_count").and_then(Value::as_u64), Some(30));
    assert_eq!(
        h.get("tokenizer.ggml.tokens"),
        Some(&Value::Array(
            ValueType::String,
            vec![Value::String("<s>".into()), Value::String("a".into())]
        ))
    );
    let t = h.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(t.ggml_type, GgmlType::Q4_K);
    assert_eq!(t.shape, vec![3, 256]);
    assert_eq!(t.size, 3 * 144);
    assert_eq!(t.row_bytes(), 144);
    assert_eq!(h.data_start % 32, 0);
    assert_eq!(h.tensor("output_norm.weight").unwrap().size, 32);
}

#[test]
fn every_truncation_of_a_header_is_an_error_never_a_panic() {
    let bytes = Builder::start(1, 1)
        .str("general.name")
        .u32(8)
        .str("tiny")
        .tensor("t", &[32, 2], 8, 0)
        .data(68);
    assert!(parse_all(&bytes).is_ok());
    let header_end = bytes.len() - 68;
    for cut in 0..header_end {
        let err = parse_all(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. }
                    | GgufError::ImpossibleCount { .. }
                    | GgufError::NotGguf
                    | GgufError::PastEnd { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn impossible_counts_are_refused_before_allocating() {
    let huge_tensors = Builder::start(u64::MAX, 0).data(0);
    assert!(matches!(
        parse_all(&huge_tensors),
        Err(GgufError::ImpossibleCount { .. })
    ));
    let huge_array = Builder::start(0, 1)
        .str("k")
        .u32(9)
        .u32(10)
        .u64(1 << 60)
        .data(0);
    assert!(matches!(
        parse_all(&huge_array),
        Err(GgufError::ImpossibleCount { .. })
    ));
    let long_string = Builder::start(0, 1).u64(1 << 40).data(64);
    assert!(matches!(
        parse_all(&long_string),
        Err(GgufError::Truncated { .. })
    ));
    // A length near 2^64 (found by the fuzz target): an error, not an overflow.
    let longest = Builder::start(0, 1).u64(u64::MAX - 3).data(64);
    assert!(matches!(
        parse_all(&longest),
        Err(GgufError::Truncated {
            needed: u64::MAX,
            ..
        })
    ));
}

#[test]
fn arrays_nested_too_deep_are_refused() {
    let mut b = Builder::start(0, 1).str("deep").u32(9);
    for _ in 0..MAX_NESTING + 1 {
        b = b.u32(9).u64(1);
    }
    let bytes = b.u32(0).u64(0).data(0);
    assert!(matches!(parse_all(&bytes), Err(GgufError::TooDeep { .. })));
}

#[test]
fn bad_tensor_infos_each_have_their_error() {
    let one = |ne: &[u64], ty: u32, offset: u64, data: usize| {
        parse_all(&Builder::start(1, 0).tensor("t", ne, ty, offset).data(data))
    };
    assert!(matches!(
        one(&[100], 2, 0, 64),
        Err(GgufError::RowNotBlocks { .. })
    ));
    assert!(matches!(
        one(&[32], 99, 0, 64),
        Err(GgufError::UnknownType {
            id: 99,
            removed: None,
            ..
        })
    ));
    let removed = one(&[32], 31, 0, 64).unwrap_err();
    assert!(removed.to_string().contains("Q4_0_4_4"), "{removed}");
    assert!(matches!(
        one(&[32], 8, 4, 64),
        Err(GgufError::Misaligned { .. })
    ));
    assert!(matches!(
        one(&[32, 4], 8, 0, 64),
        Err(GgufError::PastEnd { .. })
    ));
    assert!(matches!(
        one(&[1, 1, 1, 1, 1], 0, 0, 64),
        Err(GgufError::TooManyDims { .. })
    ));
    assert!(matches!(
        one(&[1 << 40, 1 << 40], 0, 0, 64),
        Err(GgufError::BadShape { .. })
    ));
    // Zero elements, but dims whose product overflows in another order (found by the fuzz
    // target): refused too.
    assert!(matches!(
        one(&[0, 1 << 40, 1 << 40], 0, 0, 64),
        Err(GgufError::BadShape { .. })
    ));
    let overlapping = Builder::start(2, 0)
        .tensor("a", &[32], 0, 0)
        .tensor("b", &[32], 0, 64)
        .data(256);
    assert!(matches!(
        parse_all(&overlapping),
        Err(GgufError::Overlap(..))
    ));
}

#[test]
fn versions_endianness_and_alignment_are_checked() {
    let mut v1 = Builder::start(0, 0).data(0);
    v1[4] = 1;
    assert_eq!(parse_all(&v1), Err(GgufError::Version(1)));
    let mut big = Builder::start(0, 0).data(0);
    big[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(parse_all(&big), Err(GgufError::BigEndian));
    let odd = Builder::start(0, 1)
        .str("general.alignment")
        .u32(4)
        .u32(24)
        .data(0);
    assert!(matches!(parse_all(&odd), Err(GgufError::Alignment(_))));
    let wide = Builder::start(1, 1)
        .str("general.alignment")
        .u32(4)
        .u32(64)
        .tensor("t", &[32], 0, 0)
        .data(0);
    let mut wide = wide;
    let start = wide.len().next_multiple_of(64);
    wide.resize(start + 128, 0);
    assert_eq!(parse_all(&wide).unwrap().data_start % 64, 0);
}

#[test]
fn q8_0_and_q4_0_decode_as_ggml_does() {
    let mut q8 = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let values = quant::to_f32(GgmlType::Q8_0, &q8).unwrap();
    assert_eq!(values[0], -8.0);
    assert_eq!(values[31], 7.5);
    let mut q4 = half::f16::from_f32(2.0).to_le_bytes().to_vec();
    q4.extend([0x1F; 16]);
    let values = quant::to_f32(GgmlType::Q4_0, &q4).unwrap();
    assert_eq!(&values[..2], &[(15 - 8) as f32 * 2.0; 2]);
    assert_eq!(&values[16..18], &[(1 - 8) as f32 * 2.0; 2]);
}

#[test]
fn q4_k_uses_each_sub_block_scale_and_min() {
    let mut block = vec![0u8; GgmlType::Q4_K.block_bytes()];
    block[0..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
    block[2..4].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
    // Sub-block 0: scale 3, min 4; sub-block 5: scale 1 | (2 << 4) = 33 from the high bits.
    block[4] = 3;
    block[8] = 4;
    block[4 + 1] |= 2 << 6; // high bits of sub-block 5's scale
    block[4 + 9] = 1; // low nibble of sub-block 5's scale
    block[16] = 0x52; // element 0: q 2; element 32: q 5
                      // Elements 128 (sub-block 4, scale 0: low nibble) and 160 (sub-block 5: high nibble, q 3).
    block[16 + 64] = 0x37;
    let y = quant::to_f32(GgmlType::Q4_K, &block).unwrap();
    assert_eq!(y[0], 3.0 * 2.0 - 0.25 * 4.0);
    assert_eq!(quant::scale_min_k4(5, &block[4..16]).0, 33);
    assert_eq!(y[128], 0.0);
    assert_eq!(y[160], 33.0 * 3.0);
}

#[test]
fn unsupported_types_are_named_and_partial_blocks_refused() {
    let err = quant::to_f32(GgmlType::IQ2_XXS, &[0; 66]).unwrap_err();
    assert!(err.to_string().contains("IQ2_XXS"), "{err}");
    assert!(matches!(
        quant::to_f32(GgmlType::Q8_0, &[0; 33]),
        Err(QuantError::Partial { .. })
    ));
}

#[test]
fn every_type_has_an_id_that_round_trips_and_a_size() {
    for t in ALL_TYPES {
        assert_eq!(GgmlType::from_id(t.id()), Ok(t));
        assert_eq!(GgmlType::parse(t.name()), Some(t));
        assert!(t.block_bytes() > 0 && t.block_elements() > 0);
        if quant::can_decode(t) {
            let n = t.block_elements();
            assert_eq!(
                quant::to_f32(t, &vec![0; t.block_bytes()]).unwrap().len(),
                n
            );
        }
    }
}
