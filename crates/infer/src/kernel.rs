//! Products with weights at their stored width: a decode step reads every weight once, so the
//! bytes read set the speed, and a BF16 matrix read as BF16 (from the memory map) costs half of
//! its f32 widening. Edited matrices are the mapped base plus their edited rows (copy on write:
//! an edit costs its rows, not a copy of the tensor). The loops are plain Rust compiled for the
//! CPU found at run time (AVX2/FMA or AVX-512 where present, through `pulp`'s dispatch), split
//! over the cores by rows.

use rayon::prelude::*;
use std::collections::HashMap;
use tensor_surgeon_core::dtype::Dtype;

/// Rows of a matrix that edits changed, with the edits laid on, widened.
pub type PatchedRows = HashMap<usize, Vec<f32>>;

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;
/// Accumulator lanes (the compiler vectorises fixed-size arrays).
const LANES: usize = 16;

/// A weight matrix as stored (row-major `[rows, cols]`), and the rows edits replaced.
#[derive(Clone, Copy)]
pub struct Stored<'a> {
    elems: Elems<'a>,
    patched: Option<&'a PatchedRows>,
}

#[derive(Clone, Copy)]
enum Elems<'a> {
    BF16(&'a [u16]),
    F16(&'a [u16]),
    F32(&'a [f32]),
}

impl<'a> Stored<'a> {
    /// Views stored bytes as elements; `None` for other dtypes, or bytes not aligned to their
    /// element (the caller then uses the f32 copy).
    pub fn of(dtype: Dtype, bytes: &'a [u8]) -> Option<Stored<'a>> {
        let elems = match dtype {
            Dtype::BF16 => Elems::BF16(bytemuck::try_cast_slice(bytes).ok()?),
            Dtype::F16 => Elems::F16(bytemuck::try_cast_slice(bytes).ok()?),
            Dtype::F32 => Elems::F32(bytemuck::try_cast_slice(bytes).ok()?),
            _ => return None,
        };
        Some(Stored {
            elems,
            patched: None,
        })
    }

    /// The same matrix with some rows replaced.
    pub fn with_patched(self, rows: &'a PatchedRows) -> Stored<'a> {
        Stored {
            patched: (!rows.is_empty()).then_some(rows),
            ..self
        }
    }

    /// An edited row, if row `r` is one.
    #[inline(always)]
    fn patched_row(&self, r: usize) -> Option<&'a [f32]> {
        self.patched.and_then(|p| p.get(&r)).map(Vec::as_slice)
    }

    /// Row `r` of a matrix of `cols` columns, widened.
    pub fn row(&self, r: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0f32; cols];
        self.widen_row(r, cols, &mut out);
        out
    }

    #[inline(always)]
    fn widen_row(&self, r: usize, cols: usize, out: &mut [f32]) {
        if let Some(p) = self.patched_row(r) {
            out.copy_from_slice(p);
            return;
        }
        let span = r * cols..(r + 1) * cols;
        match self.elems {
            Elems::BF16(s) => {
                for (o, &b) in out.iter_mut().zip(&s[span]) {
                    *o = f32::from_bits(u32::from(b) << 16);
                }
            }
            Elems::F16(s) => {
                for (o, &b) in out.iter_mut().zip(&s[span]) {
                    *o = half::f16::from_bits(b).to_f32();
                }
            }
            Elems::F32(s) => out.copy_from_slice(&s[span]),
        }
    }

    fn len(&self) -> usize {
        match self.elems {
            Elems::BF16(s) | Elems::F16(s) => s.len(),
            Elems::F32(s) => s.len(),
        }
    }
}

/// A matrix copied out of the weights for work that keeps it (the fact editor's optimisation):
/// at the stored width when it can be (BF16 stays BF16), otherwise widened.
pub enum Owned {
    BF16(Vec<u16>),
    F32(Vec<f32>),
}

impl Owned {
    /// A copy of `w` (`[rows, cols]`).
    pub fn of(w: Stored, rows: usize, cols: usize) -> Owned {
        match w.elems {
            Elems::BF16(s) if w.patched.is_none() => Owned::BF16(s.to_vec()),
            _ => Owned::F32((0..rows).flat_map(|r| w.row(r, cols)).collect()),
        }
    }

    /// The matrix for the kernels.
    pub fn stored(&self) -> Stored<'_> {
        let elems = match self {
            Owned::BF16(v) => Elems::BF16(v),
            Owned::F32(v) => Elems::F32(v),
        };
        Stored {
            elems,
            patched: None,
        }
    }

    /// The transpose of this `[rows, cols]` matrix, at the same width.
    pub fn transposed(&self, rows: usize, cols: usize) -> Owned {
        fn flip<T: Copy + Default>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
            let mut out = vec![T::default(); v.len()];
            for (r, row) in v.chunks_exact(cols).enumerate().take(rows) {
                for (c, &x) in row.iter().enumerate() {
                    out[c * rows + r] = x;
                }
            }
            out
        }
        match self {
            Owned::BF16(v) => Owned::BF16(flip(v, rows, cols)),
            Owned::F32(v) => Owned::F32(flip(v, rows, cols)),
        }
    }
}

