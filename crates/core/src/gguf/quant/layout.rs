//! Each quantized block type as integer codes and a scale (and, for some types, an offset) per
//! sub-block: element `i` of a block is `scale[s] · code[i]` (`+ offset[s]`) with `s` its
//! sub-block. Unpacking follows ggml's reference decoders (`dequantize_row_*` in
//! `ggml-quants.c`), and the values come out bit for bit as they compute them (`scale` and
//! `offset` are the products ggml forms, in its order; a min it subtracts is an offset
//! negated, and `a + (−b)` is `a − b` in IEEE arithmetic). The decoder of every type is this
//! one form, and so are the forward pass's products over blocks, which sum `code · x` per
//! sub-block and scale the sums instead of widening the weights.

use super::{e8m0_half, f16, q3_k_scales, scale_min_k4, ue4m3_half, E2M1_LEVELS, IQ4_LEVELS};
use crate::gguf::types::{GgmlType, QK_K};

/// Sub-blocks of a block, at most (Q2_K, Q3_K and Q6_K have sixteen of sixteen elements).
pub const MAX_SUBS: usize = 16;

/// One block, unpacked.
#[derive(Clone)]
pub struct Unpacked {
    pub codes: [i8; QK_K],
    pub scales: [f32; MAX_SUBS],
    pub offsets: [f32; MAX_SUBS],
}

impl Default for Unpacked {
    fn default() -> Self {
        Unpacked {
            codes: [0; QK_K],
            scales: [0.0; MAX_SUBS],
            offsets: [0.0; MAX_SUBS],
        }
    }
}

/// A block type's layout.
pub trait Layout {
    const TYPE: GgmlType;
    /// Elements and bytes of a block.
    const ELEMS: usize;
    const BYTES: usize;
    /// Elements of a sub-block (one scale, one offset).
    const SUB: usize;
    /// Whether values have an offset (types with a min).
    const OFFSET: bool;
    /// Reads one block (`BYTES` bytes) into `u`: its `ELEMS` codes and `ELEMS / SUB` scales
    /// (and offsets).
    fn unpack(b: &[u8], u: &mut Unpacked);
}

/// The values of one block (`y`: `ELEMS` of them).
#[inline(always)]
pub fn decode_block<L: Layout>(b: &[u8], u: &mut Unpacked, y: &mut [f32]) {
    L::unpack(b, u);
    let parts = y[..L::ELEMS]
        .chunks_exact_mut(L::SUB)
        .zip(u.codes.chunks_exact(L::SUB));
    for (s, (y, codes)) in parts.enumerate() {
        let d = u.scales[s];
        if L::OFFSET {
            let m = u.offsets[s];
            for (y, &q) in y.iter_mut().zip(codes) {
                *y = d * f32::from(q) + m;
            }
        } else {
            for (y, &q) in y.iter_mut().zip(codes) {
                *y = d * f32::from(q);
            }
        }
    }
}

/// Whole blocks of `L` decoded into `y` (as many values as they hold).
#[inline(always)]
pub fn decode_blocks<L: Layout>(bytes: &[u8], y: &mut [f32]) {
    let mut u = Unpacked::default();
    for (b, y) in bytes
        .chunks_exact(L::BYTES)
        .zip(y.chunks_exact_mut(L::ELEMS))
    {
        decode_block::<L>(b, &mut u, y);
    }
}

/// Whole blocks of `ty` decoded into `y`; `None` when `ty` has no layout here.
#[inline(always)]
pub fn decode_into(ty: GgmlType, bytes: &[u8], y: &mut [f32]) -> Option<()> {
    struct Decode<'a, 'b>(&'a [u8], &'b mut [f32]);
    impl WithLayout for Decode<'_, '_> {
        type Output = ();
        #[inline(always)]
        fn with<L: Layout>(self) {
            decode_blocks::<L>(self.0, self.1)
        }
    }
    with_layout(ty, Decode(bytes, y))
}

/// Work generic over a block layout, run by [`with_layout`] for a type known at run time.
pub trait WithLayout {
    type Output;
    fn with<L: Layout>(self) -> Self::Output;
}

/// Runs `work` with the layout of `ty`; `None` for types that are not quantized blocks or
/// cannot be read.
#[inline(always)]
pub fn with_layout<W: WithLayout>(ty: GgmlType, work: W) -> Option<W::Output> {
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => work.with::<Q4_0>(),
        T::Q4_1 => work.with::<Q4_1>(),
        T::Q5_0 => work.with::<Q5_0>(),
        T::Q5_1 => work.with::<Q5_1>(),
        T::Q8_0 => work.with::<Q8_0>(),
        T::Q2_K => work.with::<Q2_K>(),
        T::Q3_K => work.with::<Q3_K>(),
        T::Q4_K => work.with::<Q4_K>(),
        T::Q5_K => work.with::<Q5_K>(),
        T::Q6_K => work.with::<Q6_K>(),
        T::IQ4_NL => work.with::<IQ4_NL>(),
        T::IQ4_XS => work.with::<IQ4_XS>(),
        T::TQ1_0 => work.with::<TQ1_0>(),
        T::TQ2_0 => work.with::<TQ2_0>(),
        T::MXFP4 => work.with::<MXFP4>(),
        T::NVFP4 => work.with::<NVFP4>(),
        _ => return None,
    })
}

