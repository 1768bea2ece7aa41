//! The thin singular value decomposition of a matrix (faer's, in f64): what a truncated
//! low-rank factorisation is cut from. By Eckart and Young, keeping the `k` largest singular
//! triplets gives the best rank-`k` approximation in the Frobenius norm, and its error is
//! exactly the energy of the dropped ones: `‖M − M_k‖²_F = Σ_{i>k} σ_i²`.

use crate::error::LayoutError;
use faer::Mat;

/// `M = U diag(S) Vᵀ`, singular values descending.
pub struct Svd {
    pub rows: usize,
    pub cols: usize,
    /// `[rows, n]` row-major, `n = min(rows, cols)`.
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    /// `[cols, n]` row-major.
    pub v: Vec<f64>,
}

impl Svd {
    /// The number of singular triplets.
    pub fn len(&self) -> usize {
        self.s.len()
    }

    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    /// The share of `Σ σ²` the triplets past the first `k` hold (0 when `M` is zero).
    pub fn dropped_energy(&self, k: usize) -> f64 {
        let total: f64 = self.s.iter().map(|s| s * s).sum();
        if total == 0.0 {
            return 0.0;
        }
        self.s.iter().skip(k).map(|s| s * s).sum::<f64>() / total
    }
}

/// The thin SVD of the `rows x cols` row-major matrix `m`.
pub fn thin(m: &[f32], rows: usize, cols: usize) -> Result<Svd, LayoutError> {
    crate::deterministic();
    let a = Mat::from_fn(rows, cols, |i, j| f64::from(m[i * cols + j]));
    let svd = a
        .thin_svd()
        .map_err(|e| LayoutError::NoConvergence(format!("{e:?}")))?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let n = rows.min(cols);
    Ok(Svd {
        rows,
        cols,
        u: (0..rows)
            .flat_map(|i| (0..n).map(move |c| u[(i, c)]))
            .collect(),
        s: (0..n).map(|c| s[c]).collect(),
        v: (0..cols)
            .flat_map(|j| (0..n).map(move |c| v[(j, c)]))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rank_two_matrix_has_two_singular_values_and_rebuilds() {
        // m = 3·a bᵀ + 1·c dᵀ with orthonormal pairs.
        let (rows, cols) = (4, 3);
        let a = [0.5f32, 0.5, 0.5, 0.5];
        let c = [0.5f32, -0.5, 0.5, -0.5];
        let b = [1.0f32, 0.0, 0.0];
        let d = [0.0f32, 0.6, 0.8];
        let m: Vec<f32> = (0..rows)
            .flat_map(|i| (0..cols).map(move |j| 3.0 * a[i] * b[j] + c[i] * d[j]))
            .collect();
        let svd = super::thin(&m, rows, cols).unwrap();
        assert_eq!(svd.len(), 3);
        assert!((svd.s[0] - 3.0).abs() < 1e-6 && (svd.s[1] - 1.0).abs() < 1e-6);
        assert!(svd.s[2].abs() < 1e-6);
        assert!((svd.dropped_energy(1) - 0.1).abs() < 1e-6);
        assert!(svd.dropped_energy(2) < 1e-12);
        for i in 0..rows {
            for j in 0..cols {
                let back: f64 = (0..3)
                    .map(|k| svd.u[i * 3 + k] * svd.s[k] * svd.v[j * 3 + k])
                    .sum();
                assert!((back - f64::from(m[i * cols + j])).abs() < 1e-6);
            }
        }
    }
}
