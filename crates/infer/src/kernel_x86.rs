//! Rows of the quantized block types the GGUFs people run hold most (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q4_K, Q6_K) times an f32 input, in AVX2 with FMA and F16C, as ggml's own x86 paths unpack them:
//! a block's quants become 32 signed bytes in one register (nibbles masked and shifted, high
//! bits joined), widened eight at a time to f32 and multiplied by the inputs; each sub-block's
//! sum is scaled by its scale, and an offset (a min) meets the inputs' sum over the sub-block.
//! The inputs stay f32 (ggml rounds them to 8 bits first). Other types, and CPUs without these
//! instructions, take the generic path over the block layouts.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use tensor_surgeon_core::gguf::quant::scale_min_k4;
use tensor_surgeon_core::gguf::GgmlType;

/// Whether the CPU has AVX2, FMA and F16C.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// `row · x` for a row of blocks of `ty`; `sums` holds the inputs' sums over each 32 (for the
/// types with mins). `None` for types without a path here.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]); `row` must be whole blocks and `x`
/// as long as the values they hold.
#[inline(always)]
pub unsafe fn dot(ty: GgmlType, row: &[u8], x: &[f32], sums: &[f32]) -> Option<f32> {
    let blocks = row.len() / ty.block_bytes();
    assert!(
        x.len() >= blocks * ty.block_elements(),
        "inputs shorter than the row"
    );
    Some(match ty {
        GgmlType::Q8_0 => q8_0(row, x),
        GgmlType::Q4_0 => q4_0(row, x),
        GgmlType::Q4_1 => q4_1(row, x, sums),
        GgmlType::Q5_0 => q5_0(row, x),
        GgmlType::Q4_K => q4_k(row, x, sums),
        GgmlType::Q6_K => q6_k(row, x),
        _ => return None,
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16(b: &[u8], at: usize) -> f32 {
    let bits = i32::from(u16::from_le_bytes([b[at], b[at + 1]]));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

/// Sixteen signed codes times `x[..16]`, added to `acc`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn fma16(codes: __m128i, x: *const f32, acc: __m256) -> __m256 {
    let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
    let acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(x), acc);
    let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(codes)));
    _mm256_fmadd_ps(b, _mm256_loadu_ps(x.add(8)), acc)
}

/// Thirty-two signed codes times `x[..32]`, in eight lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot32(codes: __m256i, x: *const f32) -> __m256 {
    let acc = fma16(_mm256_castsi256_si128(codes), x, _mm256_setzero_ps());
    fma16(_mm256_extracti128_si256::<1>(codes), x.add(16), acc)
}

