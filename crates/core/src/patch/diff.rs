//! The difference between two tensors of one dtype and shape: the changed byte runs
//! (element-aligned, coalesced) and statistics of the change, computed part by part so a
//! caller can split a tensor into chunks and merge the results.

use crate::dtype::{self, Dtype};

/// Statistics of `other - base` over some elements.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaStats {
    /// Elements compared.
    pub elements: u64,
    /// Elements whose stored bytes differ.
    pub changed: u64,
    /// Sum of squared differences (complex: squared modulus).
    pub delta_sq: f64,
    /// Sum of squared base values.
    pub base_sq: f64,
    /// Largest |other - base| (complex: modulus of the difference).
    pub max_abs: f64,
}

impl DeltaStats {
    /// Adds the statistics of more elements.
    pub fn merge(&mut self, more: &DeltaStats) {
        self.elements += more.elements;
        self.changed += more.changed;
        self.delta_sq += more.delta_sq;
        self.base_sq += more.base_sq;
        self.max_abs = self.max_abs.max(more.max_abs);
    }

    /// `||other - base|| / ||base||`: 0 when nothing changed, infinite for a zero base.
    pub fn rel_l2(&self) -> f64 {
        if self.delta_sq == 0.0 {
            0.0
        } else {
            (self.delta_sq / self.base_sq).sqrt()
        }
    }
}

/// Appends runs, merging the first with the last one when they touch.
pub fn append_runs(into: &mut Vec<(u64, u64)>, more: &[(u64, u64)]) {
    for &(offset, len) in more {
        match into.last_mut() {
            Some(last) if last.0 + last.1 == offset => last.1 += len,
            _ => into.push((offset, len)),
        }
    }
}

/// Reusable decode buffers for [`diff_bytes`].
#[derive(Default)]
pub struct Scratch {
    base: Vec<f64>,
    other: Vec<f64>,
    changed: Vec<bool>,
}

