//! Tensor statistics: moments, exact quantiles, class counts and histograms, streamed over a
//! tensor's bytes in chunks with flat memory.
//!
//! NaN and ±Inf are counted, not folded into the numbers: min, max, mean, std, mean |x| and
//! the quantiles are over the finite values. Sums are float64 per chunk, merged with Chan's
//! update, so the mean agrees with numpy's float64 mean to ~1e-12 relative.
//!
//! Two strategies:
//! - dtypes of at most 16 bits (BF16, F16, F8, F6, F4, 8/16-bit ints, BOOL) count each bit
//!   pattern in one pass; everything, quantiles and histograms of any bins included, follows
//!   exactly from that table without touching the data again;
//! - 32/64-bit dtypes take moments and a histogram of the top 16 bits of an order-preserving
//!   key in one pass, then find the exact order statistics the quantiles need by radix
//!   selection, 16 bits per further pass (one more for 32-bit dtypes), with the value
//!   histogram counted alongside.
//!
//! The passes run through a [`PassDriver`], which the server drives on all cores.

mod hist;
mod narrow;
pub mod scan;
mod wide;

#[cfg(test)]
mod tests;

pub use hist::{Bins, Histogram};
pub use narrow::CodeTable;

use crate::dtype::{self, Kind};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

/// The quantiles every summary reports.
pub const QUANTILES: [f64; 9] = [0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999];
/// Histogram bins unless asked otherwise.
pub const DEFAULT_BINS: usize = 256;
/// Most bins a histogram may have.
pub const MAX_BINS: usize = 10_000;
/// Elements per chunk fed to an accumulator (a multiple of 4, so packed chunks start on a
/// byte boundary).
pub const CHUNK_ELEMENTS: u64 = 1 << 16;

/// One quantile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    pub q: f64,
    pub value: f64,
}

/// Statistics of one tensor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Elements.
    pub count: u64,
    /// Elements that are neither NaN nor ±Inf.
    pub finite: u64,
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
    pub zero: u64,
    pub subnormal: u64,
    /// Over the finite values; `None` when there are none.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Population standard deviation (numpy's default, ddof = 0).
    pub std: Option<f64>,
    pub mean_abs: Option<f64>,
    pub max_abs: Option<f64>,
    /// numpy's default ("linear") interpolation between order statistics.
    pub quantiles: Vec<Quantile>,
    /// Fraction of elements equal to zero.
    pub sparsity: f64,
}

impl Summary {
    /// Every statistic as `(label, text)` for display, quantiles last (`p0.1` .. `p99.9`);
    /// numbers are shown in full (shortest text that round-trips), missing ones as `–`.
    pub fn rows(&self) -> Vec<(String, String)> {
        let num = |v: Option<f64>| v.map_or("–".into(), crate::dtype::pretty_f64);
        let mut rows: Vec<(String, String)> = [
            ("count", self.count.to_string()),
            ("finite", self.finite.to_string()),
            ("min", num(self.min)),
            ("max", num(self.max)),
            ("mean", num(self.mean)),
            ("std", num(self.std)),
            ("mean |x|", num(self.mean_abs)),
            ("max |x|", num(self.max_abs)),
            ("NaN", self.nan.to_string()),
            ("+Inf", self.pos_inf.to_string()),
            ("-Inf", self.neg_inf.to_string()),
            ("zero", self.zero.to_string()),
            ("subnormal", self.subnormal.to_string()),
            ("sparsity", format!("{:.4}%", self.sparsity * 100.0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        rows.extend(self.quantiles.iter().map(|q| {
            (
                format!("p{}", q.q * 100.0),
                crate::dtype::pretty_f64(q.value),
            )
        }));
        rows
    }

    /// The value of quantile `q` if reported.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles.iter().find(|x| x.q == q).map(|x| x.value)
    }
}

/// A running sum of one tensor's values: counts, extremes and moments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub finite: u64,
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
    pub zero: u64,
    pub subnormal: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    pub sum_abs: f64,
}

impl Default for Moments {
    fn default() -> Moments {
        Moments {
            count: 0,
            finite: 0,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
            zero: 0,
            subnormal: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            sum_abs: 0.0,
        }
    }
}

impl Moments {
    /// Adds a block of values; `|v| < min_normal` (nonzero) counts as subnormal.
    pub fn add_values(&mut self, values: &[f64], min_normal: f64) {
        let mut block = Moments {
            count: values.len() as u64,
            ..Moments::default()
        };
        let mut sum = 0.0;
        for &v in values {
            if v.is_finite() {
                block.finite += 1;
                sum += v;
                block.sum_abs += v.abs();
                block.min = block.min.min(v);
                block.max = block.max.max(v);
                if v == 0.0 {
                    block.zero += 1;
                } else if v.abs() < min_normal {
                    block.subnormal += 1;
                }
            } else if v.is_nan() {
                block.nan += 1;
            } else if v > 0.0 {
                block.pos_inf += 1;
            } else {
                block.neg_inf += 1;
            }
        }
        if block.finite > 0 {
            block.mean = sum / block.finite as f64;
            block.m2 = values
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| (v - block.mean) * (v - block.mean))
                .sum();
        }
        self.merge(&block);
    }

    /// Adds another block (Chan et al.'s pairwise update for mean and M2).
    pub fn merge(&mut self, o: &Moments) {
        let n = self.finite + o.finite;
        if n > 0 && o.finite > 0 {
            let delta = o.mean - self.mean;
            let (na, nb) = (self.finite as f64, o.finite as f64);
            self.mean += delta * nb / n as f64;
            self.m2 += o.m2 + delta * delta * na * nb / n as f64;
        }
        self.count += o.count;
        self.finite = n;
        self.nan += o.nan;
        self.pos_inf += o.pos_inf;
        self.neg_inf += o.neg_inf;
        self.zero += o.zero;
        self.subnormal += o.subnormal;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum_abs += o.sum_abs;
    }