/// The low (`i < 16`) and high nibbles of sixteen bytes as thirty-two codes, less `bias`.
#[inline(always)]
fn nibbles(qs: &[u8], bias: i8, codes: &mut [i8]) {
    for j in 0..16 {
        codes[j] = (qs[j] & 0x0F) as i8 - bias;
        codes[j + 16] = (qs[j] >> 4) as i8 - bias;
    }
}

/// Q5's fifth bits (`qh`, one per element) joined to the nibbles, less `bias`.
#[inline(always)]
fn nibbles_5(qs: &[u8], qh: u32, bias: i8, codes: &mut [i8]) {
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        codes[j] = ((qs[j] & 0x0F) | h0) as i8 - bias;
        codes[j + 16] = ((qs[j] >> 4) | h1) as i8 - bias;
    }
}

/// Sixteen bytes' nibbles as levels of a table (IQ4, E2M1).
#[inline(always)]
fn levels(qs: &[u8], table: &[i8; 16], codes: &mut [i8]) {
    for j in 0..qs.len() {
        codes[j] = table[usize::from(qs[j] & 0x0F)];
        codes[j + qs.len()] = table[usize::from(qs[j] >> 4)];
    }
}

macro_rules! layout {
    ($name:ident, $sub:expr, $offset:expr, |$b:ident, $u:ident| $body:block) => {
        #[allow(non_camel_case_types)]
        pub struct $name;
        impl Layout for $name {
            const TYPE: GgmlType = GgmlType::$name;
            const ELEMS: usize = GgmlType::$name.block_elements();
            const BYTES: usize = GgmlType::$name.block_bytes();
            const SUB: usize = $sub;
            const OFFSET: bool = $offset;
            #[inline(always)]
            fn unpack($b: &[u8], $u: &mut Unpacked) $body
        }
    };
}

layout!(Q4_0, 32, false, |b, u| {
    u.scales[0] = f16(b, 0);
    nibbles(&b[2..18], 8, &mut u.codes);
});

layout!(Q4_1, 32, true, |b, u| {
    (u.scales[0], u.offsets[0]) = (f16(b, 0), f16(b, 2));
    nibbles(&b[4..20], 0, &mut u.codes);
});

layout!(Q5_0, 32, false, |b, u| {
    u.scales[0] = f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    nibbles_5(&b[6..22], qh, 16, &mut u.codes);
});

layout!(Q5_1, 32, true, |b, u| {
    (u.scales[0], u.offsets[0]) = (f16(b, 0), f16(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    nibbles_5(&b[8..24], qh, 0, &mut u.codes);
});

layout!(Q8_0, 32, false, |b, u| {
    u.scales[0] = f16(b, 0);
    for (c, &q) in u.codes.iter_mut().zip(&b[2..34]) {
        *c = q as i8;
    }
});

layout!(Q2_K, 16, true, |b, u| {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, min) = (f16(b, 80), f16(b, 82));
    // Sub-block `half·8 + shift·2 + part`: sixteen bytes' two bits at `shift`.
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for shift in 0..4 {
            for part in 0..2 {
                let s = half * 8 + shift * 2 + part;
                u.scales[s] = d * f32::from(scales[s] & 0x0F);
                u.offsets[s] = -(min * f32::from(scales[s] >> 4));
                for (c, &byte) in u.codes[s * 16..s * 16 + 16]
                    .iter_mut()
                    .zip(&q[part * 16..part * 16 + 16])
                {
                    *c = ((byte >> (2 * shift)) & 3) as i8;
                }
            }
        }
    }
});

layout!(Q3_K, 16, false, |b, u| {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = f16(b, 108);
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for shift in 0..4 {
            let bit = 1u8 << (half * 4 + shift);
            for part in 0..2 {
                let s = half * 8 + shift * 2 + part;
                u.scales[s] = d * f32::from(scales[s]);
                for l in part * 16..part * 16 + 16 {
                    let low = ((q[l] >> (2 * shift)) & 3) as i8;
                    let sub = if hmask[l] & bit != 0 { 0 } else { 4 };
                    u.codes[s * 16 + l - part * 16] = low - sub;
                }
            }
        }
    }
});

/// Q4_K's and Q5_K's eight sub-block scales and mins (`d · sc`, `−dmin · m`).
#[inline(always)]
fn k_parts(b: &[u8], u: &mut Unpacked) {
    let (d, min) = (f16(b, 0), f16(b, 2));
    for s in 0..8 {
        let (sc, m) = scale_min_k4(s, &b[4..16]);
        u.scales[s] = d * f32::from(sc);
        u.offsets[s] = -(min * f32::from(m));
    }
}

