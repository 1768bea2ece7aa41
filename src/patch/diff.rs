//! The difference between two tensors of one dtype and shape: the changed byte runs
//! (element-aligned, coalesced) and statistics of the change, computed part by part so a
//! caller can split a tensor into chunks and merge the results.

use crate::dtype::{self, Dtype};
use crate::slice;

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
    stats.base_sq = a.iter().map(|x| x * x).sum();
    if base == other {
        return (runs, stats);
    }
    dtype::decode_f64_into(value_dtype, other, b);
    let width = dtype::element_bytes(dtype) as u64;
    // The open run, as element indices [start, end).
    let mut open: Option<(u64, u64)> = None;
    let mut visit = |i: usize, changed: bool| {
        if !changed {
            return;
        }
        let (d2, magnitude) = if parts == 1 {
            let d = b[i] - a[i];
            (d * d, d.abs())
        } else {
            let (re, im) = (b[2 * i] - a[2 * i], b[2 * i + 1] - a[2 * i + 1]);
            (re * re + im * im, re.hypot(im))
        };
        stats.changed += 1;
        stats.delta_sq += d2;
        stats.max_abs = stats.max_abs.max(magnitude);
        let i = i as u64;
        match &mut open {
            Some((_, end)) if *end == i => *end = i + 1,
            _ => {
                if let Some((s, e)) = open.replace((i, i + 1)) {
                    runs.push((at + s * width, (e - s) * width));
                }
            }
        }
    };
    match width {
        1 => each_element::<1>(base, other, &mut visit),
        2 => each_element::<2>(base, other, &mut visit),
        4 => each_element::<4>(base, other, &mut visit),
        _ => each_element::<8>(base, other, &mut visit),
    }
    if let Some((s, e)) = open {
        runs.push((at + s * width, (e - s) * width));
    }
    (runs, stats)
}

/// Calls `visit(index, bytes differ)` for every `W`-byte element.
fn each_element<const W: usize>(a: &[u8], b: &[u8], visit: &mut impl FnMut(usize, bool)) {
    for (i, (x, y)) in a.chunks_exact(W).zip(b.chunks_exact(W)).enumerate() {
        let (x, y): ([u8; W], [u8; W]) = (
            x.try_into().unwrap_or([0; W]),
            y.try_into().unwrap_or([0; W]),
        );
        visit(i, x != y);
    }
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
        let loc = slice::locate(dtype, flat);
        let (s, e) = (loc.offset as usize, loc.offset as usize + loc.len);
        let (ca, cb) = (
            slice::unpack(dtype, loc, &base[s..e.min(base.len())]),
            slice::unpack(dtype, loc, &other[s..e.min(other.len())]),
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
