//! Products with weights at their stored width: a decode step reads every weight once, so the
//! bytes read set the speed, and a BF16 matrix read as BF16 (from the memory map) costs half of
//! its f32 widening. Edited matrices are the mapped base plus their edited rows (copy on write:
//! an edit costs its rows, not a copy of the tensor). The loops are plain Rust compiled for the
//! CPU found at run time (AVX2/FMA or AVX-512 where present, through `pulp`'s dispatch), split
//! over the cores by rows.

use rayon::prelude::*;
use std::collections::HashMap;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::gguf::quant::layout::{self, Layout, Unpacked, WithLayout};
use tensor_surgeon_core::gguf::{quant, GgmlType};

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
    /// A GGUF's quantized blocks, each row whole blocks.
    Blocks(GgmlType, &'a [u8]),
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

    /// Quantized blocks of `ty` as stored, rows of `cols` elements (whole blocks each): the
    /// products decode them a block at a time, in registers. `None` for a type that cannot
    /// be read, or rows that are not whole blocks.
    pub fn blocks(ty: GgmlType, bytes: &'a [u8], cols: usize) -> Option<Stored<'a>> {
        let whole = ty.is_quantized()
            && quant::can_decode(ty)
            && cols.is_multiple_of(ty.block_elements())
            && bytes.len().is_multiple_of(ty.block_bytes());
        whole.then_some(Stored {
            elems: Elems::Blocks(ty, bytes),
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
            Elems::Blocks(ty, b) => {
                let row = row_bytes(ty, cols);
                let done = layout::decode_into(ty, &b[r * row..(r + 1) * row], out);
                debug_assert!(done.is_some(), "{ty} blocks without a layout");
            }
        }
    }

    fn len(&self) -> usize {
        match self.elems {
            Elems::BF16(s) | Elems::F16(s) => s.len(),
            Elems::F32(s) => s.len(),
            Elems::Blocks(ty, b) => b.len() / ty.block_bytes() * ty.block_elements(),
        }
    }
}

/// Bytes of a row of `cols` elements in blocks of `ty`.
fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    cols / ty.block_elements() * ty.block_bytes()
}

/// A matrix copied out of the weights for work that keeps it (the fact editor's optimisation):
/// at the stored width when it can be (BF16 stays BF16, a GGUF's quantized blocks stay
/// blocks), otherwise widened. Its products with the matrix and with its transpose both read
/// it as stored ([`matmat`], [`matmat_transposed`]): no widened or transposed copy.
pub enum Owned {
    BF16(Vec<u16>),
    F32(Vec<f32>),
    Blocks(GgmlType, Vec<u8>),
}

impl Owned {
    /// A copy of `w` (`[rows, cols]`).
    pub fn of(w: Stored, rows: usize, cols: usize) -> Owned {
        match w.elems {
            Elems::BF16(s) if w.patched.is_none() => Owned::BF16(s.to_vec()),
            Elems::Blocks(ty, b) if w.patched.is_none() => Owned::Blocks(ty, b.to_vec()),
            _ => Owned::F32((0..rows).flat_map(|r| w.row(r, cols)).collect()),
        }
    }

    /// The transpose of this `[rows, cols]` matrix at the same width; `None` for blocks (a
    /// row of blocks cannot be cut into columns).
    pub fn transposed(&self, rows: usize, cols: usize) -> Option<Owned> {
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
            Owned::BF16(v) => Some(Owned::BF16(flip(v, rows, cols))),
            Owned::F32(v) => Some(Owned::F32(flip(v, rows, cols))),
            Owned::Blocks(..) => None,
        }
    }

    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        match self {
            Owned::BF16(v) => v.len() * 2,
            Owned::F32(v) => v.len() * 4,
            Owned::Blocks(_, b) => b.len(),
        }
    }

    /// The matrix for the kernels.
    pub fn stored(&self) -> Stored<'_> {
        let elems = match self {
            Owned::BF16(v) => Elems::BF16(v),
            Owned::F32(v) => Elems::F32(v),
            Owned::Blocks(ty, b) => Elems::Blocks(*ty, b),
        };
        Stored {
            elems,
            patched: None,
        }
    }
}