/// `y = W x` for `W` `[y.len(), x.len()]`.
pub fn matvec(w: Stored, x: &[f32], y: &mut [f32]) {
    matvec_many(&mut [(w, y)], x);
}

/// Several products with the same input (a layer's q, k and v; its gate and up) as one
/// parallel job: fewer wake-ups of the other cores per token.
pub fn matvec_many(jobs: &mut [(Stored, &mut [f32])], x: &[f32]) {
    let cols = x.len();
    let mut tasks: Vec<(Stored, usize, &mut [f32])> = Vec::new();
    for (w, y) in jobs.iter_mut() {
        assert_eq!(w.len(), y.len() * cols, "matrix and vectors disagree");
        for (i, chunk) in y.chunks_mut(ROWS_PER_TASK).enumerate() {
            tasks.push((*w, i * ROWS_PER_TASK, chunk));
        }
    }
    let arch = pulp::Arch::new();
    tasks
        .into_par_iter()
        .for_each(|(w, first, out)| arch.dispatch(VecRows { w, first, x, out }));
}

/// Rows `first..` of `W x`: one task of [`matvec_many`], compiled for the CPU's vector width.
struct VecRows<'a, 'b> {
    w: Stored<'a>,
    first: usize,
    x: &'b [f32],
    out: &'b mut [f32],
}

impl pulp::WithSimd for VecRows<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let cols = self.x.len();
        let mut widened = Vec::new();
        for (k, o) in self.out.iter_mut().enumerate() {
            if let Some(p) = self.w.patched_row(self.first + k) {
                *o = dot_f32(p, self.x);
                continue;
            }
            let r = (self.first + k) * cols..(self.first + k + 1) * cols;
            *o = match self.w.elems {
                Elems::BF16(s) => dot_bf16(&s[r], self.x),
                Elems::F32(s) => dot_f32(&s[r], self.x),
                Elems::F16(s) => {
                    widened.clear();
                    widened.extend(s[r].iter().map(|&b| half::f16::from_bits(b).to_f32()));
                    dot_f32(&widened, self.x)
                }
            };
        }
    }
}

