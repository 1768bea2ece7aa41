//! Matrix-vector products on weights at their stored width, the hot loop of a decode step. One
//! new token reads every weight once, so the bytes read set the speed: a BF16 matrix read as
//! BF16 (from the memory map, or the edited copy) costs half of its f32 widening. The loops
//! are plain Rust compiled for the CPU found at run time (AVX2/FMA or AVX-512 where present,
//! through `pulp`'s dispatch), split over the cores by rows.

use rayon::prelude::*;
use tensor_surgeon_core::dtype::Dtype;

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;
/// Accumulator lanes (the compiler vectorises fixed-size arrays).
const LANES: usize = 16;

/// A weight matrix as stored: row-major `[rows, cols]`.
#[derive(Clone, Copy)]
pub enum Stored<'a> {
    BF16(&'a [u16]),
    F16(&'a [u16]),
    F32(&'a [f32]),
}

impl<'a> Stored<'a> {
    /// Views stored bytes as elements; `None` for other dtypes, or bytes not aligned to their
    /// element (the caller then uses the f32 copy).
    pub fn of(dtype: Dtype, bytes: &'a [u8]) -> Option<Stored<'a>> {
        match dtype {
            Dtype::BF16 => bytemuck::try_cast_slice(bytes).ok().map(Stored::BF16),
            Dtype::F16 => bytemuck::try_cast_slice(bytes).ok().map(Stored::F16),
            Dtype::F32 => bytemuck::try_cast_slice(bytes).ok().map(Stored::F32),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Stored::BF16(s) | Stored::F16(s) => s.len(),
            Stored::F32(s) => s.len(),
        }
    }
}

/// `y = W x` for `W` `[y.len(), x.len()]`.
pub fn matvec(w: Stored, x: &[f32], y: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), y.len() * cols, "matrix and vectors disagree");
    let arch = pulp::Arch::new();
    y.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * ROWS_PER_TASK;
            arch.dispatch(|| {
                let mut widened = Vec::new();
                for (k, o) in out.iter_mut().enumerate() {
                    let r = (first + k) * cols..(first + k + 1) * cols;
                    *o = match w {
                        Stored::BF16(s) => dot_bf16(&s[r], x),
                        Stored::F32(s) => dot_f32(&s[r], x),
                        Stored::F16(s) => {
                            widened.clear();
                            widened.extend(s[r].iter().map(|&b| half::f16::from_bits(b).to_f32()));
                            dot_f32(&widened, x)
                        }
                    };
                }
            })
        });
}

#[inline(always)]
fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let whole = w.len() / LANES * LANES;
    for (a, b) in w[..whole].chunks_exact(LANES).zip(x[..whole].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += f32::from_bits(u32::from(a[l]) << 16) * b[l];
        }
    }
    let tail: f32 = w[whole..]
        .iter()
        .zip(&x[whole..])
        .map(|(&a, &b)| f32::from_bits(u32::from(a) << 16) * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let whole = w.len() / LANES * LANES;
    for (a, b) in w[..whole].chunks_exact(LANES).zip(x[..whole].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = w[whole..].iter().zip(&x[whole..]).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_width_gives_the_widened_product() {
        let (rows, cols) = (70, 37); // tails in both directions
        let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 23) as f32 / 8.0 - 1.0).collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: Vec<f32> = values
            .chunks(cols)
            .map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum())
            .collect();
        // These values are exact in every width.
        let bf: Vec<u16> = values.iter().map(|v| half::bf16::from_f32(*v).to_bits()).collect();
        let hf: Vec<u16> = values.iter().map(|v| half::f16::from_f32(*v).to_bits()).collect();
        for w in [Stored::BF16(&bf), Stored::F16(&hf), Stored::F32(&values)] {
            let mut y = vec![0f32; rows];
            matvec(w, &x, &mut y);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        let bytes: Vec<u8> = bf.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(Stored::of(Dtype::BF16, &bytes).is_some() || bytes.as_ptr() as usize % 2 == 1);
        assert!(Stored::of(Dtype::I8, &bytes).is_none());
    }
}
