//! PCA of the rows (or columns) of a 2-D view: randomized truncated SVD (Halko,
//! Martinsson & Tropp; the scheme scikit-learn uses) with faer for the products, QR and the
//! small SVD. The matrix is read in row bands through the overlay: small matrices are decoded
//! once and kept, large ones are streamed again for each product, so memory stays at a few
//! `n x (k + 10)` matrices.

use crate::error::{LayoutError, Result};
use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::ops::Range;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::overlay::Patched;
use tensor_surgeon_core::slice::Axis;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_wire::Projection;

/// Rows per band.
const BAND: u64 = 2048;
/// Matrices up to this many elements are decoded once and kept (f64: 512 MiB).
const KEEP_ELEMENTS: u64 = 64 << 20;
/// Extra random directions beyond the components asked for.
const OVERSAMPLES: usize = 10;

/// What to project.
pub struct Input<'a> {
    pub dtype: Dtype,
    pub shape: &'a [u64],
    /// The 2-D view whose rows are the points (repaired).
    pub spec: ViewSpec,
    pub source: &'a Patched<'a>,
    /// Points are the view's columns instead of its rows.
    pub columns: bool,
    /// Scale every point to unit L2 norm before centring.
    pub normalize: bool,
}

/// The matrix, centred (and normalised), one band at a time.
struct Bands<'a> {
    input: &'a Input<'a>,
    spec: ViewSpec,
    n: usize,
    d: usize,
    mean: Vec<f64>,
    kept: Option<Vec<Mat<f64>>>,
}

impl Bands<'_> {
    fn ranges(&self) -> Vec<Range<u64>> {
        (0..self.n as u64)
            .step_by(BAND as usize)
            .map(|s| s..(s + BAND).min(self.n as u64))
            .collect()
    }

    /// Rows `r` of the raw matrix (points x features), optionally unit-norm rows; the norms.
    fn raw(&self, r: &Range<u64>) -> (Mat<f64>, Vec<f64>) {
        let inp = self.input;
        let mut sel = self.spec.selection(inp.shape);
        if let Some(yd) = self.spec.y_dim {
            sel.axes[yd as usize] = Axis {
                start: self.spec.y.index(r.start),
                step: self.spec.y.step as i64,
                count: r.end - r.start,
            };
        }
        let bytes = tensor_surgeon_core::source::extract(inp.dtype, inp.shape, &sel, inp.source);
        let mut values = Vec::new();
        dtype::decode_f64_into(inp.dtype, &bytes, &mut values);
        let rows = (r.end - r.start) as usize;
        let mut m = Mat::from_fn(rows, self.d, |i, j| values[i * self.d + j]);
        let mut norms = Vec::with_capacity(rows);
        for i in 0..rows {
            let norm = (0..self.d)
                .map(|j| m[(i, j)] * m[(i, j)])
                .sum::<f64>()
                .sqrt();
            norms.push(norm);
            if inp.normalize && norm > 0.0 {
                for j in 0..self.d {
                    m[(i, j)] /= norm;
                }
            }
        }
        (m, norms)
    }

    /// Calls `f(first row, centred band)` for every band, in parallel, collecting results.
    fn map<T: Send>(&self, f: impl Fn(usize, &Mat<f64>) -> T + Sync) -> Vec<T> {
        if let Some(kept) = &self.kept {
            return kept
                .par_iter()
                .enumerate()
                .map(|(b, m)| f(b * BAND as usize, m))
                .collect();
        }
        self.ranges()
            .par_iter()
            .map(|r| {
                let mut m = self.raw(r).0;
                self.center(&mut m);
                f(r.start as usize, &m)
            })
            .collect()
    }

    fn center(&self, m: &mut Mat<f64>) {
        for j in 0..self.d {
            for i in 0..m.nrows() {
                m[(i, j)] -= self.mean[j];
            }
        }
    }

    /// `X * m` (n x l).
    fn times(&self, m: &Mat<f64>) -> Mat<f64> {
        let parts = self.map(|_, band| band * m);
        let mut out = Mat::zeros(self.n, m.ncols());
        let mut row = 0;
        for p in parts {
            for i in 0..p.nrows() {
                for j in 0..p.ncols() {
                    out[(row + i, j)] = p[(i, j)];
                }
            }
            row += p.nrows();
        }
        out
    }

    /// `X^T * y` (d x l).
    fn t_times(&self, y: &Mat<f64>) -> Mat<f64> {
        let parts = self.map(|first, band| {
            let rows = y.as_ref().subrows(first, band.nrows());
            band.transpose() * rows
        });
        let mut out = Mat::zeros(self.d, y.ncols());
        for p in parts {
            out += p;
        }
        out
    }
}

/// The points' first principal components.
pub(super) struct Decomposed {
    /// Scores, `n x k` row-major.
    pub points: Vec<f32>,
    pub k: usize,
    pub variance: Vec<f64>,
    pub ratio: Vec<f64>,
    pub components: Vec<Vec<f64>>,
    /// Each point's L2 norm (before normalisation).
    pub norms: Vec<f32>,
    /// The tensor index of each point.
    pub index: Vec<u64>,
}