/// `y = g W` for `t` rows of `g` (`[t, rows]`) and `W` `[rows, cols]` as stored: `y` is
/// `[t, cols]`. The product with the transpose, as a gradient through `x Wᵀ` needs it. Each
/// task owns a share of `W`'s rows and a `[t, cols]` part of `y` (the parts are summed): it
/// widens its rows [`TRANSPOSED_ROWS`] at a time (a quantized row block by block) and adds
/// them into four rows of its part at once, so a widened row is read from cache once per
/// four outputs and each output row stays in the first-level cache while the rows pass.
pub fn matmat_transposed(w: Stored, g: &[f32], t: usize, y: &mut [f32]) {
    let rows = g.len() / t.max(1);
    let cols = y.len() / t.max(1);
    assert_eq!(w.len(), rows * cols, "matrix and gradients disagree");
    let per = rows.div_ceil(2 * rayon::current_num_threads()).max(1);
    let parts: Vec<Vec<f32>> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|task| {
            let mut part = vec![0f32; t * cols];
            let mut widened = vec![0f32; TRANSPOSED_ROWS * cols];
            let (first, end) = (task * per, ((task + 1) * per).min(rows));
            for block in (first..end).step_by(TRANSPOSED_ROWS) {
                let n = TRANSPOSED_ROWS.min(end - block);
                for (k, row) in widened.chunks_exact_mut(cols).take(n).enumerate() {
                    w.widen_row(block + k, cols, row);
                }
                let widened = &widened[..n * cols];
                let mut outs = part.chunks_exact_mut(cols).enumerate();
                loop {
                    let mut four: Vec<(usize, &mut [f32])> = outs.by_ref().take(4).collect();
                    if four.is_empty() {
                        break;
                    }
                    if let [(i0, o0), (i1, o1), (i2, o2), (i3, o3)] = &mut four[..] {
                        for (k, row) in widened.chunks_exact(cols).enumerate() {
                            let r = block + k;
                            let s = [
                                g[*i0 * rows + r],
                                g[*i1 * rows + r],
                                g[*i2 * rows + r],
                                g[*i3 * rows + r],
                            ];
                            if s == [0.0; 4] {
                                continue;
                            }
                            for ((((a, b), c), d), &v) in o0
                                .iter_mut()
                                .zip(o1.iter_mut())
                                .zip(o2.iter_mut())
                                .zip(o3.iter_mut())
                                .zip(row)
                            {
                                *a += s[0] * v;
                                *b += s[1] * v;
                                *c += s[2] * v;
                                *d += s[3] * v;
                            }
                        }
                        continue;
                    }
                    for (i, out) in four {
                        for (k, row) in widened.chunks_exact(cols).enumerate() {
                            let s = g[i * rows + block + k];
                            if s != 0.0 {
                                for (o, &v) in out.iter_mut().zip(row) {
                                    *o += s * v;
                                }
                            }
                        }
                    }
                }
            }
            part
        })
        .collect();
    y.fill(0.0);
    for part in parts {
        for (o, v) in y.iter_mut().zip(part) {
            *o += v;
        }
    }
}

/// Rows of `W` a task of [`matmat_transposed`] widens at once.
const TRANSPOSED_ROWS: usize = 32;

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
        if let Elems::Blocks(ty, bytes) = self.w.elems {
            let rows = BlockRows {
                w: self.w,
                bytes,
                row: row_bytes(ty, cols),
                first: self.first,
                x: self.x,
                out: self.out,
            };
            let done = layout::with_layout(ty, rows);
            debug_assert!(done.is_some(), "{ty} blocks without a layout");
            return;
        }
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
                Elems::Blocks(..) => unreachable!("handled above"),
            };
        }
    }
}

/// Rows `first..` of `W x` for quantized blocks of one layout (a task of [`matvec_many`]).
struct BlockRows<'a, 'b> {
    w: Stored<'a>,
    bytes: &'a [u8],
    /// Bytes per row.
    row: usize,
    first: usize,
    x: &'b [f32],
    out: &'b mut [f32],
}

impl WithLayout for BlockRows<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with<L: Layout>(self) {
        // The sum of the inputs over each sub-block, for the types whose values have an
        // offset: Σ (d·q + m)·x = d·Σ q·x + m·Σ x.
        let sums: Vec<f32> = match L::OFFSET {
            true => self.x.chunks(L::SUB).map(|c| c.iter().sum()).collect(),
            false => Vec::new(),
        };
        let mut u = Unpacked::default();
        #[cfg(target_arch = "x86_64")]
        let fast = crate::kernel_x86::available();
        for (k, o) in self.out.iter_mut().enumerate() {
            let r = self.first + k;
            if let Some(p) = self.w.patched_row(r) {
                *o = dot_f32(p, self.x);
                continue;
            }
            let bytes = &self.bytes[r * self.row..(r + 1) * self.row];
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: the CPU has what the path needs (checked above); `bytes` is whole
                // blocks of this row and `x` its width.
                if let Some(v) = unsafe { crate::kernel_x86::dot(L::TYPE, bytes, self.x, &sums) } {
                    *o = v;
                    continue;
                }
            }
            *o = dot_blocks::<L>(bytes, self.x, &sums, &mut u);
        }
    }
}