/// `y = x W^T` for `t` rows of input `x` (`[t, cols]`, row-major) and `W` `[rows, cols]`:
/// `y` is `[t, rows]`. Each weight row is widened once and met by every input row while it is
/// in cache, four input rows at a time: the weights are read once whatever `t` is.
pub fn matmat(w: Stored, x: &[f32], t: usize, y: &mut [f32]) {
    if t == 1 {
        return matvec(w, x, y);
    }
    let cols = x.len() / t;
    let rows = y.len() / t;
    assert_eq!(w.len(), rows * cols, "matrix and inputs disagree");
    let arch = pulp::Arch::new();
    // Four even tasks per thread (a task's rows are even, for the two-row tiles): a layer's
    // 576 rows as nine tasks of 64 would keep one of two cores idle for a ninth of the time.
    let per = rows
        .div_ceil(4 * rayon::current_num_threads())
        .max(16)
        .next_multiple_of(2);
    let parts: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|task| {
            let first = task * per;
            let n = per.min(rows - first);
            let mut out = vec![0f32; n * t]; // [n, t]
            arch.dispatch(MatRows {
                w,
                first,
                t,
                x,
                out: &mut out,
            });
            (first, out)
        })
        .collect();
    for (first, out) in parts {
        for (k, values) in out.chunks_exact(t).enumerate() {
            for (i, v) in values.iter().enumerate() {
                y[i * rows + first + k] = *v;
            }
        }
    }
}

/// Rows `first..` of `x W^T` (as `[rows, t]`): one task of [`matmat`].
struct MatRows<'a, 'b> {
    w: Stored<'a>,
    first: usize,
    t: usize,
    x: &'b [f32],
    out: &'b mut [f32],
}

impl pulp::WithSimd for MatRows<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let (t, x) = (self.t, self.x);
        let cols = x.len() / t;
        let n = self.out.len() / t;
        let mut rows = vec![0f32; 2 * cols];
        let mut k = 0;
        // Two weight rows at a time: with four input rows, eight independent accumulators
        // keep both FMA units busy through their latency.
        while k + 2 <= n {
            let (r0, r1) = rows.split_at_mut(cols);
            self.w.widen_row(self.first + k, cols, r0);
            self.w.widen_row(self.first + k + 1, cols, r1);
            let (o0, o1) = self.out[k * t..(k + 2) * t].split_at_mut(t);
            let mut i = 0;
            while i + 4 <= t {
                let [a, b] = dot2x4(simd, r0, r1, &x[i * cols..(i + 4) * cols]);
                o0[i..i + 4].copy_from_slice(&a);
                o1[i..i + 4].copy_from_slice(&b);
                i += 4;
            }
            for j in i..t {
                let xj = &x[j * cols..(j + 1) * cols];
                o0[j] = dot_f32(r0, xj);
                o1[j] = dot_f32(r1, xj);
            }
            k += 2;
        }
        if k < n {
            let row = &mut rows[..cols];
            self.w.widen_row(self.first + k, cols, row);
            let out = &mut self.out[k * t..(k + 1) * t];
            let mut i = 0;
            while i + 4 <= t {
                out[i..i + 4].copy_from_slice(&dot4(simd, row, &x[i * cols..(i + 4) * cols]));
                i += 4;
            }
            for (j, o) in out.iter_mut().enumerate().skip(i) {
                *o = dot_f32(row, &x[j * cols..(j + 1) * cols]);
            }
        }
    }
}

