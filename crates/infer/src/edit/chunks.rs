//! The fact editor's optimisation in chunks of sequences: what a chunk keeps for autograd,
//! and the heap given back between steps.

use super::problem::Sequence;

/// Bytes that what autograd keeps of a chunk of a quantized model's problem may take (more
/// when one sequence alone needs more): the optimisation's memory stays this above the
/// model's weights, whatever its size.
pub(super) const ACTIVATION_BUDGET: usize = 64 << 20;

/// What autograd keeps of a chunk, in bytes: per row, and per scored row besides.
pub(super) struct ChunkCost {
    pub(super) row: usize,
    pub(super) scored: usize,
}

impl ChunkCost {
    pub(super) fn of(&self, s: &Sequence) -> usize {
        let rows = s.x.dims().first().copied().unwrap_or(1);
        rows * self.row + s.scored.len() * self.scored
    }
}

/// The sequences in consecutive chunks that each keep at most `budget` bytes.
pub(super) fn chunks_of(
    seqs: &[Sequence],
    cost: &ChunkCost,
    budget: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut held) = (0, 0);
    for (i, s) in seqs.iter().enumerate() {
        let n = cost.of(s);
        if held > 0 && held + n > budget {
            out.push(start..i);
            (start, held) = (i, 0);
        }
        held += n;
    }
    if start < seqs.len() {
        out.push(start..seqs.len());
    }
    out
}

/// Gives the heap's free pages back to the system. Each step frees a chunk's graph after
/// another, of other sizes on other threads; glibc keeps what it freed, and without this the
/// resident size grows by ~10 MB a step on a small model (20 steps: 600 MB instead of 390).
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the system; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