/// A row of blocks times `x`: each block unpacked to its integer codes, each sub-block's
/// `Σ code·x` in vector lanes, scaled by the sub-block's scale (plus its offset times the
/// inputs' sum): the weights are never widened to memory.
#[inline(always)]
fn dot_blocks<L: Layout>(row: &[u8], x: &[f32], sums: &[f32], u: &mut Unpacked) -> f32 {
    const W: usize = 8;
    let subs = L::ELEMS / L::SUB;
    let mut total = [0f32; W];
    let mut offset = 0f32;
    let blocks = row.chunks_exact(L::BYTES).zip(x.chunks_exact(L::ELEMS));
    for (i, (b, xb)) in blocks.enumerate() {
        L::unpack(b, u);
        let parts = u.codes[..L::ELEMS]
            .chunks_exact(L::SUB)
            .zip(xb.chunks_exact(L::SUB));
        for (s, (codes, xs)) in parts.enumerate() {
            let mut acc = [0f32; W];
            for (c, xv) in codes.chunks_exact(W).zip(xs.chunks_exact(W)) {
                for l in 0..W {
                    acc[l] += f32::from(c[l]) * xv[l];
                }
            }
            let d = u.scales[s];
            for l in 0..W {
                total[l] += d * acc[l];
            }
            if L::OFFSET {
                offset += u.offsets[s] * sums[i * subs + s];
            }
        }
    }
    total.iter().sum::<f32>() + offset
}

/// Input rows met at once: two vectors of AVX2's width, one of AVX-512's.
const GROUP: usize = 16;
/// Weight rows a task's share is a multiple of: every block height below divides it.
const BLOCK: usize = 12;
/// Bytes of interleaved inputs a block of weight rows meets before the next block.
const CACHED: usize = 256 << 10;

/// `y = x W^T` for `t` rows of input `x` (`[t, cols]`, row-major) and `W` `[rows, cols]`:
/// `y` is `[t, rows]`. Blocked as BLAS libraries do, on the weights as stored: the inputs are
/// interleaved once by groups of sixteen rows (`[cols][16]`), and each task widens a few weight
/// rows at a time (read once, whatever `t` is) and meets every input group with them as
/// outer products: each weight element broadcast against sixteen inputs, no horizontal sums.
pub fn matmat(w: Stored, x: &[f32], t: usize, y: &mut [f32]) {
    if t == 1 {
        return matvec(w, x, y);
    }
    let cols = x.len() / t;
    let rows = y.len() / t;
    assert_eq!(w.len(), rows * cols, "matrix and inputs disagree");
    let groups = interleave(x, t, cols);
    // Four tasks per thread: a layer's 576 rows as nine tasks would keep one of two cores
    // idle for a ninth of the time.
    let per = rows
        .div_ceil(4 * rayon::current_num_threads())
        .next_multiple_of(BLOCK);
    let arch = pulp::Arch::new();
    let parts: Vec<(usize, usize, Vec<f32>)> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|task| {
            let first = task * per;
            let n = per.min(rows - first);
            let mut out = vec![0f32; t * n]; // [t, n]
            arch.dispatch(Blocks {
                w,
                first,
                cols,
                groups: &groups,
                t,
                out: &mut out,
            });
            (first, n, out)
        })
        .collect();
    for (first, n, out) in parts {
        for (i, values) in out.chunks_exact(n).enumerate() {
            y[i * rows + first..i * rows + first + n].copy_from_slice(values);
        }
    }
}

/// The input rows by groups of [`GROUP`], each group column by column (`[cols][16]`; the last
/// group's missing rows are zeros).
fn interleave(x: &[f32], t: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; t.div_ceil(GROUP) * GROUP * cols];
    for (g, group) in out.chunks_exact_mut(GROUP * cols).enumerate() {
        for i in 0..GROUP.min(t - g * GROUP) {
            let row = &x[(g * GROUP + i) * cols..][..cols];
            for (slot, &v) in group[i..].iter_mut().step_by(GROUP).zip(row) {
                *slot = v;
            }
        }
    }
    out
}

/// Output columns `first..` of `x W^T` (as `[t, n]`): one task of [`matmat`].
struct Blocks<'a, 'b> {
    w: Stored<'a>,
    first: usize,
    cols: usize,
    groups: &'b [f32],
    t: usize,
    out: &'b mut [f32],
}

