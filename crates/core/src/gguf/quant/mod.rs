//! Decoding ggml's block types to f32, block by block, following the reference decoders of
//! ggml (`dequantize_row_*` in `ggml-quants.c`): the same layouts, the same order of float
//! operations (no fused multiply-add), so a value equals what gguf-py's numpy decoder gives.

use super::types::{GgmlType, QK_K};

mod code;
pub mod layout;
pub use code::{element_code, quant_range, set_quant, ElementCode, CODED_TYPES};

/// Why bytes cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    #[error("{ty} values cannot be read: {why}")]
    Unsupported { ty: GgmlType, why: &'static str },
    #[error("{len} bytes are not a whole number of {ty} blocks ({block} bytes each)")]
    Partial {
        ty: GgmlType,
        len: usize,
        block: usize,
    },
}

/// Whether values of `ty` can be decoded.
pub fn can_decode(ty: GgmlType) -> bool {
    ty.unsupported().is_none()
}

/// Decodes whole blocks of `ty` and appends their values to `out`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), QuantError> {
    check(ty, bytes)?;
    let start = out.len();
    out.resize(
        start + bytes.len() / ty.block_bytes() * ty.block_elements(),
        0.0,
    );
    decode(ty, bytes, &mut out[start..]);
    Ok(())
}

/// Decodes whole blocks of `ty` into a new vector.
pub fn to_f32(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    let mut out = Vec::new();
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

/// Decodes whole blocks of `ty` into little-endian f32 bytes (the form a quantized tensor is
/// read in as F32), some blocks at a time.
pub fn to_f32_bytes(ty: GgmlType, bytes: &[u8]) -> Result<Vec<u8>, QuantError> {
    check(ty, bytes)?;
    let (block, n) = (ty.block_bytes(), ty.block_elements());
    let per = (4096 / n).max(1);
    let mut values = vec![0f32; per * n];
    let mut out = Vec::with_capacity(bytes.len() / block * n * 4);
    for chunk in bytes.chunks(per * block) {
        let values = &mut values[..chunk.len() / block * n];
        decode(ty, chunk, values);
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(out)
}

/// Refuses types that cannot be read and bytes that are not whole blocks.
fn check(ty: GgmlType, bytes: &[u8]) -> Result<(), QuantError> {
    if let Some(why) = ty.unsupported() {
        return Err(QuantError::Unsupported { ty, why });
    }
    let block = ty.block_bytes();
    if !bytes.len().is_multiple_of(block) {
        return Err(QuantError::Partial {
            ty,
            len: bytes.len(),
            block,
        });
    }
    Ok(())
}

/// Whole blocks of a readable type decoded into `y` (as many values as they hold).
fn decode(ty: GgmlType, bytes: &[u8], y: &mut [f32]) {
    if ty.is_quantized() {
        let done = layout::decode_into(ty, bytes, y);
        debug_assert!(done.is_some(), "{ty} passed the check without a layout");
        return;
    }
    let size = ty.block_bytes();
    for (b, y) in bytes.chunks_exact(size).zip(y.iter_mut()) {
        *y = plain(ty, b);
    }
}

/// One element of a type that is not quantized.
fn plain(ty: GgmlType, b: &[u8]) -> f32 {
    use GgmlType::*;
    match ty {
        F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => f16(b, 0),
        BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        I8 => f32::from(b[0] as i8),
        I16 => f32::from(i16::from_le_bytes([b[0], b[1]])),
        I32 => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
        I64 => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        _ => unreachable!("{ty} is quantized"),
    }
}

/// The f16 at `at`, widened.
pub fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// IQ4_NL's and IQ4_XS's sixteen levels.
pub const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// MXFP4's and NVFP4's E2M1 levels, doubled (ggml's `kvalues_mxfp4`).
pub const E2M1_LEVELS: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Q3_K's sixteen 6-bit scales, unpacked from 12 bytes (low nibbles from bytes 0..8, high
/// bit pairs from bytes 8..12), minus 32.
pub fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// The K-quants' scale and min of sub-block `j` (of 8), packed in 12 bytes as 6 bits each
/// (ggml's `get_scale_min_k4`).
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The scale and min of the two sub-blocks of 32 in a 64-element chunk of a Q4_K or Q5_K
/// super-block (`d · sc`, `dmin · m`, as ggml multiplies them).
fn k_scales(d: f32, min: f32, scales: &[u8], chunk: usize) -> [(f32, f32); 2] {
    [2 * chunk, 2 * chunk + 1].map(|j| {
        let (sc, m) = scale_min_k4(j, scales);
        (d * f32::from(sc), min * f32::from(m))
    })
}

/// Half the value of an E8M0 scale (ggml's `ggml_e8m0_to_fp32_half`).
fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// An unsigned E4M3 scale, halved for the doubled E2M1 levels (ggml's `ggml_ue4m3_to_fp32`
/// times one half).
fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = i32::from((x >> 3) & 0x0F);
    let man = f32::from(x & 7);
    let raw = if exp == 0 {
        man * (2f32).powi(-9)
    } else {
        (1.0 + man / 8.0) * (2f32).powi(exp - 7)
    };
    raw * 0.5
}

/// Scale sub-blocks per block of `ty` (each element's scale is its sub-block's), for the
/// types [`element_code`] reads; `None` for others.
pub fn scale_groups(ty: GgmlType) -> Option<usize> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => 1,
        Q2_K | Q3_K | Q6_K => QK_K / 16,
        Q4_K | Q5_K => QK_K / 32,
        _ => return None,
    })
}

/// The effective scale of every sub-block of whole blocks of `ty` (`d`, or `d · sc` for the
/// K-quants), appended to `out` as little-endian f32 bytes: a quantized tensor's "blocks"
/// view.
pub fn block_scales(ty: GgmlType, bytes: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let groups = scale_groups(ty)?;
    let per_group = ty.block_elements() / groups;
    for block in bytes.chunks_exact(ty.block_bytes()) {
        for g in 0..groups {
            let code = element_code(ty, block, g * per_group)?;
            out.extend_from_slice(&code.scale.to_le_bytes());
        }
    }
    Some(())
}
