//! 32/64-bit dtypes: moments plus exact quantiles by radix selection on an order-preserving
//! key, 16 bits per pass; only the buckets holding a wanted rank are refined.

use super::{min_normal, Accumulator, Bins, Histogram, Moments, PassDriver, Summary, QUANTILES};
use crate::dtype;
use safetensors::Dtype;

const DIGIT: u32 = 16;
const BUCKETS: usize = 1 << DIGIT;

/// Key width in bits: 32 for 4-byte dtypes, 64 for 8-byte ones.
fn width(dtype: Dtype) -> u32 {
    if dtype::element_bytes(dtype) == 4 {
        32
    } else {
        64
    }
}

fn f32_key(b: u32) -> u32 {
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn f64_key(b: u64) -> u64 {
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

/// Decodes a chunk into values (f64) and keys whose unsigned order is the values' order.
fn decode(dtype: Dtype, bytes: &[u8], keys: &mut Vec<u64>, values: &mut Vec<f64>) {
    keys.clear();
    values.clear();
    let mut push = |k: u64, v: f64| {
        keys.push(k);
        values.push(v);
    };
    match dtype {
        Dtype::F32 | Dtype::I32 | Dtype::U32 => {
            for c in bytes.chunks_exact(4) {
                let b = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                match dtype {
                    Dtype::F32 => push(f32_key(b).into(), f32::from_bits(b).into()),
                    Dtype::I32 => push((b ^ 0x8000_0000).into(), f64::from(b as i32)),
                    _ => push(b.into(), f64::from(b)),
                }
            }
        }
        _ => {
            for c in bytes.chunks_exact(8) {
                let b = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                match dtype {
                    Dtype::F64 => push(f64_key(b), f64::from_bits(b)),
                    Dtype::I64 => push(b ^ 1 << 63, b as i64 as f64),
                    Dtype::U64 => push(b, b as f64),
                    _ => {
                        let v = dtype::decode_f64(dtype, c);
                        push(f64_key(v.to_bits()), v)
                    }
                }
            }
        }
    }
}

/// The value of a fully resolved key.
fn key_value(dtype: Dtype, key: u64) -> f64 {
    match dtype {
        Dtype::F32 => {
            let k = key as u32;
            let b = if k >> 31 == 1 { k & 0x7fff_ffff } else { !k };
            f32::from_bits(b).into()
        }
        Dtype::I32 => f64::from((key as u32 ^ 0x8000_0000) as i32),
        Dtype::U32 => key as f64,
        Dtype::I64 => (key ^ 1 << 63) as i64 as f64,
        Dtype::U64 => key as f64,
        _ => {
            let b = if key >> 63 == 1 {
                key & !(1 << 63)
            } else {
                !key
            };
            f64::from_bits(b)
        }
    }
}

/// First pass: moments and counts of the keys' top 16 bits (finite values only).
struct First {
    dtype: Dtype,
    moments: Moments,
    top: Vec<u64>,
    keys: Vec<u64>,
    values: Vec<f64>,
}

impl Accumulator for First {
    fn add(&mut self, bytes: &[u8], _: u64) {
        decode(self.dtype, bytes, &mut self.keys, &mut self.values);
        self.moments
            .add_values(&self.values, min_normal(self.dtype));
        let shift = width(self.dtype) - DIGIT;
        for (k, v) in self.keys.iter().zip(&self.values) {
            if v.is_finite() {
                self.top[(k >> shift) as usize] += 1;
            }
        }
    }

    fn merge(&mut self, o: First) {
        self.moments.merge(&o.moments);
        for (a, b) in self.top.iter_mut().zip(o.top) {
            *a += b;
        }
    }
}

/// A wanted rank and what is known of its key.
#[derive(Clone, Copy, Debug)]
struct Target {
    rank: u64,
    prefix: u64,
    /// Rank among the finite values sharing `prefix`.
    rank_in: u64,
}

/// Further pass: counts of the next 16 key bits under each wanted prefix, and optionally the
/// value histogram.
struct Refine<'a> {
    dtype: Dtype,
    known: u32,
    prefixes: &'a [u64],
    top_mask: &'a [bool],
    counts: Vec<Vec<u64>>,
    hist: Option<(Bins, Histogram)>,
    keys: Vec<u64>,
    values: Vec<f64>,
}

impl Accumulator for Refine<'_> {
    fn add(&mut self, bytes: &[u8], _: u64) {
        decode(self.dtype, bytes, &mut self.keys, &mut self.values);
        let w = width(self.dtype);
        for (&k, &v) in self.keys.iter().zip(&self.values) {
            if let Some((bins, h)) = &mut self.hist {
                h.add(bins, v, 1);
            }
            if !v.is_finite() || !self.top_mask[(k >> (w - DIGIT)) as usize] {
                continue;
            }
            if let Ok(i) = self.prefixes.binary_search(&(k >> (w - self.known))) {
                let digit = (k >> (w - self.known - DIGIT)) as usize & (BUCKETS - 1);
                self.counts[i][digit] += 1;
            }
        }
    }

    fn merge(&mut self, o: Self) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        if let (Some((_, a)), Some((_, b))) = (&mut self.hist, &o.hist) {
            a.merge(b);
        }
    }
}

