//! Histogram bins with numpy's edge rule, so counts agree with `np.histogram` on the same
//! values (taken as float64).

use serde::{Deserialize, Serialize};

/// Equal-width bins over `[lo, hi]` (the last bin includes `hi`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bins {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    norm: f64,
    step: f64,
}

impl Bins {
    /// `count` bins over `[lo, hi]`; a point range widens to `[lo - 0.5, hi + 0.5]` as numpy
    /// does. `None` for a non-finite or reversed range or no bins.
    pub fn new(lo: f64, hi: f64, count: usize) -> Option<Bins> {
        if count == 0 || !lo.is_finite() || !hi.is_finite() || lo > hi {
            return None;
        }
        let (lo, hi) = if lo == hi {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        let width = hi - lo;
        if !width.is_finite() {
            return None;
        }
        Some(Bins {
            lo,
            hi,
            count,
            norm: count as f64 / width,
            step: width / count as f64,
        })
    }

    /// Edge `k` of `0..=count`, as `np.linspace` computes it.
    pub fn edge(&self, k: usize) -> f64 {
        if k == self.count {
            self.hi
        } else {
            k as f64 * self.step + self.lo
        }
    }

    /// The bin of a finite `v`: `Ok(bin)`, or `Err(false)` below the range / `Err(true)`
    /// above it.
    pub fn index(&self, v: f64) -> Result<usize, bool> {
        if v < self.lo {
            return Err(false);
        }
        if v > self.hi {
            return Err(true);
        }
        let mut i = (((v - self.lo) * self.norm) as usize).min(self.count - 1);
        if v < self.edge(i) {
            i = i.saturating_sub(1);
        } else if i + 1 < self.count && v >= self.edge(i + 1) {
            i += 1;
        }
        Ok(i)
    }
}

/// Counts per bin, with what fell outside kept beside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    /// Finite values below `lo` / above `hi` (only when a range was asked for).
    pub below: u64,
    pub above: u64,
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
}

impl Histogram {
    /// Empty counts over `bins`.
    pub fn empty(bins: &Bins) -> Histogram {
        Histogram {
            lo: bins.lo,
            hi: bins.hi,
            counts: vec![0; bins.count],
            below: 0,
            above: 0,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
        }
    }

    /// Counts `n` copies of `v`.
    pub fn add(&mut self, bins: &Bins, v: f64, n: u64) {
        if v.is_nan() {
            self.nan += n;
        } else if v == f64::INFINITY {
            self.pos_inf += n;
        } else if v == f64::NEG_INFINITY {
            self.neg_inf += n;
        } else {
            match bins.index(v) {
                Ok(i) => self.counts[i] += n,
                Err(false) => self.below += n,
                Err(true) => self.above += n,
            }
        }
    }

    /// Adds another histogram over the same bins.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.below += other.below;
        self.above += other.above;
        self.nan += other.nan;
        self.pos_inf += other.pos_inf;
        self.neg_inf += other.neg_inf;
    }

    /// The range `[from, to)` of bin `i` (the last bin closed).
    pub fn bin_range(&self, i: usize) -> (f64, f64) {
        let bins = Bins::new(self.lo, self.hi, self.counts.len().max(1));
        match bins {
            Some(b) => (b.edge(i), b.edge(i + 1)),
            None => (self.lo, self.hi),
        }
    }
}
