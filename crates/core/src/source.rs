//! Random access to a tensor's bytes ([`ByteSource`]: the mmap, or the mmap seen through the
//! edit overlay) and copying a selection's elements out of it.

use crate::dtype::{self, Dtype};
use crate::packed::{locate, unpack};
use crate::slice::Selection;
use std::ops::Range;

/// Random access to a tensor's bytes.
pub trait ByteSource {
    /// Fills `out` with the bytes at `offset` (relative to the tensor's data).
    fn read(&self, offset: u64, out: &mut [u8]);

    /// The bytes at `offset` without a copy, when they are stored as they read (no edit
    /// touches them); `None` means: use `read`.
    fn borrow_bytes(&self, _offset: u64, _len: usize) -> Option<&[u8]> {
        None
    }
}

impl<T: ByteSource + ?Sized> ByteSource for &T {
    fn read(&self, offset: u64, out: &mut [u8]) {
        (**self).read(offset, out)
    }

    fn borrow_bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).borrow_bytes(offset, len)
    }
}

impl<T: ByteSource + ?Sized> ByteSource for Box<T> {
    fn read(&self, offset: u64, out: &mut [u8]) {
        (**self).read(offset, out)
    }

    fn borrow_bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).borrow_bytes(offset, len)
    }
}

impl ByteSource for Vec<u8> {
    fn read(&self, offset: u64, out: &mut [u8]) {
        self.as_slice().read(offset, out)
    }

    fn borrow_bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.as_slice().borrow_bytes(offset, len)
    }
}

impl<const N: usize> ByteSource for [u8; N] {
    fn read(&self, offset: u64, out: &mut [u8]) {
        self.as_slice().read(offset, out)
    }

    fn borrow_bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.as_slice().borrow_bytes(offset, len)
    }
}

impl ByteSource for [u8] {
    fn read(&self, offset: u64, out: &mut [u8]) {
        let start = offset as usize;
        out.copy_from_slice(&self[start..start + out.len()]);
    }

    fn borrow_bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        self.get(offset as usize..offset as usize + len)
    }
}

/// How [`extract`] reads a selection: whole rows (the innermost output axis is the tensor's
/// last dim at unit step), else element by element.
fn contiguous_rows(dtype: Dtype, shape: &[u64], selection: &Selection) -> Option<usize> {
    let last = shape.len().checked_sub(1)?;
    let whole_rows = !dtype::is_packed(dtype)
        && selection.order.last() == Some(&last)
        && selection.axes[last].step == 1;
    whole_rows.then(|| selection.axes[last].count as usize)
}

/// The byte ranges (within the tensor's data) that [`extract`] reads for `selection`, in
/// reading order: one per row, or one per element.
pub fn byte_ranges(dtype: Dtype, shape: &[u64], selection: &Selection) -> Vec<Range<u64>> {
    let width = dtype::element_bytes(dtype) as u64;
    if selection.elements() == 0 {
        return Vec::new();
    }
    match contiguous_rows(dtype, shape, selection) {
        Some(row) => selection
            .row_starts(shape)
            .map(|first| first * width..(first + row as u64) * width)
            .collect(),
        None => selection
            .element_indices(shape)
            .map(|flat| {
                let loc = locate(dtype, flat);
                loc.offset..loc.offset + loc.len as u64
            })
            .collect(),
    }
}

/// The one byte range (within the tensor's data) that holds every element of `selection`:
/// from its first element to its last.
pub fn byte_span(dtype: Dtype, shape: &[u64], selection: &Selection) -> Range<u64> {
    if selection.elements() == 0 {
        return 0..0;
    }
    let mut stride = 1u64;
    let (mut first, mut last) = (0u64, 0u64);
    for (dim, axis) in shape.iter().zip(&selection.axes).rev() {
        let (a, b) = (axis.index(0), axis.index(axis.count - 1));
        first += a.min(b) * stride;
        last += a.max(b) * stride;
        stride *= dim;
    }
    let (a, b) = (locate(dtype, first), locate(dtype, last));
    a.offset..b.offset + b.len as u64
}

