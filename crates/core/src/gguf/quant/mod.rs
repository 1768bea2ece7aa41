//! Decoding ggml's block types to f32, block by block, following the reference decoders of
//! ggml (`dequantize_row_*` in `ggml-quants.c`): the same layouts, the same order of float
//! operations (no fused multiply-add), so a value equals what gguf-py's numpy decoder gives.

use super::types::{GgmlType, QK_K};

mod code;
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
    let decode = decoder_for(ty, bytes)?;
    let (block, n) = (ty.block_bytes(), ty.block_elements());
    let start = out.len();
    out.resize(start + bytes.len() / block * n, 0.0);
    for (b, y) in bytes
        .chunks_exact(block)
        .zip(out[start..].chunks_exact_mut(n))
    {
        decode(b, y);
    }
    Ok(())
}

/// Decodes whole blocks of `ty` into a new vector.
pub fn to_f32(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    let mut out = Vec::new();
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

/// Decodes whole blocks of `ty` into little-endian f32 bytes (the form a quantized tensor is
/// read in as F32), a block at a time.
pub fn to_f32_bytes(ty: GgmlType, bytes: &[u8]) -> Result<Vec<u8>, QuantError> {
    let decode = decoder_for(ty, bytes)?;
    let (block, n) = (ty.block_bytes(), ty.block_elements());
    let mut values = vec![0f32; n];
    let mut out = vec![0u8; bytes.len() / block * n * 4];
    for (b, o) in bytes.chunks_exact(block).zip(out.chunks_exact_mut(n * 4)) {
        decode(b, &mut values);
        for (v, o) in values.iter().zip(o.chunks_exact_mut(4)) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

type Decoder = fn(&[u8], &mut [f32]);

/// The block decoder of `ty`, once `bytes` are known to be whole blocks of a readable type.
fn decoder_for(ty: GgmlType, bytes: &[u8]) -> Result<Decoder, QuantError> {
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
    Ok(block_decoder(ty))
}

fn block_decoder(ty: GgmlType) -> Decoder {
    use GgmlType::*;
    match ty {
        F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => |b, y| y[0] = f16(b, 0),
        BF16 => |b, y| y[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        F64 => |b, y| y[0] = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        I8 => |b, y| y[0] = f32::from(b[0] as i8),
        I16 => |b, y| y[0] = f32::from(i16::from_le_bytes([b[0], b[1]])),
        I32 => |b, y| y[0] = i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
        I64 => |b, y| y[0] = i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        Q4_0 => q4_0,
        Q4_1 => q4_1,
        Q5_0 => q5_0,
        Q5_1 => q5_1,
        Q8_0 => q8_0,
        Q2_K => q2_k,
        Q3_K => q3_k,
        Q4_K => q4_k,
        Q5_K => q5_k,
        Q6_K => q6_k,
        IQ4_NL => iq4_nl,
        IQ4_XS => iq4_xs,
        TQ1_0 => tq1_0,
        TQ2_0 => tq2_0,
        MXFP4 => mxfp4,
        NVFP4 => nvfp4,
        Q8_1 | Q8_K | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M | Q1_0 => {
            unreachable!("refused by GgmlType::unsupported")
        }
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

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = (i32::from(qs[j] & 0x0F) - 8) as f32 * d;
        y[j + 16] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = f32::from(qs[j] & 0x0F) * d + m;
        y[j + 16] = f32::from(qs[j] >> 4) * d + m;
    }
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((u32::from(qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = ((u32::from(qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (u32::from(qs[j] & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = (u32::from(qs[j] >> 4) | h1) as f32 * d + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16(b, 0);
    for (v, &q) in y.iter_mut().zip(&b[2..34]) {
        *v = f32::from(q as i8) * d;
    }
}

fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, min) = (f16(b, 80), f16(b, 82));
    let mut out = 0;
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for shift in 0..4 {
            for part in 0..2 {
                let sc = scales[half * 8 + shift * 2 + part];
                let dl = d * f32::from(sc & 0x0F);
                let ml = min * f32::from(sc >> 4);
                for &byte in &q[part * 16..part * 16 + 16] {
                    y[out] = dl * f32::from((byte >> (2 * shift)) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
}

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

fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = f16(b, 108);
    let mut out = 0;
    let mut is = 0;
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for shift in 0..4 {
            let bit = 1u8 << (half * 4 + shift);
            for part in 0..2 {
                let dl = d * f32::from(scales[is]);
                is += 1;
                for l in part * 16..part * 16 + 16 {
                    let low = ((q[l] >> (2 * shift)) & 3) as i8;
                    let sub = if hmask[l] & bit != 0 { 0 } else { 4 };
                    y[out] = dl * f32::from(low - sub);
                    out += 1;
                }
            }
        }
    }
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

fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16(b, 0), f16(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let [(d1, m1), (d2, m2)] = k_scales(d, min, scales, chunk);
        let y = &mut y[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16(b, 0), f16(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let [(d1, m1), (d2, m2)] = k_scales(d, min, scales, chunk);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let y = &mut y[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((q[l] & 0x0F) + h1) - m1;
            y[l + 32] = d2 * f32::from((q[l] >> 4) + h2) - m2;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh) = (&b[0..128], &b[128..192]);
    let sc = &b[192..208];
    let d = f16(b, 208);
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
        let sc = &sc[half * 8..];
        let y = &mut y[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            y[l] = d * f32::from(sc[is] as i8) * f32::from(q1);
            y[l + 32] = d * f32::from(sc[is + 2] as i8) * f32::from(q2);
            y[l + 64] = d * f32::from(sc[is + 4] as i8) * f32::from(q3);
            y[l + 96] = d * f32::from(sc[is + 6] as i8) * f32::from(q4);
        }
    }
}

fn iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = f16(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = d * f32::from(IQ4_LEVELS[usize::from(q & 0x0F)]);
        y[j + 16] = d * f32::from(IQ4_LEVELS[usize::from(q >> 4)]);
    }
}

fn iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = f16(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    let qs = &b[8..136];
    for ib in 0..QK_K / 32 {
        let low = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
        let high = ((scales_h >> (2 * ib)) & 3) as u8;
        let dl = d * f32::from((low | (high << 4)) as i8 - 32);
        let q = &qs[ib * 16..ib * 16 + 16];
        let y = &mut y[ib * 32..ib * 32 + 32];
        for j in 0..16 {
            y[j] = dl * f32::from(IQ4_LEVELS[usize::from(q[j] & 0x0F)]);
            y[j + 16] = dl * f32::from(IQ4_LEVELS[usize::from(q[j] >> 4)]);
        }
    }
}

fn tq1_0(b: &[u8], y: &mut [f32]) {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let (qs, qh) = (&b[0..48], &b[48..52]);
    let d = f16(b, 52);
    let trit = |q: u8, p: u8| {
        let q = q.wrapping_mul(p);
        ((u16::from(q) * 3) >> 8) as i16 - 1
    };
    let mut out = 0;
    for (start, width) in [(0usize, 32usize), (32, 16)] {
        for p in POW3 {
            for &q in &qs[start..start + width] {
                y[out] = f32::from(trit(q, p)) * d;
                out += 1;
            }
        }
    }
    for p in &POW3[..4] {
        for &q in qh {
            y[out] = f32::from(trit(q, *p)) * d;
            out += 1;
        }
    }
}

fn tq2_0(b: &[u8], y: &mut [f32]) {
    let d = f16(b, 64);
    let mut out = 0;
    for q in b[0..64].chunks_exact(32) {
        for shift in 0..4 {
            for &byte in q {
                y[out] = f32::from(((byte >> (2 * shift)) & 3) as i8 - 1) * d;
                out += 1;
            }
        }
    }
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

fn mxfp4(b: &[u8], y: &mut [f32]) {
    let d = e8m0_half(b[0]);
    for (j, &q) in b[1..17].iter().enumerate() {
        y[j] = f32::from(E2M1_LEVELS[usize::from(q & 0x0F)]) * d;
        y[j + 16] = f32::from(E2M1_LEVELS[usize::from(q >> 4)]) * d;
    }
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

fn nvfp4(b: &[u8], y: &mut [f32]) {
    for sub in 0..4 {
        let d = ue4m3_half(b[sub]);
        let q = &b[4 + sub * 8..4 + sub * 8 + 8];
        let y = &mut y[sub * 16..sub * 16 + 16];
        for j in 0..8 {
            y[j] = d * f32::from(E2M1_LEVELS[usize::from(q[j] & 0x0F)]);
            y[j + 8] = d * f32::from(E2M1_LEVELS[usize::from(q[j] >> 4)]);
        }
    }
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
