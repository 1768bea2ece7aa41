//! Each element of the block types that store a scaled integer: its code (`scale × quant −
//! min`) read from a block, and a quant written back into one without touching the rest.

use super::{f16, k_scales, q3_k_scales, GgmlType};

/// How one element of a block is stored: its quant (the integer code), the scale and min of
/// its (sub-)block, and its value (`scale · quant − min`, as the decoder computes it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElementCode {
    pub quant: i32,
    pub scale: f32,
    /// Subtracted after scaling (Q4_1 and Q5_1 add theirs: it is given negated).
    pub min: f32,
    /// The sub-block the scale belongs to (K-quants), else 0.
    pub sub_block: usize,
    pub value: f32,
}

/// Element `i` of one block of `ty`: its code, for the types whose elements are a scaled
/// integer (`None` for others: their value still comes from [`to_f32`]).
pub fn element_code(ty: GgmlType, b: &[u8], i: usize) -> Option<ElementCode> {
    use GgmlType::*;
    if b.len() != ty.block_bytes() || i >= ty.block_elements() || !ty.is_quantized() {
        return None;
    }
    let nibble = |qs: &[u8], i: usize| -> u8 {
        if i < 16 {
            qs[i] & 0x0F
        } else {
            qs[i - 16] >> 4
        }
    };
    let code = |quant: i32, scale: f32, min: f32, sub_block: usize| ElementCode {
        quant,
        scale,
        min,
        sub_block,
        value: quant as f32 * scale - min,
    };
    Some(match ty {
        Q4_0 => code(i32::from(nibble(&b[2..18], i)) - 8, f16(b, 0), 0.0, 0),
        Q4_1 => code(i32::from(nibble(&b[4..20], i)), f16(b, 0), -f16(b, 2), 0),
        Q5_0 | Q5_1 => {
            let (at, offset) = if ty == Q5_0 { (2, 16) } else { (4, 0) };
            let qh = u32::from_le_bytes(b[at..at + 4].try_into().ok()?);
            let high = ((qh >> i) & 1) << 4;
            let q = (u32::from(nibble(&b[at + 4..at + 20], i)) | high) as i32 - offset;
            let min = if ty == Q5_1 { -f16(b, 2) } else { 0.0 };
            code(q, f16(b, 0), min, 0)
        }
        Q8_0 => code(i32::from(b[2 + i] as i8), f16(b, 0), 0.0, 0),
        Q2_K => {
            let (half, w) = (i / 128, i % 128);
            let (shift, l) = (w / 32, w % 32);
            let sub = i / 16;
            let sc = b[sub];
            let q = (b[16 + half * 32 + l] >> (2 * shift)) & 3;
            let (d, dmin) = (f16(b, 80), f16(b, 82));
            code(
                i32::from(q),
                d * f32::from(sc & 0x0F),
                dmin * f32::from(sc >> 4),
                sub,
            )
        }
        Q3_K => {
            let (half, w) = (i / 128, i % 128);
            let (shift, l) = (w / 32, w % 32);
            let sub = i / 16;
            let low = ((b[32 + half * 32 + l] >> (2 * shift)) & 3) as i32;
            let high = b[l] & (1 << (half * 4 + shift)) != 0;
            let scale = f16(b, 108) * f32::from(q3_k_scales(&b[96..108])[sub]);
            code(low - if high { 0 } else { 4 }, scale, 0.0, sub)
        }
        Q4_K | Q5_K => {
            let (chunk, w) = (i / 64, i % 64);
            let (d1m1, d2m2) = {
                let [a, b2] = k_scales(f16(b, 0), f16(b, 2), &b[4..16], chunk);
                (a, b2)
            };
            let (l, upper) = (w % 32, w >= 32);
            let qs = if ty == Q4_K { &b[16..144] } else { &b[48..176] };
            let byte = qs[chunk * 32 + l];
            let mut q = if upper { byte >> 4 } else { byte & 0x0F };
            if ty == Q5_K {
                let bit = (if upper { 2u8 } else { 1u8 }) << (2 * chunk);
                if b[16 + l] & bit != 0 {
                    q += 16;
                }
            }
            let (scale, min) = if upper { d2m2 } else { d1m1 };
            code(i32::from(q), scale, min, 2 * chunk + usize::from(upper))
        }
        Q6_K => {
            let (half, w) = (i / 128, i % 128);
            let (group, l) = (w / 32, w % 32);
            let ql = &b[half * 64..half * 64 + 64];
            let qh = b[128 + half * 32 + l];
            let low = match group {
                0 => ql[l] & 0x0F,
                1 => ql[l + 32] & 0x0F,
                2 => ql[l] >> 4,
                _ => ql[l + 32] >> 4,
            };
            let q = i32::from(low | (((qh >> (2 * group)) & 3) << 4)) - 32;
            let sub = half * 8 + l / 16 + 2 * group;
            // The decoder scales by d · sc first, then by the quant.
            code(q, f16(b, 208) * f32::from(b[192 + sub] as i8), 0.0, sub)
        }
        _ => return None,
    })
}

/// The types whose elements are a scaled integer ([`element_code`], [`set_quant`]).
pub const CODED_TYPES: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The quants an element of `ty` can take (the types [`element_code`] reads).
pub fn quant_range(ty: GgmlType) -> Option<(i32, i32)> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => (-8, 7),
        Q4_1 | Q4_K => (0, 15),
        Q5_0 => (-16, 15),
        Q5_1 | Q5_K => (0, 31),
        Q8_0 => (-128, 127),
        Q2_K => (0, 3),
        Q3_K => (-4, 3),
        Q6_K => (-32, 31),
        _ => return None,
    })
}

