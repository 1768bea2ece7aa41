//! UMAP's neighbour graph, as umap-learn builds it: each point's smooth kNN distances
//! (`rho`, `sigma`), the fuzzy union of the neighbourhoods, and the `a, b` curve fitted to
//! `min_dist`.

use super::knn::Knn;
use rayon::prelude::*;

/// A symmetric sparse graph, CSR.
pub(super) struct Graph {
    pub rows: Vec<usize>,
    pub cols: Vec<u32>,
    pub vals: Vec<f32>,
}

/// Each point's distance to its nearest neighbour and the bandwidth that makes its
/// memberships sum to `log2(n_neighbors)`.
fn smooth_knn(knn: &Knn, n: usize, n_neighbors: usize) -> (Vec<f32>, Vec<f32>) {
    let target = (n_neighbors as f64).log2();
    let mean_all = knn.dist.iter().map(|&d| f64::from(d)).sum::<f64>() / (n * (knn.k + 1)) as f64;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let (_, dist) = knn.row(i);
            let rho = dist.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
            let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
            for _ in 0..64 {
                let psum: f64 = dist
                    .iter()
                    .map(|&d| {
                        let d = f64::from(d - rho);
                        if d > 0.0 {
                            (-d / mid).exp()
                        } else {
                            1.0
                        }
                    })
                    .sum();
                if (psum - target).abs() < 1e-5 {
                    break;
                }
                if psum > target {
                    hi = mid;
                    mid = (lo + hi) / 2.0;
                } else {
                    lo = mid;
                    mid = if hi.is_infinite() {
                        mid * 2.0
                    } else {
                        (lo + hi) / 2.0
                    };
                }
            }
            // The self entry (distance 0) counts in the mean, as in umap-learn.
            let mean_i = dist.iter().map(|&d| f64::from(d)).sum::<f64>() / (dist.len() + 1) as f64;
            let floor = 1e-3 * if rho > 0.0 { mean_i } else { mean_all };
            (rho, mid.max(floor) as f32)
        })
        .unzip()
}

/// The fuzzy union of the points' neighbourhoods: `A + A^T - A o A^T`.
pub(super) fn fuzzy_graph(knn: &Knn, n: usize, n_neighbors: usize) -> Graph {
    let (rhos, sigmas) = smooth_knn(knn, n, n_neighbors);
    // (row, col, membership, whether it is the transposed copy)
    let mut coo: Vec<(u32, u32, f32, bool)> = Vec::with_capacity(2 * n * knn.k);
    for i in 0..n {
        let (idx, dist) = knn.row(i);
        for (&j, &d) in idx.iter().zip(dist) {
            let over = d - rhos[i];
            let m = if over <= 0.0 || sigmas[i] == 0.0 {
                1.0
            } else {
                (-over / sigmas[i]).exp()
            };
            coo.push((i as u32, j, m, false));
            coo.push((j, i as u32, m, true));
        }
    }
    coo.par_sort_unstable_by_key(|e| (e.0, e.1, e.3));
    let mut rows = vec![0usize; n + 1];
    let mut cols = Vec::with_capacity(coo.len());
    let mut vals = Vec::with_capacity(coo.len());
    let mut t = 0;
    while t < coo.len() {
        let (i, j) = (coo[t].0, coo[t].1);
        let (mut a, mut b) = (0.0f32, 0.0f32);
        while t < coo.len() && coo[t].0 == i && coo[t].1 == j {
            if coo[t].3 {
                b = coo[t].2;
            } else {
                a = coo[t].2;
            }
            t += 1;
        }
        let w = a + b - a * b;
        if w > 0.0 {
            cols.push(j);
            vals.push(w);
            rows[i as usize + 1] += 1;
        }
    }
    for i in 0..n {
        rows[i + 1] += rows[i];
    }
    Graph { rows, cols, vals }
}

/// `a, b` of the curve `1 / (1 + a d^(2b))` closest (least squares, Levenberg-Marquardt) to
/// 1 below `min_dist` and `exp(-(d - min_dist) / spread)` above, on 300 points of [0, 3 spread].
pub fn find_ab(spread: f32, min_dist: f32) -> (f32, f32) {
    let (spread, min_dist) = (f64::from(spread), f64::from(min_dist));
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let cost = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| (1.0 / (1.0 + a * x.powf(2.0 * b)) - y).powi(2))
            .sum()
    };
    let (mut a, mut b, mut lambda) = (1.0f64, 1.0f64, 1e-3f64);
    let mut c = cost(a, b);
    for _ in 0..500 {
        // Normal equations of the linearised residuals.
        let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x <= 0.0 {
                continue;
            }
            let p = x.powf(2.0 * b);
            let den = 1.0 + a * p;
            let r = 1.0 / den - y;
            let da = -p / (den * den);
            let db = -a * p * 2.0 * x.ln() / (den * den);
            jaa += da * da;
            jab += da * db;
            jbb += db * db;
            ga += da * r;
            gb += db * r;
        }
        let (maa, mbb) = (jaa * (1.0 + lambda), jbb * (1.0 + lambda));
        let det = maa * mbb - jab * jab;
        if det.abs() < 1e-300 {
            break;
        }
        let step_a = -(mbb * ga - jab * gb) / det;
        let step_b = -(maa * gb - jab * ga) / det;
        let (na, nb) = (a + step_a, b + step_b);
        let nc = cost(na, nb);
        if nc < c {
            let small = (c - nc) < 1e-15 * c.max(1e-300);
            (a, b, c) = (na, nb, nc);
            lambda = (lambda / 10.0).max(1e-12);
            if small {
                break;
            }
        } else {
            lambda *= 10.0;
            if lambda > 1e12 {
                break;
            }
        }
    }
    (a as f32, b as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_umap_learns() {
        // umap-learn's find_ab_params(1.0, 0.1) and (1.0, 0.5).
        let (a, b) = find_ab(1.0, 0.1);
        assert!(
            (a - 1.5769).abs() < 2e-3 && (b - 0.8951).abs() < 2e-3,
            "{a} {b}"
        );
        let (a, b) = find_ab(1.0, 0.5);
        assert!(
            (a - 0.5830).abs() < 2e-3 && (b - 1.3342).abs() < 2e-3,
            "{a} {b}"
        );
    }

    #[test]
    fn the_graph_is_a_fuzzy_union() {
        // Three points on a line: 0 -- 1 ---- 2.
        let knn = Knn {
            k: 2,
            index: vec![1, 2, 0, 2, 1, 0],
            dist: vec![1.0, 3.0, 1.0, 2.0, 2.0, 3.0],
        };
        let g = fuzzy_graph(&knn, 3, 3);
        // Symmetric, no self edges, every membership in (0, 1].
        for i in 0..3 {
            for e in g.rows[i]..g.rows[i + 1] {
                let j = g.cols[e] as usize;
                assert_ne!(i, j);
                assert!(g.vals[e] > 0.0 && g.vals[e] <= 1.0);
                let back = (g.rows[j]..g.rows[j + 1])
                    .find(|&f| g.cols[f] as usize == i)
                    .map(|f| g.vals[f]);
                assert_eq!(back, Some(g.vals[e]));
            }
        }
        // Each point's nearest neighbour has membership 1 (rho), so the union is 1 too.
        let w01 = (g.rows[0]..g.rows[1])
            .find(|&e| g.cols[e] == 1)
            .map(|e| g.vals[e]);
        assert_eq!(w01, Some(1.0));
    }
}
