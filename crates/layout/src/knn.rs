//! The exact k nearest neighbours (Euclidean) of every point. Squared distances come a block
//! of queries at a time from one matrix product (`|a|^2 + |b|^2 - 2 a.b`, faer), and each
//! query keeps its k smallest with a bounded heap. At the sizes a layout sees (points in the
//! tens of thousands, 50 features after PCA) this is as fast as building an approximate index
//! and has no recall to tune: the layouts' neighbourhoods are the true ones.

use crate::error::{LayoutError, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Queries per block: a block holds `points x BLOCK` squared distances.
const BLOCK: usize = 64;
/// Distances compared at once while scanning for candidates.
const SCAN: usize = 16;

/// Every point's nearest other points, nearest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Knn {
    pub k: usize,
    /// `n x k` point indices.
    pub index: Vec<u32>,
    /// `n x k` Euclidean distances, ascending per point.
    pub dist: Vec<f32>,
}

impl Knn {
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let r = i * self.k..(i + 1) * self.k;
        (&self.index[r.clone()], &self.dist[r])
    }
}

/// A candidate ordered by distance, then index (so ties resolve the same way every time).
#[derive(Clone, Copy, PartialEq)]
struct Cand(f32, u32);

impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The `k` nearest neighbours of each of the `n` points (`x`: `n x d`, row-major), excluding
/// the point itself. `progress(done, total)` counts points; `stop` ends the search early with
/// [`LayoutError::Stopped`].
pub fn exact(
    x: &[f32],
    n: usize,
    d: usize,
    k: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
    stop: &AtomicBool,
) -> Result<Knn> {
    if k == 0 || k >= n {
        return Err(LayoutError::Parameter(format!(
            "{k} neighbours of {n} points: need at least one and fewer than the points"
        )));
    }
    debug_assert_eq!(x.len(), n * d);
    let all = MatRef::from_row_major_slice(x, n, d);
    let sq: Vec<f32> = x
        .chunks_exact(d.max(1))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let done = AtomicU64::new(0);
    let blocks: Vec<(Vec<u32>, Vec<f32>)> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            if stop.load(Ordering::Relaxed) {
                return Err(LayoutError::Stopped);
            }
            let (q0, q1) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
            let queries = MatRef::from_row_major_slice(&x[q0 * d..q1 * d], q1 - q0, d);
            // Column q: the dot products of query q with every point.
            let mut dots = Mat::<f32>::zeros(n, q1 - q0);
            matmul(
                dots.as_mut(),
                Accum::Replace,
                all,
                queries.transpose(),
                1.0,
                Par::Seq,
            );
            let mut index = Vec::with_capacity((q1 - q0) * k);
            let mut dist = Vec::with_capacity((q1 - q0) * k);
            let mut heap = BinaryHeap::with_capacity(k + 1);
            let mut col = vec![0.0f32; n];
            for q in 0..q1 - q0 {
                let qi = q0 + q;
                let own = sq[qi];
                for ((c, &dot), &s) in col.iter_mut().zip(dots.col(q).iter()).zip(&sq) {
                    *c = (own + s - 2.0 * dot).max(0.0);
                }
                col[qi] = f32::INFINITY;
                heap.clear();
                let mut worst = f32::INFINITY;
                for (chunk, lane) in col.chunks(SCAN).zip((0..).step_by(SCAN)) {
                    // Most chunks hold no candidate once the heap is full: one vector compare.
                    if chunk.iter().filter(|&&v| v <= worst).count() == 0 {
                        continue;
                    }
                    for (t, &v) in chunk.iter().enumerate() {
                        if v > worst {
                            continue;
                        }
                        let j = (lane + t) as u32;
                        if j as usize == qi {
                            continue;
                        }
                        let c = Cand(v, j);
                        if heap.len() < k {
                            heap.push(c);
                        } else if heap.peek().is_some_and(|top| c < *top) {
                            heap.pop();
                            heap.push(c);
                        }
                        if heap.len() == k {
                            worst = heap.peek().map_or(f32::INFINITY, |top| top.0);
                        }
                    }
                }
                let mut row: Vec<Cand> = heap.drain().collect();
                row.sort_unstable();
                for Cand(d2, j) in row {
                    index.push(j);
                    dist.push(d2.sqrt());
                }
            }
            let now = done.fetch_add((q1 - q0) as u64, Ordering::Relaxed) + (q1 - q0) as u64;
            progress(now, n as u64);
            Ok((index, dist))
        })
        .collect::<Result<_>>()?;
    let mut index = Vec::with_capacity(n * k);
    let mut dist = Vec::with_capacity(n * k);
    for (i, d) in blocks {
        index.extend(i);
        dist.extend(d);
    }
    Ok(Knn { k, index, dist })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn equals_a_plain_search() {
        let (n, d, k) = (700, 9, 12);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let knn = exact(&x, n, d, k, &|_, _| {}, &AtomicBool::new(false)).unwrap();
        for i in [0, 1, 255, 256, 699] {
            let mut all: Vec<(f32, u32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let d2: f32 = (0..d).map(|t| (x[i * d + t] - x[j * d + t]).powi(2)).sum();
                    (d2.sqrt(), j as u32)
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (idx, dist) = knn.row(i);
            let want: Vec<u32> = all[..k].iter().map(|p| p.1).collect();
            assert_eq!(idx, &want[..], "point {i}");
            for (got, w) in dist.iter().zip(&all[..k]) {
                assert!((got - w.0).abs() < 1e-4, "{got} vs {}", w.0);
            }
        }
    }

    #[test]
    fn asks_for_a_possible_k() {
        let x = vec![0.0f32; 10];
        let err = exact(&x, 5, 2, 5, &|_, _| {}, &AtomicBool::new(false)).unwrap_err();
        assert!(err.to_string().contains("fewer than the points"), "{err}");
    }
}
