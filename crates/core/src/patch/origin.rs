//! Provenance: who made each change (the web app, the command line, an agent with its stated
//! hypothesis, a loaded patch), kept per patch entry. Entries are split where the origin
//! changes, so every byte of a patch carries the origin of the last step that wrote it.

use super::PatchEntry;
use crate::origin::Origin;
use std::collections::BTreeMap;

/// Byte ranges of tensors marked with origins (the last mark wins). Marks are kept as
/// intervals, so marking a whole 100 MB tensor costs one interval, not one id per byte.
#[derive(Clone, Debug, Default)]
pub struct OriginMap {
    origins: Vec<Origin>,
    /// Per tensor: start -> (end, index into `origins`), sorted, not overlapping.
    marks: BTreeMap<String, BTreeMap<u64, (u64, u32)>>,
}

impl OriginMap {
    /// Marks `len` bytes from `offset` of `tensor` as coming from `origin`.
    pub fn mark(&mut self, tensor: &str, offset: u64, len: usize, origin: &Origin) {
        if len == 0 {
            return;
        }
        let id = match self.origins.iter().position(|o| o == origin) {
            Some(i) => i,
            None => {
                self.origins.push(origin.clone());
                self.origins.len() - 1
            }
        } as u32;
        let end = offset + len as u64;
        let marks = self.marks.entry(tensor.to_string()).or_default();
        // Cut the intervals overlapping [offset, end): keep their parts outside it.
        let overlapping: Vec<(u64, (u64, u32))> = marks
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > offset)
            .map(|(&s, &v)| (s, v))
            .collect();
        for (s, (e, old)) in overlapping {
            marks.remove(&s);
            if s < offset {
                marks.insert(s, (offset, old));
            }
            if e > end {
                marks.insert(end, (e, old));
            }
        }
        // Join with equal neighbours so repeated marks stay few intervals.
        let (mut lo, mut hi) = (offset, end);
        if let Some((&s, &(e, i))) = marks.range(..offset).next_back() {
            if e == offset && i == id {
                marks.remove(&s);
                lo = s;
            }
        }
        if let Some(&(e, i)) = marks.get(&end) {
            if i == id {
                marks.remove(&end);
                hi = e;
            }
        }
        marks.insert(lo, (hi, id));
    }

    /// The origins entries already carry.
    pub fn from_entries(entries: &[PatchEntry]) -> OriginMap {
        let mut map = OriginMap::default();
        for e in entries {
            if let Some(o) = &e.origin {
                map.mark(&e.tensor, e.offset, e.patched.len(), o);
            }
        }
        map
    }

    /// The entries split where the origin changes, each with its origin (unmarked bytes keep
    /// the entry's own).
    pub fn split(&self, entries: Vec<PatchEntry>) -> Vec<PatchEntry> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let Some(marks) = self.marks.get(&e.tensor) else {
                out.push(e);
                continue;
            };
            let end = e.end();
            // (start, end, origin) pieces covering the entry, unmarked gaps included.
            let mut pieces: Vec<(u64, u64, Option<&Origin>)> = Vec::new();
            let first = marks
                .range(..=e.offset)
                .next_back()
                .filter(|(_, &(me, _))| me > e.offset)
                .map(|(&s, _)| s)
                .unwrap_or(e.offset);
            let mut at = e.offset;
            for (&s, &(me, id)) in marks.range(first..end) {
                let (s, me) = (s.max(e.offset), me.min(end));
                if s > at {
                    pieces.push((at, s, e.origin.as_ref()));
                }
                pieces.push((s, me, self.origins.get(id as usize)));
                at = me;
            }
            if at < end {
                pieces.push((at, end, e.origin.as_ref()));
            }
            // Adjacent pieces with equal origins become one entry.
            let mut start = 0;
            for k in 0..pieces.len() {
                let last = k + 1 == pieces.len() || pieces[k + 1].2 != pieces[start].2;
                if !last {
                    continue;
                }
                let (a, b) = (
                    (pieces[start].0 - e.offset) as usize,
                    (pieces[k].1 - e.offset) as usize,
                );
                out.push(PatchEntry {
                    tensor: e.tensor.clone(),
                    offset: pieces[start].0,
                    original: e.original[a..b].to_vec(),
                    patched: e.patched[a..b].to_vec(),
                    origin: pieces[start].2.cloned(),
                });
                start = k + 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, len: usize) -> PatchEntry {
        PatchEntry {
            tensor: "t".into(),
            offset,
            original: (0..len as u8).collect(),
            patched: (100..100 + len as u8).collect(),
            origin: Some(Origin::new("patch")),
        }
    }

    #[test]
    fn the_last_mark_wins_and_gaps_keep_the_entrys_origin() {
        let mut m = OriginMap::default();
        m.mark("t", 0, 100, &Origin::new("web"));
        m.mark("t", 20, 10, &Origin::agent("h"));
        m.mark("t", 25, 10, &Origin::new("cli")); // overlaps the agent's tail
        m.mark("t", 35, 5, &Origin::new("cli")); // joins the previous mark
        let out = m.split(vec![entry(10, 100)]);
        let got: Vec<(u64, usize, String)> = out
            .iter()
            .map(|e| {
                (
                    e.offset,
                    e.patched.len(),
                    e.origin.as_ref().unwrap().label(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (10, 10, "web".into()),
                (20, 5, "agent: h".into()),
                (25, 15, "cli".into()),
                (40, 60, "web".into()),
                (100, 10, "patch".into()),
            ]
        );
        // The pieces carry their own bytes.
        assert_eq!(out[1].original, vec![10, 11, 12, 13, 14]);
        assert_eq!(out[4].patched, (190..200).collect::<Vec<u8>>());
        assert_eq!(m.marks["t"].len(), 4, "cli marks joined");
    }
}