/// Projects the points onto their first `k` (1 to 3) principal components.
pub fn project(
    input: &Input<'_>,
    k: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Projection> {
    super::deterministic();
    let p = decompose(input, k.clamp(1, 3), progress)?;
    Ok(Projection {
        n: p.norms.len() as u64,
        dims: p.k as u32,
        explained_variance: p.variance,
        explained_ratio: p.ratio,
        components: p.components,
        points: p.points,
        norms: p.norms,
        index: p.index,
        ..Projection::default()
    })
}

/// The view as it is laid out: the 2-D view with points as rows.
pub(super) fn point_spec(input: &Input<'_>) -> ViewSpec {
    let mut spec = input.spec.clone();
    if input.columns {
        std::mem::swap(&mut spec.y_dim, &mut spec.x_dim);
        std::mem::swap(&mut spec.y, &mut spec.x);
    }
    spec
}

/// Points as rows of features: `n x width` row-major, with each point's norm and tensor index.
pub(super) struct Features {
    pub x: Vec<f32>,
    pub width: usize,
    pub norms: Vec<f32>,
    pub index: Vec<u64>,
}

/// Every point with every feature (normalised when asked, not centred).
pub(super) fn matrix(input: &Input<'_>) -> Result<Features> {
    let spec = point_spec(input);
    let (n, d) = spec.cells();
    let (n, d) = (n as usize, d as usize);
    let bands = Bands {
        input,
        spec,
        n,
        d,
        mean: Vec::new(),
        kept: None,
    };
    let parts: Vec<(Mat<f64>, Vec<f64>)> =
        bands.ranges().par_iter().map(|r| bands.raw(r)).collect();
    let mut x = Vec::with_capacity(n * d);
    let mut norms = Vec::with_capacity(n);
    for (m, nr) in parts {
        for i in 0..m.nrows() {
            x.extend((0..d).map(|j| m[(i, j)] as f32));
        }
        norms.extend(nr.iter().map(|&v| v as f32));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(nan_error());
    }
    let index = (0..n as u64).map(|i| bands.spec.y.index(i)).collect();
    Ok(Features {
        x,
        width: d,
        norms,
        index,
    })
}

fn nan_error() -> LayoutError {
    LayoutError::NonFinite
}

/// The first `k` principal components of the points (`k` at most the smaller side).
pub(super) fn decompose(
    input: &Input<'_>,
    k: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Decomposed> {
    let spec = point_spec(input);
    let (n, d) = spec.cells();
    let (n, d) = (n as usize, d as usize);
    if n < 2 || d < 1 {
        return Err(LayoutError::TooSmall { rows: n, cols: d });
    }
    let k = k.max(1).min(d).min(n);
    let mut bands = Bands {
        input,
        spec,
        n,
        d,
        mean: vec![0.0; d],
        kept: None,
    };
    // First pass: means, norms, total variance; keep the bands when they fit.
    let keep = (n as u64) * (d as u64) <= KEEP_ELEMENTS;
    let ranges = bands.ranges();
    let passes = if keep { 2 } else { 2 + 2 * 7 + 2 } as u64;
    let firsts: Vec<(Mat<f64>, Vec<f64>)> = ranges.par_iter().map(|r| bands.raw(r)).collect();
    progress(1, passes);
    let mut sums = vec![0.0; d];
    let mut norms = Vec::with_capacity(n);
    for (m, nr) in &firsts {
        for (j, s) in sums.iter_mut().enumerate() {
            *s += (0..m.nrows()).map(|i| m[(i, j)]).sum::<f64>();
        }
        norms.extend(nr.iter().map(|&v| v as f32));
    }
    bands.mean = sums.iter().map(|s| s / n as f64).collect();
    if keep {
        let mut kept: Vec<Mat<f64>> = firsts.into_iter().map(|(m, _)| m).collect();
        kept.par_iter_mut().for_each(|m| bands.center(m));
        bands.kept = Some(kept);
    } else {
        drop(firsts);
    }
    let total: f64 = bands
        .map(|_, m| {
            let mut s = 0.0;
            for j in 0..m.ncols() {
                for i in 0..m.nrows() {
                    s += m[(i, j)] * m[(i, j)];
                }
            }
            s
        })
        .iter()
        .sum();
    if !total.is_finite() {
        return Err(nan_error());
    }

    // Randomized range finder with power iterations (QR-normalised).
    let l = (k + OVERSAMPLES).min(d).min(n);
    let iterations = if (k as f64) < 0.1 * d.min(n) as f64 {
        7
    } else {
        4
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0x9CA);
    let omega = Mat::from_fn(d, l, |_, _| StandardNormal.sample(&mut rng));
    let mut q = bands.times(&omega);
    for it in 0..iterations {
        q = q.qr().compute_thin_Q();
        let z = bands.t_times(&q).qr().compute_thin_Q();
        q = bands.times(&z);
        progress(2 + 2 * it as u64, passes);
    }
    let q = q.qr().compute_thin_Q();
    let b = bands.t_times(&q).transpose().to_owned(); // l x d
    let svd = b
        .thin_svd()
        .map_err(|e| LayoutError::NoConvergence(format!("{e:?}")))?;
    let (u_small, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let u = &q * u_small; // n x l
    progress(passes, passes);

    let mut components = Vec::with_capacity(k);
    let mut signs = Vec::with_capacity(k);
    for c in 0..k {
        // scikit-learn's sign convention: the largest |loading| of each component positive.
        let col: Vec<f64> = (0..d).map(|j| v[(j, c)]).collect();
        let big = col
            .iter()
            .copied()
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(1.0);
        let sign = if big < 0.0 { -1.0 } else { 1.0 };
        signs.push(sign);
        components.push(col.iter().map(|x| x * sign).collect::<Vec<f64>>());
    }
    let mut points = Vec::with_capacity(n * k);
    for i in 0..n {
        for c in 0..k {
            points.push((u[(i, c)] * s[c] * signs[c]) as f32);
        }
    }
    let variance: Vec<f64> = (0..k).map(|c| s[c] * s[c] / (n - 1) as f64).collect();
    let ratio: Vec<f64> = (0..k).map(|c| s[c] * s[c] / total).collect();
    Ok(Decomposed {
        points,
        k,
        variance,
        ratio,
        components,
        norms,
        index: (0..n as u64).map(|i| bands.spec.y.index(i)).collect(),
    })
}