impl pulp::WithSimd for Blocks<'_, '_> {
    type Output = ();

    /// Twelve accumulators however wide the vectors: a fused multiply-add's latency times
    /// the two a core starts per cycle (AVX-512: twelve weight rows against one vector of
    /// sixteen inputs; AVX2: six rows against two vectors).
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        match std::mem::size_of::<S::f32s>() / 4 {
            16 => self.run::<S, 1, 12>(simd),
            8 => self.run::<S, 2, 6>(simd),
            4 => self.run::<S, 4, 6>(simd),
            _ => self.run_scalar(),
        }
    }
}

impl Blocks<'_, '_> {
    /// The blocks of `R` weight rows, with `V` vectors per group of sixteen inputs.
    #[inline(always)]
    fn run<S: pulp::Simd, const V: usize, const R: usize>(self, simd: S) {
        let (cols, t) = (self.cols, self.t);
        let n = self.out.len() / t;
        let mut block = vec![0f32; R * cols];
        // The groups a block meets while they stay in the core's cache (a quarter of a MiB).
        let per = (CACHED / (4 * GROUP * cols)).max(1);
        let groups: Vec<&[f32]> = self.groups.chunks_exact(GROUP * cols).collect();
        for (c, chunk) in groups.chunks(per).enumerate() {
            for b in (0..n).step_by(R) {
                let height = R.min(n - b);
                for (j, row) in block.chunks_exact_mut(cols).enumerate() {
                    match j < height {
                        true => self.w.widen_row(self.first + b + j, cols, row),
                        false => row.fill(0.0),
                    }
                }
                for (g, group) in chunk.iter().enumerate() {
                    let tile = tile::<S, V, R>(simd, &block, group);
                    let first = (c * per + g) * GROUP;
                    for (j, sums) in tile.iter().enumerate().take(height) {
                        for (i, &v) in sums.iter().enumerate().take(t - first) {
                            self.out[(first + i) * n + b + j] = v;
                        }
                    }
                }
            }
        }
    }

    /// Plain loops where the CPU has no vectors `pulp` knows.
    fn run_scalar(self) {
        let (cols, t) = (self.cols, self.t);
        let n = self.out.len() / t;
        let mut row = vec![0f32; cols];
        for j in 0..n {
            self.w.widen_row(self.first + j, cols, &mut row);
            for i in 0..t {
                let group = &self.groups[i / GROUP * GROUP * cols..];
                self.out[i * n + j] = (0..cols)
                    .map(|k| row[k] * group[k * GROUP + i % GROUP])
                    .sum();
            }
        }
    }
}