layout!(Q4_K, 32, true, |b, u| {
    k_parts(b, u);
    // Chunk `c` of 32 bytes: sub-block 2c in the low nibbles, 2c + 1 in the high ones.
    for (c, q) in b[16..144].chunks_exact(32).enumerate() {
        let codes = &mut u.codes[c * 64..c * 64 + 64];
        for l in 0..32 {
            codes[l] = (q[l] & 0x0F) as i8;
            codes[l + 32] = (q[l] >> 4) as i8;
        }
    }
});

layout!(Q5_K, 32, true, |b, u| {
    k_parts(b, u);
    let qh = &b[16..48];
    for (c, q) in b[48..176].chunks_exact(32).enumerate() {
        let codes = &mut u.codes[c * 64..c * 64 + 64];
        for l in 0..32 {
            let h1 = ((qh[l] >> (2 * c)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
            codes[l] = ((q[l] & 0x0F) + h1) as i8;
            codes[l + 32] = ((q[l] >> 4) + h2) as i8;
        }
    }
});

layout!(Q6_K, 16, false, |b, u| {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16(b, 208);
    for (s, scale) in u.scales.iter_mut().enumerate() {
        *scale = d * f32::from(sc[s] as i8);
    }
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
        let codes = &mut u.codes[half * 128..half * 128 + 128];
        for l in 0..32 {
            codes[l] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            codes[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            codes[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            codes[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
});

layout!(IQ4_NL, 32, false, |b, u| {
    u.scales[0] = f16(b, 0);
    levels(&b[2..18], &IQ4_LEVELS, &mut u.codes);
});

layout!(IQ4_XS, 32, false, |b, u| {
    let d = f16(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    for s in 0..QK_K / 32 {
        let low = (scales_l[s / 2] >> (4 * (s % 2))) & 0x0F;
        let high = ((scales_h >> (2 * s)) & 3) as u8;
        u.scales[s] = d * f32::from((low | (high << 4)) as i8 - 32);
        let q = &b[8 + s * 16..8 + s * 16 + 16];
        levels(q, &IQ4_LEVELS, &mut u.codes[s * 32..s * 32 + 32]);
    }
});

layout!(TQ1_0, QK_K, false, |b, u| {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let (qs, qh) = (&b[0..48], &b[48..52]);
    u.scales[0] = f16(b, 52);
    let trit = |q: u8, p: u8| {
        let q = q.wrapping_mul(p);
        ((u16::from(q) * 3) >> 8) as i8 - 1
    };
    let mut out = 0;
    for (start, width) in [(0usize, 32usize), (32, 16)] {
        for p in POW3 {
            for &q in &qs[start..start + width] {
                u.codes[out] = trit(q, p);
                out += 1;
            }
        }
    }
    for p in &POW3[..4] {
        for &q in qh {
            u.codes[out] = trit(q, *p);
            out += 1;
        }
    }
});

layout!(TQ2_0, QK_K, false, |b, u| {
    u.scales[0] = f16(b, 64);
    let mut out = 0;
    for q in b[0..64].chunks_exact(32) {
        for shift in 0..4 {
            for &byte in q {
                u.codes[out] = ((byte >> (2 * shift)) & 3) as i8 - 1;
                out += 1;
            }
        }
    }
});

layout!(MXFP4, 32, false, |b, u| {
    u.scales[0] = e8m0_half(b[0]);
    levels(&b[1..17], &E2M1_LEVELS, &mut u.codes);
});

layout!(NVFP4, 16, false, |b, u| {
    for s in 0..4 {
        u.scales[s] = ue4m3_half(b[s]);
        let q = &b[4 + s * 8..4 + s * 8 + 8];
        levels(q, &E2M1_LEVELS, &mut u.codes[s * 16..s * 16 + 16]);
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layout's sizes fit the unpacked form and name its type's block.
    #[test]
    fn every_layout_fits_its_block() {
        struct Sizes;
        impl WithLayout for Sizes {
            type Output = (GgmlType, usize, usize, usize);
            fn with<L: Layout>(self) -> Self::Output {
                (L::TYPE, L::ELEMS, L::BYTES, L::SUB)
            }
        }
        let mut n = 0;
        for ty in crate::gguf::ALL_TYPES {
            let Some((of, elems, bytes, sub)) = with_layout(ty, Sizes) else {
                assert!(!ty.is_quantized() || !super::super::can_decode(ty), "{ty}");
                continue;
            };
            assert_eq!(of, ty);
            assert_eq!(
                (elems, bytes),
                (ty.block_elements(), ty.block_bytes()),
                "{ty}"
            );
            assert!(elems <= QK_K && elems.is_multiple_of(sub), "{ty}");
            assert!(elems / sub <= MAX_SUBS && sub.is_multiple_of(8), "{ty}");
            n += 1;
        }
        assert_eq!(n, 16);
    }
}