/// Sixteen bytes' low nibbles (the first 16 codes) and high nibbles (the next 16).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(q: *const u8) -> __m256i {
    let q = _mm_loadu_si128(q.cast());
    let mask = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
    _mm256_set_m128i(hi, lo)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(row: &[u8], x: &[f32]) -> f32 {
    let mut total = _mm256_setzero_ps();
    for (i, b) in row.chunks_exact(34).enumerate() {
        let codes = _mm256_loadu_si256(b.as_ptr().add(2).cast());
        let s = dot32(codes, x.as_ptr().add(i * 32));
        total = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0)), s, total);
    }
    hsum(total)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0(row: &[u8], x: &[f32]) -> f32 {
    let mut total = _mm256_setzero_ps();
    let eight = _mm256_set1_epi8(8);
    for (i, b) in row.chunks_exact(18).enumerate() {
        let codes = _mm256_sub_epi8(nibbles(b.as_ptr().add(2)), eight);
        let s = dot32(codes, x.as_ptr().add(i * 32));
        total = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0)), s, total);
    }
    hsum(total)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let mut total = _mm256_setzero_ps();
    let mut offset = 0f32;
    for (i, b) in row.chunks_exact(20).enumerate() {
        let s = dot32(nibbles(b.as_ptr().add(4)), x.as_ptr().add(i * 32));
        total = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0)), s, total);
        offset += f16(b, 2) * sums[i];
    }
    hsum(total) + offset
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0(row: &[u8], x: &[f32]) -> f32 {
    let mut total = _mm256_setzero_ps();
    // Byte j of a register gets bit j of `qh`: its byte (j / 8) spread, then its own bit.
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let f0 = _mm256_set1_epi8(0xF0_u8 as i8);
    for (i, b) in row.chunks_exact(22).enumerate() {
        let qh = i32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
        // (nibble | h·16) − 16: the nibble as is where the bit is set, else nibble − 16
        // (0xF0 joined: the same byte read as signed).
        let codes = _mm256_or_si256(nibbles(b.as_ptr().add(6)), _mm256_andnot_si256(set, f0));
        let s = dot32(codes, x.as_ptr().add(i * 32));
        total = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0)), s, total);
    }
    hsum(total)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let mut total = _mm256_setzero_ps();
    let mut offset = 0f32;
    let mask = _mm256_set1_epi8(0x0F);
    for (i, b) in row.chunks_exact(144).enumerate() {
        let (d, min) = (f16(b, 0), f16(b, 2));
        let x = x.as_ptr().add(i * 256);
        // Chunk c of 32 bytes: sub-block 2c in the low nibbles, 2c + 1 in the high ones.
        for c in 0..4 {
            let q = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * c).cast());
            let lo = _mm256_and_si256(q, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
            for (j, codes) in [(2 * c, lo), (2 * c + 1, hi)] {
                let (sc, m) = scale_min_k4(j, &b[4..16]);
                let s = dot32(codes, x.add(32 * j));
                total = _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(sc)), s, total);
                offset -= min * f32::from(m) * sums[i * 8 + j];
            }
        }
    }
    hsum(total) + offset
}

/// Two bits of each byte (the lowest), moved to bits 4 and 5: Q6_K's high bits.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn high(bits: __m256i, two: __m256i) -> __m256i {
    _mm256_slli_epi16::<4>(_mm256_and_si256(bits, two))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k(row: &[u8], x: &[f32]) -> f32 {
    let mut total = _mm256_setzero_ps();
    let (low, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
    let bias = _mm256_set1_epi8(32);
    for (i, b) in row.chunks_exact(210).enumerate() {
        let d = f16(b, 208);
        let sc = &b[192..208];
        for half in 0..2 {
            let ql = b.as_ptr().add(64 * half);
            let (la, lb) = (
                _mm256_loadu_si256(ql.cast()),
                _mm256_loadu_si256(ql.add(32).cast()),
            );
            let h = _mm256_loadu_si256(b.as_ptr().add(128 + 32 * half).cast());
            // Four quarters of 32 codes: a nibble of `ql` and two bits of `qh` each, less 32.
            let quarters = [
                _mm256_or_si256(_mm256_and_si256(la, low), high(h, two)),
                _mm256_or_si256(
                    _mm256_and_si256(lb, low),
                    high(_mm256_srli_epi16::<2>(h), two),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(la), low),
                    high(_mm256_srli_epi16::<4>(h), two),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(lb), low),
                    high(_mm256_srli_epi16::<6>(h), two),
                ),
            ];
            let x = x.as_ptr().add(i * 256 + 128 * half);
            for (k, q) in quarters.into_iter().enumerate() {
                let q = _mm256_sub_epi8(q, bias);
                // Sub-blocks of sixteen, each with its own scale.
                let s = 8 * half + 2 * k;
                let a = fma16(
                    _mm256_castsi256_si128(q),
                    x.add(32 * k),
                    _mm256_setzero_ps(),
                );
                let c = _mm256_extracti128_si256::<1>(q);
                let b2 = fma16(c, x.add(32 * k + 16), _mm256_setzero_ps());
                let da = d * f32::from(sc[s] as i8);
                let db = d * f32::from(sc[s + 1] as i8);
                total = _mm256_fmadd_ps(_mm256_set1_ps(da), a, total);
                total = _mm256_fmadd_ps(_mm256_set1_ps(db), b2, total);
            }
        }
    }
    hsum(total)
}