/// `R` widened weight rows (`[R][cols]`) times one group of sixteen inputs (`[cols][16]`):
/// `[R][16]` sums over the columns.
#[inline(always)]
fn tile<S: pulp::Simd, const V: usize, const R: usize>(
    simd: S,
    block: &[f32],
    group: &[f32],
) -> [[f32; GROUP]; R] {
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; V]; R];
    let cols = block.len() / R;
    let rows: [&[f32]; R] = std::array::from_fn(|r| &block[r * cols..][..cols]);
    for (k, xk) in group.chunks_exact(GROUP).take(cols).enumerate() {
        let (xv, _) = S::as_simd_f32s(xk);
        let mut x = [zero; V];
        x.copy_from_slice(&xv[..V]);
        for (acc, row) in acc.iter_mut().zip(&rows) {
            let w = simd.splat_f32s(row[k]);
            for (a, x) in acc.iter_mut().zip(&x) {
                *a = simd.mul_add_e_f32s(w, *x, *a);
            }
        }
    }
    let mut out = [[0f32; GROUP]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        let (lanes, _) = S::as_mut_simd_f32s(o);
        lanes[..V].copy_from_slice(a);
    }
    out
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
        // Several input rows at once (a part of one group) give the same numbers.
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
        // Inputs past one group, past one cache-sized chunk of groups and ending in a short
        // chunk (three groups of 2,048 columns, two to a chunk), and a tail of weight rows.
        {
            let (rows, cols, t) = (14, 2048, 40);
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919) % 23) as f32 / 8.0 - 1.0)
                .collect();
            let xs: Vec<f32> = (0..t * cols)
                .map(|i| ((i * 31) % 17) as f32 / 4.0 - 2.0)
                .collect();
            let mut y = vec![0f32; t * rows];
            matmat(
                Stored::of(Dtype::F32, bytemuck::cast_slice(&values)).unwrap(),
                &xs,
                t,
                &mut y,
            );
            for i in 0..t {
                for r in 0..rows {
                    let want: f32 = (0..cols)
                        .map(|c| values[r * cols + c] * xs[i * cols + c])
                        .sum();
                    assert!((y[i * rows + r] - want).abs() < 1e-2, "row {i}, out {r}");
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
mod block_tests {
    use super::*;

    /// Blocks of every type that decode to finite values: quantized by candle where it can
    /// quantize into the type, else bytes of a fixed pattern with their scales set to
    /// small ones.
    fn blocks_of(ty: GgmlType, values: &[f32]) -> Vec<u8> {
        if crate::blocks::can_encode(ty) {
            return crate::blocks::encode(ty, values).unwrap();
        }
        let n = values.len() / ty.block_elements();
        let mut bytes: Vec<u8> = (0..n * ty.block_bytes())
            .map(|i| (i * 7919 % 251) as u8)
            .collect();
        let scale = half::f16::from_f32(0.03).to_le_bytes();
        for b in bytes.chunks_exact_mut(ty.block_bytes()) {
            match ty {
                GgmlType::IQ4_NL | GgmlType::IQ4_XS => b[..2].copy_from_slice(&scale),
                GgmlType::TQ1_0 => b[52..54].copy_from_slice(&scale),
                GgmlType::TQ2_0 => b[64..66].copy_from_slice(&scale),
                GgmlType::MXFP4 => b[0] = 120,
                GgmlType::NVFP4 => b[..4].copy_from_slice(&[40, 48, 56, 30]),
                other => panic!("{other}: no pattern"),
            }
        }
        bytes
    }

    /// Every readable block type: a row decodes to the reference decoder's values exactly,
    /// and both kernels give the product with those values (up to summation order).
    #[test]
    fn quantized_blocks_multiply_as_their_decoded_values() {
        let types = tensor_surgeon_core::gguf::ALL_TYPES
            .into_iter()
            .filter(|t| t.is_quantized() && quant::can_decode(*t));
        let mut seen = 0;
        for ty in types {
            // Two super-blocks per row, five rows (one patched).
            let (rows, cols) = (5, 512);
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let bytes = blocks_of(ty, &values);
            let decoded = quant::to_f32(ty, &bytes).unwrap();
            let w = Stored::blocks(ty, &bytes, cols).unwrap();
            for r in 0..rows {
                assert_eq!(w.row(r, cols), decoded[r * cols..(r + 1) * cols], "{ty}");
            }
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut patched = PatchedRows::new();
            patched.insert(2, vec![0.5; cols]);
            let w = w.with_patched(&patched);
            let mut want: Vec<f32> = decoded
                .chunks(cols)
                .map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum())
                .collect();
            want[2] = x.iter().sum::<f32>() * 0.5;
            let mut y = vec![0f32; rows];
            matvec(w, &x, &mut y);
            let scale = decoded.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-5 * scale * cols as f32,
                    "{ty}: {a} vs {b}"
                );
            }
            let t = 3;
            let xs: Vec<f32> = (0..t * cols).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut y = vec![0f32; t * rows];
            matmat(w, &xs, t, &mut y);
            for i in 0..t {
                for r in 0..rows {
                    let row = match r {
                        2 => &patched[&2][..],
                        _ => &decoded[r * cols..(r + 1) * cols],
                    };
                    let want: f32 = row.iter().zip(&xs[i * cols..]).map(|(a, b)| a * b).sum();
                    let got = y[i * rows + r];
                    assert!((got - want).abs() < 1e-5 * scale * cols as f32, "{ty}");
                }
            }
            // The product with the transpose: y = g W, seven rows of g (four at once, then
            // three one by one).
            let t = 7;
            let g: Vec<f32> = (0..t * rows).map(|i| (i as f32 * 0.29).sin()).collect();
            let mut y = vec![0f32; t * cols];
            matmat_transposed(w, &g, t, &mut y);
            for i in 0..t {
                for c in 0..cols {
                    let want: f32 = (0..rows)
                        .map(|r| {
                            let v = if r == 2 { 0.5 } else { decoded[r * cols + c] };
                            g[i * rows + r] * v
                        })
                        .sum();
                    let got = y[i * cols + c];
                    assert!(
                        (got - want).abs() < 1e-5 * scale * rows as f32,
                        "{ty}: {got} vs {want}"
                    );
                }
            }
            seen += 1;
        }
        assert_eq!(seen, 16, "every readable block type");
        // Rows that are not whole blocks are not read as blocks.
        assert!(Stored::blocks(GgmlType::Q8_0, &[0; 34], 16).is_none());
        assert!(Stored::blocks(GgmlType::IQ2_XXS, &[0; 66], 256).is_none());
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