    /// The summary, with quantiles from `order_stat(rank)` over the sorted finite values.
    pub fn summary(&self, mut order_stat: impl FnMut(u64) -> f64) -> Summary {
        let some = |v: f64| (self.finite > 0).then_some(v);
        let quantiles = if self.finite == 0 {
            Vec::new()
        } else {
            QUANTILES
                .iter()
                .map(|&q| {
                    let (lo, hi, t) = quantile_ranks(q, self.finite);
                    Quantile {
                        q,
                        value: lerp(order_stat(lo), order_stat(hi), t),
                    }
                })
                .collect()
        };
        Summary {
            count: self.count,
            finite: self.finite,
            nan: self.nan,
            pos_inf: self.pos_inf,
            neg_inf: self.neg_inf,
            zero: self.zero,
            subnormal: self.subnormal,
            min: some(self.min),
            max: some(self.max),
            mean: some(self.mean),
            std: some((self.m2 / self.finite.max(1) as f64).sqrt()),
            mean_abs: some(self.sum_abs / self.finite.max(1) as f64),
            max_abs: some(self.min.abs().max(self.max.abs())),
            quantiles,
            sparsity: if self.count == 0 {
                0.0
            } else {
                self.zero as f64 / self.count as f64
            },
        }
    }
}

/// The order statistics (0-based ranks among `n` sorted values) and weight of quantile `q`,
/// as numpy's linear method places it.
pub fn quantile_ranks(q: f64, n: u64) -> (u64, u64, f64) {
    let virtual_index = q * (n - 1) as f64;
    let lo = (virtual_index.floor() as u64).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    (lo, hi, virtual_index - lo as f64)
}

/// numpy's `_lerp`: exact at both ends.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// Nonzero magnitudes below this are subnormal (0 for dtypes without subnormals).
pub fn min_normal(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F64 => f64::MIN_POSITIVE,
        Dtype::F32 => f64::from(f32::MIN_POSITIVE),
        _ => 0.0,
    }
}

/// One pass's state over some of a tensor's chunks.
pub trait Accumulator: Send {
    /// Adds one chunk: `elements` elements in `bytes` (element-aligned; packed dtypes start
    /// on a byte boundary).
    fn add(&mut self, bytes: &[u8], elements: u64);
    /// Adds the state of another part of the tensor.
    fn merge(&mut self, other: Self);
}

/// Runs passes over one tensor's (edited) bytes.
pub trait PassDriver {
    /// Feeds every chunk to accumulators made by `make` and merges them into one.
    fn run<A: Accumulator>(&self, make: &(dyn Fn() -> A + Sync)) -> A;
}

/// A [`PassDriver`] over bytes in memory, one chunk after another.
pub struct InMemory<'a> {
    pub dtype: Dtype,
    pub bytes: &'a [u8],
    pub elements: u64,
}

impl PassDriver for InMemory<'_> {
    fn run<A: Accumulator>(&self, make: &(dyn Fn() -> A + Sync)) -> A {
        let mut acc = make();
        for (start, n) in chunks(self.elements) {
            let (from, to) = chunk_bytes(self.dtype, start, n);
            acc.add(&self.bytes[from as usize..to as usize], n);
        }
        acc
    }
}

/// The chunks `(first element, elements)` of an `elements`-element tensor.
pub fn chunks(elements: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..elements.div_ceil(CHUNK_ELEMENTS)).map(move |k| {
        let start = k * CHUNK_ELEMENTS;
        (start, CHUNK_ELEMENTS.min(elements - start))
    })
}

/// The byte range `[from, to)` of `n` elements from element `start`.
pub fn chunk_bytes(dtype: Dtype, start: u64, n: u64) -> (u64, u64) {
    let bits = dtype::bits(dtype) as u64;
    ((start * bits) / 8, ((start + n) * bits).div_ceil(8))
}

/// Full statistics and a histogram (`bins` over the finite range) of a tensor. For dtypes of
/// at most 16 bits the pattern table is returned too: later histograms need no pass.
pub fn compute(
    dtype: Dtype,
    runner: &impl PassDriver,
    bins: usize,
) -> (Summary, Option<Histogram>, Option<CodeTable>) {
    if narrow::applies(dtype) {
        let table = runner.run(&|| CodeTable::new(dtype));
        let summary = table.summary();
        let hist = range_bins(&summary, bins).map(|b| table.histogram(&b));
        (summary, hist, Some(table))
    } else {
        let (summary, hist) = wide::compute(dtype, runner, bins);
        (summary, hist, None)
    }
}

/// A histogram over `bins` (from a cached pattern table when there is one, else one pass).
pub fn histogram(
    dtype: Dtype,
    runner: &impl PassDriver,
    table: Option<&CodeTable>,
    bins: &Bins,
) -> Histogram {
    match table {
        Some(t) => t.histogram(bins),
        None => wide::histogram(dtype, runner, bins),
    }
}

/// `count` bins over the finite range of a summary (`None` without finite values).
pub fn range_bins(summary: &Summary, count: usize) -> Option<Bins> {
    Bins::new(summary.min?, summary.max?, count.clamp(1, MAX_BINS))
}

/// Whether statistics are defined for a dtype (all numeric ones; BOOL counts as 0/1 and
/// complex numbers by their modulus).
pub fn kind_note(dtype: Dtype) -> Option<&'static str> {
    match dtype::kind(dtype) {
        Kind::Complex => Some("complex values are summarised by their modulus |z|"),
        Kind::Bool => Some("booleans count as 0 and 1"),
        _ => None,
    }
}
