//! The edit overlay: new bytes laid over a tensor's base bytes, which every read consults.
//!
//! Per tensor, a [`RangeMap`] of non-overlapping byte runs (adjacent writes merge). The
//! base data is never written; [`Patched`] is a [`ByteSource`] that reads the base and lays
//! the runs on top. Each tensor's runs are shared (`Arc`) and copied on write, so a reader
//! takes a snapshot of a tensor ([`Overlay::only`]) in O(1) under the session lock and reads
//! it after letting go; an edit made meanwhile copies the runs it changes, not the reader.

use crate::gguf::GgmlType;
use crate::header::TensorInfo;
use crate::source::ByteSource;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Non-overlapping byte runs keyed by their start offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeMap {
    runs: BTreeMap<u64, Vec<u8>>,
}

impl RangeMap {
    /// Writes `bytes` at `offset`, replacing what was there; touching runs merge into one.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = offset + bytes.len() as u64;
        // Fast path, for element-by-element edits: the write lands in or extends the run that
        // starts at or before it and touches no later run. Extending in place keeps a
        // whole-tensor edit linear instead of copying the growing run on every write.
        let before = self
            .runs
            .range(..=offset)
            .next_back()
            .map(|(s, r)| (*s, r.len() as u64));
        if let Some((s, len)) = before.filter(|(s, len)| s + len >= offset) {
            if self.runs.range(s + 1..=end).next().is_none() {
                if let Some(run) = self.runs.get_mut(&s) {
                    run.resize(len.max(end - s) as usize, 0);
                    run[(offset - s) as usize..(end - s) as usize].copy_from_slice(bytes);
                    return;
                }
            }
        }
        let touching: Vec<u64> = self
            .runs
            .range(..=end)
            .rev()
            .take_while(|(s, r)| **s + r.len() as u64 >= offset)
            .map(|(s, _)| *s)
            .collect();
        let mut start = offset;
        let mut stop = end;
        for s in &touching {
            start = start.min(*s);
            stop = stop.max(*s + self.runs[s].len() as u64);
        }
        let mut merged = vec![0u8; (stop - start) as usize];
        for s in touching {
            if let Some(run) = self.runs.remove(&s) {
                let at = (s - start) as usize;
                merged[at..at + run.len()].copy_from_slice(&run);
            }
        }
        let at = (offset - start) as usize;
        merged[at..at + bytes.len()].copy_from_slice(bytes);
        self.runs.insert(start, merged);
    }

    /// Lays the runs that intersect `[offset, offset + out.len())` onto `out`.
    pub fn lay_onto(&self, offset: u64, out: &mut [u8]) {
        let end = offset + out.len() as u64;
        // The run starting at or before `offset` may reach in; then every run starting inside.
        let first = self
            .runs
            .range(..=offset)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(offset);
        for (&s, run) in self.runs.range(first..end) {
            let run_end = s + run.len() as u64;
            let lo = s.max(offset);
            let hi = run_end.min(end);
            if lo < hi {
                out[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&run[(lo - s) as usize..(hi - s) as usize]);
            }
        }
    }

    /// Whether any run covers a byte of `[start, end)`.
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        let before = self
            .runs
            .range(..=start)
            .next_back()
            .is_some_and(|(s, r)| s + r.len() as u64 > start);
        before || self.runs.range(start..end).next().is_some()
    }

    /// The runs, in offset order.
    pub fn runs(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.runs.iter().map(|(s, r)| (*s, r.as_slice()))
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Total bytes held.
    pub fn byte_len(&self) -> u64 {
        self.runs.values().map(|r| r.len() as u64).sum()
    }
}

/// Per-tensor overlays of a whole model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    tensors: BTreeMap<String, Arc<RangeMap>>,
}

impl Overlay {
    /// Writes new bytes for `tensor` at `offset` (relative to the tensor's data).
    pub fn write(&mut self, tensor: &str, offset: u64, bytes: &[u8]) {
        Arc::make_mut(self.tensors.entry(tensor.to_string()).or_default()).write(offset, bytes);
    }

    /// Forgets every run of `tensor`: it reads as its base again.
    pub fn remove(&mut self, tensor: &str) {
        self.tensors.remove(tensor);
    }

    /// The runs of one tensor.
    pub fn tensor(&self, tensor: &str) -> Option<&RangeMap> {
        self.tensors
            .get(tensor)
            .map(|r| &**r)
            .filter(|r| !r.is_empty())
    }

    /// Every tensor with runs, by name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &RangeMap)> {
        self.tensors
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(n, r)| (n.as_str(), &**r))
    }

    /// A snapshot of one tensor's runs (to read it without holding a lock): O(1), the runs
    /// are shared until either side writes.
    pub fn only(&self, tensor: &str) -> Overlay {
        let mut o = Overlay::default();
        if let Some(r) = self.tensors.get(tensor).filter(|r| !r.is_empty()) {
            o.tensors.insert(tensor.to_string(), Arc::clone(r));
        }
        o
    }

    /// A tensor's values seen through the overlay: its base values (as the store reads
    /// them) with the runs laid on top. A tensor stored as blocks ([`TensorInfo::blocks`])
    /// has its runs in block bytes, whole blocks (the session writes them so); they are
    /// decoded here into the values they hold.
    pub fn view<'a, B: ByteSource + ?Sized>(
        &'a self,
        info: &TensorInfo,
        base: &'a B,
    ) -> Patched<'a, B> {
        Patched {
            base,
            runs: self.values(info),
        }
    }

    /// A tensor's stored bytes seen through the overlay (the patch functions' view: entries
    /// name stored bytes, blocks for a quantized tensor).
    pub fn view_stored<'a, B: ByteSource + ?Sized>(
        &'a self,
        tensor: &str,
        base: &'a B,
    ) -> Patched<'a, B> {
        Patched {
            base,
            runs: self.tensor(tensor).map(Cow::Borrowed),
        }
    }

    /// A tensor's runs in the bytes of its values (see [`Overlay::view`]).
    pub fn values(&self, info: &TensorInfo) -> Option<Cow<'_, RangeMap>> {
        let runs = self.tensor(&info.name)?;
        Some(match info.blocks {
            Some(ty) => Cow::Owned(decode_blocks(ty, runs)),
            None => Cow::Borrowed(runs),
        })
    }
}