/// Dot products of two rows with four consecutive input rows: eight accumulators, six loads
/// for eight fused multiply-adds.
#[inline(always)]
fn dot2x4<S: pulp::Simd>(simd: S, r0: &[f32], r1: &[f32], x4: &[f32]) -> [[f32; 4]; 2] {
    let cols = r0.len();
    let (x0, rest) = x4.split_at(cols);
    let (x1, rest) = rest.split_at(cols);
    let (x2, x3) = rest.split_at(cols);
    let (w0, _) = S::as_simd_f32s(r0);
    let (w1, _) = S::as_simd_f32s(r1);
    let ((p0, _), (p1, _), (p2, _), (p3, _)) = (
        S::as_simd_f32s(x0),
        S::as_simd_f32s(x1),
        S::as_simd_f32s(x2),
        S::as_simd_f32s(x3),
    );
    let z = simd.splat_f32s(0.0);
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let (mut b0, mut b1, mut b2, mut b3) = (z, z, z, z);
    for (((((w0, w1), p0), p1), p2), p3) in w0.iter().zip(w1).zip(p0).zip(p1).zip(p2).zip(p3) {
        a0 = simd.mul_add_e_f32s(*w0, *p0, a0);
        b0 = simd.mul_add_e_f32s(*w1, *p0, b0);
        a1 = simd.mul_add_e_f32s(*w0, *p1, a1);
        b1 = simd.mul_add_e_f32s(*w1, *p1, b1);
        a2 = simd.mul_add_e_f32s(*w0, *p2, a2);
        b2 = simd.mul_add_e_f32s(*w1, *p2, b2);
        a3 = simd.mul_add_e_f32s(*w0, *p3, a3);
        b3 = simd.mul_add_e_f32s(*w1, *p3, b3);
    }
    let whole = w0.len() * (std::mem::size_of::<S::f32s>() / 4);
    let tail = |w: &[f32], x: &[f32]| -> f32 {
        w[whole..].iter().zip(&x[whole..]).map(|(p, q)| p * q).sum()
    };
    [
        [
            simd.reduce_sum_f32s(a0) + tail(r0, x0),
            simd.reduce_sum_f32s(a1) + tail(r0, x1),
            simd.reduce_sum_f32s(a2) + tail(r0, x2),
            simd.reduce_sum_f32s(a3) + tail(r0, x3),
        ],
        [
            simd.reduce_sum_f32s(b0) + tail(r1, x0),
            simd.reduce_sum_f32s(b1) + tail(r1, x1),
            simd.reduce_sum_f32s(b2) + tail(r1, x2),
            simd.reduce_sum_f32s(b3) + tail(r1, x3),
        ],
    ]
}

/// Dot products of one row with four consecutive input rows, in the CPU's vectors (four
/// accumulators: each weight vector loaded once feeds four fused multiply-adds).
#[inline(always)]
fn dot4<S: pulp::Simd>(simd: S, row: &[f32], x4: &[f32]) -> [f32; 4] {
    let cols = row.len();
    let (x0, rest) = x4.split_at(cols);
    let (x1, rest) = rest.split_at(cols);
    let (x2, x3) = rest.split_at(cols);
    let (w, w_tail) = S::as_simd_f32s(row);
    let ((p0, _), (p1, _), (p2, _), (p3, _)) = (
        S::as_simd_f32s(x0),
        S::as_simd_f32s(x1),
        S::as_simd_f32s(x2),
        S::as_simd_f32s(x3),
    );
    let zero = simd.splat_f32s(0.0);
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
    for ((((w, p0), p1), p2), p3) in w.iter().zip(p0).zip(p1).zip(p2).zip(p3) {
        a0 = simd.mul_add_e_f32s(*w, *p0, a0);
        a1 = simd.mul_add_e_f32s(*w, *p1, a1);
        a2 = simd.mul_add_e_f32s(*w, *p2, a2);
        a3 = simd.mul_add_e_f32s(*w, *p3, a3);
    }
    let whole = cols - w_tail.len();
    let tail = |x: &[f32]| -> f32 { w_tail.iter().zip(&x[whole..]).map(|(p, q)| p * q).sum() };
    [
        simd.reduce_sum_f32s(a0) + tail(x0),
        simd.reduce_sum_f32s(a1) + tail(x1),
        simd.reduce_sum_f32s(a2) + tail(x2),
        simd.reduce_sum_f32s(a3) + tail(x3),
    ]
}