/// Writes quant `q` for element `i` of one block of `ty`, leaving every other bit of the
/// block as it was (the inverse of [`element_code`]'s reading). `None`: a type it does not
/// read, or `q` out of [`quant_range`].
pub fn set_quant(ty: GgmlType, b: &mut [u8], i: usize, q: i32) -> Option<()> {
    use GgmlType::*;
    let (lo, hi) = quant_range(ty)?;
    if b.len() != ty.block_bytes() || i >= ty.block_elements() || q < lo || q > hi {
        return None;
    }
    let set_nibble = |qs: &mut [u8], i: usize, v: u8| {
        if i < 16 {
            qs[i] = (qs[i] & 0xF0) | (v & 0x0F);
        } else {
            qs[i - 16] = (qs[i - 16] & 0x0F) | ((v & 0x0F) << 4);
        }
    };
    let set_bit = |byte: &mut u8, bit: u8, on: bool| {
        if on {
            *byte |= bit;
        } else {
            *byte &= !bit;
        }
    };
    match ty {
        Q4_0 => set_nibble(&mut b[2..18], i, (q + 8) as u8),
        Q4_1 => set_nibble(&mut b[4..20], i, q as u8),
        Q5_0 | Q5_1 => {
            let (at, offset) = if ty == Q5_0 { (2, 16) } else { (4, 0) };
            let u = (q + offset) as u32;
            let mut qh = u32::from_le_bytes(b[at..at + 4].try_into().ok()?);
            qh = (qh & !(1 << i)) | (((u >> 4) & 1) << i);
            b[at..at + 4].copy_from_slice(&qh.to_le_bytes());
            set_nibble(&mut b[at + 4..at + 20], i, u as u8);
        }
        Q8_0 => b[2 + i] = q as i8 as u8,
        Q2_K => {
            let (half, w) = (i / 128, i % 128);
            let (shift, l) = (w / 32, w % 32);
            let byte = &mut b[16 + half * 32 + l];
            *byte = (*byte & !(3 << (2 * shift))) | ((q as u8) << (2 * shift));
        }
        Q3_K => {
            let (half, w) = (i / 128, i % 128);
            let (shift, l) = (w / 32, w % 32);
            let (high, low) = if q >= 0 { (true, q) } else { (false, q + 4) };
            let byte = &mut b[32 + half * 32 + l];
            *byte = (*byte & !(3 << (2 * shift))) | ((low as u8) << (2 * shift));
            set_bit(&mut b[l], 1 << (half * 4 + shift), high);
        }
        Q4_K | Q5_K => {
            let (chunk, w) = (i / 64, i % 64);
            let (l, upper) = (w % 32, w >= 32);
            let at = if ty == Q4_K { 16 } else { 48 } + chunk * 32 + l;
            let u = q as u8;
            b[at] = if upper {
                (b[at] & 0x0F) | ((u & 0x0F) << 4)
            } else {
                (b[at] & 0xF0) | (u & 0x0F)
            };
            if ty == Q5_K {
                let bit = (if upper { 2u8 } else { 1u8 }) << (2 * chunk);
                set_bit(&mut b[16 + l], bit, u & 16 != 0);
            }
        }
        Q6_K => {
            let (half, w) = (i / 128, i % 128);
            let (group, l) = (w / 32, w % 32);
            let u = (q + 32) as u8;
            let at = half * 64 + l + if group % 2 == 1 { 32 } else { 0 };
            b[at] = if group >= 2 {
                (b[at] & 0x0F) | ((u & 0x0F) << 4)
            } else {
                (b[at] & 0xF0) | (u & 0x0F)
            };
            let qh = &mut b[128 + half * 32 + l];
            *qh = (*qh & !(3 << (2 * group))) | (((u >> 4) & 3) << (2 * group));
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::quant::to_f32;

    #[test]
    fn every_elements_code_gives_back_its_decoded_value() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for ty in CODED_TYPES {
            for _ in 0..20 {
                let mut block: Vec<u8> = (0..ty.block_bytes()).map(|_| rng.random()).collect();
                // Scales as f16 values of ordinary size (random bits may be NaN or huge).
                for at in [0usize, 2, 80, 82, 108, 208] {
                    if at + 2 <= block.len() {
                        let v = half::f16::from_f32(rng.random_range(-0.1f32..0.1));
                        block[at..at + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
                let values = to_f32(ty, &block).unwrap();
                for (i, &want) in values.iter().enumerate() {
                    let c = element_code(ty, &block, i).unwrap();
                    assert_eq!(c.value, want, "{ty} element {i}: {c:?}");
                }
                // Writing a quant changes that element's code to it and nothing else.
                let (lo, hi) = quant_range(ty).unwrap();
                for i in 0..ty.block_elements() {
                    let q = rng.random_range(lo..=hi);
                    let mut edited = block.clone();
                    set_quant(ty, &mut edited, i, q).unwrap();
                    assert_eq!(element_code(ty, &edited, i).unwrap().quant, q, "{ty} {i}");
                    for j in (0..ty.block_elements()).filter(|&j| j != i) {
                        let (a, b) = (element_code(ty, &block, j), element_code(ty, &edited, j));
                        assert_eq!(a, b, "{ty}: writing element {i} moved element {j}");
                    }
                    assert_eq!(set_quant(ty, &mut edited, i, hi + 1), None);
                }
            }
        }
    }
}
