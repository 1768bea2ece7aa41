//! UMAP's spectral start: the leading nontrivial eigenvectors of the neighbour graph's
//! normalised adjacency, for a graph given in CSR form.

use faer::{Mat, Side};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Subspace iterations.
const SPECTRAL_STEPS: usize = 150;

/// The leading nontrivial eigenvectors of the graph's normalised adjacency (the smallest of
/// its normalised Laplacian, as umap-learn's spectral start): subspace iteration on
/// `(I + D^-1/2 W D^-1/2) / 2` (row-major blocks, rows in parallel), re-orthonormalised every
/// few steps, then Rayleigh-Ritz.
pub(super) fn start(
    rows: &[usize],
    cols: &[u32],
    vals: &[f32],
    n: usize,
    dims: usize,
    seed: u64,
) -> Vec<f32> {
    let b = dims + 1 + 4;
    let dinv: Vec<f64> = (0..n)
        .map(|i| {
            let d: f64 = vals[rows[i]..rows[i + 1]]
                .iter()
                .map(|&v| f64::from(v))
                .sum();
            if d > 0.0 {
                1.0 / d.sqrt()
            } else {
                0.0
            }
        })
        .collect();
    // The operator on an `n x b` row-major block.
    let apply = |q: &[f64], out: &mut [f64]| {
        out.par_chunks_mut(b).enumerate().for_each(|(i, row)| {
            row.copy_from_slice(&q[i * b..(i + 1) * b]);
            let mut acc = [0.0f64; 16];
            for e in rows[i]..rows[i + 1] {
                let j = cols[e] as usize;
                let w = f64::from(vals[e]) * dinv[j];
                for (a, v) in acc.iter_mut().zip(&q[j * b..(j + 1) * b]) {
                    *a += w * v;
                }
            }
            for (r, a) in row.iter_mut().zip(&acc) {
                *r = 0.5 * (*r + dinv[i] * a);
            }
        });
    };
    let orthonormal = |q: &[f64]| -> Vec<f64> {
        let m = Mat::from_fn(n, b, |i, c| q[i * b + c])
            .qr()
            .compute_thin_Q();
        let mut out = vec![0.0; n * b];
        for i in 0..n {
            for c in 0..b {
                out[i * b + c] = m[(i, c)];
            }
        }
        out
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EC7);
    let normal = Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!("unit normal"));
    let mut q = orthonormal(
        &(0..n * b)
            .map(|_| normal.sample(&mut rng))
            .collect::<Vec<f64>>(),
    );
    let mut next = vec![0.0; n * b];
    for step in 1..=SPECTRAL_STEPS {
        apply(&q, &mut next);
        std::mem::swap(&mut q, &mut next);
        if step % 5 == 0 {
            q = orthonormal(&q);
        }
    }
    q = orthonormal(&q);
    apply(&q, &mut next);
    // Rayleigh-Ritz: the small matrix Q^T A Q.
    let t = Mat::from_fn(b, b, |r, c| {
        (0..n).map(|i| q[i * b + r] * next[i * b + c]).sum::<f64>()
    });
    let sym = Mat::from_fn(b, b, |i, j| 0.5 * (t[(i, j)] + t[(j, i)]));
    let Ok(eig) = sym.self_adjoint_eigen(Side::Lower) else {
        return Vec::new();
    };
    // Ascending eigenvalues: the last is the trivial one (D^1/2 1); the next `dims` below it.
    let v = eig.U();
    let mut out = vec![0.0f32; n * dims];
    for c in 0..dims {
        let col = b - 2 - c;
        for i in 0..n {
            let s: f64 = (0..b).map(|r| q[i * b + r] * v[(r, col)]).sum();
            out[i * dims + c] = s as f32;
        }
    }
    out
}
