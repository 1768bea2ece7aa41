//! Dtypes of at most 16 bits: one count per bit pattern, from which every statistic and any
//! histogram follow exactly.

use super::{Accumulator, Bins, Histogram, Moments, Summary};
use crate::dtype;
use safetensors::Dtype;

/// Whether a dtype is summarised by a pattern table.
pub fn applies(dtype: Dtype) -> bool {
    dtype::bits(dtype) <= 16
}

/// How many elements hold each bit pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeTable {
    dtype: Dtype,
    counts: Vec<u64>,
}

impl CodeTable {
    /// An empty table for a dtype of at most 16 bits.
    pub fn new(dtype: Dtype) -> CodeTable {
        CodeTable {
            dtype,
            counts: vec![0; 1 << dtype::bits(dtype).min(16)],
        }
    }

    /// The distinct values present, with their counts and whether the pattern is subnormal.
    fn values(&self) -> impl Iterator<Item = (f64, u64, bool)> + '_ {
        let width = dtype::element_bytes(self.dtype);
        let fields = dtype::float_fields(self.dtype);
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(move |(code, &n)| {
                let bytes = (code as u16).to_le_bytes();
                let v = dtype::decode_f64(self.dtype, &bytes[..width]);
                let subnormal = match fields {
                    Some((_, e, m)) if m > 0 => {
                        let exp = (code >> m) & ((1 << e) - 1);
                        exp == 0 && code & ((1 << m) - 1) != 0
                    }
                    _ => false,
                };
                (v, n, subnormal)
            })
    }

    /// Elements counted.
    pub fn elements(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Exact statistics.
    pub fn summary(&self) -> Summary {
        let mut m = Moments {
            count: self.elements(),
            ..Moments::default()
        };
        let mut finite: Vec<(f64, u64)> = Vec::new();
        let mut sum = 0.0;
        for (v, n, subnormal) in self.values() {
            if v.is_nan() {
                m.nan += n;
            } else if v == f64::INFINITY {
                m.pos_inf += n;
            } else if v == f64::NEG_INFINITY {
                m.neg_inf += n;
            } else {
                m.finite += n;
                m.zero += if v == 0.0 { n } else { 0 };
                m.subnormal += if subnormal { n } else { 0 };
                m.min = m.min.min(v);
                m.max = m.max.max(v);
                sum += v * n as f64;
                m.sum_abs += v.abs() * n as f64;
                finite.push((v, n));
            }
        }
        if m.finite > 0 {
            m.mean = sum / m.finite as f64;
            m.m2 = finite
                .iter()
                .map(|&(v, n)| (v - m.mean) * (v - m.mean) * n as f64)
                .sum();
        }
        // +0 and -0 are one value; merge patterns that decode equal.
        finite.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut cumulative = Vec::with_capacity(finite.len());
        let mut total = 0u64;
        for &(v, n) in &finite {
            total += n;
            cumulative.push((total, v));
        }
        m.summary(|rank| {
            let i = cumulative.partition_point(|&(c, _)| c <= rank);
            cumulative[i.min(cumulative.len() - 1)].1
        })
    }

    /// Exact histogram over `bins`.
    pub fn histogram(&self, bins: &Bins) -> Histogram {
        let mut h = Histogram::empty(bins);
        for (v, n, _) in self.values() {
            h.add(bins, v, n);
        }
        h
    }
}

impl Accumulator for CodeTable {
    fn add(&mut self, bytes: &[u8], elements: u64) {
        match dtype::bits(self.dtype) {
            8 => bytes.iter().for_each(|&b| self.counts[b as usize] += 1),
            16 => bytes
                .chunks_exact(2)
                .for_each(|b| self.counts[u16::from_le_bytes([b[0], b[1]]) as usize] += 1),
            _ => {
                for i in 0..elements {
                    let loc = crate::packed::locate(self.dtype, i);
                    let at = loc.offset as usize;
                    let end = (at + loc.len).min(bytes.len());
                    let code = crate::packed::unpack(self.dtype, loc, &bytes[at..end]);
                    self.counts[code as usize] += 1;
                }
            }
        }
    }

    fn merge(&mut self, other: CodeTable) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }
}