/// The values (little-endian F32) that runs of whole blocks of `ty` hold, at their places
/// among the tensor's values: a block lies within one row, so block `b` holds elements
/// `b × n .. (b + 1) × n`. Bytes of a block not wholly in a run are not decoded (the
/// session never writes part of a block).
pub fn decode_blocks(ty: GgmlType, runs: &RangeMap) -> RangeMap {
    let (size, n) = (ty.block_bytes() as u64, ty.block_elements() as u64);
    let mut out = RangeMap::default();
    for (start, bytes) in runs.runs() {
        let first = start.div_ceil(size);
        let end = (start + bytes.len() as u64) / size;
        if first >= end {
            continue;
        }
        let from = (first * size - start) as usize;
        let to = (end * size - start) as usize;
        if let Ok(values) = crate::gguf::quant::to_f32_bytes(ty, &bytes[from..to]) {
            out.write(first * n * 4, &values);
        }
    }
    out
}

/// Base bytes with overlay runs laid on top.
pub struct Patched<'a, B: ?Sized = [u8]> {
    pub base: &'a B,
    pub runs: Option<Cow<'a, RangeMap>>,
}

impl<B: ByteSource + ?Sized> ByteSource for Patched<'_, B> {
    fn read(&self, offset: u64, out: &mut [u8]) {
        self.base.read(offset, out);
        if let Some(runs) = &self.runs {
            runs.lay_onto(offset, out);
        }
    }

    fn borrow_bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        match &self.runs {
            Some(runs) if runs.intersects(offset, offset + len as u64) => None,
            _ => self.base.borrow_bytes(offset, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(m: &RangeMap, base: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; base.len()];
        Patched {
            base,
            runs: Some(Cow::Borrowed(m)),
        }
        .read(0, &mut out);
        out
    }

    #[test]
    fn writes_merge_and_overwrite() {
        let base = [0u8; 10];
        let mut m = RangeMap::default();
        m.write(2, &[1, 1]);
        m.write(6, &[2, 2]);
        assert_eq!(m.runs().count(), 2);
        m.write(4, &[3, 3]); // touches both neighbours
        assert_eq!(
            m.runs().collect::<Vec<_>>(),
            vec![(2u64, &[1u8, 1, 3, 3, 2, 2][..])]
        );
        m.write(1, &[9, 9]); // overlaps the start
        assert_eq!(read(&m, &base), [0, 9, 9, 1, 3, 3, 2, 2, 0, 0]);
        assert_eq!(m.byte_len(), 7);
    }

    #[test]
    fn writes_in_or_after_a_run_extend_it() {
        let mut m = RangeMap::default();
        for (i, b) in [1u8, 2, 3, 4].iter().enumerate() {
            m.write(10 + i as u64, &[*b]);
        }
        m.write(11, &[9]);
        m.write(30, &[5]);
        m.write(13, &[7, 7]);
        assert_eq!(
            m.runs().collect::<Vec<_>>(),
            vec![(10u64, &[1u8, 9, 3, 7, 7][..]), (30, &[5][..])]
        );
    }

    #[test]
    fn partial_reads_see_runs() {
        let base: Vec<u8> = (0..10).collect();
        let mut m = RangeMap::default();
        m.write(3, &[100, 101, 102]);
        let mut out = [0u8; 3];
        Patched {
            base: &base,
            runs: Some(Cow::Borrowed(&m)),
        }
        .read(4, &mut out);
        assert_eq!(out, [101, 102, 6]);
        Patched {
            base: &base,
            runs: Some(Cow::Borrowed(&m)),
        }
        .read(0, &mut out);
        assert_eq!(out, [0, 1, 2]);
        // Zero-copy reads only where no run reaches.
        let p = Patched {
            base: &base,
            runs: Some(Cow::Borrowed(&m)),
        };
        assert_eq!(p.borrow_bytes(0, 3), Some(&base[0..3]));
        assert_eq!(p.borrow_bytes(1, 3), None);
        assert_eq!(p.borrow_bytes(5, 3), None, "the run [3, 6) reaches byte 5");
        assert_eq!(p.borrow_bytes(6, 4), Some(&base[6..10]));
    }

    #[test]
    fn a_snapshot_keeps_what_it_saw_while_the_overlay_moves_on() {
        let base = [0u8; 8];
        let mut o = Overlay::default();
        o.write("t", 2, &[1, 1]);
        let snap = o.only("t");
        o.write("t", 2, &[9]);
        o.write("t", 6, &[7]);
        let read = |o: &Overlay| {
            let mut out = [0u8; 8];
            o.view_stored("t", &base).read(0, &mut out);
            out
        };
        assert_eq!(read(&snap), [0, 0, 1, 1, 0, 0, 0, 0]);
        assert_eq!(read(&o), [0, 0, 9, 1, 0, 0, 7, 0]);
        assert!(o.only("u").tensor("u").is_none());
    }
}