#[inline(always)]
fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let whole = w.len() / LANES * LANES;
    for (a, b) in w[..whole]
        .chunks_exact(LANES)
        .zip(x[..whole].chunks_exact(LANES))
    {
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
    for (a, b) in w[..whole]
        .chunks_exact(LANES)
        .zip(x[..whole].chunks_exact(LANES))
    {
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
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 23) as f32 / 8.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: Vec<f32> = values
            .chunks(cols)
            .map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum())
            .collect();
        // These values are exact in every width.
        let bf: Vec<u16> = values
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_bits())
            .collect();
        let hf: Vec<u16> = values
            .iter()
            .map(|v| half::f16::from_f32(*v).to_bits())
            .collect();
        // Bytes as the elements' own (aligned) storage.
        let all = [
            Stored::of(Dtype::BF16, bytemuck::cast_slice(&bf)).unwrap(),
            Stored::of(Dtype::F16, bytemuck::cast_slice(&hf)).unwrap(),
            Stored::of(Dtype::F32, bytemuck::cast_slice(&values)).unwrap(),
        ];
        for w in all {
            let mut y = vec![0f32; rows];
            matvec(w, &x, &mut y);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        // Several input rows at once (4 + a tail of 2) give the same numbers.
        let t = 6;
        let xs: Vec<f32> = (0..t * cols)
            .map(|i| ((i * 31) % 17) as f32 / 4.0 - 2.0)
            .collect();
        for w in all {
            let mut y = vec![0f32; t * rows];
            matmat(w, &xs, t, &mut y);
            for i in 0..t {
                for r in 0..rows {
                    let want: f32 = (0..cols)
                        .map(|c| values[r * cols + c] * xs[i * cols + c])
                        .sum();
                    assert!((y[i * rows + r] - want).abs() < 1e-3, "row {i}, out {r}");
                }
            }
        }
        // Patched rows stand in for the stored ones, in both kernels.
        let mut patched = PatchedRows::new();
        patched.insert(3, vec![1.0; cols]);
        let w = all[0].with_patched(&patched);
        let mut y = vec![0f32; rows];
        matvec(w, &x, &mut y);
        assert!((y[3] - x.iter().sum::<f32>()).abs() < 1e-4);
        assert!((y[4] - want[4]).abs() < 1e-4);
        let mut y = vec![0f32; t * rows];
        matmat(w, &xs, t, &mut y);
        assert!((y[rows + 3] - xs[cols..2 * cols].iter().sum::<f32>()).abs() < 1e-4);
        assert_eq!(w.row(3, cols), vec![1.0; cols]);
        assert!(Stored::of(Dtype::I8, bytemuck::cast_slice(&bf)).is_none());
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// GFLOP/s of `matmat` on a layer's shapes (run with `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn matmat_speed() {
        for (rows, cols, t) in [
            (1536, 576, 100),
            (576, 1536, 100),
            (576, 576, 40),
            (1536, 576, 154),
        ] {
            let w: Vec<u16> = (0..rows * cols)
                .map(|i| half::bf16::from_f32(((i * 7919) % 23) as f32 / 8.0 - 1.0).to_bits())
                .collect();
            let x: Vec<f32> = (0..t * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let s = Stored::of(Dtype::BF16, bytemuck::cast_slice(&w)).unwrap();
            let mut y = vec![0f32; t * rows];
            matmat(s, &x, t, &mut y);
            let reps = 50;
            let start = std::time::Instant::now();
            for _ in 0..reps {
                matmat(s, &x, t, &mut y);
            }
            let secs = start.elapsed().as_secs_f64();
            let flop = 2.0 * (rows * cols * t * reps) as f64;
            let wf: Vec<f32> = w
                .iter()
                .map(|&b| half::bf16::from_bits(b).to_f32())
                .collect();
            let wt =
                candle_core::Tensor::from_vec(wf, (rows, cols), &candle_core::Device::Cpu).unwrap();
            let xt = candle_core::Tensor::from_vec(x.clone(), (t, cols), &candle_core::Device::Cpu)
                .unwrap();
            let start = std::time::Instant::now();
            for _ in 0..reps {
                xt.matmul(&wt.t().unwrap()).unwrap();
            }
            let csecs = start.elapsed().as_secs_f64();
            println!(
                "{rows}x{cols} t={t}: kernel {:.1} GFLOP/s, candle {:.1} GFLOP/s",
                flop / secs / 1e9,
                flop / csecs / 1e9
            );
        }
    }
}