/// Moves a target down one digit given the counts under its prefix.
fn descend(t: &mut Target, counts: &[u64]) {
    let mut before = 0;
    for (digit, &n) in counts.iter().enumerate() {
        if t.rank_in < before + n {
            t.prefix = (t.prefix << DIGIT) | digit as u64;
            t.rank_in -= before;
            return;
        }
        before += n;
    }
}

pub fn compute(
    dtype: Dtype,
    runner: &impl PassDriver,
    bins: usize,
) -> (Summary, Option<Histogram>) {
    let first = runner.run(&|| First {
        dtype,
        moments: Moments::default(),
        top: vec![0; BUCKETS],
        keys: Vec::new(),
        values: Vec::new(),
    });
    let m = first.moments;
    if m.finite == 0 {
        return (m.summary(|_| f64::NAN), None);
    }
    let mut targets: Vec<Target> = QUANTILES
        .iter()
        .flat_map(|&q| {
            let (lo, hi, _) = super::quantile_ranks(q, m.finite);
            [lo, hi]
        })
        .map(|rank| Target {
            rank,
            prefix: 0,
            rank_in: rank,
        })
        .collect();
    targets.sort_by_key(|t| t.rank);
    targets.dedup_by_key(|t| t.rank);
    for t in &mut targets {
        descend(t, &first.top);
    }
    let w = width(dtype);
    let mut hist_bins = Bins::new(m.min, m.max, bins.clamp(1, super::MAX_BINS));
    let mut hist = None;
    let mut known = DIGIT;
    while known < w {
        let mut prefixes: Vec<u64> = targets.iter().map(|t| t.prefix).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        let mut top_mask = vec![false; BUCKETS];
        for p in &prefixes {
            top_mask[(p >> (known - DIGIT)) as usize] = true;
        }
        let this_bins = hist_bins.take();
        let pass = runner.run(&|| Refine {
            dtype,
            known,
            prefixes: &prefixes,
            top_mask: &top_mask,
            counts: vec![vec![0; BUCKETS]; prefixes.len()],
            hist: this_bins.map(|b| (b, Histogram::empty(&b))),
            keys: Vec::new(),
            values: Vec::new(),
        });
        for t in &mut targets {
            if let Ok(i) = prefixes.binary_search(&t.prefix) {
                descend(t, &pass.counts[i]);
            }
        }
        if let Some((_, h)) = pass.hist {
            hist = Some(h);
        }
        known += DIGIT;
    }
    let summary = m.summary(|rank| {
        targets
            .iter()
            .find(|t| t.rank == rank)
            .map_or(f64::NAN, |t| key_value(dtype, t.prefix))
    });
    (summary, hist)
}

/// Histogram-only pass.
struct HistPass {
    dtype: Dtype,
    bins: Bins,
    hist: Histogram,
    keys: Vec<u64>,
    values: Vec<f64>,
}

impl Accumulator for HistPass {
    fn add(&mut self, bytes: &[u8], _: u64) {
        decode(self.dtype, bytes, &mut self.keys, &mut self.values);
        for &v in &self.values {
            self.hist.add(&self.bins, v, 1);
        }
    }

    fn merge(&mut self, o: HistPass) {
        self.hist.merge(&o.hist);
    }
}

pub fn histogram(dtype: Dtype, runner: &impl PassDriver, bins: &Bins) -> Histogram {
    runner
        .run(&|| HistPass {
            dtype,
            bins: *bins,
            hist: Histogram::empty(bins),
            keys: Vec::new(),
            values: Vec::new(),
        })
        .hist
}