/// Compares whole elements (or whole element groups of the packed dtypes) of a `dtype` tensor:
/// `base` and `other` are the same byte range, starting at byte `at` of the tensor's data.
/// Returns the changed runs (offsets within the tensor) and the statistics.
pub fn diff_bytes(
    dtype: Dtype,
    base: &[u8],
    other: &[u8],
    at: u64,
    scratch: &mut Scratch,
) -> (Vec<(u64, u64)>, DeltaStats) {
    let elements = (base.len() as u64 * 8) / dtype::bits(dtype) as u64;
    let mut stats = DeltaStats {
        elements,
        ..DeltaStats::default()
    };
    let mut runs = Vec::new();
    if dtype::is_packed(dtype) {
        diff_packed(dtype, base, other, at, &mut runs, &mut stats);
        return (runs, stats);
    }
    // Complex numbers are pairs of F32 components.
    let (value_dtype, parts) = if dtype == Dtype::C64 {
        (Dtype::F32, 2)
    } else {
        (dtype, 1)
    };
    let (a, b) = (&mut scratch.base, &mut scratch.other);
    dtype::decode_f64_into(value_dtype, base, a);
    stats.base_sq = sum_squares(a);
    if base == other {
        return (runs, stats);
    }
    dtype::decode_f64_into(value_dtype, other, b);
    let width = dtype::element_bytes(dtype) as u64;
    let mask = &mut scratch.changed;
    match width {
        1 => changed_mask::<1>(base, other, mask),
        2 => changed_mask::<2>(base, other, mask),
        4 => changed_mask::<4>(base, other, mask),
        _ => changed_mask::<8>(base, other, mask),
    }
    // Runs of changed elements, skipping over equal stretches a word at a time.
    let mut i = 0;
    let n = mask.len();
    while i < n {
        if !mask[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && mask[i] {
            i += 1;
        }
        runs.push((at + start as u64 * width, (i - start) as u64 * width));
    }
    // Statistics over the changed elements, in lanes the compiler can vectorize.
    const LANES: usize = 4;
    let (mut sq, mut mx, mut count) = ([0f64; LANES], [0f64; LANES], [0u64; LANES]);
    if parts == 1 {
        let (mc, ac, bc) = (
            mask.chunks_exact(LANES),
            a.chunks_exact(LANES),
            b.chunks_exact(LANES),
        );
        let tail = mc.remainder().len();
        for ((m, x), y) in mc.zip(ac).zip(bc) {
            for l in 0..LANES {
                let d = if m[l] { y[l] - x[l] } else { 0.0 };
                sq[l] += d * d;
                mx[l] = mx[l].max(d.abs());
                count[l] += u64::from(m[l]);
            }
        }
        for k in n - tail..n {
            let d = if mask[k] { b[k] - a[k] } else { 0.0 };
            sq[0] += d * d;
            mx[0] = mx[0].max(d.abs());
            count[0] += u64::from(mask[k]);
        }
    } else {
        for k in (0..n).filter(|&k| mask[k]) {
            let (re, im) = (b[2 * k] - a[2 * k], b[2 * k + 1] - a[2 * k + 1]);
            sq[0] += re * re + im * im;
            mx[0] = mx[0].max(re.hypot(im));
            count[0] += 1;
        }
    }
    stats.changed = count.iter().sum();
    stats.delta_sq = sq.iter().sum();
    stats.max_abs = mx.iter().fold(0.0, |m, &v| m.max(v));
    (runs, stats)
}

/// Sum of squares in four lanes (vectorizable; the order of additions differs from a plain
/// loop only in rounding).
fn sum_squares(v: &[f64]) -> f64 {
    let mut lanes = [0f64; 4];
    let chunks = v.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        for l in 0..4 {
            lanes[l] += c[l] * c[l];
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `mask[i]`: whether the `W`-byte element `i` differs.
fn changed_mask<const W: usize>(a: &[u8], b: &[u8], mask: &mut Vec<bool>) {
    mask.clear();
    mask.extend(
        a.chunks_exact(W)
            .zip(b.chunks_exact(W))
            .map(|(x, y)| x != y),
    );
}

/// F4 / F6: codes compared one by one; runs cover whole bytes.
fn diff_packed(
    dtype: Dtype,
    base: &[u8],
    other: &[u8],
    at: u64,
    runs: &mut Vec<(u64, u64)>,
    stats: &mut DeltaStats,
) {
    for flat in 0..stats.elements {
        let loc = crate::packed::locate(dtype, flat);
        let (s, e) = (loc.offset as usize, loc.offset as usize + loc.len);
        let (ca, cb) = (
            crate::packed::unpack(dtype, loc, &base[s..e.min(base.len())]),
            crate::packed::unpack(dtype, loc, &other[s..e.min(other.len())]),
        );
        let va = dtype::decode_f64(dtype, &[ca]);
        stats.base_sq += va * va;
        if ca != cb {
            let d = dtype::decode_f64(dtype, &[cb]) - va;
            stats.changed += 1;
            stats.delta_sq += d * d;
            stats.max_abs = stats.max_abs.max(d.abs());
        }
    }
    for (i, (x, y)) in base.iter().zip(other).enumerate() {
        if x != y {
            append_runs(runs, &[(at + i as u64, 1)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn runs_and_statistics_of_f32() {
        let a = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let b = f32s(&[1.0, 2.5, 1.0, 4.0, -5.0]);
        let (runs, s) = diff_bytes(Dtype::F32, &a, &b, 100, &mut Scratch::default());
        assert_eq!(
            runs,
            vec![(104, 8), (116, 4)],
            "coalesced, element-aligned, offset by `at`"
        );
        assert_eq!((s.elements, s.changed), (5, 3));
        assert_eq!(s.delta_sq, 0.25 + 4.0 + 100.0);
        assert_eq!(s.base_sq, 55.0);
        assert_eq!(s.max_abs, 10.0);
        assert!((s.rel_l2() - (104.25f64 / 55.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn negative_zero_is_a_change_of_the_bytes() {
        let (runs, s) = diff_bytes(
            Dtype::F32,
            &f32s(&[0.0]),
            &f32s(&[-0.0]),
            0,
            &mut Scratch::default(),
        );
        assert_eq!(
            (runs.len(), s.changed, s.max_abs, s.rel_l2()),
            (1, 1, 0.0, 0.0)
        );
    }

    #[test]
    fn equal_bytes_change_nothing_but_count_the_base() {
        let a = f32s(&[3.0, 4.0]);
        let (runs, s) = diff_bytes(Dtype::F32, &a, &a, 0, &mut Scratch::default());
        assert!(runs.is_empty());
        assert_eq!((s.changed, s.base_sq, s.rel_l2()), (0, 25.0, 0.0));
    }

    #[test]
    fn complex_uses_the_modulus() {
        let a = f32s(&[1.0, 1.0, 0.0, 0.0]);
        let b = f32s(&[4.0, 5.0, 0.0, 0.0]);
        let (runs, s) = diff_bytes(Dtype::C64, &a, &b, 0, &mut Scratch::default());
        assert_eq!(runs, vec![(0, 8)]);
        assert_eq!(
            (s.elements, s.changed, s.max_abs, s.delta_sq),
            (2, 1, 5.0, 25.0)
        );
    }

    #[test]
    fn packed_f4_counts_codes_and_patches_bytes() {
        // Two F4 codes per byte, low nibble first: element 1 changes (code 2 -> 3: 1.0 -> 1.5).
        let (runs, s) = diff_bytes(
            Dtype::F4,
            &[0x20, 0x00],
            &[0x30, 0x00],
            8,
            &mut Scratch::default(),
        );
        assert_eq!(runs, vec![(8, 1)]);
        assert_eq!((s.elements, s.changed, s.max_abs), (4, 1, 0.5));
    }

    #[test]
    fn merged_parts_equal_the_whole() {
        let a = f32s(&[1.0, 2.0, 3.0, 4.0]);
        let b = f32s(&[1.0, 9.0, 8.0, 4.0]);
        let (whole_runs, whole) = diff_bytes(Dtype::F32, &a, &b, 0, &mut Scratch::default());
        let (mut runs, mut stats) =
            diff_bytes(Dtype::F32, &a[..8], &b[..8], 0, &mut Scratch::default());
        let (r2, s2) = diff_bytes(Dtype::F32, &a[8..], &b[8..], 8, &mut Scratch::default());
        append_runs(&mut runs, &r2);
        stats.merge(&s2);
        assert_eq!((runs, stats), (whole_runs, whole));
    }
}