/// Copies the selected elements, C-order in output order, `dtype::element_bytes` each.
pub fn extract(
    dtype: Dtype,
    shape: &[u64],
    selection: &Selection,
    source: &(impl ByteSource + ?Sized),
) -> Vec<u8> {
    let width = dtype::element_bytes(dtype);
    let total = selection.elements() as usize;
    let mut out = vec![0u8; total * width];
    if total == 0 {
        return out;
    }
    if let Some(row) = contiguous_rows(dtype, shape, selection) {
        // One copy per row.
        let row_bytes = row * width;
        for (r, first) in selection.row_starts(shape).enumerate() {
            source.read(
                first * width as u64,
                &mut out[r * row_bytes..(r + 1) * row_bytes],
            );
        }
        return out;
    }
    let mut buf = [0u8; 8];
    for (n, flat) in selection.element_indices(shape).enumerate() {
        let loc = locate(dtype, flat);
        let cell = &mut buf[..loc.len];
        source.read(loc.offset, cell);
        if dtype::is_packed(dtype) {
            out[n] = unpack(dtype, loc, cell);
        } else {
            out[n * width..(n + 1) * width].copy_from_slice(cell);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packed::{locate, repack};
    use crate::slice::SliceSpec;

    fn iota(n: usize) -> Vec<u8> {
        (0..n).map(|i| i as u8).collect()
    }

    #[test]
    fn extract_u8_matches_manual_indexing() {
        // shape [3,4,5], value = flat index.
        let data = iota(60);
        let shape = [3, 4, 5];
        let sel = SliceSpec::parse("1,1:4:2,::-2")
            .unwrap()
            .resolve(&shape)
            .unwrap();
        let got = extract(Dtype::U8, &shape, &sel, data.as_slice());
        let mut want = Vec::new();
        for j in [1u64, 3] {
            for k in [4u64, 2, 0] {
                want.push((20 + j * 5 + k) as u8);
            }
        }
        assert_eq!(got, want);
        assert_eq!(sel.out_shape(), [2, 3]);
        for (n, flat) in sel.element_indices(&shape).enumerate() {
            assert_eq!(sel.output_position(&shape, flat), Some(n as u64));
        }
        assert_eq!(sel.output_position(&shape, 0), None);
    }

    #[test]
    fn extract_rows_and_scalars() {
        let data: Vec<u8> = (0u16..12).flat_map(|v| v.to_le_bytes()).collect();
        let sel = SliceSpec::parse("1:3").unwrap().resolve(&[3, 4]).unwrap();
        let got = extract(Dtype::I16, &[3, 4], &sel, data.as_slice());
        let want: Vec<u8> = (4u16..12).flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(got, want);
        let scalar = SliceSpec::default().resolve(&[]).unwrap();
        assert_eq!(
            extract(Dtype::I16, &[], &scalar, data.as_slice()),
            vec![0, 0]
        );
        assert_eq!(scalar.out_shape(), Vec::<u64>::new());
    }

    #[test]
    fn packed_f4_and_f6() {
        // F4: 0x21 holds element 0 = 1 (low nibble), element 1 = 2.
        let sel = SliceSpec::default().resolve(&[4]).unwrap();
        assert_eq!(
            extract(Dtype::F4, &[4], &sel, [0x21u8, 0x43].as_slice()),
            vec![1, 2, 3, 4]
        );
        // F6: four codes 1, 2, 3, 4 in a little-endian bit stream.
        let stream: u32 = 1 | 2 << 6 | 3 << 12 | 4 << 18;
        let bytes = &stream.to_le_bytes()[..3];
        assert_eq!(extract(Dtype::F6_E2M3, &[4], &sel, bytes), vec![1, 2, 3, 4]);
        let mut b = bytes.to_vec();
        let loc = locate(Dtype::F6_E2M3, 1);
        repack(
            Dtype::F6_E2M3,
            loc,
            &mut b[loc.offset as usize..loc.offset as usize + loc.len],
            63,
        );
        assert_eq!(
            extract(Dtype::F6_E2M3, &[4], &sel, b.as_slice()),
            vec![1, 63, 3, 4]
        );
    }

    /// Holds only some byte ranges of a buffer; reading anything else fails the test.
    struct Only<'a>(&'a [u8], Vec<Range<u64>>);

    impl ByteSource for Only<'_> {
        fn read(&self, offset: u64, out: &mut [u8]) {
            let end = offset + out.len() as u64;
            assert!(
                self.1.iter().any(|r| r.start <= offset && end <= r.end),
                "read {offset}..{end} outside the ranges"
            );
            self.0.read(offset, out)
        }
    }

    #[test]
    fn byte_ranges_and_span_cover_exactly_what_extract_reads() {
        let shape = [6u64, 7, 9];
        let bytes = iota(6 * 7 * 9 * 2);
        for dtype in [Dtype::BF16, Dtype::F4] {
            for spec in [
                "1:4,2,3:8",
                "::2,1:6,:",
                "5,::-1,4",
                "2:3,3:4,7:8",
                "0:0,:,:",
            ] {
                let sel = SliceSpec::parse(spec).unwrap().resolve(&shape).unwrap();
                let ranges = byte_ranges(dtype, &shape, &sel);
                let want = extract(dtype, &shape, &sel, &bytes[..]);
                let got = extract(dtype, &shape, &sel, &Only(&bytes, ranges));
                assert_eq!(got, want, "{spec}");
                let span = byte_span(dtype, &shape, &sel);
                let got = extract(dtype, &shape, &sel, &Only(&bytes, vec![span.clone()]));
                assert_eq!(got, want, "{spec}");
                if let Some(first) = sel.element_indices(&shape).min() {
                    assert_eq!(span.start, locate(dtype, first).offset, "{spec}");
                }
            }
        }
        // Whole rows are one range each.
        let sel = SliceSpec::parse("1:3,0:2,:")
            .unwrap()
            .resolve(&shape)
            .unwrap();
        assert_eq!(
            byte_ranges(Dtype::BF16, &shape, &sel),
            vec![126..144, 144..162, 252..270, 270..288]
        );
    }
}
